"""tf.data pipeline: shapes, values, batch layout, determinism, bad frames."""

import os

import numpy as np
import pytest
from PIL import Image

from nvan_tf.data import pipeline
from nvan_tf.data.datasets import Tracklet, build_dataset

try:
    from tests import data_trees
except ImportError:  # tests/ itself on sys.path
    import data_trees

H, W = 16, 8
MEAN, STD = np.asarray(pipeline.IMAGENET_MEAN), np.asarray(pipeline.IMAGENET_STD)
TRAIN = [(pid, cam, t, n) for pid in (2, 4, 6, 8) for cam, t, n in ((1, 1, 5), (2, 1, 12), (3, 2, 3))]
TEST = [(11, 1, 1, 3), (11, 2, 1, 17), (12, 1, 1, 8), (0, 2, 1, 4)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = data_trees.write_mars_tree(tmp_path_factory.mktemp("mars"), TRAIN, TEST, [0, 2])
    return build_dataset("mars", root, verbose=False)


def reference_frame(path, size=None):
    """PIL decode (+ bilinear resize) + ImageNet normalisation, as torchvision does."""
    image = Image.open(path).convert("RGB")
    if size is not None:
        image = image.resize((size[1], size[0]), Image.BILINEAR)
    return (np.asarray(image, np.float32) / 255.0 - MEAN) / STD


def take(ds, n):
    return [tuple(x.numpy() for x in batch) for batch, _ in zip(ds, range(n))]


def test_train_element_spec_layout_and_range(dataset):
    ds = pipeline.train_dataset(dataset.train, p=3, k=2, seq_len=4, height=H, width=W, seed=0)
    clips, pids, camids = ds.element_spec
    assert clips.shape == (6, 4, H, W, 3) and clips.dtype.name == "float32"
    assert pids.shape == (6,) and pids.dtype.name == "int32" and camids.dtype.name == "int32"
    lo, hi = (0 - MEAN) / STD, (1 - MEAN) / STD
    for x, pid, cam in take(ds, 3):
        assert np.all(x >= lo.min() - 1e-5) and np.all(x <= hi.max() + 1e-5)
        assert np.all((x >= lo - 1e-5) & (x <= hi + 1e-5))  # per channel
        assert x.std() > 0.5  # random-noise frames, not blank
        groups = pid.reshape(3, 2)
        assert np.all(groups == groups[:, :1]) and len(set(groups[:, 0])) == 3
        assert set(pid) <= set(range(4))  # relabelled 0..3
        assert set(cam) <= {1, 2, 3}
    assert pipeline.steps_per_epoch(dataset.train, p=3) == 1


def test_train_frames_come_from_the_right_tracklet(dataset):
    """Every clip frame equals (after decoding) a frame of a tracklet of its pid,
    in RRS order."""
    ds = pipeline.train_dataset(dataset.train, p=2, k=2, seq_len=4, height=H, width=W, flip_prob=0.0, seed=1)
    refs = {}
    for t in dataset.train:
        for i, f in enumerate(t.frames):
            refs[f] = (t, i, reference_frame(f))
    for x, pid, cam in take(ds, 2):
        for clip, p, c in zip(x, pid, cam):
            found = []
            for frame in clip:
                match = [(t, i) for t, i, ref in refs.values() if np.abs(ref - frame).max() < 0.05]
                assert match, "frame not found among the training frames"
                found.append(match[0])
            tracks = {id(t) for t, _ in found}
            assert len(tracks) == 1
            t = found[0][0]
            assert t.pid == p and t.camid == c
            idx = [i for _, i in found]
            assert idx == sorted(idx)


def test_train_is_deterministic_under_a_seed(dataset):
    make = lambda seed: pipeline.train_dataset(dataset.train, p=2, k=2, seq_len=4, height=H, width=W, seed=seed)
    a, b, c = take(make(3), 2), take(make(3), 2), take(make(4), 2)
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a, c))
    # a second iterator over the same dataset restarts the stream
    ds = make(3)
    np.testing.assert_array_equal(take(ds, 1)[0][0], take(ds, 1)[0][0])


def test_whole_clip_flip(dataset):
    kwargs = dict(p=2, k=2, seq_len=4, height=H, width=W, seed=9)
    plain = take(pipeline.train_dataset(dataset.train, flip_prob=0.0, **kwargs), 1)[0][0]
    flipped = take(pipeline.train_dataset(dataset.train, flip_prob=1.0, **kwargs), 1)[0][0]
    np.testing.assert_allclose(flipped, plain[:, :, :, ::-1, :], atol=1e-6)
    assert not np.allclose(flipped, plain)


def test_random_erasing(dataset):
    kwargs = dict(p=2, k=2, seq_len=4, height=32, width=16, seed=2)
    erased = take(pipeline.train_dataset(dataset.train, random_erasing=1.0, **kwargs), 1)[0][0]
    zeros = np.all(erased == 0.0, axis=-1).reshape(-1, 32 * 16).mean(axis=1)
    assert np.all(zeros > 0.015) and np.all(zeros < 0.5)  # 2-33 % of the area, every frame
    plain = take(pipeline.train_dataset(dataset.train, **kwargs), 1)[0][0]
    assert np.all(plain != 0.0)  # off by default


def test_eval_rrs_order_values_and_cardinality(dataset):
    tracklets, q, g = dataset.test_set()
    ds = pipeline.eval_dataset(tracklets, seq_len=4, batch_size=3, height=H, width=W)
    spec = ds.element_spec
    assert spec[0].shape.as_list() == [None, 4, H, W, 3]
    assert [s.dtype.name for s in spec[1:]] == ["int32", "int32", "int64"]
    batches = take(ds, 100)
    assert len(batches) == 2 == int(ds.cardinality())
    index = np.concatenate([b[3] for b in batches])
    np.testing.assert_array_equal(index, np.arange(len(tracklets)))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), [t.pid for t in tracklets])
    np.testing.assert_array_equal(np.concatenate([b[2] for b in batches]), [t.camid for t in tracklets])
    clips = np.concatenate([b[0] for b in batches])
    # tracklet 1 has 17 frames: RRS test frames 0, 5, 10, 15
    for j, i in enumerate([0, 5, 10, 15]):
        np.testing.assert_allclose(clips[1, j], reference_frame(tracklets[1].frames[i]), atol=0.05)
    assert pipeline.num_eval_clips(tracklets, 4, "rrs") == 4


def test_eval_dense_covers_every_frame(dataset):
    tracklets, _, _ = dataset.test_set()
    ds = pipeline.eval_dataset(tracklets, seq_len=4, sampling="dense", batch_size=4, height=H, width=W)
    batches = take(ds, 100)
    index = np.concatenate([b[3] for b in batches])
    expected = [i for i, t in enumerate(tracklets) for _ in range(-(-t.num_frames // 4))]
    np.testing.assert_array_equal(index, expected)  # 1 + 5 + 2 + 1 clips, in order
    assert pipeline.num_eval_clips(tracklets, 4, "dense") == len(expected) == 9
    clips = np.concatenate([b[0] for b in batches])
    # the 17-frame tracklet: clips 1..5; its last clip is frame 16 repeated
    np.testing.assert_allclose(clips[5, 0], reference_frame(tracklets[1].frames[16]), atol=0.05)
    np.testing.assert_allclose(clips[5, 3], clips[5, 0])


def test_eval_evenly_and_bad_arguments(dataset):
    tracklets, _, _ = dataset.test_set()
    ds = pipeline.eval_dataset(tracklets[1:2], seq_len=4, sampling="evenly", height=H, width=W)
    clip = take(ds, 1)[0][0][0]
    for j, i in enumerate([0, 4, 8, 12]):
        np.testing.assert_allclose(clip[j], reference_frame(tracklets[1].frames[i]), atol=0.05)
    with pytest.raises(ValueError, match="sampling"):
        pipeline.eval_dataset(tracklets, sampling="random")
    with pytest.raises(ValueError, match="at least p=9"):
        pipeline.train_dataset(dataset.train, p=9, k=2)


def test_png_decode_and_resize(tmp_path):
    frames = [data_trees.write_image(str(tmp_path / f"{i}.png"), seed=i, size=(20, 10)) for i in range(3)]
    t = Tracklet(tuple(frames), 1, 1, 1)
    same = take(pipeline.eval_dataset([t], seq_len=3, height=20, width=10), 1)[0][0][0]
    for j in range(3):
        np.testing.assert_allclose(same[j], reference_frame(frames[j]), atol=1e-5)  # PNG: exact
    big = take(pipeline.eval_dataset([t], seq_len=3, height=40, width=20), 1)[0][0][0]
    assert big.shape == (3, 40, 20, 3)
    ref = reference_frame(frames[0], size=(40, 20))
    assert np.abs(big[0] - ref).mean() < 0.02  # bilinear, like PIL's
    small = take(pipeline.eval_dataset([t], seq_len=3, height=10, width=5), 1)[0][0][0]
    ref = reference_frame(frames[0], size=(10, 5))
    assert np.abs(small[0] - ref).mean() < 0.1  # antialiased shrink, like PIL's


def test_corrupt_frames_are_counted_and_replaced(tmp_path, caplog):
    frames = [data_trees.write_image(str(tmp_path / f"f{i}.jpg"), seed=i) for i in range(6)]
    data = open(frames[1], "rb").read()
    open(frames[1], "wb").write(data[: len(data) // 2])  # truncated
    open(frames[2], "wb").write(b"this is not an image")  # corrupt
    open(frames[3], "wb").close()  # empty
    os.remove(frames[5])  # unreadable
    bad_only = [str(tmp_path / "gone.jpg"), frames[2]]
    tracklets = [Tracklet(tuple(frames), 1, 1, 1), Tracklet(tuple(bad_only), 2, 1, 1)]
    checker = pipeline.FrameChecker()
    ds = pipeline.eval_dataset(tracklets, seq_len=6, sampling="dense", height=H, width=W, checker=checker)
    with caplog.at_level("WARNING"):
        (clips, pids, _, index), = take(ds, 10)
    np.testing.assert_array_equal(index, [0, 1])
    good = {i: reference_frame(frames[i]) for i in (0, 4)}
    # nearest good frame, the earlier one on a tie: 1->0, 2->0 (tie 0/4? no: |2-0|=2 = |2-4|), 3->4, 5->4
    expected = [0, 0, 0, 4, 4, 4]
    for j, i in enumerate(expected):
        np.testing.assert_allclose(clips[0, j], good[i], atol=0.05)
    np.testing.assert_allclose(clips[1], 0.0, atol=0.01)  # no good frame: mean grey
    report = checker.report()
    assert report["bad_frames"] == 5
    assert report["substitutions"] == 4 + 6
    assert report["empty_tracklets"] == 1
    assert "truncated JPEG" in report["examples"][frames[1]]
    assert "Bad frame" in caplog.text and "No readable frame" in caplog.text
    # the training stream keeps running over bad frames too
    train = pipeline.train_dataset(tracklets + [Tracklet((frames[0],), 3, 1, 1)], p=2, k=2, seq_len=4,
                                   height=H, width=W, seed=0, checker=checker)
    assert len(take(train, 3)) == 3


@pytest.mark.parametrize("random_erasing,replacement", [(0.0, "always"), (0.5, "always"), (0.0, "as_needed")])
def test_start_step_resumes_the_stream_exactly(dataset, random_erasing, replacement):
    """A stream started at step s gives batches s, s+1, ... of the whole stream."""
    kwargs = dict(p=2, k=2, seq_len=4, height=H, width=W, seed=5, random_erasing=random_erasing,
                  replacement=replacement)
    whole = take(pipeline.train_dataset(dataset.train, **kwargs), 7)
    resumed = take(pipeline.train_dataset(dataset.train, start_step=4, **kwargs), 3)
    for x, y in zip(whole[4:], resumed):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)
    # the check can fail: other starts give other batches
    assert not np.array_equal(whole[3][0], resumed[0][0])


def test_shards_split_every_global_batch_in_order(dataset):
    """Worker shards hold consecutive rows of the same global batches, nothing twice."""
    kwargs = dict(p=2, k=2, seq_len=4, height=H, width=W, seed=6)
    whole = take(pipeline.train_dataset(dataset.train, **kwargs), 3)
    shards = [take(pipeline.train_dataset(dataset.train, shard=(i, 2), **kwargs), 3) for i in range(2)]
    for step in range(3):
        for part in range(3):  # clips, pids, camids
            joined = np.concatenate([shards[0][step][part], shards[1][step][part]])
            np.testing.assert_array_equal(joined, whole[step][part])
    assert shards[0][0][0].shape[0] == 2


def test_start_step_and_shard_arguments_are_checked(dataset):
    with pytest.raises(ValueError, match="start_step"):
        pipeline.train_dataset(dataset.train, p=2, k=2, start_step=-1)
    with pytest.raises(ValueError, match=r"shard=\(index, count\).*p\*k=4.*\(0, 3\)"):
        pipeline.train_dataset(dataset.train, p=2, k=2, shard=(0, 3))
    with pytest.raises(ValueError, match="shard"):
        pipeline.train_dataset(dataset.train, p=2, k=2, shard=(2, 2))


def one_frame_tracklets(tmp_path, ids=2, per_id=4):
    """``per_id`` one-frame tracklets per identity, every frame different."""
    return [Tracklet((data_trees.write_image(str(tmp_path / f"{pid}_{t}.png"), seed=10 * pid + t, size=(H, W)),),
                     pid, 1, t) for pid in range(ids) for t in range(per_id)]


def test_train_default_draws_tracklets_with_replacement(tmp_path):
    """The reference draws an identity's K tracklets with replacement even when
    it has K or more: with 4 one-frame tracklets and K=4, the default repeats a
    clip within an identity's 4 (all 4 differ with probability 4!/4**4 = 0.094
    per group, 0.094**12 over 6 batches), "as_needed" never does."""
    tracklets = one_frame_tracklets(tmp_path)
    kwargs = dict(p=2, k=4, seq_len=2, height=H, width=W, flip_prob=0.0, seed=0)

    def distinct_clips_per_identity(ds):
        return [len({clip.tobytes() for clip in group}) for x, _, _ in take(ds, 6) for group in x.reshape(2, 4, -1)]

    assert min(distinct_clips_per_identity(pipeline.train_dataset(tracklets, **kwargs))) < 4
    as_needed = pipeline.train_dataset(tracklets, replacement="as_needed", **kwargs)
    assert distinct_clips_per_identity(as_needed) == [4] * 12
    with pytest.raises(ValueError, match=r"replacement must be one of \('always', 'as_needed'\). "
                                         r"Received: replacement='never'"):
        pipeline.train_dataset(tracklets, replacement="never", **kwargs)


def test_each_frame_is_read_once_and_decoded_from_those_bytes(tmp_path, monkeypatch):
    """The check and the decoder share one read: TensorFlow never opens a frame,
    and Python opens each frame of a clip once."""
    tracklets = one_frame_tracklets(tmp_path, ids=1, per_id=1)
    frames = [data_trees.write_image(str(tmp_path / f"f{i}.jpg"), seed=i) for i in range(5)]
    tracklets.append(Tracklet(tuple(frames), 1, 1, 1))
    opened = []
    real_open = open

    def counting_open(path, *args, **kwargs):
        opened.append(path)
        return real_open(path, *args, **kwargs)

    def no_tf_read(*args, **kwargs):
        raise AssertionError("the pipeline read a frame with tf.io.read_file")

    monkeypatch.setattr(pipeline, "open", counting_open, raising=False)
    monkeypatch.setattr(pipeline.tf.io, "read_file", no_tf_read)
    ds = pipeline.eval_dataset(tracklets, seq_len=8, sampling="dense", height=H, width=W,
                               checker=pipeline.FrameChecker())
    clips = take(ds, 1)[0][0]
    # the 5-frame tracklet: frames 0..4, then frame 4 repeated; each file opened once
    assert sorted(opened) == sorted([tracklets[0].frames[0]] + frames)
    for j, i in enumerate([0, 1, 2, 3, 4, 4, 4, 4]):
        np.testing.assert_allclose(clips[1, j], reference_frame(frames[i]), atol=0.05)


def test_a_frame_is_checked_on_every_read(tmp_path):
    """No record of good frames is kept (memory bounded by the bad frames): a
    frame that breaks after a first good read is found on the next read."""
    frames = [data_trees.write_image(str(tmp_path / f"f{i}.jpg"), seed=i) for i in range(2)]
    tracklets = [Tracklet(tuple(frames), 1, 1, 1)]
    checker = pipeline.FrameChecker()
    ds = pipeline.eval_dataset(tracklets, seq_len=2, height=H, width=W, checker=checker)
    take(ds, 1)
    assert checker.report()["bad_frames"] == 0
    data = open(frames[1], "rb").read()
    open(frames[1], "wb").write(data[: len(data) // 2])
    clip = take(ds, 1)[0][0][0]
    assert checker.report()["bad_frames"] == 1 and checker.report()["substitutions"] == 1
    np.testing.assert_allclose(clip[1], reference_frame(frames[0]), atol=0.05)


def test_colour_jitter_scales_each_clips_channels_and_leaves_the_rest_of_the_stream(dataset):
    """Jittered clips are the plain stream's clips with each clip's R, G, B
    multiplied by one gain in [exp(-c), exp(c)] (clipped to 0..255); the
    frames, flips and labels drawn are the same with and without jitter."""
    c = 0.3
    plain = take(pipeline.train_dataset(dataset.train, p=2, k=2, seq_len=4, height=H, width=W, seed=5), 3)
    jittered = take(pipeline.train_dataset(dataset.train, p=2, k=2, seq_len=4, height=H, width=W, seed=5,
                                           colour_jitter=c), 3)
    gains_seen = []
    for (x, pid, cam), (y, pid_j, cam_j) in zip(plain, jittered):
        np.testing.assert_array_equal(pid, pid_j)
        np.testing.assert_array_equal(cam, cam_j)
        pixels_x = (x * STD + MEAN) * 255.0   # back to 0..255
        pixels_y = (y * STD + MEAN) * 255.0
        for clip_x, clip_y in zip(pixels_x, pixels_y):
            for channel in range(3):
                a, b = clip_x[..., channel].ravel(), clip_y[..., channel].ravel()
                inside = (a > 8) & (b < 247)  # away from 0 and from the clip at 255
                gain = np.median(b[inside] / a[inside])
                np.testing.assert_allclose(b, np.clip(a * gain, 0, 255), atol=0.5)
                assert np.exp(-c) - 1e-3 <= gain <= np.exp(c) + 1e-3
                gains_seen.append(gain)
    assert np.std(gains_seen) > 0.05  # the gains vary between clips and channels
    with pytest.raises(ValueError, match="colour_jitter must be in"):
        pipeline.train_dataset(dataset.train, p=2, k=2, seq_len=4, height=H, width=W, colour_jitter=1.5)
