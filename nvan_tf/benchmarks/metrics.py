"""Times MARS-size evaluation: ``python -m nvan_tf.benchmarks.metrics``.

Builds 12,180 random 2048-d tracklet features with an identity signal
(625 identities + distractors (id 0) + junk (id -1), 6 cameras), takes
1,980 of them as queries (queries stay in the gallery, as in MARS), and
times the cosine distance matrix plus ``evaluate_rank`` (MARS protocol).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from nvan_tf.evaluation import distance
from nvan_tf.evaluation import metrics


def make_mars_like(num_gallery=12180, num_query=1980, dim=2048, num_ids=625,
                   num_cameras=6, seed=0):
    """Random features with an identity signal, MARS-shaped labels."""
    rng = np.random.default_rng(seed)
    pids = rng.integers(1, num_ids + 1, size=num_gallery)
    special = rng.random(num_gallery)
    pids[special < 0.05] = 0        # distractors
    pids[special > 0.97] = -1       # junk
    camids = rng.integers(1, num_cameras + 1, size=num_gallery)
    centres = rng.standard_normal((num_ids + 2, dim), dtype=np.float32)
    features = rng.standard_normal((num_gallery, dim), dtype=np.float32)
    features += 0.3 * centres[pids + 1]
    candidates = np.flatnonzero(pids > 0)
    query_index = np.sort(rng.choice(candidates, size=num_query, replace=False))
    return features, pids, camids, query_index


def run(repeats=3, seed=0, num_gallery=12180, num_query=1980, dim=2048):
    features, pids, camids, query_index = make_mars_like(
        num_gallery=num_gallery, num_query=num_query, dim=dim, seed=seed
    )
    timings = {"distance_s": [], "evaluate_rank_s": [], "total_s": []}
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        distmat = distance.cosine_distance(features[query_index], features)
        middle = time.perf_counter()
        result = metrics.evaluate_rank(
            distmat, pids[query_index], pids, camids[query_index], camids,
            protocol="mars",
        )
        end = time.perf_counter()
        timings["distance_s"].append(middle - start)
        timings["evaluate_rank_s"].append(end - middle)
        timings["total_s"].append(end - start)
    summary = {key: min(values) for key, values in timings.items()}
    summary.update(
        shape=[int(num_query), int(num_gallery)], dim=int(dim), repeats=repeats,
        mAP=result["mAP"], rank1=result["rank1"], mINP=result["mINP"],
    )
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-query", type=int, default=1980)
    parser.add_argument("--num-gallery", type=int, default=12180)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    summary = run(args.repeats, args.seed, args.num_gallery, args.num_query, args.dim)
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"MARS-size evaluation {summary['shape'][0]} x {summary['shape'][1]}, "
            f"{summary['dim']}-d, best of {summary['repeats']}:\n"
            f"  cosine distance   {summary['distance_s']:.3f} s\n"
            f"  evaluate_rank     {summary['evaluate_rank_s']:.3f} s\n"
            f"  total             {summary['total_s']:.3f} s\n"
            f"  (mAP {summary['mAP']:.4f}, rank-1 {summary['rank1']:.4f}, "
            f"mINP {summary['mINP']:.4f})"
        )
    return summary


if __name__ == "__main__":
    main()
