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

from nvan_tf import choices, cli
from nvan_tf.training.config import PRESETS, TrainConfig

HELP = {
    "variant": "model variant; its preset recipe is the starting point",
    "seq_len": "frames per clip (T)",
    "height": "frame height",
    "width": "frame width",
    "model_overrides": "other model options as JSON, e.g. '{\"non_local\": [0, 1, 1, 0]}'",
    "dataset": "dataset reader; synthetic is generated under --root",
    "root": "dataset folder (synthetic: default OUTPUT_DIR/synthetic_data)",
    "p": "identities per batch (P)",
    "k": "tracklets per identity (K)",
    "pk_replacement": "how an identity's K tracklets are drawn: always with replacement (the reference) "
                      "or only when it has fewer than K",
    "flip_prob": "whole-clip horizontal flip probability",
    "random_erasing": "per-frame random erasing probability",
    "colour_jitter": "per-clip colour jitter: RGB gains exp(U(-c, c)) (0: off, as the reference)",
    "steps_per_epoch": "steps per epoch (default: identities // P)",
    "max_bad_frames": "share of the frames read that may be bad (unreadable, truncated; each replaced by its "
                      "tracklet's nearest good frame) before the run stops, naming them",
    "val_ids": "training identities held out as a validation split that chooses the best epoch "
               "(0: none; then the test split chooses, as the reference does)",
    "val_fraction": "the validation split as a share of the training identities (instead of --val-ids)",
    "margin": "triplet margin: 'soft' or a number (hinge)",
    "triplet_weight": "weight of the triplet loss",
    "identity_weight": "weight of the identity (cross-entropy) loss",
    "label_smoothing": "label smoothing of the identity loss",
    "optimizer": "adam (torch's, L2 decay), adamw (decoupled decay) or sgd (momentum, L2 decay)",
    "lr": "learning rate",
    "weight_decay": "L2 decay added to every gradient (adam, sgd) or decoupled (adamw)",
    "momentum": "SGD momentum",
    "epochs": "epochs",
    "lr_step": "multiply the learning rate by --lr-gamma every this many epochs (0: never)",
    "lr_gamma": "learning-rate decay factor",
    "warmup_epochs": "linear learning-rate warm-up epochs",
    "eval_every": "evaluate every N epochs (0: never) on the validation split, or without one on the test "
                  "split; the best rank-1 is kept",
    "eval_batch_size": "clips per evaluation batch",
    "checkpoint_every": "also checkpoint every N steps inside epochs (0: epoch ends only)",
    "init": "starting weights: torchvision ResNet-50 .pth, Keras-applications .h5, or any "
            "checkpoint nvan-convert / nvan-evaluate reads",
    "seed": "seed of the data stream and the initialisation",
    "deterministic": "bit-identical runs for one seed on one machine (TensorFlow's deterministic kernels; "
                     "slower); recorded, so a resumed run keeps it",
    "mixed_precision": "training precision (losses, softmax and BN neck stay float32)",
    "jit": "compile the training step with XLA",
    "strategy": "tf.distribute strategy (multiworker reads TF_CONFIG)",
    "progress": "0 silent, 1 progress bar (one line per epoch when not a terminal), 2 one line per epoch",
}
CHOICES = {"variant": choices.VARIANT_NAMES, "dataset": choices.TRAIN_DATASETS,
           "pk_replacement": choices.PK_REPLACEMENT,
           "mixed_precision": choices.PRECISIONS, "strategy": choices.STRATEGIES,
           "optimizer": choices.OPTIMIZERS}


def _margin(text):
    if text == "soft":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'soft' or a number, got {text!r}") from None
    return value


def _json_dict(text):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({err})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def build_parser():
    parser = cli.make_parser("nvan-train", __doc__)
    run = parser.add_argument_group("run")
    run.add_argument("--config", metavar="FILE.json",
                     help="options from a JSON file (a run's config.json or a flat dict); flags override it")
    run.add_argument("--output-dir", default=None,
                     help="where the run is written (default: the folder a run's --config records, else runs/train)")
    run.add_argument("--resume", action=argparse.BooleanOptionalAction, default=None,
                     help="resume the run in --output-dir (default: when its configuration matches)")
    run.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    run.add_argument("--log-level", default="INFO", choices=choices.LOG_LEVELS,
                     help="library log level")
    tune = parser.add_argument_group("hyper-parameter search")
    tune.add_argument("--tune", action="store_true",
                      help="run a keras-tuner search instead: the other arguments are those of "
                           "nvan-tune (see nvan-train --tune --help)")
    recipe = parser.add_argument_group("recipe (defaults: the variant's preset; see --print-config)")
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        kwargs = {"dest": field.name, "default": argparse.SUPPRESS, "help": HELP[field.name]}
        if field.name in CHOICES:
            kwargs["choices"] = CHOICES[field.name]
        if field.type in ("bool",) or isinstance(field.default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif field.name == "margin":
            kwargs["type"] = _margin
        elif field.name == "model_overrides":
            kwargs["type"] = _json_dict
        elif "int" in str(field.type):
            kwargs["type"] = int
        elif "float" in str(field.type):
            kwargs["type"] = float
        recipe.add_argument(flag, **kwargs)
    recipe.add_argument("--stripes", type=int, default=argparse.SUPPRESS,
                        help="stripes of the stripe non-local blocks (a model override; small inputs)")
    return parser


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
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    variant = flags.get("variant", values.get("variant", "ste-nvan"))
    merged = {**PRESETS.get(variant, {"variant": variant}), **values, **flags}
    if hasattr(args, "stripes"):
        merged["model_overrides"] = {**merged.get("model_overrides", {}), "stripes": args.stripes}
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
        print(json.dumps(config.to_dict(), indent=2))
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
