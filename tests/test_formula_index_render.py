"""`clip-match index build|add --latex --render N`: renders made at index time, their cache, their bad inputs."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from clip_match import cli
from clip_match.errors import ClipMatchError
from clip_match.formulas.render import Rendered, get_renderer
from clip_match.formulas.render_cache import RenderCache, TypesetCounts, typeset
from clip_match.formulas.render_mathtext import mathtext_available
from clip_match.formulas.render_tex import tex_available
from clip_match.formulas.variants import variants
from clip_match.index.candidates import Candidate, candidate_key
from clip_match.index.label_index import LabelIndex
from clip_match.index.renders import render_examples
from clip_match.query import Matcher

FORMULAS = [r"E = m c ^ { 2 }", r"\frac { a } { b } + c", r"\int _ { 0 } ^ { 1 } f ( x ) d x",
            r"\sum _ { i = 1 } ^ { n } i ^ { 2 }"]
BROKEN = r"\undefinedcommand x"  # neither renderer can typeset it
RENDERERS = [pytest.param("tex", marks=pytest.mark.skipif(not tex_available(), reason="latex/dvipng not installed")),
             pytest.param("mathtext", marks=pytest.mark.skipif(not mathtext_available(),
                                                               reason="matplotlib not installed")),
             pytest.param("auto", marks=pytest.mark.skipif(not (tex_available() and mathtext_available()),
                                                           reason="needs both TeX Live and matplotlib"))]
NAMES = {"tex": "TeX Live (latex + dvipng)", "mathtext": "matplotlib's mathtext (Computer Modern)"}
AVAILABLE = "tex" if tex_available() else "mathtext"


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def query_image(formula: str, renderer: str) -> Image.Image:
    """``formula`` typeset smaller than the index's renders, on a canvas with uneven margins."""
    (rendered,) = get_renderer(renderer, dpi=90)([formula])
    canvas = Image.new("L", (rendered.image.width + 37, rendered.image.height + 14), 255)
    canvas.paste(rendered.image, (5, 4))
    return canvas


def build(tiny_bundle, candidates, out, *options):
    return cli.main(["index", "build", "--bundle", str(tiny_bundle), "--precision", "fp32", "--candidates",
                     candidates, "--latex", "--out", str(out), *options])


def add(tiny_bundle, candidates, index, *options):
    return cli.main(["index", "add", "--bundle", str(tiny_bundle), "--precision", "fp32", "--candidates", candidates,
                     "--index", str(index), *options])


def last_run(index) -> dict:
    return json.loads((index / "render_report.json").read_text())["runs"][-1]


@pytest.mark.parametrize("renderer", RENDERERS)
def test_build_renders_every_candidate_and_finds_typeset_queries(renderer, tiny_bundle, tmp_path, capsys):
    candidates = write_lines(tmp_path / "formulas.txt", [*FORMULAS, BROKEN])
    with pytest.warns(UserWarning) as caught:
        assert build(tiny_bundle, candidates, tmp_path / "idx", "--render", "3", "--renderer", renderer) == 0
    warned = " ".join(str(warning.message) for warning in caught)
    assert "no formula preprocessing (no trim_margin" in warned  # the tiny bundle is no formula model
    assert "1 of 5 candidate(s) have no example images" in warned
    captured = capsys.readouterr()
    engines = ["tex", "mathtext"] if renderer == "auto" else [renderer]  # auto: each installed one
    which = " and ".join(NAMES[engine] for engine in engines)
    cache = tmp_path / "idx.render-cache"
    assert f"rendering 3 copies of each new candidate with {which}; cache {cache}" in captured.err
    assert "5 candidates, dim" in captured.out and "text weight 0, layout weight 0.75" in captured.out
    by = ", ".join(f"{engine} 4" for engine in engines)
    assert f"rendered 4 of 5 new candidates ({by}), 3 copies by each renderer" in captured.out
    assert "1 could not be typeset and keep their text only" in captured.out

    report = json.loads((tmp_path / "idx" / "render_report.json").read_text())
    assert (report["renderer"], report["renders_per_candidate"], report["failed_count"]) == (renderer, 3, 1)
    assert report["failed"][0]["id"] == BROKEN and report["failed"][0]["error"]
    index = LabelIndex.load(tmp_path / "idx")
    assert (index.text_weight, index.layout_weight, len(index)) == (0.0, 0.75, 5)

    matcher = Matcher(str(tiny_bundle), index, precision="fp32")
    for engine in engines:  # (typeset smaller, by each engine, in the index's fonts)
        font = {"tex": "tex", "mathtext": "mathtext:cm"}[engine]
        rankings = matcher.rank([query_image(formula, font) for formula in FORMULAS], top_k=1)
        assert [ranking.hits[0].text for ranking in rankings] == FORMULAS


def test_render_cache_is_reused_and_index_add_typesets_only_new_candidates(tiny_bundle, tmp_path, capsys):
    first = write_lines(tmp_path / "first.txt", FORMULAS[:3])
    index = tmp_path / "idx"
    assert build(tiny_bundle, first, index, "--render", "2", "--renderer", AVAILABLE) == 0
    assert (last_run(index)["typeset"], last_run(index)["from_cache"]) == (3, 0)
    cache = tmp_path / "idx.render-cache"
    assert len(list(cache.glob("*/*.png"))) == 3

    more = write_lines(tmp_path / "more.txt", [FORMULAS[0], FORMULAS[3], BROKEN])
    assert add(tiny_bundle, more, index) == 0  # renders as the index was built (2 copies, same renderer)
    assert "added 2, now 5 candidates" in capsys.readouterr().out
    run = last_run(index)
    assert (run["action"], run["renders_per_candidate"], run["candidates"], run["typeset"]) == ("add", 2, 2, 2)
    report = json.loads((index / "render_report.json").read_text())
    assert [failure["id"] for failure in report["failed"]] == [BROKEN] and len(report["runs"]) == 2
    assert len(list(cache.glob("*/*.png"))) == 4 and len(list(cache.glob("*/*.failed"))) == 1

    everything = write_lines(tmp_path / "all.txt", [*FORMULAS, BROKEN])
    assert build(tiny_bundle, everything, index, "--render", "2", "--renderer", AVAILABLE, "--overwrite") == 0
    assert (last_run(index)["typeset"], last_run(index)["from_cache"]) == (0, 5)  # the failure is remembered too
    assert "typeset now 0, from the cache 5" in capsys.readouterr().out

    assert add(tiny_bundle, more, index, "--render", "0") == 2  # a layout index needs the new ones' examples
    assert "--examples, or --render N" in capsys.readouterr().err


class CountingRenderer:
    """Renders anything without "bad" in it as a small black box; counts the formulas it is given."""

    def __init__(self, name: str):
        self.name, self.settings, self.seen = name, {"renderer": name}, []

    def __call__(self, formulas):
        self.seen += formulas
        return [Rendered(None, f"{self.name}: no") if "bad" in f else Rendered(Image.new("L", (len(f), 5), 0))
                for f in formulas]


def test_typeset_tries_each_text_in_turn_and_caches_both_outcomes(tmp_path):
    renderer = CountingRenderer("first")
    cache, counts = RenderCache(tmp_path), TypesetCounts()
    formulas = [["ok"], ["bad source", "normalised"], ["bad", "bad too"]]
    results = typeset(formulas, renderer, cache, counts)
    assert [r.image.width if r.image else None for r in results] == [2, 10, None]
    assert results[2].errors == ("first: no", "first: no")
    assert (counts.typeset, counts.from_cache) == (5, 0)
    again = TypesetCounts()
    assert [r.key for r in typeset(formulas, renderer, cache, again)] == [r.key for r in results]
    assert (again.typeset, again.from_cache) == (0, 5) and len(renderer.seen) == 5


def test_each_renderer_gives_every_candidate_its_copies(tmp_path):
    """With TeX and mathtext both, a candidate's examples are both engines' renders; a formula that
    only one can typeset has that one's, and only one that neither can is a failure."""
    def renderer(name: str, refuses: str):
        def render(formulas):
            return [Rendered(None, f"{name}: no") if set(refuses) & set(f) else Rendered(Image.new("L", (9, 5), 0))
                    for f in formulas]
        render.name, render.settings = name, {"renderer": name}
        return render

    candidates = [Candidate("a", "x ^ { 2 }"), Candidate("b", "y"), Candidate("c", "z")]
    encoder = CountingEncoder()
    examples, run, failed = render_examples(encoder, candidates, 2, [renderer("first", "z"), renderer("second", "yz")],
                                            tmp_path, "build", layouts=False, progress=False)
    assert run.rendered == {"first": 2, "second": 1} and run.renderers == ["first", "second"]
    assert [failure["id"] for failure in failed] == ["c"] and failed[0]["error"] == "first: no; second: no"
    assert set(examples.prototypes) == {candidate_key(c.text, latex=True) for c in candidates[:2]}
    assert encoder.images == 2 * 3


class CountingEncoder:
    embed_dim = 4

    def __init__(self):
        self.images = 0

    def encode_images(self, items, batch_size=64):
        self.images += len(items)
        return np.ones((len(items), self.embed_dim), np.float32)


def test_the_copies_of_a_render_differ_and_are_seeded():
    render = Image.new("L", (200, 50), 255)
    render.paste(0, (10, 10, 190, 40))
    copies = variants(render, seed=7, copies=4)
    assert len({image.size for image in copies}) == 4 and all(image.mode == "L" for image in copies)
    again = variants(render, seed=7, copies=4)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(copies, again))
    assert not np.array_equal(np.asarray(copies[0]), np.asarray(variants(render, seed=8, copies=1)[0]))


def test_render_without_any_renderer_says_what_to_install(tiny_bundle, tmp_path, monkeypatch, capsys):
    candidates = write_lines(tmp_path / "formulas.txt", FORMULAS)
    monkeypatch.setenv("PATH", str(tmp_path))  # no latex, no dvipng
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # no matplotlib
    assert build(tiny_bundle, candidates, tmp_path / "idx", "--render", "2") == 2
    error = capsys.readouterr().err
    assert "bash datasets/formulas/install_tex.sh" in error and "matplotlib (pip install matplotlib)" in error
    assert build(tiny_bundle, candidates, tmp_path / "idx", "--render", "2", "--renderer", "tex") == 2
    assert "latex/dvipng not found: install TeX Live (bash datasets/formulas/install_tex.sh)" in capsys.readouterr().err
    assert build(tiny_bundle, candidates, tmp_path / "idx", "--render", "2", "--renderer", "mathtext") == 2
    assert "matplotlib is not installed: pip install matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "idx").exists()


def test_render_options_that_do_not_go_together(tiny_bundle, tmp_path, capsys):
    candidates = write_lines(tmp_path / "formulas.txt", FORMULAS)
    out = tmp_path / "idx"
    plain = ["index", "build", "--bundle", str(tiny_bundle), "--candidates", candidates, "--out", str(out)]
    for options, message in (
            ([*plain, "--render", "2"], "--render typesets LaTeX: it needs a --latex index"),
            ([*plain, "--latex", "--render", "-1"], "--render must be 0 (no renders) or more"),
            ([*plain, "--latex", "--renderer", "tex"], "--renderer and --render-cache go with --render N"),
            ([*plain, "--latex", "--render", "2", "--examples", str(tmp_path)], "give --render or --examples"),
            ([*plain, "--latex", "--render", "2", "--render-cache", str(out / "cache")],
             "is inside the index directory"),
    ):
        assert cli.main(options) == 2, options
        assert message in capsys.readouterr().err
    assert not out.exists()
    write_lines(tmp_path / "broken.txt", [BROKEN])
    assert build(tiny_bundle, str(tmp_path / "broken.txt"), out, "--render", "1", "--renderer", AVAILABLE) == 2
    assert "none of the 1 candidates could be typeset; the first: '\\\\undefinedcommand x'" in capsys.readouterr().err


def test_a_blank_query_image_is_an_error_naming_it(tiny_bundle, tmp_path, capsys):
    candidates = write_lines(tmp_path / "formulas.txt", FORMULAS[:2])
    assert build(tiny_bundle, candidates, tmp_path / "idx", "--render", "1", "--renderer", AVAILABLE) == 0
    query_image(FORMULAS[1], AVAILABLE).save(tmp_path / "formula.png")
    Image.new("RGB", (120, 40), "white").save(tmp_path / "blank.png")
    capsys.readouterr()
    assert cli.main(["query", "--bundle", str(tiny_bundle), "--precision", "fp32", "--index", str(tmp_path / "idx"),
                     "--image", str(tmp_path / "blank.png"), str(tmp_path / "formula.png"), "--top-k", "1"]) == 1
    captured = capsys.readouterr()
    assert f"{tmp_path / 'blank.png'}: no ink (a blank image)" in captured.err
    assert "\\frac { a } { b } + c" in captured.out  # the other image is answered
    matcher = Matcher(str(tiny_bundle), str(tmp_path / "idx"), precision="fp32")
    with pytest.raises(ClipMatchError, match=r"blank.png: no ink"):
        matcher.rank([str(tmp_path / "formula.png"), str(tmp_path / "blank.png")])
