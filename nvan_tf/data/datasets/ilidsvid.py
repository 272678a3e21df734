"""iLIDS-VID.

Wang, Gong, Zhu, Wang, "Person Re-Identification by Video Ranking",
ECCV 2014. https://xiaobaiwang.github.io/ (i-LIDS-VID.tar)

Statistics: 300 ids, 2 cameras, 600 tracklets (one per person and camera),
23 to 192 frames each (~73 on average), 42,495 frames. Ten random
150 / 150 train / test splits; evaluation ranks camera 1 (query) against
camera 2 (gallery) by CMC.

Splits: the official ``train_test_splits_ilidsvid.mat`` (variable ``ls_set``,
10 x 300 rows of 1-based positions in the sorted person folder list; the
first 150 of a row are the test persons, the last 150 the training persons,
as in Wang et al. and torchreid). When it is absent, a JSON split file
``splits_ilidsvid.json`` in the root (list of ``{"train": [...], "test":
[...]}`` person folder names) is read, and when that is absent too, ten
random 150/150 splits are generated from ``seed`` and recorded (in the
same JSON format) at ``split_file`` if given, else in the cache folder
(``$NVAN_TF_CACHE/splits/ilidsvid-<digest>.json``, see
``base.splits_cache_path``): the dataset folder is only read.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from nvan_tf.data.datasets.base import (
    TwoCameraDataset,
    load_json_splits,
    require,
)
from nvan_tf.data.datasets.mars import load_mat

logger = logging.getLogger(__name__)

LAYOUT = """\
  <root>/i-LIDS-VID/sequences/cam1/person001/*.png   (or <root> = the i-LIDS-VID folder itself)
  <root>/i-LIDS-VID/sequences/cam2/person001/*.png
  optional: <root>/train-test people splits/train_test_splits_ilidsvid.mat (variable ls_set, 10 x 300)
            (also looked for under <root>/i-LIDS-VID/), or <root>/splits_ilidsvid.json
  generated splits are recorded outside the dataset (split_file=, or $NVAN_TF_CACHE/splits/)"""

MAT_NAME = "train_test_splits_ilidsvid.mat"
JSON_NAME = "splits_ilidsvid.json"
PERSON = r"^person\d+$"


class ILIDSVID(TwoCameraDataset):
    """iLIDS-VID reader (layout in ``nvan_tf.data.datasets.ilidsvid.LAYOUT``).

    Args:
        root: the folder holding ``i-LIDS-VID`` (or that folder itself).
        split_id: which of the splits to use (0..9).
        split_file: an explicit ``.mat`` (``ls_set``) or ``.json`` split file;
            a ``.json`` path that does not exist yet is where the generated
            splits are recorded.
        seed: seed of the generated splits when no split file exists.
        verbose: log the statistics table.
    """

    name = "iLIDS-VID"
    layout = LAYOUT
    num_splits = 10

    def __init__(self, root: str, split_id: int = 0, *, split_file: str | None = None, seed: int = 0, verbose: bool = True):
        base, cam_dirs, cams = self._read_cameras(root, "i-LIDS-VID", "sequences", ("cam1", "cam2"), PERSON)
        persons = sorted(set(cams[0]) & set(cams[1]))
        only = sorted(set(cams[0]) ^ set(cams[1]))
        if only:
            logger.warning("iLIDS-VID: %d person folders are in one camera only and are not used (e.g. %s).", len(only), only[0])
        splits = self._splits(base, persons, split_file, seed)
        self._build(cams, cam_dirs, splits, split_id, verbose)

    def _splits(self, base, persons, split_file, seed):
        if split_file is not None:
            if os.path.exists(split_file):
                return self._read_split_file(split_file, persons)
            if not split_file.endswith(".json"):
                require([split_file], self.name, LAYOUT)  # a missing .mat cannot be generated
            return self._generated_splits(persons, seed, split_file)
        for candidate in (
            os.path.join(self.root, "train-test people splits", MAT_NAME),
            os.path.join(base, "train-test people splits", MAT_NAME),
            os.path.join(self.root, MAT_NAME),
            os.path.join(self.root, JSON_NAME),
        ):
            if os.path.exists(candidate):
                return self._read_split_file(candidate, persons)
        return self._generated_splits(persons, seed, None)

    def _read_split_file(self, path, persons):
        self.split_file = path
        if path.endswith(".json"):
            return load_json_splits(path)
        ls_set = load_mat(path, "ls_set").astype(np.int64)
        if ls_set.ndim != 2 or ls_set.min() < 1 or ls_set.max() > len(persons):
            raise ValueError(
                f"{path}: ls_set must be a 2-D matrix of 1-based positions in the sorted "
                f"list of {len(persons)} person folders. Received shape {ls_set.shape}, "
                f"values {ls_set.min()}..{ls_set.max()}"
            )
        half = ls_set.shape[1] // 2
        return [
            {"train": sorted(persons[i - 1] for i in row[half:]), "test": sorted(persons[i - 1] for i in row[:half])}
            for row in ls_set
        ]
