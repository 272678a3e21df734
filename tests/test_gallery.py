"""The Gallery on its nearest-neighbour index (nvan_tf.deploy.gallery, nvan_tf.deploy.index):
recall against exact search on clustered re-ID-like embeddings, add / remove / save / load /
memory-mapped view with ids kept, a kill during save, file versions, bounded re-ranking, and
association's candidate search on the index. Plain NumPy and usearch: no TensorFlow."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from nvan_tf.benchmarks.gallery import ClusteredEmbeddings
from nvan_tf.deploy import gallery as gallery_module
from nvan_tf.deploy.index import EXACT_BELOW, NeighbourIndex
try:
    from tests import data_trees
except ImportError:  # tests/ itself on sys.path
    import data_trees
from nvan_tf.deploy.serving import Gallery
from nvan_tf.core.atomic import TEMP_PREFIX, remove_stale
from nvan_tf.video import association
from nvan_tf.video.track_metrics import association_scores

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _clustered(n=4000, dim=96, seed=0):
    data = ClusteredEmbeddings(n, dim, rank=16, seed=seed)
    vectors = np.concatenate([chunk for _, chunk in data.chunks()])
    queries, identities = data.queries(100)
    return vectors, data.labels, queries, identities


def _recall(approximate, exact):
    return np.mean([len(set(a.indices.tolist()) & set(b.indices.tolist())) / len(b.indices)
                    for a, b in zip(approximate, exact)])


def test_recall_at_10_of_the_graph_against_exact_search_on_clustered_embeddings():
    vectors, labels, queries, identities = _clustered()
    cameras = np.arange(len(vectors)) % 4
    graph = Gallery(vectors, ids=labels, cameras=cameras, exact_below=1000)
    exact = Gallery(vectors, ids=labels, cameras=cameras)
    assert not graph.index.exact and exact.index.exact and len(vectors) < EXACT_BELOW
    found, truth = graph.query(queries, k=10), exact.query(queries, k=10)
    assert _recall(found, truth) >= 0.95
    # the distances are exact ones, whatever the search: the first match agrees to float rounding
    for a, b in zip(found, truth):
        if a.indices[0] == b.indices[0]:
            assert a.distances[0] == pytest.approx(b.distances[0], abs=1e-5)
        assert np.all(np.diff(a.distances) >= 0)
    # the clusters are there: most of the nearest are the query's identity
    assert np.mean([m.ids[0] == i for m, i in zip(truth, identities)]) > 0.8
    # filtered: another camera only, with the same recall
    query_cameras = np.arange(len(queries)) % 4
    found = graph.query(queries, k=10, cameras=query_cameras, exclude_same_camera=True)
    truth = exact.query(queries, k=10, cameras=query_cameras, exclude_same_camera=True)
    assert all(len(m.indices) == 10 and np.all(m.cameras != c) for m, c in zip(found, query_cameras))
    assert _recall(found, truth) >= 0.95
    # forced exact on the graph-backed gallery is the exact answer
    for a, b in zip(graph.query(queries[:5], k=10, exact=True), exact.query(queries[:5], k=10)):
        np.testing.assert_array_equal(a.indices, b.indices)


def test_a_filter_that_leaves_few_candidates_widens_the_graph_search():
    vectors, labels, queries, _ = _clustered(n=1500, dim=32, seed=1)
    cameras = np.where(np.arange(len(vectors)) % 100 == 0, 2, 1)   # 15 entries of camera 2
    graph = Gallery(vectors, ids=labels, cameras=cameras, exact_below=100)
    exact = Gallery(vectors, ids=labels, cameras=cameras)
    ones = np.ones(len(queries), np.int64)
    found = graph.query(queries, k=10, cameras=ones, exclude_same_camera=True)
    truth = exact.query(queries, k=10, cameras=ones, exclude_same_camera=True)
    assert all(len(m.indices) == 10 and np.all(m.cameras == 2) for m in found)
    assert _recall(found, truth) >= 0.95


def _keyed(n=300, dim=24, seed=2):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, dim)).astype(np.float32), np.array([f"p{i % 40}" for i in range(n)]),
            np.arange(n) % 3 + 1, [f"t{i}" for i in range(n)])


@pytest.mark.parametrize("exact_below", [10**6, 50], ids=["exact", "graph"])
def test_add_remove_save_load_and_view_keep_the_ids(tmp_path, exact_below):
    embeddings, ids, cameras, tracklets = _keyed()
    gallery = Gallery(embeddings[:200], ids[:200], cameras[:200], tracklets=tracklets[:200], exact_below=exact_below)
    assert gallery.add(embeddings[200:], ids[200:], cameras[200:], tracklets=tracklets[200:]) == 100
    assert gallery.index.exact == (exact_below > 300)
    assert gallery.remove(ids=["p3"]) == 8
    assert gallery.remove(tracklets=[(1, "t0"), (2, "t0"), (2, "t1")]) == 2   # (2, "t0") is not held
    kept = ~np.isin(np.arange(300), np.flatnonzero(ids == "p3")) & ~np.isin(np.arange(300), [0, 1])
    np.testing.assert_array_equal(gallery.embeddings, embeddings[kept])
    np.testing.assert_array_equal(gallery.ids, ids[kept])
    queries = np.random.default_rng(3).standard_normal((6, 24)).astype(np.float32)
    before = gallery.query(queries, k=5)
    assert not any(set(m.ids) & {"p3"} for m in before)

    path = gallery.save(tmp_path / "g.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npz"]
    for loaded in (Gallery.load(path), Gallery.load(path, view=True)):
        assert len(loaded) == len(gallery) == 290
        np.testing.assert_array_equal(loaded.embeddings, gallery.embeddings)
        np.testing.assert_array_equal(loaded.ids, gallery.ids)
        np.testing.assert_array_equal(loaded.cameras, gallery.cameras)
        np.testing.assert_array_equal(loaded.tracklets, gallery.tracklets)
        assert loaded.index.exact == gallery.index.exact       # the graph is read back, not rebuilt
        if not loaded.index.exact:
            assert loaded.index.graph.size == 290
        for a, b in zip(loaded.query(queries, k=5), before):
            np.testing.assert_array_equal(a.indices, b.indices)
            np.testing.assert_array_equal(a.ids, b.ids)
            np.testing.assert_allclose(a.distances, b.distances, atol=1e-6)
    view = Gallery.load(path, view=True)
    assert not view.embeddings.flags.writeable and view.index.mapping is not None
    with pytest.raises(ValueError, match="read-only memory-mapped view"):
        view.add(embeddings[:1], ["x"], [1])
    with pytest.raises(ValueError, match="read-only memory-mapped view"):
        view.remove(ids=["p1"])
    # a loaded gallery goes on: held tracklets are left out, new ones get new entries
    loaded = Gallery.load(path)
    assert loaded.add(embeddings[:3], ["new", "new", "new"], cameras[:3], tracklets=tracklets[:3]) == 2
    assert loaded.ids.tolist()[-2:] == ["new", "new"] and len(loaded) == 292
    assert loaded.index.keys[-1] > gallery.index.keys[-1]      # keys are never reused
    assert loaded.query(embeddings[0], k=1)[0].ids[0] == "new"


def test_a_held_camera_and_tracklet_is_added_once_with_its_id():
    embeddings, ids, cameras, tracklets = _keyed(n=20)
    gallery = Gallery(embeddings, ids, cameras, tracklets=tracklets)
    assert gallery.add(embeddings + 0.5, np.array(["other"] * 20), cameras, tracklets=tracklets) == 0
    assert len(gallery) == 20 and gallery.ids.tolist() == ids.tolist()
    np.testing.assert_array_equal(gallery.embeddings, embeddings)
    # the same tracklet name in another camera is another tracklet; no key: always added
    assert gallery.add(embeddings[:2], ["a", "b"], [9, 9], tracklets=tracklets[:2]) == 2
    assert gallery.add(embeddings[:2], ["c", "d"], [1, 1]) == 2
    assert gallery.add(embeddings[:2], ["c", "d"], [1, 1]) == 2
    # twice in one call: the first is kept
    assert gallery.add(embeddings[:2], ["e", "f"], [5, 5], tracklets=["x", "x"]) == 1
    assert len(gallery) == 27 and gallery.ids[-1] == "e"
    with pytest.raises(ValueError, match="one tracklet key per embedding"):
        gallery.add(embeddings[:2], ["g", "h"], [5, 5], tracklets=["y"])


def test_gallery_files_of_format_1_are_read_and_newer_or_broken_ones_refused(tmp_path):
    embeddings, _, cameras, _ = _keyed(n=5)
    np.savez(tmp_path / "v1.npz", embeddings=embeddings, ids=np.arange(5), cameras=cameras)
    old = Gallery.load(tmp_path / "v1.npz")
    assert len(old) == 5 and old.ids.tolist() == [0, 1, 2, 3, 4] and old.tracklets.tolist() == [""] * 5
    np.testing.assert_array_equal(old.query(embeddings[2], k=1)[0].indices, [2])
    old.add(embeddings[:1], [7], [1])                        # and it saves as format 2
    assert int(np.load(old.save(tmp_path / "v2.npz"))["format"]) == gallery_module.FORMAT == 2
    np.savez(tmp_path / "v3.npz", format=np.array(3), embeddings=embeddings, ids=np.arange(5), cameras=cameras)
    with pytest.raises(ValueError, match="v3.npz is a gallery of format 3, written by a newer nvan-tf; this one "
                                         "reads formats 1 to 2"):
        Gallery.load(tmp_path / "v3.npz")
    arrays = dict(np.load(tmp_path / "v2.npz"))
    np.savez(tmp_path / "short.npz", **{**arrays, "ids": arrays["ids"][:-1]})
    with pytest.raises(ValueError, match="short.npz is not a consistent gallery"):
        Gallery.load(tmp_path / "short.npz")
    np.savez(tmp_path / "nokeys.npz", **{k: v for k, v in arrays.items() if k != "keys"})
    with pytest.raises(ValueError, match=r"nokeys.npz is not a gallery of format 2: no \['keys'\]"):
        Gallery.load(tmp_path / "nokeys.npz")
    np.savez_compressed(tmp_path / "packed.npz", **arrays)
    assert len(Gallery.load(tmp_path / "packed.npz")) == 6
    with pytest.raises(ValueError, match="embeddings is compressed; a memory-mapped view needs the file"):
        Gallery.load(tmp_path / "packed.npz", view=True)


_SAVER = """
import sys
import numpy as np
from nvan_tf.deploy.gallery import Gallery
n = 600_000
gallery = Gallery(np.full((n, 64), 0.5, np.float32), ids=np.arange(n), cameras=np.ones(n, np.int64), exact_below=n + 1)
print("saving", flush=True)
while True:
    gallery.save(sys.argv[1])
"""


def test_a_kill_during_save_leaves_a_whole_gallery(tmp_path):
    path = tmp_path / "g.npz"
    embeddings, ids, cameras, tracklets = _keyed(n=10)
    Gallery(embeddings, ids, cameras, tracklets=tracklets).save(path)
    process = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONPATH": ROOT})
    try:
        assert process.stdout.readline().strip() == "saving"
        deadline = time.monotonic() + 60
        while not any(p.name.startswith(TEMP_PREFIX) and p.stat().st_size > 2**20 for p in tmp_path.iterdir()):
            assert time.monotonic() < deadline, "the save never started"
            time.sleep(0.002)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert leftovers                               # killed in the middle of a save
    loaded = Gallery.load(path)                   # the previous gallery or a whole new one, never a part
    if len(loaded) == 10:
        np.testing.assert_array_equal(loaded.embeddings, embeddings)
        assert loaded.ids.tolist() == ids.tolist() and loaded.tracklets.tolist() == tracklets
    else:
        assert len(loaded) == 600_000 and np.all(loaded.embeddings == 0.5) and loaded.ids[-1] == 599_999
    assert sorted(remove_stale(str(tmp_path))) == sorted(leftovers)
    assert [p.name for p in tmp_path.iterdir()] == ["g.npz"]


def test_reranking_is_refused_above_its_limit(monkeypatch):
    embeddings, ids, cameras, _ = _keyed(n=12)
    gallery = Gallery(embeddings, ids, cameras)
    assert len(gallery.query(embeddings[:2], k=4, rerank=True, k1=4, k2=2)[0].indices) == 4
    monkeypatch.setattr(gallery_module, "RERANK_LIMIT", 11)
    with pytest.raises(ValueError, match="builds the 12 x 12 gallery distance matrix; it is limited to 11 entries"):
        gallery.query(embeddings[:2], rerank=True)


def test_index_arguments_are_checked():
    with pytest.raises(ValueError, match="dtype must be one of"):
        Gallery(dtype="f64")
    with pytest.raises(ValueError, match="metric must be one of"):
        Gallery(metric="manhattan")
    index = NeighbourIndex(4)
    index.add([3, 5], np.eye(4)[:2])
    with pytest.raises(ValueError, match="larger than every key held"):
        index.add([4], np.eye(4)[:1])
    with pytest.raises(ValueError, match="vectors contains non-finite values"):
        index.add([9], np.full((1, 4), np.nan))
    with pytest.raises(ValueError, match="holds 4-d vectors. Received 3-d queries"):
        index.search(np.zeros((1, 3)))
    rows, dist = index.search(np.eye(4)[:1], k=3)        # fewer than k: -1 / inf past the end
    assert rows.tolist() == [[0, 1, -1]] and dist[0, 2] == np.inf


@pytest.mark.parametrize("metric,threshold", [("cosine", 0.35), ("euclidean", 7.0)])
def test_association_on_the_index_gives_the_exact_identities(metric, threshold):
    features, truth, cameras, starts, ends = data_trees.embedding_world(3000, 600)
    results = []
    for exact in (True, False):
        pairs = association.candidate_pairs(features, cameras, starts, ends, metric=metric, k=20,
                                            max_distance=threshold, exact=exact)
        results.append(association.associate(features, cameras, starts, ends, threshold=threshold, metric=metric,
                                             pairs=pairs))
    np.testing.assert_array_equal(results[0].ids, results[1].ids)
    assert association_scores(results[0].ids, truth)["pairwise_f1"] > 0.95


# -- The Gallery's exact search and its checks (as before the index) --------------------


def _gallery(rng, n=12, d=16):
    embeddings = rng.normal(size=(n, d)).astype(np.float32)
    return Gallery(embeddings, ids=[f"p{i % 5}" for i in range(n)], cameras=np.arange(n) % 3)


def test_gallery_top_k_is_nearest_by_cosine(tmp_path):
    rng = np.random.default_rng(0)
    gallery = _gallery(rng)
    queries = rng.normal(size=(3, 16)).astype(np.float32)
    matches = gallery.query(queries, k=4)
    for q, match in zip(queries, matches):
        cos = gallery.embeddings @ q / (np.linalg.norm(gallery.embeddings, axis=1) * np.linalg.norm(q))
        expected = np.argsort(1 - cos, kind="stable")[:4]
        np.testing.assert_array_equal(match.indices, expected)
        np.testing.assert_allclose(match.distances, (1 - cos)[expected], atol=1e-6)
        np.testing.assert_array_equal(match.ids, gallery.ids[expected])
        np.testing.assert_array_equal(match.cameras, gallery.cameras[expected])
    (single,) = gallery.query(queries[0], k=100)  # k beyond the gallery: all of it
    assert len(single.indices) == len(gallery)


def test_gallery_cross_camera_and_reranking():
    rng = np.random.default_rng(1)
    gallery = _gallery(rng, n=30)
    queries = rng.normal(size=(2, 16)).astype(np.float32)
    matches = gallery.query(queries, k=30, cameras=[0, 2], exclude_same_camera=True)
    assert all((m.cameras != cam).all() and len(m.indices) == 20 for m, cam in zip(matches, (0, 2)))
    plain = gallery.query(queries, k=30)
    reranked = gallery.query(queries, k=30, rerank=True, k1=6, k2=3)
    assert [len(m.indices) for m in reranked] == [30, 30]
    assert all(np.all(np.diff(m.distances) >= 0) for m in reranked)
    assert any((a.indices != b.indices).any() for a, b in zip(plain, reranked))
    with pytest.raises(ValueError, match="needs the queries' cameras"):
        gallery.query(queries, exclude_same_camera=True)


def test_gallery_add_save_load(tmp_path):
    rng = np.random.default_rng(2)
    gallery = _gallery(rng, n=4)
    gallery.add(rng.normal(size=(2, 16)), ids=["x", "y"], cameras=[7, 8])
    path = gallery.save(tmp_path / "g.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npz"]
    loaded = Gallery.load(path)
    assert len(loaded) == 6 and loaded.ids.tolist()[-2:] == ["x", "y"]
    np.testing.assert_array_equal(loaded.embeddings, gallery.embeddings)
    np.testing.assert_array_equal(loaded.cameras, [0, 1, 2, 0, 7, 8])
    assert len(Gallery.load(Gallery().save(tmp_path / "empty.npz"))) == 0


def test_gallery_refuses_bad_input(tmp_path):
    gallery = _gallery(np.random.default_rng(3), n=3)
    with pytest.raises(ValueError, match="holds 16-d embeddings. Received 8-d ones"):
        gallery.add(np.zeros((1, 8)), ids=["z"], cameras=[1])
    with pytest.raises(ValueError, match="one id and one camera per embedding"):
        gallery.add(np.zeros((2, 16)), ids=["z"], cameras=[1, 2])
    with pytest.raises(ValueError, match="all be strings or all integers"):
        gallery.add(np.zeros((1, 16)), ids=[3], cameras=[1])
    with pytest.raises(ValueError, match="Received 4-d queries"):
        gallery.query(np.zeros(4))
    with pytest.raises(ValueError, match="The gallery is empty"):
        Gallery().query(np.zeros(4))
    np.savez(tmp_path / "other.npz", features=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"is not a gallery: no \['cameras', 'embeddings', 'ids'\]"):
        Gallery.load(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot be read as a gallery"):
        Gallery.load(tmp_path / "junk.npz")


@pytest.mark.slow
def test_the_benchmark_prints_its_table():
    env = {**os.environ, "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, "-m", "nvan_tf.benchmarks.gallery", "--sizes", "1500", "--queries", "50",
                           "--dim", "256", "--pca", "128", "--expansion-search", "32,256"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line.split("|")[2].strip(): [c.strip() for c in line.split("|")[1:-1]]
            for line in done.stdout.splitlines() if line.startswith("| 1,500 |")}
    assert sorted(rows) == ["exact", "usearch, ef 256", "usearch, ef 32"]
    assert rows["exact"][7] == "1.000"                      # exact against itself
    assert float(rows["usearch, ef 256"][7]) >= 0.95
    assert float(rows["exact"][8]) >= 0.9                  # the 128-d projection keeps most neighbours
    assert "256-d drawn, 128-d indexed" in done.stdout
    refused = subprocess.run([sys.executable, "-m", "nvan_tf.benchmarks.gallery", "--libraries", "annoy"], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--libraries: unknown ['annoy']" in refused.stderr


def test_onnxruntime_still_imports_after_the_graph_is_built():
    pytest.importorskip("onnxruntime", reason="needs the [export] or [video] extra")
    # usearch 2.26.6 loaded first crashed `import onnxruntime` (a segfault): the index loads onnxruntime first
    script = ("import numpy as np\nfrom nvan_tf.deploy.index import NeighbourIndex\n"
              "index = NeighbourIndex(4, exact_below=0)\nindex.add([0, 1], np.eye(4)[:2])\n"
              "assert not index.exact\nimport onnxruntime\nprint('ok')")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
