"""Checks the PyTorch reference (tests/torch_reference.py) against docs/."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from tests.torch_reference import (  # noqa: E402
    VARIANTS,
    NonLocalBlock,
    StripeNonLocalBlock,
    VideoResNet50,
    build_reference,
    randomize_,
    reference_state_dict,
)

SMALL = dict(stripes=2)  # a 32x16 clip is 4x2 at layer2, 2x1 at layer3 and layer4


def _clip(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _softmax(f):
    e = np.exp(f - f.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _conv(weight, bias, x):
    """1x1x1 conv on (c, n) tokens with a (out, in, 1, 1, 1) weight."""
    return weight.detach().numpy().reshape(weight.shape[:2]) @ x + bias.detach().numpy()[:, None]


def _bn(bn, x):
    """Eval-mode BatchNorm on (c, n)."""
    p = {k: v.detach().numpy()[:, None] for k, v in bn.state_dict().items() if v.ndim}
    return (x - p["running_mean"]) / np.sqrt(p["running_var"] + bn.eps) * p["weight"] + p["bias"]


def _nonlocal_numpy(block, tokens):
    """z_residual on (c, n) tokens, from the equations of docs/architecture.md."""
    theta = _conv(block.theta.weight, block.theta.bias, tokens)
    phi = _conv(block.phi.weight, block.phi.bias, tokens)
    g = _conv(block.g.weight, block.g.bias, tokens)
    y = g @ _softmax(theta.T @ phi).T  # (c', n): y_i = sum_j softmax_j(theta_i . phi_j) g_j
    return _bn(block.W[1], _conv(block.W[0].weight, block.W[0].bias, y))


@pytest.mark.parametrize(
    "variant, millions", [("baseline", 23.5), ("nvan", 30.9), ("nvan-stripe", 30.9),
                          ("nvan-temporal", 30.9), ("ste-nvan", 30.9)])
def test_parameter_count_without_classifier(variant, millions):
    model = build_reference(variant, num_classes=625)
    n = sum(p.numel() for k, p in model.named_parameters() if not k.startswith("classifier"))
    assert abs(n / 1e6 - millions) <= 0.05
    assert model.classifier.weight.shape == (625, 2048)


@pytest.mark.parametrize("variant, gflops", [("baseline", 64.9), ("nvan", 127.1), ("ste-nvan", 35.3)])
def test_flops_per_clip(variant, gflops):
    # FlopCounterMode counts from shapes only, so the meta device gives the
    # same totals as a CPU run (checked: 127129354240 and 35345399808).
    model = build_reference(variant, num_classes=625).eval().to("meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 8, 3, 256, 128, device="meta"))
    assert abs(counter.get_total_flops() / 1e9 - gflops) <= 0.1
    counts = counter.get_flop_counts()["Global"]
    if variant == "nvan":  # docs/architecture.md: 49% of NVAN's FLOPs are in the 5 non-local blocks
        attention = counts[torch.ops.aten.bmm]
        assert 40e9 < attention < 41e9


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_output_shapes(variant):
    model = build_reference(variant, num_classes=7, **SMALL)
    randomize_(model, seed=0)
    clip = _clip((2, 8, 3, 32, 16))
    with torch.no_grad():
        f, logits = model(clip)
        assert f.shape == (2, 2048) and logits.shape == (2, 7)
        model.eval()
        assert model(clip).shape == (2, 2048)
        if variant != "baseline":
            t = 2 if variant in ("ste-nvan", "nvan-temporal") else 8
            assert model.features.backbone(clip).shape == (2, 2048, t, 2, 1)


@pytest.mark.slow
def test_randomize_is_deterministic_and_covers_everything():
    a = randomize_(build_reference("ste-nvan", 5, **SMALL), seed=3)
    b = randomize_(build_reference("ste-nvan", 5, **SMALL), seed=3)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
        if k == "bottleneck.bias":  # frozen at 0 in the reference
            assert not va.any()
        elif k.endswith("running_var"):
            assert va.min() > 0 and va.std() > 0
        else:
            assert va.eq(0).float().mean() < 0.01, k  # (torch.randn gives an exact 0 rarely)
    assert all(v.min() > 0.05 for k, v in a.state_dict().items() if k.endswith("W.1.weight"))
    model = randomize_(build_reference("nvan", 5, **SMALL), seed=0).eval()
    with torch.no_grad():
        e = model(_clip((2, 8, 3, 32, 16)))
    assert torch.isfinite(e).all() and 0.1 < e.std() < 100
    assert (e[0] - e[1]).abs().max() > 1e-2  # the embedding depends on the input


def test_nonlocal_blocks_are_identity_at_init():
    x = _clip((2, 16, 2, 8, 4))
    for block in (NonLocalBlock(16), StripeNonLocalBlock(4, 16)):
        block.eval()
        with torch.no_grad():
            assert torch.equal(block(x), x)
    torch.manual_seed(0)
    nvan = build_reference("nvan", 5, **SMALL).eval()
    plain = VideoResNet50().eval()
    missing, unexpected = plain.load_state_dict(nvan.features.backbone.state_dict(), strict=False)
    assert not missing and len(unexpected) == 5 * 13  # 13 tensors per block
    clip = _clip((1, 8, 3, 32, 16))
    with torch.no_grad():
        torch.testing.assert_close(nvan.features.backbone(clip), plain(clip))


def _expected_keys(non_layers):
    keys = ["conv1.weight"]
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys += [f"bn1.{p}" for p in bn]
    for k, (blocks, n) in enumerate(zip((3, 4, 6, 3), non_layers), 1):
        for i in range(blocks):
            for j in (1, 2, 3):
                keys += [f"layer{k}.{i}.conv{j}.weight"] + [f"layer{k}.{i}.bn{j}.{p}" for p in bn]
        keys += [f"layer{k}.0.downsample.0.weight"] + [f"layer{k}.0.downsample.1.{p}" for p in bn]
        for i in range(n):
            for name in ("g", "theta", "phi", "W.0"):
                keys += [f"NL_{k}.{i}.{name}.weight", f"NL_{k}.{i}.{name}.bias"]
            keys += [f"NL_{k}.{i}.W.1.{p}" for p in bn]
    keys = ["module.features.backbone." + k for k in keys]
    return set(keys + [f"module.bottleneck.{p}" for p in bn] + ["module.classifier.weight"])


@pytest.mark.parametrize("variant", ["baseline", "nvan", "ste-nvan"])
def test_state_dict_keys_match_the_released_layout(variant):
    model = build_reference(variant, num_classes=625)
    state = reference_state_dict(model)
    non_layers = (0, 0, 0, 0) if variant == "baseline" else (0, 2, 3, 0)
    assert set(state) == _expected_keys(non_layers)
    if variant != "baseline":
        assert "module.features.backbone.NL_2.1.W.1.running_var" in state
        assert "module.features.backbone.NL_3.2.theta.bias" in state
        assert not any(".NL_1." in k or ".NL_4." in k for k in state)
        blocks = {k.split(".")[3] + k.split(".")[4] for k in state if ".NL_" in k}
        assert len(blocks) == 5
        assert state["module.features.backbone.NL_2.0.theta.weight"].shape == (256, 512, 1, 1, 1)
        assert state["module.features.backbone.NL_3.0.W.0.weight"].shape == (1024, 512, 1, 1, 1)
    assert state["module.features.backbone.layer2.0.conv2.weight"].shape == (128, 128, 3, 3)
    assert state["module.features.backbone.layer4.0.downsample.0.weight"].shape == (2048, 1024, 1, 1)


def test_stripe_block_hand_example():
    """(b, c, t, h, w) = (1, 2, 1, 4, 2), 2 stripes, hand-set weights."""
    block = StripeNonLocalBlock(2, 2).eval()
    with torch.no_grad():
        for name, w, b in [("theta", [1.0, -1.0], 0.5), ("phi", [0.5, 1.0], -0.25),
                           ("g", [2.0, 1.0], 0.1)]:
            getattr(block, name).weight.copy_(torch.tensor(w).reshape(1, 2, 1, 1, 1))
            getattr(block, name).bias.fill_(b)
        block.W[0].weight.copy_(torch.tensor([1.0, -2.0]).reshape(2, 1, 1, 1, 1))
        block.W[0].bias.copy_(torch.tensor([0.0, 0.5]))
        block.W[1].weight.copy_(torch.tensor([1.0, 2.0]))
        block.W[1].bias.copy_(torch.tensor([0.1, -0.1]))
        block.W[1].running_mean.copy_(torch.tensor([0.5, 0.0]))
        block.W[1].running_var.copy_(torch.tensor([4.0, 1.0]) - block.W[1].eps)
    x = np.array([[[1, 2], [3, 4], [0, 0], [-1, 1]],          # channel 0, rows x cols
                  [[0, 1], [1, 0], [2, 2], [4, 0]]], np.float32)  # channel 1
    # Stripe means: stripe 0 = rows 0-1, stripe 1 = rows 2-3.
    tokens = np.array([[2.5, 0.0], [0.5, 2.0]])  # (channel, stripe)
    theta = np.array([1, -1]) @ tokens + 0.5     # [2.5, -1.5]
    phi = np.array([0.5, 1]) @ tokens - 0.25     # [1.5, 1.75]
    g = np.array([2, 1]) @ tokens + 0.1          # [5.6, 2.1]
    np.testing.assert_allclose([theta, phi, g], [[2.5, -1.5], [1.5, 1.75], [5.6, 2.1]])
    attn = _softmax(np.outer(theta, phi))        # rows: queries (stripes)
    y = attn @ g
    wy = np.array([[1.0], [-2.0]]) * y + np.array([[0.0], [0.5]])
    wy = (wy - [[0.5], [0.0]]) / np.array([[2.0], [1.0]]) * [[1.0], [2.0]] + [[0.1], [-0.1]]
    expected = x + np.repeat(wy, 2, axis=1)[:, :, None]  # each stripe over its 2 rows x 2 cols
    with torch.no_grad():
        out = block(torch.from_numpy(x).reshape(1, 2, 1, 4, 2)).numpy().reshape(2, 4, 2)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert abs(wy[0, 0] - wy[0, 1]) > 0.1  # the two stripes really get different values
    with pytest.raises(ValueError, match="stripes=3"):
        StripeNonLocalBlock(3, 2)(torch.zeros(1, 2, 1, 4, 2))


def test_blocks_match_numpy_equations():
    x = _clip((1, 6, 3, 4, 2), seed=1)
    full = randomize_(NonLocalBlock(6), seed=1).eval()
    stripe = randomize_(StripeNonLocalBlock(2, 6), seed=2).eval()
    with torch.no_grad():
        z_full, z_stripe = full(x).numpy(), stripe(x).numpy()
    xn = x.numpy()[0]  # (c, t, h, w)
    expected = xn + _nonlocal_numpy(full, xn.reshape(6, -1)).reshape(xn.shape)
    np.testing.assert_allclose(z_full[0], expected, rtol=1e-4, atol=1e-5)
    tokens = xn.reshape(6, 3, 2, 2, 2).mean(axis=(3, 4))  # (c, t, stripe)
    wy = _nonlocal_numpy(stripe, tokens.reshape(6, -1)).reshape(6, 3, 2)
    expected = xn + np.repeat(wy, 2, axis=2)[..., None]
    np.testing.assert_allclose(z_stripe[0], expected, rtol=1e-4, atol=1e-5)


def _frame_dependence(model, clip, capture):
    """Which captured frame positions change when each input frame changes."""
    base = capture(model, clip)
    rows = []
    for f in range(clip.shape[1]):
        moved = clip.clone()
        moved[0, f] += 3.0 * _clip(clip.shape[2:], seed=10 + f)
        diff = (capture(model, moved) - base).abs().flatten(2).amax(-1)  # (B, T')
        assert diff[1:].max() < 1e-5  # clips never mix
        changed = diff[0] > 1e-3
        assert (diff[0][~changed] < 1e-5).all()
        rows.append(changed.int().tolist())
    return rows


@torch.no_grad()
def _backbone_frames(model, clip):
    return model.features.backbone(clip).transpose(1, 2)  # (B, T', C, H, W)


class _Captured(Exception):
    pass


@torch.no_grad()
def _after_layer2(model, clip):
    """Input of layer3 (after NL_2 and, for hr modes, the first max)."""

    def stop(module, args):
        raise _Captured(args[0])

    handle = model.features.backbone.layer3[0].register_forward_pre_hook(stop)
    try:
        model.features.backbone(clip)
    except _Captured as captured:
        x = captured.args[0]
    finally:
        handle.remove()
    return x.reshape(clip.shape[0], -1, *x.shape[1:])


@pytest.mark.slow
def test_temporal_grouping_follows_the_reference():
    clip = _clip((2, 8, 3, 32, 16), seed=5)  # 4x2 at layer2, 2x1 at layer3
    models = {v: randomize_(build_reference(v, 5, **SMALL), seed=0).eval()
              for v in ("nvan", "nvan-stripe", "nvan-temporal", "ste-nvan")}
    # NVAN and the stripe-only model attend over all 8 frames.
    for v in ("nvan", "nvan-stripe"):
        assert _frame_dependence(models[v], clip, _backbone_frames) == [[1] * 8] * 8
    # STE-NVAN: NL_2 sees frame pairs (2j, 2j+1), max-reduced to frame j ...
    pairs = [[int(j == f // 2) for j in range(4)] for f in range(8)]
    assert _frame_dependence(models["ste-nvan"], clip, _after_layer2) == pairs
    # ... NL_3 sees pairs of those, max-reduced again: frames 0-3 -> 0, 4-7 -> 1.
    halves = [[int(j == f // 4) for j in range(2)] for f in range(8)]
    assert _frame_dependence(models["ste-nvan"], clip, _backbone_frames) == halves
    # Temporal-only: NL_2 attends over all 8 frames before the same reductions.
    assert _frame_dependence(models["nvan-temporal"], clip, _after_layer2) == [[1] * 4] * 8
    assert _frame_dependence(models["nvan-temporal"], clip, _backbone_frames) == [[1] * 2] * 8


def test_baseline_averages_per_frame_features():
    model = randomize_(build_reference("baseline", 5), seed=0).eval()
    clip = _clip((2, 3, 3, 32, 16), seed=2)
    with torch.no_grad():
        clip_embedding = model(clip)
        frames = torch.stack([model(clip[:, t:t + 1]) for t in range(3)], 1)
        torch.testing.assert_close(clip_embedding, frames.mean(1), rtol=1e-5, atol=1e-5)
        model.train()
        f, logits = model(clip)
        per_frame = model.features(clip.reshape(6, 3, 32, 16))
        torch.testing.assert_close(f, per_frame.reshape(2, 3, -1).mean(1))
        assert logits.shape == (2, 5)


def test_stem_has_no_relu_and_stride_sits_on_the_3x3_conv():
    backbone = randomize_(build_reference("nvan", 5, **SMALL), seed=0).features.backbone.eval()
    with torch.no_grad():
        backbone.bn1.weight.zero_()
        backbone.bn1.bias.fill_(-1.0)  # bn1 gives -1 everywhere; a ReLU would give 0
        seen = []
        handle = backbone.layer1[0].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
        backbone(_clip((1, 2, 3, 32, 16)))
        handle.remove()
    assert seen[0].shape == (2, 64, 8, 4) and bool((seen[0] == -1).all())
    for k, stride in zip(range(1, 5), (1, 2, 2, 1)):
        first = getattr(backbone, f"layer{k}")[0]
        assert (first.conv1.stride, first.conv2.stride) == ((1, 1), (stride, stride))
        assert first.conv2.padding == (1, 1) and first.downsample[0].stride == (stride, stride)
