"""DukeMTMC-VideoReID.

Wu, Lin, Dong, Yan, Ouyang, Yang, "Exploit the Unknown Gradually: One-Shot
Video-Based Person Re-Identification by Stepwise Learning", CVPR 2018
(built on Ristani et al., DukeMTMC, ECCV 2016 workshops).
https://github.com/Yu-Wu/DukeMTMC-VideoReID

Statistics: 8 cameras; train 702 ids / 2,196 tracklets; query 702 ids /
702 tracklets; gallery 1,110 ids (702 + 408 distractors) / 2,636 tracklets.

Protocol: ``test_set()`` is ``query + gallery``; a gallery tracklet that is
also a query (same pid, tracklet folder, camera and frame names) is kept
once and both index arrays point at it. ``camid`` is the ``C`` number of the
frame names (1..8); ``tracklet_id`` is the tracklet folder's number.
"""

from __future__ import annotations

import logging
import os
import re

from nvan_tf.data.datasets.base import (
    BadFileNameError,
    VideoDataset,
    list_images,
    parse_number,
    require,
    tracklet_or_none,
)

logger = logging.getLogger(__name__)

LAYOUT = """\
  <root>/train/<pid>/<tracklet>/<pid>_C<cam>_F<frame>_X<n>.jpg   e.g. train/0001/0001/0001_C6_F0099_X30823.jpg
  <root>/query/<pid>/<tracklet>/...
  <root>/gallery/<pid>/<tracklet>/...
(the older names without underscores, 0001C6F0099X30823.jpg, are read too)"""

NAME = re.compile(r"^(\d+)_?C(\d+)_?F(\d+)_?X(\d+)\.(?:jpg|jpeg|png)$", re.IGNORECASE)


def read_split(split_dir: str, split: str, dropped: dict, name_pattern=NAME, dataset="DukeMTMC-VideoReID"):
    """Tracklets of ``split_dir/<pid>/<tracklet>/<frames>``; camera from names."""
    tracklets = []
    for pid_name in sorted(os.listdir(split_dir)):
        pid_dir = os.path.join(split_dir, pid_name)
        if not os.path.isdir(pid_dir):
            continue
        pid = parse_number(pid_name, "person id", pid_dir)
        for track_name in sorted(os.listdir(pid_dir)):
            track_dir = os.path.join(pid_dir, track_name)
            if not os.path.isdir(track_dir):
                continue
            track = parse_number(track_name, "tracklet", track_dir)
            names = list_images(track_dir)
            cams = set()
            for n in names:
                match = name_pattern.match(n)
                if match is None:
                    raise BadFileNameError(
                        f"Cannot parse the {dataset} frame name {n!r} in {track_dir}. "
                        f"Expected <pid>_C<cam>_F<frame>_X<n>.jpg, e.g. 0001_C6_F0099_X30823.jpg."
                    )
                cams.add(int(match.group(2)))
            if len(cams) > 1:
                raise BadFileNameError(
                    f"The frames of {track_dir} name several cameras {sorted(cams)}; "
                    f"a tracklet comes from one camera."
                )
            t = tracklet_or_none(
                [os.path.join(track_dir, n) for n in names], pid,
                cams.pop() if cams else -1, track,
                where=track_dir, split=split, dropped=dropped,
            )
            if t is not None:
                tracklets.append(t)
    return tracklets


class DukeMTMCVidReID(VideoDataset):
    """DukeMTMC-VideoReID reader (layout in ``nvan_tf.data.datasets.dukev.LAYOUT``).

    Args:
        root: the folder holding ``train``, ``query`` and ``gallery``.
        verbose: log the statistics table.
    """

    name = "DukeMTMC-VideoReID"
    layout = LAYOUT

    def __init__(self, root: str, *, verbose: bool = True):
        self.root = os.path.abspath(os.path.expanduser(root))
        dirs = [os.path.join(self.root, s) for s in ("train", "query", "gallery")]
        require(dirs, self.name, LAYOUT)
        dropped: dict[str, int] = {}
        train, query, gallery = (read_split(d, s, dropped) for d, s in zip(dirs, ("train", "query", "gallery")))
        super().__init__(train, query, gallery, dropped=dropped, verbose=verbose)
