"""Rank tracklet features: features -> distances -> CMC / mAP / mINP (NumPy only).

``evaluate_indices`` is the one function that scores features: the
evaluation command, the training loop's validation and the benchmarks call
it. It takes the features of one set of tracklets with the query and
gallery picked by index, as MARS stores its split (one test set of 12,180
tracklets, ``query_IDX`` picks 1,980, the gallery is the whole set), and

1. computes the query x gallery distances (``query_gallery_distance``:
   cosine or Euclidean, optional average query expansion and k-reciprocal
   re-ranking, ``nvan_tf.evaluation.distance`` / ``reranking``);
2. scores them with ``nvan_tf.evaluation.metrics.evaluate_rank``.
"""

from __future__ import annotations

import numpy as np

from nvan_tf.evaluation import distance as distance_lib
from nvan_tf.evaluation import metrics
from nvan_tf.evaluation import reranking as reranking_lib

__all__ = ["evaluate_indices", "query_gallery_distance"]

PRECOMPUTED = "precomputed"


def _as_index(index, size, name):
    index = np.asarray(index)
    if index.dtype == bool:
        if index.shape != (size,):
            raise ValueError(
                f"{name} as a boolean mask must have shape ({size},); "
                f"received shape {index.shape}"
            )
        index = np.flatnonzero(index)
    if index.ndim != 1:
        raise ValueError(f"{name} must be 1-D; received shape {index.shape}")
    if index.size == 0:
        raise ValueError(f"{name} is empty: the query and gallery sets need at least one item")
    if not np.issubdtype(index.dtype, np.integer):
        raise ValueError(f"{name} must hold integer indices; received dtype {index.dtype}")
    if index.min() < 0 or index.max() >= size:
        raise ValueError(
            f"{name} must index into {size} items (0-based); received values "
            f"in [{index.min()}, {index.max()}]"
        )
    return index.astype(np.int64)


def _set_and_indices(features, query_index, gallery_index):
    """``(features, query_index, gallery_index)`` checked: a 2-D array and
    int64 indices into its rows (``gallery_index=None``: every row)."""
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be 2-D; received shape {features.shape}")
    size = features.shape[0]
    query_index = _as_index(query_index, size, "query_index")
    gallery_index = (np.arange(size) if gallery_index is None
                     else _as_index(gallery_index, size, "gallery_index"))
    return features, query_index, gallery_index


def _rerank_union(all_dist, query_index, gallery_index, **rerank):
    """Re-ranks with each tracklet once, even when it is both a query and a
    gallery item (MARS): on the distances among the union of both sets."""
    union = np.union1d(query_index, gallery_index)
    return reranking_lib.k_reciprocal_rerank(
        all_dist(union), np.searchsorted(union, query_index),
        np.searchsorted(union, gallery_index), **rerank,
    )


def _precomputed_distance(distmat, query_index, gallery_index, rerank, rerank_args):
    if distmat.shape[0] != distmat.shape[1]:
        raise ValueError(
            f"with metric={PRECOMPUTED!r}, features must be a square (N, N) "
            f"distance matrix; received shape {distmat.shape}"
        )
    distmat = distance_lib.check_distmat(distmat)
    if not rerank:
        return distmat[np.ix_(query_index, gallery_index)]
    return _rerank_union(lambda union: distmat[np.ix_(union, union)], query_index,
                         gallery_index, **rerank_args)


def query_gallery_distance(features, query_index, gallery_index=None, *,
                           metric="cosine", rerank=False, k1=20, k2=6,
                           lambda_value=0.3, query_expansion=0):
    """Query x gallery distances for queries and gallery taken from one set.

    Args:
        features: (N, D) features of every tracklet, or an (N, N) distance
            matrix when ``metric="precomputed"``.
        query_index: (Nq,) 0-based indices (or an (N,) boolean mask).
        gallery_index: (Ng,) indices or mask; ``None`` = all N items (MARS:
            the gallery is the whole test set, queries included).
        metric: "cosine", "euclidean" or "precomputed".
        rerank: apply k-reciprocal re-ranking (k1, k2, lambda_value).
        query_expansion: top-k for average query expansion (0 = off).

    Returns:
        (Nq, Ng) distance matrix.
    """
    if metric not in distance_lib.METRICS + (PRECOMPUTED,):
        raise ValueError(
            f"metric must be one of {distance_lib.METRICS + (PRECOMPUTED,)}; "
            f"received metric={metric!r}"
        )
    features, query_index, gallery_index = _set_and_indices(features, query_index, gallery_index)
    rerank_args = {"k1": k1, "k2": k2, "lambda_value": lambda_value}
    if metric == PRECOMPUTED:
        if query_expansion:
            raise ValueError(f"query_expansion needs features, not metric={PRECOMPUTED!r}")
        return _precomputed_distance(features, query_index, gallery_index, rerank, rerank_args)
    features = distance_lib.check_features(features)
    query = features[query_index]
    gallery = features[gallery_index]
    if query_expansion:
        query = reranking_lib.average_query_expansion(
            query, gallery, top_k=query_expansion, metric=metric
        )
    if not rerank:
        return distance_lib.pairwise_distance(query, gallery, metric=metric)
    if not query_expansion:
        return _rerank_union(lambda union: distance_lib.pairwise_distance(features[union], None, metric=metric),
                             query_index, gallery_index, **rerank_args)
    # Expanded queries are new points: all of them, then the whole gallery.
    return reranking_lib.k_reciprocal_rerank(
        distance_lib.pairwise_distance(np.concatenate([query, gallery]), None, metric=metric),
        np.arange(len(query)), len(query) + np.arange(len(gallery)), **rerank_args,
    )


def evaluate_indices(features, pids, camids, query_index, gallery_index=None,
                     *, protocol="mars", metric="cosine", max_rank=20,
                     rank_size=None, rerank=False, k1=20, k2=6,
                     lambda_value=0.3, query_expansion=0,
                     return_distmat=False):
    """Ranks and scores the features of one set of tracklets.

    Args:
        features: (N, D) features, or (N, N) distances with
            ``metric="precomputed"``.
        pids, camids: (N,) labels of the whole set.
        query_index, gallery_index: see ``query_gallery_distance``
            (``gallery_index=None``: the whole set, as MARS).
        protocol, max_rank, rank_size: see ``metrics.evaluate_rank``.
        metric, rerank, k1, k2, lambda_value, query_expansion: see
            ``query_gallery_distance``.
        return_distmat: also return the (Nq, Ng) distances under "distmat".

    Returns:
        the ``metrics.evaluate_rank`` dict.
    """
    features, query_index, gallery_index = _set_and_indices(features, query_index, gallery_index)
    pids = np.asarray(pids)
    camids = np.asarray(camids)
    for name, labels in (("pids", pids), ("camids", camids)):
        if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
            raise ValueError(
                f"{name} has shape {labels.shape} but features has "
                f"{features.shape[0]} rows; expected ({features.shape[0]},)"
            )
    distmat = query_gallery_distance(
        features, query_index, gallery_index, metric=metric, rerank=rerank,
        k1=k1, k2=k2, lambda_value=lambda_value, query_expansion=query_expansion,
    )
    result = metrics.evaluate_rank(
        distmat, pids[query_index], pids[gallery_index], camids[query_index],
        camids[gallery_index], protocol=protocol, max_rank=max_rank,
        rank_size=rank_size,
    )
    if return_distmat:
        result["distmat"] = distmat
    return result
