"""The command lines' flags come from the configs they fill (nvan_tf.core.flags).

Parsers only: no command runs, nothing imports TensorFlow.
"""

import argparse
import dataclasses
import json
import re

import pytest

from nvan_tf.cli import convert, demo, evaluate, export, profile, track, train, tune
from nvan_tf.core import flags
from nvan_tf.deploy.config import ExportConfig
from nvan_tf.evaluation.evaluator import EvaluationConfig, ModelSpec, RankingConfig
from nvan_tf.training.config import TrainConfig
from nvan_tf.training.tuning import SearchConfig, SearchSpace
from nvan_tf.video import demo as video_demo
from nvan_tf.video.stages import TrackConfig

COMMANDS = {"nvan-convert": convert, "nvan-evaluate": evaluate, "nvan-export": export, "nvan-profile": profile,
            "nvan-track": track, "nvan-train": train, "nvan-tune": tune,
            "python -m nvan_tf.demo": demo, "python -m nvan_tf.video.demo": video_demo}
# no model-shape flags, or only some (the demo: its variant and depth)
SHAPELESS = ("nvan-track", "python -m nvan_tf.demo", "python -m nvan_tf.video.demo")
# The dataclasses each command's flags come from.
CONFIGS = {"nvan-convert": [convert.ConvertConfig], "nvan-evaluate": [EvaluationConfig, ModelSpec, RankingConfig],
           "nvan-export": [ExportConfig], "nvan-profile": [profile.ProfileConfig], "nvan-track": [TrackConfig],
           "nvan-train": [TrainConfig, train.TrainCommand], "nvan-tune": [TrainConfig, SearchConfig, SearchSpace],
           "python -m nvan_tf.demo": [demo.DemoConfig], "python -m nvan_tf.video.demo": [video_demo.VideoDemoConfig]}
# A command line of each that parses (files need not exist: nothing runs).
ARGV = {
    "nvan-convert": ["--torch", "c.pth", "--variant", "nvan", "--out", "x.keras", "--seq-len", "4"],
    "nvan-evaluate": ["--model", "m.keras", "--root", "data", "--flip", "--rerank", "--k1", "10", "--recompute",
                      "--out", "ev"],
    "nvan-export": ["--model", "m.keras", "--out", "onnx", "--format", "onnx", "--height", "64"],
    "nvan-profile": ["--variant", "baseline", "--seq-len", "2", "--json"],
    "nvan-track": ["--camera", "a.mp4", "b.mp4", "--model", "colour-histogram", "--threshold", "0.3",
                   "--out", "tr", "--no-video", "--crop-size", "64", "32"],
    "nvan-train": ["--variant", "baseline", "--seq-len", "4", "--random-erasing", "0.5", "--stripes", "4",
                   "--margin", "0.3", "--out", "runs/x"],
    "nvan-tune": ["--val-ids", "3", "--seq-len", "4", "8", "--height", "64", "--width", "32", "--lr", "1e-4",
                  "--colour-jitter", "0.2", "--out", "runs/s"],
    "python -m nvan_tf.demo": ["--seed", "3", "--epochs", "2", "--out", "demo_output"],
    "python -m nvan_tf.video.demo": ["--identities", "4", "--out", "demo_output/video"],
}


def parsers():
    return {prog: module.build_parser() for prog, module in COMMANDS.items()}


def actions(parser):
    return {s: a for a in parser._actions for s in a.option_strings}


def words(text):
    return re.sub(r"\s+", "", text)


def test_every_command_has_the_same_model_shape_flags_with_the_same_defaults():
    reference = {}
    for prog, parser in parsers().items():
        if prog in SHAPELESS:
            continue                            # its model file (or its recipe) fixes the shape
        found = actions(parser)
        for name in flags.SHAPE_NAMES:
            flag = "--" + name.replace("_", "-")
            assert flag in found, (prog, flag)
            action = found[flag]
            if prog == "nvan-tune" and name in tune.SEARCHED_SHAPE:
                assert action.nargs == "+"       # searched: the search space's values
                continue
            shape = (action.default, action.help, action.type, tuple(action.choices or ()))
            assert shape == reference.setdefault(name, shape), (prog, flag)
    assert reference["seq_len"][0] is None and reference["variant"][1] == flags.help_of(flags.ModelShape, "variant")


# The flags every command has that fill no config: help, --verbose and the run group's.
SHARED = {"help", "verbose", "config", "print_config", "log_level", "output_dir"}


@pytest.mark.parametrize("prog", sorted(COMMANDS))
def test_every_flag_comes_from_a_field_of_the_commands_configs(prog):
    """No command declares a flag by hand: each one's destination is a field
    of one of its configs (or of ModelShape), or one of the shared flags."""
    fields = {flags._dest(f) for cls in [*CONFIGS[prog], flags.ModelShape] for f in dataclasses.fields(cls)}
    loose = [a.option_strings for a in COMMANDS[prog].build_parser()._actions
             if a.option_strings and a.dest not in fields | SHARED]
    assert not loose, (prog, loose)


def test_nvan_tune_has_every_flag_of_nvan_train():
    tune_flags, train_flags = actions(tune.build_parser()), actions(train.build_parser())
    for field in dataclasses.fields(TrainConfig):
        assert "--" + field.name.replace("_", "-") in tune_flags, field.name
    for flag in ("--random-erasing", "--colour-jitter", "--pk-replacement", "--flip-prob", "--max-bad-frames"):
        assert tune_flags[flag].help == train_flags[flag].help


def test_evaluate_and_track_share_the_sampling_and_ranking_flags():
    evaluate_flags, track_flags = actions(evaluate.build_parser()), actions(track.build_parser())
    for name in flags.SHARED_SAMPLING:
        flag = "--" + name.replace("_", "-")
        a, b = evaluate_flags[flag], track_flags[flag]
        assert (a.help, a.type, a.choices, type(a)) == (b.help, b.type, b.choices, type(b)), flag
        assert a.container.title == b.container.title == flags.SAMPLING_AND_RANKING
    assert evaluate_flags["--sampling"].default == "rrs" and track_flags["--sampling"].default is None


@pytest.mark.parametrize("prog", ["nvan-evaluate", "nvan-export", "nvan-track", "nvan-train", "nvan-tune",
                                  "python -m nvan_tf.demo", "python -m nvan_tf.video.demo"])
def test_out_is_a_hidden_alias_of_output_dir(prog):
    parser = COMMANDS[prog].build_parser()
    argv = [a for a in ARGV[prog]]
    at = argv.index("--out")
    old = flags.parse_args(parser, argv)
    argv[at] = "--output-dir"
    new = flags.parse_args(COMMANDS[prog].build_parser(), argv)
    assert old.output_dir == new.output_dir == ARGV[prog][at + 1]
    parser.epilog = None                        # the examples may still spell --out
    text = parser.format_help()
    assert "--output-dir" in text and not re.search(r"--out\b(?!-)", text)


def _resolved(prog, argv, capsys):
    """What --print-config prints for ``argv``."""
    assert COMMANDS[prog].main([*argv, "--print-config"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("prog", sorted(COMMANDS))
def test_print_config_is_what_config_reads_back(prog, tmp_path, capsys):
    printed = _resolved(prog, ARGV[prog], capsys)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(printed))
    assert _resolved(prog, ["--config", str(path)], capsys) == printed
    # flags override the file
    override = {"nvan-convert": ("--seq-len", "2"), "nvan-evaluate": ("--k1", "5"), "nvan-export": ("--height", "32"),
                "nvan-profile": ("--seq-len", "3"), "nvan-track": ("--threshold", "0.5"),
                "nvan-train": ("--seq-len", "2"), "nvan-tune": ("--height", "128"),
                "python -m nvan_tf.demo": ("--ids", "28"), "python -m nvan_tf.video.demo": ("--frames", "60")}[prog]
    again = _resolved(prog, ["--config", str(path), *override], capsys)
    assert again != printed and override[1] in json.dumps(again)


def test_config_reads_a_training_run_record(tmp_path, capsys):
    printed = _resolved("nvan-train", ARGV["nvan-train"], capsys)
    record = tmp_path / "config.json"
    record.write_text(json.dumps({"train": printed, "output_dir": "runs/x"}))
    assert _resolved("nvan-train", ["--config", str(record)], capsys) == printed
    recipe = _resolved("nvan-tune", ["--config", str(record), "--val-ids", "2"], capsys)["train"]
    assert recipe["random_erasing"] == 0.5 and recipe["variant"] == "baseline" and recipe["val_ids"] == 2


@pytest.mark.parametrize("prog", sorted(COMMANDS))
def test_each_fields_help_is_written_once_and_shown_by_every_command_using_it(prog):
    parser = COMMANDS[prog].build_parser()
    text = words(parser.format_help())
    helps = {a.help for a in parser._actions}
    for cls in [*CONFIGS[prog], flags.ModelShape]:
        for field in dataclasses.fields(cls):
            if "help" not in field.metadata:
                continue
            used = [a for a in parser._actions if a.dest == flags._dest(field)
                    and a.help != argparse.SUPPRESS]
            if not used:
                assert cls is flags.ModelShape, (prog, cls.__name__, field.name)   # the model flags it takes
                continue
            if prog == "nvan-tune" and cls in (TrainConfig, flags.ModelShape) and field.name in (
                    *tune.SEARCHED, *tune.SEARCHED_SHAPE):
                continue                        # searched: the search space's flag
            assert field.metadata["help"] in helps, (prog, cls.__name__, field.name)
            assert words(field.metadata["help"]) in text, (prog, cls.__name__, field.name)


def test_required_options_may_come_from_the_config_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        flags.parse_args(evaluate.build_parser(), ["--model", "m.keras"])
    assert "the following arguments are required: --root" in capsys.readouterr().err
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"root": "data"}))
    assert flags.parse_args(evaluate.build_parser(), ["--model", "m.keras", "--config", str(path)]).root == "data"
    path.write_text(json.dumps({"no_such_option": 1}))
    with pytest.raises(SystemExit):
        flags.parse_args(evaluate.build_parser(), ["--config", str(path)])
    assert "unknown option(s) ['no_such_option']" in capsys.readouterr().err


def test_building_the_parsers_imports_no_tensorflow():
    import subprocess
    import sys

    code = ("import sys\nfrom nvan_tf.cli import convert, evaluate, export, profile, track, train, tune\n"
            "for m in (convert, evaluate, export, profile, track, train, tune): m.build_parser()\n"
            "print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr
