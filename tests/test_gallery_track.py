"""nvan-track's association on the gallery's index gives the identities of exact search, on the
project's synthetic world (the nvan-track run of tests/test_video_pipeline.py, its fixtures reused)."""

import json
import os

import numpy as np
import pytest

try:
    from tests.test_video_pipeline import run, tiny_model, world  # noqa: F401 (fixtures)
except ImportError:  # tests/ itself on sys.path
    from test_video_pipeline import run, tiny_model, world  # noqa: F401

from nvan_tf.video import association  # noqa: E402


@pytest.mark.slow
def test_association_on_the_index_gives_the_identities_of_exact_search(run):  # noqa: F811
    from nvan_tf.video.stages import read_identities, read_tracklets

    rows = read_tracklets(run)
    with np.load(os.path.join(run, "embeddings.npz")) as data:
        features = data["features"]
    with open(os.path.join(run, "association.json")) as f:
        threshold = json.load(f)["threshold"]
    camids = np.array([r["camera"] for r in rows])
    starts, ends = np.array([r["start_time"] for r in rows]), np.array([r["end_time"] for r in rows])
    results = []
    for exact in (True, False):
        pairs = association.candidate_pairs(features, camids, starts, ends, k=20, max_distance=threshold,
                                            exact=exact)
        results.append(association.associate(features, camids, starts, ends, threshold=threshold, pairs=pairs))
    assert len(features) >= 10 and len(np.unique(results[0].ids)) > 1
    np.testing.assert_array_equal(results[0].ids, results[1].ids)
    assert results[0].candidates == results[1].candidates
    # and both are what nvan-track wrote
    written = {(r["camera"], r["tracklet"]): r["global_id"] for r in read_identities(run)}
    assert [written[(r["camera"], r["tracklet"])] for r in rows] == results[1].ids.tolist()
