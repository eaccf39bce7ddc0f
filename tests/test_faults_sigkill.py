"""SIGKILL at random moments: builds leave nothing half-written and nothing stale for long, and
training goes on exactly, one trainer per run directory, no orphaned workers."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from clip_match.data.formats import write_split
from clip_match.data.lmdb_reader import LMDBReader
from clip_match.index.label_index import LabelIndex
from clip_match.train.synthetic import write_shapes_dataset

REPO = Path(__file__).resolve().parents[1]
ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
pytestmark = pytest.mark.slow


def _kill_after(command: list[str], seconds: float) -> int | None:
    """Run ``command``, SIGKILL it after ``seconds`` (None if it finished first, else the signal)."""
    process = subprocess.Popen(command, cwd=REPO, env=ONE_THREAD_ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=seconds)
        return None
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return signal.SIGKILL


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


def test_killed_lmdb_builds_leave_nothing_and_the_next_build_sweeps_their_leftovers(synthetic_images, png, tmp_path):
    images = [(i, png(image.resize((256, 256)))) for i, image in enumerate(synthetic_images(40, seed=2) * 12)]
    write_split(tmp_path, "train", images, [(1, "猫", [i for i, _ in images])])
    command = [sys.executable, "-m", "clip_match.cli", "build-lmdb", str(tmp_path), "--splits", "train",
               "--workers", "1"]
    rng = random.Random(0)
    for _ in range(3):  # killed at a random moment after the build has started writing
        process = subprocess.Popen(command, cwd=REPO, env=ONE_THREAD_ENV, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        mine = f"-{process.pid}."  # its temporary directory: .lmdb.HOST-PID.XXXX.tmp
        assert _wait_for(lambda: any(mine in name for name in _siblings(tmp_path / "lmdb"))
                         or process.poll() is not None, 120)
        time.sleep(rng.uniform(0.0, 0.05))  # (the build itself takes about half a second)
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL, "the build finished before it could be killed"
        assert not (tmp_path / "lmdb").exists()  # nothing under the final name
        left = _siblings(tmp_path / "lmdb")  # each build swept the one killed before it
        assert len(left) == 1 and mine in left[0], left
    assert subprocess.run(command, cwd=REPO, env=ONE_THREAD_ENV, capture_output=True).returncode == 0
    assert _siblings(tmp_path / "lmdb") == []  # the killed builds' temporary directories are gone
    assert len(LMDBReader(tmp_path / "lmdb" / "train")) == len(images)


def _timed(command: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(command, cwd=REPO, env=ONE_THREAD_ENV, capture_output=True, check=True)
    return time.monotonic() - started


def test_killed_index_builds_leave_nothing_stale(tiny_bundle, tmp_path):
    candidates = tmp_path / "labels.txt"
    candidates.write_text("\n".join(f"标签{i} label {i}" for i in range(6000)), encoding="utf-8")
    out = tmp_path / "labels.idx"
    command = [sys.executable, "-m", "clip_match.cli", "index", "build", "--bundle", str(tiny_bundle),
               "--candidates", str(candidates), "--out", str(out), "--overwrite"]
    whole = _timed(command)
    for fraction in random.Random(1).sample([0.5, 0.7, 0.85, 0.95], 3):
        _kill_after(command, fraction * whole)
        assert len(LabelIndex.load(out)) == 6000  # the earlier index stays whole
    assert subprocess.run(command, cwd=REPO, env=ONE_THREAD_ENV, capture_output=True).returncode == 0
    assert _siblings(out) == []
    assert len(LabelIndex.load(out)) == 6000


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"))


def _launcher(shapes: Path, logs: Path, steps: int) -> list[str]:
    """train_tiny_cpu.sh's launcher line: torchrun, one CPU worker, the micro tiny config."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--nnodes=1",
            f"--master_port={29600 + os.getpid() % 300}", "-m", "clip_match.train", "--",
            f"--train-data={shapes / 'train'}", f"--logs={logs}", "--name=run", "--model=tiny", "--batch-size=12",
            f"--max-steps={steps}", "--save-step-frequency=1", "--num-workers=0", "--warmup=2", "--seed=3",
            "--lr=1e-3", "--precision=fp32", "--log-interval=1"]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_second_trainer_on_a_run_in_use_is_refused(shapes, tmp_path):
    from clip_match.fsutil import exclusive_lock

    run = tmp_path / "run"
    run.mkdir()
    with exclusive_lock(run / ".trainer.lock", "trainer"):  # as a running trainer holds it
        second = subprocess.run([sys.executable, "-m", "clip_match.cli", "train", *_launcher(shapes, tmp_path, 2)[9:]],
                                cwd=REPO, env=ONE_THREAD_ENV, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2
    assert f"in use by another trainer (pid {os.getpid()} on" in second.stderr
    assert not (run / "checkpoints").exists()


def test_a_killed_launcher_takes_its_worker_and_the_rerun_goes_on_exactly(shapes, tmp_path):
    steps = 24
    reference = tmp_path / "reference"
    assert subprocess.run(_launcher(shapes, reference, steps), cwd=REPO, env=ONE_THREAD_ENV,
                          capture_output=True).returncode == 0
    logs = tmp_path / "killed"
    checkpoints = logs / "run" / "checkpoints"
    launcher = subprocess.Popen(_launcher(shapes, logs, steps), cwd=REPO, env=ONE_THREAD_ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_for(lambda: (checkpoints / "epoch_1_2.pt").exists(), 180)
        worker = int((logs / "run" / ".trainer.lock").read_text().split()[1])  # "pid N on HOST"
        assert worker != launcher.pid
        launcher.send_signal(signal.SIGKILL)  # the launcher alone, not its process group
        launcher.wait()
        assert _wait_for(lambda: _gone(worker), 15), "the worker kept training without its launcher"
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert torch.load(checkpoints / "epoch_latest.pt", weights_only=True)["step"] < steps, "it finished first"
    assert subprocess.run(_launcher(shapes, logs, steps), cwd=REPO, env=ONE_THREAD_ENV,
                          capture_output=True).returncode == 0
    expected = _weights(reference / "run" / "checkpoints" / "epoch_latest.pt")
    resumed = _weights(checkpoints / "epoch_latest.pt")
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
    records = [json.loads(line) for line in (logs / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, steps + 1))  # one writer, in order
