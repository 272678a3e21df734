"""Export a model: SavedModel (TF Serving), ONNX (+ ONNX Runtime int8 / fp16), TensorRT.

Examples:
    nvan-export --model ste_nvan.keras --out models/nvan/1                   # SavedModel
    nvan-export --model ste_nvan.keras --out onnx --format onnx               # onnx/model.onnx
    nvan-export --model ste_nvan.keras --out onnx --format onnx --precision int8 \\
        --calibration-data data/MARS                                         # + onnx/model.int8.onnx
    nvan-export --model ckpt_best.pth --variant ste-nvan --out trt --format tensorrt --precision fp16
"""

from __future__ import annotations

import os
import sys

import numpy as np

from nvan_tf import choices, cli


def build_parser():
    parser = cli.make_parser("nvan-export", __doc__)
    parser.add_argument("--model", required=True,
                        help=".keras file, .weights.h5 or an authors' PyTorch checkpoint "
                             "(with --variant)")
    parser.add_argument("--out", required=True,
                        help="output folder: the SavedModel itself (TF Serving: MODEL_BASE/VERSION), "
                             "or the folder for model*.onnx and model.PRECISION.plan")
    parser.add_argument("--format", choices=choices.EXPORT_FORMATS, default="savedmodel",
                        help="SavedModel for TF Serving, ONNX (+ ONNX Runtime int8), TensorRT engine")
    parser.add_argument("--precision", choices=choices.EXPORT_PRECISIONS, default="fp32",
                        help="onnx and tensorrt; a SavedModel is fp32")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    model = parser.add_argument_group("model (checked against what the file records)")
    model.add_argument("--variant", choices=choices.VARIANT_NAMES, help="checked against the file")
    model.add_argument("--num-identities", type=int, help="classifier size (default: from the file)")
    model.add_argument("--seq-len", type=int, help="frames per clip (default: recorded, else 8)")
    model.add_argument("--height", type=int, help="frame height (default: recorded, else 256)")
    model.add_argument("--width", type=int, help="frame width (default: recorded, else 128)")
    calibration = parser.add_argument_group("int8 calibration")
    calibration.add_argument("--calibration-data", help="dataset root; clips of its train split")
    calibration.add_argument("--calibration-dataset", default="mars", choices=choices.DATASETS,
                             help="reader for --calibration-data")
    calibration.add_argument("--calibration-batches", type=int, default=8, help="batches of clips calibrated on")
    calibration.add_argument("--calibration-batch-size", type=int, default=4, help="clips per calibration batch")
    calibration.add_argument("--check-clips", type=int, default=8,
                             help="clips of other tracklets, never calibrated on, that int8 is checked on")
    engine = parser.add_argument_group("tensorrt")
    engine.add_argument("--opt-batch", type=int, default=4, help="batch the engine is tuned for")
    engine.add_argument("--max-batch", type=int, default=16, help="largest batch the engine takes")
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
    model = load_model(args.model, variant=args.variant, num_identities=args.num_identities, **sizes)
    if args.format == "savedmodel":
        return [export_saved_model(model, args.out, overwrite=args.overwrite)]
    config = config_of(model)
    calibration, check = _calibration(args, config) if args.precision == "int8" else (None, None)

    def out(name):
        return os.path.join(args.out, name)

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
    args = parser.parse_args(argv)
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
