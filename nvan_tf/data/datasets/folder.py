"""Users' own data: a generic folder layout or a CSV manifest.

Folder layout (names may carry a letter prefix: ``0007`` or ``id0007``,
``3`` or ``c3``/``cam3``, ``12`` or ``t12``)::

    <root>/train/<pid>/<camera>/<tracklet>/<frames>.jpg|png   (optional: evaluation-only data)
    <root>/query/<pid>/<camera>/<tracklet>/...
    <root>/gallery/<pid>/<camera>/<tracklet>/...

Frames are ordered by file name (zero-pad frame numbers).

CSV manifest (``root`` is the ``.csv`` file, or a folder holding
``manifest.csv``), one row per frame, header required::

    split,pid,camid,tracklet,frame
    train,7,1,1,frames/p7/c1/000.jpg
    ...

``split`` is ``train``, ``query`` or ``gallery``; ``pid``, ``camid`` and
``tracklet`` are integers; ``frame`` is a path, relative to the manifest's
folder unless absolute. The rows of one tracklet (same split, pid, camid,
tracklet) are its frames in temporal order (row order).

Protocol: ``test_set()`` is ``query + gallery`` (a gallery tracklet that is
also a query is kept once). Pid ``-1`` marks junk and ``0`` distractors, as
in MARS.
"""

from __future__ import annotations

import csv
import logging
import os

from nvan_tf.data.datasets.base import (
    BadFileNameError,
    DatasetLayoutError,
    VideoDataset,
    list_images,
    parse_number,
    require,
    tracklet_or_none,
)

logger = logging.getLogger(__name__)

LAYOUT = """\
  <root>/train/<pid>/<camera>/<tracklet>/<frames>.jpg   (train optional)
  <root>/query/<pid>/<camera>/<tracklet>/<frames>.jpg
  <root>/gallery/<pid>/<camera>/<tracklet>/<frames>.jpg
or a CSV manifest (<root>.csv, or <root>/manifest.csv) with header split,pid,camid,tracklet,frame"""

SPLITS = ("train", "query", "gallery")
COLUMNS = ("split", "pid", "camid", "tracklet", "frame")


def _subdirs(path):
    return [n for n in sorted(os.listdir(path)) if os.path.isdir(os.path.join(path, n))]


def read_folder_split(split_dir: str, split: str, dropped: dict) -> list:
    tracklets = []
    for pid_name in _subdirs(split_dir):
        pid_dir = os.path.join(split_dir, pid_name)
        pid = parse_number(pid_name, "person id", pid_dir)
        for cam_name in _subdirs(pid_dir):
            cam_dir = os.path.join(pid_dir, cam_name)
            camid = parse_number(cam_name, "camera", cam_dir)
            for track_name in _subdirs(cam_dir):
                track_dir = os.path.join(cam_dir, track_name)
                track = parse_number(track_name, "tracklet", track_dir)
                frames = [os.path.join(track_dir, n) for n in list_images(track_dir)]
                t = tracklet_or_none(frames, pid, camid, track, where=track_dir, split=split, dropped=dropped)
                if t is not None:
                    tracklets.append(t)
    return tracklets


def read_manifest(path: str, dropped: dict) -> dict[str, list]:
    base = os.path.dirname(os.path.abspath(path))
    groups: dict[tuple, list[str]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise ValueError(
                f"{path}: the manifest header must name the columns {', '.join(COLUMNS)}. "
                f"Missing: {missing}; found: {header}"
            )
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            split = row["split"]
            if split not in SPLITS:
                raise ValueError(f"{path}, line {line}: split must be one of {SPLITS}. Received: {split!r}")
            try:
                key = (split, int(row["pid"]), int(row["camid"]), int(row["tracklet"]))
            except ValueError as err:
                raise BadFileNameError(
                    f"{path}, line {line}: pid, camid and tracklet must be integers. "
                    f"Received: {row['pid']!r}, {row['camid']!r}, {row['tracklet']!r}"
                ) from err
            frame = row["frame"]
            groups.setdefault(key, [])
            if not frame:
                continue
            groups[key].append(frame if os.path.isabs(frame) else os.path.join(base, frame))
    splits: dict[str, list] = {s: [] for s in SPLITS}
    for (split, pid, camid, track), frames in groups.items():
        t = tracklet_or_none(
            frames, pid, camid, track, where=f"(pid {pid}, camera {camid}, tracklet {track} in {path})",
            split=split, dropped=dropped,
        )
        if t is not None:
            splits[split].append(t)
    return splits


class FolderDataset(VideoDataset):
    """Generic folder layout or CSV manifest (see the module docstring).

    Args:
        root: the layout's root folder, a ``.csv`` manifest, or a folder
            holding ``manifest.csv``.
        verbose: log the statistics table.
    """

    name = "folder"
    layout = LAYOUT

    def __init__(self, root: str, *, verbose: bool = True):
        self.root = os.path.abspath(os.path.expanduser(root))
        dropped: dict[str, int] = {}
        manifest = None
        if self.root.lower().endswith(".csv"):
            require([self.root], "folder dataset", LAYOUT)
            manifest = self.root
        elif os.path.isfile(os.path.join(self.root, "manifest.csv")):
            manifest = os.path.join(self.root, "manifest.csv")
        if manifest is not None:
            self.manifest = manifest
            splits = read_manifest(manifest, dropped)
            for name in ("query", "gallery"):
                if not splits[name]:
                    raise DatasetLayoutError(f"{manifest}: no {name} rows. Expected layout:\n{LAYOUT}")
        else:
            self.manifest = None
            require([os.path.join(self.root, s) for s in ("query", "gallery")], "folder dataset", LAYOUT)
            splits = {
                s: read_folder_split(os.path.join(self.root, s), s, dropped)
                if os.path.isdir(os.path.join(self.root, s)) else []
                for s in SPLITS
            }
        if not splits["train"]:
            logger.warning("folder dataset %s: no training tracklets (evaluation only).", self.root)
        super().__init__(splits["train"], splits["query"], splits["gallery"], dropped=dropped, verbose=verbose)
