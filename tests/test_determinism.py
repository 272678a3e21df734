"""Reproducible runs: the flag is recorded, a run of the other setting is
refused, and --config FILE keeps it. That two runs of one seed give
bit-identical weights and history is tested on the demo, which trains with
the same flag in two processes (tests/test_demo.py)."""

import json
import os

import pytest

from nvan_tf.data.datasets import synthetic
from tests import toy


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth")
    return synthetic.generate(str(folder), num_ids=10, cameras=3, seed=0, height=64, width=32, frames=(4, 8))


@pytest.mark.slow
def test_the_flag_is_recorded_and_a_resumed_run_keeps_it(synth_root, tmp_path, capsys):
    from nvan_tf.cli import train as train_cli

    out = str(tmp_path / "run")
    argv = ["--dataset", "mars", "--root", synth_root, "--variant", "baseline", "--seq-len", "4", "--height", "64",
            "--width", "32", *toy.SHALLOW_FLAG, "--p", "2", "--k", "2", "--steps-per-epoch", "1", "--epochs", "1",
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
