"""Every command line of the README's ``bash`` blocks, run as a user starts it.

README.md is parsed when the tests run (``tests/readme_commands.py``), and
``TABLE`` maps each command line, by its exact text (continuations joined,
comments dropped), to how it runs here:

- ``Run(group, set, drop, needs, cwd, instead, writes, expect, quiet)``: the line's program
  (the console script beside ``sys.executable``; ``python``:
  ``sys.executable``) started in a fresh process, in a working folder under
  pytest's ``tmp_path`` where the README's relative paths (``data/MARS``,
  ``ste_nvan.keras``, ...) are the toy files of ``INPUTS``; the flags of
  ``set`` replace or join the line's (the real sizes become the toy ones:
  clips of 4 frames of 64x32, 4 stripes, P=4 x K=2, 1 step, 1 epoch) and those
  of ``drop`` go. It must exit 0, write ``writes``, print ``expect`` and, where ``quiet``, leave stderr empty.
  ``needs`` names the inputs and the README lines it runs after (once each);
  ``cwd`` gives alternatives that write the same default folder their own;
  ``instead`` is what a ``make`` target's recipe runs.
- ``Elsewhere(test, reason)``: another test runs it as a user starts it.
- ``CannotRun(reason)``: not on this machine.
- ``Todo(reason)``: the README line is wrong; ``test_no_readme_command_is_wrong``
  fails until it is fixed.

A README line without an entry fails ``test_every_readme_command_has_an_entry``,
an entry whose line left the README fails ``test_no_entry_is_stale``.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import shutil
import time

import pytest

try:
    from tests import data_trees, toy
    from tests.readme_commands import CannotRun, Elsewhere, Run, Todo, command_lines, run_line, toy_words, \
        user_environment
except ImportError:  # tests/ itself on sys.path
    import data_trees
    import toy
    from readme_commands import CannotRun, Elsewhere, Run, Todo, command_lines, run_line, toy_words, \
        user_environment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")

# toy sizes: the model's (STE-NVAN's smallest depth, tests/toy.py: one residual block a stage, one non-local
# block in res3 and res4), then a training run's (one step of one epoch, evaluated)
SMALLEST = toy.smallest_flags("ste-nvan")
MODEL = {"--seq-len": "4", "--height": "64", "--width": "32", "--stripes": "4",
         **dict(zip(SMALLEST[::2], SMALLEST[1::2]))}
TRAIN = {**MODEL, "--p": "4", "--k": "2", "--steps-per-epoch": "1", "--epochs": "1"}
EVALUATED = {**TRAIN, "--eval-every": "1"}  # the run the other commands use: its model.keras is the best epoch
TUNE = {**MODEL, "--p": "4", "--k": "2", "--steps-per-epoch": "1", "--max-trials": "1", "--epochs": "1"}
NO_STRIPES = {k: v for k, v in TRAIN.items() if k != "--stripes"}  # nvan: no stripe blocks

TRAIN_LINE = ("nvan-train --variant ste-nvan --dataset mars --root data/MARS --output-dir runs/ste_nvan "
              "--init resnet50-0676ba61.pth")
ONNX_INT8_LINE = ("nvan-export --model ste_nvan.keras --out onnx --format onnx --precision int8 "
                  "--calibration-data data/MARS")
DENSE_LINE = "nvan-evaluate --model model.weights.h5 --root data/MARS --sampling dense --rerank"
MULTIWORKER = "tests/test_multiworker.py::test_two_workers_started_as_documented_train_and_evaluate_every_epoch"
MULTIWORKER_WHY = "two nvan-train processes with TF_CONFIG on 127.0.0.1, this command at its toy size"
SEARCH_CLUSTER = ("tests/test_tuning_distributed.py::"
                  "test_chief_and_two_workers_share_a_search_through_a_killed_worker")
SEARCH_CLUSTER_WORDS = ("--dataset synthetic --root data/synthetic --variant baseline --max-trials 4 --epochs 1 "
                        "--seq-len 4 --height 64 --width 32 --stage-blocks 1,1,1,1 --p 2 --k 2 --val-ids 2 --steps-per-epoch 1 --quiet "
                        "--output-dir runs/search_cluster")
RUN_FILES = ("config.json", "history.csv", "model.keras", "last.keras", "training.png", "checkpoints/checkpoint")

TABLE = {
    "make test": CannotRun("the whole suite, this test included (it would run itself); CI's .ci/run runs it"),
    "make demo": Elsewhere("tests/test_demo.py::test_demo_runs_end_to_end_deterministically",
                           "python -m nvan_tf.demo, what make demo runs once installed, at its smallest"),
    "nvan-convert --torch ckpt_best.pth --variant ste-nvan --out ste_nvan.weights.h5":
        Run("convert", set=MODEL, needs=("ckpt_best.pth",), writes=("ste_nvan.weights.h5",)),
    "nvan-profile --variant ste-nvan --seq-len 8 --height 256 --width 128 --json":
        Run("convert", set=MODEL, expect=('"variant": "ste-nvan"',), quiet=True),  # a user's logging: JSON alone
    "nvan-profile --all": Run("convert", set=MODEL, expect=("ste-nvan",)),
    "python -m nvan_tf.data.datasets.synthetic --out data/synthetic --ids 24 --cameras 4 --seed 0":
        Run("convert", writes=("data/synthetic/info/query_IDX.mat",)),  # as written: a few seconds
    # training
    TRAIN_LINE: Run("train", set=EVALUATED, needs=("data/MARS", "resnet50-0676ba61.pth"),
                    writes=tuple(f"runs/ste_nvan/{n}" for n in RUN_FILES)),
    "nvan-train --variant nvan --dataset dukev --root data/DukeMTMC-VideoReID --mixed-precision mixed_bfloat16 "
    "--jit": Run("train", set=NO_STRIPES, needs=("data/DukeMTMC-VideoReID",), cwd="dukev",
                 writes=("runs/train/model.keras",)),
    "nvan-train --config runs/ste_nvan/config.json":
        Run("train", needs=(TRAIN_LINE,), expect=("resumed", "runs/ste_nvan/model.keras")),
    "nvan-train --dataset folder --root my_footage --epochs 60 --lr-step 20 --strategy mirrored":
        Run("train", set=TRAIN, needs=("my_footage",), cwd="folder", writes=("runs/train/model.keras",)),
    "nvan-train --variant ste-nvan --dataset mars --root data/MARS --val-ids 60 --output-dir runs/ste_nvan_val":
        Run("train", set={**EVALUATED, "--val-ids": "2"}, needs=("data/MARS",),  # 2 of the 6 training ids
            writes=("runs/ste_nvan_val/model.keras", "runs/ste_nvan_val/history.csv")),
    "nvan-train --print-config --variant baseline": Run("train", expect=('"variant": "baseline"',)),
    "nvan-train --dataset synthetic --deterministic --seed 3":
        Run("train", set=TRAIN, cwd="deterministic", writes=("runs/train/synthetic_data", "runs/train/model.keras")),
    # the multi-worker section
    "python -m nvan_tf.data.datasets.synthetic --out data/synthetic --ids 12 --cameras 3 --height 64 --width 32":
        Run("convert", writes=("data/synthetic/info/tracks_test_info.mat",)),
    "export CLUSTER='{\"worker\": [\"127.0.0.1:12345\", \"127.0.0.1:12346\"]}'":
        Elsewhere(MULTIWORKER, "the cluster of its two workers, on free ports"),
    'TF_CONFIG="{\\"cluster\\": $CLUSTER, \\"task\\": {\\"type\\": \\"worker\\", \\"index\\": 0}}" nvan-train '
    "--dataset synthetic --root data/synthetic --variant ste-nvan --seq-len 4 --height 64 --width 32 --stripes 4 "
    "--stage-blocks 1,1,1,1 --non-local 0,1,1,0 --p 4 --k 2 --steps-per-epoch 2 --epochs 2 --eval-every 1 "
    "--strategy multiworker --output-dir runs/two_workers &":
        Elsewhere(MULTIWORKER, MULTIWORKER_WHY),
    'TF_CONFIG="{\\"cluster\\": $CLUSTER, \\"task\\": {\\"type\\": \\"worker\\", \\"index\\": 1}}" nvan-train '
    "--dataset synthetic --root data/synthetic --variant ste-nvan --seq-len 4 --height 64 --width 32 --stripes 4 "
    "--stage-blocks 1,1,1,1 --non-local 0,1,1,0 --p 4 --k 2 --steps-per-epoch 2 --epochs 2 --eval-every 1 "
    "--strategy multiworker --output-dir runs/two_workers":
        Elsewhere(MULTIWORKER, MULTIWORKER_WHY),
    "wait": Elsewhere(MULTIWORKER, "it waits for both workers"),
    # hyper-parameter search
    "nvan-tune --variant ste-nvan --dataset mars --root data/MARS --val-ids 60 --algorithm bayesian --objective mAP "
    "--max-trials 20 --epochs 20 --output-dir runs/search":
        Run("search", set={**TUNE, "--val-ids": "2"}, needs=("data/MARS",),  # 2 of the 6 training ids
            writes=("runs/search/trials.csv", "runs/search/trials.png", "runs/search/best_config.json")),
    "nvan-train --tune --dataset synthetic --val-ids 3 --algorithm hyperband --epochs 9 --seq-len 4 8 --height 128 "
    "--width 64":
        Run("search", set={**TUNE, "--epochs": "2", "--factor": "2"}, cwd="hyperband",
            writes=("runs/search/trials.csv", "runs/search/best_config.json")),
    # the distributed search (tests/test_tuning_distributed.py runs these words, on a free port)
    "export KERASTUNER_ORACLE_IP=127.0.0.1 KERASTUNER_ORACLE_PORT=8470":
        Elsewhere(SEARCH_CLUSTER, "the chief's address, a free port of 127.0.0.1 there"),
    f"KERASTUNER_TUNER_ID=tuner0 nvan-tune {SEARCH_CLUSTER_WORDS} --strategy mirrored &":
        Elsewhere(SEARCH_CLUSTER, "worker tuner0, under the mirrored strategy"),
    f"KERASTUNER_TUNER_ID=tuner1 nvan-tune {SEARCH_CLUSTER_WORDS} &":
        Elsewhere(SEARCH_CLUSTER, "worker tuner1, killed during its first trial and started again"),
    f"KERASTUNER_TUNER_ID=chief nvan-tune {SEARCH_CLUSTER_WORDS}":
        Elsewhere(SEARCH_CLUSTER, "the chief, which writes the summary once both workers have stopped"),
    # evaluation
    "nvan-evaluate --model ste_nvan.keras --dataset mars --root data/MARS --visualize":
        Run("evaluate", needs=("ste_nvan.keras", "data/MARS"),
            writes=("evaluation/results.json", "evaluation/visualize/cmc.png", "evaluation/visualize/distances.png")),
    "nvan-evaluate --model ckpt_best.pth --variant ste-nvan --dataset mars --root data/MARS --flip":
        Run("evaluate", set=MODEL, needs=("ckpt_best.pth", "data/MARS"), writes=("evaluation/results.json",)),
    DENSE_LINE: Run("evaluate", needs=("model.weights.h5", "data/MARS"), writes=("evaluation/features.npz",)),
    "nvan-evaluate --features evaluation/features.npz --root data/MARS --protocol market":
        Run("evaluate", needs=(DENSE_LINE,), expect=("mAP",)),
    "nvan-evaluate --model onnx/model.int8.onnx --root data/MARS":
        Run("onnx", needs=(ONNX_INT8_LINE,), expect=("mAP",)),
    "nvan-evaluate --model m.keras --dataset ilidsvid --root data --split-id 3 --splits splits.json":
        Run("evaluate", needs=("m.keras", "data/i-LIDS-VID"), writes=("splits.json",)),
    # deployment
    'pip install -e ".[export]"': CannotRun("it installs into the environment the suite runs in; make test "
                                            "installs the same extra (Makefile, [dev,torch,export,video])"),
    "nvan-export --model ste_nvan.keras --out models/nvan/1":
        Run("export", needs=("ste_nvan.keras",), writes=("models/nvan/1/saved_model.pb",)),
    "nvan-export --model ste_nvan.keras --out onnx --format onnx":
        # an alternative to the int8 line, which writes onnx/model.onnx too (refused there without --overwrite)
        Run("onnx", needs=("ste_nvan.keras",), cwd="onnx_fp32", writes=("onnx/model.onnx",)),
    ONNX_INT8_LINE: Run("onnx", set={"--calibration-batches": "2", "--calibration-batch-size": "2"},
                        needs=("ste_nvan.keras", "data/MARS"), writes=("onnx/model.onnx", "onnx/model.int8.onnx"),
                        expect=("int8 vs Keras fp32 on", "clips of tracklets not calibrated on: cosine min")),
    "nvan-export --model ckpt_best.pth --variant ste-nvan --out trt --format tensorrt --precision fp16":
        CannotRun("needs an NVIDIA GPU and TensorRT ([tensorrt]); tests/test_export_onnx.py::test_tensorrt_engine "
                  "builds engines where they are, test_export_cli.py checks the message given here"),
    # nvan-track
    "nvan-track --camera 1=cam1.mp4 2=cam2.mkv@35.0 3=frames/cam3 --detections 1=cam1/det.txt 2=cam2/det.txt "
    "3=cam3/det.txt --model ste_nvan.keras --calibrate labelled/ --out runs/track":
        Run("track", set={"--crop-size": ["64", "32"]}, needs=("cameras", "labelled", "ste_nvan.keras"),
            writes=("runs/track/identities.csv", "runs/track/gallery.npz", "runs/track/report/index.html")),
    "make demo-video": Run("track", instead="python -m nvan_tf.video.demo --output-dir demo_output/video "
                                            "--model demo_output/train/model.keras",
                           set={"--cameras": "2", "--identities": "4", "--frames": "60"},
                           needs=("demo_output/train/model.keras",),
                           writes=("demo_output/video/track/report/index.html",)),
}
GROUPS = ("convert", "train", "search", "evaluate", "export", "onnx", "track")


# -----------------------------------------------------------------------------
# The toy files the README's paths name
# -----------------------------------------------------------------------------
def _synthetic_mars(path, ws):
    from nvan_tf.data.datasets import synthetic

    synthetic.generate(path, num_ids=12, cameras=3, seed=0, height=64, width=32, frames=(4, 8))


def _dukev(path, ws):
    tracks = [(pid, cam, cam, 4) for pid in range(1, 5) for cam in (1, 2)]  # (pid, tracklet, camera, frames)
    data_trees.write_dukev_tree(path, {"train": tracks, "query": [(pid, 1, 1, 4) for pid in (5, 6)],
                                       "gallery": [(pid, 2, 2, 4) for pid in (5, 6)]})


def _folder(path, ws):
    data_trees.write_folder_tree(path, {"train": [(pid, cam, 1, 4) for pid in range(1, 5) for cam in (1, 2)],
                                        "query": [(pid, 1, 1, 4) for pid in (5, 6)],
                                        "gallery": [(pid, 2, 1, 4) for pid in (5, 6)]})


def _ilidsvid(path, ws):
    data_trees.write_ilidsvid_tree(os.path.dirname(path), persons=range(1, 9), frames=4)


def _torch_reference(variant):
    from tests.torch_reference import build_reference, randomize_, reference_state_dict

    small = toy.smallest(variant)  # MODEL's depth
    model = build_reference(variant, 6, non_layers=small.get("non_local", (0, 0, 0, 0)), stripes=4,
                            blocks=small["stage_blocks"])
    return reference_state_dict(randomize_(model, seed=0).eval())


def _authors_checkpoint(path, ws):
    import torch

    torch.save(_torch_reference("ste-nvan"), path)


def _torchvision_resnet50(path, ws):
    """A torchvision ResNet state_dict (the backbone keys and an ImageNet fc), of MODEL's depth."""
    import torch

    prefix = "module.features.backbone."
    state = {k[len(prefix):]: v for k, v in _torch_reference("baseline").items() if k.startswith(prefix)}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    torch.save(state, path)


def _trained_model(path, ws):
    """The tiny model the README's first nvan-train line trains."""
    ws.run(TRAIN_LINE)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    shutil.copy(os.path.join(ws.root, "runs", "ste_nvan", "model.keras"), path)


def _trained_weights(path, ws):
    from nvan_tf.io import loading

    loading.save_weights(loading.load_model(ws.input("ste_nvan.keras")), path)


def _cameras(path, ws):
    """cam1.mp4, cam2.mkv, frames/cam3 and camK/det.txt: a synthetic world's
    three cameras as a video file, another container, a folder of frames."""
    from PIL import Image

    from nvan_tf.video.sources import CameraReader, VideoWriter
    from nvan_tf.video.world import WorldConfig, generate_world, read_world

    world_root = os.path.join(path, "world")
    generate_world(world_root, WorldConfig(cameras=3, identities=4, frames=60, height=144, width=256, seed=0))
    world, specs = read_world(world_root)
    for camera, spec in zip(world["cameras"], specs):
        k = camera["camid"]
        os.makedirs(os.path.join(ws.root, f"cam{k}"), exist_ok=True)
        shutil.copy(os.path.join(world_root, camera["det"]), os.path.join(ws.root, f"cam{k}", "det.txt"))
        if k == 1:
            shutil.copy(os.path.join(world_root, camera["video"]), os.path.join(ws.root, "cam1.mp4"))
            continue
        reader = CameraReader(spec)
        if k == 2:
            with VideoWriter(os.path.join(ws.root, "cam2.mkv"), camera["fps"], reader.width, reader.height) as out:
                for frame in reader:
                    out.write(frame.image)
        else:
            os.makedirs(os.path.join(ws.root, "frames", "cam3"))
            for i, frame in enumerate(reader):
                Image.fromarray(frame.image).save(os.path.join(ws.root, "frames", "cam3", f"{i:06d}.jpg"))


def _labelled(path, ws):
    data_trees.write_folder_tree(path, {"query": [(pid, 1, 1, 4) for pid in (1, 2, 3)],
                                        "gallery": [(pid, 2, 1, 4) for pid in (1, 2, 3)]}, size=(64, 32))


# name (a path relative to the working folder) -> (what it is, how it is made)
INPUTS = {
    "data/MARS": "synthetic tracklets in the MARS layout (12 identities, 3 cameras, 64x32)",
    "data/DukeMTMC-VideoReID": "the DukeMTMC-VideoReID layout (tests/data_trees.py)",
    "my_footage": "the folder layout (train / query / gallery, tests/data_trees.py)",
    "data/i-LIDS-VID": "the iLIDS-VID layout, 8 persons (tests/data_trees.py), read with --root data",
    "ckpt_best.pth": "an authors' STE-NVAN checkpoint (4 stripes, 6 identities, MODEL's depth, "
                     "tests/torch_reference.py)",
    "resnet50-0676ba61.pth": "a torchvision ResNet state_dict (random weights, MODEL's depth, "
                             "tests/torch_reference.py)",
    "ste_nvan.keras": "the tiny model TRAIN_LINE trains (runs/ste_nvan/model.keras)",
    "m.keras": "the same",
    "demo_output/train/model.keras": "the same (what make demo would have trained)",
    "model.weights.h5": "the same, as weights with their config",
    "cameras": "cam1.mp4, cam2.mkv, frames/cam3, camK/det.txt: a synthetic world's cameras (nvan_tf.video.world)",
    "labelled": "a labelled folder dataset (query / gallery), identities 1-3 in two cameras",
}
_MAKE = {"data/MARS": _synthetic_mars, "data/DukeMTMC-VideoReID": _dukev, "my_footage": _folder,
         "data/i-LIDS-VID": _ilidsvid, "ckpt_best.pth": _authors_checkpoint,
         "resnet50-0676ba61.pth": _torchvision_resnet50, "ste_nvan.keras": _trained_model, "m.keras": _trained_model,
         "demo_output/train/model.keras": _trained_model, "model.weights.h5": _trained_weights,
         "cameras": _cameras, "labelled": _labelled}
_LINKED = {"cameras": ("cam1.mp4", "cam2.mkv", "frames", "cam1", "cam2", "cam3")}


class Workspace:
    """The working folder: inputs made and README lines run once each."""

    def __init__(self, root):
        self.root, self.results, self.made, self.seconds = str(root), {}, set(), {}
        self.env = user_environment(NVAN_TF_CACHE=os.path.join(self.root, ".cache"))

    def input(self, name):
        path = os.path.join(self.root, name)
        if name not in self.made:
            _MAKE[name](path, self)
            self.made.add(name)
        return path

    def _folder(self, run):
        folder = os.path.join(self.root, run.cwd)
        os.makedirs(folder, exist_ok=True)
        for need in run.needs:
            if need in INPUTS and run.cwd != ".":
                for name in _LINKED.get(need, (need,)):
                    link = os.path.join(folder, name)
                    if not os.path.lexists(link):
                        os.makedirs(os.path.dirname(link), exist_ok=True)
                        os.symlink(os.path.join(self.root, name), link)
        return folder

    def run(self, line):
        """Runs ``line`` once (its needs first); its failure message or None."""
        if line not in self.results:
            run = TABLE[line]
            failed = [self.run(need) for need in run.needs if need in TABLE]
            for need in run.needs:
                if need in INPUTS:
                    self.input(need)
            failed = [f for f in failed if f]
            started = time.perf_counter()
            self.results[line] = (f"{line}\n  not run: a line it needs failed" if failed else
                                  run_line(line, run, self._folder(run), env=self.env))
            self.seconds[line] = time.perf_counter() - started
        return self.results[line]

    def run_group(self, group):
        lines = [line for line in command_lines(open(README, encoding="utf-8").read())
                 if isinstance(TABLE.get(line), Run) and TABLE[line].group == group]
        assert lines, f"no README command line is in group {group!r}"
        failures = [f for f in (self.run(line) for line in lines) if f]
        for line in lines:  # shown with pytest -rP
            print(f"{self.seconds.get(line, 0.0):6.1f} s  {line}")
        return failures


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("readme"))


# -----------------------------------------------------------------------------
# The table against the README (fast)
# -----------------------------------------------------------------------------
def readme_lines():
    return command_lines(open(README, encoding="utf-8").read())


def test_every_readme_command_has_an_entry():
    missing = [line for line in readme_lines() if line not in TABLE]
    assert not missing, ("README command lines without an entry in tests/test_readme_commands.py's TABLE "
                         "(add how this test runs each, or why it cannot):\n" + "\n".join(missing))


def test_no_entry_is_stale():
    lines = set(readme_lines())
    stale = [line for line in TABLE if line not in lines]
    assert not stale, "TABLE entries whose line is no longer in the README:\n" + "\n".join(stale)


def test_no_readme_command_is_wrong():
    wrong = [f"{line}\n  {entry.reason}" for line, entry in TABLE.items() if isinstance(entry, Todo)]
    assert not wrong, "README command lines that do not run as written (fix README.md):\n" + "\n".join(wrong)


def test_entries_are_well_formed():
    here = open(__file__, encoding="utf-8").read()
    tests = {node.name for node in ast.walk(ast.parse(here)) if isinstance(node, ast.FunctionDef)}
    for line, entry in TABLE.items():
        if isinstance(entry, Elsewhere):
            path, _, name = entry.test.partition("::")
            assert os.path.isfile(os.path.join(ROOT, path)), f"{line}: {path} does not exist"
            tree = ast.parse(open(os.path.join(ROOT, path), encoding="utf-8").read())
            assert name in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}, \
                f"{line}: {path} has no test {name}"
        elif isinstance(entry, Run):
            assert entry.group in GROUPS and f"test_{entry.group}_commands" in tests, (line, entry.group)
            for need in entry.needs:
                assert need in INPUTS or isinstance(TABLE.get(need), Run), (line, need)
            toy_words(entry.instead.split()[1:] if entry.instead else line.split()[1:], entry)
        else:
            assert isinstance(entry, (CannotRun, Todo)) and entry.reason, line
    assert set(INPUTS) == set(_MAKE)


def test_command_lines_and_toy_words():
    text = "\n".join([
        "```bash", "a --x 1   # a comment", "", "# only a comment", "b --y '#not' \\", "    --z 2 3 \\",
        "    --w", "```", "```python", "c = 1", "```", "- item:", "", "  ```bash", "  d && e", "  ```"])
    assert command_lines(text) == ["a --x 1", "b --y '#not' --z 2 3 --w", "d && e"]
    words = "--z 2 3 --w --keep 5".split()
    assert toy_words(words, Run("g", set={"--z": "4", "--new": ["6", "7"], "--w": None}, drop=("--keep",))) == \
        ["--z", "4", "--w", "--new", "6", "7"]
    with pytest.raises(ValueError, match="cannot drop"):
        toy_words(words, Run("g", drop=("--absent",)))


# -----------------------------------------------------------------------------
# The commands, run (slow)
# -----------------------------------------------------------------------------
def _check(workspace, group):
    failures = workspace.run_group(group)
    assert not failures, "README commands that failed:\n\n" + "\n\n".join(failures)


@pytest.mark.slow
@pytest.mark.xdist_group("readme_commands")  # one working folder: the trained model is shared
def test_convert_commands(workspace):
    _check(workspace, "convert")


@pytest.mark.slow
@pytest.mark.xdist_group("readme_commands")
def test_train_commands(workspace):
    _check(workspace, "train")


@pytest.mark.slow
@pytest.mark.xdist_group("readme_commands")
def test_search_commands(workspace):
    _check(workspace, "search")


@pytest.mark.slow
@pytest.mark.xdist_group("readme_commands")
def test_evaluate_commands(workspace):
    _check(workspace, "evaluate")


@pytest.mark.slow
@pytest.mark.xdist_group("readme_commands")
def test_export_commands(workspace):
    _check(workspace, "export")


@pytest.mark.slow
@pytest.mark.xdist_group("readme_commands")
def test_track_commands(workspace):
    pytest.importorskip("av", reason="needs the [video] extra")
    _check(workspace, "track")


@pytest.mark.slow
@pytest.mark.xdist_group("readme_commands")
def test_onnx_commands(workspace):
    pytest.importorskip("tf2onnx", reason="needs the [export] extra")
    _check(workspace, "onnx")
