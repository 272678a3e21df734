"""Re-ID retrieval metrics: CMC, mAP and mINP (NumPy only).

Two protocols are offered, named after where they come from:

``"mars"``: the official MARS-evaluation rule, used by the NVAN reference
    code for MARS and DukeMTMC-VideoReID. Queries stay in the gallery. For
    each query, *good* = same id and a different camera; *junk* = gallery id
    -1, or same id and same camera (the query itself included); distractors
    (id 0) are ordinary negatives. Junk is skipped in the ranked list. AP is
    the trapezoid rule of the MARS-evaluation code,
    ``ap += (recall - old_recall) * (old_precision + precision) / 2`` with
    ``old_precision`` starting at 1, over the non-junk ranking. As in the
    reference, only the first ``rank_size`` (10,000) ranked gallery items
    (junk included) count for AP and CMC; the number of good matches is
    counted over the whole gallery.
``"market"``: torchreid's ``eval_market1501`` rule. Gallery items with the
    query's id *and* camera are removed; AP is the non-interpolated mean of
    the precision at each good match; no ranking cut.

mINP (Ye et al., TPAMI 2021): per query, ``#good / R_hard`` where ``R_hard``
is the (1-based) rank of the hardest good match in the non-junk ranking; it
is computed over the whole ranking (the ``rank_size`` cut does not apply).

Ties: each query's gallery is ranked by a *stable* ascending sort of the
distances, so equal distances keep gallery order (lower index first). The
reference uses ``np.argsort``'s default quicksort, whose tie order is not
specified; results can differ from it only for exactly tied distances.

Queries without any good match in the gallery are skipped and counted
(``num_skipped_queries``, ``skipped_queries``); the reference would crash on
them. The computation is vectorised over blocks of queries.
"""

from __future__ import annotations

import logging

import numpy as np

from nvan_tf.choices import PROTOCOLS
from nvan_tf.evaluation import distance as distance_lib
from nvan_tf.evaluation import reranking as reranking_lib

logger = logging.getLogger(__name__)

__all__ = [
    "PROTOCOLS",
    "MARS_RANK_SIZE",
    "evaluate_rank",
    "evaluate_indices",
    "query_gallery_distance",
    "mean_inp",
]

MARS_RANK_SIZE = 10000
JUNK_PID = -1
REPORTED_RANKS = (1, 5, 10, 20)


def _as_labels(values, name, expected, what):
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array; received shape {values.shape}"
        )
    if values.shape[0] != expected:
        raise ValueError(
            f"{name} has {values.shape[0]} entries but distmat has "
            f"{expected} {what}"
        )
    return values


def _check_distmat(distmat):
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise ValueError(
            "distmat must be a 2-D array (num_query, num_gallery); "
            f"received shape {distmat.shape}"
        )
    if distmat.shape[0] == 0:
        raise ValueError(
            f"the query set is empty: distmat has shape {distmat.shape}"
        )
    if distmat.shape[1] == 0:
        raise ValueError(
            f"the gallery is empty: distmat has shape {distmat.shape}"
        )
    if not np.issubdtype(distmat.dtype, np.floating):
        distmat = distmat.astype(np.float64)
    # A NaN anywhere makes the sum NaN; only then look for the rows.
    if not np.isnan(np.sum(distmat, dtype=np.float64)):
        return distmat
    nan_rows = np.flatnonzero(np.isnan(distmat).any(axis=1))
    if nan_rows.size:
        raise ValueError(
            f"distmat contains NaN in {nan_rows.size} row(s), first rows "
            f"{nan_rows[:5].tolist()}; check the features for NaN"
        )
    return distmat


def _encode(query_values, gallery_values):
    """Joint integer codes for query and gallery labels (any comparable type)."""
    values, codes = np.unique(
        np.concatenate([query_values, gallery_values]), return_inverse=True
    )
    codes = codes.reshape(-1).astype(np.int32)
    return values, codes[: len(query_values)], codes[len(query_values):]


def _default_chunk(num_gallery):
    # About 4M gallery entries per block: ~16 MB per int32 temporary.
    return int(max(1, min(4096, (1 << 22) // max(1, num_gallery))))


def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids,
                  protocol="mars", max_rank=20, rank_size=None,
                  chunk_size=None):
    """CMC, mAP and mINP of a query x gallery distance matrix.

    Args:
        distmat: (Nq, Ng) distances, smaller = more similar.
        q_pids, g_pids: (Nq,) and (Ng,) identity labels; -1 marks junk
            tracklets and 0 distractors (MARS convention).
        q_camids, g_camids: (Nq,) and (Ng,) camera labels.
        protocol: "mars" (official MARS rule) or "market" (torchreid's).
        max_rank: length of the returned CMC curve (ranks 1..max_rank).
        rank_size: rank cut for AP and CMC; ``None`` means 10,000 for
            "mars" (as the reference) and no cut for "market".
        chunk_size: queries per vectorised block (default: ~4M entries).

    Returns:
        dict with ``cmc`` ((max_rank,) float array), ``mAP``, ``mINP``,
        ``rank1``, ``rank5``, ``rank10``, ``rank20`` (fractions in [0, 1]),
        ``ap`` and ``inp`` ((Nq,) per query, NaN for skipped queries),
        ``num_queries``, ``num_valid_queries``, ``num_skipped_queries``,
        ``skipped_queries`` (indices), ``protocol``, ``rank_size``.

    Raises:
        ValueError: on mismatched shapes, an empty query set or gallery,
            NaN distances, an unknown protocol, or no query with a match.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"protocol must be one of {PROTOCOLS}; received protocol={protocol!r}"
        )
    if int(max_rank) != max_rank or max_rank < 1:
        raise ValueError(f"max_rank must be a positive integer; received {max_rank!r}")
    max_rank = int(max_rank)
    if rank_size is None:
        rank_size = MARS_RANK_SIZE if protocol == "mars" else None
    elif int(rank_size) != rank_size or rank_size < 1:
        raise ValueError(
            f"rank_size must be a positive integer or None; received {rank_size!r}"
        )
    distmat = _check_distmat(distmat)
    num_query, num_gallery = distmat.shape
    q_pids = _as_labels(q_pids, "q_pids", num_query, "rows")
    g_pids = _as_labels(g_pids, "g_pids", num_gallery, "columns")
    q_camids = _as_labels(q_camids, "q_camids", num_query, "rows")
    g_camids = _as_labels(g_camids, "g_camids", num_gallery, "columns")

    pid_values, q_pid_code, g_pid_code = _encode(q_pids, g_pids)
    cam_values, q_cam_code, g_cam_code = _encode(q_camids, g_camids)
    # One int32 code per gallery item: pid_code * num_cams + cam_code, so a
    # single gather per ranked entry gives both labels; junk ids get -1.
    num_cams = len(cam_values)
    if len(pid_values) * num_cams >= 2**31 - 1:
        raise ValueError(
            f"too many distinct labels: {len(pid_values)} pids x {num_cams} cameras"
        )
    g_code = g_pid_code * num_cams + g_cam_code
    q_base = q_pid_code * num_cams
    has_junk_id = False
    if protocol == "mars":
        junk_codes = np.flatnonzero(pid_values == JUNK_PID)
        if junk_codes.size:
            has_junk_id = True
            g_code[g_pid_code == junk_codes[0]] = -1
            # A query with the junk id has no good match by definition.
            q_base[q_pid_code == junk_codes[0]] = -(num_cams + 1)

    num_ranks = max(max_rank, max(REPORTED_RANKS))
    cut = num_gallery if rank_size is None else min(int(rank_size), num_gallery)
    ap = np.full(num_query, np.nan)
    inp = np.full(num_query, np.nan)
    first_rank = np.zeros(num_query, dtype=np.int64)  # 0: no good within cut
    chunk_size = _default_chunk(num_gallery) if chunk_size is None else int(chunk_size)

    for start in range(0, num_query, chunk_size):
        stop = min(start + chunk_size, num_query)
        size = stop - start
        order = distance_lib.stable_argsort(distmat[start:stop])
        code = g_code[order]
        del order
        # code - q_base in [0, num_cams) <=> same id; == q_cam <=> same camera.
        offset = code - q_base[start:stop, None]
        m_rows, m_cols = np.nonzero(offset.view(np.uint32) < num_cams)
        same_cam = offset[m_rows, m_cols] == q_cam_code[start:stop][m_rows]
        del offset
        # Flat keys row * num_gallery + position of junk entries (sorted).
        junk_keys = m_rows[same_cam].astype(np.int64) * num_gallery + m_cols[same_cam]
        if has_junk_id:
            j_rows, j_cols = np.nonzero(code == -1)
            junk_keys = np.union1d(
                junk_keys, j_rows.astype(np.int64) * num_gallery + j_cols
            )
        del code
        rows, cols = m_rows[~same_cam], m_cols[~same_cam]
        # 1-based rank in the non-junk ranking: position + 1 - junk before it.
        good_keys = rows.astype(np.int64) * num_gallery + cols
        row_keys = rows.astype(np.int64) * num_gallery
        junk_before = (np.searchsorted(junk_keys, good_keys)
                       - np.searchsorted(junk_keys, row_keys))
        rank = (cols + 1 - junk_before).astype(np.float64)
        num_good = np.bincount(rows, minlength=size)
        first = np.cumsum(num_good) - num_good
        hits = (np.arange(rows.size) - np.repeat(first, num_good) + 1).astype(np.float64)
        precision = hits / rank
        if protocol == "mars":
            previous = np.ones_like(precision)
            later = rank > 1
            previous[later] = (hits[later] - 1) / (rank[later] - 1)
            contribution = 0.5 * (previous + precision)
        else:
            contribution = precision
        in_cut = cols < cut
        contribution[~in_cut] = 0.0
        ap_sum = np.bincount(rows, weights=contribution, minlength=size)

        has_good = num_good > 0
        block = slice(start, stop)
        ap[block][has_good] = ap_sum[has_good] / num_good[has_good]
        first_idx = first[has_good]
        last_idx = first_idx + num_good[has_good] - 1
        inp[block][has_good] = num_good[has_good] / rank[last_idx]
        first_rank[block][has_good] = np.where(
            in_cut[first_idx], rank[first_idx], 0
        ).astype(np.int64)

    valid = ~np.isnan(ap)
    num_valid = int(valid.sum())
    skipped = np.flatnonzero(~valid)
    if num_valid == 0:
        raise ValueError(
            f"no query has a good match in the gallery under protocol "
            f"{protocol!r} ({num_query} queries, {num_gallery} gallery items)"
        )
    if skipped.size:
        logger.info(
            "%d of %d queries have no good match in the gallery and are skipped",
            skipped.size, num_query,
        )
    ranks = first_rank[valid]
    ranks = ranks[(ranks > 0) & (ranks <= num_ranks)]
    counts = np.bincount(ranks, minlength=num_ranks + 1)[1:]
    cmc = np.cumsum(counts) / num_valid
    result = {
        "cmc": cmc[:max_rank],
        "mAP": float(np.mean(ap[valid])),
        "mINP": float(np.mean(inp[valid])),
    }
    for r in REPORTED_RANKS:
        result[f"rank{r}"] = float(cmc[r - 1])
    result.update(
        ap=ap,
        inp=inp,
        num_queries=num_query,
        num_valid_queries=num_valid,
        num_skipped_queries=int(skipped.size),
        skipped_queries=skipped,
        protocol=protocol,
        rank_size=rank_size,
    )
    return result


def mean_inp(distmat, q_pids, g_pids, q_camids, g_camids, protocol="mars"):
    """mINP alone (see ``evaluate_rank``)."""
    return evaluate_rank(
        distmat, q_pids, g_pids, q_camids, g_camids, protocol=protocol
    )["mINP"]


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
    if metric not in distance_lib.METRICS + ("precomputed",):
        raise ValueError(
            f"metric must be one of {distance_lib.METRICS + ('precomputed',)}; "
            f"received metric={metric!r}"
        )
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be 2-D; received shape {features.shape}")
    size = features.shape[0]
    query_index = _as_index(query_index, size, "query_index")
    gallery_index = (np.arange(size) if gallery_index is None
                     else _as_index(gallery_index, size, "gallery_index"))
    if metric == "precomputed":
        if features.shape[0] != features.shape[1]:
            raise ValueError(
                "with metric='precomputed', features must be a square (N, N) "
                f"distance matrix; received shape {features.shape}"
            )
        if query_expansion:
            raise ValueError("query_expansion needs features, not metric='precomputed'")
        distmat = _check_distmat(features)
        if not rerank:
            return distmat[np.ix_(query_index, gallery_index)]
        union = np.union1d(query_index, gallery_index)
        return reranking_lib.k_reciprocal_rerank(
            distmat[np.ix_(union, union)],
            np.searchsorted(union, query_index),
            np.searchsorted(union, gallery_index),
            k1=k1, k2=k2, lambda_value=lambda_value,
        )
    features = distance_lib.check_features(features)
    query = features[query_index]
    gallery = features[gallery_index]
    if query_expansion:
        query = reranking_lib.average_query_expansion(
            query, gallery, top_k=query_expansion, metric=metric
        )
    if not rerank:
        return distance_lib.pairwise_distance(query, gallery, metric=metric)
    if query_expansion:
        everything = np.concatenate([query, gallery])
        q_pos = np.arange(len(query))
        g_pos = len(query) + np.arange(len(gallery))
    else:
        # Each tracklet enters the re-ranking once, even when it is both a
        # query and a gallery item (MARS).
        union = np.union1d(query_index, gallery_index)
        everything = features[union]
        q_pos = np.searchsorted(union, query_index)
        g_pos = np.searchsorted(union, gallery_index)
    return reranking_lib.k_reciprocal_rerank(
        distance_lib.pairwise_distance(everything, None, metric=metric),
        q_pos, g_pos, k1=k1, k2=k2, lambda_value=lambda_value,
    )


def evaluate_indices(features, pids, camids, query_index, gallery_index=None,
                     *, protocol="mars", metric="cosine", max_rank=20,
                     rank_size=None, rerank=False, k1=20, k2=6,
                     lambda_value=0.3, query_expansion=0,
                     return_distmat=False):
    """``evaluate_rank`` for queries and gallery given as indices into one set.

    This is how MARS stores its split: one test set of 12,180 tracklets,
    ``query_IDX`` picks 1,980 of them, and the gallery is the whole set.

    Args:
        features: (N, D) features, or (N, N) distances with
            ``metric="precomputed"``.
        pids, camids: (N,) labels of the whole set.
        query_index, gallery_index: see ``query_gallery_distance``.
        protocol, max_rank, rank_size: see ``evaluate_rank``.
        metric, rerank, k1, k2, lambda_value, query_expansion: see
            ``query_gallery_distance``.
        return_distmat: also return the (Nq, Ng) distances under "distmat".

    Returns:
        the ``evaluate_rank`` dict.
    """
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be 2-D; received shape {features.shape}")
    pids = np.asarray(pids)
    camids = np.asarray(camids)
    for name, labels in (("pids", pids), ("camids", camids)):
        if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
            raise ValueError(
                f"{name} has shape {labels.shape} but features has "
                f"{features.shape[0]} rows; expected ({features.shape[0]},)"
            )
    query_index = _as_index(query_index, features.shape[0], "query_index")
    gallery_index = (np.arange(features.shape[0]) if gallery_index is None
                     else _as_index(gallery_index, features.shape[0], "gallery_index"))
    distmat = query_gallery_distance(
        features, query_index, gallery_index, metric=metric, rerank=rerank,
        k1=k1, k2=k2, lambda_value=lambda_value, query_expansion=query_expansion,
    )
    result = evaluate_rank(
        distmat, pids[query_index], pids[gallery_index], camids[query_index],
        camids[gallery_index], protocol=protocol, max_rank=max_rank,
        rank_size=rank_size,
    )
    if return_distmat:
        result["distmat"] = distmat
    return result
