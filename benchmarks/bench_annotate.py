"""Annotation server under a bounded loopback load (issue 26): 8 keep-alive clients, 2,000 mixed requests.

The same seeded load runs against the server as shipped and, as the in-run baseline, against the same
server with the stdlib's defaults put back (headers and body in separate writes, Nagle's algorithm on),
each in its own process on a fresh copy of the state. After each run every acknowledged write is checked
in the database: each added label on its image exactly once, each removed one gone, one undo-log entry
per acknowledged change. Goal: p50 <= 3 ms and p99 <= 30 ms.

    .venv/bin/python -m benchmarks.bench_annotate [--clients 8] [--requests 2000] [--repeats 3]

The load (`run_load`) and the check (`check_consistency`) are shared with tests/test_faults.py.
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import random
import sqlite3
import statistics
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from clip_match.annotate.exchange import attach_image_dir
from clip_match.annotate.server import CLIENT_HEADER, AnnotationHandler, AnnotationServer
from clip_match.annotate.store import DB_NAME, LabelStore

GOAL_P50_MS, GOAL_P99_MS = 3.0, 30.0
# Share of each request kind in the load: what open tabs send (polls, images, labels, skips).
MIX = {"poll": 0.45, "image": 0.20, "add": 0.25, "remove": 0.05, "skip": 0.05}


@dataclass
class Load:
    """What a load run saw: latencies per request kind, and the writes the server acknowledged."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {kind: [] for kind in MIX})
    added: dict[str, int] = field(default_factory=dict)       # label -> image it was acknowledged on
    removed: set[str] = field(default_factory=set)
    changes: dict[str, int] = field(default_factory=dict)     # client -> acknowledged label changes
    failures: list[str] = field(default_factory=list)

    def all_ms(self) -> list[float]:
        return sorted(ms for values in self.latencies.values() for ms in values)


def percentile(sorted_values: list[float], share: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, round(share * (len(sorted_values) - 1)))]


def run_load(url: str, image_ids: list[int], clients: int = 8, requests: int = 2000, seed: int = 0) -> Load:
    """``requests`` seeded requests of the kinds in MIX, shared out over ``clients`` keep-alive connections
    (one thread each, all started together)."""
    load, lock = Load(), threading.Lock()
    start = threading.Barrier(clients)

    def client(number: int) -> None:
        rng, name = random.Random(f"{seed}-{number}"), f"load{number}"
        conn = http.client.HTTPConnection(urlsplit(url).hostname, urlsplit(url).port, timeout=30)
        headers = {"Host": urlsplit(url).netloc, CLIENT_HEADER: name, "Content-Type": "application/json"}
        mine: list[str] = []
        version = 0
        start.wait()
        for index in range(requests // clients + (number < requests % clients)):
            kind = rng.choices(list(MIX), list(MIX.values()))[0]
            if kind == "remove" and not mine:
                kind = "add"
            image = rng.choice(image_ids)
            if kind == "poll":
                method, path, body = "GET", f"/api/state?since={version}", None
            elif kind == "image":
                method, path, body = "GET", f"/api/images/{image}/view", None
            elif kind == "add":
                label = f"{name}-{index}"
                method, path, body = "POST", f"/api/images/{image}/labels", {"add": [label]}
            elif kind == "remove":
                label = mine.pop(rng.randrange(len(mine)))
                method, path, body = "POST", f"/api/images/{load.added[label]}/labels", {"remove": [label]}
            else:
                method, path, body = "POST", f"/api/images/{image}/skip", {"skipped": True}
            began = time.perf_counter()
            try:
                conn.request(method, path, None if body is None else json.dumps(body), headers)
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as error:  # the server died (tests kill it)
                with lock:
                    load.failures.append(f"{method} {path}: connection lost: {error!r}")
                break
            elapsed = (time.perf_counter() - began) * 1000
            with lock:
                load.latencies[kind].append(elapsed)
                if response.status != 200:
                    load.failures.append(f"{method} {path}: {response.status} {payload[:200]!r}")
                    continue
                if kind == "poll":
                    version = json.loads(payload)["version"]
                elif kind == "add":
                    load.added[label] = image
                    mine.append(label)
                elif kind == "remove":
                    load.removed.add(label)
                if kind in ("add", "remove"):
                    load.changes[name] = load.changes.get(name, 0) + 1
        conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return load


def check_consistency(db_path: Path, load: Load, killed: bool = False) -> list[str]:
    """Problems with the acknowledged writes of ``load`` as the database holds them (empty: consistent).

    ``killed``: the server was killed during the load, so each client may have had one change committed
    whose answer never came: at most one such change per client is then allowed."""
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute("SELECT l.name, il.image_id FROM image_labels il JOIN labels l ON l.id = il.label_id "
                            "WHERE l.name LIKE 'load%'").fetchall()
        logged = dict(conn.execute("SELECT client, COUNT(*) FROM actions WHERE kind = 'labels' GROUP BY client"))
    held: dict[str, list[int]] = {}
    for name, image in rows:
        held.setdefault(name, []).append(image)
    deviations: dict[str, list[str]] = {}  # client -> labels whose rows differ from what was acknowledged
    for label in set(load.added) | set(held):
        expected = [load.added[label]] if label in load.added and label not in load.removed else []
        if held.get(label, []) != expected:
            deviations.setdefault(label.rsplit("-", 1)[0], []).append(
                f"{label} held on images {held.get(label, [])}, acknowledged {expected}")
    problems = []
    for client in sorted(set(load.changes) | set(logged) | set(deviations)):
        unanswered = logged.get(client, 0) - load.changes.get(client, 0)  # changes committed, never acknowledged
        if not 0 <= unanswered <= killed or len(deviations.get(client, [])) > unanswered:
            problems.append(f"client {client}: {load.changes.get(client, 0)} acknowledged changes, "
                            f"{logged.get(client, 0)} in the undo log; {deviations.get(client, [])[:3]}")
    return problems


class StdlibDefaults(AnnotationHandler):
    """The baseline: the same handler with the stdlib's write behaviour (separate writes, Nagle on)."""

    disable_nagle_algorithm = False
    wbufsize = 0


def make_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` 320x240 JPEGs of blocky noise (about 20 KB each, what the page would show)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        blocks = rng.integers(0, 256, (15, 20, 3), dtype=np.uint8)
        paths.append(folder / f"img{i}.jpg")
        Image.fromarray(blocks).resize((320, 240), Image.Resampling.NEAREST).save(paths[-1], quality=90)
    return paths


def _serve(image_dir: Path, dataset_dir: Path, baseline: bool, ports: multiprocessing.Queue) -> None:
    store = LabelStore(dataset_dir)
    attach_image_dir(store, image_dir)
    server = AnnotationServer(image_dir, store, port=0)
    if baseline:
        server.RequestHandlerClass = StdlibDefaults
    ports.put(server.server_address[1])
    server.serve_forever()


@contextlib.contextmanager
def served(image_dir: Path, dataset_dir: Path, baseline: bool) -> Iterator[str]:
    """The annotation server in a child process (its own interpreter lock, like `clip-match annotate`)."""
    context = multiprocessing.get_context("fork")
    ports = context.Queue()
    process = context.Process(target=_serve, args=(image_dir, dataset_dir, baseline, ports), daemon=True)
    process.start()
    try:
        yield f"http://127.0.0.1:{ports.get(timeout=60)}/"
    finally:
        process.kill()
        process.join(10)


def measure(image_dir: Path, work: Path, baseline: bool, clients: int, requests: int, seed: int) -> tuple[Load, float]:
    """One load run on a fresh state folder; (the load, wall seconds). Fails on any inconsistency."""
    dataset_dir = Path(tempfile.mkdtemp(prefix="state-", dir=work))
    with served(image_dir, dataset_dir, baseline) as url:
        with urllib.request.urlopen(url + "api/state", timeout=30) as response:
            image_ids = [image["id"] for image in json.load(response)["images"]]
        began = time.perf_counter()
        load = run_load(url, image_ids, clients, requests, seed)
        wall = time.perf_counter() - began
    problems = load.failures + check_consistency(dataset_dir / DB_NAME, load)
    if problems:
        raise SystemExit(f"inconsistent ({len(problems)} problems), e.g. {problems[:3]}")
    return load, wall


def describe(title: str, load: Load, wall: float) -> str:
    values = load.all_ms()
    by_kind = "  ".join(f"{kind} {statistics.median(ms):.2f}" for kind, ms in load.latencies.items() if ms)
    return (f"  {title:<34} p50 {percentile(values, 0.5):6.2f} ms  p99 {percentile(values, 0.99):6.2f} ms  "
            f"max {values[-1]:7.2f} ms  {len(values) / wall:6.0f} req/s   (median by kind, ms: {by_kind})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each server; medians reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_images(work / "images", args.images)
        print(f"bench_annotate: {args.clients} keep-alive clients, {args.requests} requests "
              f"({', '.join(f'{share:.0%} {kind}' for kind, share in MIX.items())}), {args.images} images, "
              f"{args.repeats} runs each, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
        results: dict[str, list[tuple[float, float]]] = {"shipped": [], "baseline": []}
        for repeat in range(args.repeats):
            for name, baseline in (("shipped", False), ("baseline", True)):
                load, wall = measure(work / "images", work, baseline, args.clients, args.requests, seed=repeat)
                values = load.all_ms()
                results[name].append((percentile(values, 0.5), percentile(values, 0.99)))
                title = "clip-match annotate" if not baseline else "stdlib writes (separate, Nagle on)"
                print(describe(f"run {repeat + 1}: {title}", load, wall), flush=True)
        print(f"  consistency: every acknowledged write held exactly once in all {2 * args.repeats} runs")
        for name in results:
            p50 = statistics.median(p for p, _ in results[name])
            p99 = statistics.median(p for _, p in results[name])
            print(f"  {name:<9} median of runs: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        p50, p99 = (statistics.median(values) for values in zip(*results["shipped"]))
        base50 = statistics.median(p for p, _ in results["baseline"])
        print(f"  baseline p50 / shipped p50 = {base50 / p50:.1f}x")
        verdict = "OK" if p50 <= GOAL_P50_MS and p99 <= GOAL_P99_MS else "MISSED"
        print(f"  goal p50 <= {GOAL_P50_MS:g} ms and p99 <= {GOAL_P99_MS:g} ms: {verdict}")


if __name__ == "__main__":
    main()
