"""What ``import nvan_tf`` gives a new user, checked in fresh interpreters."""

import os
import subprocess
import sys

import pytest

from tests import toy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_plain_python_parts_import_without_tensorflow():
    out = run_python(
        "import sys\n"
        "import nvan_tf.data.datasets, nvan_tf.data.sampling, nvan_tf.evaluation.metrics, nvan_tf.cli\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    assert out.strip() == "[]"


def test_import_nvan_tf_imports_neither_keras_nor_tensorflow_and_installs_no_import_hook():
    out = run_python(
        "import sys\n"
        "finders = list(sys.meta_path)\n"
        "import nvan_tf\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules), sys.meta_path == finders)\n"
    )
    assert out.split() == ["[]", "True"]


def test_no_import_hook_in_the_package():
    """Registration is Keras' public decorator, run as each module is
    imported: no finder on sys.meta_path, no private import-system state."""
    for folder, _, files in os.walk(os.path.join(ROOT, "nvan_tf")):
        for name in files:
            if name.endswith(".py"):
                source = open(os.path.join(folder, name), encoding="utf-8").read()
                for word in ("meta_path", "_initializing", "_register_after", "MetaPathFinder"):
                    assert word not in source, (os.path.join(folder, name), word)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A small non-local model (nvan-temporal at its smallest depth, tests/toy.py) saved as .keras, one
    input and its output. Made here: the fresh interpreters are the ones that load it."""
    import numpy as np

    import nvan_tf

    folder = tmp_path_factory.mktemp("saved")
    model = nvan_tf.build_model("nvan-temporal", 3, seq_len=4, height=64, width=32, **toy.smallest("nvan-temporal"))
    x = np.random.default_rng(0).random((1, 4, 64, 32, 3), dtype=np.float32)
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", np.asarray(model(x, training=False)))
    model.save(str(folder / "m.keras"))
    return folder


# The README's ways to load a .keras file, each followed by the saved model's output check. They share
# an interpreter where their import order is the same: custom_objects() imports (and so registers) the
# classes itself, so no way can pass on another's registration that it would not have made; which
# classes custom_objects() holds is checked against the package's own in the keras-first interpreter.
CHECK = ("print(NAME, type(model).__name__, model.config.variant, "
         "np.abs(np.asarray(model(x, training=False)) - y).max())\n")
LOADS = {
    "nvan_tf first": {
        "custom_objects": "import nvan_tf, keras\n"
                          "model = keras.saving.load_model(PATH, custom_objects=nvan_tf.custom_objects())",
        "register_keras_objects": "nvan_tf.register_keras_objects()\nmodel = keras.saving.load_model(PATH)",
        "nvan_tf.load_model": "model = nvan_tf.load_model(PATH)",
    },
    "keras first": {
        "register_keras_objects": "import keras, nvan_tf\nnvan_tf.register_keras_objects()\n"
                                  "model = keras.saving.load_model(PATH)",
    },
}


@pytest.mark.slow  # a fresh interpreter an import order
@pytest.mark.parametrize("order", sorted(LOADS))
def test_a_saved_model_loads_with_keras_in_a_fresh_interpreter(saved_model, order):
    """The README's ways to load a .keras file: the same outputs as the saved model."""
    code = "import numpy as np\n" \
           f"x, y = np.load({str(saved_model / 'x.npy')!r}), np.load({str(saved_model / 'y.npy')!r})\n"
    for name, load in LOADS[order].items():
        code += load.replace("PATH", repr(str(saved_model / "m.keras"))) + "\n" + CHECK.replace("NAME", repr(name))
    if order == "keras first":
        code += CUSTOM_OBJECTS
    lines = run_python(code).splitlines()
    assert [line.split()[0] for line in lines[:len(LOADS[order])]] == list(LOADS[order]), lines
    for line in lines[:len(LOADS[order])]:
        name, cls, variant, error = line.split()
        assert (cls, variant) == ("NVANModel", "nvan-temporal") and float(error) <= 1e-6, line
    if order == "keras first":
        assert {"nvan_tf>NonLocalBlock", "nvan_tf>StripeNonLocalBlock", "nvan_tf>FrameGrouping",
                "nvan_tf>TemporalMaxReduction", "nvan_tf>FeaturePooling", "nvan_tf>VideoResNet50",
                "nvan_tf>NVANModel", "nvan_tf>BatchHardTripletLoss", "nvan_tf>IdentityLoss", "nvan_tf>TorchAdam",
                "nvan_tf>StepDecay"} <= set(lines[-1].split()), lines


# nvan_tf.custom_objects() holds every Keras class the package defines, each registered under its name
CUSTOM_OBJECTS = (
    "import inspect, sys\n"
    "objects = nvan_tf.custom_objects()\n"
    "bases = (keras.layers.Layer, keras.losses.Loss, keras.optimizers.Optimizer,\n"
    "         keras.optimizers.schedules.LearningRateSchedule)\n"
    "defined = {c for m in nvan_tf.KERAS_MODULES for c in vars(sys.modules[m]).values()\n"
    "           if inspect.isclass(c) and c.__module__ == m and issubclass(c, bases)}\n"
    "assert set(objects.values()) == defined, defined ^ set(objects.values())\n"
    "assert all(keras.saving.get_registered_object(n) is c for n, c in objects.items())\n"
    "print(' '.join(sorted(objects)))\n"
)


@pytest.mark.slow
def test_without_registration_keras_cannot_find_the_classes(saved_model):
    """What the README says: ``import nvan_tf`` alone registers nothing
    (Keras imports only its own packages' modules from a saved config)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", f"import nvan_tf, keras; keras.saving.load_model("
                             f"{str(saved_model / 'm.keras')!r})"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "Could not locate class 'NVANModel'" in result.stderr, result.stderr[-3000:]


# each Keras part of the package and the class of its own it registers
KERAS_PARTS = {"nvan_tf.models.layers": "NonLocalBlock", "nvan_tf.models.backbone": "VideoResNet50",
               "nvan_tf.models.model": "NVANModel", "nvan_tf.training.losses": "BatchHardTripletLoss",
               "nvan_tf.training.optimizers": "TorchAdam", "nvan_tf.training.loop": ""}


@pytest.mark.slow
def test_any_keras_module_imports_first_and_registers_its_classes():
    """Importing one Keras part first works and registers the classes it
    defines (each module registers its own). One fresh interpreter for all:
    the first module is imported before Keras itself; before each later one,
    every nvan_tf module is forgotten and the nvan_tf entries of Keras's
    registry (``keras.saving.get_custom_objects()``, its live dictionary)
    are removed, so each module is imported first into a Keras that knows
    none of the package's classes (a fresh interpreter a module took 10 s
    each, 6 of them)."""
    out = run_python(
        "import sys\n"
        f"for module in {list(KERAS_PARTS)!r}:\n"
        "    if 'keras' in sys.modules:\n"
        "        for name in [m for m in sys.modules if m == 'nvan_tf' or m.startswith('nvan_tf.')]:\n"
        "            del sys.modules[name]\n"
        "        registry = sys.modules['keras'].saving.get_custom_objects()\n"
        "        for name in [n for n in registry if n.startswith('nvan_tf>')]:\n"
        "            del registry[name]\n"
        "        assert sys.modules['keras'].saving.get_registered_object('nvan_tf>NVANModel') is None\n"
        "    __import__(module)\n"
        "    from keras.saving import get_registered_object as get\n"
        "    print(module, *(n for n in ('NonLocalBlock', 'VideoResNet50', 'NVANModel', 'BatchHardTripletLoss',\n"
        "                                'TorchAdam') if get('nvan_tf>' + n) is not None))\n"
    )
    registered = {line.split()[0]: set(line.split()[1:]) for line in out.splitlines()}
    assert set(registered) == set(KERAS_PARTS), out
    for module, own in KERAS_PARTS.items():
        assert set(own.split()) <= registered[module], (module, out)
