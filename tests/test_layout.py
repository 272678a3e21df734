"""The package layout: documented import paths, entry points, one source per choice list."""

import ast
import json
import os
import re
import subprocess
import sys

import pytest

from nvan_tf import choices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "nvan_tf")

# Every import path the README documented before the sub-packages (and the
# names it documented under them), as "module:name,name".
DOCUMENTED = [
    "nvan_tf:build_model,load_model,VARIANTS",
    "nvan_tf.layers:NonLocalBlock,StripeNonLocalBlock,FrameGrouping,TemporalMaxReduction,FeaturePooling",
    "nvan_tf.backbone:VideoResNet50",
    "nvan_tf.model:ModelConfig,NVANModel,build_model,VARIANTS",
    "nvan_tf.loading:load_model,save_weights,initialize_from,load_saved_model,load_torch_checkpoint,"
    "load_torchvision_resnet50,load_keras_applications_resnet50",
    "nvan_tf.convert:KERAS_APPLICATIONS_LAYOUT",
    "nvan_tf.datasets:build_dataset,Tracklet,DATASETS",
    "nvan_tf.datasets.synthetic:generate",
    "nvan_tf.sampling:rrs_chunks,PKSampler,sample_test_indices",
    "nvan_tf.pipeline:train_dataset,eval_dataset,bad_frame_report,resize_frames,normalize,decode_frame",
    "nvan_tf.training:TrainConfig,compile_model,train",
    "nvan_tf.training_config:TrainConfig,PRESETS",
    "nvan_tf.losses:BatchHardTripletLoss,IdentityLoss",
    "nvan_tf.optimizers:TorchAdam,TorchSGD,StepDecay",
    "nvan_tf.checkpoints:",
    "nvan_tf.tuning:SearchSpace,search",
    "nvan_tf.metrics:evaluate_rank,evaluate_indices",
    "nvan_tf.distance:pairwise_distance,cosine_distance",
    "nvan_tf.reranking:k_reciprocal_rerank,average_query_expansion",
    "nvan_tf.evaluation:run_evaluation,extract_features",
    "nvan_tf.visualize:plot_cmc,plot_ranked_list",
    "nvan_tf.export:export_saved_model,export_onnx,quantize_onnx,calibration_clips,convert_onnx_fp16,"
    "build_tensorrt_engine",
    "nvan_tf.serving:ServingClient,Gallery",
    "nvan_tf.profile:profile_variant",
    "nvan_tf.cli:make_parser,quiet_tensorflow",
]
DOCUMENTED_MAINS = ["nvan_tf.export", "nvan_tf.profile", "nvan_tf.tuning", "nvan_tf.demo", "nvan_tf.video",
                    "nvan_tf.datasets.synthetic", "nvan_tf.benchmarks.train", "nvan_tf.benchmarks.inference",
                    "nvan_tf.benchmarks.metrics", "nvan_tf.benchmarks.pipeline"]


def run(args, **env):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT, **env}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_every_documented_import_path_works_in_a_fresh_interpreter():
    lines = ["import importlib"]
    for entry in DOCUMENTED:
        module, _, names = entry.partition(":")
        lines.append(f"m = importlib.import_module({module!r})")
        lines += [f"getattr(m, {name!r})" for name in names.split(",") if name]
    lines.append("print('ok')")
    result = run(["-c", "\n".join(lines)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


@pytest.mark.slow
def test_every_old_path_is_the_moved_module_and_warns_naming_its_new_path():
    """In a fresh interpreter, importing each old path warns once
    (DeprecationWarning, attributed to the importing line, naming the new
    path and the release that removes it), and the old name is the moved
    module itself: monkeypatching or private names reach the same code."""
    import nvan_tf

    code = (
        "import importlib, json, sys, warnings\n"
        "import nvan_tf\n"
        "out = {}\n"
        "for old, new in nvan_tf._MOVED.items():\n"
        "    new = 'nvan_tf.' + new\n"
        "    with warnings.catch_warnings(record=True) as caught:\n"
        "        warnings.simplefilter('always')\n"
        "        __import__(old)  # the warning's line is this one, as for an import statement\n"
        "    module = sys.modules[old]\n"
        "    out[old] = [module is sys.modules[old] is sys.modules[new] is importlib.import_module(new),\n"
        "                [(w.category.__name__, str(w.message), w.filename) for w in caught]]\n"
        "print(json.dumps(out))\n"
    )
    result = run(["-c", code])
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout)
    assert set(seen) == set(nvan_tf._MOVED) and len(seen) == 24  # 21 flat paths, io.atomic, video.metrics and .pipeline
    for old, (same, caught) in seen.items():
        new = "nvan_tf." + nvan_tf._MOVED[old]
        assert same, old
        assert caught == [["DeprecationWarning", f"{old} is deprecated and will be removed in nvan-tf 0.3; "
                           f"import {new} instead", "<string>"]], (old, caught)


@pytest.mark.slow
def test_old_paths_warn_where_they_are_imported():
    """``import`` and ``from nvan_tf import`` of an old path warn at the
    user's line (stacklevel past the alias and the import system), which
    Python shows by default in __main__."""
    result = run(["-c", "from nvan_tf import losses\nimport nvan_tf.sampling"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "<string>:1: DeprecationWarning: nvan_tf.losses is deprecated" in result.stderr
    assert "<string>:2: DeprecationWarning: nvan_tf.sampling is deprecated" in result.stderr


@pytest.mark.parametrize("module", DOCUMENTED_MAINS)
def test_documented_python_m_commands_run(module):
    result = run(["-m", module, "--help"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("usage: ")
    assert "DeprecationWarning" not in result.stderr


@pytest.mark.parametrize("module", ["nvan_tf.demo", "nvan_tf.export", "nvan_tf.profile", "nvan_tf.tuning"])
def test_old_command_paths_run_their_command_without_a_warning(module):
    """``python -m nvan_tf.demo`` (what make demo runs) is a command, not an
    import of the old path: it runs the command's main and warns of nothing,
    even with DeprecationWarnings as errors."""
    import nvan_tf

    result = run(["-W", "error::DeprecationWarning", "-m", module, "--help"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("usage: ") and "DeprecationWarning" not in result.stderr
    assert os.path.exists(os.path.join(PACKAGE, "cli", nvan_tf._COMMANDS[module] + ".py"))


def test_top_level_modules_are_only_aliases():
    """Outside the sub-packages, nvan_tf holds its __init__, the choice lists
    and the old paths, each the same two lines naming itself: the alias
    mechanism is written once (nvan_tf._alias, the table nvan_tf._MOVED)."""
    import nvan_tf

    files = sorted(name for name in os.listdir(PACKAGE) if name.endswith(".py"))
    flat = [old for old in nvan_tf._MOVED if old.count(".") == 1]
    assert set(files) - {"__init__.py", "choices.py"} == {f"{old.split('.')[1]}.py" for old in flat}
    for old in nvan_tf._MOVED:  # the flat ones, and those inside a sub-package (nvan_tf.io.atomic)
        source = open(os.path.join(ROOT, *old.split(".")) + ".py", encoding="utf-8").read()
        code = [line for line in source.split('"""')[-1].splitlines() if line.strip()]
        assert code == ["import nvan_tf", f"nvan_tf._alias(__name__, {old!r})".replace("'", '"')], old


def test_readme_table_of_old_paths_is_the_alias_table():
    import nvan_tf

    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    rows = dict(re.findall(r"^\| `(nvan_tf\.[\w.]+)` \| `(nvan_tf[\w.]*)` \|", readme, flags=re.M))
    assert rows == {old: f"nvan_tf.{new}" for old, new in nvan_tf._MOVED.items()}
    assert f"nvan-tf {nvan_tf.ALIAS_REMOVAL}" in readme


def test_no_top_level_train_or_evaluate_module_is_installed():
    setup = open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read()
    assert "py_modules" not in setup
    scripts = dict(re.findall(r'"(nvan-[a-z]+)=([\w.]+):main"', setup))
    assert scripts and all(target.startswith("nvan_tf.cli.") for target in scripts.values()), scripts


def test_package_code_never_imports_a_top_level_train_or_evaluate(tmp_path):
    """With HuggingFace's ``evaluate`` (or any other) on the path, nvan-evaluate
    and the demo still run our code."""
    for module in ("evaluate", "train"):
        (tmp_path / f"{module}.py").write_text("raise ImportError('the wrong module was imported')\n")
    result = run(["-c", "from nvan_tf.cli import demo, evaluate, train; print(evaluate.build_parser().prog)"],
                 PYTHONPATH=os.pathsep.join([str(tmp_path), ROOT]))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "nvan-evaluate"
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                tree = ast.parse(open(os.path.join(folder, name), encoding="utf-8").read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        assert not {a.name for a in node.names} & {"evaluate", "train"}, (folder, name)


CHOICE_LISTS = {name: tuple(value) for name, value in vars(choices).items()
                if name.isupper() and isinstance(value, (tuple, dict))}


def _parsers():
    from nvan_tf.cli import convert, evaluate, export, profile, track, train, tune

    return {"nvan-train": train.build_parser(), "nvan-tune": tune.build_parser(),
            "nvan-track": track.build_parser(),
            "nvan-evaluate": evaluate.build_parser(), "nvan-export": export.build_parser(),
            "nvan-convert": convert.build_parser(), "nvan-profile": profile.build_parser()}


def test_every_command_line_choice_list_comes_from_nvan_tf_choices():
    known = {id(v) for v in vars(choices).values()}
    for prog, parser in _parsers().items():
        for action in parser._actions:
            if action.choices is not None:
                assert id(action.choices) in known or tuple(action.choices) in CHOICE_LISTS.values(), \
                    (prog, action.option_strings, action.choices)


def test_no_module_spells_out_a_choice_list_again():
    """No tuple, list or set literal anywhere in nvan_tf repeats (in any order)
    one of the choice lists of nvan_tf.choices (the tuning objectives are also
    the keys of every result dict, so they are not looked for)."""
    lists = {frozenset(v) for name, v in CHOICE_LISTS.items() if len(v) > 1 and name != "TUNING_OBJECTIVES"}
    found = []
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            path = os.path.join(folder, name)
            if not name.endswith(".py") or path == choices.__file__:
                continue
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and node.elts and all(
                        isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
                    if frozenset(e.value for e in node.elts) in lists:
                        found.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert not found, found


def test_variants_are_one_table():
    from nvan_tf.models.model import VARIANTS

    assert VARIANTS is choices.VARIANTS and choices.VARIANT_NAMES == tuple(VARIANTS)
