"""Hyper-parameter search: the search space's rules against the model, two
tiny keras-tuner trials on synthetic data (the second killed with SIGKILL and
resumed), the objective against the evaluation of the best trial's weights,
the summary files, and the command line's errors.

Small sizes keep it fast: clips of 4 frames at 64x32, one residual block a
stage (tests/toy.py), P=2 x K=2, one step per epoch, one epoch per trial, one
non-local block.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from nvan_tf.cli import train as train_cli
from nvan_tf.cli import tune as tune_cli
from nvan_tf.training import tuning
from nvan_tf.data.datasets import synthetic
from nvan_tf.training.loop import TrainConfig
from tests import toy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = ["--seq-len", "4", "--height", "64", "--width", "32", *toy.SHALLOW_FLAG, "--p", "2", "--k", "2",
        "--val-ids", "2", "--steps-per-epoch", "1", "--epochs", "1"]
SPACE = ["--non-local", "0,0,1,0", "--stripes", "2", "4", "--margin", "soft", "0.3"]


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth")
    return synthetic.generate(str(folder), num_ids=10, cameras=3, seed=0, height=64, width=32,
                              frames=(4, 8))


def search_args(root, output_dir, *extra):
    return ["--dataset", "mars", "--root", root, "--variant", "ste-nvan", "--algorithm", "bayesian",
            "--objective", "mAP", "--max-trials", "2", "--output-dir", str(output_dir), "--quiet",
            *SIZE, *SPACE, *extra]


# -- the search space ----------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=(1e-3, 1e-5)), "lr must be a range"),
    (dict(weight_decay=(0.0, 1e-4)), "weight_decay must be a range"),
    (dict(margin=("hard",)), "margin values must be 'soft' or numbers"),
    (dict(margin=(-0.3,)), "margin values must be 'soft' or >= 0"),
    (dict(label_smoothing=(0.0, 1.0)), r"label_smoothing values must be in \[0.0, 1.0\)"),
    (dict(seq_len=(4, 4)), "seq_len lists a value twice"),
    (dict(seq_len=()), "seq_len needs at least one value"),
    (dict(non_local=("0,2,3",)), r"non_local needs one integer per stage res2..res5"),
    (dict(non_local=("0,5,0,0",)), "asks for 5 blocks in res3, which has 4"),
    (dict(non_local=("1,0,0,0",)), "blocks in res2 \\(stage 1\\), which is not supported"),
    (dict(non_local=((0, 2, 3, 0), "a,b")), "4 comma-separated block counts"),
])
def test_bad_search_spaces_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tuning.SearchSpace(**kwargs)


@pytest.mark.parametrize("variant, kwargs, height, message", [
    ("ste-nvan", dict(stripes=(4, 8)), 64, r"stripes must divide the feature heights res3: 8, res4: 4 .*"
                                            r"Received: stripes=\[8\]"),
    ("ste-nvan", dict(seq_len=(4, 6)), 64, "6: the res4 non-local blocks group frames in 2s and see 3"),
    ("nvan-temporal", dict(seq_len=(2,)), 64, "2: the temporal max after res4 halves the frames, and 1 is odd"),
    ("baseline", dict(stripes=(2,)), 64, "variant 'baseline' has no non-local blocks"),
    ("nvan", dict(stripes=(2,)), 64, "stripes apply to"),
])
def test_spaces_that_do_not_fit_the_variant_are_refused(variant, kwargs, height, message):
    with pytest.raises(ValueError, match=message):
        tuning.SearchSpace(**kwargs).resolve(variant, height)


@pytest.mark.slow
def test_resolved_space_matches_the_model():
    from nvan_tf.models.backbone import VideoResNet50
    from nvan_tf.models.model import build_model

    # the feature heights: res5 (last stride 1) is what the backbone returns
    for height in (64, 70, 100, 256):
        assert tuning._feature_heights(height)[3] == VideoResNet50().compute_output_shape(
            (None, 4, height, 32, 3))[2]
    assert tuning.SearchSpace().resolve("ste-nvan", 64).stripes == (2, 4)
    assert tuning.SearchSpace().resolve("ste-nvan", 256).stripes == (2, 4, 8, 16)
    baseline = tuning.SearchSpace().resolve("baseline", 256)
    assert (baseline.non_local, baseline.stripes) == ((), ())
    tables = tuning.SearchSpace.DEFAULT_NON_LOCAL
    valid = {v: [t for t in range(1, 9) if not tuning._seq_len_problem(v, t, tables)]
             for v in ("nvan", "nvan-temporal", "ste-nvan")}
    assert valid == {"nvan": list(range(1, 9)), "nvan-temporal": [4, 8], "ste-nvan": [4, 8]}
    # what the rules refuse, the layers refuse too
    for variant, overrides in [("ste-nvan", dict(seq_len=2, stripes=2)),
                               ("ste-nvan", dict(seq_len=6, stripes=2)),
                               ("nvan-temporal", dict(seq_len=2)), ("nvan-temporal", dict(seq_len=6)),
                               ("ste-nvan", dict(seq_len=4, stripes=8))]:
        with pytest.raises(ValueError, match="Received"):
            build_model(variant, 5, height=64, width=32, non_local=(0, 2, 3, 0), **overrides)


def test_trial_config_applies_the_values():
    base = TrainConfig(variant="ste-nvan", seq_len=8, model_overrides={"stripes": 16})
    config = tuning.trial_config(base, {"lr": 2e-4, "weight_decay": 1e-6, "margin": "0.3",
                                        "identity_weight": 0.5, "label_smoothing": 0.1, "seq_len": 4,
                                        "non_local": "0,1,1,0", "stripes": 4})
    assert (config.lr, config.weight_decay, config.margin, config.identity_weight,
            config.label_smoothing, config.seq_len) == (2e-4, 1e-6, 0.3, 0.5, 0.1, 4)
    assert config.model_overrides == {"stripes": 4, "non_local": (0, 1, 1, 0)}
    assert base.model_overrides == {"stripes": 16}


# -- the command line's errors ---------------------------------------------------------


@pytest.mark.parametrize("extra, message", [
    (["--seq-len", "6"], "--seq-len values that do not fit variant 'ste-nvan'"),
    (["--stripes", "8"], "--stripes must divide the feature heights"),
    (["--lr", "1e-3", "1e-5"], "--lr must be a range"),
    (["--max-trials", "0"], "--max-trials must be a positive integer"),
    (["--factor", "1"], "--factor must be an integer >= 2"),
])
def test_bad_arguments_are_reported(tmp_path, capsys, synth_root, extra, message):
    assert train_cli.main(["--tune", *search_args(synth_root, tmp_path / "s"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nvan-train --tune: error: ") and message in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "s" / "trials").exists()


def test_a_shallower_depth_starts_from_the_first_searched_table(capsys):
    """The recipe's placement table is the space's first, not the variant's (0, 2, 3, 0), which one
    residual block a stage cannot hold."""
    assert tune_cli.main(["--variant", "ste-nvan", "--stage-blocks", "1,1,1,1", "--non-local", "0,1,1,0", "0,0,1,0",
                          "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["train"]["model_overrides"] == {"stage_blocks": [1, 1, 1, 1], "non_local": [0, 1, 1, 0]}
    assert printed["space"]["non_local"] == ["0,1,1,0", "0,0,1,0"]


def test_a_missing_dataset_is_reported(tmp_path, capsys):
    args = search_args(str(tmp_path / "nowhere"), tmp_path / "s")
    assert tune_cli.main(args) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "nowhere" in err, err


# -- a distributed search's settings (tests/test_tuning_distributed.py runs one) ------------


@pytest.mark.parametrize("env, message", [
    ({"KERASTUNER_TUNER_ID": "tuner0"}, "KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT are missing"),
    ({"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "8000"}, "KERASTUNER_TUNER_ID are missing"),
    ({"KERASTUNER_TUNER_ID": "", "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "8000"},
     "KERASTUNER_TUNER_ID are missing or empty"),
    ({"KERASTUNER_TUNER_ID": "tuner0", "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "http"},
     "KERASTUNER_ORACLE_PORT must be a port number"),
    ({"KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "70000"},
     "KERASTUNER_ORACLE_PORT must be a port number"),
])
def test_incomplete_cluster_variables_are_refused_by_name(env, message):
    with pytest.raises(ValueError, match=message):
        tuning.cluster_role(env)


def test_cluster_roles():
    assert tuning.cluster_role({}) is None
    role = tuning.cluster_role({"KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "10.0.0.1",
                                "KERASTUNER_ORACLE_PORT": "8000"})
    assert (role.chief, role.address) == (True, "10.0.0.1:8000")
    assert not tuning.cluster_role({"KERASTUNER_TUNER_ID": "tuner3", "KERASTUNER_ORACLE_IP": "10.0.0.1",
                                    "KERASTUNER_ORACLE_PORT": "8000"}).chief


def test_missing_grpc_is_named_with_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "grpc", None)  # what an environment without grpcio imports
    with pytest.raises(ImportError, match=r"needs grpcio and protobuf.*pip install 'nvan-tf\[tune-distributed\]'"):
        tuning.cluster_role({"KERASTUNER_TUNER_ID": "tuner0", "KERASTUNER_ORACLE_IP": "127.0.0.1",
                             "KERASTUNER_ORACLE_PORT": "8000"})


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_worker_without_an_oracle_gives_up_in_the_time_given(tmp_path, capsys, monkeypatch, synth_root):
    port = _free_port()
    for name, value in (("KERASTUNER_TUNER_ID", "tuner0"), ("KERASTUNER_ORACLE_IP", "127.0.0.1"),
                        ("KERASTUNER_ORACLE_PORT", str(port))):
        monkeypatch.setenv(name, value)
    begun = time.monotonic()
    assert tune_cli.main([*search_args(synth_root, tmp_path / "s"), "--oracle-timeout", "1"]) == 2
    assert time.monotonic() - begun < 60
    err = capsys.readouterr().err
    assert (f"worker 'tuner0' could not reach the oracle at 127.0.0.1:{port} (KERASTUNER_ORACLE_IP, "
            "KERASTUNER_ORACLE_PORT) within 1 s") in err, err
    assert not (tmp_path / "s").exists()  # a worker writes nothing of its own


def test_a_chief_whose_port_is_taken_is_refused(tmp_path, capsys, monkeypatch, synth_root):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for name, value in (("KERASTUNER_TUNER_ID", "chief"), ("KERASTUNER_ORACLE_IP", "127.0.0.1"),
                            ("KERASTUNER_ORACLE_PORT", str(port))):
            monkeypatch.setenv(name, value)
        assert tune_cli.main(search_args(synth_root, tmp_path / "s")) == 2
    err = capsys.readouterr().err
    assert f"the chief cannot listen on 127.0.0.1:{port}" in err and "Address already in use" in err, err
    assert not (tmp_path / "s").exists()


def test_multiworker_trials_are_refused(tmp_path, capsys, synth_root):
    assert tune_cli.main([*search_args(synth_root, tmp_path / "s"), "--strategy", "multiworker"]) == 2
    err = capsys.readouterr().err
    assert "--strategy must be one of ['default', 'mirrored'] in a search" in err, err
    assert "spreads trials over machines" in err and not (tmp_path / "s").exists()


# -- the search ------------------------------------------------------------------------


@pytest.mark.slow
def test_search_is_killed_and_resumed(tmp_path, capsys, synth_root):
    """Two trials; the process is killed during the second; re-running the
    command keeps the first and runs the second again."""
    out = tmp_path / "search"
    args = search_args(synth_root, out)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
    proc = subprocess.Popen([sys.executable, "-m", "nvan_tf.tuning", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    second = out / "trials" / "trial_1" / "trial.json"
    first_json = out / "trials" / "trial_0" / "trial.json"

    def status(path):
        try:
            return json.loads(path.read_text())["status"]
        except (OSError, ValueError, KeyError):  # not there yet, or being written
            return None

    deadline = time.time() + 240
    # the second trial has begun once it is RUNNING, the first is COMPLETED and the tuner runs it (its
    # worker.json: after keras-tuner's oracle.json, which a kill while it is written would leave empty)
    began = out / "trials" / "trial_1" / tuning.WORKER_JSON
    while (status(second) != "RUNNING" or status(first_json) != "COMPLETED" or not began.exists()) \
            and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.fail(f"the search ended (rc {proc.returncode}) before its second trial began:\n"
                    f"{proc.stdout.read()}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    first = out / "trials" / "trial_0"
    assert json.loads((first / "trial.json").read_text())["status"] == "COMPLETED"
    assert json.loads(second.read_text())["status"] == "RUNNING"
    kept = {name: (first / name).read_bytes() for name in ("trial.json", "checkpoint.weights.h5")}
    assert not (out / "trials.csv").exists()

    assert train_cli.main(["--tune", *args]) == 0
    printed = capsys.readouterr().out
    assert "2 trials (1 run now)" in printed, printed
    assert {name: (first / name).read_bytes() for name in kept} == kept  # trial 0 was not re-run
    assert json.loads(second.read_text())["status"] == "COMPLETED"

    with open(out / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["trial"], r["status"]) for r in rows] == [("0", "COMPLETED"), ("1", "COMPLETED")]
    for r in rows:
        assert float(r["score"]) == float(r["mAP"]) and 0.0 < float(r["mAP"]) <= 1.0
        assert r["non_local"] == "0,0,1,0" and r["seq_len"] == "4" and r["stripes"] in ("2", "4")
        assert r["margin"] in ("soft", "0.3") and 3e-5 <= float(r["lr"]) <= 3e-4
    png = (out / "trials.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    best_row = max(rows, key=lambda r: float(r["score"]))
    lines = printed.splitlines()
    assert any(line.startswith("*") and line.split()[1] == best_row["trial"] for line in lines), printed

    best = json.loads((out / "best_config.json").read_text())
    best_config = TrainConfig.from_dict(best["train"])
    assert best["trial"] == int(best_row["trial"]) and best["mAP"] == float(best_row["score"])
    assert best_config.lr == float(best_row["lr"])
    assert best_config.model_overrides["stripes"] == int(best_row["stripes"])
    assert best_config.model_overrides["stage_blocks"] == toy.SHALLOW_BLOCKS  # --stage-blocks: fixed, not searched
    # chosen on the validation split; the test split scored once, for that configuration, reported apart
    assert best["selection"] == "validation" and best["validation"]["mAP"] == float(best_row["mAP"])
    assert set(best["test"]) == {"rank1", "mAP"} and "test split, once, for the best configuration" in printed

    # the objective is the training evaluation of the trial's best weights
    from nvan_tf.data.datasets import build_dataset
    from nvan_tf.training.loop import evaluate_model

    dataset = build_dataset("mars", synth_root, verbose=False)
    config = TrainConfig.preset("ste-nvan", dataset="mars", root=synth_root, seq_len=4, height=64, width=32,
                                p=2, k=2, steps_per_epoch=1, epochs=1, progress=0, val_ids=2,
                                model_overrides={**toy.SHALLOW_OVERRIDES, "non_local": (0, 0, 1, 0)})  # SIZE, SPACE
    space = tuning.SearchSpace(non_local=("0,0,1,0",), stripes=(2, 4), margin=("soft", 0.3), seq_len=(4,))
    hypermodel = tuning.ReIDHyperModel(config, space.resolve("ste-nvan", 64), dataset)
    tuner = tuning.build_tuner(hypermodel, str(out), max_trials=2)
    assert len(tuner.oracle.trials) == 2
    model = tuner.get_best_models(1)[0]
    # keras-tuner's own best (ties between trials may be broken otherwise than in trials.csv)
    tuner_best = next(r for r in rows if int(r["trial"]) == int(tuner.oracle.get_best_trials(1)[0].trial_id))
    assert float(tuner_best["score"]) == float(best_row["score"])
    assert model.config.stripes == int(tuner_best["stripes"])
    from nvan_tf.training import ReIDTask

    # the trials are scored on the validation split (the same held-out identities for the seed)
    assert {r["split"] for r in rows} == {"validation"}
    scores = evaluate_model(model, ReIDTask(config, dataset=dataset).validation_set)
    assert scores["mAP"] == pytest.approx(float(tuner_best["mAP"]), abs=1e-6)
    assert scores["rank1"] == pytest.approx(float(tuner_best["rank1"]), abs=1e-6)

    # other settings are refused, the differences named
    assert tune_cli.main([*args, "--objective", "rank1", "--lr", "1e-4"]) == 2
    err = capsys.readouterr().err
    assert "holds a search of other settings" in err and "objective: 'mAP' in the search, 'rank1' now" in err
    assert "space.lr" in err, err


def test_hyperband_tuner(tmp_path, synth_root):
    import keras_tuner as kt

    from nvan_tf.data.datasets import build_dataset

    config = TrainConfig.preset("nvan", dataset="mars", root=synth_root, seq_len=4, height=64, width=32,
                                p=2, k=2, epochs=9, progress=0, val_ids=2)
    space = tuning.SearchSpace(non_local=("0,0,1,0",), seq_len=(4,)).resolve("nvan", 64)
    hypermodel = tuning.ReIDHyperModel(config, space, build_dataset("mars", synth_root, verbose=False))
    assert hypermodel.steps_per_epoch == (5 - 2) // 2  # (training identities - validation) // P
    tuner = tuning.build_tuner(hypermodel, str(tmp_path), algorithm="hyperband", objective="rank1",
                               max_trials=7, factor=3)
    assert isinstance(tuner, kt.Hyperband)
    assert (tuner.oracle.max_epochs, tuner.oracle.factor, tuner.oracle.max_trials) == (9, 3, 7)
    assert tuner.oracle.objective.name == "rank1" and tuner.oracle.objective.direction == "max"
    names = {hp.name for hp in tuner.oracle.hyperparameters.space}
    assert {"lr", "weight_decay", "margin", "identity_weight", "label_smoothing", "non_local",
            "seq_len"} <= names and "stripes" not in names


@pytest.mark.slow
def test_hyperband_continues_a_trial_from_its_training_state_or_trains_it_again_when_it_is_missing(
        tmp_path, synth_root):
    """Hyperband, max_epochs 2, factor 2: bracket 1 trains two trials 1 epoch
    each and continues the best to 2 epochs; bracket 0 trains two trials 2
    epochs each. The search is stopped after bracket 1's two 1-epoch trials
    (--max-trials 2), and a copy of it loses both trials' training states
    (trials/trial_N/state). The intact search is resumed to the end
    (--max-trials 5): its continuation goes on from the continued trial's
    state (its optimizer has taken 2 steps, not 1, and it read batch 1 of the
    stream, not batch 0). The copy is resumed at the same time with
    --max-trials 3: it says the state is missing and trains the continued
    epoch again from the start first. Both continuations end in the same
    training state (float rounding apart), which the weights alone
    (keras-tuner loads the best epoch's) with a new optimizer from batch 0
    would not reach. Trials start from --init, train in mixed_bfloat16 and
    are scored on the float32 copy. nvan-tune runs in its own processes, as
    a user starts it."""
    import shutil

    import keras
    import numpy as np
    import tensorflow as tf

    import nvan_tf
    from nvan_tf.training.checkpoints import latest_number

    keras.utils.set_random_seed(3)
    init = str(tmp_path / "init.keras")
    nvan_tf.build_model("baseline", 5, seq_len=4, height=64, width=32, **toy.SHALLOW_OVERRIDES).save(init)
    base = ["--dataset", "mars", "--root", synth_root, "--variant", "baseline", "--algorithm", "hyperband",
            "--epochs", "2", "--factor", "2", "--objective", "rank1", "--quiet", "--deterministic",
            "--seq-len", "4", "--height", "64", "--width", "32", *toy.SHALLOW_FLAG, "--p", "2", "--k", "2",
            "--val-ids", "2", "--steps-per-epoch", "1", "--mixed-precision", "mixed_bfloat16", "--init", init]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    intact, copy = tmp_path / "intact", tmp_path / "copy"

    def command(out, trials):
        return [sys.executable, "-m", "nvan_tf.cli.tune", *base, "--output-dir", str(out), "--max-trials", trials]

    first = subprocess.run(command(intact, "2"), capture_output=True, text=True, env=env, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "initialised from" in first.stderr  # --init reached the trials
    shutil.copytree(intact, copy)
    for name in ("trial_0", "trial_1"):
        shutil.rmtree(copy / "trials" / name / tuning.STATE)

    procs = [subprocess.Popen(command(out, trials), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for out, trials in ((intact, "5"), (copy, "3"))]
    (_, intact_log), (_, copy_log) = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], (intact_log[-3000:], copy_log[-3000:])

    # the intact search ran both brackets, with one continuation
    trials = {name: json.loads((intact / "trials" / name / "trial.json").read_text())
              for name in sorted(os.listdir(intact / "trials")) if name.startswith("trial_")}
    values = [t["hyperparameters"]["values"] for t in trials.values()]
    assert sorted(v["tuner/bracket"] for v in values) == [0, 0, 1, 1, 1]  # two brackets
    assert [name for name, t in trials.items() if "tuner/trial_id" in t["hyperparameters"]["values"]] == ["trial_2"]
    # every trial's score is the float32 copy's, between 0 and 1
    for t in trials.values():
        assert t["status"] == "COMPLETED" and 0.0 <= t["score"] <= 1.0

    values = json.loads((copy / "trials" / "trial_2" / "trial.json").read_text())["hyperparameters"]["values"]
    previous = values["tuner/trial_id"]
    assert (values["tuner/initial_epoch"], values["tuner/epochs"]) == (1, 2)
    assert f"trial continues trial {previous} from batch 1" in intact_log, intact_log[-3000:]
    missing = str(copy / "trials" / f"trial_{previous}" / tuning.STATE)
    assert (f"trial continues trial {previous}, whose training state {missing} is missing: training its 1 "
            "epoch(s) again from the start") in copy_log, copy_log[-3000:]
    assert "whose training state" not in intact_log

    states = []
    for out in (intact, copy):
        folder = out / "trials" / "trial_2" / tuning.STATE
        assert latest_number(str(folder)) == 2  # batches read: the continued one and its own
        states.append(tf.train.load_checkpoint(str(folder / "ckpt-2")))
    continued = tf.train.load_checkpoint(str(intact / "trials" / f"trial_{previous}" / tuning.STATE / "ckpt-1"))
    names = states[0].get_variable_to_dtype_map()
    assert names.keys() == states[1].get_variable_to_dtype_map().keys()
    floats = [n for n, dtype in names.items() if dtype == tf.float32]
    assert len(floats) > 100
    # weights, batch statistics and the optimizer's state: the copy's differ from the intact search's by
    # float rounding at most, a tiny part of what the continuation's own step changed
    for name in floats:
        mine, theirs, before = (s.get_tensor(name) for s in (states[1], states[0], continued))
        gap, step = float(np.max(np.abs(mine - theirs))), float(np.max(np.abs(theirs - before)))
        assert gap <= 1e-3 * step + 1e-7 * max(1.0, float(np.max(np.abs(theirs)))), (name, gap, step)
    iterations = [n for n in names if n.endswith("torch_adam.Siteration/.ATTRIBUTES/VARIABLE_VALUE")]
    assert len(iterations) == 1 and [int(s.get_tensor(iterations[0])) for s in states] == [2, 2]
    assert [int(s.get_tensor("batches/.ATTRIBUTES/VARIABLE_VALUE")) for s in states] == [2, 2]

    with open(copy / "trials.csv", newline="") as f:
        rows = {r["trial"]: r for r in csv.DictReader(f)}
    assert (rows["2"]["status"], rows["2"]["epoch"], rows["2"]["epochs"]) == ("COMPLETED", "2", "2")


def test_a_search_without_a_validation_split_is_refused_saying_how_to_add_one(synth_root, tmp_path, capsys):
    argv = ["--dataset", "mars", "--root", synth_root, "--variant", "baseline", "--max-trials", "1", "--epochs", "1",
            "--seq-len", "4", "--height", "64", "--width", "32", "--p", "2", "--k", "2",
            "--output-dir", str(tmp_path / "search")]
    assert tune_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "a search chooses on a validation split, never on the test split" in err
    assert "--val-ids N" in err and "--val-fraction F" in err
    assert not (tmp_path / "search").exists()
