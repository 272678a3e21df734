"""Dataset readers on small official-layout trees written by tests/data_trees.py."""

import json
import logging
import os

import numpy as np
import pytest

from nvan_tf.data.datasets import DATASETS, BadFileNameError, DatasetLayoutError, Tracklet, build_dataset
try:
    from tests import data_trees
except ImportError:  # tests/ itself on sys.path
    import data_trees

# MARS: info rows deliberately not in sorted order; junk (-1) and distractor (0) rows
MARS_TRAIN = [(3, 1, 1, 5), (1, 2, 1, 2), (1, 1, 1, 3), (3, 2, 4, 1)]
MARS_TEST = [(5, 1, 1, 4), (5, 3, 2, 9), (0, 2, 1, 3), (-1, 1, 1, 2), (7, 1, 1, 6), (7, 2, 1, 1)]
MARS_QUERY = [0, 4]


@pytest.fixture(autouse=True)
def split_cache(tmp_path, monkeypatch):
    """Generated splits are recorded here, not in the user's ~/.cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("NVAN_TF_CACHE", str(folder))
    return folder


def tree_state(root):
    """Every path under ``root`` with its size and mtime."""
    state = {}
    for folder, _, files in os.walk(root):
        for name in [""] + files:
            path = os.path.join(folder, name)
            stat = os.stat(path)
            state[os.path.relpath(path, root)] = (stat.st_size, stat.st_mtime_ns)
    return state


def make_read_only(root):
    for folder, _, files in os.walk(root):
        for name in files:
            os.chmod(os.path.join(folder, name), 0o444)
        os.chmod(folder, 0o555)


def make_writable(root):
    for folder, _, _ in os.walk(root):
        os.chmod(folder, 0o755)


@pytest.fixture
def mars_root(tmp_path):
    return data_trees.write_mars_tree(tmp_path / "mars", MARS_TRAIN, MARS_TEST, MARS_QUERY)


def test_registry_names():
    assert set(DATASETS) == {"mars", "dukev", "ilidsvid", "prid", "folder"}
    with pytest.raises(ValueError, match="Unknown dataset"):
        build_dataset("market", "/nowhere")


def test_mars_reader(mars_root):
    ds = build_dataset("mars", mars_root, verbose=False)
    # training: info order, relabelled sorted(set(pids)) -> 0..N-1
    assert [t.pid for t in ds.train] == [1, 0, 0, 1]
    assert ds.train_pid_map == {1: 0, 3: 1}
    assert ds.num_train_ids == 2
    assert [t.camid for t in ds.train] == [1, 2, 1, 2]
    assert [t.tracklet_id for t in ds.train] == [1, 1, 1, 4]
    assert [t.num_frames for t in ds.train] == [5, 2, 3, 1]
    first = ds.train[0]
    assert first.frames[0] == os.path.join(mars_root, "bbox_train", "0003", "0003C1T0001F001.jpg")
    assert all(os.path.isabs(f) and os.path.exists(f) for t in ds.train for f in t.frames)
    assert list(first.frames) == sorted(first.frames)
    # test: all rows in info order, ids -1 and 0 kept, queries stay in the gallery
    tracklets, q, g = ds.test_set()
    assert [t.pid for t in tracklets] == [5, 5, 0, -1, 7, 7]
    assert q.dtype == np.int64 and g.dtype == np.int64
    np.testing.assert_array_equal(q, MARS_QUERY)
    np.testing.assert_array_equal(g, np.arange(6))
    assert ds.query == [tracklets[0], tracklets[4]]
    assert ds.gallery == tracklets
    assert tracklets[3].frames[0].endswith(os.path.join("bbox_test", "00-1", "00-1C1T0001F001.jpg"))
    assert len(set(tracklets)) == len(tracklets)


def test_mars_statistics(mars_root, caplog):
    ds = build_dataset("mars", mars_root, verbose=False)
    stats = ds.statistics()
    assert stats["train"] == {"ids": 2, "tracklets": 4, "frames": 11, "cameras": 2}
    assert stats["query"] == {"ids": 2, "tracklets": 2, "frames": 10, "cameras": 1}
    assert stats["gallery"] == {"ids": 4, "tracklets": 6, "frames": 25, "cameras": 3}
    with caplog.at_level(logging.INFO, logger="nvan_tf.data.datasets.base"):
        table = ds.print_statistics()
    assert "# tracklets" in table and "gallery" in table
    assert table in caplog.text


def test_mars_missing_files_name_the_path(tmp_path, mars_root):
    os.remove(os.path.join(mars_root, "info", "query_IDX.mat"))
    with pytest.raises(DatasetLayoutError, match="query_IDX.mat") as err:
        build_dataset("mars", mars_root, verbose=False)
    assert "bbox_train/<pid>" in str(err.value)
    with pytest.raises(DatasetLayoutError, match="bbox_train"):
        build_dataset("mars", str(tmp_path / "empty"), verbose=False)


def test_mars_missing_frames_and_empty_rows_are_counted(tmp_path, caplog):
    test = MARS_TEST + [(9, 1, 1, 0)]  # an empty info row
    root = data_trees.write_mars_tree(tmp_path / "m", MARS_TRAIN, test, [0, 6])
    os.remove(os.path.join(root, "bbox_train", "0003", "0003C2T0004F001.jpg"))  # the only frame of row 4
    os.remove(os.path.join(root, "bbox_train", "0003", "0003C1T0001F002.jpg"))
    with caplog.at_level(logging.WARNING):
        ds = build_dataset("mars", root, verbose=False)
    assert [t.num_frames for t in ds.train] == [4, 2, 3]
    assert ds.dropped == {
        "missing train frames": 2,
        "empty train tracklets": 1,
        "empty test tracklets": 1,
        "queries of dropped tracklets": 1,
    }
    tracklets, q, g = ds.test_set()
    assert len(tracklets) == 6 and list(q) == [0]
    assert "missing on disk" in caplog.text and "Dropping empty" in caplog.text


def test_mars_bad_name_is_named(tmp_path, mars_root):
    path = os.path.join(mars_root, "info", "test_name.txt")
    lines = open(path).read().split("\n")
    lines[2] = "garbage.jpg"
    open(path, "w").write("\n".join(lines))
    with pytest.raises(BadFileNameError, match=r"garbage\.jpg.*line 3 of .*test_name\.txt"):
        build_dataset("mars", mars_root, verbose=False)


def test_mars_info_mismatch_and_range(tmp_path, mars_root):
    import scipy.io

    path = os.path.join(mars_root, "info", "query_IDX.mat")
    scipy.io.savemat(path, {"query_IDX": np.array([[0, 1]], dtype=np.float64)})  # 0 is not 1-based
    with pytest.raises(ValueError, match="1-based rows"):
        build_dataset("mars", mars_root, verbose=False)
    scipy.io.savemat(path, {"query_IDX": np.array([[1]], dtype=np.float64)})
    info_path = os.path.join(mars_root, "info", "tracks_train_info.mat")
    info = scipy.io.loadmat(info_path)["track_train_info"]
    info[0, 2] = 4  # wrong pid for its frames
    scipy.io.savemat(info_path, {"track_train_info": info})
    with pytest.raises(ValueError, match="row 1 says pid 4"):
        build_dataset("mars", mars_root, verbose=False)


DUKE = {
    "train": [(1, 1, 2, 3), (1, 2, 5, 2), (4, 1, 1, 4)],
    "query": [(6, 1, 1, 3), (8, 1, 3, 2)],
    "gallery": [(6, 1, 1, 3), (6, 2, 4, 5), (8, 2, 1, 2), (9, 1, 2, 3)],
}


@pytest.mark.parametrize("old_names", [False, True])
def test_dukev_reader(tmp_path, old_names):
    root = data_trees.write_dukev_tree(tmp_path / "duke", DUKE, old_names=old_names)
    ds = build_dataset("dukev", root, verbose=False)
    assert [(t.pid, t.tracklet_id, t.camid, t.num_frames) for t in ds.train] == [
        (0, 1, 2, 3), (0, 2, 5, 2), (1, 1, 1, 4)]
    assert ds.num_train_ids == 2
    assert [(t.pid, t.camid) for t in ds.query] == [(6, 1), (8, 3)]
    assert len(ds.gallery) == 4
    tracklets, q, g = ds.test_set()
    # the query (6, tracklet 1) is also in the gallery folder: kept once
    assert len(tracklets) == 5
    np.testing.assert_array_equal(q, [0, 1])
    np.testing.assert_array_equal(g, [0, 2, 3, 4])
    assert [tracklets[i].pid for i in g] == [6, 6, 8, 9]
    assert ds.statistics()["gallery"] == {"ids": 3, "tracklets": 4, "frames": 13, "cameras": 3}


def test_dukev_errors(tmp_path):
    with pytest.raises(DatasetLayoutError, match="train"):
        build_dataset("dukev", str(tmp_path), verbose=False)
    root = data_trees.write_dukev_tree(tmp_path / "d", DUKE)
    bad = os.path.join(root, "query", "0006", "0001", "frame1.jpg")
    data_trees.write_image(bad)
    with pytest.raises(BadFileNameError, match="frame1.jpg"):
        build_dataset("dukev", root, verbose=False)


def test_dukev_empty_tracklet_dropped(tmp_path, caplog):
    root = data_trees.write_dukev_tree(tmp_path / "d", DUKE)
    os.makedirs(os.path.join(root, "gallery", "0010", "0001"))
    with caplog.at_level(logging.WARNING):
        ds = build_dataset("dukev", root, verbose=False)
    assert len(ds.gallery) == 4
    assert ds.dropped == {"empty gallery tracklets": 1}
    assert "0010" in caplog.text


def test_ilidsvid_generated_splits_are_recorded_and_deterministic(tmp_path, split_cache):
    persons = [1, 2, 3, 5, 8, 9]
    root = data_trees.write_ilidsvid_tree(tmp_path / "ilids", persons, frames=3)
    ds = build_dataset("ilidsvid", root, split_id=2, verbose=False)
    (recorded,) = [str(p) for p in (split_cache / "splits").iterdir()]
    assert ds.split_file == recorded and os.path.basename(recorded).startswith("ilidsvid-")
    assert not os.path.exists(os.path.join(root, "splits_ilidsvid.json"))
    splits = json.load(open(recorded))
    assert len(splits) == 10
    for s in splits:
        assert len(s["train"]) == 3 and len(s["test"]) == 3
        assert sorted(s["train"] + s["test"]) == [f"person{p:03d}" for p in persons]
    assert len({tuple(s["train"]) for s in splits}) > 1
    # a second root regenerates the same splits (same seed), in its own record
    root2 = data_trees.write_ilidsvid_tree(tmp_path / "ilids2", persons, frames=3)
    second = build_dataset("ilidsvid", root2, verbose=False).split_file
    assert second != recorded and json.load(open(second)) == splits
    # split 2: train on both cameras, query cam1, gallery cam2
    test_ids = sorted(int(p[6:]) for p in splits[2]["test"])
    assert sorted(t.pid for t in ds.query) == test_ids
    assert {t.camid for t in ds.query} == {1} and {t.camid for t in ds.gallery} == {2}
    assert [t.pid for t in ds.query] == [t.pid for t in ds.gallery]
    assert len(ds.train) == 6 and ds.num_train_ids == 3
    tracklets, q, g = ds.test_set()
    np.testing.assert_array_equal(q, [0, 1, 2])
    np.testing.assert_array_equal(g, [3, 4, 5])


@pytest.mark.parametrize("name", ["ilidsvid", "prid"])
def test_generated_splits_leave_a_read_only_dataset_untouched(tmp_path, split_cache, name):
    if name == "ilidsvid":
        root = data_trees.write_ilidsvid_tree(tmp_path / "data", [1, 2, 3, 4], frames=2)
    else:
        frames = {p: 22 + p for p in (1, 2, 3, 4)}
        root = data_trees.write_prid_tree(tmp_path / "data", frames, frames, size=(8, 4))
    before = tree_state(root)
    make_read_only(root)
    try:
        first = build_dataset(name, root, split_id=1, verbose=False)
        (record,) = (split_cache / "splits").iterdir()
        assert first.split_file == str(record)
        # The record is what later readings use: changed by hand, it is followed.
        splits = json.load(open(record))
        splits[1] = {"train": splits[1]["test"], "test": splits[1]["train"]}
        record.write_text(json.dumps(splits))
        again = build_dataset(name, root, split_id=1, verbose=False)
        assert sorted(t.pid for t in again.query) == sorted(first.train_pid_map)
        # Without the record, the same splits come back (deterministic).
        record.unlink()
        third = build_dataset(name, root, split_id=1, verbose=False)
        assert [t.pid for t in third.query] == [t.pid for t in first.query]
    finally:
        make_writable(root)
    assert tree_state(root) == before
    assert not [n for n in os.listdir(split_cache / "splits") if n.startswith(".tmp-")]


def test_explicit_split_file_records_generated_splits_there(tmp_path, split_cache):
    root = data_trees.write_ilidsvid_tree(tmp_path / "ilids", [1, 2, 3, 4], frames=2)
    target = tmp_path / "mine" / "ilids_splits.json"
    ds = build_dataset("ilidsvid", root, split_id=4, split_file=str(target), verbose=False)
    assert ds.split_file == str(target) and len(json.load(open(target))) == 10
    assert not split_cache.exists()
    assert build_dataset("ilidsvid", root, split_file=str(target), verbose=False).split_file == str(target)
    with pytest.raises(DatasetLayoutError, match="missing.mat"):
        build_dataset("ilidsvid", root, split_file=str(tmp_path / "missing.mat"), verbose=False)


def test_ilidsvid_official_mat_split(tmp_path):
    persons = [1, 2, 4, 7]
    # ls_set rows: 1-based positions in sorted person folders; first half test
    ls_set = [[1, 3, 2, 4], [2, 4, 1, 3]]
    root = data_trees.write_ilidsvid_tree(tmp_path / "ilids", persons, frames=2, ls_set=ls_set)
    ds = build_dataset("ilidsvid", root, split_id=1, verbose=False)
    assert sorted(t.pid for t in ds.query) == [2, 7]
    assert ds.train_pid_map == {1: 0, 4: 1}
    assert not os.path.exists(os.path.join(root, "splits_ilidsvid.json"))
    with pytest.raises(ValueError, match="split_id"):
        build_dataset("ilidsvid", root, split_id=5, verbose=False)


def test_ilidsvid_missing_layout(tmp_path):
    with pytest.raises(DatasetLayoutError, match="sequences/cam1"):
        build_dataset("ilidsvid", str(tmp_path), verbose=False)


def test_prid_generated_splits_keep_long_shared_persons(tmp_path, split_cache):
    cam_a = {1: 23, 2: 22, 3: 10, 4: 25, 5: 30, 250: 40}
    cam_b = {1: 30, 2: 24, 3: 40, 4: 22, 5: 21, 300: 40}
    root = data_trees.write_prid_tree(tmp_path / "prid", cam_a, cam_b, size=(8, 4))
    ds = build_dataset("prid", root, verbose=False)
    assert os.path.basename(ds.split_file).startswith("prid2011-")
    splits = json.load(open(ds.split_file))
    # person 3 (10 frames in A), 5 (21 in B, not more), 250 / 300 (one camera) are out
    for s in splits:
        assert sorted(s["train"] + s["test"]) == ["person_0001", "person_0002", "person_0004"]
        assert len(s["train"]) == 1
    assert {t.camid for t in ds.query} == {1} and len(ds.query) == 2 == len(ds.gallery)
    assert ds.query[0].num_frames == cam_a[ds.query[0].pid]
    # the recorded file is read back
    assert build_dataset("prid", root, split_id=3, verbose=False).split_id == 3


def test_folder_layout(tmp_path):
    root = data_trees.write_folder_tree(tmp_path / "own", {
        "train": [(10, 1, 1, 3), (12, 2, 1, 2), (10, 2, 2, 4)],
        "query": [(20, 1, 1, 2)],
        "gallery": [(20, 2, 1, 3), (21, 1, 5, 2)],
    })
    ds = build_dataset("folder", root, verbose=False)
    assert sorted((t.pid, t.camid, t.tracklet_id) for t in ds.train) == [(0, 1, 1), (0, 2, 2), (1, 2, 1)]
    tracklets, q, g = ds.test_set()
    assert [t.pid for t in tracklets] == [20, 20, 21]
    np.testing.assert_array_equal(g, [1, 2])
    os.makedirs(os.path.join(root, "query", "abc", "c1", "t1"))
    with pytest.raises(BadFileNameError, match="'abc'"):
        build_dataset("folder", root, verbose=False)


def test_csv_manifest_keeps_row_order(tmp_path):
    path = data_trees.write_manifest(tmp_path / "own", {
        "train": [(1, 1, 1, 3), (2, 1, 1, 2)],
        "query": [(3, 1, 1, 2)],
        "gallery": [(3, 2, 1, 4)],
    })
    for root in (path, os.path.dirname(path)):
        ds = build_dataset("folder", root, verbose=False)
        assert ds.manifest == path
        frames = ds.train[0].frames
        assert list(frames) == sorted(frames, reverse=True)  # row order, not name order
        assert all(os.path.isabs(f) and os.path.exists(f) for f in frames)
        assert ds.statistics()["gallery"]["frames"] == 4
    with open(path, "a") as f:
        f.write("query,x,1,1,frames/a.jpg\n")
    with pytest.raises(BadFileNameError, match="line"):
        build_dataset("folder", path, verbose=False)


def test_tracklet_is_frozen_and_not_empty():
    t = Tracklet(("/a.jpg",), 1, 2, 3)
    with pytest.raises(Exception):
        t.pid = 5
    with pytest.raises(ValueError, match="at least one frame"):
        Tracklet((), 1, 2, 3)
