"""The demo behind `make demo`, at its smallest (8 identities, 2 epochs, STE-NVAN
with one residual block a stage and one non-local block in res3 and res4):
every step runs and writes its files, and two runs give the same numbers,
history and weights (it trains
with ``deterministic=True``, what ``nvan-train --deterministic`` sets). Each
run is its own process: the demo turns on TensorFlow's deterministic
kernels, a process-wide setting. This is also the suite's test of
``--deterministic`` itself: two epochs (the sampler's epoch boundary, the
optimizer's state carried over), random erasing and colour jitter, bit for
bit (tests/test_determinism.py checks the flag's record and resume)."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nvan_tf.cli import demo
from tests import toy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_demo(out):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
    # STE-NVAN at its smallest depth (tests/toy.py): one run took 68 s at ResNet-50's and 37 s at this one
    done = subprocess.run([sys.executable, "-m", "nvan_tf.demo", "--out", out, "--ids", "8", "--epochs", "2",
                           *toy.smallest_flags("ste-nvan")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f), done.stdout


def history(out):
    """history.csv's rows without their wall-clock seconds."""
    with open(os.path.join(out, "train", "history.csv")) as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_demo_runs_end_to_end_deterministically(tmp_path):
    import nvan_tf

    first, printed = run_demo(str(tmp_path / "a"))
    for phase in ("before", "after"):
        assert set(first[phase]) == {"rank1", "mAP", "cross_camera_top5"}
        assert all(0.0 <= v <= 1.0 for v in first[phase].values())
    assert first["train_seconds"] > 0 and first["recipe"]["lr"] == demo.DEMO_RECIPE["lr"]
    assert first["recipe"]["deterministic"] is True
    with open(os.path.join(tmp_path, "a", "train", "config.json")) as f:
        assert json.load(f)["train"]["deterministic"] is True  # recorded: --config FILE keeps it
    out = str(tmp_path / "a")
    for name in ("train/training.png", "train/model.keras", "evaluation/visualize/cmc.png"):
        assert os.path.exists(os.path.join(out, name)), name
    assert os.listdir(os.path.join(out, "evaluation", "visualize", "ranked_lists"))
    assert "before" in printed and "after" in printed and "rank-1" in printed
    assert "top-5 from another camera" in printed

    second, _ = run_demo(str(tmp_path / "b"))
    for key in ("before", "after", "cross_camera_top5"):
        assert first[key] == second[key], key
    rows = history(str(tmp_path / "a"))
    assert [row["epoch"] for row in rows] == ["1", "2"] and rows[-1]["rank1"] != "", rows
    assert rows == history(str(tmp_path / "b"))  # every loss term, learning rate and score
    weights = [nvan_tf.load_model(os.path.join(tmp_path, run, "train", "last.keras")).get_weights()
               for run in ("a", "b")]
    assert len(weights[0]) == len(weights[1]) > 0
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    # the check can fail: the runs trained (most weights left the seed's initialisation)
    start = nvan_tf.load_model(os.path.join(tmp_path, "a", "untrained.keras")).get_weights()
    assert len(start) == len(weights[0])
    assert sum(not np.array_equal(a, b) for a, b in zip(weights[0], start)) > len(start) // 2
