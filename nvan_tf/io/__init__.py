"""Reading and writing: every model format, the PyTorch key mapping, atomic writes.

- ``loading``: ``load_model`` (``.keras``, ``.weights.h5``, the authors'
  PyTorch checkpoints), ``save_model``, ``save_weights``, ``initialize_from``,
  ``load_saved_model``;
- ``convert``: the mapping from PyTorch ``state_dict`` keys to Keras weights;
- ``atomic``: the one atomic writer every file and folder goes through.

Plain Python at import (Keras loads when a model is built).
"""

from nvan_tf.io.atomic import atomic_path, remove_stale, write_bytes, write_json, write_text
from nvan_tf.io.loading import (
    LoadError,
    initialize_from,
    load_model,
    load_saved_model,
    save_model,
    save_weights,
)

__all__ = ["atomic_path", "remove_stale", "write_bytes", "write_json", "write_text", "LoadError",
           "initialize_from", "load_model", "load_saved_model", "save_model", "save_weights"]
