"""MOTChallenge text files: detections (det.txt), ground truth (gt.txt), tracks.

The official layouts (MOT16 / MOT17 / MOT20, one box per line, commas)::

    det.txt, tracks:  frame, id, bb_left, bb_top, bb_width, bb_height, conf, x, y, z
    gt.txt:           frame, id, bb_left, bb_top, bb_width, bb_height, consider, class, visibility

Frames are numbered from 1 and box corners are 1-based pixels (the image's
top-left pixel is (1, 1)); detections carry ``id = -1``; ``x, y, z`` are
``-1`` in 2D files.

The AI City Challenge multi-camera (MTMC) layout holds every camera in one
file, one box per line, spaces, ids global across cameras::

    camera_id obj_id frame_id xmin ymin width height xworld yworld

with integer pixels, frames from 1, and world coordinates ``-1`` when
unknown (:func:`write_aicity`, :func:`read_aicity`; corners follow the
MOTChallenge files here, the top-left pixel being (1, 1)). In memory (:class:`MOTBoxes`) boxes are 0-based
``(left, top, width, height)`` floats, the convention of NumPy images, so
a box crops ``image[top:top + height, left:left + width]``; the readers and
writers convert. Plain Python + NumPy.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from nvan_tf.core.atomic import write_text

logger = logging.getLogger(__name__)

__all__ = ["MOT_KINDS", "DET_COLUMNS", "GT_COLUMNS", "AICITY_COLUMNS", "MOTBoxes", "MOTFormatError", "read_mot",
           "write_mot", "format_mot", "format_aicity", "write_aicity", "read_aicity"]

DET_COLUMNS = ("frame", "id", "bb_left", "bb_top", "bb_width", "bb_height", "conf", "x", "y", "z")
AICITY_COLUMNS = ("camera_id", "obj_id", "frame_id", "xmin", "ymin", "width", "height", "xworld", "yworld")
GT_COLUMNS = ("frame", "id", "bb_left", "bb_top", "bb_width", "bb_height", "consider", "class", "visibility")
# det: a detector's boxes; tracks: a tracker's output; gt: ground truth.
MOT_KINDS = {"det": DET_COLUMNS, "tracks": DET_COLUMNS, "gt": GT_COLUMNS}
ORIGIN = 1.0  # MOTChallenge pixels are 1-based
PEDESTRIAN = 1


class MOTFormatError(ValueError):
    """A MOTChallenge file does not follow the layout (names the file and line)."""


@dataclasses.dataclass
class MOTBoxes:
    """Boxes of one camera, one row per box.

    Attributes:
        frames: (N,) int64, 1-based frame numbers.
        ids: (N,) int64 track / identity ids (-1 for detections).
        boxes: (N, 4) float64 ``(left, top, width, height)``, 0-based pixels.
        scores: (N,) float64 detection confidence (gt: the consider flag).
        classes: (N,) int64 (gt: the class, 1 = pedestrian; else -1).
        visibility: (N,) float64 (gt: the visible share; else -1).
    """

    frames: np.ndarray
    ids: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray = None
    visibility: np.ndarray = None

    def __post_init__(self):
        n = len(self.frames)
        self.frames = np.asarray(self.frames, np.int64).reshape(n)
        self.ids = np.asarray(self.ids, np.int64).reshape(n)
        self.boxes = np.asarray(self.boxes, np.float64).reshape(n, 4)
        self.scores = np.asarray(self.scores, np.float64).reshape(n)
        self.classes = (np.full(n, -1, np.int64) if self.classes is None
                        else np.asarray(self.classes, np.int64).reshape(n))
        self.visibility = (np.full(n, -1.0) if self.visibility is None
                           else np.asarray(self.visibility, np.float64).reshape(n))

    @classmethod
    def empty(cls):
        return cls(np.zeros(0), np.zeros(0), np.zeros((0, 4)), np.zeros(0))

    @classmethod
    def concatenate(cls, parts):
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)))

    def __len__(self):
        return len(self.frames)

    def select(self, index):
        """The rows ``index`` (a mask or indices), as a new ``MOTBoxes``."""
        return MOTBoxes(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))

    @property
    def xyxy(self):
        """(N, 4) ``(x1, y1, x2, y2)``."""
        return np.concatenate([self.boxes[:, :2], self.boxes[:, :2] + self.boxes[:, 2:]], axis=1)

    def by_frame(self):
        """``{frame: row indices}`` in frame order."""
        order = np.argsort(self.frames, kind="stable")
        frames, starts = np.unique(self.frames[order], return_index=True)
        return dict(zip(frames.tolist(), np.split(order, starts[1:])))

    def sorted(self):
        """Rows ordered by frame, then id."""
        return self.select(np.lexsort((self.ids, self.frames)))


def _parse_rows(path):
    """(N, columns) float64 array of a comma-separated file; errors name the line."""
    rows, width = [], None
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            fields = [v for v in text.replace(" ", "").split(",")]
            try:
                values = [float(v) for v in fields]
            except ValueError as err:
                raise MOTFormatError(f"{path}, line {line_number}: not a row of numbers "
                                     f"separated by commas: {text[:80]!r}") from err
            if width is not None and len(values) != width:
                raise MOTFormatError(f"{path}, line {line_number}: {len(values)} columns, "
                                     f"the lines before have {width}")
            width = len(values)
            rows.append(values)
    return np.asarray(rows, np.float64).reshape(len(rows), width or 0)


def read_mot(path, kind="det"):
    """Reads a MOTChallenge file of ``kind`` (``det``, ``tracks`` or ``gt``).

    Raises:
        FileNotFoundError naming the file; :class:`MOTFormatError` naming
        the file and line for a row that is not numbers, too few columns, a
        frame below 1 or a negative box size.
    """
    if kind not in MOT_KINDS:
        raise ValueError(f"kind must be one of {sorted(MOT_KINDS)}. Received: {kind!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MOTChallenge {kind} file {path} does not exist")
    table = _parse_rows(path)
    if not len(table):
        return MOTBoxes.empty()
    needed = 6 if kind == "gt" else 7
    if table.shape[1] < needed:
        raise MOTFormatError(f"{path}: {table.shape[1]} columns; a MOTChallenge {kind} file has at least "
                             f"{needed} ({', '.join(MOT_KINDS[kind][:needed])})")
    frames = table[:, 0]
    bad = np.flatnonzero((frames < 1) | (frames != np.round(frames)))
    if bad.size:
        raise MOTFormatError(f"{path}, row {bad[0] + 1}: frame {frames[bad[0]]:g}; frames are integers from 1")
    bad = np.flatnonzero((table[:, 4] < 0) | (table[:, 5] < 0))
    if bad.size:
        raise MOTFormatError(f"{path}, row {bad[0] + 1}: negative box size {table[bad[0], 4:6].tolist()}")
    boxes = table[:, 2:6].copy()
    boxes[:, :2] -= ORIGIN
    if kind == "gt":
        column = lambda i, default: table[:, i] if table.shape[1] > i else np.full(len(table), default)  # noqa: E731
        return MOTBoxes(frames, table[:, 1], boxes, column(6, 1.0), column(7, PEDESTRIAN), column(8, 1.0))
    return MOTBoxes(frames, table[:, 1], boxes, table[:, 6])


def format_mot(boxes, kind="det"):
    """The text of a MOTChallenge ``kind`` file for ``boxes`` (frame, then id order)."""
    if kind not in MOT_KINDS:
        raise ValueError(f"kind must be one of {sorted(MOT_KINDS)}. Received: {kind!r}")
    rows = boxes.sorted()
    corners = rows.boxes.copy()
    corners[:, :2] += ORIGIN
    lines = []
    for i in range(len(rows)):
        left, top, width, height = corners[i]
        head = f"{rows.frames[i]},{rows.ids[i]},{left:.2f},{top:.2f},{width:.2f},{height:.2f}"
        if kind == "gt":
            lines.append(f"{head},{int(rows.scores[i])},{rows.classes[i]},{rows.visibility[i]:.4f}")
        else:
            lines.append(f"{head},{rows.scores[i]:.4f},-1,-1,-1")
    return "\n".join(lines) + ("\n" if lines else "")


def write_mot(path, boxes, kind="det"):
    """Writes ``boxes`` as a MOTChallenge ``kind`` file, atomically; returns ``path``."""
    return write_text(path, format_mot(boxes, kind))


def format_aicity(per_camera):
    """The text of an AI City multi-camera file: ``per_camera`` is ``{camera id: MOTBoxes}``
    (ids global across cameras); rows by camera, frame, then id."""
    lines = []
    for camid in sorted(per_camera):
        rows = per_camera[camid].sorted()
        corners = np.round(rows.boxes + np.array([ORIGIN, ORIGIN, 0, 0])).astype(np.int64)
        for frame, identity, (left, top, width, height) in zip(rows.frames.tolist(), rows.ids.tolist(),
                                                               corners.tolist()):
            lines.append(f"{int(camid)} {identity} {frame} {left} {top} {width} {height} -1 -1")
    return "\n".join(lines) + ("\n" if lines else "")


def write_aicity(path, per_camera):
    """Writes an AI City multi-camera file (:func:`format_aicity`) atomically; returns ``path``."""
    return write_text(path, format_aicity(per_camera))


def read_aicity(path):
    """``{camera id: MOTBoxes}`` (ids global, score 1) of an AI City multi-camera file.

    Raises:
        FileNotFoundError naming the file; :class:`MOTFormatError` naming the
        file and line for a line that is not nine numbers, a camera id or
        frame below 1, or a negative box size.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"AI City multi-camera file {path} does not exist")
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            try:
                values = [float(v) for v in fields]
            except ValueError:
                values = []
            if len(values) != len(AICITY_COLUMNS):
                raise MOTFormatError(f"{path}, line {line_number}: expected {len(AICITY_COLUMNS)} numbers "
                                     f"separated by spaces ({' '.join(AICITY_COLUMNS)}): {line.strip()[:80]!r}")
            if values[0] < 1 or values[2] < 1 or values[5] < 0 or values[6] < 0:
                raise MOTFormatError(f"{path}, line {line_number}: camera and frame start at 1 and box sizes "
                                     f"are not negative: {line.strip()[:80]!r}")
            rows.append(values)
    table = np.asarray(rows, np.float64).reshape(len(rows), len(AICITY_COLUMNS))
    result = {}
    for camid in np.unique(table[:, 0]).astype(np.int64).tolist():
        part = table[table[:, 0] == camid]
        boxes = part[:, 3:7].copy()
        boxes[:, :2] -= ORIGIN
        result[camid] = MOTBoxes(part[:, 2], part[:, 1], boxes, np.ones(len(part)))
    return result
