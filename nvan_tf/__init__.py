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
- ``cli``: the command lines; ``nvan_tf.choices``: every choice list.

The plain-Python parts (``data`` without its pipeline, ``evaluation``'s
metrics, ``choices``) import without TensorFlow; ``build_model`` and the
layers load Keras on first use.

Saved models load with ``nvan_tf.load_model(path)`` after ``import nvan_tf``
alone (every format, see ``nvan_tf.io.loading``). ``import nvan_tf`` does not
import TensorFlow or Keras, so it registers nothing with Keras: to load a
``.keras`` file with Keras directly, call ``nvan_tf.register_keras_objects()``
first (it imports every module of ``KERAS_MODULES``, whose classes register
as they are defined), or pass ``custom_objects=nvan_tf.custom_objects()``.

The old flat import paths (``nvan_tf.losses``, ``nvan_tf.metrics``, ...) are
deprecated aliases of the modules that moved (``_MOVED``), removed in
nvan-tf 0.3.
"""

import importlib
import sys
import warnings

__version__ = "0.1.0"

__all__ = ["build_model", "load_model", "VARIANTS", "custom_objects", "register_keras_objects", "__version__"]

# Every module that defines Keras-serialisable classes: each registers its
# classes with ``keras.saving.register_keras_serializable`` as it is imported.
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
    """Imports every module of ``KERAS_MODULES`` (and so Keras), registering
    their classes with Keras: ``keras.saving.load_model("m.keras")`` works
    after it."""
    for module in KERAS_MODULES:
        importlib.import_module(module)


def custom_objects():
    """``{registered name: class}`` of every Keras class of nvan_tf (the
    layers, backbone, model, losses, optimizers and schedule), for
    ``keras.saving.load_model(path, custom_objects=nvan_tf.custom_objects())``
    and ``keras.saving.custom_object_scope``. Imports Keras."""
    register_keras_objects()
    import keras

    found = {}
    for name in KERAS_MODULES:
        for obj in vars(sys.modules[name]).values():
            if isinstance(obj, type) and obj.__module__ == name:
                registered = keras.saving.get_registered_name(obj)
                if keras.saving.get_registered_object(registered) is obj:
                    found[registered] = obj
    return found


# The old flat import paths -> the modules that moved there (within nvan_tf). Each old path is
# a file of two lines, ``nvan_tf._alias(__name__, "nvan_tf.OLD")``: importing
# it warns (DeprecationWarning) and makes the old name the moved module itself.
ALIAS_REMOVAL = "0.3"
_MOVED = {
    "nvan_tf.backbone": "models.backbone",
    "nvan_tf.checkpoints": "training.checkpoints",
    "nvan_tf.convert": "io.convert",
    "nvan_tf.datasets": "data.datasets",
    "nvan_tf.demo": "cli.demo",
    "nvan_tf.distance": "evaluation.distance",
    "nvan_tf.io.atomic": "core.atomic",
    "nvan_tf.export": "deploy",
    "nvan_tf.layers": "models.layers",
    "nvan_tf.loading": "io.loading",
    "nvan_tf.losses": "training.losses",
    "nvan_tf.metrics": "evaluation",  # evaluate_rank, match_masks, evaluate_indices, ...
    "nvan_tf.model": "models.model",
    "nvan_tf.optimizers": "training.optimizers",
    "nvan_tf.pipeline": "data.pipeline",
    "nvan_tf.profile": "models.profile",
    "nvan_tf.reranking": "evaluation.reranking",
    "nvan_tf.sampling": "data.sampling",
    "nvan_tf.serving": "deploy.serving",
    "nvan_tf.training_config": "training.config",
    "nvan_tf.tuning": "training.tuning",
    "nvan_tf.video.metrics": "video.track_metrics",  # (not evaluation.metrics: tracking's)
    "nvan_tf.video.pipeline": "video.stages",        # (not data.pipeline: nvan-track's stages)
    "nvan_tf.visualize": "evaluation.report",
}
# Old paths that are also commands, and ``python -m nvan_tf.video``: each
# runs this command's main() (a module of the ``cli`` sub-package).
_COMMANDS = {"nvan_tf.demo": "demo", "nvan_tf.export": "export", "nvan_tf.profile": "profile",
             "nvan_tf.tuning": "tune", "nvan_tf.video": "track"}


def _run_command(name):
    """``python -m name``: exits with the status of the command's main()."""
    if name not in _COMMANDS:
        sys.exit(f"{name} is not a command")
    sys.exit(importlib.import_module(f"{__name__}.cli.{_COMMANDS[name]}").main())


def _alias(name, old):
    """The body of the old path ``old`` (``__name__`` is ``name``).

    Imported: warns that ``old`` is deprecated (naming the new path and the
    release that removes it) and puts the moved module in ``sys.modules``
    under the old name, so ``old`` is the moved module itself. Run as
    ``python -m old``: runs the command's ``main`` (no warning: the command
    is documented)."""
    if name == "__main__":
        _run_command(old)
    new = f"{__name__}.{_MOVED[old]}"
    warnings.warn(f"{old} is deprecated and will be removed in nvan-tf {ALIAS_REMOVAL}; "
                  f"import {new} instead", DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
