"""The gallery's nearest-neighbour index against exact search: build time, memory, disk, latency, recall@10.

    python -m nvan_tf.benchmarks.gallery [--sizes 10000,100000,1000000 --dim 2048 --pca 128 --queries 200]

**The vectors** fall the way re-ID embeddings do: identities as clusters of
2-8 tracklets. Each identity has a centre (a mean direction shared by all,
as ReLU / BN-neck features have, plus a random offset in a ``--rank``-dim
subspace with a decaying spectrum); each tracklet is its centre plus noise
(mostly in a second ``--rank``-dim subspace: pose, light, occlusion; a
tenth isotropic), its size varying between tracklets. Scales are set so
the median cosine distance between tracklets of one identity is
``--intra`` and between identities ``--inter``; the figures measured on the
drawn vectors are printed. Queries are new tracklets of gallery identities.

**Reduction.** The vectors are drawn in ``--dim`` dims; with ``--pca D``
they are projected on their ``D`` leading singular vectors (an uncentred
PCA, NumPy's SVD of 20,000 of them: it keeps dot products, hence cosines)
before they are indexed, as a deployment would (``Gallery`` takes the
reduced embeddings; queries are reduced the same way). Recall@10 is given
twice: against exact search over what was indexed (the index's own loss),
and against exact search over the full ``--dim``-d vectors (the index and
the reduction together).

**Rows.** ``exact``: the Gallery's exact search (NumPy); ``usearch``: the
Gallery on its HNSW graph (``exact_below=0``), ``--dtype`` storage;
``faiss-hnsw``: faiss's HNSW with fp16 storage, the same M / efConstruction
/ efSearch; ``faiss-ivfpq``: faiss IVF-PQ (4 sqrt(N) lists, ``D/8`` sub-
quantizers of 8 bits, 32 lists probed). faiss rows need ``faiss-cpu``
installed (it is not a dependency: it lost this measurement, README,
Benchmarks). Each row is built in a process of its own; memory is the
growth of its resident memory over the loaded data (the index and the
vectors it keeps; the JSON has the peak too, the data and the exact
search included).

Latency, on one thread (a shared machine's second core makes BLAS and
OpenMP threads wait on each other): batch 1 is the median over the queries
one at a time, batch 100 the median of the batches of 100. Building uses
every core.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

LIBRARIES = ("exact", "usearch", "faiss-hnsw", "faiss-ivfpq")
_CHUNK = 20_000


def _scales(intra, inter):
    """Noise and centre-offset scales for the target median distances (unit-norm parts)."""
    if not 0 < intra < inter < 1:
        raise ValueError(f"Need 0 < intra < inter < 1. Received: intra={intra}, inter={inter}")
    noise2 = 1 / (1 - intra) - 1                  # cos(a, b) of one identity ~ 1 / (1 + noise^2)
    centre_cos = (1 - inter) * (1 + noise2)       # between identities ~ cos(centres) / (1 + noise^2)
    return np.sqrt(noise2), np.sqrt(1 / centre_cos - 1)


class ClusteredEmbeddings:
    """Re-ID-like embeddings (see the module docstring), drawn a chunk at a
    time: tracklet ``i`` is the same whichever chunks are drawn."""

    def __init__(self, n, dim, *, intra=0.28, inter=0.6, rank=64, per_identity=(2, 8), spread=0.4, seed=0):
        rng = np.random.default_rng(seed)
        self.n, self.dim, self.rank, self.spread, self.seed = int(n), int(dim), int(rank), float(spread), seed
        sizes = rng.integers(per_identity[0], per_identity[1] + 1, size=self.n // per_identity[0] + 1)
        self.labels = np.repeat(np.arange(len(sizes)), sizes)[:self.n]
        self.identities = int(self.labels[-1]) + 1
        self.noise, self.offset = _scales(intra, inter)
        bases, _ = np.linalg.qr(rng.standard_normal((self.dim, 2 * self.rank)))
        self.identity_basis, self.noise_basis = bases[:, :self.rank].T, bases[:, self.rank:].T
        spectrum = 1.0 / np.arange(1, self.rank + 1) ** 0.5
        self.spectrum = np.sqrt(spectrum / spectrum.sum())
        mean = rng.standard_normal(self.dim)
        self.mean = mean / np.linalg.norm(mean)
        self.latent = (rng.standard_normal((self.identities, self.rank)) * self.spectrum).astype(np.float32)

    def centres(self, identities):
        c = self.mean + self.offset * (self.latent[identities] @ self.identity_basis)
        return c / np.linalg.norm(c, axis=1, keepdims=True)

    def tracklets(self, identities, rng):
        m = len(identities)
        scale = self.noise * np.exp(self.spread * rng.standard_normal((m, 1)) - self.spread ** 2)
        structured = (rng.standard_normal((m, self.rank)) * self.spectrum) @ self.noise_basis
        isotropic = rng.standard_normal((m, self.dim)) / np.sqrt(self.dim)
        x = self.centres(identities) + scale * (np.sqrt(0.9) * structured + np.sqrt(0.1) * isotropic)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def chunk(self, start, stop):
        """Gallery tracklets ``start:stop`` (float32, unit norm)."""
        rng = np.random.default_rng([self.seed, 1, start])
        return self.tracklets(self.labels[start:stop], rng)

    def chunks(self, size=_CHUNK):
        for start in range(0, self.n, size):
            yield start, self.chunk(start, min(start + size, self.n))

    def queries(self, count):
        """New tracklets of ``count`` gallery identities, and those identities."""
        rng = np.random.default_rng([self.seed, 2])
        identities = rng.choice(self.labels, size=count)
        return self.tracklets(identities, rng), identities


def distance_figures(vectors, labels, threshold=0.351):
    """Median intra- / inter-identity cosine distances of (a sample of) vectors,
    and the shares of each under ``threshold``."""
    d = 1 - vectors @ vectors.T
    same = labels[:, None] == labels[None, :]
    upper = np.triu(np.ones_like(same), 1)
    intra, inter = d[same & upper], d[~same & upper]
    return {"intra_median": float(np.median(intra)), "inter_median": float(np.median(inter)),
            "intra_under": float(np.mean(intra < threshold)), "inter_under": float(np.mean(inter < threshold)),
            "threshold": threshold}


def _top10(queries, vectors, start, best):
    """Merges the 10 nearest (cosine) of ``vectors`` (rows from ``start``) into ``best``."""
    sims = queries @ vectors.T
    rows = np.argpartition(-sims, min(10, sims.shape[1] - 1), axis=1)[:, :10]
    cand_d = np.concatenate([best[0], np.take_along_axis(sims, rows, axis=1)], axis=1)
    cand_i = np.concatenate([best[1], rows + start], axis=1)
    order = np.argsort(-cand_d, axis=1, kind="stable")[:, :10]
    return np.take_along_axis(cand_d, order, axis=1), np.take_along_axis(cand_i, order, axis=1)


def prepare(folder, n, dim, pca, queries, **draw):
    """Draws the vectors, reduces them, writes ``vectors.npy``, ``queries.npy``
    and ``truth_full.npy`` (exact top-10 at ``dim``) into ``folder``."""
    data = ClusteredEmbeddings(n, dim, **draw)
    q, _ = data.queries(queries)
    sample = data.chunk(0, min(n, 4000))
    figures = distance_figures(sample, data.labels[:len(sample)])
    basis, kept = None, 1.0
    if pca and pca < dim:
        _, singular, vt = np.linalg.svd(data.chunk(0, min(n, 20_000)).astype(np.float64), full_matrices=False)
        basis, kept = vt[:pca].T.astype(np.float32), float(np.sum(singular[:pca] ** 2) / np.sum(singular ** 2))
    out_dim = pca if basis is not None else dim
    vectors = np.lib.format.open_memmap(os.path.join(folder, "vectors.npy"), "w+", np.float32, (n, out_dim))
    best = (np.full((queries, 0), -np.inf, np.float32), np.zeros((queries, 0), np.int64))
    for start, chunk in data.chunks():
        best = _top10(q, chunk, start, best)
        vectors[start:start + len(chunk)] = chunk @ basis if basis is not None else chunk
    vectors.flush()
    del vectors
    np.save(os.path.join(folder, "queries.npy"), q @ basis if basis is not None else q)
    np.save(os.path.join(folder, "truth_full.npy"), best[1])
    return {"identities": data.identities, "dim": dim, "indexed_dim": out_dim, **figures,
            "pca_energy_kept": kept}


def _rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _recall(found, truth):
    return float(np.mean([len(set(a[a >= 0].tolist()) & set(b.tolist())) / 10 for a, b in zip(found, truth)]))


def _timed(search, queries):
    singles = []
    for q in queries:
        start = time.perf_counter()
        search(q[None])
        singles.append(time.perf_counter() - start)
    batches = []
    for start in range(0, len(queries) - 99, 100):
        t = time.perf_counter()
        search(queries[start:start + 100])
        batches.append(time.perf_counter() - t)
    return statistics.median(singles), statistics.median(batches) if batches else float("nan")


def worker(folder, library, dtype="f16", connectivity=16, expansion_add=64, expansion_search=(128,)):
    """The rows of ``library`` (one per ``expansion_search`` value of an HNSW
    row), built over ``folder``'s vectors in this process."""
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency: BLAS threads for the searches

    from nvan_tf.deploy.gallery import Gallery

    vectors = np.load(os.path.join(folder, "vectors.npy"))
    queries = np.load(os.path.join(folder, "queries.npy"))
    truth_full = np.load(os.path.join(folder, "truth_full.npy"))
    n, dim = vectors.shape
    if library.startswith("faiss"):
        import faiss

        faiss.omp_set_num_threads(os.cpu_count() or 1)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)   # inner product = cosine
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    with threadpool_limits(1):
        exact = np.stack([m.indices for m in _exact_gallery(vectors).query(queries, k=10)])
    before = _rss()
    path = os.path.join(folder, f"{library}.index")
    started = time.perf_counter()
    if library in ("exact", "usearch"):
        gallery = Gallery(exact_below=0 if library == "usearch" else n + 1, dtype=dtype, connectivity=connectivity,
                          expansion_add=expansion_add)
        gallery.add(vectors, ids=np.arange(n), cameras=np.zeros(n, np.int64))
        build = time.perf_counter() - started
        memory = _rss() - before
        path = gallery.save(path + ".npz")
        gallery.index.threads = 1

        def search(q):
            return np.stack([m.indices for m in gallery.query(q, k=10)])

        def set_ef(ef):
            if gallery.index.graph is not None:
                gallery.index.graph.expansion_search = ef
    else:
        if library == "faiss-hnsw":
            index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_fp16, connectivity, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = expansion_add
            index.train(vectors[:1000])
        else:
            lists = int(4 * np.sqrt(n))
            index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, lists, dim // 8, 8, faiss.METRIC_INNER_PRODUCT)
            index.train(vectors[np.random.default_rng(0).choice(n, min(n, 40 * lists), replace=False)])
            index.nprobe = 32
        index.add(vectors)
        build = time.perf_counter() - started
        memory = _rss() - before
        faiss.write_index(index, path)
        faiss.omp_set_num_threads(1)

        def search(q):
            return index.search(q, 10)[1]

        def set_ef(ef):
            if library == "faiss-hnsw":
                index.hnsw.efSearch = ef

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rows = []
    for ef in (expansion_search if library in ("usearch", "faiss-hnsw") else (None,)):
        set_ef(ef)
        with threadpool_limits(1):
            found = search(queries)
            single, batch = _timed(search, queries)
        rows.append({"library": library, "ef": ef, "n": n, "indexed_dim": dim, "build_s": build,
                     "memory_bytes": memory, "peak_bytes": peak, "disk_bytes": os.path.getsize(path),
                     "batch1_ms": single * 1e3, "batch100_ms": batch * 1e3,
                     "recall": _recall(found, exact), "recall_full": _recall(found, truth_full)})
    return rows


def _exact_gallery(vectors):
    from nvan_tf.deploy.gallery import Gallery

    return Gallery(vectors, ids=np.arange(len(vectors)), cameras=np.zeros(len(vectors), np.int64),
                   exact_below=len(vectors) + 1)


def run(sizes, dim=2048, pca=128, queries=200, libraries=("exact", "usearch"), folder=None, dtype="f16",
        connectivity=16, expansion_add=64, expansion_search=(64, 128, 256), progress=None, **draw):
    """Every row; ``progress(row)`` is called as each one is done."""
    rows, figures = [], []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="nvan_gallery_", dir=folder) as tmp:
            figures.append({"n": n, **prepare(tmp, n, dim, pca, queries, **draw)})
            if progress:
                progress(figures[-1])
            for library in libraries:
                command = [sys.executable, "-m", "nvan_tf.benchmarks.gallery", "--worker", library, "--data", tmp,
                           "--dtype", dtype, "--connectivity", str(connectivity), "--expansion-add",
                           str(expansion_add), "--expansion-search", ",".join(map(str, expansion_search))]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode:
                    raise RuntimeError(f"the {library} row at {n} failed:\n{done.stderr[-2000:]}")
                for row in json.loads(done.stdout.strip().splitlines()[-1]):
                    rows.append(row)
                    if progress:
                        progress(row)
    return figures, rows


def _size(value):
    return f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.0f} MiB"


def table(figures, rows):
    lines = []
    for f in figures:
        lines.append(f"N={f['n']:,}: {f['identities']:,} identities, {f['dim']}-d drawn, {f['indexed_dim']}-d indexed"
                     f" (the projection keeps {100 * f['pca_energy_kept']:.1f}% of the squared norm); "
                     f"cosine distance median "
                     f"{f['intra_median']:.3f} within an identity, {f['inter_median']:.3f} between; under "
                     f"{f['threshold']}: {100 * f['intra_under']:.1f}% / {100 * f['inter_under']:.3f}%")
    lines.append("")
    lines.append("| N | index | build | memory | on disk | batch 1 | batch 100 | recall@10 "
                 "(vs exact, indexed dims) | recall@10 (vs exact, full dims) |")
    lines.append("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        name = r["library"] + (f", ef {r['ef']}" if r.get("ef") else "")
        lines.append(f"| {r['n']:,} | {name} | {r['build_s']:.1f} s | {_size(max(r['memory_bytes'], 0))} | "
                     f"{_size(r['disk_bytes'])} | {r['batch1_ms']:.2f} ms | "
                     f"{r['batch100_ms']:.1f} ms | {r['recall']:.3f} | {r['recall_full']:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    from nvan_tf.core import console

    parser = console.make_parser("python -m nvan_tf.benchmarks.gallery", __doc__)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="gallery sizes, comma-separated")
    parser.add_argument("--dim", type=int, default=2048, help="dimension the vectors are drawn in")
    parser.add_argument("--pca", type=int, default=128, help="PCA-reduced dimension indexed (0: none)")
    parser.add_argument("--queries", type=int, default=200, help="queries timed and scored")
    parser.add_argument("--libraries", default="exact,usearch",
                        help=f"rows, comma-separated, of {', '.join(LIBRARIES)}")
    parser.add_argument("--dtype", default="f16", help="usearch storage (f32, f16, i8)")
    parser.add_argument("--connectivity", type=int, default=16, help="HNSW M (usearch and faiss-hnsw)")
    parser.add_argument("--expansion-add", type=int, default=64, help="HNSW efConstruction (usearch and faiss-hnsw)")
    parser.add_argument("--expansion-search", default="64,128,256",
                        help="HNSW efSearch values, comma-separated: a row each (usearch and faiss-hnsw)")
    parser.add_argument("--intra", type=float, default=0.28, help="median cosine distance within an identity")
    parser.add_argument("--inter", type=float, default=0.6, help="median cosine distance between identities")
    parser.add_argument("--rank", type=int, default=64, help="dimension of the identity and noise subspaces")
    parser.add_argument("--folder", help="where the vectors are written (default: the system's temporary folder)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--worker", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        searches = tuple(int(v) for v in args.expansion_search.split(","))
    except ValueError:
        parser.error(f"--expansion-search must be integers separated by commas. Received: {args.expansion_search!r}")
    if args.worker:
        print(json.dumps(worker(args.data, args.worker, dtype=args.dtype, connectivity=args.connectivity,
                                expansion_add=args.expansion_add, expansion_search=searches)))
        return 0
    libraries = [name.strip() for name in args.libraries.split(",") if name.strip()]
    unknown = sorted(set(libraries) - set(LIBRARIES))
    if unknown:
        parser.error(f"--libraries: unknown {unknown}; choose from {', '.join(LIBRARIES)}")
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes must be integers separated by commas. Received: {args.sizes!r}")
    if any(s < 100 for s in sizes) or args.queries < 1 or args.queries > min(sizes):
        parser.error(f"--sizes must each be >= 100 and --queries between 1 and the smallest size. Received: "
                     f"{args.sizes}, {args.queries}")
    def progress(row):  # each row as it is done (a 10^6 run takes a while), on stderr
        print(json.dumps(row), file=sys.stderr, flush=True)

    figures, rows = run(sizes, args.dim, args.pca, args.queries, libraries, args.folder, args.dtype,
                        args.connectivity, args.expansion_add, searches, progress,
                        intra=args.intra, inter=args.inter, rank=args.rank)
    print(json.dumps({"data": figures, "rows": rows}) if args.json else table(figures, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
