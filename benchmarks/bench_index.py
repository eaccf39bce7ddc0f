"""Candidate index speed, memory and recall against numpy brute force, in one run.

For each size (default 1e3, 1e5, 1e6 vectors of the bundle's dimension, 1024 for RN50):
build time and resident memory of the index that `LabelIndex` chooses automatically (and of
exact ``Flat`` up to 1e5), single-query latency and batched throughput of FAISS and of numpy
brute force (``X @ q`` + ``argpartition``), recall@10 against the exact top 10. For 1e5 it
prints the memory-bandwidth bound of exact search: bytes scanned per query / read bandwidth
measured here (fastest single-threaded full read of the same array: ``sum``, ``max`` or a
matrix-vector product), each timed as the flat query is (median of the same number of runs),
so noise from other processes weighs on both sides alike.

Threads: index builds use ``--build-threads`` (2); every search, FAISS and numpy alike, uses
``--search-threads`` (1, numpy's BLAS is pinned through OPENBLAS_NUM_THREADS). On this machine,
shared with other jobs, a 2-thread OpenMP FAISS query on 2 busy cores was about 2x slower than a
1-thread one, so one search thread gives the fairer and steadier comparison.

Data (honest, documented): uniformly random unit vectors are useless for ANN, since every
neighbour is about as far as any other. Real embeddings cluster by meaning, so the database is
n/100 clusters: unit vector = normalise(random unit centre + N(0, 0.7^2/d) noise), within-cluster
cosine about 0.67, between clusters about 0; queries are fresh draws from the same clusters, and
their exact top 10 are cluster-mates chosen by the noise. (With noise N(0, 1/d), cosine 0.5, the
clusters blur into each other across IVF cells and recall@10 at 1e6 was 0.75-0.89 in trial runs.)

    .venv/bin/python -m benchmarks.bench_index [--sizes 1000 100000 1000000] [--dim 1024 | --bundle DIR]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")
for variable in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, "1")  # numpy brute force: one thread, like FAISS searches

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from clip_match.index.faiss_index import choose_factory, new_index, set_search_parameters, train_if_needed  # noqa: E402
from clip_match.runtime.bundle import Bundle  # noqa: E402

K = 10
SPREAD = 0.7


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def index_file_bytes(index: faiss.Index) -> int:
    """Size of the saved index: what it holds in memory, without RSS noise."""
    with tempfile.TemporaryDirectory() as folder:
        faiss.write_index(index, os.path.join(folder, "index.faiss"))
        return os.path.getsize(os.path.join(folder, "index.faiss"))


def clustered(count: int, dim: int, centres: np.ndarray, rng: np.random.Generator, chunk: int = 100_000) -> np.ndarray:
    out = np.empty((count, dim), dtype=np.float32)
    scale = np.float32(SPREAD / np.sqrt(dim))
    for start in range(0, count, chunk):
        rows = min(chunk, count - start)
        block = centres[rng.integers(0, len(centres), rows)]
        block += rng.standard_normal((rows, dim), dtype=np.float32) * scale
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:start + rows] = block
    return out


def numpy_top_k(database: np.ndarray, queries: np.ndarray, chunk: int = 32) -> np.ndarray:
    """Exact top-K rows by inner product, best first (the brute-force baseline)."""
    result = np.empty((len(queries), K), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        scores = queries[start:start + chunk] @ database.T
        top = np.argpartition(-scores, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        result[start:start + chunk] = np.take_along_axis(top, order, axis=1)
    return result


def median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def read_bandwidth(array: np.ndarray, repeats: int) -> float:
    """Bytes per second of the fastest single-threaded full read of ``array``: ``sum``, ``max`` and
    a matrix-vector product, each timed like the query it bounds (median of ``repeats`` runs); the
    fastest kernel sets the bound."""
    ones = np.ones(array.shape[1], dtype=np.float32)
    kernels = (lambda: array.sum(dtype=np.float32), lambda: array.max(), lambda: array @ ones)
    return array.nbytes / min(median_seconds(kernel, repeats) for kernel in kernels)


def bench_size(count: int, dim: int, rng: np.random.Generator, build_threads: int, search_threads: int) -> None:
    centres = rng.standard_normal((max(1, count // 100), dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    database = clustered(count, dim, centres, rng)
    queries = clustered(200, dim, centres, rng)
    single = max(3, min(50, 50_000_000 // (count * dim // 100)))
    print(f"\n== {count:,} candidates x {dim} dims ({database.nbytes / 2**20:,.0f} MiB float32), "
          f"{single} single queries, batch of {len(queries)}")

    numpy_single = median_seconds(lambda: numpy_top_k(database, queries[:1]), single)
    start = time.perf_counter()
    exact = numpy_top_k(database, queries)
    numpy_batch = len(queries) / (time.perf_counter() - start)
    print(f"numpy brute force   single {numpy_single * 1e3:9.3f} ms   batch {numpy_batch:10.1f} q/s")

    factories = [choose_factory(count)]
    if factories[0][0] != "Flat" and count <= 100_000:
        factories.insert(0, ("Flat", ""))
    for factory, parameters in factories:
        faiss.omp_set_num_threads(build_threads)
        before = rss_bytes()
        start = time.perf_counter()
        index = new_index(dim, factory)
        train_if_needed(index, database)
        index.add(database)
        build = time.perf_counter() - start
        memory = rss_bytes() - before
        size = index_file_bytes(index)
        set_search_parameters(index, parameters)
        faiss.omp_set_num_threads(search_threads)
        repeats = single if factory == "Flat" else 50
        latency = median_seconds(lambda: index.search(queries[:1], K), repeats)
        start = time.perf_counter()
        _, found = index.search(queries, K)
        throughput = len(queries) / (time.perf_counter() - start)
        recall = np.mean([len(set(f) & set(e)) / K for f, e in zip(found, exact)])
        label = f"{factory} {parameters}".strip()
        print(f"faiss {label:<30} build {build:8.2f} s  RSS +{memory / 2**20:6.0f} MiB  "
              f"file {size / 2**20:8.0f} MiB  single {latency * 1e3:9.3f} ms ({numpy_single / latency:6.1f}x numpy)  "
              f"batch {throughput:10.1f} q/s ({throughput / numpy_batch:6.1f}x numpy)  recall@10 {recall:.4f}")
        if factory == "Flat" and count == 100_000:
            bandwidth = read_bandwidth(database, repeats)
            bound = database.nbytes / bandwidth
            print(f"memory-bandwidth bound: {database.nbytes / 1e6:.0f} MB scanned / {bandwidth / 1e9:.2f} GB/s "
                  f"(fastest 1-thread read, median of {repeats}) = {bound * 1e3:.3f} ms; Flat single query "
                  f"{latency * 1e3:.3f} ms (median of {repeats}) = "
                  f"{latency / bound:.2f}x the bound (goal <= 1.5x: {'met' if latency / bound <= 1.5 else 'NOT met'})")
        if factory != "Flat" and count >= 1_000_000:
            met = numpy_single / latency >= 20 and recall >= 0.98
            print(f"goal at {count:,}: single query >= 20x numpy at recall@10 >= 0.98: {'met' if met else 'NOT met'}")
        del index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=1024, help="embedding dimension (RN50: 1024)")
    parser.add_argument("--bundle", help="take the dimension from this model bundle instead")
    parser.add_argument("--build-threads", type=int, default=2)
    parser.add_argument("--search-threads", type=int, default=1)
    args = parser.parse_args()
    dim = Bundle.load(args.bundle).embed_dim if args.bundle else args.dim
    print(f"faiss {faiss.__version__}, numpy {np.__version__}, build threads {args.build_threads}, "
          f"search threads {args.search_threads} (numpy BLAS {os.environ['OPENBLAS_NUM_THREADS']}), "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    rng = np.random.default_rng(0)
    for count in args.sizes:
        bench_size(count, dim, rng, args.build_threads, args.search_threads)


if __name__ == "__main__":
    main()
