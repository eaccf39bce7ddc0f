"""Symmetric InfoNCE over the global batch, with label-aware negatives.

Classification-style data pairs many images with one label text. cn_clip's loss counts two
pairs with the same label as negatives of each other, pushing apart what should match, and
fine-tuning on such data fails to converge. Here, an image and a text that the data says match
(they share a ``text_id`` or the same normalised text, or the dataset links them: see
`clip_match.train.data.KnownPairs`) are removed from each other's denominators; the diagonal
stays the target.

InfoNCE only ranks each row and column; it says nothing about where a match's cosine lies in
absolute terms, which is what choosing tiles with k unknown (one threshold for every prompt and
puzzle) needs. `match_loss` adds that: a class-balanced binary cross-entropy on every pair of the
batch, matching (the diagonal and the same-label pairs) or not, around one fixed cosine
(SigLIP's pairwise sigmoid loss with a fixed scale and bias, so the model and its export stay as they are).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def same_label_mask(text_ids: torch.Tensor, text_keys: torch.Tensor) -> torch.Tensor:
    """(n, n) bool: pairs i, j share a text_id or a normalised-text key (diagonal included)."""
    return (text_ids[:, None] == text_ids[None, :]) | (text_keys[:, None] == text_keys[None, :])


def contrastive_logits(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                       same_label: torch.Tensor | None = None) -> torch.Tensor:
    """Image->text logits (n, n); off-diagonal entries where ``same_label[i, j]`` (image i matches
    text j) are -inf, not negatives. Row i is image i's softmax, column j text j's, so the
    transpose serves as the text->image logits whether or not the mask is symmetric.
    """
    logits = logit_scale * image_features @ text_features.t()
    if same_label is not None:
        off_diagonal = same_label & ~torch.eye(len(logits), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(off_diagonal, float("-inf"))
    return logits


def clip_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean of image->text and text->image cross-entropy with the diagonal as targets."""
    targets = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


MATCH_THRESHOLD = 0.5  # the cosine that `match_loss` puts between matching and other pairs
MATCH_SCALE = 20.0     # its logit per unit of cosine


def match_loss(image_features: torch.Tensor, text_features: torch.Tensor, matches: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of the matching pairs (``matches[i, j]``: image i matches text j) plus that
    of the others, with logits MATCH_SCALE * (cosine - MATCH_THRESHOLD)."""
    logits = MATCH_SCALE * (image_features @ text_features.t() - MATCH_THRESHOLD)
    return F.softplus(-logits[matches]).mean() + F.softplus(logits[~matches]).mean()


def batch_accuracy(logits: torch.Tensor) -> dict[str, float]:
    """In-batch top-1 accuracy both ways (a same-label pair is never the argmax once masked)."""
    targets = torch.arange(len(logits), device=logits.device)
    return {"i2t_acc": (logits.argmax(1) == targets).float().mean().item(),
            "t2i_acc": (logits.argmax(0) == targets).float().mean().item()}
