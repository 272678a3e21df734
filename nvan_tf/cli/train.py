"""Train NVAN / STE-NVAN for video person re-ID (the authors' recipe by default).

Examples:
    nvan-train --variant ste-nvan --dataset mars --root data/MARS --output-dir runs/ste_nvan
    nvan-train --variant nvan --dataset dukev --root data/DukeV --init resnet50-0676ba61.pth
    nvan-train --config runs/ste_nvan/config.json            # the same run again (resumes)
    nvan-train --dataset synthetic --seq-len 4 --height 128 --width 64 --stripes 8 --epochs 5

Re-running a command whose output folder holds a run of the same
configuration resumes it at the last saved step (weights, optimizer state and
the position in the sampled data stream); a different configuration is
refused with its differences listed (--no-resume starts over).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import sys

from nvan_tf import cli
from nvan_tf.core import flags
from nvan_tf.training.config import PRESETS, TrainConfig

# The recipe's flags and their help: TrainConfig's fields (nvan_tf.training.config); the
# model-shape flags: nvan_tf.core.flags.ModelShape's, shared by every command.
RECIPE = "recipe (defaults: the variant's preset; see --print-config)"


@dataclasses.dataclass
class TrainCommand:
    """What nvan-train does with the run (the recipe is TrainConfig)."""

    resume: bool | None = dataclasses.field(default=None, metadata={
        "group": flags.RUN, "help": "resume the run in --output-dir (default: when its configuration matches)"})
    tune: bool = dataclasses.field(default=False, metadata={
        "group": "hyper-parameter search", "action": "store_true",
        "help": "run a keras-tuner search instead: the other arguments are those of nvan-tune "
                "(see nvan-train --tune --help)"})


def build_parser():
    parser = cli.make_parser("nvan-train", __doc__)
    flags.add_run_group(
        parser, output_help="where the run is written (default: the folder a run's --config records, else "
                            "runs/train)", record="a run's config.json or nvan-tune's best_config.json")
    flags.add_fields(parser, TrainCommand)
    flags.add_model_group(parser)
    flags.add_fields(parser, TrainConfig, exclude=flags.SHAPE_NAMES, defaults=argparse.SUPPRESS, group=RECIPE)
    return parser


def recipe_flags(args, exclude=()):
    """The TrainConfig fields the flags in ``args`` give (the model-shape
    flags' ``None``: not given)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
              if hasattr(args, f.name) and f.name not in exclude}
    return {k: v for k, v in values.items() if not (k in flags.SHAPE_NAMES and v is None)}


def config_from_args(args):
    """Preset of the variant < --config file < explicit flags. Without
    --output-dir, a run's own config.json (--config) gives its folder, so the
    run resumes there."""
    values = {}
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as f:
                loaded = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"--config {args.config}: cannot read a JSON file ({err})") from None
        values = loaded.get("train", loaded) if isinstance(loaded, dict) else None
        if not isinstance(values, dict):
            raise ValueError(f"--config {args.config}: expected a JSON object of training options")
        if args.output_dir is None and isinstance(loaded.get("output_dir"), str):
            args.output_dir = loaded["output_dir"]
    given = recipe_flags(args)
    variant = given.get("variant", values.get("variant", "ste-nvan"))
    merged = {**PRESETS.get(variant, {"variant": variant}), **values, **given}
    overrides = flags.model_overrides(args)
    if overrides:
        merged["model_overrides"] = {**merged.get("model_overrides", {}), **overrides}
    if args.output_dir is None:
        args.output_dir = "runs/train"
    return TrainConfig.from_dict(merged, source=args.config or "flags")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--tune" in argv:
        from nvan_tf.cli import tune

        return tune.main([a for a in argv if a != "--tune"], prog="nvan-train --tune")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except (ValueError, TypeError) as err:
        # the configuration names its fields; the user typed flags
        return cli.fail(parser, re.sub(r"^(\w+) must", lambda m: f"--{m.group(1).replace('_', '-')} must",
                                       str(err)))
    if args.print_config:
        flags.print_config(config.to_dict())
        return 0
    def start_strategy():  # a multi-worker strategy must exist before TensorFlow's runtime starts
        from nvan_tf.training.loop import make_strategy

        make_strategy(config.strategy)

    try:
        cli.quiet_tensorflow(args.verbose, start=start_strategy)
    except ValueError as err:  # multiworker without TF_CONFIG
        return cli.fail(parser, err)
    from nvan_tf.training.loop import TrainingDiverged, WorkerMismatch, train

    try:
        result = train(config, args.output_dir, resume=args.resume)
    except (TrainingDiverged, WorkerMismatch, ValueError, FileNotFoundError) as err:
        return cli.fail(parser, err)
    best, test = result["best"], result["test"]
    if best:
        split = result["selection"]
        note = "" if split == "validation" else " (no validation split: chosen on the test split, as the reference)"
        print(f"best: epoch {best['epoch']}, {split} rank-1 {100 * best['rank1']:.2f}%, "
              f"mAP {100 * best['mAP']:.2f}%{note}")
    if test:
        print(f"test: rank-1 {100 * test['rank1']:.2f}%, mAP {100 * test['mAP']:.2f}% (the chosen model, once)")
    print(f"model: {result['model']}\nlast: {result['last']}\n"
          f"history: {os.path.join(args.output_dir, 'history.csv')}\n"
          f"results: {os.path.join(args.output_dir, 'results.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
