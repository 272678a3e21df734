"""Reproducible runs: --deterministic gives bit-identical weights and history
for one seed on one machine; the flag is recorded and kept by a resumed run.
(The demo's determinism: tests/test_demo.py.)"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nvan_tf.data.datasets import synthetic
from nvan_tf.training.config import TrainConfig
from tests import toy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "training_worker.py")
TINY = dict(variant="ste-nvan", dataset="mars", seq_len=4, height=64, width=32, p=2, k=2, steps_per_epoch=2,
            epochs=2, eval_every=1, checkpoint_every=0, progress=0, model_overrides={"stripes": 4, **toy.OVERRIDES},
            random_erasing=0.5, lr=1e-3)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth")
    return synthetic.generate(str(folder), num_ids=10, cameras=3, seed=0, height=64, width=32, frames=(4, 8))


def environment():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}


def train_once(tmp_path, name, config):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(TrainConfig(**config).to_dict()))
    out = str(tmp_path / f"{name}.npz")
    done = subprocess.run([sys.executable, WORKER, "run", out, str(path), str(tmp_path / name)], cwd=ROOT,
                          env=environment(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out) as data:
        weights = [data[k] for k in sorted(data.files, key=lambda k: int(k.split("_")[1]))]
    with open(out + ".json") as f:
        history = [{k: v for k, v in row.items() if k != "seconds"} for row in json.load(f)["history"]]
    return weights, history


@pytest.mark.slow
def test_the_same_seed_twice_gives_bit_identical_weights_and_history(synth_root, tmp_path):
    config = {**TINY, "root": synth_root, "deterministic": True}
    first_weights, first_history = train_once(tmp_path, "first", config)
    second_weights, second_history = train_once(tmp_path, "second", config)
    assert first_history == second_history
    assert len(first_weights) == len(second_weights) > 0
    for a, b in zip(first_weights, second_weights):
        np.testing.assert_array_equal(a, b)
    # the check can fail: the runs trained (their weights left the seed's initialisation)
    from nvan_tf.training import ReIDTask

    start = ReIDTask(TrainConfig(**config)).build_model().get_weights()
    assert sum(not np.array_equal(a, b) for a, b in zip(first_weights, start)) > len(start) // 2
    with open(tmp_path / "first" / "config.json") as f:
        assert json.load(f)["train"]["deterministic"] is True  # recorded: --config FILE keeps it


@pytest.mark.slow
def test_the_flag_is_recorded_and_a_resumed_run_keeps_it(synth_root, tmp_path, capsys):
    from nvan_tf.cli import train as train_cli

    out = str(tmp_path / "run")
    argv = ["--dataset", "mars", "--root", synth_root, "--variant", "baseline", "--seq-len", "4", "--height", "64",
            "--width", "32", *toy.FLAG, "--p", "2", "--k", "2", "--steps-per-epoch", "1", "--epochs", "1",
            "--eval-every", "0", "--progress", "0", "--output-dir", out]
    assert train_cli.main(argv) == 0  # without --deterministic the run works
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["train"]["deterministic"] is False
    # a run of the other setting is another run: refused, naming the flag
    assert train_cli.main([*argv, "--deterministic", "--epochs", "2"]) == 2
    assert "deterministic: False in the run, True now" in capsys.readouterr().err
    # --config FILE reproduces the recorded setting
    config = json.load(open(os.path.join(out, "config.json")))["train"]
    assert train_cli.main(["--config", os.path.join(out, "config.json"), "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["deterministic"] is config["deterministic"]
