"""The demo behind ``make demo``: watch STE-NVAN learn, on 2 CPU cores, in minutes.

    python -m nvan_tf.demo --output-dir demo_output [--variant ste-nvan --ids 72 --epochs 30 --seed 0]

1. writes synthetic tracklets in the MARS layout (``.mat`` info files and
   all), read back by the real MARS reader: two thirds of the identities
   are training identities, the rest are the test query and gallery; a fifth
   of the training identities is held out as a validation split, which
   chooses the best epoch (the test split is evaluated once, at the end);
2. evaluates the untrained model (random initialisation: ImageNet weights
   cannot be downloaded here) under the MARS protocol;
3. trains it with ``nvan_tf.training.train`` at a reduced size (clips of
   4 frames at 64x32; the demo recipe is printed: a higher learning rate
   than the paper's, decayed once, random erasing and colour jitter against
   the cameras' colour casts, deterministic kernels so a rerun gives the
   same numbers);
4. evaluates the trained model again, with the pictures (CMC curve, ranked
   lists, distance histograms) and the training curves;
5. prints rank-1 and mAP before -> after and writes ``summary.json``.
"""

import dataclasses
import json
import os
import sys
import time

from nvan_tf.choices import SYNTHETIC_LOOKS

DEMO_RECIPE = {
    "seq_len": 4, "height": 64, "width": 32, "model_overrides": {"stripes": 4},
    "p": 4, "k": 4, "lr": 1e-3, "lr_step": 24, "eval_every": 5, "checkpoint_every": 0,
    "random_erasing": 0.5, "colour_jitter": 0.25, "deterministic": True, "val_fraction": 0.2,
}
# 48 of the 72 synthetic identities are training identities, 10 of them held out for
# validation: 38 train; 24 are the test split (with 16, a seed's test identities could be
# harder than its validation ones by 30 points; README, Demo).
TRAIN_FRACTION = 2 / 3


def _evaluate(model_path, data_root, output_dir, visualize):
    from nvan_tf.cli import evaluate

    argv = ["--model", model_path, "--dataset", "mars", "--root", data_root,
            "--output-dir", output_dir, "--recompute", "--quiet"]
    if visualize:
        argv.append("--visualize")
    if evaluate.main(argv) != 0:
        raise RuntimeError(f"evaluation of {model_path} failed")
    with open(os.path.join(output_dir, "results.json"), encoding="utf-8") as f:
        metrics = json.load(f)["metrics"]
    return {name: metrics[name] for name in ("rank1", "mAP", "cross_camera_top5")}


@dataclasses.dataclass
class DemoConfig:
    """What the demo runs (its flags: the metadata's help)."""

    output_dir: str = dataclasses.field(default="demo_output", metadata={"help": "output folder"})
    variant: str = "ste-nvan"  # its flag: the shared model group's --variant
    ids: int = dataclasses.field(default=72, metadata={
        "help": "synthetic identities (two thirds training identities, a fifth of them held out for "
                "validation; the rest are the test query and gallery)"})
    epochs: int = dataclasses.field(default=30, metadata={"help": "training epochs"})
    lr: float = dataclasses.field(default=DEMO_RECIPE["lr"], metadata={"help": "learning rate (Adam)"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of the data, the model and the training"})
    looks: str = dataclasses.field(default="standard", metadata={
        "help": "the ranges the synthetic identities and cameras are drawn from (body shapes, clothing "
                "colours, lighting, colour casts, noise): nvan_tf.data.datasets.synthetic.LOOKS",
        "choices": SYNTHETIC_LOOKS})
    init: str | None = dataclasses.field(default=None, metadata={
        "help": "start from these weights (any file nvan-train --init takes)"})


def build_parser():
    from nvan_tf import cli
    from nvan_tf.core import flags

    parser = cli.make_parser("python -m nvan_tf.demo", __doc__.split("\n\n")[0])
    # the variant and its depth (a quicker, smaller model with fewer blocks; default ResNet-50's)
    flags.add_model_group(parser, ["variant", "stage_blocks", "non_local"], defaults={"variant": DemoConfig.variant})
    flags.add_fields(parser, DemoConfig, exclude=("output_dir", "variant"))
    flags.add_run_group(parser, DemoConfig)
    parser.set_defaults(log_level="WARNING")  # the demo prints its own steps
    return parser


def main(argv=None):
    from nvan_tf import cli
    from nvan_tf.core import flags

    parser = build_parser()
    args = flags.parse_args(parser, argv)
    if flags.printed(args, parser):
        return 0
    args.out = args.output_dir
    cli.quiet_tensorflow(args.verbose)

    import logging

    from nvan_tf.core.atomic import write_json
    from nvan_tf.data.datasets import build_dataset
    from nvan_tf.data.datasets.synthetic import generate
    from nvan_tf.io.loading import save_model
    from nvan_tf.training import ReIDTask, TrainConfig, train

    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    data_root = os.path.join(args.out, "synthetic_mars")
    print(f"[1/4] Writing {args.ids} synthetic identities (MARS layout) to {data_root}")
    generate(data_root, num_ids=args.ids, cameras=4, seed=args.seed, train_fraction=TRAIN_FRACTION,
             looks=args.looks)
    dataset = build_dataset("mars", data_root, verbose=False)
    print(dataset.format_statistics())

    config = TrainConfig.preset(args.variant, dataset="mars", root=data_root, epochs=args.epochs,
                                seed=args.seed, progress=cli.progress_verbosity(1), init=args.init,
                                **{**DEMO_RECIPE, "lr": args.lr, "model_overrides": {
                                    **DEMO_RECIPE["model_overrides"], **flags.model_overrides(args)}})
    print(f"[2/4] Evaluating the untrained {args.variant} (clips of {config.seq_len} x "
          f"{config.height}x{config.width})")
    task = ReIDTask(config, dataset=dataset)
    untrained = task.build_model()  # the initialisation train() starts from
    if args.init:
        print(f"      initialised from {task.initialize(untrained)}")
    untrained_path = save_model(task.inference_model(untrained), os.path.join(args.out, "untrained.keras"))
    before = _evaluate(untrained_path, data_root, os.path.join(args.out, "before"), visualize=False)

    changed = {k: v for k, v in config.to_dict().items()
               if k in DEMO_RECIPE or k in ("epochs", "optimizer", "weight_decay", "margin")}
    print(f"[3/4] Training with the demo recipe: {json.dumps(changed)}")
    started = time.perf_counter()
    result = train(config, os.path.join(args.out, "train"), resume=False)
    train_seconds = time.perf_counter() - started

    best = result["best"]
    if best:
        print(f"      best epoch {best['epoch']}, chosen on the validation split: rank-1 "
              f"{100 * best['rank1']:.1f}%, mAP {100 * best['mAP']:.1f}%")
    print("[4/4] Evaluating the chosen model on the test split, once (pictures in the output folder)")
    after = _evaluate(result["model"], data_root, os.path.join(args.out, "evaluation"), visualize=True)
    summary = {"before": before, "after": after, "train_seconds": round(train_seconds, 1),
               "variant": config.variant, "recipe": changed, "selection": result["selection"],
               "best_epoch": best["epoch"] if best else None,
               "cross_camera_top5": {"before": before["cross_camera_top5"], "after": after["cross_camera_top5"]}}
    write_json(os.path.join(args.out, "summary.json"), summary)
    print(f"\n{'':26} {'before':>8} {'after':>8}")
    for name, label in (("rank1", "rank-1"), ("mAP", "mAP"), ("cross_camera_top5", "top-5 from another camera")):
        print(f"{label:26} {100 * before[name]:7.1f}% {100 * after[name]:7.1f}%")
    print("(top-5 from another camera: how often a query's best matches come from another camera; "
          "low means the model matches backgrounds, not people)")
    print(f"training: {train_seconds:.0f} s; curves {os.path.join(args.out, 'train', 'training.png')}, "
          f"CMC and ranked lists under {os.path.join(args.out, 'evaluation', 'visualize')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
