"""Small dataset trees in the official layouts, for tests (import freely).

Every writer takes a root folder and a compact description of the
tracklets, writes tiny images (``SIZE`` = 16 x 8 by default) and returns
the root. Frame pixel colours encode (pid, camera, frame) loosely so that
frames differ; nothing depends on their content.
"""

from __future__ import annotations

import csv
import os

import numpy as np
import scipy.io
from PIL import Image

SIZE = (16, 8)  # height, width


def write_image(path: str, seed: int = 0, size=SIZE, fmt: str | None = None) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def mars_folder(pid: int) -> str:
    return "00-1" if pid == -1 else f"{pid:04d}"


def write_mars_tree(root, train, test, query_rows, size=SIZE):
    """MARS layout with MARS-evaluation info files.

    ``train``/``test``: lists of ``(pid, cam, tracklet, num_frames)``; info
    rows follow the list order (the name files are sorted, as the official
    ones are). ``query_rows``: 0-based rows of ``test`` (written 1-based).
    Returns the root.
    """
    info_dir = os.path.join(root, "info")
    os.makedirs(info_dir, exist_ok=True)
    for split, tracks in (("train", train), ("test", test)):
        names_of = []
        for pid, cam, track, n in tracks:
            folder = os.path.join(root, f"bbox_{split}", mars_folder(pid))
            os.makedirs(folder, exist_ok=True)
            names = [f"{mars_folder(pid)}C{cam}T{track:04d}F{f + 1:03d}.jpg" for f in range(n)]
            for i, name in enumerate(names):
                write_image(os.path.join(folder, name), seed=hash((pid, cam, track, i)) % 2**32, size=size)
            names_of.append(names)
        lines = sorted(n for names in names_of for n in names)
        line_of = {n: i + 1 for i, n in enumerate(lines)}
        info = []
        for (pid, cam, _, n), names in zip(tracks, names_of):
            if n:
                info.append([line_of[names[0]], line_of[names[-1]], pid, cam])
            else:
                info.append([1, 0, pid, cam])  # an empty row: end < start
        with open(os.path.join(info_dir, f"{split}_name.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
        scipy.io.savemat(
            os.path.join(info_dir, f"tracks_{split}_info.mat"),
            {f"track_{split}_info": np.asarray(info, dtype=np.float64).reshape(-1, 4)},
        )
    scipy.io.savemat(
        os.path.join(info_dir, "query_IDX.mat"),
        {"query_IDX": (np.asarray(query_rows, dtype=np.float64) + 1).reshape(1, -1)},
    )
    return str(root)


def write_dukev_tree(root, splits, size=SIZE, old_names=False):
    """DukeMTMC-VideoReID layout. ``splits``: ``{"train"|"query"|"gallery":
    [(pid, tracklet, cam, num_frames), ...]}``."""
    for split in ("train", "query", "gallery"):
        os.makedirs(os.path.join(root, split), exist_ok=True)
        for pid, track, cam, n in splits.get(split, []):
            folder = os.path.join(root, split, f"{pid:04d}", f"{track:04d}")
            os.makedirs(folder, exist_ok=True)
            for f in range(n):
                sep = "" if old_names else "_"
                name = f"{pid:04d}{sep}C{cam}{sep}F{f + 1:04d}{sep}X{track * 1000 + f:05d}.jpg"
                write_image(os.path.join(folder, name), seed=pid * 7 + f, size=size)
    return str(root)


def write_ilidsvid_tree(root, persons, frames=4, size=SIZE, ls_set=None):
    """iLIDS-VID layout, ``persons``: person numbers (folders personNNN in
    both cameras, ``frames`` PNGs each). ``ls_set``: optional 2-D array
    written as the official split .mat file."""
    for cam in ("cam1", "cam2"):
        for p in persons:
            for f in range(frames):
                write_image(os.path.join(root, "i-LIDS-VID", "sequences", cam, f"person{p:03d}",
                                         f"{cam}_person{p:03d}_{f:05d}.png"), seed=p + f, size=size)
    if ls_set is not None:
        folder = os.path.join(root, "train-test people splits")
        os.makedirs(folder, exist_ok=True)
        scipy.io.savemat(os.path.join(folder, "train_test_splits_ilidsvid.mat"),
                         {"ls_set": np.asarray(ls_set, dtype=np.float64)})
    return str(root)


def write_prid_tree(root, cam_a, cam_b, size=SIZE):
    """PRID-2011 multi-shot layout; ``cam_a``/``cam_b``: ``{person number: num_frames}``."""
    for cam, persons in (("cam_a", cam_a), ("cam_b", cam_b)):
        os.makedirs(os.path.join(root, "prid_2011", "multi_shot", cam), exist_ok=True)
        for p, n in persons.items():
            for f in range(n):
                write_image(os.path.join(root, "prid_2011", "multi_shot", cam, f"person_{p:04d}",
                                         f"{f + 1:04d}.png"), seed=p + f, size=size)
    return str(root)


def write_folder_tree(root, splits, size=SIZE):
    """Generic layout ``<split>/<pid>/c<cam>/t<tracklet>/<frame>.jpg``;
    ``splits``: ``{split: [(pid, cam, tracklet, num_frames)]}``."""
    for split, tracks in splits.items():
        for pid, cam, track, n in tracks:
            folder = os.path.join(root, split, f"{pid:04d}", f"c{cam}", f"t{track}")
            os.makedirs(folder, exist_ok=True)
            for f in range(n):
                write_image(os.path.join(folder, f"{f:04d}.jpg"), seed=pid + f, size=size)
    return str(root)


def write_manifest(root, splits, size=SIZE, name="manifest.csv"):
    """CSV manifest plus its frames (``frames/...`` relative paths); returns
    the manifest path. Frames are listed in reverse file-name order, so a
    reader that sorted them instead of keeping row order would be caught."""
    path = os.path.join(root, name)
    os.makedirs(root, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["split", "pid", "camid", "tracklet", "frame"])
        for split, tracks in splits.items():
            for pid, cam, track, n in tracks:
                rel = [os.path.join("frames", split, f"{pid}_{cam}_{track}_{i:03d}.jpg") for i in range(n)]
                for r in reversed(rel):
                    write_image(os.path.join(root, r), seed=pid + len(r), size=size)
                    writer.writerow([split, pid, cam, track, r])
    return path


def embedding_world(n, num_ids, *, dim=64, seed=0, span=3600.0, longest=60.0):
    """``n`` tracklet embeddings of ``num_ids`` people (their centres plus
    noise) in 6 cameras over ``span`` seconds, each 1 to ``longest`` s long;
    the cameras do not overlap: one person's tracklets follow one another.

    Returns:
        (features (n, dim) float32, truth, cameras, starts, ends).
    """
    rng = np.random.default_rng(seed)
    truth = rng.integers(1, num_ids + 1, n)
    centres = rng.standard_normal((num_ids + 1, dim)).astype(np.float32)
    features = centres[truth] + 0.45 * rng.standard_normal((n, dim)).astype(np.float32)
    cameras = rng.integers(1, 7, n)
    starts = rng.uniform(0, span, n)
    ends = starts + rng.uniform(1, longest, n)
    for pid in np.unique(truth):
        mine = np.flatnonzero(truth == pid)[np.argsort(starts[truth == pid])]
        for before, after in zip(mine, mine[1:]):
            shift = max(ends[before] + 1 - starts[after], 0)
            starts[after] += shift
            ends[after] += shift
    return features, truth, cameras, starts, ends
