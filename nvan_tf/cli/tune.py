"""nvan-tune: a keras-tuner search over the training recipe (see nvan_tf.training.tuning)."""

import argparse
import dataclasses
import logging
import sys

from nvan_tf import cli
from nvan_tf.core import flags
from nvan_tf.cli.train import RECIPE, recipe_flags
from nvan_tf.training import tuning
from nvan_tf.training.config import TrainConfig

# TrainConfig's fields the search space varies: their flags are the space's (several values).
SEARCHED = tuple(f.name for f in dataclasses.fields(tuning.SearchSpace)
                 if f.name in {g.name for g in dataclasses.fields(TrainConfig)})
# What a trial differs in from nvan-train's defaults (flags override them).
TUNE_DEFAULTS = {"epochs": 10, "progress": 0}
RECIPE_TITLE = ("recipe: nvan-train's flags, fixed during the search (defaults: the variant's preset; --epochs: "
                "per trial, hyperband's longest bracket)")
SPACE = "search space (one value fixes it)"
# The model-shape flags that are the search space's here (several values).
SEARCHED_SHAPE = ("seq_len", "stripes", "non_local")


def build_parser(prog="nvan-tune"):
    parser = cli.make_parser(prog, tuning.__doc__)
    flags.add_run_group(parser, tuning.SearchConfig,
                        record="or the recipe of nvan-train's config.json or best_config.json")
    flags.add_fields(parser, tuning.SearchConfig, exclude=("output_dir",), group="search")
    flags.add_model_group(parser, tuple(n for n in flags.SHAPE_NAMES if n not in SEARCHED_SHAPE))
    recipe = {f.name: TUNE_DEFAULTS.get(f.name, argparse.SUPPRESS) for f in dataclasses.fields(TrainConfig)}
    flags.add_fields(parser, TrainConfig, exclude=(*flags.SHAPE_NAMES, *SEARCHED), defaults=recipe,
                     group=RECIPE_TITLE)
    flags.add_fields(parser, tuning.SearchSpace, group=SPACE)
    return parser


def read_record(loaded):
    """--config: what --print-config prints ({"train": ..., "search": ..., "space": ...}), or an
    nvan-train record (config.json, best_config.json: their recipe; the searched fields stay the
    space's), or flat options."""
    if not isinstance(loaded, dict) or not {"train", "search", "space"} & set(loaded):
        return loaded
    train = loaded.get("train", {})
    if not isinstance(train, dict):
        raise ValueError("expected the recipe in 'train' as a JSON object")
    return {**{k: v for k, v in train.items() if k not in SEARCHED}, **loaded.get("search", {}),
            **loaded.get("space", {})}


def space_from_args(args):
    return tuning.SearchSpace(**{name: None if value is None else tuple(value)
                                 for name, value in flags.field_values(args, tuning.SearchSpace).items()})


def config_from_args(args, space):
    """The recipe of the variant with the run's flags; searched fields start at the space's first value."""
    given = recipe_flags(args, exclude=SEARCHED)
    overrides = {}
    if args.stage_blocks is not None:  # a fixed model override (--stripes and --non-local are searched)
        overrides["stage_blocks"] = args.stage_blocks
    if space.non_local:  # the first table, not the variant's, which a shallower --stage-blocks may not fit
        overrides["non_local"] = space.non_local[0]
    if overrides:
        given["model_overrides"] = {**given.get("model_overrides", {}), **overrides}
    return TrainConfig.preset(given.pop("variant", "ste-nvan"), **{**given, "seq_len": space.seq_len[0]})


def resolved(args, config, space):
    """What --print-config prints and --config reads back."""
    search = {**flags.field_values(args, tuning.SearchConfig), "log_level": args.log_level}
    return {"train": config.to_dict(), "search": search, "space": flags.field_values(args, tuning.SearchSpace)}


def main(argv=None, prog="nvan-tune"):
    parser = build_parser(prog)
    args = flags.parse_args(parser, argv, read=read_record)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        space = space_from_args(args)
        config = config_from_args(args, space)
    except ValueError as err:
        return cli.fail(parser, _flag_names(err))
    if args.print_config:  # the space is checked against the models (TensorFlow) when it runs
        flags.print_config(resolved(args, config, space))
        return 0
    cli.quiet_tensorflow(args.verbose)
    try:
        space.resolve(config.variant, config.height)
    except ValueError as err:
        return cli.fail(parser, _flag_names(err))
    try:
        result = tuning.search(config, args.output_dir, space=space, algorithm=args.algorithm,
                               objective=args.objective, max_trials=args.max_trials, factor=args.factor,
                               overwrite=args.overwrite, verbose=cli.progress_verbosity(not args.quiet),
                               oracle_timeout=args.oracle_timeout)
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as err:
        return cli.fail(parser, _flag_names(err))
    if result["role"] == "worker":
        ran = ", ".join(map(str, result["ran"])) or "none"
        print(f"worker {result['worker']}: ran trials {ran}; the chief writes trials.csv, trials.png and "
              "best_config.json")
        return 0
    print(tuning.format_summary(result["trials"], args.objective))
    best = result["best"]
    print(f"\n{len(result['trials'])} trials ({len(result['new'])} run now); best: trial {best['trial']}, "
          f"{args.objective} {100 * best['score']:.2f}%")
    test = result.get("test")
    if test:
        print(f"test split, once, for the best configuration (trial {best['trial']}): rank-1 "
              f"{100 * test['rank1']:.2f}%, mAP {100 * test['mAP']:.2f}% (the trials were scored on the "
              "validation split)")
    print(f"summary: {result['summary']}\nplot: {result['plot']}\nbest config: {result['best_config']} "
          "(nvan-train --config FILE trains it)")
    return 0


def _flag_names(err):
    """``seq_len values ...`` -> ``--seq-len values ...`` for the command line."""
    import re

    return re.sub(r"^(\w+)(?= (must|values|needs|takes|lists|apply))",
                  lambda m: "--" + m.group(1).replace("_", "-"), str(err))


if __name__ == "__main__":
    sys.exit(main())
