"""Training and inference throughput of the five variants.

    python -m nvan_tf.benchmarks.train [--size 128x64 --seq-len 8 --p 4 --k 4]
        [--variants ste-nvan,nvan] [--precisions fp32,mixed_bfloat16] [--jit both]
        [--no-inference] [--reference]

Training: clips/s of ``model.train_on_batch`` (``nvan_tf.training.compile_model``:
the recipe's losses and torch-exact Adam) on a fixed P x K batch of random
clips, after warm-up steps, for each variant x precision x XLA setting; the
input pipeline is measured on its own (``nvan_tf.benchmarks.pipeline``).
On a GPU the peak device memory is reported too.

Inference (unless ``--no-inference``): clips/s of the embedding at 256x128, T=8,
batch 1 and 4 (``model(clips, training=False)`` in a ``tf.function``, as
evaluation runs it), timed in a fresh process by ``nvan_tf.benchmarks.inference``;
``--reference`` adds the PyTorch re-implementation of the authors' model
(``tests/torch_reference.py``, run from the repository root) for the same clips.

The training table runs on any Keras backend: with ``KERAS_BACKEND=jax`` the
step is Keras's JAX trainer (always XLA-compiled), which is how the figures
of a machine without TensorFlow are taken (``--no-inference`` there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from nvan_tf.choices import PRECISIONS
from nvan_tf.choices import VARIANT_NAMES as VARIANTS


def _stripes(variant, height):
    """16 stripes at 256x128 (feature maps of 32 and 16 rows); scaled down with the height."""
    if variant not in ("nvan-stripe", "ste-nvan"):
        return {}
    return {"stripes": max(1, min(16, height // 16))}


def _peak_memory():
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                return tf.config.experimental.get_memory_info("GPU:0")["peak"]
        elif backend == "jax":
            import jax

            device = jax.devices()[0]
            if device.platform == "gpu":
                return device.memory_stats().get("peak_bytes_in_use")
    except Exception:  # memory statistics are best effort
        return None
    return None


def _reset_peak_memory():
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            tf.config.experimental.reset_memory_stats("GPU:0")


def training_throughput(variant, precision, jit, *, seq_len, height, width, p, k, steps, warmup):
    from nvan_tf.training.config import TrainConfig
    from nvan_tf.training.task import ReIDTask

    config = TrainConfig(variant=variant, seq_len=seq_len, height=height, width=width, p=p, k=k, jit=jit,
                         mixed_precision=precision, model_overrides=_stripes(variant, height),
                         steps_per_epoch=78)
    task = ReIDTask(config, num_identities=625)
    model = task.build_model()
    task.compile(model)
    rng = np.random.default_rng(0)
    clips = rng.normal(size=(p * k, seq_len, height, width, 3)).astype("float32")
    pids = np.repeat(np.arange(p), k).astype("int32")
    _reset_peak_memory()
    for _ in range(warmup):
        logs = model.train_on_batch(clips, pids, return_dict=True)
    start = time.perf_counter()
    for _ in range(steps):
        logs = model.train_on_batch(clips, pids, return_dict=True)
    float(logs["loss"])  # wait for the device
    seconds = (time.perf_counter() - start) / steps
    return {"variant": variant, "precision": precision, "jit": jit, "batch": p * k,
            "step_s": seconds, "clips_per_s": p * k / seconds, "peak_memory_bytes": _peak_memory(),
            "loss": float(logs["loss"])}


def inference_throughput(variants, seconds, reference):
    """Clips/s at 256x128, T=8, batch 1 and 4, each runtime in a fresh process
    (``nvan_tf.benchmarks.inference``): Keras (TensorFlow) and, with
    ``reference``, the PyTorch re-implementation of the authors' model."""
    import tempfile

    import keras

    from nvan_tf.benchmarks import inference
    from nvan_tf.models.model import build_model

    rows = []
    with tempfile.TemporaryDirectory(prefix="nvan_bench_") as tmp:
        clips_path = os.path.join(tmp, "clips.npy")
        clips = np.random.default_rng(0).normal(size=(max(inference.BATCHES), 8, 256, 128, 3))
        np.save(clips_path, clips.astype("float32"))
        for variant in variants:
            keras.utils.set_random_seed(0)
            path = os.path.join(tmp, f"{variant}.keras")
            build_model(variant, 625).save(path)
            keras_speed = inference.time_in_subprocess("keras", path, clips_path, seconds, os.cpu_count())
            torch_speed = (inference.time_in_subprocess("torch", f"{variant}:625", clips_path, seconds,
                                                        os.cpu_count()) if reference else None)
            for i, batch in enumerate(inference.BATCHES):
                row = {"variant": variant, "batch": batch,
                       "keras_clips_per_s": keras_speed[i] if keras_speed else None}
                if torch_speed and keras_speed:
                    row["reference_clips_per_s"] = torch_speed[i]
                    row["speedup"] = keras_speed[i] / torch_speed[i]
                rows.append(row)
    return rows


def _size(text):
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 256x128, got {text!r}") from None
    return height, width


def _names(allowed):
    def parse(text):
        names = [n for n in text.split(",") if n]
        unknown = sorted(set(names) - set(allowed))
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"expected names from {list(allowed)}, got {text!r}")
        return names
    return parse


def main(argv=None):
    from nvan_tf.core import console

    parser = console.make_parser("python -m nvan_tf.benchmarks.train", __doc__)
    parser.add_argument("--variants", type=_names(VARIANTS), default=list(VARIANTS), help="comma-separated")
    parser.add_argument("--size", type=_size, default=(128, 64), help="training frame size HxW")
    parser.add_argument("--seq-len", type=int, default=8, help="training frames per clip")
    parser.add_argument("--p", type=int, default=4, help="identities per training batch")
    parser.add_argument("--k", type=int, default=4, help="clips per identity")
    parser.add_argument("--precisions", type=_names(PRECISIONS),
                        default=["fp32", "mixed_bfloat16"], help="comma-separated")
    parser.add_argument("--jit", choices=("off", "on", "both"), default="both", help="XLA for training")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps (compilation)")
    parser.add_argument("--no-training", action="store_true", help="skip the training table")
    parser.add_argument("--no-inference", action="store_true", help="skip the inference table (256x128, T=8)")
    parser.add_argument("--reference", action="store_true", help="time the PyTorch reference too")
    parser.add_argument("--seconds", type=float, default=10.0, help="inference timing per variant and batch")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    console.quiet_tensorflow(args.verbose)
    import keras

    height, width = args.size
    jits = {"off": [False], "on": [True], "both": [False, True]}[args.jit]
    results = {"backend": keras.backend.backend(), "training": [], "inference": []}
    if not args.no_training:
        print(f"training: P={args.p} x K={args.k} clips of {args.seq_len} x {height}x{width}, "
              f"backend {keras.backend.backend()}")
        print(f"{'variant':<14} {'precision':<15} {'XLA':<4} {'clips/s':>8} {'s/step':>7} {'peak MiB':>9}")
        for variant in args.variants:
            for precision in args.precisions:
                for jit in jits:
                    row = training_throughput(variant, precision, jit, seq_len=args.seq_len, height=height,
                                              width=width, p=args.p, k=args.k, steps=args.steps,
                                              warmup=args.warmup)
                    results["training"].append(row)
                    memory = row["peak_memory_bytes"]
                    print(f"{variant:<14} {precision:<15} {'on' if jit else 'off':<4} "
                          f"{row['clips_per_s']:8.2f} {row['step_s']:7.3f} "
                          f"{'-' if memory is None else f'{memory / 2**20:9.0f}':>9}", flush=True)
    if not args.no_inference:
        print("inference: clips of 8 x 256x128" + (" (vs the PyTorch reference)" if args.reference else ""))
        for row in inference_throughput(args.variants, args.seconds, args.reference):
            results["inference"].append(row)
            extra = (f"  reference {row['reference_clips_per_s']:.2f} clips/s, x{row['speedup']:.2f}"
                     if "speedup" in row else "")
            speed = row["keras_clips_per_s"]
            print(f"{row['variant']:<14} batch {row['batch']}: "
                  f"{'not timed' if speed is None else f'{speed:.2f} clips/s'}{extra}", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
