"""The trainer end to end on generated shapes: learning, DDP, accumulation, exact resume, bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from clip_match.data.formats import write_split
from clip_match.data.lmdb_build import build_lmdb
from clip_match.errors import ClipMatchError
from clip_match.retrieval_metrics import retrieval_metrics
from clip_match.model import create_model, load_checkpoint, load_config
from clip_match.train import distributed, main
from clip_match.train.config import parse
from clip_match.train.synthetic import write_shapes_dataset
from clip_match.train.trainer import train

REPO = Path(__file__).resolve().parents[1]
_TEXT = {"vocab_size": 21128, "text_hidden_act": "gelu", "text_hidden_size": 32, "text_initializer_range": 0.02,
         "text_intermediate_size": 64, "text_max_position_embeddings": 64, "text_num_attention_heads": 2,
         "text_num_hidden_layers": 1, "text_type_vocab_size": 2, "context_length": 12}
# No BatchNorm and no dropout: one process and several must agree to float precision.
MICRO_VIT = {"embed_dim": 32, "image_resolution": 32, "vision_layers": 1, "vision_width": 32, "vision_patch_size": 8,
             "vision_head_width": 16, "text_attention_probs_dropout_prob": 0.0, "text_hidden_dropout_prob": 0.0, **_TEXT}
# BatchNorm statistics and dropout: state that an exact resume has to restore.
MICRO_RN = {"embed_dim": 32, "image_resolution": 32, "vision_layers": [1, 1, 1, 1], "vision_width": 8,
            "vision_patch_size": None, "vision_head_width": 16, "text_attention_probs_dropout_prob": 0.1,
            "text_hidden_dropout_prob": 0.1, **_TEXT}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine, two spinning OpenMP threads run many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """LMDB splits of 12 coloured-shape labels: train 8 images per label (96 pairs), valid 2 (24)."""
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def configs(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("configs")
    paths = {}
    for name, config in {"micro_vit": MICRO_VIT, "micro_rn": MICRO_RN}.items():
        paths[name] = str(folder / f"{name}.json")
        Path(paths[name]).write_text(json.dumps(config))
    return paths


def _flags(shapes: Path, logs: Path, model: str, *extra: str) -> list[str]:
    return ["--train-data", str(shapes / "train"), "--logs", str(logs), "--name", "run", "--model", model,
            "--num-workers", "0", "--warmup", "2", "--wd", "0.0", "--seed", "5", *extra]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _assert_same_weights(a: Path, b: Path, atol: float) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)
    assert worst <= atol, f"weights differ by up to {worst}"


def _chance_mean_recall(val_dir: Path) -> float:
    """Mean recall of random features on the validation split (averaged over draws)."""
    from clip_match.train.data import ValidationSet

    val = ValidationSet.read(val_dir)
    rng = np.random.default_rng(0)
    draws = [retrieval_metrics(rng.normal(size=(len(val.image_ids), 32)), rng.normal(size=(len(val.texts), 32)),
                               val.pairs)["mean_recall"] for _ in range(20)]
    return float(np.mean(draws))


def test_loss_falls_and_validation_recall_rises_above_chance(shapes, configs, tmp_path):
    run = train(parse(_flags(shapes, tmp_path, configs["micro_vit"], "--val-data", str(shapes / "valid"),
                             "--batch-size", "24", "--max-epochs", "15", "--lr", "5e-3", "--log-interval", "1",
                             "--report-training-batch-acc", "--augment", "safe",
                             "--valid-batch-size", "24", "--valid-epoch-interval", "5", "--save-epoch-frequency", "10")))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert all(0 <= r["i2t_acc"] <= 1 for r in records if r["kind"] == "train")
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in val] == [20, 40, 60]
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])
    assert val[-1]["val_loss"] < val[0]["val_loss"]
    chance = _chance_mean_recall(shapes / "valid")
    assert val[-1]["mean_recall"] > chance + 20, (val[-1], chance)
    assert (run / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["epoch10.pt", "epoch15.pt", "epoch_latest.pt", "slim.pt"]  # cn_clip's names
    # the slim export is what `clip-match export` reads
    model = load_checkpoint(run / "checkpoints" / "slim.pt", load_config(configs["micro_vit"]))
    assert torch.equal(model.logit_scale.detach(), _weights(run / "checkpoints" / "epoch_latest.pt")["module.logit_scale"])


def test_bf16_autocast_trains_on_cpu(shapes, configs, tmp_path):
    common = ["--batch-size", "24", "--max-epochs", "8", "--lr", "5e-3", "--log-interval", "1"]
    runs = {precision: train(parse(_flags(shapes, tmp_path / precision, configs["micro_vit"], *common,
                                          "--precision", precision))) for precision in ("fp32", "bf16")}
    losses = [json.loads(line)["loss"] for line in (runs["bf16"] / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])
    fp32, bf16 = (_weights(run / "checkpoints" / "epoch_latest.pt") for run in runs.values())
    assert max((fp32[k] - bf16[k]).abs().max().item() for k in fp32) > 1e-4  # bf16 really ran, not fp32


# AdamW with eps 1 is close to SGD: a wrong gradient scale would show (with eps 1e-8 Adam hides it
# and turns float noise in near-zero gradients into full-size updates).
SGD_LIKE = ["--eps", "1.0", "--lr", "0.5"]


def _assert_trained(checkpoint: Path, config: str) -> None:
    """The weights moved well away from their (seeded) initial values, so equality means something."""
    torch.manual_seed(5)
    initial = create_model(load_config(config)).state_dict()
    trained = _weights(checkpoint)
    assert max((trained[f"module.{k}"] - v).abs().max().item() for k, v in initial.items()) > 1e-2


def test_frozen_towers_do_not_change(shapes, configs, tmp_path):
    run = train(parse(_flags(shapes, tmp_path, configs["micro_rn"], "--batch-size", "32", "--max-steps", "2",
                             "--freeze-vision", "--augment", "cnclip")))
    torch.manual_seed(5)
    initial = create_model(load_config(configs["micro_rn"])).state_dict()
    trained = _weights(run / "checkpoints" / "epoch_latest.pt")
    changed = {k for k, v in initial.items() if not torch.equal(trained[f"module.{k}"], v)}
    assert changed and not any(k.startswith("visual.") for k in changed)  # BatchNorm statistics included


@pytest.mark.slow
def test_two_process_gloo_ddp_matches_one_process_with_the_same_global_batch(shapes, configs, tmp_path):
    common = ["--global-batch-size", "16", "--max-steps", "4", *SGD_LIKE]
    single = train(parse(_flags(shapes, tmp_path / "one", configs["micro_vit"], *common)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "clip_match.train", "--", *_flags(shapes, tmp_path / "two", configs["micro_vit"], *common)]
    done = subprocess.run(command, cwd=REPO, env=ONE_THREAD_ENV, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "batch 8 x 2 processes" in done.stderr
    _assert_trained(single / "checkpoints" / "epoch_latest.pt", configs["micro_vit"])
    _assert_same_weights(single / "checkpoints" / "epoch_latest.pt",
                         tmp_path / "two" / "run" / "checkpoints" / "epoch_latest.pt", atol=1e-5)


def test_two_process_ddp_with_accumulation_matches_one_process(shapes, configs, tmp_path):
    """DDP syncs only the last micro-batch: every parameter (the logit scale too) must get its gradient there."""
    common = ["--global-batch-size", "16", "--accum-freq", "2", "--max-steps", "3", *SGD_LIKE]
    single = train(parse(_flags(shapes, tmp_path / "one", configs["micro_vit"], *common)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "clip_match.train", "--", *_flags(shapes, tmp_path / "two", configs["micro_vit"], *common)]
    done = subprocess.run(command, cwd=REPO, env=ONE_THREAD_ENV, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_weights(single / "checkpoints" / "epoch_latest.pt",
                         tmp_path / "two" / "run" / "checkpoints" / "epoch_latest.pt", atol=1e-5)


@pytest.mark.parametrize("match_loss", ["0", "1"])
def test_accumulation_enlarges_the_contrastive_batch(shapes, configs, tmp_path, match_loss):
    """accum-freq 2 x batch 8 takes the same steps as batch 16 (no BatchNorm/dropout in this model), the match
    loss included (it too sees the whole batch)."""
    common = ["--max-steps", "3", "--match-loss", match_loss, *SGD_LIKE]
    whole = train(parse(_flags(shapes, tmp_path / "whole", configs["micro_vit"], "--batch-size", "16", *common)))
    accum = train(parse(_flags(shapes, tmp_path / "accum", configs["micro_vit"], "--batch-size", "8",
                               "--accum-freq", "2", *common)))
    _assert_trained(whole / "checkpoints" / "epoch_latest.pt", configs["micro_vit"])
    _assert_same_weights(whole / "checkpoints" / "epoch_latest.pt", accum / "checkpoints" / "epoch_latest.pt", 1e-5)


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_same_weights_as_an_uninterrupted_one(shapes, configs, tmp_path):
    """ResNet (BatchNorm statistics) with dropout: model, optimiser, scheduler, RNG and data position."""
    common = ["--batch-size", "12", "--max-steps", "14", "--lr", "2e-3"]  # 8 steps per epoch: killed in epoch 1
    reference = train(parse(_flags(shapes, tmp_path / "reference", configs["micro_rn"], *common)))
    flags = _flags(shapes, tmp_path / "killed", configs["micro_rn"], *common, "--save-step-frequency", "1")
    checkpoints = tmp_path / "killed" / "run" / "checkpoints"
    process = subprocess.Popen([sys.executable, "-m", "clip_match.train", *flags], cwd=REPO, env=ONE_THREAD_ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (checkpoints / "epoch_1_4.pt").exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        assert process.wait(timeout=30) == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = torch.load(checkpoints / "epoch_latest.pt", weights_only=True)["step"]
    assert 3 <= killed_at < 8
    assert main(flags) == 0  # the same command again: resumes from epoch_latest.pt
    _assert_same_weights(reference / "checkpoints" / "epoch_latest.pt", checkpoints / "epoch_latest.pt", atol=0)


def test_nan_loss_stops_clearly_and_keeps_the_last_good_checkpoint(shapes, configs, tmp_path, monkeypatch, capsys):
    from clip_match.train import trainer

    calls = {"n": 0}
    real_loss = trainer.clip_loss

    def loss_turning_nan(logits):
        calls["n"] += 1
        return real_loss(logits) * (float("nan") if calls["n"] >= 3 else 1.0)

    monkeypatch.setattr(trainer, "clip_loss", loss_turning_nan)
    status = main(_flags(shapes, tmp_path, configs["micro_vit"], "--batch-size", "16", "--max-steps", "5",
                         "--save-step-frequency", "1"))
    error = capsys.readouterr().err
    assert status == 2
    assert "loss became nan at step 3" in error and "epoch_latest.pt" in error
    kept = torch.load(tmp_path / "run" / "checkpoints" / "epoch_latest.pt", weights_only=True)
    assert kept["step"] == 2 and all(torch.isfinite(v).all() for v in kept["state_dict"].values())


def test_keep_step_checkpoints_deletes_all_but_the_newest(shapes, configs, tmp_path):
    assert main(_flags(shapes, tmp_path, configs["micro_vit"], "--batch-size", "16", "--max-steps", "5",
                       "--save-step-frequency", "1", "--keep-step-checkpoints", "2")) == 0
    kept = sorted(path.name for path in (tmp_path / "run" / "checkpoints").iterdir())
    assert kept == ["epoch_1_4.pt", "epoch_1_5.pt", "epoch_latest.pt", "slim.pt"]


def test_bad_input_is_refused_with_the_path_or_flag_named(shapes, configs, tmp_path, monkeypatch):
    model = configs["micro_vit"]
    with pytest.raises(ClipMatchError, match="missing.*not an LMDB split"):
        train(parse(_flags(shapes, tmp_path, model, "--train-data", str(tmp_path / "missing"))))
    write_split(tmp_path / "empty", "train", [], [])
    build_lmdb(tmp_path / "empty", splits=("train",), workers=1)
    with pytest.raises(ClipMatchError, match="empty/lmdb/train: the training LMDB split has no image-text pairs"):
        train(parse(_flags(shapes, tmp_path, model, "--train-data", str(tmp_path / "empty" / "lmdb" / "train"))))
    with pytest.raises(ClipMatchError, match="96 training pairs are fewer than one step's batch of 128"):
        train(parse(_flags(shapes, tmp_path, model, "--batch-size", "64", "--accum-freq", "2", "--drop-last")))
    with pytest.raises(ClipMatchError, match="--global-batch-size 7 is not divisible"):
        with monkeypatch.context() as patch:  # rank 0 of 2, as far as the batch split is concerned
            patch.setattr(distributed, "setup", lambda device: distributed.DistEnv(0, 2, 0, torch.device("cpu")))
            train(parse(_flags(shapes, tmp_path, model, "--global-batch-size", "7")))
    other = train(parse(_flags(shapes, tmp_path / "rn", configs["micro_rn"], "--batch-size", "32", "--max-steps", "1")))
    with pytest.raises(ClipMatchError, match="incompatible checkpoint"):
        train(parse(_flags(shapes, tmp_path / "vit", model, "--resume", str(other / "checkpoints" / "epoch_latest.pt"))))


def test_resume_keeps_the_run_going_and_a_reset_offset_restarts_the_schedule(shapes, configs, tmp_path, capsys):
    flags = _flags(shapes, tmp_path, configs["micro_rn"], "--batch-size", "32", "--save-step-frequency", "1")
    first = train(parse([*flags, "--max-steps", "2"]))
    start = str(first / "checkpoints" / "epoch_latest.pt")
    again = _flags(shapes, tmp_path, configs["micro_rn"], "--batch-size", "32", "--save-step-frequency", "1",
                   "--log-interval", "1")
    again[again.index("run")] = "second"
    train(parse([*again, "--max-steps", "3", "--resume", start]))  # a new run, from the first one's state at step 2
    capsys.readouterr()
    train(parse([*again, "--max-steps", "4", "--resume", start]))  # the same command again: goes on at step 3
    assert "checkpoints/epoch_latest.pt exists: going on with this run" in capsys.readouterr().err
    steps = [json.loads(line) for line in (tmp_path / "second" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in steps if m["kind"] == "train"] == [3, 4]
    reset = _flags(shapes, tmp_path, configs["micro_rn"], "--batch-size", "32", "--log-interval", "1")
    reset[reset.index("run")] = "reset"
    train(parse([*reset, "--max-steps", "2", "--resume", start, "--reset-data-offset"]))
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "reset" / "metrics.jsonl").read_text().splitlines()
           if json.loads(line)["kind"] == "train"]
    assert lrs and min(lrs) > 0  # the schedule starts again with the steps (it was at its end: lr 0)
    frozen = _flags(shapes, tmp_path, configs["micro_rn"], "--batch-size", "32")
    frozen[frozen.index("run")] = "frozen"
    train(parse([*frozen, "--max-steps", "1", "--freeze-text"]))
    with pytest.raises(ClipMatchError, match="optimiser state does not fit this run .* --reset-optimizer"):
        train(parse([*frozen, "--max-steps", "2"]))


def test_optimiser_values_and_flag_errors_are_refused_clearly(shapes, configs, tmp_path, capsys):
    for flag, value, message in (("--lr", "-1", "--lr must be a positive number"), ("--lr", "0", "--lr must be"),
                                 ("--beta1", "1.5", "--beta1 must be in"), ("--eps", "-1", "--eps must be a positive"),
                                 ("--wd", "-0.1", "--wd not negative")):
        with pytest.raises(ClipMatchError, match=message):
            parse(_flags(shapes, tmp_path, configs["micro_rn"], flag, value))
    assert main(_flags(shapes, tmp_path, configs["micro_rn"], "--batch-size", "0")) == 2  # python -m clip_match.train
    assert "--batch-size must be at least 1" in capsys.readouterr().err


def test_validation_split_smaller_than_the_batch_still_validates(shapes, configs, tmp_path, capsys):
    run = train(parse(_flags(shapes, tmp_path, configs["micro_vit"], "--val-data", str(shapes / "valid"),
                             "--batch-size", "32", "--max-steps", "1", "--valid-batch-size", "64")))
    assert "24 validation pairs, fewer than --valid-batch-size 64; the loss uses one batch of 24" in capsys.readouterr().err
    val = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert val[-1]["kind"] == "val" and np.isfinite(val[-1]["val_loss"])


@pytest.mark.slow
def test_train_tiny_cpu_script_runs_as_written(shapes, tmp_path):
    env = {**ONE_THREAD_ENV, "PYTHON": sys.executable, "OUTPUT": str(tmp_path), "MAX_STEPS": "2", "BATCH_SIZE": "16",
           "VALID_BATCH_SIZE": "24", "NUM_WORKERS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", "run_scripts/train_tiny_cpu.sh", str(shapes.parent)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "tiny_cpu"
    assert (run / "checkpoints" / "slim.pt").is_file()
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["kind"] == "val"


def test_finetune_script_refuses_a_resume_checkpoint_that_is_not_there(tmp_path):
    env = {**ONE_THREAD_ENV, "PYTHON": sys.executable, "RESUME": str(tmp_path / "typo.pt")}
    done = subprocess.run(["bash", "run_scripts/finetune_rn50.sh", str(tmp_path / "data path")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and f"RESUME={tmp_path / 'typo.pt'}: no such checkpoint" in done.stderr


@pytest.mark.slow
def test_rn50_checkpoint_from_this_trainer_loads_in_cn_clip_create_model(tmp_path):
    from cn_clip.clip.utils import create_model as cn_clip_create_model

    from clip_match.model import create_model
    from clip_match.model.checkpoint import cn_clip_state
    from clip_match.train.checkpoint import save

    torch.manual_seed(0)
    model = create_model(load_config("RN50@RBT3-chinese"))
    optimizer = torch.optim.AdamW(model.parameters())
    path = save(tmp_path / "epoch_latest.pt", {"trainer": "clip_match.train", "epoch": 0, "step": 0, "name": "rn50",
                                               "state_dict": cn_clip_state(model), "optimizer": optimizer.state_dict()})
    loaded = cn_clip_create_model("RN50@RBT3-chinese", torch.load(path, map_location="cpu", weights_only=True))
    for key, value in model.state_dict().items():
        target = loaded.state_dict()[key]
        assert torch.equal(target, value.to(target.dtype)), key


def test_rerun_of_a_finished_run_restores_a_missing_slim_checkpoint(shapes, configs, tmp_path):
    """A run stopped between epoch_latest.pt and slim.pt must not stay without weights for export."""
    flags = _flags(shapes, tmp_path / "run", configs["micro_vit"], "--batch-size", "8", "--max-steps", "1", *SGD_LIKE)
    slim = train(parse(flags)) / "checkpoints" / "slim.pt"
    slim.unlink()
    train(parse(flags))
    assert slim.is_file()


def _train_steps(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]


@pytest.mark.parametrize("batch, accum, drop_last, steps", [
    (128, 1, False, 1),  # a split smaller than one batch trains: the batch shrinks to the 96 pairs
    (64, 1, False, 2),   # the last partial batch is kept (64 + 32), as cn_clip does
    (64, 1, True, 1),    # --drop-last: today's behaviour
    (32, 2, False, 2),   # 3 micro-batches: the last step has one
])
def test_small_splits_and_partial_last_batches_train(shapes, configs, tmp_path, batch, accum, drop_last, steps):
    flags = _flags(shapes, tmp_path, configs["micro_vit"], "--batch-size", str(batch), "--accum-freq", str(accum),
                   "--max-epochs", "1", "--log-interval", "1", "--lr", "1e-3")
    run = train(parse([*flags, *(["--drop-last"] if drop_last else [])]))
    records = _train_steps(run)
    assert [r["step"] for r in records] == list(range(1, steps + 1))
    assert records[0]["lr"] == pytest.approx(1e-3 / 2)  # the rate used at step 1: warm-up step 1 of 2, not step 2's


def test_num_workers_default_to_the_machines_cpus():
    config = parse(["--train-data", "x"])
    assert config.num_workers is None and config.loader_workers == min(4, len(os.sched_getaffinity(0)))
    assert parse(["--train-data", "x", "--num-workers", "0"]).loader_workers == 0


@pytest.mark.slow
def test_the_tutorial_script_rerun_after_a_kill_goes_on_exactly(shapes, configs, tmp_path):
    """cn_clip's fine-tune script always passes --resume=<pretrained> --reset-data-offset --reset-optimizer;
    re-run after a kill, it must continue the run (not restart it from the pretrained weights)."""
    pretrained = tmp_path / "pretrained_weights" / "clip_cn_micro.pt"
    torch.manual_seed(1)
    from clip_match.model import save_slim_checkpoint

    config = load_config(configs["micro_rn"])
    save_slim_checkpoint(create_model(config), pretrained, config)  # the official {"state_dict": ...} format

    def script(output: Path) -> list[str]:
        # cn_clip's run_scripts/muge_finetune_*.sh, the entry point changed to `-m clip_match.train --`
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--nnodes=1", "--node_rank=0",
                "--master_addr=localhost", f"--master_port={29500 + os.getpid() % 1000}", "-m", "clip_match.train", "--",
                f"--train-data={shapes / 'train'}", f"--resume={pretrained}", "--reset-data-offset", "--reset-optimizer",
                f"--logs={output}", "--name=muge_finetune", "--save-step-frequency=1", "--save-epoch-frequency=1",
                "--log-interval=1", "--report-training-batch-acc", "--context-length=12", "--warmup=2",
                "--batch-size=12", "--valid-batch-size=12", "--lr=2e-3", "--wd=0.001", "--max-epochs=2",
                "--num-workers=0", f"--model={configs['micro_rn']}", "--seed=5"]

    def run(output: Path, kill_at: str | None = None) -> int:
        process = subprocess.Popen(script(output), cwd=REPO, env=ONE_THREAD_ENV, start_new_session=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kill_at:
            deadline = time.monotonic() + 120
            while not (output / "muge_finetune" / "checkpoints" / kill_at).exists() and process.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.02)
            os.killpg(process.pid, signal.SIGKILL)  # the whole job, as a closed terminal or a batch system kills it
        return process.wait(timeout=300)

    assert run(tmp_path / "reference") == 0
    assert run(tmp_path / "killed", kill_at="epoch_1_3.pt") == -signal.SIGKILL
    checkpoints = tmp_path / "killed" / "muge_finetune" / "checkpoints"
    killed_at = torch.load(checkpoints / "epoch_latest.pt", weights_only=True)["step"]
    assert 2 <= killed_at < 16  # (killed between epoch_1_3.pt and its epoch_latest.pt, or after)
    assert run(tmp_path / "killed") == 0
    assert [r["step"] for r in _train_steps(tmp_path / "killed" / "muge_finetune")] == list(range(1, 17))
    _assert_same_weights(tmp_path / "reference" / "muge_finetune" / "checkpoints" / "epoch_latest.pt",
                         checkpoints / "epoch_latest.pt", atol=0)
    assert sorted(p.name for p in checkpoints.glob("epoch?.pt")) == ["epoch1.pt", "epoch2.pt"]


def test_restart_starts_the_run_over(shapes, configs, tmp_path, capsys):
    flags = _flags(shapes, tmp_path, configs["micro_vit"], "--batch-size", "48", "--log-interval", "1")
    run = train(parse([*flags, "--max-steps", "2"]))
    train(parse([*flags, "--max-steps", "3", "--restart"]))
    assert "--restart: " in capsys.readouterr().err
    assert [r["step"] for r in _train_steps(run)] == [1, 2, 3]
