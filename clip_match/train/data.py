"""Training and validation data from clip_match's LMDB reader.

Images go through exactly the runtime's preprocessing (`clip_match.runtime.preprocess`), after
the optional augmentation; texts through `normalize_text` and the CN-CLIP tokenizer. The
sampler is torch's DistributedSampler (a fixed permutation per seed and epoch) that can start
part-way into an epoch, so a resumed run sees the same batches as an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import itertools
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from ..data import LMDBReader
from ..errors import ClipMatchError
from ..runtime.preprocess import Framing, preprocess
from ..runtime.tokenizer import normalize_text, tokenize
from .augment import make_augment


def text_key(text: str) -> int:
    """A 63-bit fingerprint of the normalised text: equal texts are the same label."""
    return normalized_text_key(normalize_text(text))


def normalized_text_key(normalized: str) -> int:
    """`text_key` of a text that went through `normalize_text` already."""
    return int.from_bytes(hashlib.blake2b(normalized.encode("utf-8"), digest_size=8).digest(), "little") >> 1


def encode_texts(texts: list[str], context_length: int) -> torch.Tensor:
    """Token ids without the columns that are padding in every row (see `trim_padding`)."""
    return trim_padding(torch.from_numpy(tokenize([normalize_text(t) for t in texts], context_length)))


def trim_padding(tokens: torch.Tensor) -> torch.Tensor:
    """Drop token columns that are padding in every row: the text tower's cost grows with length,
    and attention already ignores padding, so features do not change."""
    return tokens[:, :max(int((tokens != 0).sum(1).max()), 1)]


class KnownPairs:
    """Every (image, text) link a dataset states: a stated match is never used as a negative.

    Classification-style data links one image to several texts (a name, an English name, tags)
    and one text to many images; two pairs in a batch can then match each other crosswise.
    """

    def __init__(self, image_ids: Iterable[int], text_ids: Iterable[int]):
        self.codes = np.unique(_pair_codes(np.fromiter(image_ids, np.int64), np.fromiter(text_ids, np.int64)))

    @classmethod
    def read(cls, reader: LMDBReader) -> KnownPairs:
        pairs = [(pair.image_id, pair.text_id) for pair in tqdm(reader, total=len(reader), desc="known pairs",
                                                                  unit="pair", disable=None, leave=False)]
        return cls((i for i, _ in pairs), (t for _, t in pairs))

    def mask(self, image_ids: torch.Tensor, text_ids: torch.Tensor) -> torch.Tensor:
        """(n, n) bool: entry [i, j] says image ``image_ids[i]`` is a stated match of text ``text_ids[j]``."""
        codes = _pair_codes(image_ids.cpu().numpy()[:, None], text_ids.cpu().numpy()[None, :])
        return torch.from_numpy(np.isin(codes, self.codes)).to(image_ids.device)


def _pair_codes(image_ids: np.ndarray, text_ids: np.ndarray) -> np.ndarray:
    """One int64 per (image_id, text_id); ids are non-negative and below 2**31 (Chinese-CLIP ids are)."""
    for ids, name in ((image_ids, "image_id"), (text_ids, "text_id")):
        if ids.size and (ids.min() < 0 or ids.max() >= 2**31):
            raise ClipMatchError(f"{name} outside 0..2**31-1; the label-aware loss cannot key it (--no-label-aware)")
    return (image_ids.astype(np.int64) << 32) | text_ids.astype(np.int64)


def open_split(split_dir: str | Path, role: str) -> LMDBReader:
    """Open an LMDB split, refusing a missing or empty one with a message naming it."""
    reader = LMDBReader(split_dir)
    if len(reader) == 0:
        raise ClipMatchError(f"{split_dir}: the {role} LMDB split has no image-text pairs")
    return reader


class PairDataset(Dataset):
    """(image, tokens, image_id, text_id, text_key) per LMDB pair; ``epoch`` seeds the augmentation."""

    def __init__(self, split_dir: str | Path, resolution: int, context_length: int,
                 augment: str = "none", seed: int = 0, framing: Framing | None = None):
        self.reader = open_split(split_dir, "training")
        self.resolution = resolution
        self.framing = framing
        self.context_length = context_length
        self.augment = make_augment(augment, resolution)
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, int, int]:
        pair = self.reader[index]
        image = self.reader.image(pair.image_id)
        if self.framing is not None:  # before the augmentation, which crops and resizes
            image = self.framing(image)
        if self.augment is not None:
            image = self.augment(image, random.Random(f"{self.seed}:{self.epoch}:{index}"))
        pixels = torch.from_numpy(preprocess([image], self.resolution)[0])
        text = normalize_text(pair.text)
        tokens = torch.from_numpy(tokenize([text], self.context_length))[0]
        return pixels, tokens, pair.image_id, pair.text_id, normalized_text_key(text)


def collate_pairs(batch: list) -> tuple[torch.Tensor, ...]:
    """Stack a batch, without the all-padding token columns."""
    pixels, tokens, image_ids, text_ids, keys = zip(*batch)
    return (torch.stack(pixels), trim_padding(torch.stack(tokens)), torch.tensor(image_ids),
            torch.tensor(text_ids), torch.tensor(keys))


class ResumableSampler(DistributedSampler):
    """DistributedSampler that skips the first ``skip`` indices of this rank's epoch order."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.skip = 0

    def set_position(self, epoch: int, skip: int) -> None:
        self.set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self) -> int:
        return max(super().__len__() - self.skip, 0)


@dataclass
class ValidationSet:
    """A split's distinct images and texts and which pairs link them (rows into those lists)."""

    split_dir: Path
    image_ids: list[int]
    texts: list[str]
    pairs: list[tuple[int, int]]  # (image_row, text_row), in LMDB order

    @classmethod
    def read(cls, split_dir: str | Path) -> ValidationSet:
        reader = open_split(split_dir, "validation")
        image_rows: dict[int, int] = {}
        text_rows: dict[int, int] = {}
        texts: list[str] = []
        pairs = []
        with reader:
            for index in range(len(reader)):
                pair = reader[index]
                image_row = image_rows.setdefault(pair.image_id, len(image_rows))
                if pair.text_id not in text_rows:
                    text_rows[pair.text_id] = len(texts)
                    texts.append(pair.text)
                pairs.append((image_row, text_rows[pair.text_id]))
        return cls(Path(split_dir), list(image_rows), texts, pairs)

    def text_keys(self) -> np.ndarray:
        return np.array([text_key(t) for t in self.texts], dtype=np.int64)


class ImageDataset(Dataset):
    """Preprocessed images of an LMDB split by image id (validation encoding)."""

    def __init__(self, split_dir: str | Path, image_ids: list[int], resolution: int, framing: Framing | None = None):
        self.reader = LMDBReader(split_dir)
        self.image_ids = image_ids
        self.resolution = resolution
        self.framing = framing

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.reader.image(self.image_ids[index])
        return torch.from_numpy(preprocess([image], self.resolution, framing=self.framing)[0])
