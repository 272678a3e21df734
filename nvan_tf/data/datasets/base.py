"""Tracklet records and the dataset base class (plain Python + NumPy).

A dataset reader turns a dataset on disk into three lists of
:class:`Tracklet`: ``train``, ``query`` and ``gallery``, plus the test set the
evaluation protocol ranks (:meth:`VideoDataset.test_set`).

Conventions shared by every reader:

* ``Tracklet.frames`` are absolute paths in temporal order.
* ``train`` pids are relabelled ``sorted(set(train pids)) -> 0 .. N-1``
  (the original ids stay in ``VideoDataset.train_pid_map``); query and
  gallery keep the dataset's own ids, including MARS' ``-1`` (junk) and
  ``0`` (distractor).
* ``camid`` and ``tracklet_id`` are the dataset's own numbers (see each
  reader's docstring); ``tracklet_id`` is always an ``int``.
* Missing files raise :class:`DatasetLayoutError` naming the expected path
  and layout; unparseable names raise :class:`BadFileNameError` naming the
  file; empty tracklets are dropped with a warning and counted in
  ``VideoDataset.dropped``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterable, Sequence

import numpy as np

logger = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")

__all__ = [
    "BadFileNameError",
    "DatasetLayoutError",
    "IMG_EXTENSIONS",
    "Tracklet",
    "VideoDataset",
    "is_image_file",
    "list_images",
    "parse_number",
    "relabel",
]


class DatasetLayoutError(FileNotFoundError):
    """A file or folder the dataset layout requires is missing."""


class BadFileNameError(ValueError):
    """A file or folder name does not follow the dataset's naming scheme."""


@dataclasses.dataclass(frozen=True)
class Tracklet:
    """One tracklet: a person seen by one camera over consecutive frames.

    Attributes:
        frames: absolute frame paths, in temporal order (never empty).
        pid: person id (relabelled 0..N-1 in a dataset's ``train`` split).
        camid: camera id, as the dataset numbers it.
        tracklet_id: the dataset's tracklet number (an ``int``; unique only
            together with pid and camid in most datasets).
    """

    frames: tuple[str, ...]
    pid: int
    camid: int
    tracklet_id: int

    def __post_init__(self):
        if not isinstance(self.frames, tuple):
            object.__setattr__(self, "frames", tuple(self.frames))
        if not self.frames:
            raise ValueError(
                f"A Tracklet needs at least one frame. Received: pid={self.pid}, "
                f"camid={self.camid}, tracklet_id={self.tracklet_id} with no frames"
            )

    @property
    def num_frames(self) -> int:
        return len(self.frames)


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def list_images(folder: str) -> list[str]:
    """Sorted image file names (not paths) in ``folder``."""
    return sorted(n for n in os.listdir(folder) if is_image_file(n))


_NUMBER = re.compile(r"^[A-Za-z_]*?(-?\d+)$")


def parse_number(name: str, what: str, path: str) -> int:
    """Integer in a folder name such as ``0007``, ``c3``, ``cam3``, ``t12``.

    Raises :class:`BadFileNameError` naming ``path`` when there is none.
    """
    match = _NUMBER.match(name)
    if match is None:
        raise BadFileNameError(
            f"Cannot read a {what} number from the name {name!r} of {path}. "
            f"Expected digits with an optional letter prefix (e.g. 0007, c3, t12)."
        )
    return int(match.group(1))


def relabel(tracklets: Sequence[Tracklet]) -> tuple[list[Tracklet], dict[int, int]]:
    """Relabel pids ``sorted(set(pids)) -> 0..N-1``; returns (tracklets, map)."""
    mapping = {pid: label for label, pid in enumerate(sorted({t.pid for t in tracklets}))}
    return [dataclasses.replace(t, pid=mapping[t.pid]) for t in tracklets], mapping


def track_list_identity(tracklets: Sequence[Tracklet]) -> dict[str, object]:
    """``{"tracklets", "identities", "frames", "digest"}`` of a track list: the
    SHA-256 of every tracklet's pid, camera, tracklet id and frame file names,
    in order. A dataset that gained, lost or reordered tracklets or frames
    gets another digest (frame contents are not read)."""
    import hashlib

    digest = hashlib.sha256()
    for t in tracklets:
        digest.update(f"{t.pid}\t{t.camid}\t{t.tracklet_id}\t".encode())
        digest.update("\t".join(os.path.basename(f) for f in t.frames).encode() + b"\n")
    return {"tracklets": len(tracklets), "identities": len({t.pid for t in tracklets}),
            "frames": sum(t.num_frames for t in tracklets), "digest": digest.hexdigest()}


def require(paths: Iterable[str], dataset: str, layout: str) -> None:
    """Raise :class:`DatasetLayoutError` for the first missing path."""
    for path in paths:
        if not os.path.exists(path):
            raise DatasetLayoutError(
                f"{dataset}: expected {path}, which does not exist. "
                f"Expected layout:\n{layout}"
            )


def split_statistics(tracklets: Sequence[Tracklet]) -> dict[str, int]:
    return {
        "ids": len({t.pid for t in tracklets}),
        "tracklets": len(tracklets),
        "frames": sum(t.num_frames for t in tracklets),
        "cameras": len({t.camid for t in tracklets}),
    }


class VideoDataset:
    """Base class: ``train``, ``query``, ``gallery`` lists of :class:`Tracklet`.

    Subclasses parse their layout and call ``super().__init__`` with the
    three splits (``train`` with the original pids; it is relabelled here).
    A subclass whose protocol ranks a test set that is not simply
    ``query + gallery`` (MARS) passes ``test=(tracklets, query_index,
    gallery_index)``.
    """

    name = "video"
    layout = ""

    def __init__(
        self,
        train: Sequence[Tracklet],
        query: Sequence[Tracklet],
        gallery: Sequence[Tracklet],
        *,
        test: tuple[Sequence[Tracklet], np.ndarray, np.ndarray] | None = None,
        dropped: dict[str, int] | None = None,
        verbose: bool = True,
    ):
        self.train, self.train_pid_map = relabel(train)
        self.query = list(query)
        self.gallery = list(gallery)
        self.dropped = dict(dropped or {})
        if test is None:
            test = self._query_plus_gallery()
        tracklets, query_index, gallery_index = test
        self._test = (
            list(tracklets),
            np.asarray(query_index, dtype=np.int64),
            np.asarray(gallery_index, dtype=np.int64),
        )
        if verbose:
            self.print_statistics()

    # -- evaluation protocol -------------------------------------------------

    def _query_plus_gallery(self):
        """``tracklets = query + gallery``; a gallery tracklet that is also a
        query (same pid, camid, tracklet id and frame file names) is kept once
        and pointed at by both index arrays."""
        tracklets = list(self.query)

        def key(t):
            return (t.pid, t.camid, t.tracklet_id, tuple(os.path.basename(f) for f in t.frames))

        position = {key(t): i for i, t in enumerate(self.query)}
        gallery_index = []
        for t in self.gallery:
            i = position.get(key(t))
            if i is None:
                i = len(tracklets)
                tracklets.append(t)
            gallery_index.append(i)
        return tracklets, np.arange(len(self.query)), np.asarray(gallery_index)

    def test_set(self) -> tuple[list[Tracklet], np.ndarray, np.ndarray]:
        """``(tracklets, query_index, gallery_index)`` the protocol ranks.

        ``tracklets`` holds each test tracklet once; the int64 index arrays
        point into it (a query may also be in the gallery, as in MARS).
        """
        tracklets, q, g = self._test
        return list(tracklets), q.copy(), g.copy()

    @property
    def num_train_ids(self) -> int:
        return len(self.train_pid_map)

    # -- statistics ----------------------------------------------------------

    def statistics(self) -> dict[str, dict[str, int]]:
        """Per split: ids, tracklets, frames, cameras."""
        return {
            "train": split_statistics(self.train),
            "query": split_statistics(self.query),
            "gallery": split_statistics(self.gallery),
        }

    def format_statistics(self) -> str:
        stats = self.statistics()
        header = f"  {'subset':<8} | {'# ids':>6} | {'# tracklets':>11} | {'# frames':>9} | {'# cameras':>9}"
        rule = "  " + "-" * (len(header) - 2)
        lines = [f"=> {self.name} loaded", "Dataset statistics:", rule, header, rule]
        for split, s in stats.items():
            lines.append(
                f"  {split:<8} | {s['ids']:>6} | {s['tracklets']:>11} | "
                f"{s['frames']:>9} | {s['cameras']:>9}"
            )
        lines.append(rule)
        if any(self.dropped.values()):
            dropped = ", ".join(f"{k}: {v}" for k, v in self.dropped.items() if v)
            lines.append(f"  dropped: {dropped}")
        return "\n".join(lines)

    def print_statistics(self) -> str:
        """Log the statistics table (torchreid style) and return it."""
        table = self.format_statistics()
        logger.info("\n%s", table)
        return table

    def __repr__(self):
        s = self.statistics()
        return (
            f"{type(self).__name__}(train={s['train']['tracklets']} tracklets/"
            f"{s['train']['ids']} ids, query={s['query']['tracklets']}, "
            f"gallery={s['gallery']['tracklets']})"
        )


def tracklet_or_none(
    frames: Sequence[str],
    pid: int,
    camid: int,
    tracklet_id: int,
    *,
    where: str,
    split: str,
    dropped: dict[str, int],
) -> Tracklet | None:
    """A :class:`Tracklet`, or ``None`` (with a warning and a count in
    ``dropped['empty <split> tracklets']``) when ``frames`` is empty."""
    if not frames:
        logger.warning("Dropping empty %s tracklet %s: it has no image frames.", split, where)
        key = f"empty {split} tracklets"
        dropped[key] = dropped.get(key, 0) + 1
        return None
    return Tracklet(tuple(frames), int(pid), int(camid), int(tracklet_id))


# -- two-camera datasets with random splits (iLIDS-VID, PRID-2011) -----------


def read_person_folders(cam_dir: str, pattern: str) -> dict[str, list[str]]:
    """``{person folder name: sorted frame paths}`` for folders matching
    ``pattern`` (a regex) in ``cam_dir``; other entries are ignored."""
    regex = re.compile(pattern)
    persons = {}
    for name in sorted(os.listdir(cam_dir)):
        path = os.path.join(cam_dir, name)
        if os.path.isdir(path) and regex.match(name):
            persons[name] = [os.path.join(path, n) for n in list_images(path)]
    return persons


def make_random_splits(persons: Sequence[str], num_splits: int, num_train: int, seed: int) -> list[dict]:
    """``num_splits`` random train/test splits of ``persons`` (sorted lists)."""
    rng = np.random.default_rng(seed)
    persons = sorted(persons)
    splits = []
    for _ in range(num_splits):
        order = rng.permutation(len(persons))
        splits.append({
            "train": sorted(persons[i] for i in order[:num_train]),
            "test": sorted(persons[i] for i in order[num_train:]),
        })
    return splits


def load_json_splits(path: str) -> list[dict]:
    import json

    with open(path, encoding="utf-8") as f:
        splits = json.load(f)
    if not isinstance(splits, list) or not all(
        isinstance(s, dict) and "train" in s and "test" in s for s in splits
    ):
        raise ValueError(
            f"{path}: a split file must be a JSON list of {{'train': [...], 'test': [...]}} "
            f"objects with person folder names."
        )
    return splits


def cache_dir() -> str:
    """Where nvan-tf records what it generates: ``$NVAN_TF_CACHE``, else
    ``$XDG_CACHE_HOME/nvan_tf``, else ``~/.cache/nvan_tf``."""
    if os.environ.get("NVAN_TF_CACHE"):
        return os.path.abspath(os.path.expanduser(os.environ["NVAN_TF_CACHE"]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(base), "nvan_tf")


def splits_cache_path(dataset: str, root: str, persons: Sequence[str], seed: int) -> str:
    """``cache_dir()/splits/<dataset>-<digest>.json``: the record of the random
    splits generated for these persons of the dataset at ``root`` with
    ``seed`` (the digest covers all four, so a record is never reused for
    other persons or another seed)."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps([os.path.abspath(root), int(seed), sorted(persons)]).encode())
    slug = re.sub(r"[^a-z0-9]+", "", dataset.lower())
    return os.path.join(cache_dir(), "splits", f"{slug}-{digest.hexdigest()[:16]}.json")


class TwoCameraDataset(VideoDataset):
    """Base of iLIDS-VID and PRID-2011: one tracklet per person and camera,
    train/test persons from split ``split_id``; query = camera 1 tracklets of
    the test persons, gallery = their camera 2 tracklets (``camid`` 1 and 2,
    ``tracklet_id`` 0, ``pid`` the number in the person folder name).

    Where no split file is published, random splits are generated once and
    recorded, atomically, at the reader's ``split_file`` when it names a file
    that does not exist yet, else under :func:`cache_dir` (never in the
    dataset folder, which may be read-only); later readings reuse the record.
    """

    def _read_cameras(self, root: str, top: str, middle: str, cameras: Sequence[str], person: str):
        """Sets ``self.root``; returns (dataset folder, camera folders, the
        frames of each person folder per camera). ``root`` is the folder
        holding ``top`` or ``top`` itself; cameras are
        ``<top>/<middle>/<camera>/<person folder>``."""
        self.root = os.path.abspath(os.path.expanduser(root))
        base = os.path.join(self.root, top)
        if not os.path.isdir(os.path.join(base, middle)) and os.path.isdir(os.path.join(self.root, middle)):
            base = self.root
        cam_dirs = [os.path.join(base, middle, c) for c in cameras]
        require(cam_dirs, self.name, self.layout)
        return base, cam_dirs, [read_person_folders(d, person) for d in cam_dirs]

    def _generated_splits(self, persons: Sequence[str], seed: int, split_file: str | None) -> list[dict]:
        """``num_splits`` random half / half splits of ``persons``: read from
        their record, else generated and recorded; sets ``self.split_file``."""
        from nvan_tf.core.atomic import write_json

        path = split_file or splits_cache_path(self.name, self.root, persons, seed)
        if os.path.exists(path):
            self.split_file = path
            return load_json_splits(path)
        logger.warning(
            "%s: no split file under %s; generating %d random splits of %d persons with seed %d.",
            self.name, self.root, self.num_splits, len(persons), seed,
        )
        splits = make_random_splits(persons, self.num_splits, len(persons) // 2, seed)
        try:
            write_json(path, splits, indent=1)
        except OSError as err:
            logger.warning("Could not record the generated splits in %s (%s); they are kept in "
                           "memory only.", path, err)
            self.split_file = None
            return splits
        logger.info("Recorded %d generated splits in %s", len(splits), path)
        self.split_file = path
        return splits

    def _build(self, cams: Sequence[dict[str, list[str]]], cam_dirs: Sequence[str], splits: list[dict], split_id: int, verbose: bool):
        if not 0 <= split_id < len(splits):
            raise ValueError(f"{self.name}: split_id must be in 0..{len(splits) - 1}. Received: split_id={split_id}")
        self.splits = splits
        self.split_id = split_id
        split = splits[split_id]
        overlap = set(split["train"]) & set(split["test"])
        if overlap:
            raise ValueError(f"{self.name}: split {split_id} has persons in both train and test: {sorted(overlap)[:5]}")
        dropped: dict[str, int] = {}
        train, query, gallery = [], [], []
        for subset, persons in (("train", split["train"]), ("test", split["test"])):
            for person in persons:
                for camid, (frames_of, cam_dir) in enumerate(zip(cams, cam_dirs), start=1):
                    if person not in frames_of:
                        raise DatasetLayoutError(
                            f"{self.name}: split {split_id} names person {person!r}, but "
                            f"{os.path.join(cam_dir, person)} does not exist. Expected layout:\n{self.layout}"
                        )
                    pid = parse_number(person, "person id", os.path.join(cam_dir, person))
                    t = tracklet_or_none(
                        frames_of[person], pid, camid, 0, where=os.path.join(cam_dir, person),
                        split=subset, dropped=dropped,
                    )
                    if t is None:
                        continue
                    if subset == "train":
                        train.append(t)
                    else:
                        (query if camid == 1 else gallery).append(t)
        VideoDataset.__init__(self, train, query, gallery, dropped=dropped, verbose=verbose)
