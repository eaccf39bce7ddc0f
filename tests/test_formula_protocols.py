"""The open/bank formula protocols: seeded splits by formula, written datasets, and the query-leak checks."""
from __future__ import annotations

import base64
import hashlib
import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from clip_match.data.formats import read_jsonl, read_tsv
from clip_match.errors import ClipMatchError
from clip_match.formulas.evaluate import (
    REAL_TRAIN_ID_OFFSET, RENDER_ID_OFFSET, Formula, QueryLeakError, bank_protocol, check_no_query_images,
    open_protocol, split_by_formula, unique_formulas,
)
from datasets.formulas import build
from datasets.formulas.sources import ENV_VAR, load_crohme, load_im2latex, missing_data_reason

# Simple formulas that both renderers draw; line 5 repeats line 0 with other spacing (one formula).
FORMULAS = [r"x ^ { 2 }", r"a + b", r"\frac { 1 } { n }", r"\alpha _ { i }", r"y = m x + c", r"x^{2}",
            r"\sqrt { 2 }", r"e ^ { i \pi } = - 1", r"\sum _ { i } a _ { i }", r"p \leq q", r"f ( x )",
            r"\beta ^ { 3 }"]
CROHME = [r"x ^ { 2 }", r"\sqrt { 2 }", r"z _ { 0 }", r"a + b"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A miniature ../shared/data: IM2LaTeX-style images + formulas, and CROHME captions."""
    root = tmp_path_factory.mktemp("shared_data")
    (root / "im2latex" / "val").mkdir(parents=True)
    for n in range(len(FORMULAS)):
        Image.new("RGB", (120 + n, 40), (255, 255 - n, 255)).save(root / "im2latex" / "val" / f"{n}.png")
    (root / "im2latex" / "val.formulas.norm.txt").write_text("\n".join(FORMULAS) + "\n")
    (root / "im2latex" / "val.matching.txt").write_text("".join(f"{n}.png {n}\n" for n in range(len(FORMULAS))))
    (root / "formulas").mkdir()
    (root / "formulas" / "crohme_train_captions.txt").write_text("\n".join(CROHME) + "\n")
    return root


def test_split_by_formula_is_seeded_disjoint_and_complete():
    formulas = [Formula(i, f"x _ {{ {i} }}") for i in range(101)]
    first, second = split_by_formula(formulas, seed=3)
    assert (first, second) == split_by_formula(list(reversed(formulas)), seed=3)  # input order does not matter
    assert split_by_formula(formulas, seed=4) != (first, second)
    assert len(first) == 50 and len(second) == 51
    assert {f.fid for f in first}.isdisjoint(f.fid for f in second)
    assert {f.fid for f in first} | {f.fid for f in second} == set(range(101))


def test_formulas_equal_after_normalisation_are_one_formula(data_dir):
    formulas = unique_formulas(load_im2latex(data_dir))
    assert len(formulas) == len(FORMULAS) - 1
    (square,) = [f for f in formulas if f.fid == 0]
    assert square.latex == "x ^ { 2 }" and [p.name for p in square.images] == ["0.png", "5.png"]


def test_formulas_keep_the_latex_their_source_wrote_for_rendering():
    (formula,) = unique_formulas([Formula(4, r"\left( a \, b \right) ^ { 2 }"), Formula(9, r"( a b ) ^ { 2 }")])
    assert formula.fid == 4 and formula.latex == "( a b ) ^ { 2 }"  # the identity: normalised
    assert formula.render_latex == r"\left( a \, b \right) ^ { 2 }"  # the first source, as written
    assert Formula(1, "x").render_latex == "x"
    protocol = bank_protocol([replace(formula, images=(Path("q.png"),))], bank_size=1)
    assert protocol.train[0].render_latex == formula.render_latex and not protocol.train[0].images


def test_dev_bank_lies_outside_the_reported_bank():
    formulas = [Formula(i, f"x _ {{ {i} }}", (Path(f"{i}.png"),)) for i in range(50)]
    reported = bank_protocol(formulas, bank_size=20, seed=3)
    dev = bank_protocol(formulas, bank_size=10, seed=3, outside=20)
    assert len(dev.queries) == 10 and dev.notes == {"outside_bank_of": 20}
    assert {f.fid for f in dev.queries}.isdisjoint(f.fid for f in reported.queries)
    assert dev == bank_protocol(list(reversed(formulas)), bank_size=10, seed=3, outside=20)
    with pytest.raises(ClipMatchError, match="larger than the 30 distinct formulas available outside the 20"):
        bank_protocol(formulas, bank_size=31, seed=3, outside=20)


def test_open_protocol_keeps_query_formulas_out_of_training(data_dir):
    protocol = open_protocol(load_im2latex(data_dir), load_crohme(data_dir), seed=1)
    train, queries = {f.latex for f in protocol.train}, {f.latex for f in protocol.queries}
    assert train.isdisjoint(queries)
    assert all(not f.images for f in protocol.train)  # training formulas carry no real images
    assert "z _ { 0 }" in train  # CROHME-only formula added
    crohme_in_queries = sum(c in queries for c in {"x ^ { 2 }", "\\sqrt { 2 }", "a + b"})
    assert protocol.notes["extra_dropped_equal_to_a_query"] == crohme_in_queries
    distinct = len(FORMULAS) - 1
    assert len(protocol.queries) == distinct - round(distinct / 2)
    with pytest.raises(QueryLeakError):
        type(protocol)("open", 0, protocol.queries[:1], protocol.queries)


def test_bank_protocol_trains_on_renders_of_the_bank(data_dir):
    protocol = bank_protocol(load_im2latex(data_dir), bank_size=6, seed=0)
    assert len(protocol.queries) == 6
    assert [f.latex for f in protocol.train] == [f.latex for f in protocol.queries]
    assert all(not f.images for f in protocol.train) and all(f.images for f in protocol.queries)
    with pytest.raises(ClipMatchError, match="bank size 99"):
        bank_protocol(load_im2latex(data_dir), bank_size=99)


def _build(kind: str, out: Path, data_dir: Path, *extra: str) -> int:
    return build.main([kind, str(out), "--data-dir", str(data_dir), "--renderer", "mathtext", "--dpi", "60",
                       "--renders", "2", "--valid-size", "3", "--workers", "1", "--no-progress", *extra])


@pytest.fixture(scope="module")
def open_dir(data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("built") / "open"
    assert _build("open", out, data_dir, "--seed", "1") == 0
    return out


def test_open_build_writes_readable_splits(open_dir, data_dir):
    manifest = json.loads((open_dir / "formulas.json").read_text())
    protocol = open_protocol(load_im2latex(data_dir), load_crohme(data_dir), seed=1)
    train = list(read_jsonl(open_dir / "train_texts.jsonl"))
    assert [t.text_id for t in train] == [f.fid for f in protocol.train]
    assert all(len(t.image_ids) == 2 for t in train)
    train_images = list(read_tsv(open_dir / "train_imgs.tsv"))
    assert [i.image_id for i in train_images] == [RENDER_ID_OFFSET + n for n in range(2 * len(train))]
    assert len(list(read_tsv(open_dir / "valid_imgs.tsv"))) == 3
    # The test split holds the real query images byte for byte, each linked to its own formula.
    tests = {t.text_id: t for t in read_jsonl(open_dir / "test_texts.jsonl")}
    images = {i.image_id: base64.b64decode(i.b64) for i in read_tsv(open_dir / "test_imgs.tsv")}
    assert sorted(tests) == [f.fid for f in protocol.queries]
    for formula in protocol.queries:
        linked = {images[i] for i in tests[formula.fid].image_ids}
        assert linked == {path.read_bytes() for path in formula.images}
    assert manifest["counts"]["query_images"] == len(images)
    assert manifest["leak_check"] == {"train": len(train_images), "valid": 3}
    assert manifest["protocol"]["query_fids"] == sorted(tests)


def test_leak_check_catches_a_real_query_image_in_training(open_dir, data_dir, tmp_path):
    protocol = open_protocol(load_im2latex(data_dir), load_crohme(data_dir), seed=1)
    real = protocol.queries[0].images[0].read_bytes()
    for image_id, error in [(RENDER_ID_OFFSET + 999, "is the real query image"), (3, "in the query images. id range")]:
        leaky = tmp_path / str(image_id)
        leaky.mkdir()
        for name in ("train_texts.jsonl", "valid_imgs.tsv", "valid_texts.jsonl"):
            (leaky / name).write_bytes((open_dir / name).read_bytes())
        line = f"{image_id}\t{base64.b64encode(real).decode()}\n"
        (leaky / "train_imgs.tsv").write_text((open_dir / "train_imgs.tsv").read_text() + line)
        with pytest.raises(QueryLeakError, match=error):
            check_no_query_images(leaky, protocol)


def test_leak_check_catches_a_query_formula_trained_on_in_open(open_dir, data_dir, tmp_path):
    protocol = open_protocol(load_im2latex(data_dir), load_crohme(data_dir), seed=1)
    for name in ("train_imgs.tsv", "valid_imgs.tsv", "valid_texts.jsonl"):
        (tmp_path / name).write_bytes((open_dir / name).read_bytes())
    query = protocol.queries[0]
    lines = (open_dir / "train_texts.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    lines[0] = json.dumps({"text_id": 424242, "text": query.latex, "image_ids": first["image_ids"]})
    (tmp_path / "train_texts.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(QueryLeakError, match="open protocol trains on query formula"):
        check_no_query_images(tmp_path, protocol)
    assert check_no_query_images(open_dir, protocol)["train"] > 0


def test_bank_build_and_render_build(data_dir, tmp_path):
    assert _build("bank", tmp_path / "bank", data_dir, "--bank-size", "5") == 0
    manifest = json.loads((tmp_path / "bank" / "formulas.json").read_text())
    assert manifest["counts"]["candidates"] == 5 and manifest["protocol"]["train_fids"] == manifest["protocol"]["query_fids"]
    own = tmp_path / "mine.txt"
    own.write_text("a ^ { 2 } + b ^ { 2 }\n\n\\begin{array}{c} x \\\\ \\end{array}\nc\n")
    assert build.main(["render", str(own), str(tmp_path / "mine"), "--renderer", "mathtext", "--dpi", "60",
                       "--renders", "1", "--valid-size", "1", "--workers", "1", "--no-progress"]) == 0
    manifest = json.loads((tmp_path / "mine" / "formulas.json").read_text())
    assert manifest["counts"] == {"formulas": 3, "rendered": 2, "render_failures": 1, "train_images": 2,
                                  "valid_images": 1}
    assert manifest["render_failures"][0]["fid"] == 2 and not (tmp_path / "mine" / "test_imgs.tsv").exists()


def test_real_training_images_come_only_from_formulas_that_are_not_queries(data_dir):
    bank = bank_protocol(load_im2latex(data_dir), bank_size=6, seed=0, real_train=3)
    assert len(bank.real_train) == 3 and all(f.images for f in bank.real_train)
    assert {f.latex for f in bank.real_train}.isdisjoint(f.latex for f in bank.queries)
    assert bank_protocol(load_im2latex(data_dir), bank_size=6, seed=0, real_train=99).real_train == \
        tuple(sorted(set(unique_formulas(load_im2latex(data_dir))) - set(bank.queries), key=lambda f: f.fid))
    opened = open_protocol(load_im2latex(data_dir), load_crohme(data_dir), seed=1, real_train=2)
    assert len(opened.real_train) == 2 and {f.latex for f in opened.real_train} <= {f.latex for f in opened.train}
    with pytest.raises(QueryLeakError, match="real images of 1 query formulas"):
        type(bank)("bank", 0, bank.train, bank.queries, {}, bank.queries[:1])


def test_real_training_images_skip_copies_of_query_images(tmp_path):
    """IM2LaTeX holds byte-identical images under two different formulas: such an image is never trained on."""
    paths = []
    for n in range(8):
        paths.append(tmp_path / f"{n}.png")
        Image.new("L", (40 + n % 4, 20), 255).save(paths[-1])  # images n and n + 4 are the same file
    formulas = [Formula(n, f"x _ {{ {n} }}", (path,)) for n, path in enumerate(paths)]
    protocol = bank_protocol(formulas, bank_size=2, seed=0, real_train=10)
    bank_sizes = {Image.open(path).size for f in protocol.queries for path in f.images}
    expected = [f.fid for f in formulas if f not in protocol.queries and Image.open(f.images[0]).size not in bank_sizes]
    assert [f.fid for f in protocol.real_train] == expected and len(expected) == 4


def test_builds_with_real_training_images(data_dir, tmp_path):
    assert _build("bank", tmp_path / "bank", data_dir, "--bank-size", "5", "--real-train", "2") == 0
    protocol = bank_protocol(load_im2latex(data_dir), bank_size=5, seed=0, real_train=2)
    manifest = json.loads((tmp_path / "bank" / "formulas.json").read_text())
    assert manifest["counts"]["real_train_images"] == 2 == len(manifest["protocol"]["real_train_fids"])
    images = {line.image_id: base64.b64decode(line.b64) for line in read_tsv(tmp_path / "bank" / "train_imgs.tsv")}
    texts = {text.text_id: text for text in read_jsonl(tmp_path / "bank" / "train_texts.jsonl")}
    for formula in protocol.real_train:  # the real files, byte for byte, on their own formula's line
        linked = [images[i] for i in texts[formula.fid].image_ids]
        assert linked == [path.read_bytes() for path in formula.images]
        assert all(i >= REAL_TRAIN_ID_OFFSET for i in texts[formula.fid].image_ids)
    assert manifest["leak_check"]["train"] == len(images) == 2 * 5 + 2

    # A query formula linked to a real training image is refused.
    leaky = tmp_path / "leaky"
    leaky.mkdir()
    for name in ("train_imgs.tsv", "valid_imgs.tsv", "valid_texts.jsonl"):
        (leaky / name).write_bytes((tmp_path / "bank" / name).read_bytes())
    real_id = min(i for i in images if i >= REAL_TRAIN_ID_OFFSET)
    query = protocol.queries[0]
    lines = [json.dumps({"text_id": t.text_id, "text": t.text,
                         "image_ids": [*t.image_ids, real_id] if t.text_id == query.fid else
                         [i for i in t.image_ids if i != real_id]})
             for t in texts.values()]
    (leaky / "train_texts.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(QueryLeakError, match=f"linked to real training image {real_id}"):
        check_no_query_images(leaky, protocol)

    # open: a first-half formula's real images join its renders on one line.
    assert _build("open", tmp_path / "open", data_dir, "--seed", "1", "--real-train", "2") == 0
    opened = open_protocol(load_im2latex(data_dir), load_crohme(data_dir), seed=1, real_train=2)
    texts = {text.text_id: text for text in read_jsonl(tmp_path / "open" / "train_texts.jsonl")}
    for formula in opened.real_train:
        ids = texts[formula.fid].image_ids
        assert len(ids) == 2 + len(formula.images) and ids[-1] >= REAL_TRAIN_ID_OFFSET > ids[0] >= RENDER_ID_OFFSET


def test_candidate_renders_are_fresh_images_of_every_candidate_and_never_trained_on(data_dir, tmp_path):
    out = tmp_path / "open"
    assert _build("open", out, data_dir, "--seed", "1", "--candidate-renders", "2") == 0
    queries = {t.text_id: t.text for t in read_jsonl(out / "test_texts.jsonl")}
    candidates = list(read_jsonl(out / f"{build.CANDIDATE_SPLIT}_texts.jsonl"))
    assert {t.text_id: t.text for t in candidates} == queries  # the same formulas, the same candidate text
    assert all(len(t.image_ids) == 2 for t in candidates)
    digest = lambda split: {hashlib.sha256(base64.b64decode(line.b64)).hexdigest()  # noqa: E731
                            for line in read_tsv(out / f"{split}_imgs.tsv")}
    rendered = digest(build.CANDIDATE_SPLIT)
    assert len(rendered) == 2 * len(candidates)  # every copy differs
    assert rendered.isdisjoint(digest("train") | digest("valid") | digest("test"))
    manifest = json.loads((out / "formulas.json").read_text())
    assert manifest["counts"]["candidate_images"] == 2 * len(candidates)
    assert manifest["candidate_renders_per_formula"] == 2 and manifest["candidate_render_failures"] == []
    # Only the training splits go to the trainer, and they are as without the flag.
    assert _build("open", tmp_path / "plain", data_dir, "--seed", "1") == 0
    for name in ("train_imgs.tsv", "valid_imgs.tsv", "train_texts.jsonl"):
        assert (out / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()
    assert not (tmp_path / "plain" / f"{build.CANDIDATE_SPLIT}_imgs.tsv").exists()


def test_training_fonts_photos_and_held_out_query_splits(data_dir, tmp_path, capsys):
    out = tmp_path / "open"
    assert _build("open", out, data_dir, "--seed", "1", "--fonts", "mathtext:dejavusans,mathtext:cm,mathtext:dejavuserif",
                  "--photo-probability", "0.5", "--query-fonts", "mathtext:stix", "--query-photos") == 0
    manifest = json.loads((out / "formulas.json").read_text())
    assert manifest["fonts"] == ["mathtext:dejavusans", "mathtext:cm", "mathtext:dejavuserif"]
    assert manifest["augment"]["photo_probability"] == 0.5
    digest = lambda split: [hashlib.sha256(base64.b64decode(line.b64)).hexdigest()  # noqa: E731
                            for line in read_tsv(out / f"{split}_imgs.tsv")]
    formats = [Image.open(io.BytesIO(base64.b64decode(line.b64))).format for line in read_tsv(out / "train_imgs.tsv")]
    assert "JPEG" in formats and "PNG" in formats  # photographed or not
    assert digest("train") != digest_of_plain_build(data_dir, tmp_path)  # fonts and photos changed the images
    # Held-out splits: query formulas only (every one the font could typeset); images new, never in training.
    tests = {t.text_id: t.text for t in read_jsonl(out / "test_texts.jsonl")}
    font_split = build.font_split("mathtext:stix")
    assert font_split == "test_font_mathtext_stix"
    assert {t.text_id: t.text for t in read_jsonl(out / f"{build.PHOTO_SPLIT}_texts.jsonl")} == tests
    assert {t.text_id: t.text for t in read_jsonl(out / f"{font_split}_texts.jsonl")}.items() <= tests.items()
    for split in (font_split, build.PHOTO_SPLIT):
        assert set(digest(split)).isdisjoint(digest("train") + digest("valid") + digest("test"))
    photos = list(read_tsv(out / f"{build.PHOTO_SPLIT}_imgs.tsv"))
    assert [p.image_id for p in photos] == [i.image_id for i in read_tsv(out / "test_imgs.tsv")]
    assert all(Image.open(io.BytesIO(base64.b64decode(p.b64))).format == "JPEG" for p in photos)
    failed = manifest["query_font_render_failures"]["mathtext:stix"]
    assert manifest["counts"][font_split] == len(tests) - failed and manifest["counts"][build.PHOTO_SPLIT] == len(photos)

    # A held-out font the model trains in, an unknown font, a photo share outside 0-1: refused, nothing written.
    bad = tmp_path / "bad"
    assert _build("open", bad, data_dir, "--fonts", "mathtext:cm", "--query-fonts", "mathtext:cm") == 2
    assert "the model trains in this font" in capsys.readouterr().err and not bad.exists()
    with pytest.raises(SystemExit):
        _build("open", bad, data_dir, "--fonts", "tex:comic")
    assert "'tex:comic': unknown tex font" in capsys.readouterr().err
    assert _build("open", bad, data_dir, "--photo-probability", "1.5") == 2
    assert "--photo-probability must be between 0 and 1" in capsys.readouterr().err and not bad.exists()
    assert _build("open", bad, data_dir, "--jpeg-probability", "-0.1") == 2
    assert "--jpeg-probability must be between 0 and 1" in capsys.readouterr().err and not bad.exists()


def digest_of_plain_build(data_dir: Path, tmp_path: Path) -> list[str]:
    plain = tmp_path / "plain"
    assert _build("open", plain, data_dir, "--seed", "1") == 0
    return [hashlib.sha256(base64.b64decode(line.b64)).hexdigest() for line in read_tsv(plain / "train_imgs.tsv")]


def test_data_dir_comes_from_the_environment(data_dir, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(data_dir))
    assert missing_data_reason() is None and len(load_im2latex()) == len(FORMULAS)
    monkeypatch.setenv(ENV_VAR, str(data_dir / "nowhere"))
    assert ENV_VAR in missing_data_reason() and str(data_dir / "nowhere" / "im2latex") in missing_data_reason()


def test_bad_input_fails_cleanly_and_writes_nothing(data_dir, tmp_path, capsys):
    assert _build("open", tmp_path / "out", tmp_path / "nowhere") == 2
    assert "formula data not found" in capsys.readouterr().err and not (tmp_path / "out").exists()

    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"x ^ { 2 }\n\xff\xfe\n")
    assert build.main(["render", str(bad), str(tmp_path / "out"), "--no-progress"]) == 2
    assert f"{bad}: not UTF-8" in capsys.readouterr().err and not (tmp_path / "out").exists()

    arrays = tmp_path / "arrays.txt"
    arrays.write_text("\\begin{array}{c} x \\\\ \\end{array}\n")
    assert build.main(["render", str(arrays), str(tmp_path / "out"), "--renderer", "mathtext", "--no-progress"]) == 2
    assert "none of the 1 formulas rendered" in capsys.readouterr().err and not (tmp_path / "out").exists()

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    assert _build("open", existing, data_dir) == 2
    assert "already exists" in capsys.readouterr().err and (existing / "keep.txt").read_text() == "mine"

    matching = tmp_path / "broken" / "im2latex"
    matching.mkdir(parents=True)
    for name in ("val.formulas.norm.txt", "val"):
        (matching / name).symlink_to(data_dir / "im2latex" / name)
    (matching / "val.matching.txt").write_text("0.png 0\n1.png x\n")
    assert _build("open", tmp_path / "out", matching.parent) == 2
    assert f"{matching / 'val.matching.txt'}:2: expected" in capsys.readouterr().err


real_data = pytest.mark.skipif(missing_data_reason() is not None, reason=f"IM2LaTeX/CROHME data absent: "
                               f"{missing_data_reason()}")


@pytest.mark.slow
@real_data
def test_real_im2latex_split_is_disjoint_and_covers_every_image():
    formulas = load_im2latex()
    assert sum(len(f.images) for f in formulas) == 8475
    protocol = open_protocol(formulas, load_crohme(), seed=0)
    distinct = unique_formulas(formulas)
    queries = {f.latex for f in protocol.queries}
    assert queries.isdisjoint(f.latex for f in protocol.train)
    im2latex_train = [f for f in protocol.train if f.fid < 1_000_000]
    assert len(im2latex_train) + len(protocol.queries) == len(distinct)
    assert abs(len(im2latex_train) - len(protocol.queries)) <= 1
    hashes = {hashlib.sha256(p.read_bytes()).hexdigest() for _, p, _ in protocol.query_images()}
    assert len(hashes) >= len(protocol.query_images()) - 5  # real query images are distinct files
