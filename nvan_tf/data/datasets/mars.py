"""MARS (Motion Analysis and Re-identification Set).

Zheng, Bie, Sun, Wang, Su, Wang, Tian, "MARS: A Video Benchmark for
Large-Scale Person Re-identification", ECCV 2016.
http://zheng-lab.cecs.anu.edu.au/Project/project_mars.html

Statistics (official split): 1,261 ids, 6 cameras, 20,478 tracklets,
1,191,003 frames. train: 625 ids, 8,298 tracklets, 509,914 frames;
test: 636 ids (+ distractors ``0``, + junk ``-1``), 12,180 tracklets,
681,089 frames; query: 1,980 tracklets (``query_IDX``).

Protocol (official MARS-evaluation, docs/evaluation.md): the gallery is *all* 12,180
test tracklets, queries included; ``test_set()`` returns them in info order
with ``gallery_index = arange(12180)`` and ``query_index = query_IDX - 1``.
Pid ``-1`` (junk) and ``0`` (distractors) keep their meaning: the metrics
ignore junk and count distractors as negatives. ``camid`` is 1..6 as in the
info files; ``tracklet_id`` is the ``T`` number of the frame names.
"""

from __future__ import annotations

import logging
import os
import re

import numpy as np
import scipy.io

from nvan_tf.data.datasets.base import (
    BadFileNameError,
    DatasetLayoutError,
    VideoDataset,
    require,
    tracklet_or_none,
)

logger = logging.getLogger(__name__)

LAYOUT = """\
  <root>/bbox_train/<pid>/<pid>C<cam>T<tracklet>F<frame>.jpg   e.g. 0001/0001C1T0001F001.jpg
  <root>/bbox_test/<pid>/...                                   (junk folder 00-1, distractors 0000)
  <root>/info/train_name.txt        frame names of bbox_train, sorted by folder then name
  <root>/info/test_name.txt         frame names of bbox_test, same order
  <root>/info/tracks_train_info.mat variable track_train_info: N x 4 (start, end, pid, camid),
  <root>/info/tracks_test_info.mat  variable track_test_info   start/end are 1-based lines of *_name.txt
  <root>/info/query_IDX.mat         variable query_IDX: 1-based rows of track_test_info
(info/ is the info folder of MARS-evaluation; pass info_dir= if it lives elsewhere)"""

NAME = re.compile(r"^(\d{4}|00-1)C(\d+)T(\d+)F(\d+)\.(?:jpg|jpeg|png)$", re.IGNORECASE)


def parse_name(name: str, where: str) -> tuple[int, int, int, int]:
    """``(pid, camid, tracklet, frame)`` of a MARS frame name."""
    match = NAME.match(name)
    if match is None:
        raise BadFileNameError(
            f"Cannot parse the MARS frame name {name!r} ({where}). Expected "
            f"<pid:4>C<cam>T<tracklet>F<frame>.jpg, e.g. 0001C1T0001F001.jpg."
        )
    pid, cam, track, frame = match.groups()
    return (-1 if pid == "00-1" else int(pid)), int(cam), int(track), int(frame)


def load_mat(path: str, variable: str) -> np.ndarray:
    try:
        data = scipy.io.loadmat(path)
    except Exception as err:  # scipy raises several types for bad files
        raise ValueError(f"Cannot read the MATLAB file {path}: {err}") from err
    if variable not in data:
        found = sorted(k for k in data if not k.startswith("__"))
        raise ValueError(
            f"{path} has no variable {variable!r}. Found variables: {found}"
        )
    return np.asarray(data[variable])


class MARS(VideoDataset):
    """MARS reader (layout in ``nvan_tf.data.datasets.mars.LAYOUT``).

    Args:
        root: the folder holding ``bbox_train``, ``bbox_test`` and ``info``.
        info_dir: MARS-evaluation's ``info`` folder; default ``<root>/info``.
        verify_frames: list every ``bbox_*/<pid>`` folder once and drop (with
            a count and a warning) name-file entries whose image is missing.
        verbose: log the statistics table.
    """

    name = "MARS"
    layout = LAYOUT

    def __init__(self, root: str, info_dir: str | None = None, *, verify_frames: bool = True, verbose: bool = True):
        self.root = os.path.abspath(os.path.expanduser(root))
        self.info_dir = os.path.abspath(info_dir) if info_dir else os.path.join(self.root, "info")
        files = {
            "train_dir": os.path.join(self.root, "bbox_train"),
            "test_dir": os.path.join(self.root, "bbox_test"),
            "train_name": os.path.join(self.info_dir, "train_name.txt"),
            "test_name": os.path.join(self.info_dir, "test_name.txt"),
            "train_info": os.path.join(self.info_dir, "tracks_train_info.mat"),
            "test_info": os.path.join(self.info_dir, "tracks_test_info.mat"),
            "query": os.path.join(self.info_dir, "query_IDX.mat"),
        }
        require(files.values(), "MARS", LAYOUT)
        dropped: dict[str, int] = {}

        train_info = self._info(files["train_info"], "track_train_info")
        test_info = self._info(files["test_info"], "track_test_info")
        query_rows = load_mat(files["query"], "query_IDX").reshape(-1).astype(np.int64)
        if query_rows.size and (query_rows.min() < 1 or query_rows.max() > len(test_info)):
            raise ValueError(
                f"{files['query']}: query_IDX must hold 1-based rows of track_test_info "
                f"(1..{len(test_info)}). Received values in "
                f"[{query_rows.min()}, {query_rows.max()}]"
            )

        train, _ = self._tracklets(
            files["train_dir"], files["train_name"], train_info, files["train_info"],
            "train", verify_frames, dropped,
        )
        test, row_to_index = self._tracklets(
            files["test_dir"], files["test_name"], test_info, files["test_info"],
            "test", verify_frames, dropped,
        )
        query_index = np.asarray(
            [row_to_index[r - 1] for r in query_rows if row_to_index[r - 1] >= 0], dtype=np.int64
        )
        lost = len(query_rows) - len(query_index)
        if lost:
            logger.warning("MARS: %d queries point at dropped (empty) test tracklets and are dropped.", lost)
            dropped["queries of dropped tracklets"] = lost
        query = [test[i] for i in query_index]
        super().__init__(
            train, query, test,
            test=(test, query_index, np.arange(len(test))),
            dropped=dropped, verbose=verbose,
        )

    @staticmethod
    def _info(path: str, variable: str) -> np.ndarray:
        info = load_mat(path, variable)
        if info.ndim != 2 or info.shape[1] < 4:
            raise ValueError(
                f"{path}: {variable} must be an N x 4 matrix (start, end, pid, camid). "
                f"Received shape {info.shape}"
            )
        return info[:, :4].astype(np.int64)

    @staticmethod
    def _tracklets(data_dir, name_file, info, info_file, split, verify_frames, dropped):
        with open(name_file, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        parsed = [parse_name(n, f"line {i + 1} of {name_file}") for i, n in enumerate(names)]
        paths = [os.path.join(data_dir, n[:4], n) for n in names]
        exists = None
        if verify_frames:
            listing: dict[str, set] = {}
            for folder in sorted({n[:4] for n in names}):
                path = os.path.join(data_dir, folder)
                listing[folder] = set(os.listdir(path)) if os.path.isdir(path) else set()
            exists = [n in listing[n[:4]] for n in names]
            missing = exists.count(False)
            if missing:
                example = paths[exists.index(False)]
                logger.warning(
                    "MARS %s: %d of %d frames listed in %s are missing on disk "
                    "(e.g. %s); they are dropped from their tracklets.",
                    split, missing, len(names), name_file, example,
                )
                dropped[f"missing {split} frames"] = missing

        tracklets, row_to_index = [], np.full(len(info), -1, dtype=np.int64)
        for row, (start, end, pid, camid) in enumerate(info):
            if start < 1 or end > len(names):
                raise ValueError(
                    f"{info_file}: row {row + 1} spans lines {start}..{end}, outside "
                    f"1..{len(names)} of {name_file} (start/end must be 1-based)."
                )
            lines = range(start - 1, end)
            frames = [paths[i] for i in lines if exists is None or exists[i]]
            if len(lines):
                n_pid, n_cam, track, _ = parsed[start - 1]
                if n_pid != pid or n_cam != camid:
                    raise ValueError(
                        f"{info_file}: row {row + 1} says pid {pid}, camera {camid}, but its "
                        f"first frame {names[start - 1]} (line {start} of {name_file}) "
                        f"says pid {n_pid}, camera {n_cam}. Are the name file and the info "
                        f"file from the same release?"
                    )
            else:
                track = -1
            t = tracklet_or_none(
                frames, pid, camid, track, where=f"(row {row + 1} of {info_file})",
                split=split, dropped=dropped,
            )
            if t is not None:
                row_to_index[row] = len(tracklets)
                tracklets.append(t)
        return tracklets, row_to_index
