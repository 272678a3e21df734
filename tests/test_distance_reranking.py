"""Tests for nvan_tf.evaluation.distance and nvan_tf.evaluation.reranking."""

import numpy as np
import pytest

from nvan_tf.evaluation import distance
from nvan_tf.evaluation import ranking
from nvan_tf.evaluation import reranking


def test_cosine_and_euclidean_against_direct_formulas():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((7, 5)).astype(np.float32)
    b = rng.standard_normal((11, 5)).astype(np.float32)
    cos = 1 - (a @ b.T) / np.linalg.norm(a, axis=1)[:, None] / np.linalg.norm(b, axis=1)
    euc = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    # A tiny block budget forces one row per block.
    np.testing.assert_allclose(distance.cosine_distance(a, b, max_block_bytes=1), cos, atol=1e-6)
    np.testing.assert_allclose(distance.euclidean_distance(a, b, max_block_bytes=1), euc, atol=1e-5)
    np.testing.assert_allclose(distance.euclidean_distance(a, b, squared=True), euc ** 2, atol=1e-4)
    assert distance.cosine_distance(a, b).dtype == np.float32
    assert distance.cosine_distance(a.astype(np.float64), b.astype(np.float64)).dtype == np.float64
    self_dist = distance.pairwise_distance(a, metric="cosine")
    assert self_dist.shape == (7, 7)
    np.testing.assert_allclose(np.diag(self_dist), 0, atol=1e-6)
    assert (self_dist >= 0).all()
    # A set against itself: exactly symmetric with a zero diagonal.
    for metric in ("cosine", "euclidean"):
        square = distance.pairwise_distance(a, metric=metric, max_block_bytes=64)
        np.testing.assert_array_equal(square, square.T)
        np.testing.assert_array_equal(np.diag(square), 0)
    with pytest.raises(ValueError, match="metric must be one of"):
        distance.pairwise_distance(a, b, metric="manhattan")


def test_distance_rejects_nan_and_bad_shapes():
    a = np.ones((3, 4), dtype=np.float32)
    a[1, 2] = np.nan
    with pytest.raises(ValueError, match="query features contains non-finite"):
        distance.cosine_distance(a, np.ones((2, 4)))
    with pytest.raises(ValueError, match="2-D"):
        distance.euclidean_distance(np.ones(4), np.ones((2, 4)))
    with pytest.raises(ValueError, match="gallery features is empty"):
        distance.cosine_distance(np.ones((2, 4)), np.ones((0, 4)))


# --------------------------------------------------------------------------
# Dense, loop-based re-ranking written from the paper's definitions.
# --------------------------------------------------------------------------
def loop_rerank(all_dist, query_index, gallery_index, k1, k2, lam):
    num = all_dist.shape[0]
    dist = all_dist / all_dist.max(axis=1, keepdims=True)
    ranking = [list(np.argsort(all_dist[i], kind="stable")) for i in range(num)]

    def neighbours(i, k):
        return ranking[i][: k + 1]

    def reciprocal(i, k):
        return {g for g in neighbours(i, k) if i in neighbours(g, k)}

    v = np.zeros((num, num))
    for i in range(num):
        base = reciprocal(i, k1)
        expanded = set(base)
        for q in base:
            half = reciprocal(q, int(round(k1 / 2)))
            if len(half & base) > 2 / 3 * len(half):
                expanded |= half
        members = sorted(expanded)
        weights = np.exp(-dist[i, members])
        v[i, members] = weights / weights.sum()
    if k2 > 1:
        v = np.stack([v[ranking[i][:k2]].mean(axis=0) for i in range(num)])
    out = np.zeros((len(query_index), len(gallery_index)))
    for a, q in enumerate(query_index):
        for b, g in enumerate(gallery_index):
            shared = np.minimum(v[q], v[g]).sum()
            jaccard = 1 - shared / (2 - shared)
            out[a, b] = (1 - lam) * jaccard + lam * dist[q, g]
    return out


@pytest.mark.parametrize("k1,k2", [(20, 6), (4, 1), (3, 3)])
def test_rerank_equals_dense_loop(k1, k2):
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((6, 8))
    features = centres[rng.integers(0, 6, size=45)] + 0.7 * rng.standard_normal((45, 8))
    all_dist = distance.euclidean_distance(features.astype(np.float64))
    query_index = np.arange(0, 45, 5)
    gallery_index = np.arange(45)           # queries stay in the gallery
    fast = reranking.k_reciprocal_rerank(all_dist, query_index, gallery_index,
                                         k1=k1, k2=k2, lambda_value=0.3,
                                         max_block_entries=500)
    slow = loop_rerank(all_dist, query_index, gallery_index, k1, k2, 0.3)
    np.testing.assert_allclose(fast, slow, atol=1e-10)


def test_re_ranking_from_blocks_equals_union_form():
    rng = np.random.default_rng(2)
    q = rng.standard_normal((6, 4))
    g = rng.standard_normal((15, 4))
    q_g = distance.cosine_distance(q, g)
    blocks = reranking.re_ranking(q_g, distance.cosine_distance(q), distance.cosine_distance(g),
                                  k1=5, k2=2)
    union = reranking.k_reciprocal_rerank(distance.cosine_distance(np.vstack([q, g])),
                                          np.arange(6), 6 + np.arange(15), k1=5, k2=2)
    np.testing.assert_allclose(blocks, union)
    assert blocks.shape == (6, 15)
    with pytest.raises(ValueError, match="g_g_dist has shape"):
        reranking.re_ranking(q_g, distance.cosine_distance(q), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        reranking.k_reciprocal_rerank(-q_g[:, :6], np.arange(6), np.arange(6))


def hub_case():
    """Points on a line: the query's raw nearest neighbour is a hub of a
    tight foreign cluster; its true match is a little farther but shares
    the query's neighbourhood."""
    points = np.array([
        0.0,                          # 0 query (id 1)
        -0.45,                        # 1 hub of the foreign cluster (id 2)
        -0.50, -0.52, -0.54, -0.56,   # 2-5 foreign cluster (id 2)
        0.50, 0.55, 0.60,             # 6-8 the query's id (id 1)
    ])[:, None]
    pids = np.array([1, 2, 2, 2, 2, 2, 1, 1, 1])
    cams = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1])
    return points, pids, cams


def test_rerank_changes_the_order_on_a_small_case():
    points, pids, cams = hub_case()
    all_dist = distance.euclidean_distance(points)
    query, gallery = np.array([0]), np.arange(1, 9)
    before = all_dist[0, gallery]
    after = reranking.k_reciprocal_rerank(all_dist, query, gallery,
                                          k1=3, k2=1, lambda_value=0.3)[0]
    # Raw distances: the foreign hub (gallery item 0) comes first ...
    assert np.argmin(before) == 0
    # ... after re-ranking a same-id item (gallery items 5-7) does.
    assert np.argmin(after) in (5, 6, 7)
    raw = ranking.evaluate_indices(points, pids, cams, [0], metric="euclidean")
    rr = ranking.evaluate_indices(points, pids, cams, [0], metric="euclidean",
                                  rerank=True, k1=3, k2=1)
    assert raw["rank1"] == 0.0
    assert rr["rank1"] == 1.0
    assert rr["mAP"] > raw["mAP"]


def test_rerank_dedups_queries_that_are_gallery_items():
    rng = np.random.default_rng(4)
    features = rng.standard_normal((30, 6)).astype(np.float32)
    pids = rng.integers(1, 5, size=30)
    cams = rng.integers(0, 3, size=30)
    query_index = np.array([0, 3, 7, 11])
    got = ranking.evaluate_indices(features, pids, cams, query_index, rerank=True,
                                   k1=6, k2=3, return_distmat=True)["distmat"]
    expected = reranking.k_reciprocal_rerank(distance.cosine_distance(features),
                                             query_index, np.arange(30), k1=6, k2=3)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_average_query_expansion_by_hand():
    query = np.array([[1.0, 0.0]])
    gallery = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, -0.2]])
    expanded = reranking.average_query_expansion(query, gallery, top_k=2)
    # Nearest two by cosine: [1, -0.2] and [1, 1]; mean of unit vectors.
    unit = lambda x: x / np.linalg.norm(x)
    expected = unit((unit(query[0]) + unit(gallery[2]) + unit(gallery[1])) / 3)
    np.testing.assert_allclose(expanded[0], expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(expanded, axis=1), 1, atol=1e-6)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        reranking.average_query_expansion(query, gallery, top_k=0)


def test_query_expansion_in_evaluate_indices_runs_and_helps():
    rng = np.random.default_rng(8)
    centres = rng.standard_normal((10, 32))
    pids = np.repeat(np.arange(1, 11), 6)
    cams = np.tile(np.arange(6), 10)
    features = centres[pids - 1] + 1.2 * rng.standard_normal((60, 32))
    query_index = np.arange(0, 60, 6)
    plain = ranking.evaluate_indices(features, pids, cams, query_index)
    expanded = ranking.evaluate_indices(features, pids, cams, query_index, query_expansion=3)
    both = ranking.evaluate_indices(features, pids, cams, query_index,
                                    query_expansion=3, rerank=True, k1=5, k2=2)
    assert expanded["mAP"] > plain["mAP"]
    assert 0 < both["mAP"] <= 1
