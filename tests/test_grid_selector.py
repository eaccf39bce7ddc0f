"""The learned k-unknown selector: fitted, stored as JSON, read back with the same decisions, and a
bundle without one falls back to the calibrated rule."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from clip_match.errors import ClipMatchError
from clip_match.grid.selector import FEATURES, Selector, cut_features, fit_selector
from clip_match.grid.solver import GridSolver
from clip_match.runtime.bundle import Bundle


def _puzzles(count: int, seed: int, shift: float = 0.0, squeeze: float = 1.0):
    """Score patterns like a model's: k matching tiles score higher, by a margin that varies."""
    rng = np.random.default_rng(seed)
    scores, answers = [], []
    for index in range(count):
        n = (6, 9)[index % 2]
        k = int(rng.integers(1, 4))
        values = rng.normal(0.1, 0.05, n)
        answer = np.zeros(n, bool)
        answer[rng.choice(n, k, replace=False)] = True
        values[answer] += rng.uniform(0.08, 0.35)
        scores.append(shift + squeeze * values)
        answers.append(answer)
    return scores, answers


@pytest.fixture(scope="module")
def fitted() -> Selector:
    scores, answers = _puzzles(400, seed=1)
    return fit_selector(scores, answers, "fp123", "synthetic, seed 1")


def test_cut_features_describe_every_cut():
    features = cut_features([0.9, 0.1, 0.8, 0.2, 0.15, 0.05])
    assert features.shape == (5, len(FEATURES))
    gap = features[:, FEATURES.index("gap_to_largest")]
    assert int(np.argmax(gap)) == 1  # the largest drop comes after the two best tiles


def test_the_selector_holds_when_scores_shift_where_a_threshold_does_not(fitted):
    from clip_match.grid.select import SelectionRule, calibrate

    threshold, _ = calibrate(*_puzzles(400, seed=1))
    for shift, squeeze in ((0.0, 1.0), (-0.1, 0.6)):  # another style: every score lower, the spread smaller
        scores, answers = _puzzles(300, seed=2, shift=shift, squeeze=squeeze)

        def right(select) -> float:
            return float(np.mean([np.array_equal(select(s), a) for s, a in zip(scores, answers)]))

        assert right(fitted.select) >= max(0.65, right(SelectionRule("gap").select) - 0.02)
    assert right(fitted.select) > right(threshold.select) + 0.3  # the shifted puzzles


def test_json_round_trip_reproduces_the_fitted_models_decisions(fitted, tmp_path):
    from sklearn.linear_model import LogisticRegression

    path = fitted.save(tmp_path / "grid_selector.json")
    loaded = Selector.load(path)
    assert loaded == fitted
    reference = LogisticRegression()  # the fitted model, rebuilt from its coefficients
    reference.coef_, reference.intercept_ = np.array([fitted.coef]), np.array([fitted.intercept])
    reference.classes_ = np.array([False, True])
    for scores in _puzzles(50, seed=3)[0]:
        x = (cut_features(scores) - np.array(fitted.mean)) / np.array(fitted.scale)
        assert loaded.k(scores) == int(np.argmax(reference.decision_function(x))) + 1
    assert "pickle" not in path.read_text()


@pytest.mark.parametrize("change, message", [
    ({"format": "other"}, "not a grid selector"),
    ({"format_version": 9}, "grid selector version 9"),
    ({"coef": [1.0] * 3}, "field 'coef' must be"),
    ({"scale": [0.0] * len(FEATURES)}, "field 'scale' must be positive"),
    ({"intercept": "high"}, "field 'intercept' must be a float"),
    ({"features": ["gap"]}, "field 'features' must list"),
])
def test_bad_selector_files_name_the_field(fitted, tmp_path, change, message):
    path = fitted.save(tmp_path / "grid_selector.json")
    record = json.loads(path.read_text())
    record.update(change)
    path.write_text(json.dumps(record))
    with pytest.raises(ClipMatchError, match=f"grid_selector.json: {message}"):
        Selector.load(path)
    path.write_text("{not json")
    with pytest.raises(ClipMatchError, match="not a readable grid selector"):
        Selector.load(path)


def test_a_bundle_uses_its_selector_and_falls_back_without_one(tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    puzzle = [np.full((32, 32, 3), v, np.uint8) for v in range(0, 225, 25)]  # nine tiles
    assert GridSolver(bundle).solve(puzzle, "猫").rule == "largest gap (uncalibrated)"
    with pytest.raises(ClipMatchError, match="has no grid_selector.json"):
        GridSolver(bundle, k_unknown="selector")
    scores, answers = _puzzles(200, seed=4)
    fingerprint = Bundle.load(bundle).fingerprint
    fit_selector(scores, answers, fingerprint, "synthetic").save(bundle / "grid_selector.json")
    assert "grid_selector.json" in Bundle.load(bundle).manifest["files"]
    assert GridSolver(bundle).solve(puzzle, "猫").rule == "learned selector"
    assert GridSolver(bundle, k_unknown="rule").solve(puzzle, "猫").rule == "largest gap (uncalibrated)"
    fit_selector(scores, answers, "another model", "synthetic").save(tmp_path / "other.json")
    with pytest.raises(ClipMatchError, match="other.json: calibrated for model another mod"):
        GridSolver(bundle, selector=tmp_path / "other.json")


def test_eval_grid_fits_a_selector_into_the_bundle_and_reports_with_it(tmp_path, capsys):
    from clip_match import cli
    from clip_match.runtime.bundle import packaged_bundle_path
    from datasets.emoji.glyphs import EmojiSet
    from datasets.emoji.puzzles import write_puzzles

    bundle = tmp_path / "bundle"
    shutil.copytree(packaged_bundle_path(), bundle)  # a trained model: its answers are mostly the best tiles
    write_puzzles(tmp_path / "valid", 12, seed=1, emoji=EmojiSet())
    puzzles = str(tmp_path / "valid" / "puzzles.jsonl")
    assert cli.main(["eval-grid", puzzles, "--bundle", str(bundle), "--fit-selector", str(bundle / "grid_selector.json"),
                     "--source", "12 puzzles, seed 1"]) == 0
    assert "learned selector (fitted on these puzzles)" in capsys.readouterr().out
    assert Selector.load(bundle / "grid_selector.json").source == "12 puzzles, seed 1"
    assert cli.main(["eval-grid", puzzles, "--bundle", str(bundle), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["k_unknown_rule"] == "learned selector"
    assert cli.main(["eval-grid", puzzles, "--bundle", str(bundle), "--json", "--k-unknown", "rule"]) == 0
    assert json.loads(capsys.readouterr().out)["k_unknown_rule"].startswith("calibrated threshold")
