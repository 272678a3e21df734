"""Pairwise distances between re-ID features (NumPy only).

Both functions work on whole query x gallery matrices and process the query
rows in blocks so that the temporaries stay under ``max_block_bytes`` (a
set against itself is one BLAS call, which exploits the symmetry); the
result is one preallocated ``(num_query, num_gallery)`` array (float32 for
float32 or lower-precision input, float64 for float64 input). At MARS size
(1,980 x 12,180) the float32 result is about 96 MB.

``cosine_distance`` returns ``1 - cos(a, b)``. The reference code ranks by
``-cos(a, b)``; both give the same ranking (up to float rounding ties).
"""

from __future__ import annotations

import logging

import numpy as np

from nvan_tf.choices import DISTANCE_METRICS

logger = logging.getLogger(__name__)

__all__ = [
    "check_features",
    "check_distmat",
    "l2_normalize",
    "cosine_distance",
    "euclidean_distance",
    "pairwise_distance",
    "stable_argsort",
    "METRICS",
]

METRICS = DISTANCE_METRICS

_DEFAULT_BLOCK_BYTES = 256 * 2**20


def check_features(features, name="features"):
    """Returns ``features`` as a 2-D float array, or raises a ValueError.

    Args:
        features: array-like of shape (N, D).
        name: the argument's name, used in error messages.
    """
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (num_items, feature_dim); "
            f"received shape {features.shape}"
        )
    if not np.issubdtype(features.dtype, np.number) or np.issubdtype(
        features.dtype, np.complexfloating
    ):
        raise ValueError(
            f"{name} must hold real numbers; received dtype {features.dtype}"
        )
    if features.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {features.shape})")
    if features.shape[1] == 0:
        raise ValueError(f"{name} has feature dimension 0 (shape {features.shape})")
    if features.dtype != np.float64:
        features = features.astype(np.float32, copy=False)
    # One summing pass first: NaN and inf propagate into the sum (an
    # overflow to inf only triggers the exact check below).
    if np.isfinite(np.sum(features, dtype=np.float64)):
        return features
    finite = np.isfinite(features)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        raise ValueError(
            f"{name} contains non-finite values (NaN or inf) in "
            f"{bad_rows.size} row(s), first rows {bad_rows[:5].tolist()}"
        )
    return features


def check_distmat(distmat):
    """Returns ``distmat`` as a 2-D float (Nq, Ng) array with at least one
    row and one column and no NaN, or raises a ValueError."""
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
    if nan_rows.size:  # (inf - inf in the sum alone is no NaN entry)
        raise ValueError(
            f"distmat contains NaN in {nan_rows.size} row(s), first rows "
            f"{nan_rows[:5].tolist()}; check the features for NaN"
        )
    return distmat


def l2_normalize(features, eps=1e-12):
    """Row-wise L2 normalisation of an (N, D) array; zero rows stay zero."""
    features = np.asarray(features)
    norms = np.sqrt(np.einsum("ij,ij->i", features, features))[:, None]
    num_zero = int(np.count_nonzero(norms <= eps))
    if num_zero:
        logger.warning(
            "%d feature vector(s) have zero norm; their cosine distance to "
            "everything is 1", num_zero
        )
    return features / np.maximum(norms, eps).astype(features.dtype)


def _pair(a, b):
    a = check_features(a, "query features" if b is not None else "features")
    if b is None:
        return a, a, True
    b = check_features(b, "gallery features")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"query features have dimension {a.shape[1]} but gallery "
            f"features have dimension {b.shape[1]}"
        )
    dtype = np.result_type(a.dtype, b.dtype)
    return a.astype(dtype, copy=False), b.astype(dtype, copy=False), False


def _block_rows(num_cols, itemsize, max_block_bytes):
    """Rows per block so that a (rows, num_cols) temporary fits the budget."""
    rows = max_block_bytes // max(1, num_cols * itemsize)
    return int(max(1, rows))


def cosine_distance(a, b=None, *, max_block_bytes=_DEFAULT_BLOCK_BYTES):
    """Cosine distance ``1 - <a_i, b_j> / (|a_i| |b_j|)``.

    Args:
        a: (Nq, D) query features.
        b: (Ng, D) gallery features; ``None`` means ``a`` against itself.
        max_block_bytes: memory budget for per-block temporaries.

    Returns:
        (Nq, Ng) array with values in [0, 2] (tiny negative rounding
        residues are clipped to 0).
    """
    a, b, same = _pair(a, b)
    a_n = l2_normalize(a)
    b_n = a_n if same else l2_normalize(b)
    out = np.empty((a_n.shape[0], b_n.shape[0]), dtype=a_n.dtype)
    rows = _block_rows(b_n.shape[0], out.itemsize, max_block_bytes)
    b_t = b_n.T
    if same:
        # One call on a and a.T lets BLAS use syrk: half the work, and an
        # exactly symmetric result (k-reciprocal re-ranking relies on it).
        np.matmul(a_n, b_t, out=out)
    for start in range(0, a_n.shape[0], rows):
        block = out[start:start + rows]
        if not same:
            np.matmul(a_n[start:start + rows], b_t, out=block)
        np.subtract(1, block, out=block)
        np.maximum(block, 0, out=block)
    if same:
        np.fill_diagonal(out, 0)
    return out


def euclidean_distance(a, b=None, *, squared=False,
                       max_block_bytes=_DEFAULT_BLOCK_BYTES):
    """Euclidean distance ``|a_i - b_j|`` (or its square).

    Computed as ``|a|^2 + |b|^2 - 2 a.b`` per block, clipped at 0.

    Args:
        a: (Nq, D) query features.
        b: (Ng, D) gallery features; ``None`` means ``a`` against itself.
        squared: return squared distances.
        max_block_bytes: memory budget for per-block temporaries.

    Returns:
        (Nq, Ng) array.
    """
    a, b, same = _pair(a, b)
    a_sq = np.einsum("ij,ij->i", a, a)
    b_sq = a_sq if same else np.einsum("ij,ij->i", b, b)
    out = np.empty((a.shape[0], b.shape[0]), dtype=a.dtype)
    rows = _block_rows(b.shape[0], out.itemsize, max_block_bytes)
    b_t = b.T
    if same:
        np.matmul(a, b_t, out=out)      # syrk, exactly symmetric
    for start in range(0, a.shape[0], rows):
        block = out[start:start + rows]
        if not same:
            np.matmul(a[start:start + rows], b_t, out=block)
        block *= -2
        # a_i + b_j in one sum keeps the self-distance matrix symmetric.
        block += a_sq[start:start + rows, None] + b_sq[None, :]
        np.maximum(block, 0, out=block)
        if not squared:
            np.sqrt(block, out=block)
    if same:
        np.fill_diagonal(out, 0)
    return out


def pairwise_distance(a, b=None, metric="cosine", **kwargs):
    """Dispatches to ``cosine_distance`` or ``euclidean_distance``.

    Args:
        a: (Nq, D) query features.
        b: (Ng, D) gallery features or ``None`` (``a`` against itself).
        metric: "cosine" or "euclidean".
        **kwargs: passed to the distance function.

    Returns:
        (Nq, Ng) distance matrix.
    """
    if metric == "cosine":
        return cosine_distance(a, b, **kwargs)
    if metric == "euclidean":
        return euclidean_distance(a, b, **kwargs)
    raise ValueError(f"metric must be one of {METRICS}; received metric={metric!r}")


def _sortable_uint32(values):
    """Maps float32 values to uint32 keys with the same order (-0.0 == 0.0)."""
    bits = (values + np.float32(0)).view(np.uint32)
    mask = (bits >> np.uint32(31)) * np.uint32(0x7FFFFFFF)
    mask |= np.uint32(0x80000000)
    return bits ^ mask


def stable_argsort(distmat, stop=None, *, max_block_bytes=64 * 2**20):
    """Row-wise ascending argsort with ties broken by column index.

    Equal to ``np.argsort(distmat, axis=1, kind="stable")`` but faster:
    for float32 input each value and its column index are packed into one
    unique uint64 key, so NumPy's (SIMD) quicksort cannot reorder ties;
    other dtypes use the quicksort and redo the rows that hold equal values
    with the stable sort. Rows are sorted in blocks to bound the
    temporaries.

    Args:
        distmat: (N, M) array without NaN.
        stop: keep only the first ``stop`` columns of each row's order.
        max_block_bytes: memory budget for the sort keys of one block.

    Returns:
        (N, stop or M) int32 array (int64 when M >= 2**31) of column indices.
    """
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be 2-D; received shape {distmat.shape}")
    num_rows, num_cols = distmat.shape
    stop = num_cols if stop is None else int(min(max(stop, 0), num_cols))
    index_dtype = np.int32 if num_cols < 2**31 else np.int64
    out = np.empty((num_rows, stop), dtype=index_dtype)
    rows = _block_rows(num_cols, 8, max_block_bytes)
    if distmat.dtype == np.float32 and num_cols < 2**32:
        # Little-endian uint64 = (high word: order-preserving bits of the
        # value, low word: column index); built in place, sorted as uint64.
        high = 1 if np.little_endian else 0
        non_negative = bool(distmat.min() >= 0) if distmat.size else True
        columns = np.arange(num_cols, dtype=np.uint32)
        keys_buffer = np.empty((min(rows, num_rows), num_cols), dtype=np.uint64)
        for start in range(0, num_rows, rows):
            block = distmat[start:start + rows]
            keys = keys_buffer[: block.shape[0]]
            words = keys.view(np.uint32).reshape(block.shape[0], num_cols, 2)
            if non_negative:
                # Sign bit set only for -0.0, which must equal 0.0.
                np.bitwise_and(block.view(np.uint32), np.uint32(0x7FFFFFFF),
                               out=words[:, :, high])
            else:
                words[:, :, high] = _sortable_uint32(block)
            words[:, :, 1 - high] = columns
            keys.sort(axis=1)
            out[start:start + rows] = words[:, :stop, 1 - high]
    else:
        # Fast unstable sort; rows that hold equal values are redone stably.
        for start in range(0, num_rows, rows):
            block = distmat[start:start + rows]
            order = np.argsort(block, axis=1)
            ranked = np.take_along_axis(block, order, axis=1)
            tied = np.flatnonzero((ranked[:, 1:] == ranked[:, :-1]).any(axis=1))
            if tied.size:
                order[tied] = np.argsort(block[tied], axis=1, kind="stable")
            out[start:start + rows] = order[:, :stop]
    return out
