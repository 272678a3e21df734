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
        "import nvan_tf.datasets, nvan_tf.sampling, nvan_tf.metrics, nvan_tf.cli\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    assert out.strip() == "[]"


@pytest.mark.parametrize("order", ["import nvan_tf, keras", "import keras, nvan_tf"])
def test_keras_load_model_works_after_import_nvan_tf(tmp_path, order):
    path = str(tmp_path / "m.keras")
    run_python(
        "import nvan_tf.model\n"
        f"nvan_tf.model.build_model('baseline', 3, seq_len=1, height=64, width=32).save({path!r})\n"
    )
    out = run_python(
        f"{order}\n"
        f"model = keras.saving.load_model({path!r})\n"
        "print(type(model).__name__, model.config.variant, model.config.num_identities)\n"
    )
    assert out.split() == ["NVANModel", "baseline", "3"]
