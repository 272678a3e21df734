"""Dataset readers (plain Python + NumPy/SciPy; no TensorFlow).

``build_dataset(name, root, **kwargs)`` returns a
:class:`~nvan_tf.data.datasets.base.VideoDataset` with ``train``, ``query``,
``gallery`` (lists of :class:`~nvan_tf.data.datasets.base.Tracklet`),
``num_train_ids``, ``statistics()`` / ``print_statistics()`` and
``test_set()``. Names: ``mars``, ``dukev``, ``ilidsvid``, ``prid``,
``folder`` (own data: folder layout or CSV manifest).
"""

from __future__ import annotations

from nvan_tf import choices

from nvan_tf.data.datasets.base import (
    BadFileNameError,
    DatasetLayoutError,
    Tracklet,
    VideoDataset,
)
from nvan_tf.data.datasets.dukev import DukeMTMCVidReID
from nvan_tf.data.datasets.folder import FolderDataset
from nvan_tf.data.datasets.ilidsvid import ILIDSVID
from nvan_tf.data.datasets.mars import MARS
from nvan_tf.data.datasets.prid import PRID2011

# The readers, in the order of nvan_tf.choices.DATASETS (their names).
DATASETS = dict(zip(choices.DATASETS, (MARS, DukeMTMCVidReID, ILIDSVID, PRID2011, FolderDataset)))

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
