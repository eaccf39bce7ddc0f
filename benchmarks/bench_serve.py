"""`clip-match serve` on loopback vs the in-process `GridSolver.solve` loop, over the same puzzles.

Seeded emoji puzzles (2x3 and 3x3 alternating, PNG, k known), solved with the packaged demo bundle:

- in-process: one `GridSolver.solve(png_bytes, prompt, k=k)` after another (decode, find the grid,
  encode, select), the baseline;
- server: `clip-match serve` started in a subprocess (same onnxruntime threads), driven by
  `clip_match.client.Client` from this process at concurrency 1, 4 and 16 (that many threads, each
  taking the next puzzle), every answer compared with the in-process one; with ``--merge`` also a
  second server with ``--batching merge`` at concurrency 16 (requests share encoder calls; with the
  demo's dynamic int8 towers their scores then move slightly: the largest change is printed).

The cases take turns for ``--rounds`` rounds (stopping early after ``--max-seconds``); each line
gives the median over rounds of puzzles/s, of p50 / p99 latency and of the CPU time per puzzle (the
server process's, and this process's as the client). The client runs on the same 2 cores as the
server: its own work (multipart, JSON) counts against the server, as on one machine. The bound
printed last is what the CPUs allow at best: CPUs / (server + client CPU time per puzzle).

Goals (issue 29), demo bundle on this 2-core machine: at concurrency 1 the server adds <= 3 ms per
puzzle over in-process (p50 against p50); at concurrency 16 it answers >= 1.5x the in-process
sequential puzzles/s, with no errors.
Run: .venv/bin/python -m benchmarks.bench_serve [--puzzles 48] [--rounds 5] [--threads 2] [--merge]
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--puzzles", type=int, default=48, help="puzzles per case and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads, both sides")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--merge", action="store_true", help="also a server with --batching merge at the top level")
    parser.add_argument("--max-seconds", type=float, default=300, help="no new round after this")
    parser.add_argument("--seed", type=int, default=2029)
    return parser.parse_args()


ARGS = parse_args()
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)

import io  # noqa: E402

import numpy as np  # noqa: E402

from clip_match.client import Client, ServiceError  # noqa: E402
from clip_match.grid.solver import GridSolver  # noqa: E402
from datasets.emoji.glyphs import EmojiSet  # noqa: E402
from datasets.emoji.puzzles import make_puzzle  # noqa: E402

GOAL_OVERHEAD_MS, GOAL_SPEEDUP = 3.0, 1.5


def puzzles(count: int, seed: int) -> list[tuple[bytes, str, int]]:
    """(PNG bytes, prompt, k) of seeded puzzles, layouts alternating."""
    emoji, made = EmojiSet(), []
    for i in range(count):
        puzzle = make_puzzle(emoji, np.random.default_rng([seed, i]), ("3x3", "2x3")[i % 2], "noto")
        buffer = io.BytesIO()
        puzzle.image.save(buffer, "PNG")
        made.append((buffer.getvalue(), puzzle.prompt, puzzle.k))
    return made


class Server:
    """`clip-match serve` in a subprocess on a free loopback port."""

    def __init__(self, *options: str):
        command = [sys.executable, "-m", "clip_match.cli", "serve", "--port", "0", "--threads", str(ARGS.threads),
                   "--max-queue", "256", *options]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
        for line in self.process.stderr:
            found = re.search(r"listening on (http://\S+)", line)
            if found:
                self.url = found.group(1)
                break
        else:
            raise RuntimeError(f"the server did not start: {self.process.wait()}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def process_cpu(pid: int) -> float:
    """Seconds of CPU a process has used (Linux: /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(function, *args) -> tuple[object, float]:
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def in_process(solver: GridSolver, cases: list) -> tuple[float, list[float], list]:
    started = time.perf_counter()
    results, latencies = [], []
    for png, prompt, k in cases:
        result, seconds = timed(solver.solve, png, prompt, "auto", k)
        results.append(result)
        latencies.append(seconds)
    return len(cases) / (time.perf_counter() - started), latencies, results


def served(client: Client, cases: list, concurrency: int) -> tuple[float, list[float], list]:
    def one(case):
        png, prompt, k = case
        try:
            return timed(client.grid, png, prompt, "auto", k)
        except ServiceError as error:
            return error, 0.0

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(one, cases))
    rate = len(cases) / (time.perf_counter() - started)
    return rate, [seconds for _, seconds in answers], [answer for answer, _ in answers]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def main() -> int:
    cases = puzzles(ARGS.puzzles, ARGS.seed)
    levels = [int(level) for level in ARGS.concurrency.split(",")]
    solver = GridSolver(threads=ARGS.threads)
    names = ["in-process"] + [f"server, concurrency {level}" for level in levels]
    servers = {"auto": Server()}
    if ARGS.merge:
        servers["merge"] = Server("--batching", "merge")
        names.append(f"server --batching merge, concurrency {levels[-1]}")
    clients = {name: Client(server.url) for name, server in servers.items()}
    figures = {name: {"rate": [], "p50": [], "p99": [], "cpu": [], "client": []} for name in names}
    errors, wrong, score_change = 0, 0, 0.0
    started = time.monotonic()
    try:
        for client in clients.values():  # warm-up: connections, first-call costs
            served(client, cases[:4], 2)
        in_process(solver, cases[:4])
        rounds = 0
        while rounds < ARGS.rounds and (rounds == 0 or time.monotonic() - started < ARGS.max_seconds):
            rounds += 1
            cpu = time.process_time()
            rate, latencies, expected = in_process(solver, cases)
            runs = [("in-process", rate, latencies, None, time.process_time() - cpu, 0.0)]
            plan = [(name, "auto", level) for level, name in zip(levels, names[1:])]
            plan += [(names[-1], "merge", levels[-1])] if ARGS.merge else []
            for name, server, level in plan:
                cpu, client_cpu = process_cpu(servers[server].process.pid), time.process_time()
                answered = served(clients[server], cases, level)
                runs.append((name, *answered, process_cpu(servers[server].process.pid) - cpu,
                             time.process_time() - client_cpu))
            for name, rate, latencies, answers, cpu, client_cpu in runs:
                figures[name]["rate"].append(rate)
                figures[name]["cpu"].append(cpu / len(cases) * 1000)
                figures[name]["client"].append(client_cpu / len(cases) * 1000)
                figures[name]["p50"].append(percentile(latencies, 0.5) * 1000)
                figures[name]["p99"].append(percentile(latencies, 0.99) * 1000)
                if answers is None:
                    continue
                for answer, reference in zip(answers, expected):
                    if isinstance(answer, ServiceError):
                        errors += 1
                    elif "merge" in name:
                        score_change = max(score_change, float(np.abs(np.subtract(answer.scores,
                                                                                  reference.scores)).max()))
                    elif answer != reference:
                        wrong += 1
    finally:
        for server in servers.values():
            server.stop()

    print(f"bench_serve: {ARGS.puzzles} puzzles (PNG, 3x3/2x3, k known, seed {ARGS.seed}), demo bundle, "
          f"onnxruntime threads {ARGS.threads}, {rounds} rounds (medians), {len(os.sched_getaffinity(0))} CPUs, "
          f"load {os.getloadavg()[0]:.1f}")
    median = {name: {key: statistics.median(values) for key, values in row.items()} for name, row in figures.items()}
    for name in names:
        row = median[name]
        client = f" + client {row['client']:4.1f}" if name != "in-process" else ""
        print(f"  {name:<44} {row['rate']:6.1f} puzzles/s   p50 {row['p50']:6.1f} ms   p99 {row['p99']:6.1f} ms   "
              f"CPU {row['cpu']:5.1f}{client} ms/puzzle")
    baseline, first, top = median["in-process"], median[names[1]], median[names[len(levels)]]
    overhead = first["p50"] - baseline["p50"]
    speedup = top["rate"] / baseline["rate"]
    print(f"  answers: {errors} errors, {wrong} differ from in-process"
          + (f"; --batching merge moved scores by up to {score_change:.2e}" if ARGS.merge else ""))
    print(f"  concurrency {levels[0]}: server p50 - in-process p50 = {overhead:+.1f} ms  (goal <= {GOAL_OVERHEAD_MS:g})"
          f" {'OK' if overhead <= GOAL_OVERHEAD_MS else 'MISSED'}")
    print(f"  concurrency {levels[-1]}: server / in-process puzzles/s = {speedup:.2f}x  (goal >= {GOAL_SPEEDUP:g}x)"
          f" {'OK' if speedup >= GOAL_SPEEDUP and not errors else 'MISSED'}")
    if ARGS.merge:
        print(f"  --batching merge, concurrency {levels[-1]}: {median[names[-1]]['rate'] / baseline['rate']:.2f}x")
    cpus = len(os.sched_getaffinity(0))
    bound = cpus * 1000 / (top["cpu"] + top["client"])
    print(f"  (CPU-time bound at concurrency {levels[-1]}: {cpus} CPUs / {top['cpu'] + top['client']:.1f} ms per puzzle"
          f" = {bound:.0f} puzzles/s = {bound / baseline['rate']:.2f}x in-process; in-process uses "
          f"{baseline['cpu'] * baseline['rate'] / 1000:.2f} CPUs)")
    return 1 if errors or wrong else 0


if __name__ == "__main__":
    sys.exit(main())
