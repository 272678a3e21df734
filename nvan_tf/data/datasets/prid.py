"""PRID-2011 (multi-shot).

Hirzer, Beleznai, Roth, Bischof, "Person Re-Identification by Descriptive
and Discriminative Classification", SCIA 2011.
https://www.tugraz.at/institute/icg/research/team-bischof/lrs/downloads/prid11

Statistics: 385 persons in camera A, 749 in camera B, the first 200 in
both; 5 to 675 frames per tracklet. The standard protocol (Wang et al.,
ECCV 2014) keeps the 178 persons with more than 21 frames in both cameras
(ids among the first 200), ten random 89 / 89 train / test splits, camera A
(query) ranked against camera B (gallery) by CMC.

Splits: a JSON file ``splits_prid2011.json`` in the root (torchreid's
format: a list of ``{"train": [...], "test": [...]}`` person folder names).
When absent, ten random splits of the eligible persons are generated from
``seed`` and recorded (in the same format) at ``split_file`` if given, else
in the cache folder (``$NVAN_TF_CACHE/splits/prid2011-<digest>.json``, see
``base.splits_cache_path``): the dataset folder is only read.
"""

from __future__ import annotations

import logging
import os

from nvan_tf.data.datasets.base import (
    TwoCameraDataset,
    load_json_splits,
)

logger = logging.getLogger(__name__)

LAYOUT = """\
  <root>/prid_2011/multi_shot/cam_a/person_0001/*.png   (or <root> = the prid_2011 folder itself)
  <root>/prid_2011/multi_shot/cam_b/person_0001/*.png
  optional: <root>/splits_prid2011.json
  generated splits are recorded outside the dataset (split_file=, or $NVAN_TF_CACHE/splits/)"""

JSON_NAME = "splits_prid2011.json"
PERSON = r"^person_\d+$"


class PRID2011(TwoCameraDataset):
    """PRID-2011 reader (layout in ``nvan_tf.data.datasets.prid.LAYOUT``).

    Args:
        root: the folder holding ``prid_2011`` (or that folder itself).
        split_id: which of the splits to use (0..9).
        split_file: an explicit JSON split file; one that does not exist
            yet is where the generated splits are recorded.
        seed: seed of the generated splits when no split file exists.
        min_frames: generated splits keep persons with more than this many
            frames in both cameras (21, the standard protocol).
        max_person: generated splits keep persons numbered up to this (200:
            the persons seen by both cameras).
        verbose: log the statistics table.
    """

    name = "PRID-2011"
    layout = LAYOUT
    num_splits = 10

    def __init__(self, root: str, split_id: int = 0, *, split_file: str | None = None, seed: int = 0,
                 min_frames: int = 21, max_person: int = 200, verbose: bool = True):
        _, cam_dirs, cams = self._read_cameras(root, "prid_2011", "multi_shot", ("cam_a", "cam_b"), PERSON)
        if split_file is None and os.path.exists(os.path.join(self.root, JSON_NAME)):
            split_file = os.path.join(self.root, JSON_NAME)
        if split_file is not None and os.path.exists(split_file):
            splits = load_json_splits(split_file)
            self.split_file = split_file
        else:
            eligible = sorted(
                p for p in set(cams[0]) & set(cams[1])
                if int(p.split("_")[1]) <= max_person
                and len(cams[0][p]) > min_frames and len(cams[1][p]) > min_frames
            )
            logger.info("PRID-2011: %d persons have more than %d frames in both cameras.",
                        len(eligible), min_frames)
            splits = self._generated_splits(eligible, seed, split_file)
        self._build(cams, cam_dirs, splits, split_id, verbose)
