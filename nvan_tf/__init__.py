"""nvan-tf: NVAN and STE-NVAN for video-based person re-identification.

Sub-packages, in the order a clip goes through them:

- ``nvan_tf.data``: dataset readers, sampling, the tf.data input pipeline;
- ``nvan_tf.models``: layers, the ResNet-50 video backbone, the five variants;
- ``nvan_tf.training``: the recipe (config, losses, optimizers), the task,
  checkpoints, the training loop, the hyper-parameter search;
- ``nvan_tf.evaluation``: distances, re-ranking, CMC / mAP, feature
  extraction and its cache, reports;
- ``nvan_tf.io``: loading every model format, PyTorch key conversion,
  atomic writes;
- ``nvan_tf.deploy``: SavedModel, ONNX, TensorRT, the serving client;
- ``nvan_tf.cli``: the command lines; ``nvan_tf.choices``: every choice list.

The plain-Python parts (``data`` without its pipeline, ``evaluation``'s
metrics, ``choices``) import without TensorFlow; ``build_model`` and the
layers load Keras on first use.

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
KERAS_MODULES = ("nvan_tf.models.layers", "nvan_tf.models.backbone", "nvan_tf.models.model",
                 "nvan_tf.training.losses", "nvan_tf.training.optimizers")


def lazy_exports(package, table):
    """A module ``__getattr__`` that imports ``name`` from ``package + "." +
    table[name]`` on first use: the names a package offers without importing
    Keras or TensorFlow until one is used."""

    def __getattr__(name):
        if name in table:
            return getattr(importlib.import_module(f"{package}.{table[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


__getattr__ = lazy_exports(__name__, {"build_model": "models.model", "load_model": "io.loading",
                                      "VARIANTS": "choices"})


def register_keras_objects():
    """Imports every Keras part, registering its classes for deserialisation."""
    for module in KERAS_MODULES:
        importlib.import_module(module)


def _initializing(name):
    module = sys.modules.get(name)
    return module is not None and getattr(getattr(module, "__spec__", None), "_initializing", False)


def _register_after(name):
    """Called at the end of every Keras module: registers the others once no
    other Keras module of ours is half imported (``import nvan_tf.backbone``
    in a fresh interpreter loads Keras from backbone's first lines, before the
    classes that ``nvan_tf.model`` imports from it exist)."""
    if not any(_initializing(m) for m in KERAS_MODULES if m != name):
        register_keras_objects()


class _RegisterAfterLoading(importlib.abc.Loader):
    """Wraps Keras' own loader: runs it, then registers our classes."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        if not any(_initializing(m) for m in KERAS_MODULES):
            register_keras_objects()  # else the importing module's _register_after does it

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
