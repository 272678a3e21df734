"""FLOPs and parameter report, checked against hand counts and docs/architecture.md."""

import json

import pytest

pytest.importorskip("tensorflow")

from nvan_tf.cli import profile as profile_cli
from nvan_tf.models import profile  # noqa: E402
from tests import toy  # noqa: E402


def nonlocal_block_flops(tokens, channels):
    """docs/architecture.md's block: theta, phi, g (C -> C/2), f = theta.phi^T, y = A.g, W (C/2 -> C)."""
    inter = channels // 2
    projections = 3 * 2 * tokens * channels * inter + 2 * tokens * inter * channels
    attention = 2 * (2 * tokens * tokens * inter)
    return projections + attention


@pytest.mark.slow
def test_nonlocal_flops_equal_the_hand_count():
    # 64x32 input, T=4: res3 maps are 8x4 (512 ch), res4 maps 4x2 (1024 ch).
    # at the toy depth (tests/toy.py): NVAN's five non-local blocks are the same
    row = profile.profile_variant("nvan", seq_len=4, height=64, width=32, **toy.OVERRIDES)
    expected = 2 * nonlocal_block_flops(4 * 8 * 4, 512) + 3 * nonlocal_block_flops(4 * 4 * 2, 1024)
    assert row["nonlocal_flops"] == expected
    baseline = profile.profile_variant("baseline", seq_len=4, height=64, width=32, **toy.OVERRIDES)
    assert baseline["nonlocal_flops"] == 0
    assert row["flops"] == baseline["flops"] + expected  # the rest is the same ResNet


@pytest.mark.slow
def test_json_output(capsys):
    assert profile_cli.main(["--variant", "ste-nvan", "--seq-len", "4", "--height", "64",
                         "--width", "32", "--stripes", "2", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert {"variant", "params", "flops", "nonlocal_flops"} <= set(row)
    assert row["variant"] == "ste-nvan" and 0 < row["nonlocal_flops"] < row["flops"]
    assert abs(row["params"] - 30.9e6) < 0.05e6


def test_bad_size_is_reported(capsys):
    assert profile_cli.main(["--variant", "nvan-stripe", "--height", "64", "--width", "32",
                         "--seq-len", "4"]) == 2
    assert "stripes=16 for height 8" in capsys.readouterr().err


@pytest.mark.slow
def test_full_size_flops_match_spec():
    """docs/architecture.md (PyTorch FlopCounterMode on the reference): 64.9 / 127.1 / 35.3 GFLOPs."""
    expected = {"baseline": 64.9e9, "nvan": 127.1e9, "ste-nvan": 35.3e9}
    rows = {v: profile.profile_variant(v) for v in expected}
    for variant, flops in expected.items():
        assert abs(rows[variant]["flops"] - flops) < 0.06e9, (variant, rows[variant]["flops"])
    assert abs(rows["nvan"]["nonlocal_share"] - 0.49) < 0.01
    cut = 1 - rows["ste-nvan"]["flops"] / rows["nvan"]["flops"]
    assert abs(cut - 0.722) < 0.002
