"""LabelIndex on random vectors: exactness, recall, persistence, refusals, duplicates."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from clip_match.errors import ClipMatchError
from clip_match.index.candidates import Candidate, read_candidates
from clip_match.index.faiss_index import choose_factory
from clip_match.index.label_index import LabelIndex


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def clustered(count: int, dim: int, clusters: int, rng: np.random.Generator, spread: float = 1.0) -> np.ndarray:
    """Unit vectors around random unit centres (within-cluster cosine ~ 1 / (1 + spread^2)).

    Real embeddings are clustered by meaning; on uniformly random high-dimensional vectors every
    neighbour is about as far as any other, so ANN recall is meaningless there.
    """
    centres = unit(rng.standard_normal((clusters, dim)))
    noise = rng.standard_normal((count, dim)).astype(np.float32) * np.float32(spread / np.sqrt(dim))
    return unit(centres[rng.integers(0, clusters, count)] + noise)


def test_factory_choice_follows_size() -> None:
    assert choose_factory(10) == ("Flat", "")
    assert choose_factory(50_000) == ("Flat", "")
    assert choose_factory(100_000) == ("IVF1024,Flat", "nprobe=32")
    assert choose_factory(1_000_000) == ("IVF2048,Flat", "nprobe=64")
    assert choose_factory(10_000_000) == ("IVF2048,Flat", "nprobe=64")


def test_exact_index_matches_numpy_brute_force() -> None:
    rng = np.random.default_rng(0)
    vectors, queries = unit(rng.standard_normal((3000, 64))), unit(rng.standard_normal((20, 64)))
    index = LabelIndex.from_vectors(vectors, [f"label {i}" for i in range(3000)], "fp")
    assert index.factory == "Flat" and index.exact
    rankings = index.search(queries, top_k=10)
    scores = queries @ vectors.T
    expected = np.argsort(-scores, axis=1)[:, :10]
    logits = 100 * scores
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    for q, ranking in enumerate(rankings):
        assert [hit.id for hit in ranking.hits] == [f"label {i}" for i in expected[q]]
        assert [hit.rank for hit in ranking.hits] == list(range(1, 11))
        np.testing.assert_allclose([hit.score for hit in ranking.hits], scores[q, expected[q]], atol=1e-5)
        np.testing.assert_allclose([hit.probability for hit in ranking.hits], softmax[q, expected[q]], atol=1e-5)
        assert (ranking.softmax_scope, ranking.softmax_over) == ("all", 3000)


@pytest.mark.slow
def test_approximate_index_recall_at_10_on_100k_vectors() -> None:
    rng = np.random.default_rng(1)
    data = clustered(100_200, 64, clusters=2000, rng=rng, spread=0.7)
    vectors, queries = data[:100_000], data[100_000:]  # queries: fresh draws from the same clusters
    index = LabelIndex.from_vectors(vectors, [str(i) for i in range(100_000)], "fp")
    assert index.factory == "IVF1024,Flat" and not index.exact
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    found = [{int(hit.id) for hit in ranking.hits} for ranking in index.search(queries, top_k=10)]
    recall = np.mean([len(found[q] & set(exact[q])) / 10 for q in range(len(queries))])
    assert recall >= 0.98
    assert index.search(queries[:1], top_k=10)[0].softmax_scope == "top"


def test_save_load_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(2)
    vectors = unit(rng.standard_normal((500, 32)))
    candidates = [Candidate(str(i), f"text {i}", {"source": "test", "n": i}) for i in range(500)]
    index = LabelIndex.from_vectors(vectors, candidates, "fingerprint-a", factory="IVF8,Flat",
                                    search_parameters="nprobe=8")
    before = index.search(vectors[:5], top_k=7)
    index.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["bundle_fingerprint"] == "fingerprint-a" and manifest["count"] == 500
    assert manifest["factory"] == "IVF8,Flat" and manifest["dim"] == 32 and manifest["normalization"] == "text"
    loaded = LabelIndex.load(tmp_path / "idx", fingerprint="fingerprint-a")
    assert loaded.search(vectors[:5], top_k=7) == before
    assert loaded.candidates[3].metadata == {"source": "test", "n": 3}
    with pytest.raises(ClipMatchError, match="already exists"):
        index.save(tmp_path / "idx")


def test_other_bundle_is_refused(tmp_path) -> None:
    rng = np.random.default_rng(3)
    LabelIndex.from_vectors(unit(rng.standard_normal((10, 8))), list("abcdefghij"), "bundle-a").save(tmp_path / "i")
    with pytest.raises(ClipMatchError, match="built with model bundle bundle-a.*bundle-b"):
        LabelIndex.load(tmp_path / "i", fingerprint="bundle-b")


@pytest.mark.parametrize("damage", ["candidates", "index", "manifest", "missing"])
def test_corrupted_directory_is_refused(tmp_path, damage: str) -> None:
    rng = np.random.default_rng(4)
    path = LabelIndex.from_vectors(unit(rng.standard_normal((10, 8))), list("abcdefghij"), "fp").save(tmp_path / "i")
    if damage == "candidates":
        (path / "candidates.jsonl").write_text((path / "candidates.jsonl").read_text().replace('"a"', '"z"'))
    elif damage == "index":
        data = (path / "index.faiss").read_bytes()
        (path / "index.faiss").write_bytes(data[: len(data) // 2])
    elif damage == "manifest":
        (path / "manifest.json").write_text("{not json")
    else:
        (path / "index.faiss").unlink()
    with pytest.raises(ClipMatchError, match=r"corrupted|unreadable|missing"):
        LabelIndex.load(path)


def test_duplicates_stored_once_and_add_extends(tmp_path) -> None:
    rng = np.random.default_rng(5)
    texts = [r"\left( x^2 \right)", "( x ^ { 2 } )", r"\frac12", "y"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = LabelIndex.from_vectors(unit(rng.standard_normal((4, 8))), texts, "fp", latex=True)
    assert len(index) == 3 and any("1 duplicate" in str(w.message) for w in caught)
    assert [c.text for c in index.candidates] == [r"\left( x^2 \right)", r"\frac12", "y"]
    assert index.add_vectors(unit(rng.standard_normal((2, 8))), [r"\frac 1 2", "z"]) == 1
    assert len(index) == 4
    index.save(tmp_path / "i")
    loaded = LabelIndex.load(tmp_path / "i")
    assert loaded.latex and loaded.add_vectors(unit(rng.standard_normal((1, 8))), ["z"]) == 0
    with pytest.raises(ClipMatchError, match="already in the index"):
        loaded.add_vectors(unit(rng.standard_normal((1, 8))), [Candidate("y", "w")])


def test_candidate_files(tmp_path) -> None:
    (tmp_path / "labels.txt").write_text("cat\n\n dog \n", encoding="utf-8")
    assert [c.id for c in read_candidates(tmp_path / "labels.txt")] == ["cat", "dog"]
    (tmp_path / "c.jsonl").write_text('{"id": 1, "text": "猫", "lang": "zh"}\n', encoding="utf-8")
    assert read_candidates(tmp_path / "c.jsonl") == [Candidate("1", "猫", {"lang": "zh"})]
    (tmp_path / "bad.jsonl").write_text('{"id": 1, "text": "a"}\n{"text": "b"}\n', encoding="utf-8")
    with pytest.raises(ClipMatchError, match=r"bad.jsonl:2: missing field 'id'"):
        read_candidates(tmp_path / "bad.jsonl")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(ClipMatchError, match="empty.txt: no candidates"):
        read_candidates(tmp_path / "empty.txt")
    (tmp_path / "repeats.txt").write_text("cat\ncat\npage\x0cbreak\r\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="repeats.txt: 1 repeated line"):
        assert [c.id for c in read_candidates(tmp_path / "repeats.txt")] == ["cat", "page\x0cbreak"]
    (tmp_path / "sep.jsonl").write_text(json.dumps({"id": 1, "text": "a\u2028b"}, ensure_ascii=False) + "\n"
                                        + json.dumps({"id": 1, "text": "c"}) + "\n", encoding="utf-8")
    with pytest.raises(ClipMatchError, match=r"sep.jsonl:2: candidate id '1' is already on line 1"):
        read_candidates(tmp_path / "sep.jsonl")  # (and line 1, with its U+2028, is one line)


def test_a_candidate_of_invisible_characters_is_empty() -> None:
    vectors = unit(np.random.default_rng(7).standard_normal((2, 8)))
    with pytest.raises(ClipMatchError, match="text is empty after normalisation"):
        LabelIndex.from_vectors(vectors, ["猫", "\u200b\ufeff"], "fp")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(LabelIndex.from_vectors(vectors, ["猫", "猫\u200b"], "fp")) == 1  # what the model sees: one text
    assert any("1 duplicate" in str(w.message) for w in caught)


def test_faiss_refusals_come_before_anything_is_saved() -> None:
    vectors = unit(np.random.default_rng(6).standard_normal((3, 8)))
    with pytest.raises(ClipMatchError, match=r"invalid FAISS search parameters 'nprobe=banana'"):
        LabelIndex.from_vectors(vectors, list("abc"), "fp", factory="Flat", search_parameters="nprobe=banana")
    with pytest.raises(ClipMatchError, match=r"FAISS index 'PQ8' cannot take these 3 candidates"):
        LabelIndex.from_vectors(vectors, list("abc"), "fp", factory="PQ8")
