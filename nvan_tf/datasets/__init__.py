"""Dataset readers (plain Python + NumPy/SciPy; no TensorFlow).

``build_dataset(name, root, **kwargs)`` returns a
:class:`~nvan_tf.datasets.base.VideoDataset` with ``train``, ``query``,
``gallery`` (lists of :class:`~nvan_tf.datasets.base.Tracklet`),
``num_train_ids``, ``statistics()`` / ``print_statistics()`` and
``test_set()``. Names: ``mars``, ``dukev``, ``ilidsvid``, ``prid``,
``folder`` (own data: folder layout or CSV manifest).
"""

from __future__ import annotations

from nvan_tf.datasets.base import (
    BadFileNameError,
    DatasetLayoutError,
    Tracklet,
    VideoDataset,
)
from nvan_tf.datasets.dukev import DukeMTMCVidReID
from nvan_tf.datasets.folder import FolderDataset
from nvan_tf.datasets.ilidsvid import ILIDSVID
from nvan_tf.datasets.mars import MARS
from nvan_tf.datasets.prid import PRID2011

DATASETS = {
    "mars": MARS,
    "dukev": DukeMTMCVidReID,
    "ilidsvid": ILIDSVID,
    "prid": PRID2011,
    "folder": FolderDataset,
}

__all__ = [
    "DATASETS",
    "BadFileNameError",
    "DatasetLayoutError",
    "Tracklet",
    "VideoDataset",
    "build_dataset",
]


def build_dataset(name: str, root: str, **kwargs) -> VideoDataset:
    """Read dataset ``name`` (one of ``DATASETS``) from ``root``."""
    key = name.lower().replace("-", "").replace("_", "")
    aliases = {"dukemtmcvidreid": "dukev", "dukemtmcvideoreid": "dukev", "ilids": "ilidsvid", "prid2011": "prid", "csv": "folder"}
    key = aliases.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}. Expected one of {sorted(DATASETS)}.")
    return DATASETS[key](root, **kwargs)
