"""Throughput of the training input pipeline.

    python -m nvan_tf.benchmarks.pipeline [--batches 30] [--height 256 --width 128]

Writes synthetic MARS-layout JPEG tracklets at the benchmark's frame size
(256 x 128 by default, MARS' own size) to a temporary folder (or reads
``--data DIR --dataset NAME``), builds ``nvan_tf.data.pipeline.train_dataset``
(P=8, K=4, T=8: 256 frames a batch) and reports clips/s and frames/s after
``--warmup`` batches.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time


def run(dataset, *, batches: int, warmup: int, p: int, k: int, seq_len: int, height: int, width: int, seed: int) -> dict:
    from nvan_tf.data import pipeline

    stream = pipeline.train_dataset(dataset.train, p=p, k=k, seq_len=seq_len, height=height, width=width, seed=seed)
    iterator = iter(stream)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    clips = 0
    for _ in range(batches):
        batch = next(iterator)
        clips += int(batch[0].shape[0])
    seconds = time.perf_counter() - start
    return {
        "batches": batches,
        "seconds": seconds,
        "clips_per_s": clips / seconds,
        "frames_per_s": clips * seq_len / seconds,
        "bad_frames": pipeline.bad_frame_report()["bad_frames"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nvan_tf.benchmarks.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="an existing dataset root (default: synthetic JPEGs in a temporary folder)")
    parser.add_argument("--dataset", default="mars", help="reader for --data (default mars)")
    parser.add_argument("--ids", type=int, default=20, help="synthetic identities (half of them train)")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--p", type=int, default=8)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=8)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from nvan_tf.data.datasets import build_dataset
    from nvan_tf.data.datasets.synthetic import generate

    with tempfile.TemporaryDirectory(prefix="nvan_bench_") as tmp:
        if args.data:
            dataset = build_dataset(args.dataset, args.data, verbose=False)
            source = args.data
        else:
            start = time.perf_counter()
            root = generate(tmp, num_ids=args.ids, cameras=4, seed=args.seed, height=args.height, width=args.width, frames=(8, 32))
            dataset = build_dataset("mars", root, verbose=False)
            source = f"synthetic JPEGs {args.height}x{args.width} ({time.perf_counter() - start:.1f} s to write)"
        result = run(dataset, batches=args.batches, warmup=args.warmup, p=args.p, k=args.k, seq_len=args.seq_len,
                     height=args.height, width=args.width, seed=args.seed)
    print(f"data: {source}; {len(dataset.train)} train tracklets, {dataset.num_train_ids} ids")
    print(f"batch: P={args.p} x K={args.k} clips x T={args.seq_len} frames at {args.height}x{args.width}, "
          f"{os.cpu_count()} CPU cores")
    print(f"{result['batches']} batches in {result['seconds']:.2f} s: "
          f"{result['clips_per_s']:.1f} clips/s, {result['frames_per_s']:.0f} frames/s "
          f"(bad frames: {result['bad_frames']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
