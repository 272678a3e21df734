"""Tests for nvan_tf.evaluation.metrics: hand-computed cases and a per-query reference loop."""

import numpy as np
import pytest

from nvan_tf.evaluation import distance
from nvan_tf.evaluation import metrics, ranking


# --------------------------------------------------------------------------
# A plain per-query loop, written from docs/evaluation.md's description of the MARS rule
# and from torchreid's market rule. Slow but obvious.
# --------------------------------------------------------------------------
def loop_evaluate(distmat, q_pids, g_pids, q_cams, g_cams, protocol, rank_size,
                  max_rank=20):
    cmcs, aps, inps = [], [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        same_id = g_pids == q_pids[i]
        same_cam = g_cams == q_cams[i]
        if protocol == "mars":
            junk = (g_pids == -1) | (same_id & same_cam)
        else:
            junk = same_id & same_cam
        good = same_id & ~junk
        num_good = good.sum()
        if num_good == 0:
            continue
        # mINP over the full non-junk ranking.
        ranked_good = [good[g] for g in order if not junk[g]]
        hardest = max(r for r, is_good in enumerate(ranked_good, 1) if is_good)
        inps.append(num_good / hardest)
        # AP and CMC over the cut ranking.
        cut = order if rank_size is None else order[:rank_size]
        ap, hits, position = 0.0, 0, 0
        old_recall, old_precision = 0.0, 1.0
        first = None
        for g in cut:
            if junk[g]:
                continue
            position += 1
            if good[g]:
                hits += 1
                if first is None:
                    first = position
                if protocol == "market":
                    ap += hits / position
            recall = hits / num_good
            precision = hits / position
            if protocol == "mars":
                ap += (recall - old_recall) * (old_precision + precision) / 2
            old_recall, old_precision = recall, precision
        if protocol == "market":
            ap /= num_good
        aps.append(ap)
        cmc = np.zeros(max_rank)
        if first is not None and first <= max_rank:
            cmc[first - 1:] = 1
        cmcs.append(cmc)
    return np.mean(cmcs, axis=0), float(np.mean(aps)), float(np.mean(inps)), len(aps)


def case_a():
    """Query id 1, camera 0; gallery already in distance order."""
    distmat = np.array([[0.0, 0.1, 0.2, 0.3, 0.4, 0.5]], dtype=np.float32)
    g_pids = np.array([1, 2, 1, -1, 0, 1])   # junk(self), neg, good, junk, distractor, good
    g_cams = np.array([0, 1, 1, 2, 1, 2])
    return distmat, np.array([1]), g_pids, np.array([0]), g_cams


def test_mars_junk_and_distractor_by_hand():
    result = metrics.evaluate_rank(*case_a(), protocol="mars")
    # Non-junk ranking: neg, good, distractor, good -> goods at ranks 2 and 4.
    # Trapezoid AP: (1/2) * [(0 + 1/2)/2 + (1/3 + 2/4)/2] = 1/3.
    assert result["mAP"] == pytest.approx(1 / 3)
    assert result["mINP"] == pytest.approx(2 / 4)
    np.testing.assert_allclose(result["cmc"][:3], [0, 1, 1])
    assert result["rank1"] == 0.0 and result["rank5"] == 1.0
    assert result["cmc"].shape == (20,)
    assert result["num_skipped_queries"] == 0


def test_market_rule_by_hand():
    result = metrics.evaluate_rank(*case_a(), protocol="market")
    # Only the same-id same-camera item goes; the id -1 item is a negative:
    # ranking neg, good, neg(-1), distractor, good -> goods at 2 and 5.
    assert result["mAP"] == pytest.approx((1 / 2 + 2 / 5) / 2)
    assert result["mINP"] == pytest.approx(2 / 5)
    np.testing.assert_allclose(result["cmc"][:2], [0, 1])


def test_rank_cut_counts_junk_positions():
    distmat, q_pids, g_pids, q_cams, g_cams = case_a()
    # The first 2 ranked items are junk and a negative: no good within the cut.
    cut2 = metrics.evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, rank_size=2)
    assert cut2["mAP"] == 0.0 and cut2["rank20"] == 0.0
    assert cut2["num_valid_queries"] == 1
    # mINP ignores the cut.
    assert cut2["mINP"] == pytest.approx(0.5)
    cut3 = metrics.evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, rank_size=3)
    assert cut3["mAP"] == pytest.approx(0.5 * (0 + 0.5) / 2)
    assert cut3["rank5"] == 1.0


def test_query_without_match_is_skipped_and_counted():
    distmat, q_pids, g_pids, q_cams, g_cams = case_a()
    # Second query: id 2 seen only by camera 1 -> every id-2 item is junk.
    distmat = np.vstack([distmat, distmat[:, ::-1]])
    result = metrics.evaluate_rank(
        distmat, np.array([1, 2]), g_pids, np.array([0, 1]), g_cams
    )
    assert result["num_queries"] == 2
    assert result["num_valid_queries"] == 1
    assert result["num_skipped_queries"] == 1
    assert result["skipped_queries"].tolist() == [1]
    assert np.isnan(result["ap"][1])
    assert result["mAP"] == pytest.approx(1 / 3)


def test_no_query_with_a_match_raises():
    distmat = np.zeros((1, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="no query has a good match"):
        metrics.evaluate_rank(distmat, [5], [5, 6], [0], [0, 1])


def test_ties_keep_gallery_order():
    # Items 0 (negative) and 1 (good) are tied; the stable sort ranks 0 first.
    distmat = np.array([[0.5, 0.5, 0.2]], dtype=np.float32)
    g_pids, g_cams = np.array([2, 1, 1]), np.array([1, 1, 2])
    result = metrics.evaluate_rank(distmat, [1], g_pids, [0], g_cams)
    # Goods at ranks 1 and 3: (1/2) * [(1 + 1)/2 + (1/2 + 2/3)/2] = 19/24.
    assert result["mAP"] == pytest.approx(19 / 24)
    assert result["mINP"] == pytest.approx(2 / 3)
    # Swap the two tied items: now the good one comes first.
    swapped = metrics.evaluate_rank(distmat, [1], g_pids[[1, 0, 2]], [0], g_cams[[1, 0, 2]])
    assert swapped["mAP"] == pytest.approx(1.0)
    assert swapped["mINP"] == pytest.approx(1.0)


def test_all_cmc_ranks_and_rank_keys():
    distmat, q_pids, g_pids, q_cams, g_cams = case_a()
    result = metrics.evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=3)
    assert result["cmc"].shape == (3,)
    for key in ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP"):
        assert 0.0 <= result[key] <= 1.0
    assert result["rank20"] == 1.0


@pytest.mark.parametrize("protocol,rank_size", [
    ("mars", None), ("mars", 37), ("market", None), ("market", 50),
])
def test_equals_per_query_loop_on_random_data(protocol, rank_size):
    rng = np.random.default_rng(7)
    num_query, num_gallery = 150, 400
    g_pids = rng.integers(-1, 40, size=num_gallery)   # -1 junk, 0 distractor
    g_cams = rng.integers(0, 9, size=num_gallery)      # many cameras
    q_pids = rng.integers(0, 42, size=num_query)       # some ids absent -> skipped
    q_cams = rng.integers(0, 9, size=num_query)
    distmat = rng.random((num_query, num_gallery)).astype(np.float32)
    # Pull each query towards its own id, and quantise to create many ties.
    distmat -= 0.3 * (q_pids[:, None] == g_pids[None, :])
    distmat = np.round(distmat, 1).astype(np.float32)
    result = metrics.evaluate_rank(
        distmat, q_pids, g_pids, q_cams, g_cams, protocol=protocol,
        rank_size=rank_size, chunk_size=17,
    )
    cut = rank_size if (rank_size or protocol == "market") else metrics.MARS_RANK_SIZE
    cmc, m_ap, m_inp, num_valid = loop_evaluate(
        distmat, q_pids, g_pids, q_cams, g_cams, protocol, cut
    )
    assert result["num_valid_queries"] == num_valid
    assert 0 < num_valid < num_query
    np.testing.assert_allclose(result["cmc"], cmc, atol=1e-12)
    assert result["mAP"] == pytest.approx(m_ap, abs=1e-12)
    assert result["mINP"] == pytest.approx(m_inp, abs=1e-12)


def test_float64_distmat_matches_float32_ranking():
    rng = np.random.default_rng(3)
    distmat = rng.random((20, 60))
    pids = rng.integers(0, 6, size=60)
    cams = rng.integers(0, 3, size=60)
    r64 = metrics.evaluate_rank(distmat, pids[:20], pids, cams[:20], cams)
    cmc, m_ap, m_inp, _ = loop_evaluate(distmat, pids[:20], pids, cams[:20], cams,
                                        "mars", 10000)
    assert r64["mAP"] == pytest.approx(m_ap)
    np.testing.assert_allclose(r64["cmc"], cmc)


def test_stable_argsort_matches_numpy_stable():
    rng = np.random.default_rng(0)
    values = rng.integers(-3, 4, size=(9, 50)).astype(np.float32) / 2
    values[0, :5] = [-0.0, 0.0, -0.0, 0.0, -1.5]
    expected = np.argsort(values, axis=1, kind="stable")
    np.testing.assert_array_equal(distance.stable_argsort(values), expected)
    np.testing.assert_array_equal(
        distance.stable_argsort(values, stop=4, max_block_bytes=1), expected[:, :4]
    )
    np.testing.assert_array_equal(
        distance.stable_argsort(values.astype(np.float64)), expected
    )


def test_evaluate_indices_equals_manual_split():
    rng = np.random.default_rng(1)
    features = rng.standard_normal((80, 16)).astype(np.float32)
    pids = rng.integers(0, 10, size=80)
    cams = rng.integers(0, 4, size=80)
    features += 6.0 * np.eye(16, dtype=np.float32)[pids]   # identity signal
    query_index = np.arange(0, 80, 4)
    result = ranking.evaluate_indices(features, pids, cams, query_index,
                                      return_distmat=True)
    distmat = distance.cosine_distance(features[query_index], features)
    np.testing.assert_allclose(result["distmat"], distmat, atol=1e-6)
    manual = metrics.evaluate_rank(distmat, pids[query_index], pids,
                                   cams[query_index], cams)
    assert result["mAP"] == pytest.approx(manual["mAP"])
    # A boolean mask selects the same queries.
    mask = np.zeros(80, dtype=bool)
    mask[query_index] = True
    masked = ranking.evaluate_indices(features, pids, cams, mask)
    assert masked["mAP"] == pytest.approx(result["mAP"])
    assert result["mAP"] > 0.5   # the identity signal is found
    # Euclidean and precomputed distances run through the same path.
    euclid = ranking.evaluate_indices(features, pids, cams, query_index,
                                      metric="euclidean", protocol="market")
    assert 0 < euclid["mAP"] <= 1
    square = distance.cosine_distance(features)
    pre = ranking.evaluate_indices(square, pids, cams, query_index,
                                   metric="precomputed")
    assert pre["mAP"] == pytest.approx(result["mAP"])


# ------------------------------- bad input --------------------------------
def test_mismatched_lengths_name_the_argument():
    distmat = np.zeros((4, 6), dtype=np.float32)
    good = dict(q_pids=np.zeros(4), g_pids=np.zeros(6),
                q_camids=np.zeros(4), g_camids=np.zeros(6))
    with pytest.raises(ValueError, match="q_pids has 5 entries but distmat has 4 rows"):
        metrics.evaluate_rank(distmat, **{**good, "q_pids": np.zeros(5)})
    with pytest.raises(ValueError, match="g_camids has 5 entries but distmat has 6 columns"):
        metrics.evaluate_rank(distmat, **{**good, "g_camids": np.zeros(5)})
    with pytest.raises(ValueError, match="2-D"):
        metrics.evaluate_rank(np.zeros(6), **good)
    with pytest.raises(ValueError, match="protocol must be one of"):
        metrics.evaluate_rank(distmat, **good, protocol="duke")
    with pytest.raises(ValueError, match="pids has shape"):
        ranking.evaluate_indices(np.zeros((5, 3)), np.zeros(4), np.zeros(5), [0])
    with pytest.raises(ValueError, match="dimension 3 but gallery"):
        distance.cosine_distance(np.ones((2, 3)), np.ones((2, 4)))


def test_empty_query_raises():
    with pytest.raises(ValueError, match="query set is empty"):
        metrics.evaluate_rank(np.zeros((0, 3)), [], [1, 2, 3], [], [0, 0, 1])
    with pytest.raises(ValueError, match="query_index is empty"):
        ranking.evaluate_indices(np.ones((5, 3)), np.arange(5), np.arange(5), [])


def test_nan_features_and_distances_raise():
    features = np.ones((5, 3), dtype=np.float32)
    features[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"non-finite values .* first rows \[2\]"):
        ranking.evaluate_indices(features, np.arange(5), np.arange(5), [0, 1])
    distmat = np.zeros((2, 3))
    distmat[1, 0] = np.nan
    with pytest.raises(ValueError, match="distmat contains NaN"):
        metrics.evaluate_rank(distmat, [1, 1], [1, 1, 2], [0, 0], [1, 1, 1])


def test_junk_id_query_is_skipped_under_mars_but_not_market():
    distmat = np.array([[0.1, 0.2, 0.3], [0.3, 0.1, 0.2]], dtype=np.float32)
    q_pids, g_pids = np.array([-1, 4]), np.array([-1, 4, -1])
    q_cams, g_cams = np.array([0, 0]), np.array([1, 1, 2])
    mars = metrics.evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams)
    assert mars["skipped_queries"].tolist() == [0]
    assert mars["mAP"] == 1.0
    # torchreid's rule only removes same id + same camera: id -1 is an id.
    market = metrics.evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, protocol="market")
    assert market["num_valid_queries"] == 2
    assert market["ap"][0] == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_numpy_modules_do_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys, nvan_tf.evaluation.metrics, nvan_tf.evaluation.distance, nvan_tf.evaluation.reranking, "
            "nvan_tf.evaluation.ranking, nvan_tf.evaluation.features; "
            "sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_metrics_do_not_import_reranking():
    """Ranking metrics take a distance matrix: importing them (and the old
    path nvan_tf.metrics' module) loads neither re-ranking nor the ranking glue."""
    import subprocess
    import sys

    code = ("import sys, nvan_tf.evaluation.metrics; "
            "sys.exit(sorted(m for m in sys.modules if m in "
            "('nvan_tf.evaluation.reranking', 'nvan_tf.evaluation.ranking')) or None)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ------------------------------ good / junk -------------------------------
def test_match_masks_by_hand():
    _, q_pids, g_pids, q_cams, g_cams = case_a()
    # Gallery: self (id 1 cam 0), id 2, id 1 cam 1, id -1, distractor 0, id 1 cam 2.
    good, junk = metrics.match_masks(q_pids[0], q_cams[0], g_pids, g_cams, "mars")
    assert good.tolist() == [False, False, True, False, False, True]
    assert junk.tolist() == [True, False, False, True, False, False]
    good, junk = metrics.match_masks(q_pids[0], q_cams[0], g_pids, g_cams, "market")
    assert good.tolist() == [False, False, True, False, False, True]
    assert junk.tolist() == [True, False, False, False, False, False]   # id -1 is an id here
    # A column of queries gives one row each; a query with id -1 has no good match under mars.
    good, junk = metrics.match_masks(np.array([[1], [-1]]), np.array([[0], [1]]), g_pids, g_cams)
    assert good.shape == junk.shape == (2, 6)
    assert not good[1].any() and junk[1].tolist() == [False, False, False, True, False, False]
    with pytest.raises(ValueError, match="protocol must be one of"):
        metrics.match_masks(1, 0, g_pids, g_cams, "duke")


def test_report_uses_the_metrics_rule(monkeypatch, tmp_path):
    """The ranked list and the histograms take good / junk from match_masks."""
    from nvan_tf.evaluation import report

    calls = []
    original = metrics.match_masks

    def spy(*args, **kwargs):
        calls.append(args[-1] if len(args) == 5 else kwargs.get("protocol"))
        return original(*args, **kwargs)

    monkeypatch.setattr(report, "match_masks", spy)
    distmat, q_pids, g_pids, q_cams, g_cams = case_a()
    report.plt.close(report.distance_histogram_figure(distmat, q_pids, g_pids, q_cams, g_cams,
                                                      metric="cosine", protocol="market"))
    frames = [[str(tmp_path / "missing.jpg")]] * 6
    drawn = report.plot_ranked_list(distmat[0], frames[0], frames, 1, 0, g_pids, g_cams,
                                    str(tmp_path / "list.png"), protocol="mars")
    assert calls == ["market", "mars"]
    # mars: self and id -1 left out; the two good ones framed green.
    assert [(index, same) for index, same, _ in drawn] == [(1, False), (2, True), (4, False), (5, True)]


def test_cross_camera_share_of_the_top_k_by_hand():
    # query 0 (camera 1) is gallery item 0: left out; its two nearest are items 1 (camera 1) and 2 (camera 2)
    # query 1 (camera 2) is item 1: left out; its two nearest are items 2 (camera 2) and 0 (camera 1)
    distmat = np.array([[0.0, 0.1, 0.2, 0.3], [0.5, 0.0, 0.4, 0.9]])
    exclude = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], bool)
    share = metrics.cross_camera_share(distmat, [1, 2], [1, 1, 2, 2], k=2, exclude=exclude)
    assert share == pytest.approx(0.5)
    # k=1: query 0's nearest is camera 1 (same), query 1's is camera 2 (same)
    assert metrics.cross_camera_share(distmat, [1, 2], [1, 1, 2, 2], k=1, exclude=exclude) == 0.0
    # without leaving the queries out, query 0 finds itself first (camera 1), query 1 item 1 (camera 1)
    assert metrics.cross_camera_share(distmat, [1, 2], [1, 1, 2, 2], k=1) == 0.5
    assert metrics.cross_camera_share(distmat, [1, 2], [2, 2, 1, 1], k=1, exclude=exclude) == 1.0
