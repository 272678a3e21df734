"""Export a model: SavedModel (TF Serving), ONNX (+ ONNX Runtime int8 / fp16), TensorRT.

Examples:
    nvan-export --model ste_nvan.keras --out models/nvan/1                   # SavedModel
    nvan-export --model ste_nvan.keras --out onnx --format onnx               # onnx/model.onnx
    nvan-export --model ste_nvan.keras --out onnx --format onnx --precision int8 \\
        --calibration-data data/MARS                                         # + onnx/model.int8.onnx
    nvan-export --model ckpt_best.pth --variant ste-nvan --out trt --format tensorrt --precision fp16
"""

from __future__ import annotations

import logging
import os
import sys

import numpy as np

from nvan_tf import cli
from nvan_tf.core import flags
from nvan_tf.deploy.config import ExportConfig

MODEL_FLAGS = ("variant", "num_identities", *flags.SHAPE_NAMES[1:])


def build_parser():
    """ExportConfig's flags (their help is its fields'), the shared model and run groups."""
    parser = cli.make_parser("nvan-export", __doc__)
    flags.add_fields(parser, ExportConfig, ["model"])
    flags.add_run_group(parser, ExportConfig)
    flags.add_fields(parser, ExportConfig, ["format", "precision", "overwrite"])
    flags.add_model_group(parser, MODEL_FLAGS)
    flags.add_fields(parser, ExportConfig, exclude=("model", "output_dir", "format", "precision", "overwrite",
                                                    *MODEL_FLAGS))
    return parser


def _calibration(args, config):
    from nvan_tf.data.datasets import build_dataset

    from nvan_tf.deploy.onnx import calibration_clips

    dataset = build_dataset(args.calibration_dataset, args.calibration_data, verbose=False)
    return calibration_clips(dataset.train, seq_len=config.seq_len, height=config.height,
                             width=config.width, batches=args.calibration_batches,
                             batch_size=args.calibration_batch_size, held_out=args.check_clips)


def _export(args) -> list[str]:
    if args.format == "savedmodel" and args.precision != "fp32":
        raise ValueError("a SavedModel is exported in fp32; --precision fp16/int8 needs "
                         "--format onnx or tensorrt")
    if args.check_clips < 1:
        raise ValueError(f"--check-clips must be at least 1. Received: {args.check_clips}")
    if args.precision == "int8" and not args.calibration_data:
        raise ValueError("--precision int8 needs calibration clips: pass --calibration-data ROOT "
                         "(a dataset root; clips of its train split are used)")
    if args.format == "tensorrt":
        from nvan_tf.deploy.tensorrt import TensorRTUnavailableError, tensorrt_unavailable_reason

        reason = tensorrt_unavailable_reason()
        if reason:  # say so before the (slow) ONNX export
            raise TensorRTUnavailableError(f"--format tensorrt needs an NVIDIA GPU and TensorRT: {reason}")
    from nvan_tf.deploy import (build_tensorrt_engine, compare_onnx, convert_onnx_fp16, export_onnx,
                                export_saved_model, quantize_onnx)
    from nvan_tf.io.loading import load_model
    from nvan_tf.models.model import config_of

    sizes = {k: getattr(args, k) for k in ("seq_len", "height", "width") if getattr(args, k)}
    sizes.update(flags.model_overrides(args))
    model = load_model(args.model, variant=args.variant, num_identities=args.num_identities, **sizes)
    if args.format == "savedmodel":
        return [export_saved_model(model, args.output_dir, overwrite=args.overwrite)]
    config = config_of(model)
    calibration, check = _calibration(args, config) if args.precision == "int8" else (None, None)

    def out(name):
        return os.path.join(args.output_dir, name)

    written = [export_onnx(model, out("model.onnx"), overwrite=args.overwrite)]
    fp32 = written[0]
    if args.precision == "fp16":
        written.append(convert_onnx_fp16(fp32, out("model.fp16.onnx"), overwrite=args.overwrite))
    elif args.precision == "int8":
        target = "tensorrt" if args.format == "tensorrt" else "cpu"
        name = "model.int8.onnx" if target == "cpu" else "model.int8-qdq.onnx"
        written.append(quantize_onnx(fp32, out(name), calibration, target=target,
                                     overwrite=args.overwrite))
        if target == "cpu":
            stats = compare_onnx(model, written[-1], check)
            print(f"int8 vs Keras fp32 on {len(check)} clips of tracklets not calibrated on: "
                  f"cosine min {stats['cosine_min']:.5f}, max abs error {stats['max_abs_error']:.2e}")
    if args.precision == "fp32" and args.format == "onnx":
        clips = np.random.default_rng(0).normal(
            size=(2, config.seq_len, config.height, config.width, 3)).astype(np.float32)
        stats = compare_onnx(model, fp32, clips)
        print(f"ONNX Runtime vs Keras on 2 random clips: cosine min {stats['cosine_min']:.6f}, "
              f"max abs error {stats['max_abs_error']:.2e}")
    if args.format == "tensorrt":
        written.append(build_tensorrt_engine(written[-1], out(f"model.{args.precision}.plan"),
                                             opt_batch=args.opt_batch, max_batch=args.max_batch,
                                             overwrite=args.overwrite))
    return written


def main(argv=None) -> int:
    parser = build_parser()
    args = flags.parse_args(parser, argv)
    if flags.printed(args, parser):
        return 0
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    cli.quiet_tensorflow(args.verbose)
    try:
        written = _export(args)
    except (ValueError, TypeError, FileExistsError, FileNotFoundError) as err:
        return cli.fail(parser, err)
    except (ImportError, RuntimeError, OSError) as err:
        return cli.fail(parser, err, code=1)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
