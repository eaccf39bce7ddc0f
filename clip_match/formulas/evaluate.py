"""The two formula-retrieval protocols, and the checks that keep their numbers honest.

Both protocols query with *real* IM2LaTeX images and rank LaTeX candidates; by default training
only ever sees *renders* of formulas:

- ``open``: the IM2LaTeX validation formulas are split in two halves by formula (seeded). Train
  on renders of the first half (+ CROHME captions that are not second-half formulas); query
  with the real images of the second half against all second-half formulas.
- ``bank``: a seeded sample of ``bank_size`` formulas is the candidate bank. Train (fine-tune) on
  renders of the bank itself; query with the real images of the bank. A *development* bank
  (``outside``) is drawn from outside the reported bank, for tuning recipes on real images.

Either protocol may also train on the real images of up to ``real_train`` formulas that are *not*
queries (for ``bank``: IM2LaTeX formulas outside the bank; for ``open``: first-half formulas), so
that the model sees what real images look like. Those images get ids from ``REAL_TRAIN_ID_OFFSET``.

`evaluate_split` answers the protocols' question with a model bundle: for each real query image,
where does its formula rank among all candidates (image->text R@1/5/10), plus the text->image
direction for completeness.

A formula's identity is its `normalize_latex` text (what the index stores and `clip-match
query --latex` prints), so two IM2LaTeX lines that normalise alike are one formula, on one side
of the split. `check_no_query_images` re-reads the written training splits and fails if any
image there is a real image of a query formula, by id or by content.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from ..data.formats import decode_b64, imgs_path, read_jsonl, read_tsv, texts_path
from ..errors import ClipMatchError, where
from ..index.examples import EXAMPLE_TEXT_WEIGHT, Examples, check_text_weight, fuse, read_examples
from ..retrieval_metrics import retrieval_metrics
from ..runtime.images import decode_image
from ..runtime.tokenizer import tokenize
from .latex import normalize_latex
from .layout_codes import check_layout_weight, layout_codes, with_layout

if TYPE_CHECKING:
    from ..runtime.encoder import Encoder

# Render image ids start here, above any real-image id, so the two can never be confused.
RENDER_ID_OFFSET = 10_000_000
# Real images of non-query formulas used for training (opt-in: ``real_train``) get ids from here.
REAL_TRAIN_ID_OFFSET = 20_000_000
TRAINING_SPLITS = ("train", "valid")
# The bank protocol's reported number uses a bank of this many formulas.
REPORTED_BANK_SIZE = 4000
QUERY_SPLIT = "test"
# A split to write: (image_id, image file bytes) and (text_id, text, image_ids) records.
SplitRecords = tuple[list[tuple[int, bytes]], list[tuple[int, str, list[int]]]]


class QueryLeakError(ClipMatchError):
    """A real image of a query formula (or, for ``open``, a query formula itself) reached training."""


@dataclass(frozen=True)
class Formula:
    """A formula: stable id, LaTeX, the real image files that show it (IM2LaTeX only), and the
    LaTeX as its source wrote it (``source``; empty = ``latex``).

    ``latex`` is the normalised text, the formula's identity and candidate text. Normalising drops
    what changes the look but not the meaning (``\\left(`` -> ``(``, ``\\big``, thin spaces), so
    training images are rendered from ``source``: the real images were made from it too.
    """

    fid: int
    latex: str
    images: tuple[Path, ...] = ()
    source: str = ""

    @property
    def render_latex(self) -> str:
        """What to typeset for a training image of this formula."""
        return self.source or self.latex


@dataclass(frozen=True)
class Protocol:
    """Which formulas are rendered for training and which real images query which candidates."""

    name: str
    seed: int
    train: tuple[Formula, ...]    # rendered for training; their real images only through real_train
    queries: tuple[Formula, ...]  # the candidates; their real images are the queries
    notes: dict = field(default_factory=dict)
    real_train: tuple[Formula, ...] = ()  # non-query formulas whose real images are trained on

    def __post_init__(self):
        missing = [f.fid for f in self.queries if not f.images]
        if missing:
            raise ClipMatchError(f"{self.name}: query formulas without real images: {missing[:5]}")
        leaked = {f.latex for f in self.real_train} & {f.latex for f in self.queries}
        if leaked:
            raise QueryLeakError(f"{self.name}: real images of {len(leaked)} query formulas would be trained on, "
                                 f"e.g. {sorted(leaked)[0]!r}")
        if self.name == "open":
            overlap = {f.latex for f in self.train} & {f.latex for f in self.queries}
            if overlap:
                raise QueryLeakError(f"open: {len(overlap)} query formulas are also training formulas, "
                                     f"e.g. {sorted(overlap)[0]!r}")

    def query_images(self) -> list[tuple[int, Path, int]]:
        """``(image_id, path, fid)`` for every real query image, ids 0.. in formula order."""
        pairs = [(path, formula.fid) for formula in self.queries for path in formula.images]
        return [(image_id, path, fid) for image_id, (path, fid) in enumerate(pairs)]


def unique_formulas(formulas: Iterable[Formula]) -> list[Formula]:
    """Normalise each formula's LaTeX and merge formulas that become equal (first id and source,
    all images)."""
    merged: dict[str, Formula] = {}
    for formula in formulas:
        text = normalize_latex(formula.latex)
        if not text:
            continue
        seen = merged.get(text)
        merged[text] = (Formula(formula.fid, text, formula.images, formula.render_latex) if seen is None
                        else replace(seen, images=seen.images + formula.images))
    return list(merged.values())


def split_by_formula(formulas: Sequence[Formula], seed: int, fraction: float = 0.5) -> tuple[list[Formula], list[Formula]]:
    """Seeded split of distinct formulas into (first, second); every formula lands on one side."""
    order = sorted(formulas, key=lambda f: f.fid)
    random.Random(seed).shuffle(order)
    cut = round(len(order) * fraction)
    return sorted(order[:cut], key=lambda f: f.fid), sorted(order[cut:], key=lambda f: f.fid)


def _sample_real(formulas: Sequence[Formula], count: int, seed: int,
                 queries: Sequence[Formula]) -> tuple[Formula, ...]:
    """A seeded sample of up to ``count`` formulas that have real images, none of them byte-identical
    to a query image (IM2LaTeX has such pairs under two different formulas), in id order."""
    if count <= 0:
        return ()
    query_hashes = {_sha256(path) for formula in queries for path in formula.images}
    pool = sorted((f for f in formulas if f.images and query_hashes.isdisjoint(map(_sha256, f.images))),
                  key=lambda f: f.fid)
    chosen = random.Random(seed).sample(pool, min(count, len(pool)))
    return tuple(sorted(chosen, key=lambda f: f.fid))


def _sha256(path: Path) -> str:
    return hashlib.sha256(_read_image(path, "image")).hexdigest()


def open_protocol(im2latex: Iterable[Formula], extra: Iterable[Formula] = (), seed: int = 0,
                  real_train: int = 0) -> Protocol:
    """Train on renders of one half (+ ``extra`` text-only formulas, + the real images of up to
    ``real_train`` first-half formulas); query the other half."""
    first, second = split_by_formula(unique_formulas(im2latex), seed)
    query_texts = {f.latex for f in second}
    first_texts = {f.latex for f in first}
    extra = unique_formulas(extra)
    kept_extra = [f for f in extra if f.latex not in query_texts and f.latex not in first_texts]
    notes = {"extra_formulas": len(extra),
             "extra_dropped_equal_to_a_query": sum(f.latex in query_texts for f in extra),
             "extra_dropped_equal_to_a_training_formula": sum(f.latex in first_texts for f in extra)}
    train = [replace(f, images=()) for f in first] + kept_extra  # (real images: only as real_train)
    return Protocol("open", seed, tuple(train), tuple(second), notes, _sample_real(first, real_train, seed, second))


def bank_protocol(im2latex: Iterable[Formula], bank_size: int = REPORTED_BANK_SIZE, seed: int = 0,
                  real_train: int = 0, outside: int = 0) -> Protocol:
    """A seeded bank of ``bank_size`` formulas; train on their renders (+ the real images of up to
    ``real_train`` formulas outside the bank), query with the bank's real images.

    ``outside`` > 0 draws a development bank from the formulas outside this seed's bank of
    ``outside`` formulas (``build bank --dev``: outside the reported bank), so that a recipe can be
    tuned on real images without ever looking at the reported test images.
    """
    formulas = unique_formulas(im2latex)
    notes = {}
    if outside > 0:
        excluded, formulas = split_by_formula(formulas, seed, fraction=min(1.0, outside / len(formulas)))
        notes["outside_bank_of"] = len(excluded)
    if bank_size > len(formulas):
        raise ClipMatchError(f"bank size {bank_size} is larger than the {len(formulas)} distinct formulas available"
                             + (f" outside the {outside}-formula bank" if outside > 0 else ""))
    bank, rest = split_by_formula(formulas, seed, fraction=bank_size / len(formulas))
    return Protocol("bank", seed, tuple(replace(f, images=()) for f in bank), tuple(bank), notes,
                    _sample_real(rest, real_train, seed, bank))


def real_train_split(protocol: Protocol) -> SplitRecords:
    """The real training images of ``protocol.real_train`` (ids from ``REAL_TRAIN_ID_OFFSET``) and
    their formulas, as `query_split` gives the query images."""
    images, texts = [], []
    for formula in protocol.real_train:
        ids = []
        for path in formula.images:
            ids.append(REAL_TRAIN_ID_OFFSET + len(images))
            images.append((ids[-1], _read_image(path, "real training image")))
        texts.append((formula.fid, formula.latex, ids))
    return images, texts


def query_split(protocol: Protocol) -> SplitRecords:
    """The ``test`` split: real query images and every candidate formula with its images' ids."""
    images = []
    ids_of: dict[int, list[int]] = {}
    for image_id, path, fid in protocol.query_images():
        images.append((image_id, _read_image(path, "query image")))
        ids_of.setdefault(fid, []).append(image_id)
    texts = [(f.fid, f.latex, ids_of[f.fid]) for f in protocol.queries]
    return images, texts


def _read_image(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ClipMatchError(f"{path}: cannot read {what}: {error.strerror or error}") from None


def check_no_query_images(data_dir: str | Path, protocol: Protocol) -> dict[str, int]:
    """Fail unless the written training splits are free of query leaks; returns images checked per split.

    Checked by image id (training images have render or real-training ids, and no query formula
    links to a real-training id) and by content (no training image may be byte-identical to a real
    query image file), plus for ``open``: no training text may be a query formula.
    """
    data_dir = Path(data_dir)
    query_hashes = {_sha256(path): path for _, path, _ in protocol.query_images()}
    query_texts = {f.latex for f in protocol.queries}
    query_fids = {f.fid for f in protocol.queries}
    checked = {}
    for split in TRAINING_SPLITS:
        tsv, jsonl = data_dir / f"{split}_imgs.tsv", data_dir / f"{split}_texts.jsonl"
        if not tsv.exists():
            continue
        count = 0
        for line in read_tsv(tsv):
            if line.image_id < RENDER_ID_OFFSET:
                raise QueryLeakError(f"{tsv}:{line.line}: image_id {line.image_id} is in the query images' id range "
                                     f"(training images are renders, >= {RENDER_ID_OFFSET}, or real images of "
                                     f"non-query formulas, >= {REAL_TRAIN_ID_OFFSET})")
            digest = hashlib.sha256(decode_b64(line.b64, f"{tsv}:{line.line}")).hexdigest()
            if digest in query_hashes:
                raise QueryLeakError(f"{tsv}:{line.line}: image {line.image_id} is the real query image "
                                     f"{query_hashes[digest]}")
            count += 1
        for text in read_jsonl(jsonl):
            is_query = text.text_id in query_fids or text.text in query_texts
            if protocol.name == "open" and is_query:
                raise QueryLeakError(f"{jsonl}:{text.line}: open protocol trains on query formula "
                                     f"{text.text_id} {text.text!r}")
            real = [image_id for image_id in text.image_ids if image_id >= REAL_TRAIN_ID_OFFSET]
            if is_query and real:
                raise QueryLeakError(f"{jsonl}:{text.line}: query formula {text.text_id} {text.text!r} is linked to "
                                     f"real training image {real[0]}")
        checked[split] = count
    return checked


def check_example_split(examples: str | None, query_splits: Sequence[str]) -> None:
    """Refuse example images drawn from a split that is also scored as queries."""
    if examples in query_splits:
        raise ClipMatchError(f"the example images must come from another split than the queries ({examples!r})")


def evaluate_split(encoder: Encoder, data_dir: str | Path, split: str = QUERY_SPLIT, batch_size: int = 32,
                   examples: str | None = None, text_weight: float = EXAMPLE_TEXT_WEIGHT,
                   layout_weight: float = 0.0, found: Examples | None = None,
                   candidates: str | None = None) -> dict:
    """Retrieval metrics of ``encoder`` on one written split (by default the real-image query split).

    ``i2t_r1/5/10`` and ``i2t_mean_recall`` are the protocols' numbers (query image -> formula
    among all candidates); ``t2i_*`` rank the images for each formula. Also counts the queries,
    candidates and candidates longer than the model's text context (they are truncated).
    ``examples``: another split of ``data_dir`` whose images of a candidate text are mixed into its
    vector by ``text_weight`` (`clip_match.index.examples`), e.g. the bank's training renders;
    ``layout_weight`` blends their layout codes with the query images' in (`clip_match.formulas.layout_codes`),
    as an index built with that weight scores; the metrics of the model alone and of the layout alone
    then come beside the blend's (``model_only``, ``layout_only``). ``found``: the ``examples`` split
    already read (`read_examples`, with layouts when ``layout_weight`` is set), to score several
    query splits against the same candidates without reading it again. ``candidates``: rank against
    every text of this split (e.g. ``test``, all the protocol's formulas) instead of the query split's
    own, which lists only the formulas it has images of (a held-out font cannot typeset them all).
    """
    check_example_split(examples, [split])
    if check_layout_weight(layout_weight) and examples is None:
        raise ClipMatchError("a layout weight needs example images: the candidates' layout codes come from them")
    tsv, jsonl = imgs_path(data_dir, split), texts_path(data_dir, split)
    ranked_jsonl = texts_path(data_dir, candidates or split)
    for path in (tsv, jsonl, ranked_jsonl):
        if not path.exists():
            raise ClipMatchError(f"{path}: no such file (build the split with python -m datasets.formulas.build)")
    images = list(read_tsv(tsv))
    texts = list(read_jsonl(jsonl))
    row_of = {line.image_id: row for row, line in enumerate(images)}
    ranked = texts if ranked_jsonl == jsonl else list(read_jsonl(ranked_jsonl))
    candidate_row = {text.text: row for row, text in enumerate(ranked)}
    pairs = []
    for text in texts:
        if text.text not in candidate_row:
            raise ClipMatchError(f"{where(jsonl, text.line)}: formula {text.text!r} is not a candidate in split "
                                 f"{candidates!r}")
        for image_id in text.image_ids:
            if image_id not in row_of:
                raise ClipMatchError(f"{where(jsonl, text.line)}: image_id {image_id} is not in {tsv}")
            pairs.append((row_of[image_id], candidate_row[text.text]))
    paired = {row for row, _ in pairs}
    if not pairs or len(paired) < len(images):
        unpaired = next((line for row, line in enumerate(images) if row not in paired), None)
        raise ClipMatchError(f"{tsv}: split {split!r} has no image-text pairs" if not pairs else
                             f"{where(tsv, unpaired.line)}: image {unpaired.image_id} has no text in {jsonl}; "
                             "every query image needs its formula")
    pictures = [decode_image(decode_b64(line.b64, where(tsv, line.line)), where(tsv, line.line)) for line in images]
    image_features = encoder.encode_images(pictures, batch_size=batch_size)
    text_features = encoder.encode_texts([text.text for text in ranked])
    with_examples = 0
    if examples is not None:
        check_text_weight(text_weight)
        if found is None:
            found = read_examples(encoder, data_dir, examples, batch_size=batch_size, layouts=layout_weight > 0)
        chosen = [found.prototypes.get(text.text) for text in ranked]
        with_examples = sum(prototype is not None for prototype in chosen)
        text_features = fuse(text_features, chosen, text_weight)
    metrics = retrieval_metrics(image_features, text_features, pairs)
    if layout_weight:
        candidate_codes = [found.layouts.get(text.text) for text in ranked]
        query_codes = list(layout_codes(pictures))

        def blended(weight: float) -> dict:
            return retrieval_metrics(with_layout(image_features, query_codes, weight),
                                     with_layout(text_features, candidate_codes, weight), pairs)

        metrics = {**blended(layout_weight), "model_only": metrics, "layout_only": blended(1.0)}
    lengths = (tokenize([text.text for text in ranked], context_length=512) != 0).sum(axis=1)
    return {"split": split, "queries": len(images), "candidates": len(ranked),
            "context_length": encoder.context_length,
            "candidates_truncated": int((lengths > encoder.context_length).sum()),
            "examples": examples, "text_weight": text_weight if examples else 1.0, "layout_weight": layout_weight,
            "candidates_with_examples": with_examples, **metrics}
