"""RRS, evenly, dense and P x K sampling against hand-computed expectations."""

import numpy as np
import pytest

from nvan_tf.data.sampling import PKSampler, num_test_clips, rrs_chunks, sample_test_indices, sample_train_indices


def test_rrs_chunks_fewer_frames_than_chunks():
    # F=3 < S=8: [0], [1], [2], then the last frame repeated
    np.testing.assert_array_equal(rrs_chunks(3, 8), [[0], [1], [2], [2], [2], [2], [2], [2]])


def test_rrs_chunks_equal():
    np.testing.assert_array_equal(rrs_chunks(8, 8), np.arange(8).reshape(8, 1))


def test_rrs_chunks_not_divisible():
    # F=10, S=4: interval ceil(10/4)=3, padded to 12 with frame 9
    np.testing.assert_array_equal(rrs_chunks(10, 4), [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 9, 9]])
    # F=17, S=8: interval 3, 24 entries, frames 16 repeated from index 17 on
    chunks = rrs_chunks(17, 8)
    assert chunks.shape == (8, 3)
    np.testing.assert_array_equal(chunks[5], [15, 16, 16])
    np.testing.assert_array_equal(chunks[7], [16, 16, 16])


def test_rrs_chunks_divisible():
    np.testing.assert_array_equal(rrs_chunks(16, 8)[:, 0], [0, 2, 4, 6, 8, 10, 12, 14])


@pytest.mark.parametrize("bad", [(0, 8), (5, 0), (2.5, 8)])
def test_rrs_rejects_bad_lengths(bad):
    with pytest.raises(ValueError, match="num_frames|seq_len"):
        rrs_chunks(*bad)


def test_test_indices_rrs_is_first_of_each_chunk():
    np.testing.assert_array_equal(sample_test_indices(10, 4, "rrs"), [[0, 3, 6, 9]])
    np.testing.assert_array_equal(sample_test_indices(3, 8, "rrs"), [[0, 1, 2, 2, 2, 2, 2, 2]])
    np.testing.assert_array_equal(sample_test_indices(8, 8, "rrs"), [np.arange(8)])


def test_test_indices_evenly():
    np.testing.assert_array_equal(sample_test_indices(10, 4, "evenly"), [[0, 2, 5, 7]])
    np.testing.assert_array_equal(sample_test_indices(2, 4, "evenly"), [[0, 1, 1, 1]])


def test_test_indices_dense():
    np.testing.assert_array_equal(sample_test_indices(10, 4, "dense"),
                                  [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 9, 9]])
    np.testing.assert_array_equal(sample_test_indices(3, 4, "dense"), [[0, 1, 2, 2]])
    assert num_test_clips(10, 4, "dense") == 3 and num_test_clips(10, 4, "rrs") == 1
    with pytest.raises(ValueError, match="mode"):
        sample_test_indices(10, 4, "random")


def test_train_indices_one_per_chunk_and_seeded():
    draws = np.stack([sample_train_indices(10, 4, np.random.default_rng(s)) for s in range(200)])
    chunks = rrs_chunks(10, 4)
    for c in range(4):
        assert set(draws[:, c]) <= set(chunks[c])
    assert set(draws[:, 0]) == {0, 1, 2}  # every frame of a chunk is reachable
    assert set(draws[:, 3]) == {9}
    a = sample_train_indices(100, 8, np.random.default_rng(7))
    b = sample_train_indices(100, 8, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert np.all(np.diff(a) > 0)  # chunks are ordered in time
    np.testing.assert_array_equal(sample_train_indices(3, 8, np.random.default_rng(0)), [0, 1, 2, 2, 2, 2, 2, 2])
    with pytest.raises(TypeError, match="Generator"):
        sample_train_indices(10, 4, 0)


def _pids():
    # id 0: 5 tracklets, id 1: 1, id 2: 3, id 3: 4, id 4: 2, id 5: 6
    counts = [5, 1, 3, 4, 2, 6]
    return [pid for pid, n in enumerate(counts) for _ in range(n)]


def test_pk_batch_composition():
    pids = np.asarray(_pids())
    sampler = PKSampler(pids, p=3, k=4, seed=0, replacement="as_needed")
    assert sampler.batches_per_epoch == 2 and sampler.batch_size == 12
    it = iter(sampler)
    epoch = [next(it) for _ in range(2)]
    seen = []
    for batch in epoch:
        assert batch.shape == (12,) and batch.dtype == np.int64
        groups = pids[batch].reshape(3, 4)
        assert np.all(groups == groups[:, :1])  # K consecutive tracklets of one id
        ids = groups[:, 0]
        assert len(set(ids)) == 3
        seen.extend(ids)
        for pid, members in zip(ids, batch.reshape(3, 4)):
            n = int((pids == pid).sum())
            assert set(members) <= set(np.flatnonzero(pids == pid))
            if n >= 4:
                assert len(set(members)) == 4  # without replacement when possible
    assert sorted(seen) == list(range(6))  # one epoch = each identity once


def test_pk_default_draws_with_replacement_like_the_reference():
    """The reference draws K of an identity's tracklets with np.random.choice
    (with replacement) even when it has K or more. With 4 tracklets and K=4, a
    draw without replacement is a permutation of the 4; with replacement all 4
    differ with probability 4!/4**4 = 0.094 only, so 40 groups without a
    repeat (probability 0.094**40) cannot come from the default."""
    pids = [0] * 4 + [1] * 4
    groups = lambda sampler: [g for b, _ in zip(sampler, range(20)) for g in b.reshape(2, 4)]
    default = groups(PKSampler(pids, p=2, k=4, seed=0))
    assert any(len(set(g)) < 4 for g in default)
    as_needed = groups(PKSampler(pids, p=2, k=4, seed=0, replacement="as_needed"))
    assert all(len(set(g)) == 4 for g in as_needed)


def test_pk_replacement_always_and_errors():
    pids = [0] * 10 + [1] * 10
    sampler = PKSampler(pids, p=2, k=8, seed=1, replacement="always")
    groups = [g for b, _ in zip(sampler, range(20)) for g in b.reshape(2, 8)]
    repeats = sum(len(set(g)) < 8 for g in groups)
    assert repeats > 0  # with replacement some batch repeats a tracklet
    with pytest.raises(ValueError, match="at least p=3 identities"):
        PKSampler(pids, p=3, k=2)
    with pytest.raises(ValueError, match="replacement"):
        PKSampler(pids, p=2, k=2, replacement="sometimes")


def test_pk_seeded_and_reproducible():
    pids = _pids()
    take = lambda s: np.stack([b for b, _ in zip(PKSampler(pids, 2, 3, seed=s), range(6))])
    np.testing.assert_array_equal(take(5), take(5))
    assert not np.array_equal(take(5), take(6))
    sampler = PKSampler(pids, 2, 3, seed=5)
    first = [b for b, _ in zip(sampler, range(4))]
    again = [b for b, _ in zip(sampler, range(4))]  # iterating again restarts the stream
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
