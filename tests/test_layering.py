"""The layer order: no module imports a layer above its own.

Every ``import`` of nvan_tf in every module is read from the source, those
inside functions included (a lazy import is an import all the same), and
its target's layer compared with the module's. The order is written once,
in ``LAYERS``.
"""

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "nvan_tf")

# Bottom to top; a module may import its own layer and the ones before it.
LAYERS = [
    ("nvan_tf", "core", "choices"),  # the package itself (lazy names only), the core, the choice lists
    ("data",),
    ("models",),
    ("io",),  # model loading, above the models it loads
    ("evaluation",),
    ("training",),  # evaluates while it trains
    ("deploy",),
    ("video",),
    ("benchmarks", "cli", "entry points"),  # entry points: __main__ files and the old top-level paths
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def _part(dotted):
    """The layer name of the module ``dotted`` (``nvan_tf.x.y``)."""
    parts = dotted.split(".")
    if len(parts) == 1:
        return "nvan_tf"
    if parts[-1] == "__main__":
        return "entry points"
    head = parts[1]
    if os.path.isdir(os.path.join(PACKAGE, head)) or head in LEVEL:
        return head
    return "entry points"  # nvan_tf/<old name>.py: a path kept for code written before the sub-packages


def _modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                yield path, dotted[: -len(".__init__")] if dotted.endswith(".__init__") else dotted


def _imports(path):
    """``(line, imported module)`` for every nvan_tf import in the file."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "nvan_tf":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "nvan_tf":  # from nvan_tf import x: a sub-package or module, or a lazy name
                for alias in node.names:
                    sub = os.path.join(PACKAGE, alias.name)
                    yield node.lineno, (f"nvan_tf.{alias.name}" if os.path.isdir(sub) or os.path.isfile(sub + ".py")
                                        else "nvan_tf")
            elif node.module.split(".")[0] == "nvan_tf":
                yield node.lineno, node.module


def test_every_module_sits_in_a_layer_of_the_table():
    unknown = sorted({_part(dotted) for _, dotted in _modules()} - set(LEVEL))
    assert not unknown, f"add {unknown} to LAYERS"


def test_no_module_imports_a_higher_layer():
    upward = []
    for path, dotted in _modules():
        own = _part(dotted)
        for line, target in _imports(path):
            if LEVEL[_part(target)] > LEVEL[own]:
                upward.append(f"{os.path.relpath(path, ROOT)}:{line} ({own}) imports {target} ({_part(target)})")
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path):
    """The reader finds lazy imports inside functions, and both import forms."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from nvan_tf.cli import track\n    import nvan_tf.video.stages\n"
                      "from nvan_tf import deploy, lazy_exports\n")
    found = sorted(_imports(str(source)))
    assert found == [(2, "nvan_tf.cli"), (3, "nvan_tf.video.stages"), (4, "nvan_tf"), (4, "nvan_tf.deploy")]
    assert [LEVEL[_part(t)] > LEVEL["data"] for _, t in found] == [True, True, False, True]


def test_the_bottom_layers_load_nothing_above_them():
    """At run time too: importing the core, the data readers and the model
    loader's package leaves every higher layer unloaded (and TensorFlow)."""
    code = ("import sys; import nvan_tf.core, nvan_tf.core.atomic, nvan_tf.core.console, nvan_tf.data.datasets, "
            "nvan_tf.data.datasets.synthetic, nvan_tf.io, nvan_tf.evaluation.metrics; "
            "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('nvan_tf.')}), "
            "'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr
    loaded, tensorflow = out.stdout.rsplit(" ", 1)
    assert set(ast.literal_eval(loaded)) <= {"core", "choices", "data", "io", "evaluation"}, loaded
    assert tensorflow.strip() == "False"
