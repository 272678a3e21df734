"""Training survives every fault it promises to: a fault-injection matrix.

Each run is a separate process (tests/training_worker.py ``run``) that kills
itself with SIGKILL at a chosen point: after a checkpoint, inside a
checkpoint write, or before the first checkpoint. Tiny sizes: the baseline
variant on clips of 4 frames at 64x32 (float16: 2 frames of 32x16), one
residual block a stage (tests/toy.py), P=2 x K=2, 3 steps per epoch.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from nvan_tf.data.datasets import synthetic
from nvan_tf.training import checkpoints
from nvan_tf.training.config import TrainConfig
from tests import toy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "training_worker.py")
# 4 frames of 64x32 (at 2 frames of 32x16, to spare float16 its slow CPU convolutions, a bfloat16 run turned
# NaN at step 4 once, with both cores busy)
TINY = dict(variant="baseline", dataset="mars", seq_len=4, height=64, width=32, p=2, k=2, steps_per_epoch=3,
            epochs=2, eval_every=0, checkpoint_every=1, progress=0, model_overrides=toy.SHALLOW_OVERRIDES)
# float16 runs at 2 frames of 32x16: its CPU convolutions are the slowest (its loss scaling skips a step that
# overflows rather than turning NaN, and the test checks the stream and the resume, not the weights)
FLOAT16_SIZE = dict(seq_len=2, height=32, width=16)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth")
    return synthetic.generate(str(folder), num_ids=10, cameras=3, seed=0, height=64, width=32, frames=(4, 8))


def start(tmp_path, name, config, output_dir, kill=None, env=None):
    """Starts one worker process; returns (process, weights path)."""
    config_path = tmp_path / f"{name}.config.json"
    config_path.write_text(json.dumps(TrainConfig(**config).to_dict()))
    out = str(tmp_path / f"{name}.npz")
    args = [sys.executable, WORKER, "run", out, str(config_path), str(output_dir)] + ([kill] if kill else [])
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT, **(env or {})}
    # the output goes to a file, not a pipe: a worker blocked on a full pipe would stall its partners
    log = open(tmp_path / f"{name}.log", "w+")
    process = subprocess.Popen(args, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT, text=True)
    process.log = log
    return process, out


def finish(process, killed=False, timeout=900):
    process.wait(timeout=timeout)
    process.log.seek(0)
    stderr = process.log.read()
    process.log.close()
    if killed:
        assert process.returncode == -signal.SIGKILL, f"the run was to be killed: {stderr[-3000:]}"
    else:
        assert process.returncode == 0, stderr[-3000:]
    return stderr


def run(tmp_path, name, config, output_dir, kill=None, env=None):
    process, out = start(tmp_path, name, config, output_dir, kill, env)
    finish(process, killed=kill is not None)
    return out


def weights(path):
    with np.load(path) as data:
        return [data[k] for k in sorted(data.files, key=lambda k: int(k.split("_")[1]))]


def result(path):
    with open(path + ".json") as f:
        return json.load(f)


def batch_log(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


# -- SIGKILL mid-epoch, every precision --------------------------------------------


@pytest.fixture(scope="module")
def uninterrupted(synth_root, tmp_path_factory):
    """The fp32 run killed nowhere: its final weights and the batches it read."""
    tmp = tmp_path_factory.mktemp("whole")
    log = tmp / "whole.batches"
    out = run(tmp, "whole", {**TINY, "root": synth_root}, tmp / "whole", env={"NVAN_TEST_BATCH_LOG": str(log)})
    assert result(out)["steps"] == 6
    return weights(out), batch_log(log)


def stream(config, count):
    """The first ``count`` batches of the run's P x K stream, as batch lines
    (the stream is the same in every precision)."""
    from nvan_tf.training import ReIDTask
    from tests.training_worker import batch_line

    batches = ReIDTask(TrainConfig(**config)).build_inputs(start_batch=0).take(count)
    return [batch_line(clips, pids) for clips, pids, _ in batches.as_numpy_iterator()]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "mixed_float16", "mixed_bfloat16"])
def test_killed_after_a_checkpoint_the_rerun_reads_the_same_batches_and_finishes(
        synth_root, tmp_path, uninterrupted, precision):
    """Killed right after checkpoint 4 (mid-epoch 2: batches 4, 5, 6), the rerun reads the uninterrupted
    run's batches from batch 4 on and finishes. In fp32 that rerun is killed again, inside checkpoint 5's
    write (its files written, the state file still naming 4): a third run resumes from 4, cleans up, and
    ends with the uninterrupted run's weights."""
    config = {**TINY, **(FLOAT16_SIZE if precision == "mixed_float16" else {}), "root": synth_root,
              "mixed_precision": precision}
    whole_weights, whole_log = uninterrupted
    expected = stream(config, 6)
    if precision != "mixed_float16":
        assert whole_log[:6] == expected          # the stream is the same in every precision
    folder = tmp_path / "killed" / "checkpoints"
    run(tmp_path, "killed", config, tmp_path / "killed", kill="after-checkpoint:4")
    assert checkpoints.latest(str(folder))["batches"] == 4
    if precision == "fp32":
        log = tmp_path / "killed_again.batches"
        run(tmp_path, "killed_again", config, tmp_path / "killed", kill="in-checkpoint:5",
            env={"NVAN_TEST_BATCH_LOG": str(log)})
        assert batch_log(log)[:1] == expected[4:5]
        # checkpoint 5's files exist, but the state file still names 4
        assert os.path.exists(folder / "ckpt-5.index")
        assert checkpoints.latest(str(folder))["batches"] == 4
    log = tmp_path / "resumed.batches"
    resumed = run(tmp_path, "resumed", config, tmp_path / "killed", env={"NVAN_TEST_BATCH_LOG": str(log)})
    assert result(resumed)["steps"] == 6
    assert [row["epoch"] for row in result(resumed)["history"]] == [1, 2]
    # the resumed run read what an uninterrupted one reads from batch 4 on
    assert batch_log(log)[:2] == expected[4:6]
    if precision == "mixed_float16":
        assert all("skipped" in row for row in result(resumed)["history"])
    else:
        assert all("skipped" not in row for row in result(resumed)["history"])
    if precision == "fp32":
        for a, b in zip(whole_weights, weights(resumed)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        # only the checkpoints kept are left: the half-written one is gone or rewritten
        left = sorted(os.listdir(folder))
        named = {f"ckpt-{n}" for n in (5, 6)}
        assert all(name == "checkpoint" or name.split(".")[0] in named for name in left), left


@pytest.mark.slow
def test_killed_before_the_first_checkpoint_the_rerun_still_starts_from_init(synth_root, tmp_path):
    import keras

    import nvan_tf

    keras.utils.set_random_seed(7)
    start_model = nvan_tf.build_model("baseline", 5, seq_len=4, height=64, width=32, **toy.SHALLOW_OVERRIDES)
    init = str(tmp_path / "init.keras")
    start_model.save(init)
    # a negligible learning rate: the trained weights stay at their start
    config = {**TINY, "root": synth_root, "init": init, "lr": 1e-12, "checkpoint_every": 0}
    run(tmp_path, "killed", config, tmp_path / "run", kill="at-batch:1")
    assert checkpoints.latest(str(tmp_path / "run" / "checkpoints")) is None
    assert os.path.exists(tmp_path / "run" / "config.json")
    resumed = run(tmp_path, "resumed", config, tmp_path / "run")
    kernel = weights(resumed)[0]  # the stem convolution
    expected = np.asarray(start_model.backbone.stem_conv.kernel)
    assert kernel.shape == expected.shape
    assert np.abs(kernel - expected).max() < 1e-6
    fresh = nvan_tf.build_model("baseline", 5, seq_len=4, height=64, width=32, **toy.SHALLOW_OVERRIDES)
    assert np.abs(np.asarray(fresh.backbone.stem_conv.kernel) - expected).max() > 1e-2  # the check can fail


# Multi-worker faults (two workers killed and restarted, a worker that cannot
# see the shared folder) are tested through the console script in
# tests/test_multiworker.py.


# -- checkpoints by name ---------------------------------------------------------------


def _compiled(name=None, **overrides):
    import keras

    from nvan_tf.models.model import ModelConfig, NVANModel
    from nvan_tf.training.task import compile_model

    keras.utils.set_random_seed(0)
    model = NVANModel(ModelConfig.from_variant("baseline", 3, seq_len=2, height=32, width=16, **overrides))
    if name:  # a layer renamed before its variables exist: another path, the same shapes
        model.backbone.stem_bn.name = name
    model.build(model.input_spec_shape)
    compile_model(model, TrainConfig(seq_len=2, height=32, width=16), steps_per_epoch=4)
    return model


@pytest.mark.slow
def test_a_checkpoint_with_a_renamed_variable_is_refused_naming_it(tmp_path):
    folder = str(tmp_path / "ckpt")
    saved = _compiled()
    checkpoints.Checkpointer(folder, saved).save(5, {"history": [], "best": None})
    other = _compiled(name="stem_norm")
    before = [np.asarray(v) for v in other.weights]
    with pytest.raises(checkpoints.CheckpointError) as error:
        checkpoints.Checkpointer(folder, other).restore(5)
    message = str(error.value)
    assert "baseline/backbone/stem_norm/gamma" in message and "missing from the checkpoint" in message
    assert "baseline/backbone/stem_bn/gamma" in message and "unexpected" in message
    for a, b in zip(before, other.weights):
        np.testing.assert_array_equal(a, np.asarray(b))  # nothing was assigned
    # the same model restores, by name: BN's four (C,) vectors each in its place
    same = _compiled()
    for variable in same.backbone.stem_bn.weights:
        variable.assign(np.zeros(variable.shape))
    record = checkpoints.Checkpointer(folder, same).restore(5)
    assert record["batches"] == 5
    for a, b in zip(saved.backbone.stem_bn.weights, same.backbone.stem_bn.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_mixed_float16_checkpoint_holds_the_loss_scale():
    import keras

    from nvan_tf.models.model import dtype_policy

    with dtype_policy("mixed_float16"):
        model = _compiled()
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    paths = [v.path for v in model.optimizer.variables]
    assert any(p.endswith("dynamic_scale") for p in paths) and any("momentum" in p for p in paths)


def test_nothing_non_finite_is_checkpointed(tmp_path):
    model = _compiled()
    model.weights[0].assign(np.full(model.weights[0].shape, np.nan))
    with pytest.raises(FloatingPointError, match="not finite"):
        checkpoints.Checkpointer(str(tmp_path / "c"), model).save(1, {"history": [], "best": None})
    assert checkpoints.latest(str(tmp_path / "c")) is None
