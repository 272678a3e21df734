"""A distributed nvan-tune, started as a user starts it: the console script in
three processes on 127.0.0.1 (keras-tuner's chief oracle and two workers,
configured by KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP /
KERASTUNER_ORACLE_PORT), one shared --output-dir, four trials at toy size.

One scenario, to keep the time down (every process imports TensorFlow and
builds its models, on CI's two cores): worker tuner1 is killed (SIGKILL)
during its first trial; tuner0 (under --strategy mirrored) runs the other
trials and stops; the
chief keeps waiting for the killed trial; a worker started with the wrong
settings is refused meanwhile; tuner1, restarted with the same id, gets its
trial back from the oracle and runs it again; then the chief writes the
summary, once.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from nvan_tf.data.datasets import synthetic

NVAN_TUNE = os.path.join(os.path.dirname(sys.executable), "nvan-tune")
# the README's "Search across machines" commands, with the synthetic tree and folder of the test
SEARCH = ["--dataset", "synthetic", "--variant", "baseline", "--max-trials", "4", "--epochs", "1",
          "--seq-len", "4", "--height", "64", "--width", "32", "--stage-blocks", "1,1,1,1", "--p", "2", "--k", "2",
          "--val-ids", "2", "--steps-per-epoch", "1", "--quiet"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth")
    return synthetic.generate(str(folder), num_ids=10, cameras=3, seed=0, height=64, width=32, frames=(4, 8))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tuner_id, port, args, log):
    env = {**os.environ, "KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": "127.0.0.1",
           "KERASTUNER_ORACLE_PORT": str(port)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the user's default: quiet through nvan-tune itself
    return subprocess.Popen([NVAN_TUNE, *args], env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):  # not there yet, or being replaced
        return None


def wait_until(condition, what, procs, timeout=300):
    deadline = time.time() + timeout
    while not condition():
        dead = {name: p.returncode for name, p in procs.items() if p.poll() is not None}
        if dead or time.time() > deadline:
            pytest.fail(f"{what}: not reached (ended: {dead or 'none'}, timeout {timeout} s)")
        time.sleep(0.1)


@pytest.mark.slow
def test_chief_and_two_workers_share_a_search_through_a_killed_worker(tmp_path, data_root):
    out = tmp_path / "search"
    args = [*SEARCH, "--root", data_root, "--output-dir", str(out)]
    trials = out / "trials"
    port = free_port()
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("chief", "tuner0", "tuner1", "tuner1-again",
                                                                   "stranger")}

    def text(name):
        if not logs[name].closed:
            logs[name].flush()
        return (tmp_path / f"{name}.log").read_text()

    procs = {}
    try:
        procs["chief"] = start("chief", port, args, logs["chief"])
        procs["tuner0"] = start("tuner0", port, [*args, "--strategy", "mirrored"], logs["tuner0"])
        procs["tuner1"] = start("tuner1", port, args, logs["tuner1"])

        def tuner1_trial():
            for name in sorted(os.listdir(trials)) if trials.exists() else ():
                record = read_json(trials / name / "worker.json")
                status = (read_json(trials / name / "trial.json") or {}).get("status")
                if record and record["runs"][-1]["worker"] == "tuner1" and status == "RUNNING":
                    return name
            return None

        wait_until(tuner1_trial, "tuner1 running a trial", procs)
        killed = tuner1_trial()
        procs["tuner1"].send_signal(signal.SIGKILL)
        assert procs.pop("tuner1").wait() == -signal.SIGKILL

        # a worker with other settings is refused, naming them, and joins nothing
        stranger = start("tuner2", port, [*args, "--epochs", "2"], logs["stranger"])
        assert stranger.wait(timeout=300) == 2, text("stranger")
        assert "holds the chief's search of other settings" in text("stranger")
        assert "train.epochs: 1 in the search, 2 now" in text("stranger"), text("stranger")

        # tuner0 runs the three other trials and stops; the chief waits for the killed one
        assert procs.pop("tuner0").wait(timeout=600) == 0, text("tuner0")
        assert "worker tuner0: ran trials" in text("tuner0")
        assert procs["chief"].poll() is None, text("chief")
        assert read_json(trials / killed / "trial.json")["status"] == "RUNNING"
        assert not (out / "trials.csv").exists() and not (out / "best_config.json").exists()

        # tuner1 again: the oracle hands it its interrupted trial first
        procs["tuner1-again"] = start("tuner1", port, args, logs["tuner1-again"])
        assert procs.pop("tuner1-again").wait(timeout=600) == 0, text("tuner1-again")
        killed_number = int(killed.split("_")[1])
        assert f"worker tuner1: ran trials {killed_number};" in text("tuner1-again"), text("tuner1-again")
        assert procs.pop("chief").wait(timeout=120) == 0, text("chief")
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
        for f in logs.values():
            f.close()

    with open(out / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # no trial unaccounted for: the four of the budget, each completed (none needed marking failed)
    assert sorted(int(r["trial"]) for r in rows) == [0, 1, 2, 3]
    assert [r["status"] for r in rows] == ["COMPLETED"] * 4, rows
    by_trial = {int(r["trial"]): r for r in rows}
    assert (by_trial[killed_number]["worker"], by_trial[killed_number]["runs"]) == ("tuner1", "2")
    others = [r for n, r in by_trial.items() if n != killed_number]
    assert [(r["worker"], r["runs"]) for r in others] == [("tuner0", "1")] * 3
    for r in rows:
        assert 0.0 < float(r["mAP"]) <= 1.0 and float(r["score"]) == float(r["mAP"])
    # the chief wrote the summary after the last trial ended
    last_end = max(os.path.getmtime(trials / f"trial_{r['trial']}" / "trial.json") for r in rows)
    assert os.path.getmtime(out / "trials.csv") >= last_end
    assert (out / "trials.png").read_bytes().startswith(b"\x89PNG")
    best = json.loads((out / "best_config.json").read_text())
    assert best["mAP"] == max(float(r["score"]) for r in rows)
    assert "4 trials (4 run now); best: trial" in text("chief")
