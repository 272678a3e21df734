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

The good / junk rule of both protocols is written once, in
:func:`match_masks`; the pictures of ``nvan_tf.evaluation.report`` use it
too. This module ranks a given distance matrix; features -> distances
(query expansion, re-ranking) -> these metrics is
``nvan_tf.evaluation.ranking.evaluate_indices``.
"""

from __future__ import annotations

import logging

import numpy as np

from nvan_tf.choices import PROTOCOLS
from nvan_tf.evaluation import distance as distance_lib

logger = logging.getLogger(__name__)

__all__ = [
    "PROTOCOLS",
    "MARS_RANK_SIZE",
    "JUNK_PID",
    "REPORTED_RANKS",
    "cross_camera_share",
    "evaluate_rank",
    "match_masks",
]

MARS_RANK_SIZE = 10000
JUNK_PID = -1
REPORTED_RANKS = (1, 5, 10, 20)


def check_protocol(protocol):
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"protocol must be one of {PROTOCOLS}; received protocol={protocol!r}"
        )


def match_masks(q_pid, q_camid, g_pids, g_camids, protocol="mars"):
    """Which gallery items are good matches of a query, and which are junk.

    *junk* = same id and same camera (the query itself among them), and
    under "mars" also every gallery item with id -1; *good* = same id and
    not junk. Everything else (distractors, id 0, included) is a negative.

    Args:
        q_pid, q_camid: the query's labels: scalars, or (Nq, 1) arrays for
            several queries at once (NumPy broadcasting).
        g_pids, g_camids: (Ng,) gallery labels.
        protocol: "mars" or "market".

    Returns:
        (good, junk): boolean arrays of the broadcast shape ((Ng,) for one
        query, (Nq, Ng) for a column of queries).
    """
    check_protocol(protocol)
    g_pids = np.asarray(g_pids)
    same_id = np.asarray(q_pid) == g_pids
    junk = same_id & (np.asarray(q_camid) == np.asarray(g_camids))
    if protocol == "mars":
        junk |= g_pids == JUNK_PID
    return same_id & ~junk, junk


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


def _default_chunk(num_gallery):
    # About 4M gallery entries per block: a few bytes per entry each temporary.
    return int(max(1, min(4096, (1 << 22) // max(1, num_gallery))))


def _check_ranks(protocol, max_rank, rank_size):
    """Validated ``(max_rank, rank_size)``; ``rank_size`` None -> the protocol's."""
    check_protocol(protocol)
    if int(max_rank) != max_rank or max_rank < 1:
        raise ValueError(f"max_rank must be a positive integer; received {max_rank!r}")
    if rank_size is None:
        return int(max_rank), (MARS_RANK_SIZE if protocol == "mars" else None)
    if int(rank_size) != rank_size or rank_size < 1:
        raise ValueError(
            f"rank_size must be a positive integer or None; received {rank_size!r}"
        )
    return int(max_rank), rank_size


def _good_ranks(distmat, good, junk):
    """Where the good matches of a block of queries rank.

    Args:
        distmat: (b, Ng) distances of the block.
        good, junk: (b, Ng) masks of ``match_masks``, in gallery order.

    Returns:
        ``(rows, cols, rank, num_good)``: one entry per good match, by query
        and then rank: its query (row of the block), its position in the
        full ranking (0-based, junk included) and its 1-based rank in the
        non-junk ranking (float); and (b,) good matches per query.
    """
    size, num_gallery = distmat.shape
    order = distance_lib.stable_argsort(distmat)
    good = np.take_along_axis(good, order, axis=1)
    junk = np.take_along_axis(junk, order, axis=1)
    del order
    rows, cols = np.nonzero(good)
    j_rows, j_cols = np.nonzero(junk)
    # Flat keys row * num_gallery + position (row-major, hence sorted).
    junk_keys = j_rows.astype(np.int64) * num_gallery + j_cols
    row_keys = rows.astype(np.int64) * num_gallery
    # Rank in the non-junk ranking: position + 1 - junk before it.
    junk_before = (np.searchsorted(junk_keys, row_keys + cols)
                   - np.searchsorted(junk_keys, row_keys))
    rank = (cols + 1 - junk_before).astype(np.float64)
    return rows, cols, rank, np.bincount(rows, minlength=size)


def _block_scores(protocol, cut, rows, cols, rank, num_good):
    """Per-query ``(ap, inp, first_rank)`` from ``_good_ranks``: AP and INP
    are NaN for a query without a good match; ``first_rank`` is the rank of
    its first good match, 0 when none is within the first ``cut`` ranked
    items (junk included), which alone count for AP and CMC."""
    size = num_good.size
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

    ap = np.full(size, np.nan)
    inp = np.full(size, np.nan)
    first_rank = np.zeros(size, dtype=np.int64)
    has_good = num_good > 0
    ap[has_good] = ap_sum[has_good] / num_good[has_good]
    first_idx = first[has_good]
    last_idx = first_idx + num_good[has_good] - 1
    inp[has_good] = num_good[has_good] / rank[last_idx]
    first_rank[has_good] = np.where(in_cut[first_idx], rank[first_idx], 0).astype(np.int64)
    return ap, inp, first_rank


def _summarise(ap, inp, first_rank, max_rank, protocol, rank_size, num_gallery):
    """The ``evaluate_rank`` dict from per-query AP, INP and first good rank."""
    num_query = ap.size
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
    num_ranks = max(max_rank, max(REPORTED_RANKS))
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
    max_rank, rank_size = _check_ranks(protocol, max_rank, rank_size)
    distmat = distance_lib.check_distmat(distmat)
    num_query, num_gallery = distmat.shape
    q_pids = _as_labels(q_pids, "q_pids", num_query, "rows")
    g_pids = _as_labels(g_pids, "g_pids", num_gallery, "columns")
    q_camids = _as_labels(q_camids, "q_camids", num_query, "rows")
    g_camids = _as_labels(g_camids, "g_camids", num_gallery, "columns")

    cut = num_gallery if rank_size is None else min(int(rank_size), num_gallery)
    chunk_size = _default_chunk(num_gallery) if chunk_size is None else int(chunk_size)
    ap = np.full(num_query, np.nan)
    inp = np.full(num_query, np.nan)
    first_rank = np.zeros(num_query, dtype=np.int64)
    for start in range(0, num_query, chunk_size):
        block = slice(start, min(start + chunk_size, num_query))
        good, junk = match_masks(q_pids[block, None], q_camids[block, None], g_pids, g_camids,
                                 protocol)
        ranked = _good_ranks(distmat[block], good, junk)
        ap[block], inp[block], first_rank[block] = _block_scores(protocol, cut, *ranked)
    return _summarise(ap, inp, first_rank, max_rank, protocol, rank_size, num_gallery)


def cross_camera_share(distmat, q_camids, g_camids, k=5, exclude=None):
    """The share of each query's ``k`` nearest gallery items that come from
    another camera, averaged over the queries (a fraction in [0, 1]).

    A model that learned people rather than backgrounds ranks other cameras'
    tracklets first; one that learned the cameras' backgrounds fills its top
    ranks with its own camera.

    Args:
        distmat: (Nq, Ng) distances.
        q_camids, g_camids: (Nq,) and (Ng,) camera labels.
        k: how many nearest gallery items count (fewer where the gallery is smaller).
        exclude: optional (Nq, Ng) boolean mask of pairs left out (the query
            itself, where queries are also gallery items, as in MARS).
    """
    distmat = distance_lib.check_distmat(distmat)
    q_camids = _as_labels(q_camids, "q_camids", distmat.shape[0], "rows")
    g_camids = _as_labels(g_camids, "g_camids", distmat.shape[1], "columns")
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer; received k={k!r}")
    distmat = np.array(distmat, dtype=np.float64)
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=bool)
        if exclude.shape != distmat.shape:
            raise ValueError(f"exclude has shape {exclude.shape}; expected {distmat.shape}")
        distmat[exclude] = np.inf
    available = np.isfinite(distmat).sum(axis=1)
    k = int(min(k, distmat.shape[1]))
    nearest = np.argsort(distmat, axis=1, kind="stable")[:, :k]
    counted = np.arange(k)[None, :] < np.minimum(available, k)[:, None]
    other = (g_camids[nearest] != q_camids[:, None]) & counted
    per_query = other.sum(axis=1) / np.maximum(counted.sum(axis=1), 1)
    return float(np.mean(per_query[counted.any(axis=1)])) if counted.any() else float("nan")
