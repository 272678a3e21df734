"""The command lines: names, help, quiet start-up, plain-text progress."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from nvan_tf import cli
from nvan_tf.cli import convert, evaluate, export, profile, track, train, tune

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARSERS = {"nvan-evaluate": evaluate.build_parser, "nvan-convert": convert.build_parser,
           "nvan-profile": profile.build_parser, "nvan-train": train.build_parser, "nvan-tune": tune.build_parser,
           "nvan-export": export.build_parser, "nvan-track": track.build_parser}


def console_scripts():
    text = open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read()
    return dict(re.findall(r'"(nvan-[a-z]+)=([\w.]+):main"', text))


@pytest.mark.parametrize("prog", sorted(PARSERS))
def test_parsers_are_named_after_their_console_script_and_document_every_option(prog):
    assert prog in console_scripts()
    parser = PARSERS[prog]()
    assert parser.prog == prog
    for action in parser._actions:
        assert action.help, f"{prog} {action.option_strings} has no help text"
    text = parser.format_help()
    assert text.startswith(f"usage: {prog} ")
    assert "python -m" not in text
    assert "--verbose" in text
    assert re.search(r"\(default: \w+\)", text)     # defaults are shown
    # each option's help shows its default once ("(default: runs/train) (default: runs/train)" was a bug)
    for action in parser._actions:
        shown = parser._get_formatter()._expand_help(action) if action.help else ""
        assert shown.count("default:") <= 1, f"{prog} {action.option_strings}: {shown}"


def test_defaults_are_shown_except_none_and_false():
    parser = cli.make_parser("tool", "Does things.")
    parser.add_argument("--size", type=int, default=8, help="a size")
    parser.add_argument("--name", help="a name; default: the file's")
    text = parser.format_help()
    assert "a size (default: 8)" in text
    assert "(default: None)" not in text and "(default: False)" not in text


def run(args):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user has it
    env["PYTHONPATH"] = ROOT
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_errors_come_alone_tensorflow_imported_or_not(tmp_path):
    """A refused command prints "prog: error: ..." and nothing else, under a user's logging. (A command
    that succeeds starts as quietly: tests/test_readme_commands.py runs the README's nvan-profile --json
    line so, its stderr empty.)"""
    result = run(["-m", "nvan_tf.cli.convert", "--torch", str(tmp_path / "missing.pth"),
                  "--variant", "nvan", "--out", str(tmp_path / "x.keras")])
    assert result.returncode == 2
    assert result.stderr == f"nvan-convert: error: model not found: {tmp_path / 'missing.pth'}\n"
    result = run(["evaluate.py", "--model", str(tmp_path / "m.keras"), "--variant", "nvan",
                  "--root", str(tmp_path)])
    assert result.returncode == 2
    assert result.stderr == f"nvan-evaluate: error: model not found: {tmp_path / 'm.keras'}\n"


class FakeTerminal:
    def isatty(self):
        return True


def test_progress_bars_write_no_control_codes_when_not_a_terminal(tmp_path, capsys):
    from nvan_tf import evaluation
    from nvan_tf.data.datasets import build_dataset, synthetic

    assert cli.progress_verbosity(1, FakeTerminal()) == 1
    assert cli.progress_verbosity(0, FakeTerminal()) == 0
    root = synthetic.generate(str(tmp_path), num_ids=4, cameras=2, seed=0,
                              height=32, width=16, frames=(3, 5))
    tracklets, _, _ = build_dataset("mars", root, verbose=False).test_set()

    class Mean:
        seq_len, height, width = 2, 32, 16

        def __call__(self, clips):
            return np.asarray(clips).mean(axis=(1, 2, 3))

    evaluation.extract_features(Mean(), tracklets, batch_size=2, verbose=1)
    out = capsys.readouterr().out
    assert out.strip()                               # a summary is still written
    assert not re.search(r"[\x1b\b\r]", out), repr(out)


def test_default_output_folder_is_ignored_by_git():
    if not os.path.exists(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout")
    result = subprocess.run(["git", "check-ignore", "-q", "evaluation/results.json"], cwd=ROOT)
    assert result.returncode == 0
