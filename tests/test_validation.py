"""The validation split: held out from the training identities, never trained
on, and what chooses the model when a run has one (issue: numbers a
researcher can publish)."""

import json
import os

import numpy as np
import pytest

from nvan_tf.cli import train as train_cli
from nvan_tf.data.datasets import build_dataset, synthetic
from nvan_tf.data.validation import hold_out
from nvan_tf.training import ReIDTask
from nvan_tf.training.config import TrainConfig
from tests import toy

SMALL = dict(variant="baseline", dataset="mars", seq_len=4, height=64, width=32, p=2, k=2, steps_per_epoch=1,
             progress=0, checkpoint_every=0, model_overrides=toy.SHALLOW_OVERRIDES)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth")
    return synthetic.generate(str(folder), num_ids=16, cameras=3, seed=0, height=64, width=32, frames=(4, 6))


def test_held_out_identities_are_disjoint_from_training_and_test(synth_root):
    dataset = build_dataset("mars", synth_root, verbose=False)
    task = ReIDTask(TrainConfig(**SMALL, root=synth_root, val_ids=3))
    split = task.validation
    original = {label: pid for pid, label in dataset.train_pid_map.items()}  # train label -> dataset pid
    held = {original[p] for p in split.pids}
    trained = {original[t.pid] for t in dataset.train if t.pid not in split.pids}
    assert len(held) == 3
    assert held.isdisjoint(trained)
    # what the task trains on: the rest, relabelled 0..N-1, as many identities as the classifier has
    assert task.num_identities == dataset.num_train_ids - 3 == len({t.pid for t in task.train_tracklets})
    assert {t.pid for t in task.train_tracklets} == set(range(task.num_identities))
    held_frames = {f for t in split.test_set[0] for f in t.frames}
    assert held_frames.isdisjoint({f for t in task.train_tracklets for f in t.frames})
    test_tracklets, _, _ = dataset.test_set()
    assert held_frames.isdisjoint({f for t in test_tracklets for f in t.frames})
    test_pids = {t.pid for t in test_tracklets if t.pid > 0}
    assert held.isdisjoint(test_pids)
    # the batches never hold a validation identity: they sample only task.train_tracklets
    for _, pids, _ in task.build_inputs().take(3).as_numpy_iterator():
        assert set(pids.tolist()) <= set(range(task.num_identities))


def test_the_split_is_ranked_as_the_test_protocol_and_deterministic_under_the_seed(synth_root):
    train = build_dataset("mars", synth_root, verbose=False).train
    a, b, c = hold_out(train, 3, seed=1), hold_out(train, 3, seed=1), hold_out(train, 3, seed=2)
    assert a.pids == b.pids and a.pids != c.pids
    tracklets, query, gallery = a.test_set
    # one query per identity and camera; every held-out tracklet in the gallery
    assert sorted((tracklets[i].pid, tracklets[i].camid) for i in query) == sorted(
        {(t.pid, t.camid) for t in tracklets})
    np.testing.assert_array_equal(gallery, np.arange(len(tracklets)))
    assert all(len({t.camid for t in tracklets if t.pid == p}) >= 2 for p in a.pids)
    assert hold_out(train, fraction=0.5, seed=0).pids == hold_out(train, 4, seed=0).pids  # 8 train ids


@pytest.mark.slow
def test_a_runs_evaluations_share_one_traced_extractor_that_sees_the_current_weights(synth_root):
    """The task traces its float32 copy's feature extractor once per run; a
    later evaluation, after the weights moved, scores what a freshly made
    copy and extractor score."""
    from nvan_tf.models.model import float32_copy
    from nvan_tf.training.task import evaluate_model

    task = ReIDTask(TrainConfig(**SMALL, root=synth_root, val_ids=3))
    model = task.build_model()
    first = task.evaluate(model, "validation")
    extractor = task._extractor
    rng = np.random.default_rng(0)
    for variable in model.trainable_weights:
        if variable.path.endswith("kernel"):
            value = np.asarray(variable)
            variable.assign(value + rng.normal(0, 0.5 * value.std() + 1e-3, value.shape).astype(value.dtype))
    second = task.evaluate(model, "validation")
    assert task._extractor is extractor  # not traced again
    fresh = evaluate_model(float32_copy(model), task.validation_set)
    assert second == fresh
    assert second["mAP"] != first["mAP"]  # the weights moved, and the shared extractor saw it


def test_impossible_splits_are_refused_naming_the_flag(synth_root):
    train = build_dataset("mars", synth_root, verbose=False).train
    with pytest.raises(ValueError, match="cannot hold out 8 validation identities"):
        hold_out(train, 8)
    with pytest.raises(ValueError, match="val_ids .* or val_fraction, not both"):
        TrainConfig(val_ids=2, val_fraction=0.2)
    with pytest.raises(ValueError, match="val_fraction must be in"):
        TrainConfig(val_fraction=1.5)


def _scripted_scores(monkeypatch, root, validation, test):
    """Evaluation returns the scores of ``validation`` / ``test`` (one per
    call, by epoch) depending on which split it is handed (told apart by
    their frames); the test entries score the once-only test of the chosen model."""
    from nvan_tf.training import loop, task

    calls = {"validation": 0, "test": 0}
    test_frames = {f for t in build_dataset("mars", root, verbose=False).test_set()[0] for f in t.frames}

    def evaluate(model, test_set, batch_size=16, extractor=None):
        split = "test" if test_set[0][0].frames[0] in test_frames else "validation"
        rank1 = (validation if split == "validation" else test)[calls[split]]
        calls[split] += 1
        return {"rank1": rank1, "mAP": rank1 / 2}

    monkeypatch.setattr(task, "evaluate_model", evaluate)
    monkeypatch.setattr(loop, "evaluate_model", evaluate)
    return calls


@pytest.mark.slow
def test_nvan_train_with_val_ids_keeps_the_validation_best_not_the_test_best(synth_root, tmp_path, monkeypatch,
                                                                              capsys):
    # validation prefers epoch 1; the test split is asked once, for that model
    calls = _scripted_scores(monkeypatch, synth_root, validation=[0.9, 0.5, 0.4], test=[0.7])
    out = tmp_path / "run"
    code = train_cli.main(["--dataset", "mars", "--root", synth_root, "--variant", "baseline", "--seq-len", "4",
                           "--height", "64", "--width", "32", *toy.SHALLOW_FLAG, "--p", "2", "--k", "2",
                           "--steps-per-epoch", "1", "--epochs", "3", "--eval-every", "1", "--checkpoint-every", "0", "--progress", "0",
                           "--val-ids", "3", "--output-dir", str(out)])
    assert code == 0
    assert calls == {"validation": 3, "test": 1}  # the test split: once, for the chosen model
    results = json.loads((out / "results.json").read_text())
    assert results["selection"] == "validation"
    assert results["best"]["epoch"] == 1 and results["best"]["rank1"] == 0.9
    assert results["test"] == {"rank1": 0.7, "mAP": 0.35}
    assert results["validation"]["identities"] == 3
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["train"]["val_ids"] == 3 and recorded["validation"]["pids"] == results["validation"]["pids"]
    history = (out / "history.csv").read_text().splitlines()
    assert "split" in history[0].split(",") and all(",validation," in line for line in history[1:])
    printed = capsys.readouterr().out
    assert "best: epoch 1, validation rank-1 90.00%" in printed and "test: rank-1 70.00%" in printed
    # model.keras is epoch 1's: the weights of the first checkpointed epoch, not the last
    import nvan_tf

    best, last = nvan_tf.load_model(str(out / "model.keras")), nvan_tf.load_model(str(out / "last.keras"))
    assert any(np.abs(a - b).max() > 0 for a, b in zip(best.get_weights(), last.get_weights()))


@pytest.mark.slow
def test_without_validation_the_test_split_chooses_and_every_output_says_so(synth_root, tmp_path, monkeypatch,
                                                                           capsys, caplog):
    import logging

    from nvan_tf.training import loop

    def evaluate(model, test_set, batch_size=16, extractor=None):
        return {"rank1": 0.5, "mAP": 0.25}

    monkeypatch.setattr(loop, "evaluate_model", evaluate)
    from nvan_tf.training import task as task_module

    monkeypatch.setattr(task_module, "evaluate_model", evaluate)
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="nvan_tf.training.loop"):
        result = loop.train(TrainConfig(**SMALL, root=synth_root, epochs=1, eval_every=1), str(out))
    assert result["selection"] == "test" and result["test"] is None
    assert "test rank-1 50.00%" in caplog.text and "the test split chooses the model" in caplog.text
    results = json.loads((out / "results.json").read_text())
    assert results["selection"] == "test" and results["best"]["epoch"] == 1 and results["test"] is None
    assert ",test," in (out / "history.csv").read_text().splitlines()[1]
    assert os.path.exists(out / "model.keras")


@pytest.mark.slow
def test_a_folder_dataset_that_gains_an_identity_refuses_a_resume_listing_the_change(tmp_path):
    from nvan_tf.training import loop
    from tests.data_trees import write_folder_tree

    tracks = [(pid, cam, 1, 4) for pid in range(1, 5) for cam in (1, 2)]
    root = write_folder_tree(tmp_path / "footage", {"train": tracks, "query": [(9, 1, 1, 4)],
                                                   "gallery": [(9, 2, 1, 4)]}, size=(64, 32))
    config = TrainConfig(variant="baseline", dataset="folder", root=root, seq_len=4, height=64, width=32, p=2,
                         k=2, steps_per_epoch=1, epochs=1, eval_every=0, checkpoint_every=0, progress=0,
                         model_overrides=toy.SHALLOW_OVERRIDES)
    out = tmp_path / "run"
    loop.train(config, str(out))
    os.remove(out / "config.json")  # the checkpoint's own record decides, not only config.json
    write_folder_tree(root, {"train": [(5, 1, 1, 4), (5, 2, 1, 4)]}, size=(64, 32))  # one more identity
    grown = TrainConfig(**{**config.to_dict(), "epochs": 2})  # the same recipe, run longer
    with pytest.raises(loop.ConfigMismatch) as refused:
        loop.train(grown, str(out))
    message = str(refused.value)
    assert "dataset.identities: 4 in the run, 5 now" in message
    assert "dataset.tracklets: 8 in the run, 10 now" in message and "dataset.digest" in message


@pytest.mark.slow
def test_a_dataset_whose_bad_frames_exceed_the_limit_stops_the_run_naming_them(tmp_path, capsys):
    """A tenth of the training frames truncated: the run stops at the first
    epoch end, naming files, instead of training on their neighbours; good
    frames this process read before (another run, another test) do not
    dilute the share."""
    import glob

    from nvan_tf.data import pipeline

    root = synthetic.generate(str(tmp_path / "broken"), num_ids=8, cameras=2, seed=0, height=64, width=32,
                              frames=(4, 6))
    frames = sorted(glob.glob(os.path.join(root, "bbox_train", "*", "*.jpg")))
    broken = frames[::10]
    for path in broken:
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 3])
    good = sorted(glob.glob(os.path.join(root, "bbox_test", "*", "*.jpg")))
    for _ in range(20):  # earlier reads in this process, all good: 20 x len(good) frames
        pipeline.DEFAULT_CHECKER.read(good, np.arange(len(good)))
    argv = ["--dataset", "mars", "--root", root, "--variant", "baseline", "--seq-len", "4", "--height", "64",
            "--width", "32", *toy.SHALLOW_FLAG, "--p", "2", "--k", "2", "--steps-per-epoch", "8", "--epochs", "1",
            "--eval-every", "0", "--checkpoint-every", "0", "--progress", "0", "--output-dir", str(tmp_path / "run")]
    assert train_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "above the limit of 1% (--max-bad-frames)" in err
    assert any(path in err for path in broken), err
    assert not os.path.exists(tmp_path / "run" / "checkpoints" / "checkpoint")  # nothing was saved
    # a limit that allows them: the run trains, and the history counts them
    assert train_cli.main(argv + ["--max-bad-frames", "0.5", "--no-resume"]) == 0
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    column = history[0].split(",").index("bad_frames")
    assert int(history[-1].split(",")[column]) > 0
