"""nvan-tune: a keras-tuner search over the training recipe (see nvan_tf.training.tuning)."""

import logging
import sys

from nvan_tf import choices, cli
from nvan_tf.training import tuning


def build_parser(prog="nvan-tune"):
    parser = cli.make_parser(prog, tuning.__doc__)
    run = parser.add_argument_group("search")
    run.add_argument("--algorithm", choices=choices.TUNING_ALGORITHMS, default="bayesian",
                     help="Bayesian optimisation or Hyperband")
    run.add_argument("--objective", choices=choices.TUNING_OBJECTIVES, default="mAP", help="maximised evaluation score")
    run.add_argument("--max-trials", type=int,
                     help="trials in all, earlier runs' included (default: 10 for bayesian; "
                          "hyperband's own budget)")
    run.add_argument("--factor", type=int, default=3, help="hyperband's reduction factor")
    run.add_argument("--epochs", type=int, default=10,
                     help="epochs per trial (hyperband: the longest bracket)")
    run.add_argument("--output-dir", default="runs/search", help="the search folder (resumed when re-run)")
    run.add_argument("--overwrite", action="store_true", help="delete an earlier search in --output-dir")
    run.add_argument("--quiet", action="store_true", help="no per-trial progress display")
    run.add_argument("--strategy", default="default", choices=choices.STRATEGIES,
                     help="tf.distribute strategy of each trial: default (one device) or mirrored (this "
                          "machine's GPUs); the search itself spreads trials over machines (KERASTUNER_* "
                          "variables), so multiworker is refused")
    run.add_argument("--oracle-timeout", type=float, default=tuning.ORACLE_TIMEOUT,
                     help="seconds a worker waits for the chief's oracle (KERASTUNER_ORACLE_IP:PORT) to answer")
    run.add_argument("--log-level", default="INFO", choices=choices.LOG_LEVELS,
                     help="library log level")
    recipe = parser.add_argument_group("recipe (fixed during the search; defaults: nvan-train's)")
    recipe.add_argument("--variant", default="ste-nvan", choices=choices.VARIANT_NAMES, help="model variant")
    recipe.add_argument("--dataset", default="synthetic", choices=choices.TRAIN_DATASETS,
                        help="dataset reader; synthetic is generated under --root")
    recipe.add_argument("--root", help="dataset folder (synthetic: default OUTPUT_DIR/synthetic_data)")
    recipe.add_argument("--height", type=int, default=256, help="frame height")
    recipe.add_argument("--width", type=int, default=128, help="frame width")
    recipe.add_argument("--p", type=int, default=8, help="identities per batch (P)")
    recipe.add_argument("--k", type=int, default=4, help="tracklets per identity (K)")
    recipe.add_argument("--steps-per-epoch", type=int, help="steps per epoch (default: identities // P)")
    recipe.add_argument("--val-ids", type=int, default=0,
                        help="training identities held out as the validation split every trial is scored on "
                             "(a search needs it, or --val-fraction: it never chooses on the test split)")
    recipe.add_argument("--val-fraction", type=float, default=0.0,
                        help="the validation split as a share of the training identities (instead of --val-ids)")
    recipe.add_argument("--eval-batch-size", type=int, default=16, help="clips per evaluation batch")
    recipe.add_argument("--seed", type=int, default=0, help="seed of the search, data and initialisation")
    recipe.add_argument("--init", help="starting weights of every trial (any file nvan-train --init takes)")
    recipe.add_argument("--deterministic", action="store_true",
                        help="bit-identical trials for one seed on one machine (slower)")
    recipe.add_argument("--mixed-precision", default="fp32", choices=choices.PRECISIONS,
                        help="training precision")
    space = parser.add_argument_group("search space (one value fixes it)")
    defaults = tuning.SearchSpace()
    space.add_argument("--lr", type=float, nargs="+", metavar="LR", default=list(defaults.lr),
                       help="learning rate: LOW HIGH (log scale) or one value")
    space.add_argument("--weight-decay", type=float, nargs="+", metavar="WD",
                       default=list(defaults.weight_decay), help="L2 decay: LOW HIGH (log scale) or one value")
    space.add_argument("--margin", nargs="+", default=list(defaults.margin),
                       help="triplet margins: 'soft' and/or numbers (hinge)")
    space.add_argument("--identity-weight", type=float, nargs="+", default=list(defaults.identity_weight),
                       help="weights of the identity loss")
    space.add_argument("--label-smoothing", type=float, nargs="+", default=list(defaults.label_smoothing),
                       help="label smoothing of the identity loss")
    space.add_argument("--non-local", nargs="+", metavar="TABLE",
                       help="non-local placement tables, blocks in res2,res3,res4,res5 "
                            "(default: 0,2,3,0 0,1,1,0 0,0,2,0; not for the baseline)")
    space.add_argument("--stripes", type=int, nargs="+",
                       help="stripe counts (nvan-stripe, ste-nvan; default: those of 2 4 8 16 dividing "
                            "the feature heights)")
    space.add_argument("--seq-len", type=int, nargs="+", default=list(defaults.seq_len),
                       help="frames per clip (T); ste-nvan and nvan-temporal need multiples of 4")
    return parser


def space_from_args(args):
    return tuning.SearchSpace(lr=tuple(args.lr), weight_decay=tuple(args.weight_decay), margin=tuple(args.margin),
                       identity_weight=tuple(args.identity_weight),
                       label_smoothing=tuple(args.label_smoothing),
                       non_local=None if args.non_local is None else tuple(args.non_local),
                       stripes=None if args.stripes is None else tuple(args.stripes),
                       seq_len=tuple(args.seq_len))


def config_from_args(args, space):
    """The recipe of the variant with the run's flags; searched fields start at the space's first value."""
    return tuning.TrainConfig.preset(
        args.variant, dataset=args.dataset, root=args.root, seq_len=space.seq_len[0], height=args.height,
        width=args.width, p=args.p, k=args.k, steps_per_epoch=args.steps_per_epoch, epochs=args.epochs,
        val_ids=args.val_ids, val_fraction=args.val_fraction,
        eval_batch_size=args.eval_batch_size, seed=args.seed, mixed_precision=args.mixed_precision,
        init=args.init, deterministic=args.deterministic, strategy=args.strategy,
        progress=0,
    )


def main(argv=None, prog="nvan-tune"):
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    cli.quiet_tensorflow(args.verbose)
    try:
        space = space_from_args(args)
        config = config_from_args(args, space)
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
