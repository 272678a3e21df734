"""Inference speed on this CPU: Keras fp32, ONNX Runtime fp32 and int8, the PyTorch reference.

    python -m nvan_tf.benchmarks.inference [--variant ste-nvan] [--model PATH] [--seconds 20]

Clips of 8 frames at 256 x 128, batch 1 and 4. The model is built with a
seeded random initialisation (speed does not depend on the weights) unless
``--model`` loads a trained one. Synthetic MARS-layout tracklets at 256 x 128
are written to a temporary folder: the int8 model is calibrated on clips of
their train split (``nvan_tf.deploy.calibration_clips``), and fp32 and int8
are both evaluated on their test split under the MARS protocol (rank-1, mAP,
the share of queries whose best match is the same, embedding cosine).

Each runtime is timed in a fresh process of its own: TensorFlow's, ONNX
Runtime's and PyTorch's thread pools slow each other down severalfold when
they share one. The PyTorch figure runs the independent re-implementation of
the authors' model in ``tests/torch_reference.py`` (run from the repository
root, with torch installed); without it that row is left out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

BATCHES = (1, 4)
RUNTIMES = {
    "keras": "Keras fp32 (TensorFlow)",
    "onnx-fp32": "ONNX Runtime fp32",
    "onnx-int8": "ONNX Runtime int8",
    "torch": "PyTorch reference (authors' model)",
}


def clips_per_second(run, clips, seconds, min_runs=3):
    """Calls ``run(clips)`` after one warm-up call until ``seconds`` have
    passed (at least ``min_runs`` times); returns clips per second."""
    run(clips)
    count, start = 0, time.perf_counter()
    while count < min_runs or time.perf_counter() - start < seconds:
        run(clips)
        count += 1
    return count * len(clips) / (time.perf_counter() - start)


def _runner(runtime, artifact, threads):
    """``run(clips)`` for one runtime; ``artifact``: the .keras / .onnx file,
    or ``variant:num_identities[:stripes]`` for the PyTorch reference."""
    if runtime == "keras":
        from nvan_tf.core import console

        console.quiet_tensorflow()
        import keras
        import tensorflow as tf

        import nvan_tf.models.model  # noqa: F401  (registers the classes)

        model = keras.saving.load_model(artifact, compile=False)
        fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        return lambda clips: fn(tf.constant(clips)).numpy()
    if runtime.startswith("onnx"):
        from nvan_tf import deploy as export

        session = export.onnx_session(artifact, threads=threads)
        return lambda clips: session.run(None, {"clips": clips})[0]
    import torch

    from tests import torch_reference

    torch.set_num_threads(threads)
    variant, num_identities, *stripes = artifact.split(":")
    model = torch_reference.build_reference(variant, int(num_identities),
                                            stripes=int(stripes[0]) if stripes else 16)
    torch_reference.randomize_(model, seed=0)
    model.eval()

    def run(clips):
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(clips.transpose(0, 1, 4, 2, 3)))).numpy()

    return run


def _worker(args):
    clips = np.load(args.clips)
    run = _runner(args.worker, args.artifact, args.threads)
    print(json.dumps([clips_per_second(run, clips[:b], args.seconds) for b in BATCHES]))
    return 0


def time_in_subprocess(runtime, artifact, clips_path, seconds, threads):
    """Clips/s of ``runtime`` (a key of ``RUNTIMES``) on ``artifact`` for each
    batch of ``BATCHES``, timed in a fresh process; None if it failed."""
    command = [sys.executable, "-m", "nvan_tf.benchmarks.inference", "--worker", runtime,
               "--artifact", artifact, "--clips", clips_path, "--seconds", str(seconds),
               "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"{RUNTIMES[runtime]}: not timed ({done.stderr.strip().splitlines()[-1:]})", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def _evaluate(paths, dataset, seq_len, height, width):
    from nvan_tf import evaluation
    from nvan_tf import deploy as export
    from nvan_tf.evaluation import ranking

    tracklets, query, gallery = dataset.test_set()
    out = {}
    for name, path in paths.items():
        session = export.onnx_session(path)
        input_name = session.get_inputs()[0].name
        extractor = evaluation.FeatureExtractor(
            lambda clips, s=session: s.run(None, {input_name: np.asarray(clips)})[0],
            seq_len, height, width, name)
        features, pids, camids = evaluation.extract_features(extractor, tracklets, batch_size=4, verbose=0)
        result = ranking.evaluate_indices(features, pids, camids, query, gallery, return_distmat=True)
        out[name] = (features, result)
    (f32, r32), (f8, r8) = out["fp32"], out["int8"]
    cosine = np.sum(f32 * f8, axis=1) / (np.linalg.norm(f32, axis=1) * np.linalg.norm(f8, axis=1))
    same_top1 = np.mean(np.argmin(r32["distmat"], axis=1) == np.argmin(r8["distmat"], axis=1))
    return {"queries": len(query), "gallery": len(gallery), "fp32": r32, "int8": r8,
            "cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min()),
            "same_top1": float(same_top1)}


def main(argv=None) -> int:
    from nvan_tf.core import console

    parser = console.make_parser("python -m nvan_tf.benchmarks.inference", __doc__.split("\n\nClips")[0])
    parser.add_argument("--variant", help="default ste-nvan (with --model: what the file records)")
    parser.add_argument("--model", help="a trained model (.keras, .weights.h5, checkpoint) instead "
                                        "of a random initialisation")
    parser.add_argument("--seq-len", type=int, default=8)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=20.0, help="timing per runtime and batch")
    parser.add_argument("--ids", type=int, default=24, help="synthetic identities (half test)")
    parser.add_argument("--calibration-batches", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads of every runtime")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    parser.add_argument("--no-evaluate", action="store_true", help="speed only")
    parser.add_argument("--worker", choices=sorted(RUNTIMES), help=argparse.SUPPRESS)
    parser.add_argument("--artifact", help=argparse.SUPPRESS)
    parser.add_argument("--clips", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args)
    console.quiet_tensorflow(args.verbose)

    import keras

    from nvan_tf import deploy as export
    from nvan_tf.data.datasets import build_dataset
    from nvan_tf.data.datasets.synthetic import generate
    from nvan_tf.io.loading import load_model
    from nvan_tf.models.model import VARIANTS, build_model

    size = {"seq_len": args.seq_len, "height": args.height, "width": args.width}
    with tempfile.TemporaryDirectory(prefix="nvan_inference_") as tmp:
        root = generate(os.path.join(tmp, "data"), num_ids=args.ids, cameras=4, seed=0,
                        height=args.height, width=args.width)
        dataset = build_dataset("mars", root, verbose=False)
        if args.model:
            model = load_model(args.model, variant=args.variant)
            source = args.model
        else:
            keras.utils.set_random_seed(0)
            model = build_model(args.variant or "ste-nvan", dataset.num_train_ids, **size)
            source = "random initialisation, seed 0"
        config = model.config
        size = {"seq_len": config.seq_len, "height": config.height, "width": config.width}
        t0 = time.perf_counter()
        keras_file = os.path.join(tmp, "model.keras")
        model.save(keras_file)
        fp32 = export.export_onnx(model, os.path.join(tmp, "model.onnx"))
        calibration = export.calibration_clips(dataset.train, batches=args.calibration_batches,
                                               batch_size=4, **size)
        int8 = export.quantize_onnx(fp32, os.path.join(tmp, "model.int8.onnx"), calibration)
        prepared = time.perf_counter() - t0
        clips_path = os.path.join(tmp, "clips.npy")
        np.save(clips_path, np.concatenate(calibration)[: max(BATCHES)])
        del model
        artifacts = {"keras": keras_file, "onnx-fp32": fp32, "onnx-int8": int8}
        if not args.no_torch and config.variant in VARIANTS:
            artifacts["torch"] = f"{config.variant}:{config.num_identities}:{config.stripes or 16}"
        speed = {}
        for runtime, artifact in artifacts.items():
            values = time_in_subprocess(runtime, artifact, clips_path, args.seconds, args.threads)
            if values is not None:
                speed[RUNTIMES[runtime]] = values
        evaluation = None if args.no_evaluate else _evaluate(
            {"fp32": fp32, "int8": int8}, dataset, config.seq_len, config.height, config.width)

    print(f"{config.variant}: clips of {config.seq_len} x {config.height}x{config.width}; "
          f"{os.cpu_count()} CPU cores, {args.threads} threads per runtime, each runtime in its own "
          f"process; model: {source}")
    print(f"(ONNX export + int8 calibration on {len(calibration)} batches of 4 clips: {prepared:.0f} s)")
    header = f"{'runtime':<36}" + "".join(f"{f'batch {b}':>14}" for b in BATCHES)
    print(header)
    print("-" * len(header))
    for name, values in speed.items():
        print(f"{name:<36}" + "".join(f"{v:>9.2f} clip/s" for v in values))
    reference = speed.get(RUNTIMES["torch"])
    if reference and RUNTIMES["onnx-int8"] in speed:
        ratio = [a / b for a, b in zip(speed[RUNTIMES["onnx-int8"]], reference)]
        print(f"{'int8 / PyTorch reference':<36}" + "".join(f"{r:>13.2f}x" for r in ratio))
    if evaluation:
        e = evaluation
        print(f"synthetic evaluation (MARS protocol, {e['queries']} queries, {e['gallery']} gallery "
              f"tracklets): fp32 rank-1 {100 * e['fp32']['rank1']:.1f}% mAP {100 * e['fp32']['mAP']:.1f}%; "
              f"int8 rank-1 {100 * e['int8']['rank1']:.1f}% mAP {100 * e['int8']['mAP']:.1f}%; "
              f"same best match {100 * e['same_top1']:.0f}% of queries; embedding cosine "
              f"mean {e['cosine_mean']:.4f}, min {e['cosine_min']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
