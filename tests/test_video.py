"""nvan_tf.video parts: MOTChallenge files, the ONNX / HOG detectors, decoding,
tracklet cutting and cropping, cross-camera association (fast; no TensorFlow)."""

import os
import time

import numpy as np
import pytest

from nvan_tf.video import association, mot
from nvan_tf.video.track_metrics import association_scores, box_iou
try:
    from tests import data_trees
except ImportError:  # tests/ itself on sys.path
    import data_trees

VIDEO_EXTRA = "needs the [video] extra (pip install 'nvan-tf[video]')"


def _require(module):
    return pytest.importorskip(module, reason=VIDEO_EXTRA)


# ----------------------------------------------------------------------------
# MOTChallenge files
# ----------------------------------------------------------------------------
def _boxes(rng, n=40, frames=10):
    return mot.MOTBoxes(rng.integers(1, frames + 1, n), rng.integers(1, 6, n),
                        np.round(rng.uniform(0, 300, (n, 4)), 2), np.round(rng.uniform(0, 1, n), 4),
                        np.ones(n), np.round(rng.uniform(0, 1, n), 4))


@pytest.mark.parametrize("kind", ["det", "tracks", "gt"])
def test_mot_round_trip(tmp_path, kind):
    boxes = _boxes(np.random.default_rng(0))
    if kind == "gt":
        boxes.scores = np.ones(len(boxes))
    path = mot.write_mot(str(tmp_path / f"{kind}.txt"), boxes, kind)
    back = mot.read_mot(path, kind)
    ordered = boxes.sorted()
    np.testing.assert_array_equal(back.frames, ordered.frames)
    np.testing.assert_array_equal(back.ids, ordered.ids)
    np.testing.assert_allclose(back.boxes, ordered.boxes, atol=0.006)
    np.testing.assert_allclose(back.scores, ordered.scores, atol=1e-4)
    if kind == "gt":
        np.testing.assert_allclose(back.visibility, ordered.visibility, atol=1e-4)
        np.testing.assert_array_equal(back.classes, np.ones(len(boxes)))


def test_mot_official_column_layout(tmp_path):
    # one 0-based box at the image's corner: MOTChallenge writes it 1-based
    boxes = mot.MOTBoxes([3], [-1], [[0.0, 0.0, 10.0, 20.0]], [0.75])
    line = mot.format_mot(boxes, "det").strip()
    assert line == "3,-1,1.00,1.00,10.00,20.00,0.7500,-1,-1,-1"
    gt = mot.MOTBoxes([1], [7], [[4.0, 5.0, 6.0, 7.0]], [1], [1], [0.5])
    assert mot.format_mot(gt, "gt").strip() == "1,7,5.00,6.00,6.00,7.00,1,1,0.5000"
    # what the official tools read: the trackers library's own MOT reader
    trackers = _require("trackers")
    path = mot.write_mot(str(tmp_path / "t.txt"), mot.MOTBoxes([2, 2], [1, 2], [[0, 0, 5, 5], [9, 9, 4, 4]],
                                                               [0.9, 0.8]), "tracks")
    frames = trackers.load_mot_file(path)
    assert sorted(frames) == [2]
    np.testing.assert_allclose(frames[2].boxes, [[1, 1, 5, 5], [10, 10, 4, 4]])
    np.testing.assert_array_equal(frames[2].ids, [1, 2])


def test_mot_reader_names_file_and_line(tmp_path):
    path = tmp_path / "det.txt"
    path.write_text("1,-1,1,1,5,5,0.9,-1,-1,-1\n2,-1,x,1,5,5,0.9,-1,-1,-1\n")
    with pytest.raises(mot.MOTFormatError, match=r"det.txt, line 2"):
        mot.read_mot(str(path))
    path.write_text("1,-1,1,1,5\n")
    with pytest.raises(mot.MOTFormatError, match="at least 7"):
        mot.read_mot(str(path))
    path.write_text("0,-1,1,1,5,5,0.9\n")
    with pytest.raises(mot.MOTFormatError, match="frames are integers from 1"):
        mot.read_mot(str(path))
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        mot.read_mot(str(tmp_path / "missing.txt"))
    path.write_text("")
    assert len(mot.read_mot(str(path))) == 0


# ----------------------------------------------------------------------------
# Detectors
# ----------------------------------------------------------------------------
def _yolo_onnx(path, output, *, names=None, batch=1, size=64):
    """A tiny ONNX graph taking (batch, 3, size, size) images and emitting ``output``
    (a constant plus 0 x the image mean, so the input is used)."""
    onnx = _require("onnx")
    from onnx import TensorProto, helper, numpy_helper

    output = np.asarray(output, np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["boxes", "nothing"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, "yolo_stub",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output.shape))],
        initializer=[numpy_helper.from_array(output, "boxes"), numpy_helper.from_array(np.float32(0), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if names is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = "names", str(names)
    onnx.save(model, path)
    return path


def _known_boxes():
    """(4 + 2 classes, 16 anchors) in the 64x64 input: A person, A' its shifted
    duplicate (NMS drops it), B a class-1 box, C a faint person, then empty
    anchors (real exports have thousands: more anchors than channels)."""
    columns = [
        # cx, cy, w, h, person, class 1
        (20, 30, 10, 20, 0.9, 0.0),   # A
        (21, 30, 10, 20, 0.8, 0.0),   # A' (IoU with A 0.82)
        (45, 40, 8, 16, 0.05, 0.95),  # B: not a person
        (50, 20, 6, 12, 0.1, 0.0),    # C: below the score threshold
    ]
    return np.concatenate([np.asarray(columns, np.float32).T, np.zeros((6, 12), np.float32)], axis=1)


def test_parse_yolo_output_filters_classes_scores_and_overlaps():
    _require("cv2")
    from nvan_tf.video.detection import parse_yolo_output

    raw = _known_boxes()[None]
    [boxes] = parse_yolo_output(raw, score_threshold=0.25, iou_threshold=0.5)
    np.testing.assert_allclose(boxes, [[15, 20, 25, 40, 0.9]], atol=1e-5)
    # the transposed layout, recognised by the class count
    [same] = parse_yolo_output(raw.transpose(0, 2, 1), num_classes=2, score_threshold=0.25, iou_threshold=0.5)
    np.testing.assert_allclose(same, boxes)
    # class 1 kept instead: only B
    [other] = parse_yolo_output(raw, classes=(1,), score_threshold=0.25)
    np.testing.assert_allclose(other[:, :4], [[41, 32, 49, 48]])
    # a looser NMS keeps the duplicate
    [both] = parse_yolo_output(raw, score_threshold=0.25, iou_threshold=0.9)
    assert len(both) == 2
    with pytest.raises(ValueError, match="no class 5"):
        parse_yolo_output(raw, classes=(5,))


def test_nms_keeps_no_overlapping_pair_and_drops_only_covered_boxes():
    _require("cv2")
    from nvan_tf.video.detection import non_max_suppression

    rng = np.random.default_rng(3)
    corners = rng.uniform(0, 100, (200, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(5, 30, (200, 2))], axis=1)
    scores = rng.uniform(0, 1, 200)
    keep = non_max_suppression(boxes, scores, 0.4)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    iou = box_iou(xywh, xywh)
    kept = iou[np.ix_(keep, keep)]
    np.fill_diagonal(kept, 0)
    assert kept.max() <= 0.4 + 1e-6
    for dropped in sorted(set(range(200)) - set(keep.tolist())):
        assert np.any((iou[dropped, keep] > 0.4) & (scores[keep] >= scores[dropped]))


@pytest.mark.parametrize("layout", ["yolo", "transposed"])
def test_onnx_detector_letterboxes_and_maps_back(tmp_path, layout):
    _require("onnxruntime")
    _require("cv2")
    from nvan_tf.video.detection import ONNXDetector, build_detector

    raw = _known_boxes()[None]
    names = None
    if layout == "transposed":
        raw, names = raw.transpose(0, 2, 1), {0: "person", 1: "bicycle"}
    path = _yolo_onnx(str(tmp_path / "det.onnx"), raw, names=names)
    detector = build_detector(f"onnx:{path}")
    assert isinstance(detector, ONNXDetector) and detector.batch_size == 1
    # a 32x64 frame: scale 1, 16 rows of grey above and below in the 64x64 input
    frames = [np.zeros((32, 64, 3), np.uint8), np.full((32, 64, 3), 200, np.uint8)]
    results = detector(frames)
    assert len(results) == 2
    for boxes in results:
        np.testing.assert_allclose(boxes, [[15, 4, 25, 24, 0.9]], atol=1e-4)
    # a 64x128 frame: scale 0.5, so boxes come back twice as large
    [big] = detector([np.zeros((64, 128, 3), np.uint8)])
    np.testing.assert_allclose(big[:, :4], [[30, 8, 50, 48]], atol=1e-3)


def test_detector_errors_name_the_argument(tmp_path):
    from nvan_tf.video.detection import build_detector

    with pytest.raises(ValueError, match="--detector must be one of ssdlite, hog, onnx:PATH. Received: 'yolo'"):
        build_detector("yolo")
    with pytest.raises(FileNotFoundError, match="nothing.onnx"):
        build_detector(f"onnx:{tmp_path / 'nothing.onnx'}")
    _require("onnxruntime")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ValueError, match="cannot be loaded by ONNX Runtime"):
        build_detector(f"onnx:{bad}")


@pytest.mark.parametrize("seed", [1, 4, 8])
def test_hog_detector_finds_an_upright_person(seed):
    _require("cv2")
    from nvan_tf.data.datasets.synthetic import random_camera, random_identity, render_frame
    from nvan_tf.video.detection import HOGDetector

    rng = np.random.default_rng(seed)
    person = render_frame(random_identity(rng), random_camera(rng), 128, 64, phase=0.3, dx=0, dy=0, zoom=1.0,
                          occluder=None, rng=rng)
    frame = np.full((256, 256, 3), 120, np.uint8)
    frame[64:192, 96:160] = person                      # a 128-pixel person: HOG's window size
    detector = HOGDetector(win_stride=4, scale=1.03)
    [boxes] = detector([frame])
    assert boxes.shape[1] == 5 and len(boxes) >= 1
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2]], axis=1)
    assert box_iou(xywh, [[96, 64, 64, 128]]).max() > 0.4
    assert np.all((boxes[:, 4] > 0) & (boxes[:, 4] < 1))
    [empty] = detector([np.full((256, 256, 3), 120, np.uint8)])
    assert len(empty) == 0


# ----------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------
def _write_video(path, frames=20, size=(64, 96)):
    from nvan_tf.video.sources import VideoWriter

    rng = np.random.default_rng(0)
    with VideoWriter(path, 10, size[1], size[0]) as writer:
        for _ in range(frames):
            writer.write(rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    return path


def test_video_reads_frame_by_frame_with_times(tmp_path):
    _require("av")
    from nvan_tf.video.sources import CameraReader, CameraSpec

    path = _write_video(str(tmp_path / "v.mp4"))
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]
    reader = CameraReader(CameraSpec(1, path))
    assert (reader.width, reader.height, reader.fps, reader.announced_frames) == (96, 64, 10.0, 20)
    frames = list(reader)
    assert [f.index for f in frames] == list(range(1, 21))
    np.testing.assert_allclose([f.time for f in frames], np.arange(20) / 10, atol=1e-6)
    assert frames[0].image.shape == (64, 96, 3) and reader.problem is None
    assert [f.index for f in CameraReader(CameraSpec(1, path), first=5, last=7)] == [5, 6, 7]


def test_truncated_video_keeps_frames_and_names_file_and_frame(tmp_path, caplog):
    _require("av")
    from nvan_tf.video.sources import CameraReader, CameraSpec

    path = _write_video(str(tmp_path / "cut.mp4"), frames=30)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * 0.6)])
    reader = CameraReader(CameraSpec(1, path))
    frames = list(reader)
    assert 0 < len(frames) < 30
    assert reader.frames_read == len(frames)
    assert path in reader.problem and "frame" in reader.problem
    assert any(path in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_unreadable_video_and_missing_source_are_named(tmp_path):
    _require("av")
    from nvan_tf.video.sources import CameraReader, CameraSpec, VideoError, parse_camera

    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(VideoError, match="junk.mp4 cannot be opened as a video"):
        CameraReader(CameraSpec(2, str(junk)))
    with pytest.raises(VideoError, match="nowhere.mp4 does not exist"):
        parse_camera(str(tmp_path / "nowhere.mp4"), 1)
    spec = parse_camera(f"3={junk}@2024-05-01T10:00:00", 1)
    assert spec.camid == 3 and spec.start_time == 1714557600.0
    with pytest.raises(ValueError, match="neither seconds nor an ISO date-time"):
        parse_camera(f"{junk}@yesterday", 1)


def test_frame_folder_camera(tmp_path):
    from PIL import Image

    from nvan_tf.video.sources import CameraReader, CameraSpec

    for i in range(3):
        Image.fromarray(np.full((8, 6, 3), i * 50, np.uint8)).save(tmp_path / f"{i:04d}.png")
    frames = list(CameraReader(CameraSpec(1, str(tmp_path), fps=5)))
    assert [f.index for f in frames] == [1, 2, 3] and frames[2].time == pytest.approx(0.4)
    assert frames[1].image[0, 0, 0] == 50


# ----------------------------------------------------------------------------
# Tracklets
# ----------------------------------------------------------------------------
def test_cut_tracklets_splits_long_gaps_and_drops_short_pieces():
    from nvan_tf.video.tracking import cut_tracklets

    frames = list(range(1, 11)) + list(range(14, 24)) + list(range(40, 43)) + list(range(5, 15))
    ids = [1] * 23 + [2] * 10
    tracks = mot.MOTBoxes(frames, ids, np.tile([0, 0, 10, 20], (len(ids), 1)), np.ones(len(ids)))
    pieces = cut_tracklets(tracks, 4, min_length=5, max_gap=3)
    # track 1: 1-10, a gap of 3 frames (kept together) to 14-23, a gap of 16 to 40-42 (3 boxes: dropped)
    assert [(p.track_id, p.first_frame, p.last_frame, len(p)) for p in pieces] == [(1, 1, 23, 20), (2, 5, 14, 10)]
    assert [p.tracklet_id for p in pieces] == [1, 2] and all(p.camid == 4 for p in pieces)
    assert [len(p) for p in cut_tracklets(tracks, 4, min_length=5, max_gap=2)] == [10, 10, 10]
    with pytest.raises(ValueError, match="--min-length"):
        cut_tracklets(tracks, 4, min_length=0)


def test_crops_are_padded_to_one_to_two():
    _require("cv2")
    from nvan_tf.video.tracking import crop, pad_to_aspect

    boxes = np.array([[10, 10, 30, 20], [50, 5, 10, 50]], np.float64)
    padded = pad_to_aspect(boxes)
    np.testing.assert_allclose(padded[:, 2] / padded[:, 3], 0.5)
    np.testing.assert_allclose(padded[:, :2] + padded[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2)
    assert np.all(padded[:, 2:] >= boxes[:, 2:])
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, :30] = 255
    out = crop(image, (-20, -10, 40, 80), 64, 32)     # mostly outside the frame: border repeated
    assert out.shape == (64, 32, 3) and out[:, :8].min() == 255


# ----------------------------------------------------------------------------
# Association
# ----------------------------------------------------------------------------
def test_same_camera_overlap_is_never_one_person():
    features = np.tile([1.0, 0.0, 0.0], (4, 1))                  # identical embeddings
    cameras = np.array([1, 1, 2, 1])
    starts, ends = np.array([0.0, 5.0, 20.0, 40.0]), np.array([10.0, 15.0, 30.0, 50.0])
    result = association.associate(features, cameras, starts, ends, threshold=0.5)
    ids = result.ids
    assert ids[0] != ids[1]            # camera 1, 0-10 and 5-15 overlap: two people
    assert len(np.unique(ids)) == 2    # camera 2 and camera 1 later join one of them
    for group in np.unique(ids):
        members = np.flatnonzero(ids == group)
        conflicts = association.time_conflicts(cameras[members], starts[members], ends[members],
                                               cameras[members], starts[members], ends[members])
        np.fill_diagonal(conflicts, False)
        assert not conflicts.any()
    assert ids[0] == 1                 # numbered by first appearance
    np.testing.assert_allclose(result.centre_distance, 0, atol=1e-6)


def test_cameras_that_do_not_overlap_never_hold_one_person_at_once():
    features = np.tile([1.0, 0.0], (2, 1))                       # identical embeddings
    cameras, starts, ends = np.array([1, 2]), np.array([0.0, 8.0]), np.array([10.0, 20.0])  # 8-10 together

    def people(rules):
        return len(np.unique(association.associate(features, cameras, starts, ends, threshold=0.5,
                                                   rules=rules).ids))

    assert people(association.TimeRules()) == 2                    # default: no two cameras overlap
    assert people(association.TimeRules(overlapping=((1, 2),))) == 1
    assert people(association.TimeRules(overlapping="all")) == 1
    assert people(association.TimeRules(overlapping=((1, 3),))) == 2  # another pair overlapping: not these
    # 3 s apart: a person can walk it unless they need more
    ends = np.array([5.0, 20.0])
    assert people(association.TimeRules(min_transit=2.0)) == 1
    assert people(association.TimeRules(min_transit=4.0)) == 2


def test_a_group_is_not_joined_by_a_tracklet_at_the_same_time_in_another_camera():
    features = np.array([[1.0, 0.0], [1.0, 0.0], [0.999, 0.045]])  # all three within the threshold
    cameras = np.array([1, 2, 3])
    starts, ends = np.array([0.0, 20.0, 5.0]), np.array([10.0, 30.0, 8.0])  # 3 is in camera 3 while 1 is in 1
    ids = association.associate(features, cameras, starts, ends, threshold=0.1).ids
    assert ids[0] == ids[1] and ids[2] != ids[0]
    # candidate pairs leave out the pair that cannot be one person, and keep it when the cameras overlap
    pairs, _ = association.candidate_pairs(features, cameras, starts, ends)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 1), (1, 2)]
    pairs, _ = association.candidate_pairs(features, cameras, starts, ends,
                                           rules=association.TimeRules(overlapping=((1, 3),)))
    assert sorted(map(tuple, pairs.tolist())) == [(0, 1), (0, 2), (1, 2)]


def test_time_rules_from_the_command_line_and_their_errors():
    assert association.TimeRules.parse(["1,2", "3,4,5"]).overlapping == ((1, 2), (3, 4, 5))
    assert association.TimeRules.parse(["all"]).overlapping == "all"
    assert association.TimeRules.parse(None, 3.0) == association.TimeRules((), 3.0)
    with pytest.raises(ValueError, match="--overlapping takes camera ids"):
        association.TimeRules.parse(["1,x"])
    with pytest.raises(ValueError, match="two or more cameras"):
        association.TimeRules.parse(["1"])
    with pytest.raises(ValueError, match="min_transit must be a non-negative"):
        association.TimeRules(min_transit=-1.0)


def test_a_threshold_without_labels_from_the_pairs_known_to_be_two_people():
    angle = np.deg2rad([0, 50, 10, 80, 20])
    features = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    cameras = np.array([1, 2, 1, 2, 3])
    # 0 and 1 at once in cameras 1 and 2; 3 and 4 at once in 2 and 3; 2 alone in time
    starts, ends = np.array([0.0, 5.0, 20.0, 40.0, 45.0]), np.array([10.0, 15.0, 30.0, 50.0, 55.0])
    cross, within = association.known_negative_distances(features, cameras, starts, ends)
    expected = sorted([1 - np.cos(np.deg2rad(50)), 1 - np.cos(np.deg2rad(60))])
    np.testing.assert_allclose(np.sort(cross), expected, atol=1e-6)
    assert len(within) == 0
    threshold, info = association.threshold_from_negatives(features, cameras, starts, ends, quantile=0.5, least=2)
    assert threshold == pytest.approx(np.mean(expected), abs=1e-6)
    assert info["known_negatives"] == 2 and info["cross_camera"] == 2 and info["linked_negatives"] == 0.5
    # cameras 2 and 3 overlap: 3 and 4 may be one person, so only 0-1 is known to be two
    rules = association.TimeRules(overlapping=((2, 3),))
    cross, _ = association.known_negative_distances(features, cameras, starts, ends, rules=rules)
    np.testing.assert_allclose(cross, [expected[0]], atol=1e-6)
    with pytest.raises(ValueError, match="needs at least 2 pairs .* this footage has 1"):
        association.threshold_from_negatives(features, cameras, starts, ends, rules=rules, least=2)
    # on the re-ranked scale (an association with rerank): the same pairs, read from that matrix
    reranked = np.arange(25, dtype=np.float64).reshape(5, 5) / 100
    reranked = reranked + reranked.T
    cross, _ = association.known_negative_distances(features, cameras, starts, ends, reranked=reranked)
    np.testing.assert_allclose(np.sort(cross), sorted([reranked[0, 1], reranked[3, 4]]))
    threshold, _ = association.threshold_from_negatives(features, cameras, starts, ends, quantile=0.5, least=2,
                                                        reranked=reranked)
    assert threshold == pytest.approx((reranked[0, 1] + reranked[3, 4]) / 2)


def test_a_threshold_without_labels_takes_its_scale_from_the_cross_camera_negatives():
    """A few cross-camera negatives set the threshold, not the many one-camera
    pairs, whose distances sit on another (lower) scale."""
    cameras = np.array([1, 1, 1, 2, 2, 2])
    # 0-2 at once in camera 1, and at once with 3 in camera 2; 4 and 5 at once in camera 2, later
    starts, ends = np.array([0.0, 0, 0, 0, 20, 20]), np.array([10.0, 10, 10, 10, 30, 30])
    distances = np.full((6, 6), 0.5)
    distances[[0, 1, 2], 3] = distances[3, [0, 1, 2]] = [0.6, 0.7, 0.8]   # the three cross-camera negatives
    for i, j in ((0, 1), (0, 2), (1, 2), (4, 5)):                          # the four one-camera ones
        distances[i, j] = distances[j, i] = 0.1
    features = np.eye(6)
    threshold, info = association.threshold_from_negatives(features, cameras, starts, ends, quantile=0.0, least=5,
                                                           reranked=distances)
    assert threshold == pytest.approx(0.6) and info["known_negatives"] == 3 and info["cross_camera"] == 3
    threshold, info = association.threshold_from_negatives(features, cameras, starts, ends, quantile=0.0, least=5,
                                                           least_cross=4, reranked=distances)
    assert threshold == pytest.approx(0.1) and info["known_negatives"] == 7
    with pytest.raises(ValueError, match="needs at least 8 pairs .* this footage has 7"):
        association.threshold_from_negatives(features, cameras, starts, ends, least=8, reranked=distances)


def _otsu_by_definition(values):
    """The split of ``values`` with the largest between-class variance, from
    the variance decomposition (total = within + between), every split tried."""
    values = np.sort(values)
    best = max(range(1, len(values)), key=lambda i: np.var(values) - (i * np.var(values[:i]) + (len(values) - i)
                                                                      * np.var(values[i:])) / len(values))
    within = (best * np.var(values[:best]) + (len(values) - best) * np.var(values[best:])) / len(values)
    return (values[best - 1] + values[best]) / 2, best, 1 - within / np.var(values)


def test_a_threshold_without_labels_from_the_valley_of_the_nearest_cross_camera_distances():
    """Three people seen by both cameras (their tracklets 0.10-0.14 apart) and
    two seen by one each, whose nearest allowed tracklet is a stranger; those
    two are 0.05 apart but at once in two cameras, so the time rule keeps that
    pair out of the nearest distances."""
    cameras = np.array([1, 1, 1, 1, 2, 2, 2, 2])
    starts = np.array([0.0, 20, 40, 60, 10, 30, 50, 60])
    ends = starts + 5
    distances = np.full((8, 8), 0.9)
    for (i, j), d in {(0, 4): 0.10, (1, 5): 0.12, (2, 6): 0.14, (3, 7): 0.05, (3, 4): 0.60, (7, 0): 0.70}.items():
        distances[i, j] = distances[j, i] = d
    features = np.eye(8)
    nearest = association.nearest_allowed_distances(features, cameras, starts, ends, reranked=distances)
    np.testing.assert_allclose(nearest, [0.10, 0.12, 0.14, 0.60, 0.10, 0.12, 0.14, 0.70])
    threshold, info = association.threshold_from_valley(features, cameras, starts, ends, reranked=distances)
    expected, below, separation = _otsu_by_definition(nearest)
    assert threshold == pytest.approx(expected) == pytest.approx(0.37)
    assert info["tracklets"] == 8 and info["below"] == below == 6
    assert info["separation"] == pytest.approx(separation) and 0.9 < info["separation"] <= 1
    # every view overlapping: 3 and 7 could be one person, 0.05 apart, and the split moves
    everything = association.TimeRules("all")
    nearest = association.nearest_allowed_distances(features, cameras, starts, ends, reranked=distances,
                                                    rules=everything)
    assert nearest[3] == nearest[7] == pytest.approx(0.05)
    threshold, _ = association.threshold_from_valley(features, cameras, starts, ends, reranked=distances,
                                                     rules=everything)
    assert threshold == pytest.approx(_otsu_by_definition(nearest)[0]) and threshold != pytest.approx(0.37)
    # on cosine distances of the embeddings themselves (no re-ranking): the same rule
    rng = np.random.default_rng(0)
    features = rng.normal(size=(8, 16))
    nearest = association.nearest_allowed_distances(features, cameras, starts, ends)
    full = 1 - (features / np.linalg.norm(features, axis=1, keepdims=True)) @ (
        features / np.linalg.norm(features, axis=1, keepdims=True)).T
    allowed = (cameras[:, None] != cameras[None, :]) & ~((starts[:, None] <= ends[None, :])
                                                          & (starts[None, :] <= ends[:, None]))
    np.testing.assert_allclose(nearest, np.where(allowed, full, np.inf).min(axis=1), atol=1e-6)
    assert association.threshold_from_valley(features, cameras, starts, ends)[0] == pytest.approx(
        _otsu_by_definition(nearest)[0], abs=1e-6)
    # too few tracklets with a cross-camera tracklet they could be: refused, saying what to give instead
    with pytest.raises(ValueError, match="needs at least 4 tracklets .* this footage has 3.*--threshold"):
        association.threshold_from_valley(np.eye(3), [1, 1, 2], [0.0, 10, 20], [5.0, 15, 25])


def test_matching_between_cameras_pairs_identities_one_to_one_under_a_looser_distance():
    """associate(match_cameras=F): after the merge, the identities seen in one camera and not the other
    are matched one to one (least total distance) and merged under F x threshold, never across a
    cannot-link pair, and never an identity already seen in both cameras."""
    cameras = np.array([1, 1, 2, 2, 1, 2, 1, 2, 2])
    starts = np.array([0.0, 10, 20, 30, 40, 41, 60, 70, 80])
    ends = starts + 5
    distances = np.full((9, 9), 0.9)
    np.fill_diagonal(distances, 0.0)
    pairs = {(0, 3): 0.10, (0, 2): 0.15, (1, 3): 0.16,   # greedy would take 0-3 and leave 1 alone
             (4, 5): 0.02,                               # at once in two cameras: two people
             (6, 7): 0.01, (6, 8): 0.12, (7, 8): 0.12}   # 6-7 merge first, so 8 has no one left to match
    for (i, j), d in pairs.items():
        distances[i, j] = distances[j, i] = d
    features = np.eye(9)
    kwargs = dict(threshold=0.05, reranked=distances)
    alone = association.associate(features, cameras, starts, ends, **kwargs).ids
    assert len(set(alone.tolist())) == 8 and alone[6] == alone[7]
    ids = association.associate(features, cameras, starts, ends, match_cameras=4, **kwargs).ids
    assert ids[0] == ids[2] and ids[1] == ids[3]          # the matching of least total distance (0.31)
    assert ids[0] != ids[3] and ids[4] != ids[5] and ids[8] not in (ids[6], ids[0], ids[1])
    assert len(set(ids.tolist())) == 6
    # a gate under the pairs' distances: nothing more merges; and F is a multiple of at least 1
    tight = association.associate(features, cameras, starts, ends, match_cameras=2, **kwargs).ids
    assert len(set(tight.tolist())) == 8
    with pytest.raises(ValueError, match="match_cameras is a multiple of the threshold, at least 1"):
        association.associate(features, cameras, starts, ends, match_cameras=0.5, **kwargs)


def test_centring_by_camera_takes_out_what_a_camera_adds():
    rng = np.random.default_rng(0)
    people = rng.standard_normal((6, 16))
    cast = {1: 3 * rng.standard_normal(16), 2: 3 * rng.standard_normal(16)}  # far larger than the people
    cameras = np.repeat([1, 2], 6)
    features = np.concatenate([people + cast[1], people + cast[2]])
    centred = association.centre_by_camera(features, cameras)
    normalised = features / np.linalg.norm(features, axis=1, keepdims=True)
    np.testing.assert_allclose(centred[:6].mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(centred[:6], normalised[:6] - normalised[:6].mean(0))
    # raw, each person's nearest in the other camera is anyone; centred, it is themselves
    from nvan_tf.evaluation.distance import pairwise_distance

    raw = pairwise_distance(features[:6], features[6:], metric="cosine")
    fixed = pairwise_distance(centred[:6], centred[6:], metric="cosine")
    assert (fixed.argmin(1) == np.arange(6)).all() and not (raw.argmin(1) == np.arange(6)).all()
    single = association.centre_by_camera(features[:7], cameras[:7])  # camera 2 with one tracklet: kept
    np.testing.assert_allclose(single[6], normalised[6])


def test_centres_stop_one_close_pair_from_chaining_two_people():
    # a-b close, b-c close, a-c far: single linkage would chain all three
    angle = np.deg2rad([0, 30, 60])
    features = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    cameras, times = np.array([1, 2, 3]), np.array([0.0, 10.0, 20.0])
    result = association.associate(features, cameras, times, times, threshold=1 - np.cos(np.deg2rad(35)))
    assert len(np.unique(result.ids)) == 2


def test_association_errors_are_named():
    with pytest.raises(ValueError, match="camids needs one value per tracklet"):
        association.associate(np.ones((3, 2)), [1, 2], [0, 0, 0], [1, 1, 1], threshold=0.3)
    with pytest.raises(ValueError, match="ends .* before it starts"):
        association.associate(np.ones((2, 2)), [1, 2], [5, 0], [1, 1], threshold=0.3)
    with pytest.raises(ValueError, match="non-negative distance"):
        association.associate(np.ones((2, 2)), [1, 2], [0, 0], [1, 1], threshold=-1)


@pytest.mark.slow
def test_association_scales_to_ten_thousand_tracklets():
    features, truth, cameras, starts, ends = data_trees.embedding_world(10_000, 2_000, span=36000.0, longest=30.0)
    started = time.perf_counter()
    result = association.associate(features, cameras, starts, ends, threshold=0.35)
    seconds = time.perf_counter() - started
    assert seconds < 30, f"10,000 tracklets took {seconds:.1f} s"
    scores = association_scores(result.ids, truth)
    assert scores["pairwise_precision"] > 0.99 and scores["pairwise_recall"] > 0.9, scores
    assert result.candidates < 10_000 * 20  # sparse: k candidates a tracklet at most


def test_choose_threshold_on_a_labelled_set():
    features, truth, cameras, starts, ends = data_trees.embedding_world(400, 80, seed=1, span=36000.0, longest=30.0)
    threshold, table = association.choose_threshold(features, truth, cameras, starts, ends)
    best = max(row[1]["pairwise_f1"] for row in table)
    assert dict(table)[threshold]["pairwise_f1"] == best > 0.95
    assert threshold == min(t for t, scores in table if scores["pairwise_f1"] == best)  # the lowest as good
    chosen = association.associate(features, cameras, starts, ends, threshold=threshold)
    assert association_scores(chosen.ids, truth)["pairwise_f1"] == pytest.approx(best)


def test_association_scores_by_hand():
    predicted = np.array([1, 1, 1, 2, 3, 3, 9])
    truth = np.array([5, 5, 6, 6, 7, 7, 0])       # the last one is unlabelled
    scores = association_scores(predicted, truth)
    # pairs under one predicted id: (0,1) (0,2) (1,2) (4,5) -> one person: (0,1) (4,5)
    assert scores["pairwise_precision"] == pytest.approx(2 / 4)
    # pairs of one person: (0,1) (2,3) (4,5) -> under one id: (0,1) (4,5)
    assert scores["pairwise_recall"] == pytest.approx(2 / 3)
    assert scores["identities_whole"] == pytest.approx(2 / 3)   # 5 and 7 whole, 6 split
    assert scores["ids_pure"] == pytest.approx(2 / 3)           # ids 2 and 3 pure, 1 mixed


def test_labelled_purity_counts_the_labelled_tracklets():
    from nvan_tf.video.track_metrics import labelled_purity

    labels = [{"track_id": "1", "first_frame": "2", "last_frame": "11", "label": "one"},
              {"track_id": "2", "first_frame": "2", "last_frame": "31", "label": "switch"},
              {"track_id": "3", "first_frame": "5", "last_frame": "14", "label": "one"},
              {"track_id": "4", "first_frame": "9", "last_frame": "18", "label": "drift"}]
    run = [{"track_id": "1", "first_frame": "2", "last_frame": "11"},    # labelled one
           {"track_id": "2", "first_frame": "2", "last_frame": "31"},    # labelled switch
           {"track_id": "3", "first_frame": "5", "last_frame": "15"},    # cut otherwise now: unlabelled
           {"track_id": "4", "first_frame": "9", "last_frame": "18"}]    # labelled drift
    scores = labelled_purity(run, labels)
    assert (scores["labelled"], scores["unlabelled"]) == (3, 1)
    assert (scores["one"], scores["switch"], scores["drift"]) == (1, 1, 1)
    assert scores["purity"] == pytest.approx(1 / 3)
    assert scores["span_purity"] == pytest.approx(10 / (10 + 30 + 10))
    with pytest.raises(ValueError, match="label 'maybe' .* not one of one, switch, drift"):
        labelled_purity(run, [{**labels[0], "label": "maybe"}])


def test_rerank_association_uses_one_scale_for_pairs_and_groups():
    """With rerank=True the threshold is on re-ranked distances everywhere: a
    pair whose re-ranked distance is under it and whose raw distance is over
    it is linked (the raw-metric centre check refused it before), and the
    threshold choose_threshold picks scores in associate as in its table."""
    from nvan_tf.evaluation import distance as distance_lib
    from nvan_tf.video import association

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 16))
    features = np.array([c + 1.3 * rng.normal(size=16) for c in centres for _ in range(2)], np.float32)
    camids = np.tile([1, 2], 6)
    truth = np.repeat(np.arange(1, 7), 2)
    starts = np.arange(12, dtype=float)
    ends = starts + 0.5
    raw = distance_lib.pairwise_distance(features, metric="cosine")
    reranked = association.reranked_distances(features)
    threshold = 0.25
    assert reranked[4, 5] < threshold < raw[4, 5] - 0.3  # the two scales disagree about this pair
    linked = association.associate(features, camids, starts, ends, threshold=threshold, rerank=True)
    assert linked.ids[4] == linked.ids[5]
    plain = association.associate(features, camids, starts, ends, threshold=threshold, rerank=False)
    assert plain.ids[4] != plain.ids[5]  # on the raw scale they are far apart
    chosen, table = association.choose_threshold(features, truth, camids, starts, ends, rerank=True)
    best = dict(table)[chosen]
    again = association.associate(features, camids, starts, ends, threshold=chosen, rerank=True)
    assert association.association_scores(again.ids, truth) == best


def test_the_held_out_benchmark_takes_several_worlds_and_some_rows(tmp_path, capsys):
    """benchmarks.video --seed S S ... --settings N ...: a row number past the table is refused before
    anything runs, the calibration set is asked for only by rows that calibrate, and the per-world
    table's mean is the mean of the worlds' pairwise F1."""
    from nvan_tf.benchmarks import video as bench

    model = tmp_path / "model.keras"
    model.write_bytes(b"")  # only its existence is checked before the refusals
    argv = ["--held-out", "--skip-quality", "--skip-throughput", "--model", str(model), "--untrained", str(model),
            "--out", str(tmp_path / "out"), "--calibrate", str(tmp_path / "none")]
    assert bench.main(argv + ["--settings", str(len(bench.HELD_OUT_SETTINGS))]) == 2
    assert f"rows of HELD_OUT_SETTINGS are 0-{len(bench.HELD_OUT_SETTINGS) - 1}" in capsys.readouterr().err
    assert bench.main(argv + ["--settings", "0"]) == 2  # the first row calibrates
    assert "--calibrate" in capsys.readouterr().err and not os.path.exists(tmp_path / "out")
    assert all("auto_threshold" in options for _, options in bench.HELD_OUT_SETTINGS[4:])  # these need none
    scores = lambda f1: {"trained": {"association": {"pairwise_f1": f1}}}  # noqa: E731
    table = bench.format_seeds({0: {"valley": scores(0.5)}, 7: {"valley": scores(0.8)}}).splitlines()
    assert "seed 0" in table[1] and "seed 7" in table[1] and table[1].split()[-1] == "mean"
    assert table[2].split()[-3:] == ["50.0", "80.0", "65.0"]
