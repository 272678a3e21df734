"""Evaluate a video re-ID model: CMC, mAP and mINP under the MARS protocol.

Examples:
    nvan-evaluate --model runs/ste_nvan/best.keras --dataset mars --root data/MARS
    nvan-evaluate --model ckpt_NL_stripe_hr.pth --variant ste-nvan \\
        --dataset mars --root data/MARS --flip --visualize
    nvan-evaluate --model export/model.int8.onnx --dataset mars --root data/MARS
    nvan-evaluate --features evaluation/features.npz --root data/MARS --rerank
    nvan-evaluate --model best.keras --dataset ilidsvid --root data/iLIDS-VID \
        --split-id 3 --splits ilids_splits.json
"""

from __future__ import annotations

import logging
import sys

from nvan_tf import choices, cli
from nvan_tf.core import flags
from nvan_tf.evaluation.evaluator import (
    EvaluationConfig,
    ModelSpec,
    RankingConfig,
    format_table,
    run_evaluation,
)

# The readers with random train / test splits.
SPLIT_DATASETS = ("ilidsvid", "prid")
MODEL_FLAGS = ("variant", "num_identities", *flags.SHAPE_NAMES[1:])
OUTPUT = ("features", "reuse_features", "visualize", "num_visualize", "verbose", "deterministic")


def build_parser():
    """The flags of EvaluationConfig, ModelSpec and RankingConfig (their help is
    their fields'), the shared model, sampling-and-ranking and run groups."""
    parser = cli.make_parser("nvan-evaluate", __doc__)
    flags.add_fields(parser, ModelSpec, ["path"], group=flags.MODEL)
    flags.add_model_group(parser, MODEL_FLAGS)
    flags.add_fields(parser, EvaluationConfig, ["dataset", "root", "split_id", "splits"])
    flags.add_sampling_and_ranking(parser, EvaluationConfig, RankingConfig)
    flags.add_fields(parser, RankingConfig, exclude=flags.SHARED_SAMPLING, group=flags.SAMPLING_AND_RANKING)
    flags.add_run_group(parser, EvaluationConfig)
    flags.add_fields(parser, EvaluationConfig, OUTPUT)
    return parser


def config_from_args(args):
    model = None
    if args.model:
        overrides = flags.model_overrides(args)
        model = ModelSpec(args.model, variant=args.variant, num_identities=args.num_identities,
                          seq_len=args.seq_len, height=args.height, width=args.width,
                          overrides=overrides)
    ranking = RankingConfig(**flags.field_values(args, RankingConfig))
    return EvaluationConfig(model=model, ranking=ranking, **flags.field_values(args, EvaluationConfig))


def main(argv=None):
    parser = build_parser()
    args = flags.parse_args(parser, argv)
    if flags.printed(args, parser):
        return 0
    if not args.model and not args.features:
        parser.error("give --model, or --features with a cache written by an earlier run")
    if args.dataset not in SPLIT_DATASETS and (args.split_id is not None or args.splits):
        parser.error(f"--split-id and --splits are options of {choices.listing(SPLIT_DATASETS)}, "
                     f"not of --dataset {args.dataset}")
    cli.quiet_tensorflow(args.verbose)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
        results = run_evaluation(config)
    except (ValueError, FileNotFoundError) as err:
        return cli.fail(parser, err)
    print(format_table(results))
    print(f"results: {config.output_dir}/results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
