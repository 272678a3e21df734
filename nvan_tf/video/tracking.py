"""Single-camera tracking (Roboflow's ``trackers``) and tracks cut into tracklets.

The tracker is a maintained library, not ours: ``trackers`` (Apache-2.0,
pinned in the ``[video]`` extra) implements ByteTrack, SORT, OC-SORT and
BoT-SORT on plain NumPy / SciPy (Kalman filter, Hungarian matching), runs on
a CPU and downloads nothing. Its trackers take one frame's boxes at a time;
:func:`track_boxes` feeds them every frame, empty ones included (so the
lost-track buffer counts real frames), and returns the tracked boxes as
MOTChallenge rows. BoT-SORT runs without camera-motion compensation (it
would need the pixels; the chain tracks from boxes).

:func:`cut_tracklets` turns tracks into re-ID tracklets: a track is split
where it misses more than ``max_gap`` frames, and pieces shorter than
``min_length`` boxes are dropped. :func:`pad_to_aspect` widens or heightens
a box to the 1:2 person aspect (width : height) around its centre, and
:func:`crop` cuts it from a frame, repeating the border where it leaves the
frame, resized to the crop size.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from nvan_tf import choices
from nvan_tf.video.mot import MOTBoxes
from nvan_tf.video.sources import require_video_extra

logger = logging.getLogger(__name__)

__all__ = ["TRACKERS", "PERSON_ASPECT", "CameraTracklet", "make_tracker", "track_boxes", "cut_tracklets",
           "pad_to_aspect", "crop"]

# --tracker: the trackers library's class for each name of nvan_tf.choices.TRACKERS, by name (a
# name of the choice list without a class here fails at import, not by running another tracker).
_TRACKER_CLASSES = {"bytetrack": "ByteTrackTracker", "sort": "SORTTracker", "ocsort": "OCSORTTracker",
                    "botsort": "BoTSORTTracker"}
TRACKERS = {name: _TRACKER_CLASSES[name] for name in choices.TRACKERS}
PERSON_ASPECT = 0.5  # width / height of re-ID crops (MARS: 128 x 256)


def make_tracker(name="bytetrack", *, frame_rate=30.0, lost_track_buffer=30, **options):
    """A tracker of the ``trackers`` library by name (one of ``TRACKERS``).

    ``options`` are the library's own keyword arguments (e.g.
    ``track_activation_threshold``, ``minimum_iou_threshold``,
    ``minimum_consecutive_frames``); ``None`` values keep its defaults.
    """
    if name not in TRACKERS:
        raise ValueError(f"--tracker must be one of {', '.join(TRACKERS)}. Received: {name!r}")
    trackers = require_video_extra("trackers")
    options = {k: v for k, v in options.items() if v is not None}
    if name == "botsort":
        options.setdefault("enable_cmc", False)
    cls = getattr(trackers, TRACKERS[name])
    try:
        return cls(lost_track_buffer=int(lost_track_buffer), frame_rate=float(frame_rate), **options)
    except TypeError as err:
        raise ValueError(f"tracker {name!r} does not take these options: {sorted(options)} ({err})") from err


def track_boxes(detections, num_frames, tracker, *, progress=None):
    """Runs ``tracker`` over ``detections`` (a det :class:`MOTBoxes`), frame 1 to ``num_frames``.

    Returns:
        the tracked boxes as a ``tracks`` :class:`MOTBoxes` (ids from 1;
        boxes the tracker did not confirm are left out).
    """
    sv = require_video_extra("supervision")
    rows = detections.by_frame()
    frames, ids, boxes, scores = [], [], [], []
    for frame in range(1, int(num_frames) + 1):
        index = rows.get(frame, np.zeros(0, np.int64))
        found = sv.Detections(xyxy=detections.xyxy[index].astype(np.float32).reshape(-1, 4),
                              confidence=detections.scores[index].astype(np.float32))
        result = tracker.update(found)
        keep = np.asarray(result.tracker_id) >= 0
        if keep.any():
            xyxy = np.asarray(result.xyxy, np.float64)[keep]
            frames.append(np.full(int(keep.sum()), frame))
            ids.append(np.asarray(result.tracker_id)[keep] + 1)
            boxes.append(np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1))
            scores.append(np.asarray(result.confidence, np.float64)[keep])
        if progress is not None:
            progress(frame)
    if not frames:
        return MOTBoxes.empty()
    return MOTBoxes(np.concatenate(frames), np.concatenate(ids), np.concatenate(boxes), np.concatenate(scores))


@dataclasses.dataclass
class CameraTracklet:
    """A piece of one track, as re-ID sees it: one person, one camera, no long gap.

    Attributes:
        camid: the camera.
        tracklet_id: its number in the camera (1, 2, ... in order of first frame).
        track_id: the tracker's id it was cut from.
        frames: (n,) 1-based frame numbers, increasing.
        boxes: (n, 4) ``(left, top, width, height)``, 0-based pixels, as tracked.
        scores: (n,) detection scores.
    """

    camid: int
    tracklet_id: int
    track_id: int
    frames: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    @property
    def first_frame(self):
        return int(self.frames[0])

    @property
    def last_frame(self):
        return int(self.frames[-1])

    def __len__(self):
        return len(self.frames)


def cut_tracklets(tracks, camid, *, min_length=8, max_gap=10):
    """Cuts a camera's tracks (a tracks :class:`MOTBoxes`) into :class:`CameraTracklet` s.

    Args:
        tracks: the tracker's boxes of camera ``camid``.
        min_length: pieces with fewer boxes are dropped.
        max_gap: a track missing more consecutive frames is split there.
    """
    if int(min_length) != min_length or min_length < 1:
        raise ValueError(f"--min-length must be a positive integer. Received: {min_length!r}")
    if int(max_gap) != max_gap or max_gap < 0:
        raise ValueError(f"--max-gap must be a non-negative integer. Received: {max_gap!r}")
    pieces = []
    for track_id in np.unique(tracks.ids):
        rows = np.flatnonzero(tracks.ids == track_id)
        rows = rows[np.argsort(tracks.frames[rows], kind="stable")]
        frames = tracks.frames[rows]
        rows = rows[np.concatenate([[True], np.diff(frames) > 0])]  # one box per frame
        breaks = np.flatnonzero(np.diff(tracks.frames[rows]) > max_gap + 1) + 1
        for part in np.split(rows, breaks):
            if len(part) >= min_length:
                pieces.append((int(track_id), part))
    pieces.sort(key=lambda p: (tracks.frames[p[1][0]], p[0]))
    return [CameraTracklet(int(camid), number, track_id, tracks.frames[rows].copy(), tracks.boxes[rows].copy(),
                     tracks.scores[rows].copy())
            for number, (track_id, rows) in enumerate(pieces, start=1)]


def pad_to_aspect(boxes, aspect=PERSON_ASPECT):
    """Boxes ``(left, top, width, height)`` grown around their centres to ``width / height = aspect``."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    width = np.maximum(boxes[:, 2], boxes[:, 3] * aspect)
    height = np.maximum(boxes[:, 3], boxes[:, 2] / aspect)
    boxes[:, 0] -= (width - boxes[:, 2]) / 2
    boxes[:, 1] -= (height - boxes[:, 3]) / 2
    boxes[:, 2], boxes[:, 3] = width, height
    return boxes


def crop(image, box, height, width):
    """The ``(height, width, 3)`` crop of ``box`` ``(left, top, width, height)``;
    parts outside the frame repeat its border."""
    cv2 = require_video_extra("cv2")
    h, w = image.shape[:2]
    x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
    x1, y1 = max(int(np.ceil(box[0] + box[2])), x0 + 1), max(int(np.ceil(box[1] + box[3])), y0 + 1)
    cx0, cy0, cx1, cy1 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1), max(min(x1, w), 1), max(min(y1, h), 1)
    cx1, cy1 = max(cx1, cx0 + 1), max(cy1, cy0 + 1)
    patch = image[cy0:cy1, cx0:cx1]
    pads = ((max(cy0 - y0, 0), max(y1 - cy1, 0)), (max(cx0 - x0, 0), max(x1 - cx1, 0)), (0, 0))
    if any(p for pair in pads for p in pair):
        patch = np.pad(patch, pads, mode="edge")
    return cv2.resize(patch, (int(width), int(height)), interpolation=cv2.INTER_AREA)
