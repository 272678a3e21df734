"""Running an ``.onnx`` file with ONNX Runtime: the one place that opens sessions.

The evaluation (an ``.onnx`` model as a feature extractor), nvan-export's
checks (``nvan_tf.deploy.onnx``), the inference benchmark and nvan-track's
ONNX detector all go through :func:`onnx_session`. Needs the ``[export]``
extra (``onnxruntime``); plain Python at import.
"""

from __future__ import annotations

import importlib
import os

import numpy as np

__all__ = ["require", "onnx_session", "run_onnx"]


def require(module, extra="export"):
    """Imports the optional dependency ``module``; an ``ImportError`` that
    names the extra to install when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{module} is needed for this; install the optional dependencies with "
            f"pip install 'nvan-tf[{extra}]' ({err})"
        ) from err


def onnx_session(path, *, threads: int | None = None, providers=("CPUExecutionProvider",)):
    """An ``onnxruntime.InferenceSession`` for ``path`` (``threads``: intra-op)."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    return ort.InferenceSession(os.fspath(path), options, providers=list(providers))


def run_onnx(session, clips, batch_size=4):
    """The session's first output for ``clips``, run ``batch_size`` at a time
    through its one input (float32)."""
    name = session.get_inputs()[0].name
    clips = np.asarray(clips, np.float32)
    return np.concatenate([session.run(None, {name: clips[i:i + batch_size]})[0]
                           for i in range(0, len(clips), batch_size)])
