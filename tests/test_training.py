"""Training: the recipe's configuration, train() end to end, resume after
SIGKILL, distribution (mirrored and multi-worker), mixed precision, the NaN
guard and nvan-train.

Small sizes keep it fast: clips of 4 frames at 64x32, P=2 x K=2, a few steps.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nvan_tf.cli import train as train_cli
from nvan_tf.training import checkpoints
from nvan_tf.training import loop as training
from nvan_tf.data.datasets import synthetic
from nvan_tf.training.optimizers import StepDecay, TorchAdam
from tests import toy
from nvan_tf.training.loop import TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "training_worker.py")
SMALL = dict(seq_len=4, height=64, width=32, p=2, k=2, steps_per_epoch=2, progress=0)
# float16 runs: TensorFlow's CPU kernels for float16 convolutions are slow (on the 2-core test machine a
# 64x32 conv took 26x fp32's time forward and over 300x for its filter gradient), so these clips are 8x smaller
FLOAT16 = dict(mixed_precision="mixed_float16", seq_len=2, height=32, width=16)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth")
    return synthetic.generate(str(folder), num_ids=10, cameras=3, seed=0, height=64, width=32,
                              frames=(4, 8))


def small_config(root, **overrides):
    values = dict(variant="baseline", dataset="mars", root=root, epochs=2, eval_every=1,
                  checkpoint_every=0, model_overrides=toy.SHALLOW_OVERRIDES, **SMALL)
    values.update(overrides)
    return TrainConfig(**values)


def run(args, **kwargs):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          **kwargs)


# -- configuration -----------------------------------------------------------------


def test_defaults_are_the_recipe():
    c = TrainConfig()
    assert (c.p, c.k, c.seq_len, c.height, c.width) == (8, 4, 8, 256, 128)
    assert (c.optimizer, c.lr, c.weight_decay, c.epochs, c.lr_step, c.lr_gamma) == (
        "adam", 1e-4, 5e-5, 200, 50, 0.1)
    assert (c.margin, c.triplet_weight, c.identity_weight, c.eval_every) == ("soft", 1.0, 1.0, 10)
    assert (c.flip_prob, c.random_erasing, c.label_smoothing) == (0.5, 0.0, 0.0)
    baseline = TrainConfig.preset("baseline")
    assert (baseline.weight_decay, baseline.epochs) == (1e-5, 300)
    assert TrainConfig.preset("nvan", lr=3e-4).lr == 3e-4


@pytest.mark.parametrize("field, value, message", [
    ("p", 0, "p must be a positive integer"),
    ("optimizer", "rmsprop", "optimizer must be one of"),
    ("margin", "hard", "margin must be 'soft' or a non-negative number"),
    ("margin", -0.3, "margin must be"),
    ("mixed_precision", "fp16", "mixed_precision must be one of"),
    ("strategy", "tpu", "strategy must be one of"),
    ("variant", "stenvan", "variant must be one of"),
    ("label_smoothing", 1.0, "label_smoothing must be in"),
    ("colour_jitter", 1.5, "colour_jitter must be in"),
    ("lr", 0.0, "lr must be > 0"),
])
def test_bad_values_are_refused_by_name(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_jit_under_multiworker_is_refused_not_dropped():
    with pytest.raises(ValueError, match="jit cannot be used with strategy 'multiworker'.*CollectiveGatherV2"):
        TrainConfig(strategy="multiworker", jit=True)
    assert TrainConfig(strategy="mirrored", jit=True).jit and TrainConfig(jit=True).jit  # accepted elsewhere


def test_step_decay_and_warmup():
    schedule = StepDecay(1e-4, step_size=50 * 78, gamma=0.1)
    for step, expected in ((0, 1e-4), (50 * 78 - 1, 1e-4), (50 * 78, 1e-5), (100 * 78 + 3, 1e-6)):
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-6)
        assert schedule.value(step) == pytest.approx(expected, rel=1e-9)
    warm = StepDecay(1e-3, step_size=0, warmup_steps=10, warmup_factor=0.1)
    assert [round(warm.value(s), 9) for s in (0, 5, 10, 20)] == [1e-4, 5.5e-4, 1e-3, 1e-3]
    assert float(warm(5)) == pytest.approx(5.5e-4, rel=1e-6)


@pytest.mark.slow
def test_compile_model_installs_the_recipe_and_reports_each_term():
    import nvan_tf

    model = nvan_tf.build_model("baseline", 3, seq_len=2, height=32, width=16, **toy.SHALLOW_OVERRIDES)
    schedule = training.compile_model(model, TrainConfig(), steps_per_epoch=10)
    assert isinstance(model.optimizer, TorchAdam) and model.optimizer.l2 == 5e-5
    assert schedule.step_size == 500  # 50 epochs of 10 steps
    rng = np.random.default_rng(0)
    clips = rng.normal(size=(6, 2, 32, 16, 3)).astype("float32")
    pids = np.asarray([0, 0, 1, 1, 2, 2], "int32")
    logs = model.train_on_batch(clips, pids, return_dict=True)
    assert set(logs) == {"loss", "triplet", "identity"}
    assert logs["loss"] == pytest.approx(logs["triplet"] + logs["identity"], rel=1e-5)
    with pytest.raises(ValueError, match="inference-mode loss"):
        model.compute_loss(y=pids, y_pred=model(clips))


# -- where Keras has no public route: canaries that fail when Keras changes ------------


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_every_variable_finds_the_optimizer_slot_built_for_it(optimizer):
    """``optimizers._slot`` rests on Keras's private ``_get_variable_index``."""
    import nvan_tf
    from nvan_tf.training.optimizers import _slot, build_optimizer

    model = nvan_tf.build_model("baseline", 3, seq_len=2, height=32, width=16, **toy.SHALLOW_OVERRIDES)
    opt = build_optimizer(optimizer, 1e-3, momentum=0.9)
    opt.build(model.trainable_variables)
    names = {"adam": ["momentum", "velocity"], "sgd": ["momentum"]}[optimizer]
    for variable in model.trainable_variables:
        for name in names:
            slot_list = getattr(opt, name.replace("momentum", "momentums").replace("velocity", "velocities"))
            slot = _slot(opt, slot_list, variable)
            assert slot.path == f"{opt.name}/{variable.path.replace('/', '_')}_{name}"
            assert tuple(slot.shape) == tuple(variable.shape)


def test_keras_still_reduces_multiworker_logs_over_axis_0():
    """``NVANModel.train_step`` returns one-value vectors under
    MultiWorkerMirroredStrategy because Keras reduces the logs there with
    ``strategy.reduce("MEAN", v, axis=0)`` (keras-team/keras#20585). When this
    fails, Keras changed that reduction: check whether the vectors are still
    needed (tests/test_multiworker.py runs the real thing)."""
    import inspect

    from keras.src.backend.tensorflow import trainer  # the reduction is not public

    source = inspect.getsource(trainer.reduce_per_replica)
    assert 'strategy.reduce("MEAN", v, axis=0)' in source


@pytest.mark.slow
def test_train_step_logs_are_scalars_outside_multi_worker():
    import nvan_tf

    model = nvan_tf.build_model("baseline", 3, seq_len=2, height=32, width=16, **toy.SHALLOW_OVERRIDES)
    training.compile_model(model, TrainConfig(), steps_per_epoch=10)
    clips = np.random.default_rng(0).normal(size=(6, 2, 32, 16, 3)).astype("float32")
    logs = model.train_step((clips, np.asarray([0, 0, 1, 1, 2, 2], "int32")))
    assert all(np.ndim(v) == 0 for v in logs.values()), logs


def test_the_model_hands_fit_its_objective_through_public_compile():
    import keras

    import nvan_tf

    model = nvan_tf.build_model("baseline", 3, seq_len=2, height=32, width=16, **toy.SHALLOW_OVERRIDES)
    assert model.objective is None
    model.compile(optimizer="sgd", loss=keras.losses.MeanSquaredError())  # plain Keras still works
    assert model.objective is None
    training.compile_model(model, TrainConfig(), steps_per_epoch=10)
    assert model.objective is not None
    assert {m.name for m in model.objective.metrics} <= {m.name for m in model.metrics}


# -- precision -------------------------------------------------------------------


def _tiny_step(policy, height=32, width=16):
    import nvan_tf
    from nvan_tf.models.model import dtype_policy

    with dtype_policy(policy):
        model = nvan_tf.build_model("baseline", 3, seq_len=2, height=height, width=width, **toy.SHALLOW_OVERRIDES)
        training.compile_model(model, TrainConfig(), steps_per_epoch=10)
    return model


@pytest.mark.slow
def test_mixed_bfloat16_runs_a_step():
    # 64x32, not 32x16: at 32x16, 1 of 8 seeded initialisations gave this step NaN losses in bfloat16
    # (seed 3; the cause is not traced), at 64x32 none of the same 8 (ResNet-50's depth; at the toy depth, which
    # this test builds, none of seeds 0-7 either)
    import keras

    keras.utils.set_random_seed(0)
    model = _tiny_step("mixed_bfloat16", height=64, width=32)
    assert model.backbone.stem_conv.compute_dtype == "bfloat16"
    clips = np.random.default_rng(1).normal(size=(4, 2, 64, 32, 3)).astype("float32")
    logs = model.train_on_batch(clips, np.asarray([0, 0, 1, 1], "int32"), return_dict=True)
    assert all(np.isfinite(v) for v in logs.values())
    assert model(clips).dtype == "float32"


def test_mixed_float16_uses_loss_scaling():
    import keras

    model = _tiny_step("mixed_float16")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.optimizer.inner_optimizer, TorchAdam)
    assert model.backbone.stem_conv.compute_dtype == "float16"


# -- train() end to end -----------------------------------------------------------


@pytest.mark.slow
def test_train_writes_everything_and_resumes_only_the_same_config(synth_root, tmp_path):
    import nvan_tf

    out = str(tmp_path / "run")
    result = training.train(small_config(synth_root), out)
    for name in ("config.json", "history.csv", "training.png", "model.keras", "last.keras",
                 "checkpoints/checkpoint", "tensorboard"):
        assert os.path.exists(os.path.join(out, name)), name
    history = result["history"]
    assert [row["epoch"] for row in history] == [1, 2] and result["steps"] == 4
    assert all(np.isfinite(row["loss"]) and 0.0 <= row["rank1"] <= 1.0 for row in history)
    with open(os.path.join(out, "history.csv")) as f:
        lines = f.read().splitlines()
    assert lines[0].split(",")[:6] == ["epoch", "step", "lr", "loss", "triplet", "identity"]
    assert len(lines) == 3
    assert result["best"]["rank1"] == max(row["rank1"] for row in history)
    model = nvan_tf.load_model(result["model"])
    assert model.config.variant == "baseline" and model.config.seq_len == 4
    # the same command again: everything is done, nothing is trained twice
    again = training.train(small_config(synth_root), out)
    assert again["steps"] == 4 and len(again["history"]) == 2
    # a longer run of the same recipe continues from step 4
    longer = training.train(small_config(synth_root, epochs=3), out)
    assert longer["steps"] == 6 and [r["epoch"] for r in longer["history"]] == [1, 2, 3]
    with pytest.raises(training.ConfigMismatch, match=r"lr: 0.0001 in the run, 0.001 now"):
        training.train(small_config(synth_root, lr=1e-3), out)
    # starting over (resume=False) leaves nothing of the old run behind
    fresh = training.train(small_config(synth_root, lr=1e-3, epochs=1, eval_every=0), out, resume=False)
    assert fresh["steps"] == 2 and [r["epoch"] for r in fresh["history"]] == [1]
    with open(os.path.join(out, "history.csv")) as f:
        assert len(f.read().splitlines()) == 2
    # never evaluated: model.keras is this run's last model, not the old run's best
    for a, b in zip(_weights(os.path.join(out, "model.keras")), _weights(os.path.join(out, "last.keras"))):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_nan_loss_stops_the_run_and_names_the_step(synth_root, tmp_path, monkeypatch):
    from nvan_tf.data import pipeline

    real = pipeline.normalize
    monkeypatch.setattr(pipeline, "normalize", lambda x: real(x) * np.float32("nan"))
    out = str(tmp_path / "nan")
    with pytest.raises(training.TrainingDiverged,
                       match=r"The triplet loss became nan at epoch 1, step 1 of 2 \(global step 1\)"):
        training.train(small_config(synth_root, eval_every=0), out)
    assert checkpoints.latest(os.path.join(out, "checkpoints")) is None  # nothing NaN was saved


def _nan_from_batch(monkeypatch, index):
    """The training stream yields NaN clips from batch ``index`` (0-based) on."""
    import tensorflow as tf

    from nvan_tf.training import task

    build_inputs = task.ReIDTask.build_inputs

    def poisoned(self, start_batch=0, shard=(0, 1)):
        def poison(i, batch):
            clips, pids, camids = batch
            bad = tf.fill(tf.shape(clips), np.float32("nan"))
            return tf.where(i + start_batch >= index, bad, clips), pids, camids

        return build_inputs(self, start_batch, shard).enumerate().map(poison)

    monkeypatch.setattr(task.ReIDTask, "build_inputs", poisoned)


@pytest.mark.slow
def test_a_nan_on_the_last_step_of_an_epoch_is_named_as_that_step(synth_root, tmp_path, monkeypatch):
    _nan_from_batch(monkeypatch, 1)  # the second of 2 steps of epoch 1
    out = str(tmp_path / "nan")
    with pytest.raises(training.TrainingDiverged,
                       match=r"loss became nan at epoch 1, step 2 of 2 \(global step 2\)"):
        training.train(small_config(synth_root, eval_every=0), out)
    assert checkpoints.latest(os.path.join(out, "checkpoints")) is None


@pytest.mark.slow
def test_non_finite_gradients_of_a_finite_loss_stop_the_run(synth_root, tmp_path, monkeypatch):
    """fp32: the forward pass (and so the loss) is finite, the gradients are
    not; the run stops before anything is checkpointed."""
    import tensorflow as tf

    from nvan_tf.models import layers

    @tf.custom_gradient
    def nan_gradient(x):
        return tf.identity(x), lambda dy: dy * np.float32("nan")

    call = layers.FeaturePooling.call
    monkeypatch.setattr(layers.FeaturePooling, "call",
                        lambda self, x, training=False: tuple(nan_gradient(t) for t in call(self, x, training)))
    out = str(tmp_path / "grad")
    with pytest.raises(training.TrainingDiverged,
                       match=r"The gradient norm became nan at epoch 1, step 1 of 2 \(global step 1\) "
                             r"\(the loss was finite\)"):
        training.train(small_config(synth_root, eval_every=0, checkpoint_every=1), out)
    assert checkpoints.latest(os.path.join(out, "checkpoints")) is None


class _LossScale:
    """A callback that sets the loss scale when training begins."""

    @staticmethod
    def make(scale, record=None):
        import keras

        class SetScale(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.model.optimizer.dynamic_scale.assign(scale)

            def on_epoch_end(self, epoch, logs=None):
                if record is not None:
                    record.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

        return SetScale()


@pytest.mark.slow
def test_float16_skipped_updates_are_counted_not_lost(synth_root, tmp_path):
    """A scale far too large: the scaler skips the first updates while it
    halves. N steps still read N batches; the history counts the skips; the
    schedule follows the batches (lr x0.1 after one epoch of 2 batches)."""
    import tensorflow as tf

    rates = []
    out = str(tmp_path / "fp16")
    config = small_config(synth_root, eval_every=0, lr_step=1, epochs=2, **FLOAT16)
    result = training.train(config, out, callbacks=[_LossScale.make(2.0 ** 40, rates)])
    assert result["steps"] == 4
    skipped = [row["skipped"] for row in result["history"]]
    assert sum(skipped) > 0
    state = tf.train.load_checkpoint(checkpoints.latest(os.path.join(out, "checkpoints"))["path"])
    assert int(state.get_tensor("batches/.ATTRIBUTES/VARIABLE_VALUE")) == 4
    [iterations] = [k for k in state.get_variable_to_shape_map()
                    if k.endswith("torch_adam.Siteration/.ATTRIBUTES/VARIABLE_VALUE")]
    assert int(state.get_tensor(iterations)) == 4 - sum(skipped)  # applied updates
    assert rates == pytest.approx([1e-4, 1e-5], rel=1e-5)  # epoch 2's rate although updates were skipped


@pytest.mark.slow
def test_a_collapsed_loss_scale_stops_the_run(synth_root, tmp_path, monkeypatch):
    monkeypatch.setattr(training, "MAX_CONSECUTIVE_SKIPS", 3)
    config = small_config(synth_root, eval_every=0, checkpoint_every=1, **FLOAT16)
    with pytest.raises(training.TrainingDiverged, match=r"The loss scale collapsed at epoch 2, step 1 of 2 "
                                                        r"\(global step 3\): the last 3 updates were skipped"):
        training.train(config, str(tmp_path / "inf"), callbacks=[_LossScale.make(3.0e38)])


def _weights(path):
    import nvan_tf

    return [np.asarray(w) for w in nvan_tf.load_model(path).get_weights()]


# -- distribution ------------------------------------------------------------------


@pytest.mark.slow
def test_mirrored_two_devices_matches_default_exactly_in_float64(tmp_path):
    """Triplet mining over the gathered global batch and synchronised BN:
    the replicas' gradients add up to the single-device gradient."""
    out = str(tmp_path / "f64.npz")
    done = run([WORKER, "float64", out], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    r = np.load(out)
    # the losses are computed in float32 by design: 1e-6 is their rounding
    assert r["mirrored_loss"] == pytest.approx(r["default_loss"], rel=1e-6)
    grads = sorted(k for k in r.files if k.startswith("default_grad"))
    assert len(grads) == 4
    for key in grads:
        a, b = r[key], r[key.replace("default", "mirrored")]
        assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max(), key
    np.testing.assert_allclose(r["mirrored_moving_variance"], r["default_moving_variance"], rtol=1e-6)


@pytest.mark.slow
def test_mirrored_two_devices_matches_default_on_nvan(tmp_path):
    """NVAN (at its smallest depth, tests/toy.py), fp32: same first-step losses and (SGD) updates.

    float32 gradients of a randomly initialised ResNet with train-mode BN
    agree only to ~2% of a tensor's scale between two ways of summing
    (torch's own float32 and float64 gradients of the reference differ as
    much, see test_step_parity), so the updates are compared in norm here
    and exactly in float64 above."""
    out = str(tmp_path / "nvan.npz")
    done = run([WORKER, "mirrored", out], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    r = np.load(out)
    assert int(r["mirrored_replicas"]) == 2 and int(r["default_replicas"]) == 1
    for key in ("loss", "triplet", "identity"):
        assert r[f"mirrored_{key}"] == pytest.approx(r[f"default_{key}"], rel=1e-4), key
    updates = sorted((k for k in r.files if k.startswith("default_update")), key=lambda k: int(k[14:]))
    a = np.concatenate([r[k].ravel() for k in updates])
    b = np.concatenate([r[k.replace("default", "mirrored")].ravel() for k in updates])
    assert np.linalg.norm(a - b) <= 0.05 * np.linalg.norm(a)


# -- nvan-train ----------------------------------------------------------------------


@pytest.mark.slow
def test_cli_refuses_an_invalid_override_then_trains_and_reproduces_from_its_config(synth_root, tmp_path, capsys):
    """nvan-train's own path: a refused command writes nothing, the corrected one trains in that folder
    (evaluated, best epoch printed, the model flags recorded as overrides), --config resumes it and a
    changed flag is refused."""
    out = str(tmp_path / "cli")
    argv = ["--dataset", "mars", "--root", synth_root, "--variant", "ste-nvan", *toy.smallest_flags("ste-nvan"),
            "--seq-len", "4", "--height", "64", "--width", "32", "--output-dir", out]
    assert train_cli.main([*argv, "--model-overrides", json.dumps({"stripe": 4})]) == 2
    err = capsys.readouterr().err
    assert "nvan-train: error: model_overrides: Unknown model option(s) ['stripe']" in err, err
    assert "Traceback" not in err and not os.path.exists(out)
    # the corrected command (the flag, not the misspelt override) runs in that folder: nothing of the
    # refused one is in the way
    assert train_cli.main([*argv, "--stripes", "4", "--p", "2", "--k", "2", "--steps-per-epoch", "1", "--epochs",
                           "1", "--eval-every", "1", "--progress", "0"]) == 0
    printed = capsys.readouterr().out
    assert "best: epoch 1, test rank-1" in printed and "chosen on the test split" in printed and "model:" in printed
    with open(os.path.join(out, "config.json")) as f:
        recorded = json.load(f)["train"]
    assert recorded["variant"] == "ste-nvan"
    assert recorded["model_overrides"] == {"stripes": 4, **{k: list(v) for k, v in toy.smallest("ste-nvan").items()}}
    # --config reproduces the run: it resumes (nothing left to do) instead of refusing
    assert train_cli.main(["--config", os.path.join(out, "config.json"), "--output-dir", out]) == 0
    # an explicit flag overrides the file and is refused for this folder
    assert train_cli.main(["--config", os.path.join(out, "config.json"), "--output-dir", out,
                           "--lr", "0.5"]) == 2
    assert "lr: 0.0001 in the run, 0.5 now" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--p", "0"], "--p must be a positive integer"),
    (["--optimizer", "rmsprop"], "argument --optimizer: invalid choice"),
    (["--margin", "hard"], "argument --margin: expected 'soft' or a number"),
    (["--model-overrides", "[1]"], "argument --model-overrides: expected a JSON object"),
    (["--stage-blocks", "3,4,6"], "argument --stage-blocks: expected 4 comma-separated block counts of at least 1"),
    (["--non-local", "0,1"], "argument --non-local: expected 4 comma-separated non-local block counts of at least 0"),
    (["--non-local", "0,5,0,0"], "non_local asks for 5 blocks in res3, which has 4 residual blocks"),
    (["--config", "/does/not/exist.json"], "--config /does/not/exist.json: cannot read"),
    (["--dataset", "mars"], "--root is required for dataset 'mars'"),
])
def test_cli_bad_flags_name_the_flag(argv, message, tmp_path, capsys):
    try:
        code = train_cli.main([*argv, "--output-dir", str(tmp_path / "x"), "--epochs", "1"])
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_init_starts_from_the_given_weights(synth_root, tmp_path, caplog):
    """--init: the run starts from the file's embedding network (its classifier
    has another size and is left out); one Adam step moves a weight by <= ~lr."""
    import logging

    import keras

    import nvan_tf

    keras.utils.set_random_seed(7)
    start = nvan_tf.build_model("baseline", 3, seq_len=4, height=64, width=32, **toy.SHALLOW_OVERRIDES)
    path = str(tmp_path / "start.keras")
    start.save(path)
    caplog.set_level(logging.INFO, logger="nvan_tf")
    result = training.train(small_config(synth_root, init=path, epochs=1, steps_per_epoch=1, eval_every=0),
                            str(tmp_path / "init"))
    assert "initialised from" in caplog.text
    trained = nvan_tf.load_model(result["last"])
    kernel = lambda m: np.asarray(m.backbone.stem_conv.kernel)
    assert np.abs(kernel(trained) - kernel(start)).max() <= 3e-4  # lr 1e-4: one Adam step
    fresh = nvan_tf.build_model("baseline", 3, seq_len=4, height=64, width=32, **toy.SHALLOW_OVERRIDES)
    assert np.abs(kernel(fresh) - kernel(start)).max() > 1e-2  # the check can fail
