"""Reading and writing models: every model format, the PyTorch key mapping, ONNX Runtime.

- ``loading``: ``load_model`` (``.keras``, ``.weights.h5``, the authors'
  PyTorch checkpoints), ``save_model``, ``save_weights``, ``initialize_from``,
  ``load_saved_model``;
- ``convert``: the mapping from PyTorch ``state_dict`` keys to Keras weights;
- ``onnx_runtime``: an ONNX Runtime session for an ``.onnx`` file, and
  clips run through it (the evaluation, nvan-export's checks and nvan-track's
  ONNX detector use it).

This layer sits above ``nvan_tf.models``; the atomic writer every layer
uses is ``nvan_tf.core.atomic``. Plain Python at import: nothing is loaded
until a name is used.
"""

from nvan_tf import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("LoadError", "initialize_from", "load_model", "load_saved_model", "save_model",
                     "save_weights"), "loading"),
    **dict.fromkeys(("onnx_session", "run_onnx"), "onnx_runtime"),
}

__all__ = list(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
