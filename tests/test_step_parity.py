"""One training step of ours against one step of the reference in PyTorch.

The same random weights go into ``tests/torch_reference.py`` (an independent
PyTorch re-implementation of the authors' model) and into the Keras model
through the converter. Both run the same P x K batch in train mode:

- PyTorch: the reference's loss, written below from its formula (``cdist``
  from the differences + 1e-12, the reference's masks, ``log(1 + exp(z))``
  averaged over anchors, plus ``nn.CrossEntropyLoss`` on the logits), then
  ``torch.optim.Adam(lr=1e-4, weight_decay=5e-5)``;
- Keras: ``compile_model(model, TrainConfig(...))`` and one
  ``model.train_on_batch``.

Then the loss terms, the weight updates and the BN running statistics must
agree. STE-NVAN runs at ResNet-50's depth; NVAN at the toy depth
(tests/toy.py: its non-local blocks sit in res3 and res4 as at full depth),
so the two cover both depths at the cost of one full-depth step. The
optimizers are also checked alone against torch's, on random gradients
(Adam with tiny gradients, SGD with momentum and a rate change).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

import nvan_tf  # noqa: E402
from nvan_tf.io import convert  # noqa: E402
from nvan_tf.training.optimizers import TorchAdam, TorchSGD  # noqa: E402
from nvan_tf.training.loop import TrainConfig, compile_model  # noqa: E402
from nvan_tf.training.optimizers import _slot  # noqa: E402
from tests.test_convert import SMALL_STRIPES, torch_clips  # noqa: E402
from tests.torch_reference import build_reference, randomize_  # noqa: E402
from tests import toy  # noqa: E402

NUM_IDS = 11
T, H, W = 4, 64, 32
PIDS = np.array([4, 4, 0, 0, 7, 7])  # P=3 identities x K=2 clips
LR, WEIGHT_DECAY = 1e-4, 5e-5


def reference_loss(f, logits, pids):
    """The authors' training loss: soft-margin batch-hard triplet on f + CE."""
    diff = f.unsqueeze(1) - f.unsqueeze(0)
    dist = ((diff ** 2).sum(2) + 1e-12).sqrt()
    same = pids.unsqueeze(1) == pids.unsqueeze(0)
    not_self = ~torch.eye(len(pids), dtype=torch.bool)
    max_positive = (dist * (same & not_self).to(dist.dtype)).max(1)[0]
    min_negative = (dist + 1e5 * same.to(dist.dtype)).min(1)[0]
    triplet = torch.log(1 + torch.exp(max_positive - min_negative)).mean()
    identity = torch.nn.CrossEntropyLoss()(logits, pids)
    return triplet, identity


# Parameters whose true gradient is exactly zero: a per-channel constant that
# a train-mode BN (or a softmax) removes. Their computed gradient is float32
# round-off (plus the L2 term), so their first Adam step has no reference
# value to match:
# - the non-local W conv bias (W.0) feeds the train-mode BN W.1;
# - the g bias adds the same vector to every attended output, then W + BN;
# - the phi bias adds theta_i . b to every logit of row i: softmax ignores it;
# - the stem BN shift passes the max pool and 1x1 convs into train-mode BNs.
ZERO_GRADIENT_SUFFIXES = (".W.0.bias", ".g.bias", ".phi.bias")
ZERO_GRADIENT_KEYS = ("features.backbone.bn1.bias",)


def zero_true_gradient(key):
    return key.endswith(ZERO_GRADIENT_SUFFIXES) or key in ZERO_GRADIENT_KEYS


def _numpy(key_transform, tensor):
    value = tensor.detach().numpy()
    return key_transform(value) if key_transform else value


def one_step(variant, seed):
    """Both frameworks take one step from the same weights; returns what the
    tests compare, keyed by the reference's state_dict keys."""
    stripes = SMALL_STRIPES.get(variant, 16)
    blocks = DEPTH.get(variant)
    ref = randomize_(build_reference(variant, NUM_IDS, stripes=stripes, blocks=blocks), seed).train()
    overrides = {"stripes": stripes} if variant in SMALL_STRIPES else {}
    if blocks:
        overrides["stage_blocks"] = blocks
    model = nvan_tf.build_model(variant, NUM_IDS, seq_len=T, height=H, width=W, **overrides)
    entries = convert.reference_entries(model)
    before = {k: v.detach().clone() for k, v in ref.state_dict().items()}
    convert.assign_state_dict(entries, {k: v.numpy() for k, v in before.items()})

    x, xt = torch_clips(len(PIDS), T, H, W, seed=seed + 100)
    pids = torch.from_numpy(PIDS)
    optimizer = torch.optim.Adam(ref.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    triplet, identity = reference_loss(*ref(xt), pids)
    optimizer.zero_grad()
    (triplet + identity).backward()
    gradients = {k: p.grad.detach().clone() for k, p in ref.named_parameters() if p.grad is not None}
    optimizer.step()
    after = ref.state_dict()

    compile_model(model, TrainConfig(variant=variant, seq_len=T, height=H, width=W, p=3, k=2))
    logs = model.train_on_batch(x, PIDS, return_dict=True)

    rows = {}
    for key, variable, transform in entries:
        rows[key] = {
            "torch_delta": _numpy(transform, after[key] - before[key]),
            "keras_delta": np.asarray(variable) - _numpy(transform, before[key]),
            "torch_after": _numpy(transform, after[key]),
            "keras_after": np.asarray(variable),
            # torch's effective gradient: grad + weight_decay * w
            "gradient": (_numpy(transform, gradients[key] + WEIGHT_DECAY * before[key])
                         if key in gradients else None),
            "variable": variable,
        }
    return {
        "torch_losses": {"triplet": triplet.item(), "identity": identity.item(),
                         "loss": (triplet + identity).item()},
        "logs": logs,
        "rows": rows,
        "model": model,
    }


VARIANTS = ["nvan", "ste-nvan"]
DEPTH = {"nvan": toy.BLOCKS}  # residual blocks per stage; the others: ResNet-50's


@pytest.fixture(scope="module", params=VARIANTS)
def stepped(request):
    return one_step(request.param, seed=21)


@pytest.mark.slow  # every test of ``stepped`` (its STE-NVAN step is at ResNet-50's depth) is left out of make test-fast
def test_first_step_losses_equal_torch(stepped):
    expected, logs = stepped["torch_losses"], stepped["logs"]
    assert set(logs) >= {"loss", "triplet", "identity"}
    assert expected["triplet"] > 0.05 and expected["identity"] > 1.0  # neither term trivial
    for name in ("loss", "triplet", "identity"):
        # float32 forward passes of a ResNet-50 in two frameworks: ~1e-6 apart
        np.testing.assert_allclose(logs[name], expected[name], rtol=2e-5, err_msg=name)


def adam_first_step(g, eps=1e-8):
    """The size of torch's first Adam step, in units of lr: ``|g| / (|g| + eps)``."""
    return g / (g + eps)


@pytest.mark.slow
def test_adam_step_moves_weights_as_torch(stepped):
    """The first Adam step is ``-lr * g / (|g| + eps)`` elementwise, with
    ``g = grad + 5e-5 * w`` (torch's effective gradient).

    float32 gradients of this deep, batch-normalised net differ between the
    frameworks (and from a float64 computation) by up to ~2e-2 of the
    tensor's RMS gradient, so the comparison allows each element's gradient
    an uncertainty ``delta = 0.05 * RMS`` and checks the elements it cannot
    flip: ``|g| >= 0.1 * RMS`` (at least half of every tensor; the
    classifier's rows of absent identities hold many small gradients). There the
    step must agree within what ``delta`` can change it by (it matters only
    where ``|g|`` is not much larger than eps), plus 2 float32 ulps of the
    weight and 1e-4 of the step, for all but 0.1% of a tensor's checked
    elements: in STE-NVAN the max over frame pairs routes the gradient by
    float32 near-ties, and torch's own float32 gradient flips the sign of a
    few 1e-5 of such elements against a float64 computation. Parameters with an exactly zero true
    gradient are skipped (see ``zero_true_gradient``); the frozen BN-neck
    shift must not move in either framework."""
    rows = stepped["rows"]
    checked = 0
    for key, row in rows.items():
        if row["gradient"] is None or zero_true_gradient(key):
            continue
        g = np.abs(row["gradient"].astype(np.float64))
        rms = np.sqrt(np.mean(g ** 2))
        delta = 0.05 * rms
        well_determined = g >= 0.1 * rms
        assert well_determined.mean() >= 0.5, key
        g = g[well_determined]
        allowed = (LR * (adam_first_step(g + delta) - adam_first_step(g - delta))
                   + 2 * np.spacing(np.abs(row["torch_after"][well_determined]))
                   + 1e-4 * LR)
        error = np.abs(row["keras_delta"] - row["torch_delta"])[well_determined]
        mismatched = int(np.sum(error > allowed))
        assert mismatched <= 1e-3 * error.size, (key, mismatched, error.size)
        # torch's own step moved these elements by about lr (sanity of the rule)
        assert np.abs(row["torch_delta"][well_determined]).min() >= 0.5 * LR, key
        checked += 1
    assert checked > 100
    neck_shift = rows["bottleneck.bias"]
    assert np.all(neck_shift["torch_delta"] == 0) and np.all(neck_shift["keras_delta"] == 0)


@pytest.mark.slow
def test_adam_first_moment_is_torch_gradient(stepped):
    """After one step Adam's first moment is ``(1 - beta_1) * g``: the shallow,
    well-conditioned gradients (classifier, BN neck scale) equal torch's."""
    model, rows = stepped["model"], stepped["rows"]
    optimizer = model.optimizer
    for key in ("classifier.weight", "bottleneck.weight"):
        row = rows[key]
        m = np.asarray(_slot(optimizer, optimizer.momentums, row["variable"]))
        g = row["gradient"]
        assert np.linalg.norm(m / 0.1 - g) <= 1e-4 * np.linalg.norm(g), key


@pytest.mark.slow
def test_bn_running_statistics_after_the_step(stepped):
    """torch: ``running = 0.9 running + 0.1 batch`` (momentum 0.1), with the
    unbiased batch variance; Keras's BN momentum is the complement, 0.9."""
    rows = stepped["rows"]
    keys = [k for k in rows if k.endswith((".running_mean", ".running_var"))]
    assert len(keys) > 50
    failures = []
    for key in keys:
        row = rows[key]
        scale = np.abs(row["torch_delta"]).max()
        assert scale > 1e-3, key  # the statistics really moved
        error = np.abs(row["keras_after"] - row["torch_after"]).max()
        if error > 1e-3 * scale:
            failures.append(f"{key}: max error {error / scale:.2e} of the update")
    assert not failures, "\n".join(failures)


# -----------------------------------------------------------------------------
# train_on_batch on a tiny model
# -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(3)
    model = nvan_tf.build_model("baseline", 4, seq_len=2, height=32, width=16, **toy.OVERRIDES)
    clips = np.random.default_rng(4).normal(size=(4, 2, 32, 16, 3)).astype("float32")
    return model, clips, np.array([0, 0, 3, 3])


@pytest.mark.slow
@pytest.mark.parametrize("weights", [(1.0, 0.0), (2.0, 0.5)])
def test_train_on_batch_twice_term_by_term(tiny, weights):
    model, clips, pids = tiny
    config = TrainConfig(variant="baseline", seq_len=2, height=32, width=16, p=2, k=2,
                         triplet_weight=weights[0], identity_weight=weights[1])
    compile_model(model, config)
    first = model.train_on_batch(clips, pids, return_dict=True)
    second = model.train_on_batch(clips, pids, return_dict=True)
    for logs in (first, second):
        assert all(np.isfinite(logs[name]) for name in ("loss", "triplet", "identity"))
        assert logs["triplet"] > 0 and logs["identity"] > 0  # both reported, even at weight 0
        np.testing.assert_allclose(
            logs["loss"], weights[0] * logs["triplet"] + weights[1] * logs["identity"], rtol=1e-6)
    assert second["loss"] != first["loss"]  # the step changed the weights
    assert int(model.optimizer.iterations) == 2


def test_compiled_optimizer_is_torch_adam_with_coupled_decay(tiny):
    model, _, _ = tiny
    compile_model(model, TrainConfig(variant="baseline", seq_len=2, height=32, width=16))
    optimizer = model.optimizer
    assert isinstance(optimizer, TorchAdam)
    assert optimizer.l2 == WEIGHT_DECAY and optimizer.epsilon == 1e-8
    assert (optimizer.beta_1, optimizer.beta_2) == (0.9, 0.999)
    np.testing.assert_allclose(float(optimizer.learning_rate), LR, rtol=1e-6)


# -----------------------------------------------------------------------------
# The optimizers alone against torch's, on given gradients
# -----------------------------------------------------------------------------
def run_torch(optimizer_class, w0, gradients, rates=None, **kwargs):
    params = [torch.tensor(w, requires_grad=True) for w in w0]
    optimizer = optimizer_class(params, **kwargs)
    for step, grads in enumerate(gradients):
        if rates is not None:
            for group in optimizer.param_groups:
                group["lr"] = rates[step]
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g)
        optimizer.step()
    return [p.detach().numpy() for p in params]


def run_keras(optimizer, w0, gradients, rates=None):
    variables = [keras.Variable(w) for w in w0]
    for step, grads in enumerate(gradients):
        if rates is not None:
            optimizer.learning_rate = rates[step]
        optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)
    return [np.asarray(v) for v in variables]


def initial_weights(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(3, 4)).astype("float32"), rng.uniform(0.5, 1.5, size=(5,)).astype("float32")]


def random_gradients(w0, steps, scale, seed=1):
    rng = np.random.default_rng(seed)
    return [[(scale * rng.normal(size=w.shape)).astype("float32") for w in w0] for _ in range(steps)]


def assert_same_updates(keras_w, torch_w, w0, tolerance):
    for k, t, w in zip(keras_w, torch_w, w0):
        moved = np.abs(t - w).max()
        assert moved > 0
        assert np.abs((k - w) - (t - w)).max() <= tolerance * moved, np.abs(k - t).max() / moved


def test_zero_loss_still_decays_by_adams_rule():
    """A zero gradient with weight_decay: torch's Adam sees ``g = wd * w`` and
    moves every weight by its Adam step (not by ``lr * wd * w``)."""
    w0 = initial_weights(2)
    zeros = [[np.zeros_like(w) for w in w0] for _ in range(3)]
    expected = run_torch(torch.optim.Adam, w0, zeros, lr=1e-3, weight_decay=0.01)
    got = run_keras(TorchAdam(1e-3, l2=0.01), w0, zeros)
    assert_same_updates(got, expected, w0, 1e-4)
    for g, w in zip(got, w0):
        assert np.all(np.abs(g) < np.abs(w))  # shrunk towards 0
        # the first steps of Adam are ~lr * sign(w) each, whatever the decay's size
        np.testing.assert_allclose(np.abs(w - g), 3e-3, rtol=1e-3)


@pytest.mark.parametrize("l2", [0.0, 1e-4])
def test_torch_adam_matches_torch_on_tiny_gradients(l2):
    """|g| ~ 1e-7, where eps = 1e-8 and the place of the bias correction
    matter: Keras's own Adam is far off there, ours is torch's."""
    w0 = initial_weights(3)
    gradients = random_gradients(w0, 5, 1e-7)
    expected = run_torch(torch.optim.Adam, w0, gradients, lr=1e-3, weight_decay=l2)
    assert_same_updates(run_keras(TorchAdam(1e-3, l2=l2), w0, gradients), expected, w0, 1e-4)
    if l2 == 0.0:  # the test can tell the two rules apart
        stock = run_keras(keras.optimizers.Adam(1e-3, epsilon=1e-8), w0, gradients)
        with pytest.raises(AssertionError):
            assert_same_updates(stock, expected, w0, 1e-2)


def test_torch_adam_matches_torch_on_ordinary_gradients():
    w0 = initial_weights(4)
    gradients = random_gradients(w0, 5, 0.1, seed=5)
    expected = run_torch(torch.optim.Adam, w0, gradients, lr=1e-2, betas=(0.8, 0.99), eps=1e-6,
                         weight_decay=1e-3)
    got = run_keras(TorchAdam(1e-2, beta_1=0.8, beta_2=0.99, epsilon=1e-6, l2=1e-3), w0, gradients)
    assert_same_updates(got, expected, w0, 1e-4)


@pytest.mark.parametrize("nesterov", [False, True])
def test_torch_sgd_matches_torch_with_a_rate_change(nesterov):
    """Momentum 0.9, L2 1e-2 in the gradient; the rate drops x0.1 after the
    first step and rises again (torch applies a new rate at once: the
    buffer holds gradients, not steps)."""
    w0 = initial_weights(6)
    gradients = random_gradients(w0, 3, 0.5, seed=7)
    rates = [0.1, 0.01, 0.05]
    expected = run_torch(torch.optim.SGD, w0, gradients, rates, lr=rates[0], momentum=0.9,
                         weight_decay=1e-2, nesterov=nesterov)
    got = run_keras(TorchSGD(rates[0], momentum=0.9, nesterov=nesterov, l2=1e-2), w0, gradients, rates)
    assert_same_updates(got, expected, w0, 1e-5)
    # Keras's own SGD puts the rate inside its velocity: after a rate change it
    # differs from torch even without decay (so the test can tell them apart)
    no_decay = run_torch(torch.optim.SGD, w0, gradients, rates, lr=rates[0], momentum=0.9,
                         nesterov=nesterov)
    stock = run_keras(keras.optimizers.SGD(rates[0], momentum=0.9, nesterov=nesterov), w0, gradients,
                      rates)
    with pytest.raises(AssertionError):
        assert_same_updates(stock, no_decay, w0, 1e-3)


def test_torch_adam_makes_the_step_terms_once_per_update():
    """The bias corrections (two powers of the betas) are made once for an
    update of many variables, not once per variable, and the update is
    still torch's (the tests above)."""
    import tensorflow as tf

    variables = [keras.Variable(np.ones(shape, "float32")) for shape in ((3, 4), (5,), (2, 2, 2))]
    optimizer = TorchAdam(1e-3, l2=1e-4)
    optimizer.build(variables)
    update = tf.function(lambda grads: optimizer.apply(grads, variables))
    graph = update.get_concrete_function([tf.TensorSpec(v.shape, "float32") for v in variables]).graph
    powers = [op for op in graph.get_operations() if op.type == "Pow"]
    assert len(powers) == 2, len(powers)  # once per variable, it would be 6
