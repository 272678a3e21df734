"""What ``import nvan_tf`` gives a new user, checked in fresh interpreters."""

import os
import subprocess
import sys

import pytest

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


@pytest.mark.parametrize("order", ["import nvan_tf, keras", "import keras, nvan_tf"])
def test_keras_load_model_works_after_import_nvan_tf(tmp_path, order):
    path = str(tmp_path / "m.keras")
    run_python(
        "import nvan_tf.models.model\n"
        f"nvan_tf.models.model.build_model('baseline', 3, seq_len=1, height=64, width=32).save({path!r})\n"
    )
    out = run_python(
        f"{order}\n"
        f"model = keras.saving.load_model({path!r})\n"
        "print(type(model).__name__, model.config.variant, model.config.num_identities)\n"
    )
    assert out.split() == ["NVANModel", "baseline", "3"]


@pytest.mark.parametrize("module", ["nvan_tf.models.layers", "nvan_tf.models.backbone", "nvan_tf.models.model",
                                    "nvan_tf.training.losses", "nvan_tf.training.optimizers", "nvan_tf.training.loop"])
def test_any_keras_module_imports_first_and_registers_all(module):
    """Importing one Keras part first (Keras loads from its first lines) works
    and still registers every class: no half-imported module is imported from."""
    out = run_python(
        f"import {module}\n"
        "from keras.saving import get_registered_object as get\n"
        "names = ('NVANModel', 'VideoResNet50', 'BatchNorm', 'BatchHardTripletLoss', 'TorchAdam')\n"
        "print(all(get('nvan_tf>' + n) is not None for n in names))\n"
    )
    assert out.strip() == "True"
