"""nvan-tf: NVAN and STE-NVAN for video-based person re-identification.

The plain-Python parts (``datasets``, ``sampling``, ``metrics``) import
without TensorFlow; ``build_model`` and the layers load Keras on first use.

Saved models load after ``import nvan_tf`` alone: ``nvan_tf.load_model(path)``
(every format, see ``nvan_tf.loading``), and ``keras.saving.load_model`` for
``.keras`` files too. The Keras classes are registered with Keras as soon as
Keras is imported (at once if it already is), so ``import nvan_tf`` does not
itself import TensorFlow.
"""

import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

__all__ = ["build_model", "load_model", "VARIANTS", "__version__"]

# Every module that defines Keras-serialisable classes (registered on import).
KERAS_MODULES = ("nvan_tf.layers", "nvan_tf.backbone", "nvan_tf.model", "nvan_tf.losses", "nvan_tf.optimizers")


def __getattr__(name):  # imported on first use, so `python -m nvan_tf.x` runs cleanly
    if name in ("build_model", "VARIANTS"):
        from nvan_tf import model

        return getattr(model, name)
    if name == "load_model":
        from nvan_tf import loading

        return loading.load_model
    raise AttributeError(f"module 'nvan_tf' has no attribute {name!r}")


def register_keras_objects():
    """Imports every Keras part, registering its classes for deserialisation."""
    for module in KERAS_MODULES:
        importlib.import_module(module)


class _RegisterAfterLoading(importlib.abc.Loader):
    """Wraps Keras' own loader: runs it, then registers our classes."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        register_keras_objects()

    def __getattr__(self, name):  # resource readers and the like
        return getattr(self._loader, name)


class _KerasImportHook(importlib.abc.MetaPathFinder):
    """Finds ``keras`` like the other finders, with a registering loader; once."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("keras")
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisterAfterLoading(spec.loader)
        return spec


if "keras" in sys.modules:
    register_keras_objects()
elif not any(isinstance(finder, _KerasImportHook) for finder in sys.meta_path):
    sys.meta_path.insert(0, _KerasImportHook())
