"""`LabelIndex`: candidate texts embedded once by the bundle's text tower, kept in FAISS on disk.

Vectors are L2-normalised, so inner product is cosine. A candidate with example images (see
`clip_match.index.examples`) is stored as its text vector mixed with its examples' prototype, by the
index's ``text_weight`` (0: examples only, 1: text only). An index with a ``layout_weight`` above 0 also
blends in the layout codes of the examples and of each query image (`clip_match.formulas.layout_codes`): its
vectors are longer than the model's, and queries go through `query_vectors`. Probabilities are a
softmax over 100 x cosine (CLIP's logit scale), computed over every candidate when the index is exact and
holds at most ``EXACT_LIMIT`` candidates (scope "all"), else over the top ``SOFTMAX_POOL``
retrieved ones (scope "top"); each `Ranking` says which.

A saved index is a directory::

    manifest.json      format, bundle fingerprint, dim, normalisation, factory, search
                       parameters, text and layout weights, count, sha256 of the two files below
    index.faiss        the FAISS index (row i = line i of candidates.jsonl)
    candidates.jsonl   {"id", "text", "key", "metadata"} per candidate; key = what was embedded
    (others)           reports its writer adds (`save`'s ``extra_files``: render_report.json)

Loading checks the hashes, the counts and (when given) the bundle fingerprint.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence

import faiss
import numpy as np
from PIL import Image
from tqdm import tqdm

from ..checks import positive_batch_size
from ..errors import ClipMatchError
from ..formulas.layout_codes import (LAYOUT_DIM, LAYOUT_SHAPE, LAYOUT_VERSION, check_layout_weight, query_layout_code,
                                     with_layout)
from ..fsutil import atomic_dir
from ..jsonio import read_manifest
from ..runtime.bundle import sha256_file
from .candidates import Candidate, candidate_key, check_unique_ids, read_candidates
from .examples import EXAMPLE_TEXT_WEIGHT, Examples, check_text_weight, fuse
from .faiss_index import (EXACT_LIMIT, choose_factory, is_exact, l2_normalised, new_index,
                          set_search_parameters, to_search_device, train_if_needed)

FORMAT = "clip_match.label_index"
FORMAT_VERSION = 1
MANIFEST_NAME, INDEX_NAME, CANDIDATES_NAME = "manifest.json", "index.faiss", "candidates.jsonl"
LOGIT_SCALE = 100.0
SOFTMAX_POOL = 100


class TextEncoder(Protocol):
    """What LabelIndex needs from `clip_match.Encoder`."""

    fingerprint: str
    embed_dim: int
    context_length: int

    def encode_texts(self, texts: Sequence[str], batch_size: int = ...) -> np.ndarray: ...

    def count_truncated(self, texts: Sequence[str]) -> int: ...


@dataclass(frozen=True)
class Hit:
    rank: int
    id: str
    text: str           # as given
    key: str            # as embedded and deduplicated: normalised (as LaTeX, for a --latex index)
    score: float
    probability: float
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ranking:
    """Hits for one query; probabilities are a softmax over ``softmax_over`` candidates (``softmax_scope``)."""

    hits: list[Hit]
    softmax_scope: str
    softmax_over: int


@dataclass(frozen=True)
class _Entry:
    candidate: Candidate
    key: str


class LabelIndex:
    """Candidates of one model bundle in a FAISS inner-product index."""

    def __init__(self, index: faiss.Index, entries: list[_Entry], fingerprint: str, latex: bool,
                 factory: str, search_parameters: str, text_weight: float = 1.0, layout_weight: float = 0.0):
        self._index = index
        self._entries = entries
        self._keys = {entry.key for entry in entries}
        self._ids = {entry.candidate.id for entry in entries}
        self.fingerprint = fingerprint
        self.latex = latex
        self.factory = factory
        self.search_parameters = search_parameters
        self.text_weight = check_text_weight(text_weight)
        self.layout_weight = check_layout_weight(layout_weight)
        self._choose_factory_on_first_add = not factory
        self._search_index: faiss.Index | None = None

    # ---- building -------------------------------------------------------------------------
    @classmethod
    def build(cls, encoder: TextEncoder | str | os.PathLike | None,
              candidates: str | os.PathLike | Iterable[Candidate | str], latex: bool = False,
              factory: str | None = None, search_parameters: str | None = None, batch_size: int = 256,
              progress: bool = True, examples: Examples | None = None,
              text_weight: float | None = None, layout_weight: float = 0.0) -> LabelIndex:
        """Embed ``candidates`` (a candidate file, `Candidate`s or plain strings) with ``encoder``
        (an `Encoder`, or a bundle directory; None: the packaged demo model); ``examples``
        (`read_examples`, with layouts when ``layout_weight`` > 0) are mixed in by ``text_weight``
        (default: `EXAMPLE_TEXT_WEIGHT` with examples, 1 without, as ``clip-match index build``)
        and ``layout_weight``."""
        if text_weight is None:
            text_weight = EXAMPLE_TEXT_WEIGHT if examples is not None else 1.0
        if not hasattr(encoder, "encode_texts"):
            from ..runtime.encoder import Encoder  # onnxruntime only when a bundle must be opened

            encoder = Encoder.load(encoder)
        index = cls.empty(encoder.fingerprint, encoder.embed_dim, latex, factory or "", search_parameters or "",
                          text_weight, layout_weight)
        if not index.add(encoder, candidates, batch_size=batch_size, progress=progress, examples=examples):
            raise ClipMatchError("no candidates to index")
        return index

    @classmethod
    def empty(cls, fingerprint: str, dim: int, latex: bool = False, factory: str = "",
              search_parameters: str = "", text_weight: float = 1.0, layout_weight: float = 0.0) -> LabelIndex:
        """An index without candidates for model vectors of ``dim``; with an empty ``factory`` the
        first `add` chooses one by size."""
        dim += LAYOUT_DIM if check_layout_weight(layout_weight) else 0
        placeholder = new_index(dim, factory) if factory else faiss.IndexFlatIP(dim)
        return cls(placeholder, [], fingerprint, latex, factory, search_parameters, text_weight, layout_weight)

    def add(self, encoder: TextEncoder, candidates: str | os.PathLike | Iterable[Candidate | str],
            batch_size: int = 256, progress: bool = True, examples: Examples | None = None) -> int:
        """Embed and add candidates whose normalised text is new; returns how many were added.
        ``examples`` (`read_examples`) are mixed in by the index's text and layout weights."""
        self.check_bundle(encoder.fingerprint)
        positive_batch_size(batch_size)
        if examples is not None and self.text_weight == 1.0 and not self.layout_weight:
            raise ClipMatchError("this index keeps text vectors only (text weight 1, no layout weight): example "
                                 "images would change nothing; build a new index with the examples")
        if self.layout_weight and (examples is None or examples.layouts is None):
            raise ClipMatchError(f"this index blends in layout codes (layout weight {self.layout_weight:g}): give the "
                                 "new candidates' example images with their layout codes (--examples, or --render N)")
        entries = [entry for _, entry in self._new_entries(candidates)]
        long = encoder.count_truncated([entry.key for entry in entries])
        if long:
            warnings.warn(f"{long} candidate(s) exceed the context length of {encoder.context_length} tokens "
                          "and were truncated", stacklevel=2)
        vectors = np.empty((len(entries), encoder.embed_dim), dtype=np.float32)
        steps = range(0, len(entries), batch_size)
        quiet = not progress or len(steps) < 2
        for start in tqdm(steps, desc="embedding candidates", unit="batch", disable=True if quiet else None):
            batch = [entry.key for entry in entries[start:start + batch_size]]
            vectors[start:start + len(batch)] = encoder.encode_texts(batch, batch_size=batch_size)
        if examples is not None:
            prototypes = [examples.prototypes.get(entry.key) for entry in entries]
            without = sum(prototype is None for prototype in prototypes)
            if without:
                layout_note = (f"; with layout weight {self.layout_weight:g} they score at most "
                               f"{1 - self.layout_weight:g} x that text's cosine, so they usually rank below "
                               "candidates with examples" if self.layout_weight else "")
                warnings.warn(f"{without} of {len(entries)} candidate(s) have no example images and are "
                              f"ranked by their text alone{layout_note}", stacklevel=2)
            vectors = fuse(vectors, prototypes, self.text_weight)
            if self.layout_weight:
                vectors = with_layout(vectors, [examples.layouts.get(entry.key) for entry in entries],
                                      self.layout_weight)
        self._add_entries(vectors, entries)
        return len(entries)

    def add_vectors(self, vectors: np.ndarray, candidates: Iterable[Candidate | str]) -> int:
        """Add precomputed embeddings (row i belongs to candidate i); duplicates are skipped."""
        candidates = list(_as_candidates(candidates))
        vectors = l2_normalised(vectors)
        if len(vectors) != len(candidates):
            raise ClipMatchError(f"{len(vectors)} vectors for {len(candidates)} candidates")
        new = self._new_entries(candidates)
        self._add_entries(vectors[[row for row, _ in new]], [entry for _, entry in new])
        return len(new)

    @classmethod
    def from_vectors(cls, vectors: np.ndarray, candidates: Iterable[Candidate | str], fingerprint: str,
                     latex: bool = False, factory: str | None = None,
                     search_parameters: str | None = None) -> LabelIndex:
        """Build from precomputed embeddings (tests, benchmarks, embeddings made elsewhere)."""
        index = cls.empty(fingerprint, np.shape(vectors)[1], latex, factory or "", search_parameters or "")
        index.add_vectors(vectors, candidates)
        return index

    def _new_entries(self, candidates: str | os.PathLike | Iterable[Candidate | str]) -> list[tuple[int, _Entry]]:
        """(position, entry) of candidates whose key is not in the index yet, first occurrence kept."""
        if isinstance(candidates, (str, os.PathLike)):
            candidates = read_candidates(candidates)
        candidates = list(_as_candidates(candidates))
        check_unique_ids(candidates, "candidates")
        new, keys, duplicates = [], set(self._keys), 0
        for position, candidate in enumerate(candidates):
            entry = _Entry(candidate, candidate_key(candidate.text, self.latex))
            if not entry.key:
                raise ClipMatchError(f"candidate {entry.candidate.id!r}: text is empty after normalisation")
            if entry.key in keys:
                duplicates += 1
                continue
            if entry.candidate.id in self._ids:
                raise ClipMatchError(f"candidate id {entry.candidate.id!r} is already in the index with another text")
            keys.add(entry.key)
            new.append((position, entry))
        if duplicates:
            warnings.warn(f"{duplicates} duplicate candidate(s) (same text after normalisation) stored once",
                          stacklevel=3)
        return new

    def _add_entries(self, vectors: np.ndarray, entries: list[_Entry]) -> None:
        if not entries:
            return
        if self._choose_factory_on_first_add:
            self.factory, chosen_parameters = choose_factory(len(entries))
            self.search_parameters = self.search_parameters or chosen_parameters
            self._index = new_index(self.dim, self.factory)
            self._choose_factory_on_first_add = False
        try:
            train_if_needed(self._index, vectors)
            self._index.add(vectors)
        except RuntimeError as error:  # FAISS's own checks, e.g. too few vectors to train PQ codes
            raise ClipMatchError(f"FAISS index {self.factory!r} cannot take these {len(vectors)} candidates: "
                                 f"{str(error).splitlines()[0]}") from None
        set_search_parameters(self._index, self.search_parameters)
        self._entries.extend(entries)
        self._keys.update(entry.key for entry in entries)
        self._ids.update(entry.candidate.id for entry in entries)
        self._search_index = None

    # ---- searching ------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._index.d

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def candidates(self) -> list[Candidate]:
        return [entry.candidate for entry in self._entries]

    @property
    def keys(self) -> frozenset[str]:
        """The candidates' keys (their normalised texts): what `add` skips."""
        return frozenset(self._keys)

    def check_bundle(self, fingerprint: str) -> None:
        """Refuse a model bundle other than the one the index was built with."""
        _check_bundle("this index", self.fingerprint, fingerprint)

    @property
    def exact(self) -> bool:
        return is_exact(self._index)

    def query_vectors(self, vectors: np.ndarray, images: Sequence[Image.Image],
                      names: Sequence[str] | None = None) -> np.ndarray:
        """What `search` takes for images whose model vectors are ``vectors``: those vectors, or with
        a layout weight, each blended with the image's layout code (a blank image is an error naming
        it: ``names[i]``, else "image i")."""
        if not self.layout_weight:
            return vectors
        names = names or [f"image {number}" for number in range(1, len(images) + 1)]
        codes = [query_layout_code(image, name) for image, name in zip(images, names)]
        return with_layout(vectors, codes, self.layout_weight)

    def search(self, queries: np.ndarray, top_k: int = 5) -> list[Ranking]:
        """Top ``top_k`` candidates (clipped to the count) for each query vector, best first."""
        if not self._entries:
            raise ClipMatchError("the index holds no candidates")
        queries = l2_normalised(np.atleast_2d(queries))
        if queries.shape[1] != self.dim:
            raise ClipMatchError(f"query vectors have {queries.shape[1]} dims, the index {self.dim}")
        top_k = max(1, min(top_k, len(self)))
        everything = self.exact and len(self) <= EXACT_LIMIT
        pool = len(self) if everything else min(len(self), max(top_k, SOFTMAX_POOL))
        scores, rows = self._searcher().search(queries, pool)
        probabilities = softmax_probabilities(np.where(rows >= 0, scores, -np.inf))
        scope = "all" if everything else "top"
        return [
            Ranking(
                hits=[self._hit(rank, int(row), float(score), float(probability))
                      for rank, (row, score, probability) in enumerate(zip(r[:top_k], s[:top_k], p[:top_k]), 1)
                      if row >= 0],
                softmax_scope=scope,
                softmax_over=int((r >= 0).sum()),
            )
            for r, s, p in zip(rows, scores, probabilities)
        ]

    def _hit(self, rank: int, row: int, score: float, probability: float) -> Hit:
        entry = self._entries[row]
        candidate = entry.candidate
        return Hit(rank, candidate.id, candidate.text, entry.key, score, probability, dict(candidate.metadata))

    def _searcher(self) -> faiss.Index:
        if self._search_index is None:
            set_search_parameters(self._index, self.search_parameters)
            self._search_index = to_search_device(self._index, self.search_parameters)
        return self._search_index

    # ---- persistence ----------------------------------------------------------------------
    def save(self, path: str | os.PathLike, overwrite: bool = False,
             inputs: Iterable[str | os.PathLike] = (), extra_files: Mapping[str, str] | None = None) -> Path:
        """Write the index directory atomically (see the module docstring); a ``path`` that holds one
        of the ``inputs`` (the candidate file, the examples) is refused. ``extra_files`` (name: text,
        a report say) are written into it too, in the same step, and not listed in the manifest."""
        path = Path(path)
        with atomic_dir(path, overwrite=overwrite, inputs=inputs) as tmp:
            for name, text in (extra_files or {}).items():
                if name in (MANIFEST_NAME, INDEX_NAME, CANDIDATES_NAME) or Path(name).name != name:
                    raise ClipMatchError(f"{name!r} cannot be an extra file of an index directory")
                (tmp / name).write_text(text, encoding="utf-8")
            faiss.write_index(self._index, str(tmp / INDEX_NAME))
            with open(tmp / CANDIDATES_NAME, "w", encoding="utf-8") as handle:
                for entry in self._entries:
                    record = {"id": entry.candidate.id, "text": entry.candidate.text, "key": entry.key,
                              "metadata": entry.candidate.metadata}
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            manifest = {
                "format": FORMAT, "format_version": FORMAT_VERSION, "bundle_fingerprint": self.fingerprint,
                "dim": self.dim, "metric": "inner_product", "normalization": "latex" if self.latex else "text",
                "factory": self.factory, "search_parameters": self.search_parameters,
                "text_weight": self.text_weight, "layout_weight": self.layout_weight,
                "layout_shape": list(LAYOUT_SHAPE), "layout_version": LAYOUT_VERSION, "count": len(self),
                "files": {name: sha256_file(tmp / name) for name in (INDEX_NAME, CANDIDATES_NAME)},
            }
            (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, fingerprint: str | None = None) -> LabelIndex:
        """Read a saved index; refuse a corrupted directory or (given ``fingerprint``) another bundle's."""
        path = Path(path)
        manifest = read_manifest(path, MANIFEST_NAME, "clip_match index", FORMAT, FORMAT_VERSION, "rebuild the index",
                                 ("bundle_fingerprint", "dim", "normalization", "factory", "search_parameters",
                                  "count", "files"))
        if fingerprint is not None:
            _check_bundle(str(path), manifest["bundle_fingerprint"], fingerprint)
        for name in (INDEX_NAME, CANDIDATES_NAME):
            file = path / name
            if not file.is_file():
                raise ClipMatchError(f"{file}: missing; the index directory is incomplete")
            if sha256_file(file) != manifest["files"].get(name):
                raise ClipMatchError(f"{file}: sha256 does not match {MANIFEST_NAME}; the index is corrupted, rebuild it")
        try:
            index = faiss.read_index(str(path / INDEX_NAME))
        except RuntimeError as error:
            raise ClipMatchError(f"{path / INDEX_NAME}: unreadable FAISS index: {str(error).splitlines()[0]}") from None
        text_weight = manifest.get("text_weight", 1.0)  # (absent in indexes written before example images)
        layout_weight = manifest.get("layout_weight", 0.0)  # (and before layout codes)
        try:
            check_text_weight(text_weight)
            check_layout_weight(layout_weight)
        except ClipMatchError as error:
            raise ClipMatchError(f"{path / MANIFEST_NAME}: {error}") from None
        if layout_weight and manifest.get("layout_shape") != list(LAYOUT_SHAPE):
            raise ClipMatchError(f"{path / MANIFEST_NAME}: layout codes of shape {manifest.get('layout_shape')}, this "
                                 f"version makes {list(LAYOUT_SHAPE)}; rebuild the index")
        if layout_weight and manifest.get("layout_version", 1) != LAYOUT_VERSION:
            raise ClipMatchError(f"{path / MANIFEST_NAME}: layout codes of version {manifest.get('layout_version', 1)}, "
                                 f"this clip-match makes version {LAYOUT_VERSION} (they no longer compare); rebuild "
                                 "the index (index build ... --overwrite; renders come back from their cache)")
        entries = _read_entries(path / CANDIDATES_NAME)
        if not (len(entries) == index.ntotal == manifest["count"]) or index.d != manifest["dim"]:
            raise ClipMatchError(f"{path}: index holds {index.ntotal} vectors of dim {index.d}, candidates.jsonl "
                                 f"{len(entries)}, manifest {manifest['count']} of dim {manifest['dim']}; rebuild it")
        return cls(index, entries, manifest["bundle_fingerprint"], manifest["normalization"] == "latex",
                   manifest["factory"], manifest["search_parameters"], text_weight, layout_weight)


def _as_candidates(items: Iterable[Candidate | str]) -> Iterable[Candidate]:
    for item in items:
        yield item if isinstance(item, Candidate) else Candidate(id=item.strip(), text=item)


def _check_bundle(what: str, built_with: str, given: str) -> None:
    if built_with != given:
        raise ClipMatchError(f"{what} was built with model bundle {built_with}, not with the given bundle {given}; "
                             "rebuild it with `clip-match index build` and this bundle")


def softmax_probabilities(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax over ``LOGIT_SCALE`` x cosine; -inf scores (no hit) get 0, an all -inf row all 0."""
    logits = LOGIT_SCALE * np.atleast_2d(scores)
    peak = np.maximum(logits.max(axis=1, keepdims=True), -1e30)
    probabilities = np.exp(logits - peak)
    return probabilities / np.maximum(probabilities.sum(axis=1, keepdims=True), 1e-30)


def _read_entries(path: Path) -> list[_Entry]:
    entries = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            try:
                record = json.loads(line)
                candidate = Candidate(str(record["id"]), record["text"], dict(record.get("metadata") or {}))
                entries.append(_Entry(candidate, record["key"]))
            except (ValueError, KeyError, TypeError) as error:
                raise ClipMatchError(f"{path}:{number}: bad candidate record: {error}") from None
    return entries
