"""Trainer throughput on CPU: training samples/s per precision (fp32, bf16 autocast), and the LMDB
data loader alone.

The loader must deliver faster than training consumes, or training waits on data. All run in
this process on the same generated LMDB (coloured shapes, 128 px PNGs), with the same model, batch
and worker count; the ratios printed are against the first precision, and loader / the fastest
training. Only numbers from one run compare. bf16 pays off on CPUs with bf16 instructions
(AVX512-BF16, AMX); elsewhere it is emulated and slower.

    .venv/bin/python -m benchmarks.bench_train [--model tiny] [--precisions fp32,bf16] [--steps 20]
        [--batch-size 32] [--workers 1] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="model config (name or JSON path)")
    parser.add_argument("--precisions", default="fp32,bf16", help="trainer --precision values, in order")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps (after 2 warm-up steps)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="data-loader worker processes")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared 2-core machine two spinning OpenMP threads are far slower)")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import torch
    from torch.utils.data import DataLoader

    from clip_match.model import load_config
    from clip_match.train.config import parse
    from clip_match.train.data import PairDataset, ResumableSampler, collate_pairs
    from clip_match.train.synthetic import write_shapes_dataset
    from clip_match.train.trainer import train

    torch.set_num_threads(args.threads)
    config = load_config(args.model)
    with tempfile.TemporaryDirectory(prefix="bench_train.") as tmp:
        pairs_needed = args.batch_size * (args.steps + 2)
        lmdb_dir = write_shapes_dataset(Path(tmp) / "data", {"train": -(-pairs_needed // 12)}, size=128)
        split = str(lmdb_dir / "train")

        # training: the real trainer; it measures samples/s over the steps after the warm-up ones
        train_rates = {}
        for precision in args.precisions.split(","):
            run = train(parse(["--train-data", split, "--model", args.model, "--device", "cpu", "--batch-size",
                               str(args.batch_size), "--max-steps", str(args.steps + 2), "--log-interval", "1",
                               "--num-workers", str(args.workers), "--warmup", "1", "--logs", tmp,
                               "--name", f"bench_{precision}", "--precision", precision,
                               "--save-epoch-frequency", "0", "--valid-epoch-interval", "0"]))
            records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            train_rates[precision] = _rate_after_warmup(records, args.batch_size)

        # the data loader alone: same dataset, sampler, batch and workers
        dataset = PairDataset(split, config.image_resolution, config.context_length)
        loader = DataLoader(dataset, batch_size=args.batch_size, sampler=ResumableSampler(dataset, 1, 0, 0),
                            drop_last=True, num_workers=args.workers, collate_fn=collate_pairs)
        batches = iter(loader)
        next(batches)
        started, count = time.perf_counter(), 0
        for batch in batches:
            count += len(batch[0])
        loader_rate = count / (time.perf_counter() - started)

    baseline = next(iter(train_rates.values()))
    for precision, rate in train_rates.items():
        print(f"training, {args.model} config, {precision}, batch {args.batch_size}, {args.threads} threads, "
              f"{args.workers} worker(s): {rate:.1f} samples/s ({rate / baseline:.2f}x the first)")
    train_rate = max(train_rates.values())
    print(f"LMDB data loader alone, same batch and workers: {loader_rate:.1f} samples/s")
    print(f"loader / fastest training consumption: {loader_rate / train_rate:.2f}x "
          f"({'enough' if loader_rate > train_rate else 'TOO SLOW: training waits on data'})")
    print("GPU comparison (RN50, batch 128, AMP, vs cn_clip main.py): not run here (needs a CUDA GPU)"
          if not torch.cuda.is_available() else "GPU present: the RN50 comparison is not implemented in this script")
    return 0 if loader_rate > train_rate else 1


def _rate_after_warmup(records: list[dict], batch_size: int) -> float:
    """Samples/s over the logged steps after the first two (start-up, first worker batch)."""
    train = [r for r in records if r["kind"] == "train"]
    # samples_per_s is cumulative over the epoch: recover per-step times from it
    elapsed = [r["step"] * batch_size / r["samples_per_s"] for r in train]
    timed_steps = train[-1]["step"] - train[1]["step"]
    return timed_steps * batch_size / (elapsed[-1] - elapsed[1])


if __name__ == "__main__":
    sys.exit(main())
