"""k-reciprocal re-ranking and average query expansion (NumPy only).

Re-ranking follows Zhong, Zheng, Cao, Li, "Re-ranking Person
Re-identification with k-reciprocal Encoding", CVPR 2017:

1. ``N(p, k)``: the k nearest neighbours of p (p itself included, k+1 items);
   ``R(p, k)``: those g in ``N(p, k)`` with p in ``N(g, k)``.
2. ``R*(p, k1)``: ``R(p, k1)`` joined with ``R(q, round(k1/2))`` of every
   q in ``R(p, k1)`` that shares more than 2/3 of its members with
   ``R(p, k1)`` (strict ">", as the authors' released code, so numbers match
   what torchreid and fast-reid report).
3. ``V_p``: weights ``exp(-d(p, g))`` on ``R*(p)``, normalised to sum 1,
   with ``d`` the distances divided by each row's maximum; then local query
   expansion ``V_p <- mean(V_q, q in the k2 nearest of p)``.
4. Jaccard distance ``1 - S / (2 - S)`` with ``S = sum_j min(V_p[j], V_g[j])``
   and final distance ``(1 - lambda) d_J + lambda d``.

Everything is kept sparse (each row of V has only a few dozen non-zeros),
so the cost is dominated by the (N, N) input distances and their ranking.
"""

from __future__ import annotations

import logging

import numpy as np

from nvan_tf.evaluation import distance as distance_lib

logger = logging.getLogger(__name__)

__all__ = ["k_reciprocal_rerank", "re_ranking", "average_query_expansion"]


def _ragged_gather(starts, lengths):
    """Positions ``starts[i] + arange(lengths[i])`` for every i, concatenated."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return offsets + np.arange(total, dtype=np.int64)


def _reciprocal_mask(neighbours):
    """mask[i, a] = i is among the neighbours of neighbours[i, a]. (N, m) -> (N, m)."""
    num = neighbours.shape[0]
    mask = np.empty(neighbours.shape, dtype=bool)
    rows = max(1, (1 << 22) // (neighbours.shape[1] ** 2))
    for start in range(0, num, rows):
        block = neighbours[start:start + rows]
        own = np.arange(start, start + block.shape[0])[:, None, None]
        mask[start:start + rows] = (neighbours[block] == own).any(axis=-1)
    return mask


def _expanded_sets(knn, k1):
    """Sorted unique (row, member) pairs of the expanded sets R*(p, k1)."""
    num = knn.shape[0]
    half = int(np.around(k1 / 2.0))
    full_nn = knn[:, : k1 + 1]
    half_nn = knn[:, : half + 1]
    full_mask = _reciprocal_mask(full_nn)
    half_mask = _reciprocal_mask(half_nn)
    keys = [np.repeat(np.arange(num, dtype=np.int64), full_nn.shape[1])[full_mask.ravel()]
            * num + full_nn[full_mask]]
    rows = max(1, (1 << 22) // (full_nn.shape[1] ** 2 * half_nn.shape[1]))
    for start in range(0, num, rows):
        members = full_nn[start:start + rows]                  # (b, m1)
        member_mask = full_mask[start:start + rows]            # (b, m1)
        candidates = half_nn[members]                          # (b, m1, mh)
        candidate_mask = half_mask[members]                    # (b, m1, mh)
        shared = (candidates[..., None] == members[:, None, None, :]) & \
            member_mask[:, None, None, :]
        shared = (shared.any(axis=-1) & candidate_mask).sum(axis=-1)
        size = candidate_mask.sum(axis=-1)
        accept = member_mask & (shared > 2.0 / 3.0 * size)     # (b, m1)
        take = accept[..., None] & candidate_mask              # (b, m1, mh)
        row_ids = np.broadcast_to(
            np.arange(start, start + members.shape[0], dtype=np.int64)[:, None, None],
            take.shape,
        )
        keys.append(row_ids[take] * num + candidates[take])
    keys = np.unique(np.concatenate(keys))
    return keys // num, keys % num


def _sum_duplicates(rows, cols, values, num_cols):
    keys = rows.astype(np.int64) * num_cols + cols
    unique, inverse = np.unique(keys, return_inverse=True)
    summed = np.bincount(inverse.reshape(-1), weights=values)
    return unique // num_cols, unique % num_cols, summed


def _check_rerank(all_dist, query_index, gallery_index, k1, k2, lambda_value):
    """Validated ``(all_dist, query_index, gallery_index)`` (float32 or float64
    distances, int64 indices), or a ValueError naming the argument."""
    all_dist = np.asarray(all_dist)
    if all_dist.ndim != 2 or all_dist.shape[0] != all_dist.shape[1]:
        raise ValueError(
            f"all_dist must be a square (N, N) matrix; received shape {all_dist.shape}"
        )
    num = all_dist.shape[0]
    if int(k1) != k1 or k1 < 1:
        raise ValueError(f"k1 must be a positive integer; received k1={k1!r}")
    if int(k2) != k2 or k2 < 1:
        raise ValueError(f"k2 must be a positive integer; received k2={k2!r}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1]; received {lambda_value!r}")
    if not np.isfinite(all_dist).all():
        raise ValueError("all_dist contains NaN or inf")
    if (all_dist < 0).any():
        raise ValueError(
            "all_dist must be non-negative (re-ranking uses exp(-d)); use "
            "cosine distance 1 - cos, not -cos"
        )
    query_index = np.asarray(query_index, dtype=np.int64)
    gallery_index = np.asarray(gallery_index, dtype=np.int64)
    for name, index in (("query_index", query_index), ("gallery_index", gallery_index)):
        if index.ndim != 1 or index.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-D array; received shape {index.shape}")
        if index.min() < 0 or index.max() >= num:
            raise ValueError(f"{name} must index into {num} items")
    if all_dist.dtype != np.float64:
        all_dist = all_dist.astype(np.float32, copy=False)
    return all_dist, query_index, gallery_index


def _neighbourhood_weights(all_dist, knn, row_max, k1, k2):
    """Sparse V as (rows, cols, weights): the expanded neighbourhoods R*(p, k1)
    weighted by exp(-d) and normalised per row, then (k2 > 1) replaced by
    the mean of V over the k2 nearest of p (local query expansion)."""
    num = all_dist.shape[0]
    rows, cols = _expanded_sets(knn, k1)
    weights = np.exp(-(all_dist[rows, cols] / row_max[rows]).astype(np.float64))
    weights /= np.bincount(rows, weights=weights, minlength=num)[rows]
    if k2 == 1:
        return rows, cols, weights
    nnz = np.bincount(rows, minlength=num)
    indptr = np.concatenate([[0], np.cumsum(nnz)])
    sources = knn[:, :k2].reshape(-1)
    targets = np.repeat(np.arange(num, dtype=np.int64), k2)
    positions = _ragged_gather(indptr[sources], nnz[sources])
    return _sum_duplicates(
        np.repeat(targets, nnz[sources]), cols[positions],
        weights[positions] / k2, num,
    )


def _pointers(keys, num):
    """CSR-style (counts, start offsets) of ``keys`` sorted into ``num`` bins."""
    counts = np.bincount(keys, minlength=num)
    return counts, np.concatenate([[0], np.cumsum(counts)])


def _jaccard_distance(all_dist, row_max, rows, cols, weights, query_index, gallery_index,
                      lambda_value, max_block_entries):
    """``(1 - lambda) d_J + lambda d`` of the queries against the gallery,
    in blocks of queries whose inverted-index entries stay under
    ``max_block_entries``."""
    num = all_dist.shape[0]
    # Column-major copy of V for the inverted index.
    by_col = np.lexsort((rows, cols))
    col_rows = rows[by_col]
    col_vals = weights[by_col]
    col_nnz, col_ptr = _pointers(cols, num)
    row_nnz, row_ptr = _pointers(rows, num)
    gallery_pos = np.full(num, -1, dtype=np.int64)
    gallery_pos[gallery_index] = np.arange(gallery_index.size)

    num_gallery = gallery_index.size
    out = np.empty((query_index.size, num_gallery), dtype=all_dist.dtype)
    # Entries each query expands to in the inverted index, plus its dense row.
    cost = np.bincount(rows, weights=col_nnz[cols], minlength=num)[query_index]
    cost = np.cumsum(cost + num_gallery)
    start = 0
    while start < query_index.size:
        budget = (cost[start - 1] if start else 0) + max_block_entries
        stop = max(start + 1, int(np.searchsorted(cost, budget, side="right")))
        block = query_index[start:stop]
        q_lengths = row_nnz[block]
        q_pos = _ragged_gather(row_ptr[block], q_lengths)
        q_local = np.repeat(np.arange(block.size, dtype=np.int64), q_lengths)
        q_cols = cols[q_pos]
        q_vals = weights[q_pos]
        lengths = col_nnz[q_cols]
        positions = _ragged_gather(col_ptr[q_cols], lengths)
        partner = gallery_pos[col_rows[positions]]
        contribution = np.minimum(col_vals[positions], np.repeat(q_vals, lengths))
        local = np.repeat(q_local, lengths)
        keep = partner >= 0
        shared = np.bincount(
            local[keep] * num_gallery + partner[keep],
            weights=contribution[keep], minlength=block.size * num_gallery,
        ).reshape(block.size, num_gallery)
        jaccard = 1.0 - shared / (2.0 - shared)
        original = all_dist[np.ix_(block, gallery_index)] / row_max[block, None]
        out[start:stop] = (1.0 - lambda_value) * jaccard + lambda_value * original
        start = stop
    return out


def k_reciprocal_rerank(all_dist, query_index, gallery_index, k1=20, k2=6,
                        lambda_value=0.3, max_block_entries=1 << 23):
    """k-reciprocal re-ranked query x gallery distances.

    Args:
        all_dist: (N, N) symmetric, non-negative distances among all items,
            each tracklet once (queries and gallery may overlap, as in MARS).
        query_index: (Nq,) rows of ``all_dist`` that are queries.
        gallery_index: (Ng,) rows of ``all_dist`` that are gallery items.
        k1: size of the k-reciprocal neighbourhood (paper default 20).
        k2: size of the local query expansion (default 6; 1 = off).
        lambda_value: weight of the original distance (default 0.3).
        max_block_entries: bound on the temporaries of the Jaccard step.

    Returns:
        (Nq, Ng) float32 (float64 for float64 input) distances.
    """
    all_dist, query_index, gallery_index = _check_rerank(
        all_dist, query_index, gallery_index, k1, k2, lambda_value)
    num = all_dist.shape[0]
    k1 = int(min(k1, num - 1)) if num > 1 else 1
    k2 = int(min(k2, num))
    row_max = np.maximum(all_dist.max(axis=1), np.finfo(all_dist.dtype).tiny)
    knn = distance_lib.stable_argsort(all_dist, stop=max(k1 + 1, k2)).astype(np.int64)
    rows, cols, weights = _neighbourhood_weights(all_dist, knn, row_max, k1, k2)
    return _jaccard_distance(all_dist, row_max, rows, cols, weights, query_index, gallery_index,
                             lambda_value, max_block_entries)


def re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """k-reciprocal re-ranking from the three usual blocks of distances.

    For disjoint query and gallery sets (the usual torchreid call). When the
    queries are also gallery items (MARS), use ``k_reciprocal_rerank`` on the
    distances among the union so that no tracklet enters twice.

    Args:
        q_g_dist: (Nq, Ng); q_q_dist: (Nq, Nq); g_g_dist: (Ng, Ng).

    Returns:
        (Nq, Ng) re-ranked distances.
    """
    q_g_dist = np.asarray(q_g_dist)
    q_q_dist = np.asarray(q_q_dist)
    g_g_dist = np.asarray(g_g_dist)
    num_query, num_gallery = q_g_dist.shape
    if q_q_dist.shape != (num_query, num_query):
        raise ValueError(
            f"q_q_dist has shape {q_q_dist.shape}; expected ({num_query}, {num_query})"
        )
    if g_g_dist.shape != (num_gallery, num_gallery):
        raise ValueError(
            f"g_g_dist has shape {g_g_dist.shape}; expected ({num_gallery}, {num_gallery})"
        )
    all_dist = np.block([[q_q_dist, q_g_dist], [q_g_dist.T, g_g_dist]])
    return k_reciprocal_rerank(
        all_dist, np.arange(num_query), num_query + np.arange(num_gallery),
        k1=k1, k2=k2, lambda_value=lambda_value,
    )


def average_query_expansion(query_features, gallery_features, top_k=5,
                            metric="cosine"):
    """Average query expansion (Chum et al. 2007; alpha-QE with alpha = 0).

    Each query is replaced by the mean of itself and its ``top_k`` nearest
    gallery features. With ``metric="cosine"`` the features are
    L2-normalised first and the result is normalised again; with
    "euclidean" they are averaged as given. In MARS the query is itself in
    the gallery, so it counts twice: once as the query and once as its own
    nearest neighbour.

    Args:
        query_features: (Nq, D); gallery_features: (Ng, D).
        top_k: number of gallery neighbours averaged in (>= 1).
        metric: "cosine" or "euclidean".

    Returns:
        (Nq, D) expanded query features.
    """
    if int(top_k) != top_k or top_k < 1:
        raise ValueError(f"top_k must be a positive integer; received top_k={top_k!r}")
    query = distance_lib.check_features(query_features, "query features")
    gallery = distance_lib.check_features(gallery_features, "gallery features")
    if metric == "cosine":
        query = distance_lib.l2_normalize(query)
        gallery = distance_lib.l2_normalize(gallery)
    top_k = int(min(top_k, gallery.shape[0]))
    distmat = distance_lib.pairwise_distance(query, gallery, metric=metric)
    nearest = distance_lib.stable_argsort(distmat, stop=top_k)
    expanded = (query + gallery[nearest].sum(axis=1)) / (top_k + 1)
    if metric == "cosine":
        expanded = distance_lib.l2_normalize(expanded)
    return expanded.astype(query.dtype, copy=False)
