"""The demo behind `make demo`, at its smallest: every step runs and writes its files."""

import json
import os

from nvan_tf.cli import demo


def test_demo_runs_end_to_end_and_writes_the_summary(tmp_path, capsys):
    out = str(tmp_path / "demo")
    assert demo.main(["--out", out, "--ids", "8", "--epochs", "1"]) == 0
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    for phase in ("before", "after"):
        assert set(summary[phase]) == {"rank1", "mAP"}
        assert all(0.0 <= v <= 1.0 for v in summary[phase].values())
    assert summary["train_seconds"] > 0 and summary["recipe"]["lr"] == demo.DEMO_RECIPE["lr"]
    for name in ("train/training.png", "train/model.keras", "evaluation/visualize/cmc.png"):
        assert os.path.exists(os.path.join(out, name)), name
    assert os.listdir(os.path.join(out, "evaluation", "visualize", "ranked_lists"))
    printed = capsys.readouterr().out
    assert "before" in printed and "after" in printed and "rank1" in printed
