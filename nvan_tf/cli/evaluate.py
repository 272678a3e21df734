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
from nvan_tf.evaluation.evaluator import (
    EvaluationConfig,
    ModelSpec,
    RankingConfig,
    format_table,
    run_evaluation,
)

# The readers with random train / test splits.
SPLIT_DATASETS = ("ilidsvid", "prid")


def build_parser():
    parser = cli.make_parser("nvan-evaluate", __doc__)
    model = parser.add_argument_group("model")
    model.add_argument("--model", help=".keras file, .weights.h5, SavedModel folder, ONNX file "
                       "(fp32 or int8, from nvan-export) or PyTorch checkpoint (.pth/.pt/.tar/.ckpt); "
                       "omit to reuse --features")
    model.add_argument("--variant", choices=choices.VARIANT_NAMES, help="needed for PyTorch "
                       "checkpoints and for weights without a recorded config, checked "
                       "against the file otherwise")
    model.add_argument("--num-identities", type=int,
                       help="classifier size; default: read from the file (checked if given)")
    model.add_argument("--seq-len", type=int,
                       help="frames per clip; default: the model's own, else 8")
    model.add_argument("--height", type=int, help="frame height; default: the model's own, else 256")
    model.add_argument("--width", type=int, help="frame width; default: the model's own, else 128")
    model.add_argument("--stripes", type=int,
                       help="override the stripe count (small inputs); default: the model's own")

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="mars", choices=choices.DATASETS, help="dataset reader")
    data.add_argument("--root", required=True, help="dataset folder")
    data.add_argument("--split-id", type=int,
                      help="split of iLIDS-VID / PRID-2011; default: the reader's (0)")
    data.add_argument("--splits", metavar="FILE",
                      help="split file of iLIDS-VID / PRID-2011: read if it exists, else the "
                      "generated random splits are recorded there; default: the published file "
                      "in the dataset, else a record in $NVAN_TF_CACHE/splits (~/.cache/nvan_tf)")
    data.add_argument("--sampling", choices=choices.SAMPLING_MODES, default="rrs",
                      help="test clip sampling (rrs: the reference's)")
    data.add_argument("--batch-size", type=int, default=16, help="clips per batch")
    data.add_argument("--flip", action="store_true", help="average with horizontally flipped clips")

    rank = parser.add_argument_group("ranking")
    rank.add_argument("--protocol", choices=choices.PROTOCOLS, default="mars",
                      help="mars: official MARS rule; market: torchreid's rule")
    rank.add_argument("--metric", choices=choices.DISTANCE_METRICS, default="cosine",
                      help="distance (cosine, as the reference)")
    rank.add_argument("--rank-size", type=int,
                      help="rank cut for AP/CMC; default: 10000 for mars, none for market")
    rank.add_argument("--max-rank", type=int, default=20, help="CMC length")
    rank.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
    rank.add_argument("--k1", type=int, default=20, help="re-ranking k1")
    rank.add_argument("--k2", type=int, default=6, help="re-ranking k2")
    rank.add_argument("--lambda", dest="lambda_value", type=float, default=0.3,
                      help="re-ranking weight of the original distance")
    rank.add_argument("--query-expansion", type=int, default=0, metavar="K",
                      help="average query expansion with the top K gallery items (0: off)")

    out = parser.add_argument_group("output")
    out.add_argument("--output-dir", default="evaluation",
                     help="where results.json, features.npz and pictures go")
    out.add_argument("--features", help="feature cache (.npz); default: OUTPUT_DIR/features.npz")
    out.add_argument("--recompute", action="store_true", help="ignore a matching feature cache")
    out.add_argument("--visualize", action="store_true",
                     help="write the CMC curve, ranked lists and distance histograms")
    out.add_argument("--num-visualize", type=int, default=8, help="ranked lists to draw")
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    out.add_argument("--deterministic", action="store_true",
                     help="TensorFlow's deterministic kernels: bit-identical features on one machine")
    return parser


def config_from_args(args):
    model = None
    if args.model:
        overrides = {"stripes": args.stripes} if args.stripes else {}
        model = ModelSpec(args.model, variant=args.variant, num_identities=args.num_identities,
                          seq_len=args.seq_len, height=args.height, width=args.width,
                          overrides=overrides)
    dataset_kwargs = {}
    if args.split_id is not None:
        dataset_kwargs["split_id"] = args.split_id
    if args.splits is not None:
        dataset_kwargs["split_file"] = args.splits
    ranking = RankingConfig(
        protocol=args.protocol, metric=args.metric, max_rank=args.max_rank,
        rank_size=args.rank_size, rerank=args.rerank, k1=args.k1, k2=args.k2,
        lambda_value=args.lambda_value, query_expansion=args.query_expansion,
    )
    return EvaluationConfig(
        model=model, dataset=args.dataset, root=args.root, dataset_kwargs=dataset_kwargs,
        output_dir=args.output_dir, sampling=args.sampling, batch_size=args.batch_size,
        flip=args.flip, ranking=ranking, features=args.features,
        reuse_features=not args.recompute, visualize=args.visualize,
        num_visualize=args.num_visualize, verbose=0 if args.quiet else 1,
    )


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.model and not args.features:
        parser.error("give --model, or --features with a cache written by an earlier run")
    if args.dataset not in SPLIT_DATASETS and (args.split_id is not None or args.splits):
        parser.error(f"--split-id and --splits are options of {choices.listing(SPLIT_DATASETS)}, "
                     f"not of --dataset {args.dataset}")
    cli.quiet_tensorflow(args.verbose)
    if args.deterministic:
        from nvan_tf.models.model import enable_determinism

        enable_determinism()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
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
