"""Multi-worker training as a user starts it: ``nvan-train --strategy multiworker``.

Two console-script processes on 127.0.0.1, each with its ``TF_CONFIG``, one
shared output folder, the quiet defaults (no ``--verbose``) and evaluation
after every epoch: the command of the README's multi-worker section at toy
size. Killed (SIGKILL, from outside, mid-run) and started again, the pair
resumes at one step and ends with the weights of an uninterrupted pair.
"""

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from nvan_tf.data.datasets import synthetic
from nvan_tf.training import checkpoints

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NVAN_TRAIN = os.path.join(os.path.dirname(sys.executable), "nvan-train")
# the README's multi-worker command (docs: "Several GPUs or machines"), without --root / --output-dir
COMMAND = ["--dataset", "synthetic", "--variant", "ste-nvan", "--seq-len", "4", "--height", "64", "--width", "32",
           "--stripes", "4", "--stage-blocks", "1,1,1,1", "--non-local", "0,1,1,0", "--p", "4", "--k", "2",
           "--steps-per-epoch", "2", "--epochs", "2", "--eval-every", "1", "--strategy", "multiworker"]
SCORE = re.compile(r"epoch (\d+): test rank-1 ([\d.]+)%, mAP ([\d.]+)%")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    # as the README's `python -m nvan_tf.data.datasets.synthetic --ids 12 --cameras 3 --height 64 --width 32`
    return synthetic.generate(str(folder / "synthetic"), num_ids=12, cameras=3, seed=0, height=64, width=32)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_pair(logs, root, folders, extra=()):
    """Starts the two workers; their output goes to files (a worker blocked
    on a full pipe would stall its partner)."""
    ports = _free_ports(2)
    processes = []
    for index, folder in enumerate(folders):
        tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                     "task": {"type": "worker", "index": index}}
        env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
        env["TF_CONFIG"] = json.dumps(tf_config)
        log = open(logs / f"worker{index}.log", "w+")
        argv = [NVAN_TRAIN, *COMMAND, "--root", root, "--output-dir", str(folder), *extra]
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        process.log = log
        processes.append(process)
    return processes


def finish(process, timeout=900):
    process.wait(timeout=timeout)
    process.log.seek(0)
    output = process.log.read()
    process.log.close()
    return output


def run_pair(logs, root, folders, extra=()):
    logs.mkdir(parents=True, exist_ok=True)
    processes = start_pair(logs, root, folders, extra)
    outputs = [finish(p) for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    return outputs


def history(folder):
    with open(os.path.join(folder, "history.csv")) as f:
        return list(csv.DictReader(f))


def keras_weights(path):
    import nvan_tf

    return [np.asarray(w) for w in nvan_tf.load_model(str(path)).get_weights()]


def relative_difference(a, b):
    return np.sqrt(sum(np.sum((x - y) ** 2) for x, y in zip(a, b))) / np.sqrt(sum(np.sum(y ** 2) for y in b))


def read_only_view(source, view):
    """``view``: ``source`` mounted read-only (root only); False where this
    system does not allow it."""
    os.makedirs(view, exist_ok=True)
    bind = subprocess.run(["mount", "--bind", str(source), str(view)], capture_output=True)
    if bind.returncode:
        return False
    if subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], capture_output=True).returncode:
        subprocess.run(["umount", str(view)])
        return False
    return True


@pytest.fixture(scope="module")
def pair(data_root, tmp_path_factory):
    """The README command on two workers, worker 1 seeing the shared folder
    read-only where the system allows (so it cannot have written there)."""
    tmp = tmp_path_factory.mktemp("pair")
    shared, view = tmp / "shared", tmp / "shared_view"
    shared.mkdir()
    mounted = read_only_view(shared, view)
    try:
        outputs = run_pair(tmp / "logs", data_root, [shared, view if mounted else shared])
    finally:
        if mounted:
            subprocess.run(["umount", str(view)])
    return {"folder": shared, "outputs": outputs, "read_only": mounted}


def test_two_workers_started_as_documented_train_and_evaluate_every_epoch(pair):
    chief, other = pair["outputs"]
    for output in pair["outputs"]:
        # quiet by default: no TensorFlow start-up lines, no Python warnings
        assert "oneDNN" not in output and "cuInit" not in output and "Warning" not in output, output[-3000:]
    rows = history(pair["folder"])
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row in rows:
        assert row["rank1"] != "" and row["mAP"] != "", rows
    # every worker has the chief's scores, the same as the history
    scores = [[m.groups() for m in SCORE.finditer(output)] for output in pair["outputs"]]
    assert scores[0] == scores[1] and len(scores[0]) == 2, scores
    for (epoch, rank1, mAP), row in zip(scores[0], rows):
        assert abs(float(rank1) - 100 * float(row["rank1"])) < 0.01
        assert abs(float(mAP) - 100 * float(row["mAP"])) < 0.01
    assert "best: epoch" in chief and "best: epoch" in other
    assert chief.split("best:")[1].splitlines()[0] == other.split("best:")[1].splitlines()[0]
    for name in ("config.json", "history.csv", "model.keras", "last.keras", "training.png"):
        assert os.path.exists(os.path.join(pair["folder"], name)), name
    assert [n for n in os.listdir(pair["folder"] / "checkpoints") if n.startswith(".tmp-")] == []


def test_only_the_chief_writes(pair):
    if not pair["read_only"]:
        pytest.skip("a read-only bind mount needs root and mount(8): worker 1 could not be given a read-only view")
    # worker 1 ran to the end on a read-only view of the folder the chief wrote
    assert "Read-only file system" not in pair["outputs"][1]
    assert checkpoints.latest(str(pair["folder"] / "checkpoints"))["batches"] == 4


def test_the_pair_trains_as_one_process_on_the_same_global_batches(pair, data_root, tmp_path):
    single = tmp_path / "single"
    assert COMMAND[-2:] == ["--strategy", "multiworker"]
    argv = [NVAN_TRAIN, *COMMAND[:-2], "--root", data_root,
            "--output-dir", str(single)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    difference = relative_difference(keras_weights(pair["folder"] / "last.keras"), keras_weights(single / "last.keras"))
    assert difference <= 0.05, difference


def test_killed_and_restarted_the_pair_resumes_at_one_step_and_ends_as_the_uninterrupted_one(
        pair, data_root, tmp_path):
    folder = tmp_path / "run"
    extra = ["--checkpoint-every", "1"]
    (tmp_path / "killed").mkdir()
    processes = start_pair(tmp_path / "killed", data_root, [folder, folder], extra)
    state = folder / "checkpoints" / "checkpoint"
    deadline = time.time() + 900
    while not (state.exists() and "ckpt-1" in state.read_text()):  # batch 1 of 4 is checkpointed
        assert all(p.poll() is None for p in processes), [finish(p)[-2000:] for p in processes]
        assert time.time() < deadline, "no checkpoint was written"
        time.sleep(0.02)
    for process in processes:
        process.send_signal(signal.SIGKILL)
    for process in processes:
        finish(process)
        assert process.returncode == -signal.SIGKILL
    kept = checkpoints.latest(str(folder / "checkpoints"))["batches"]
    assert 1 <= kept < 4, kept  # killed mid-run
    outputs = run_pair(tmp_path / "resumed", data_root, [folder, folder], extra)
    for output in outputs:
        assert f"at batch {kept}" in output and "resumed" in output, output[-3000:]
    rows = history(folder)
    assert [int(r["epoch"]) for r in rows] == [1, 2] and all(r["rank1"] != "" for r in rows)
    assert checkpoints.latest(str(folder / "checkpoints"))["batches"] == 4
    resumed, whole = keras_weights(folder / "last.keras"), keras_weights(pair["folder"] / "last.keras")
    for x, y in zip(resumed, whole):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_a_worker_that_cannot_see_the_chiefs_folder_stops_both_saying_why(pair, data_root, tmp_path):
    import shutil

    shared = tmp_path / "shared"
    shutil.copytree(pair["folder"], shared)  # a finished run: both resume from ckpt-4
    (tmp_path / "logs").mkdir()
    processes = start_pair(tmp_path / "logs", data_root, [shared, tmp_path / "elsewhere"], ["--epochs", "3"])
    outputs = [finish(p, timeout=600) for p in processes]
    assert all(p.returncode != 0 for p in processes)
    assert "this worker cannot see the chief's checkpoint ckpt-4" in outputs[1]
    assert "every worker must use one output folder on storage they all see" in outputs[0]
