"""The packaged formula model: `--bundle formula` resolves to it, and it answers formula images in fonts it
never trained on, through `clip-match index build --render` and `clip-match query` as a user runs them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from clip_match import cli
from clip_match.errors import ClipMatchError
from clip_match.formulas.render_tex import tex_available
from clip_match.runtime.bundle import PACKAGED_BUNDLES, Bundle, packaged_bundle_path, packaged_bundle_with
from clip_match.runtime.encoder import Encoder

QUERIES = Path(__file__).parent / "data" / "formula_queries"  # made by RESULTS.md's fixture step; see queries.json


def test_formula_is_a_packaged_bundle_name(tmp_path, monkeypatch):
    bundle = Bundle.load("formula")
    assert bundle.path == packaged_bundle_path("formula") and bundle.path.name == PACKAGED_BUNDLES["formula"]
    framing = bundle.framing
    assert framing is not None and framing.flatten and framing.fold  # formula preprocessing
    assert packaged_bundle_with(bundle.fingerprint) == "formula"
    assert packaged_bundle_with(Bundle.load("demo").fingerprint) == "demo" and packaged_bundle_with("0" * 64) is None
    assert Encoder.load("formula", device="cpu").fingerprint == bundle.fingerprint
    size = sum(path.stat().st_size for path in bundle.path.iterdir())
    assert size <= 30 * 2**20
    with pytest.raises(ClipMatchError, match="no packaged bundle called 'emoji'"):
        packaged_bundle_path("emoji")
    monkeypatch.chdir(tmp_path)  # a directory of that name in the working directory wins over the packaged one
    (tmp_path / "formula").mkdir()
    with pytest.raises(ClipMatchError, match="formula"):
        Bundle.load("formula")


@pytest.mark.skipif(not tex_available(), reason="latex/dvipng not installed (datasets/formulas/install_tex.sh)")
def test_the_packaged_formula_model_finds_formulas_typeset_in_fonts_it_never_saw(tmp_path, capsys):
    queries = json.loads((QUERIES / "queries.json").read_text(encoding="utf-8"))
    assert {query["font"] for query in queries} == {"tex:stix2", "mathtext:dejavusans"}
    index = tmp_path / "formulas.idx"
    assert cli.main(["index", "build", "--bundle", "formula", "--latex", "--candidates", str(QUERIES / "candidates.txt"),
                     "--render", "5", "--out", str(index)]) == 0
    capsys.readouterr()
    # No --bundle: the index was built with the packaged formula model, which answers it.
    assert cli.main(["query", "--index", str(index), "--latex", "--top-k", "1", "--json",
                     "--image", *[str(QUERIES / query["image"]) for query in queries]]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    found = {answer["image"]: answer["results"][0]["text"] for answer in answers}
    wrong = [query for query in queries if found[str(QUERIES / query["image"])] != query["formula"]]
    assert not wrong, wrong
