"""Trainer parts in isolation: label-aware loss, recall counting, flags, atomic checkpoints."""
from __future__ import annotations

import errno
import math

import numpy as np
import pytest
import torch

from clip_match.errors import ClipMatchError
from clip_match.retrieval_metrics import retrieval_metrics
from clip_match.train import checkpoint
from clip_match.train.config import parse
from clip_match.train.data import KnownPairs, text_key
from clip_match.train.loss import MATCH_SCALE, MATCH_THRESHOLD, clip_loss, contrastive_logits, match_loss, same_label_mask


def _batch_with_repeated_labels():
    """Four pairs: 0 and 1 share text_id 7; 2 and 3 have different ids but the same text up to case."""
    text_ids = torch.tensor([7, 7, 8, 9])
    keys = torch.tensor([text_key("红色的圆形"), text_key("红色的圆形"), text_key("Red Circle"), text_key("red circle")])
    torch.manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    return text_ids, keys, images, texts


def test_same_label_mask_links_shared_text_id_and_identical_normalised_text():
    text_ids, keys, _, _ = _batch_with_repeated_labels()
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(same_label_mask(text_ids, keys), expected)


def test_label_aware_loss_drops_same_label_pairs_from_the_denominators():
    text_ids, keys, images, texts = _batch_with_repeated_labels()
    scale = torch.tensor(10.0)
    logits = contrastive_logits(images, texts, scale, same_label_mask(text_ids, keys))
    raw = scale * images @ texts.t()
    assert torch.isinf(logits[0, 1]) and torch.isinf(logits[1, 0]) and torch.isinf(logits[2, 3])
    assert torch.equal(logits.diagonal(), raw.diagonal())
    # by hand: row i's softmax runs over the diagonal and the other labels only
    negatives = {0: [2, 3], 1: [2, 3], 2: [0, 1], 3: [0, 1]}
    i2t = [-raw[i, i] + torch.logsumexp(raw[i, [i, *negatives[i]]], 0) for i in range(4)]
    t2i = [-raw[i, i] + torch.logsumexp(raw[[i, *negatives[i]], i], 0) for i in range(4)]
    assert math.isclose(clip_loss(logits).item(), (sum(i2t) + sum(t2i)).item() / 8, rel_tol=1e-5)


def test_label_aware_loss_does_not_push_apart_images_of_one_label():
    """Two images of one label, both exactly on their text: no loss from each other (cn_clip's loss has some)."""
    text_ids, keys = torch.tensor([1, 1, 2]), torch.tensor([5, 5, 6])
    images = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    texts = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    scale = torch.tensor(100.0)
    aware = clip_loss(contrastive_logits(images, texts, scale, same_label_mask(text_ids, keys)))
    plain = clip_loss(contrastive_logits(images, texts, scale))
    assert aware.item() < 1e-6
    assert plain.item() > 0.4  # log 2 for each of the four same-label rows


def test_match_loss_is_balanced_cross_entropy_around_the_fixed_cosine():
    text_ids, keys, images, texts = _batch_with_repeated_labels()
    matches = same_label_mask(text_ids, keys)
    logits = MATCH_SCALE * (images @ texts.t() - MATCH_THRESHOLD)
    by_hand = -torch.log(torch.sigmoid(logits[matches])).mean() - torch.log(1 - torch.sigmoid(logits[~matches])).mean()
    assert math.isclose(match_loss(images, texts, matches).item(), by_hand.item(), rel_tol=1e-5)


def test_match_loss_pulls_matches_above_the_threshold_and_pushes_the_rest_below():
    """Unlike InfoNCE, it sees where cosines lie: a batch ranked right but all above the threshold still costs."""
    texts = torch.eye(3)
    aligned = torch.nn.functional.normalize(0.3 * torch.eye(3) + 1, dim=-1)  # nearest its text; all cosines > 0.5
    matches = torch.eye(3, dtype=torch.bool)
    assert clip_loss(contrastive_logits(aligned, texts, torch.tensor(100.0))).item() < 1e-3
    assert match_loss(aligned, texts, matches).item() > 0.5  # the others sit above the threshold
    assert match_loss(texts, texts, matches).item() < 1e-3  # matches at 1, others at 0
    images = aligned.clone().requires_grad_(True)
    match_loss(images, texts, matches).backward()
    step = images - 0.01 * images.grad
    cosines = torch.nn.functional.normalize(step, dim=-1) @ texts.t()
    assert (cosines[~matches] < (aligned @ texts.t())[~matches]).all()


def test_known_pairs_mask_stated_crosswise_matches_only():
    """Image 10 is linked to texts 1 (its name) and 2 (a tag); image 11 to 3 (its name) and 2 (the same tag)."""
    known = KnownPairs([10, 10, 11, 11], [1, 2, 3, 2])
    image_ids, text_ids = torch.tensor([10, 10, 11]), torch.tensor([1, 2, 3])  # pairs as a batch holds them
    expected = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 1, 1]], dtype=torch.bool)  # [i, j]: image i matches text j
    assert torch.equal(known.mask(image_ids, text_ids), expected)
    with pytest.raises(ClipMatchError, match="image_id outside"):
        known.mask(torch.tensor([-1]), torch.tensor([1]))


def test_crosswise_mask_removes_the_stated_match_from_one_direction_only():
    """Image 2 is a stated match of text 1, not the reverse (text 2 does not describe image 1)."""
    torch.manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    mask = torch.eye(3, dtype=torch.bool)
    mask[2, 1] = True
    logits = contrastive_logits(images, texts, torch.tensor(10.0), mask)
    assert torch.isinf(logits[2, 1]) and not torch.isinf(logits[1, 2])


def test_retrieval_counts_a_text_hit_when_any_of_its_images_ranks_in_top_k():
    # text 0 has images 0 and 1; image 1 is its nearest, image 0 its farthest
    images = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    texts = np.array([[1.0, 0.1], [0.0, 1.0]], dtype=np.float32)
    metrics = retrieval_metrics(images, texts, [(0, 0), (1, 0), (2, 1)], ks=(1, 2))
    assert metrics["t2i_r1"] == 100.0
    # image 0 ranks text 1 first (0 > -1), so it misses at 1 and hits at 2
    assert metrics["i2t_r1"] == pytest.approx(200 / 3)
    assert metrics["i2t_r2"] == 100.0
    assert metrics["mean_recall"] == pytest.approx((metrics["i2t_mean_recall"] + metrics["t2i_mean_recall"]) / 2)
    # A text without images is a candidate for the images (it takes image 0's first place), not a query.
    extra = retrieval_metrics(images, np.vstack([texts, [[-1.0, 0.0]]]), [(0, 0), (1, 0), (2, 1)], ks=(1, 2))
    assert extra["t2i_r1"] == 100.0 and extra["i2t_r1"] == pytest.approx(200 / 3)
    with pytest.raises(ClipMatchError, match="each image with at least one pair"):
        retrieval_metrics(images, texts, [(0, 0), (1, 0)])


def test_cn_clip_flags_parse_including_logs_equals_and_torchrun_separator():
    config = parse(["--", "--train-data=/d/train", "--val-data=/d/valid", "--logs=/out", "--name=ft",
                    "--vision-model=RN50", "--text-model=RBT3-chinese", "--batch-size=8", "--accum-freq=2",
                    "--use-augment", "--report-training-batch-acc", "--reset-data-offset", "--reset-optimizer",
                    "--save-step-frequency=5", "--valid-step-interval=3", "--grad-checkpointing", "--freeze-vision",
                    "--precision=amp", "--max-steps=7", "--context-length=24", "--warmup=1"])
    assert config.model == "RN50@RBT3-chinese" and config.run_dir == "/out/ft"
    assert (config.lr, config.beta2, config.eps) == (5e-4, 0.999, 1e-8)  # cn_clip's RN50 defaults
    assert config.augment == "safe" and config.label_aware and config.accum_freq == 2
    assert parse(["--train-data", "x", "--vision-model", "ViT-B-16", "--no-label-aware"]).beta2 == 0.98
    assert not parse(["--train-data", "x", "--no-label-aware"]).label_aware
    assert parse(["--train-data", "x"]).match_loss == 0 and parse(["--train-data", "x", "--match-loss", "0.5"]).match_loss == 0.5
    with pytest.raises(ClipMatchError, match="--match-loss must be a number >= 0"):
        parse(["--train-data", "x", "--match-loss", "-1"])
    with pytest.raises(ClipMatchError, match="--keep-step-checkpoints must not be negative"):
        parse(["--train-data", "x", "--keep-step-checkpoints", "-1"])


def test_global_batch_must_split_evenly_over_processes():
    config = parse(["--train-data", "x", "--global-batch-size", "10"])
    assert config.per_process_batch(2) == 5
    with pytest.raises(ClipMatchError, match="not divisible by the 3 processes"):
        config.per_process_batch(3)


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "epoch_latest.pt"
    checkpoint.save(path, {"state_dict": {"w": torch.ones(3)}, "step": 1})
    before = path.read_bytes()

    def full_disk(obj, handle):
        handle.write(b"partial checkpoint bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(ClipMatchError, match="disk full.*previous one is kept"):
        checkpoint.save(path, {"state_dict": {"w": torch.zeros(3)}, "step": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["epoch_latest.pt"]
    assert checkpoint.load(path)["step"] == 1


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    checkpoint.save(tmp_path / "c.pt", {"state_dict": {}, "rng": [checkpoint.rng_state()]})
    expected = (torch.rand(2), np.random.rand(2))
    checkpoint.set_rng_state(checkpoint.load(tmp_path / "c.pt")["rng"][0])
    assert torch.equal(torch.rand(2), expected[0]) and np.array_equal(np.random.rand(2), expected[1])


def test_safe_augmentation_keeps_colours_and_sides_and_is_seeded_per_sample():
    import random

    from PIL import Image

    from clip_match.train.augment import make_augment

    image = Image.new("RGB", (64, 64), (220, 20, 20))
    image.paste((20, 20, 220), (32, 0, 64, 64))  # red left half, blue right half
    safe = make_augment("safe", 32)
    for seed in range(20):
        out = safe(image, random.Random(seed))
        left, right = out.getpixel((0, 16)), out.getpixel((31, 16))
        assert out.size == (32, 32) and left[0] > left[2] and right[2] > right[0], seed
    assert safe(image, random.Random(7)).tobytes() == safe(image, random.Random(7)).tobytes()
    cnclip = make_augment("cnclip", 32)
    assert cnclip(image, random.Random(7)).tobytes() == cnclip(image, random.Random(7)).tobytes()
    assert make_augment("none", 32) is None


def test_training_and_validation_images_are_framed_as_the_runtime_frames_them(tmp_path):
    import io

    from PIL import Image

    from clip_match.data.formats import write_split
    from clip_match.data.lmdb_build import build_lmdb
    from clip_match.runtime.preprocess import Framing, preprocess
    from clip_match.train.data import ImageDataset, PairDataset

    images = []
    for image_id, (size, at) in enumerate((((160, 50), (8, 6)), ((90, 90), (30, 50)))):
        canvas = Image.new("RGB", size, "white")
        canvas.paste((0, 0, 0), (at[0], at[1], at[0] + 30, at[1] + 10))
        data = io.BytesIO()
        canvas.save(data, "PNG")
        images.append((image_id, data.getvalue()))
    write_split(tmp_path, "train", images, [(0, "x", [0]), (1, "y", [1])])
    build_lmdb(tmp_path, splits=("train",), workers=1)
    split = tmp_path / "lmdb" / "train"
    framing = Framing(2, fold=True)
    pairs, plain = PairDataset(split, 32, 8, framing=framing), PairDataset(split, 32, 8)
    assert torch.equal(pairs[0][0], pairs[1][0]) and not torch.equal(plain[0][0], plain[1][0])
    validation = ImageDataset(split, [0, 1], 32, framing=framing)
    assert torch.equal(validation[0], pairs[0][0]) and torch.equal(validation[1], pairs[0][0])
    runtime = preprocess([Image.open(io.BytesIO(images[0][1]))], 32, framing=framing)[0]
    assert torch.equal(pairs[0][0], torch.from_numpy(runtime))


def test_a_metrics_line_cut_off_by_a_crash_does_not_stop_the_resume(tmp_path):
    from clip_match.train.metrics import MetricsLog

    metrics = MetricsLog(tmp_path)
    for step in (1, 2, 3):
        metrics.append({"kind": "train", "step": step, "loss": 1.0})
    with open(metrics.path, "a", encoding="utf-8") as handle:
        handle.write('{"kind": "train", "st')  # the process was killed mid-write
    assert [r["step"] for r in metrics.records()] == [1, 2, 3]
    metrics.truncate_after(2)  # what a resume at step 2 does: the torn line goes too
    assert metrics.path.read_text(encoding="utf-8").count("\n") == 2
