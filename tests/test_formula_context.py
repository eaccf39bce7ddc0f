"""The formula model's long text context holds end to end: config, tokenizer, training data,
export, index and `clip-match query --latex`. A context cut back to 52 (or the tiny model's 16)
anywhere on that path makes two formulas that differ only at the end embed identically."""
from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
from PIL import Image

from clip_match import cli
from clip_match.model import load_config
from clip_match.formulas.latex import normalize_latex
from clip_match.runtime.tokenizer import normalize_text, tokenize

# Equal for their first ~70 tokens, different in the next ~60: only a context > 70 tells them apart.
PREFIX = "\\sum _ { i = 1 } ^ { n } " + "a _ { i } ^ { 2 } + " * 6
LONG_X, LONG_Y = PREFIX + "x ^ { 3 } - " * 8 + "z", PREFIX + "y _ { 2 } = " * 8 + "w"
CONTEXT = 180


def _tokens(text: str) -> int:
    return int((tokenize([normalize_text(text)], context_length=512) != 0).sum())


@pytest.fixture(scope="module")
def long_bundle(tmp_path_factory):
    """fp32 bundle of the tiny architecture with a 180-token context, random weights."""
    import torch

    from clip_match.export import export_bundle
    from clip_match.model import create_model, save_slim_checkpoint

    config = load_config("tiny", context_length=CONTEXT)
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("long_context")
    checkpoint = save_slim_checkpoint(create_model(config), directory / "tiny180.pt", config)
    return export_bundle(checkpoint, config, directory / "bundle", precisions=("fp32",))


def test_the_test_formulas_need_more_than_52_tokens():
    assert normalize_latex(LONG_X) == LONG_X and normalize_latex(LONG_Y) == LONG_Y  # printed as given
    assert 120 < _tokens(LONG_X) < CONTEXT and _tokens(LONG_X) == _tokens(LONG_Y)


def test_formula_config_context_covers_99_percent_of_im2latex():
    from datasets.formulas.sources import load_im2latex, missing_data_reason
    from clip_match.formulas.evaluate import unique_formulas

    if missing_data_reason():
        pytest.skip(missing_data_reason())
    config = load_config("formula160")
    lengths = (tokenize([normalize_text(f.latex) for f in unique_formulas(load_im2latex())], 512) != 0).sum(axis=1)
    assert np.mean(lengths <= config.context_length) >= 0.99


def test_training_texts_keep_the_long_context():
    from clip_match.train.data import encode_texts

    tokens = encode_texts([LONG_X, LONG_Y], load_config("formula160").context_length)
    assert tokens.shape[1] <= CONTEXT and int((tokens[0] != 0).sum()) == _tokens(LONG_X) > 52  # padding columns trimmed
    assert not tokens[0].equal(tokens[1])


def test_bundle_encoder_index_and_query_keep_the_long_context(long_bundle, tiny_bundle, tmp_path, capsys):
    from clip_match import Encoder

    encoder = Encoder.load(long_bundle, device="cpu")
    assert encoder.context_length == CONTEXT
    assert json.loads((long_bundle / "clip_match.json").read_text())["context_length"] == CONTEXT
    x, y = encoder.encode_texts([LONG_X, LONG_Y])
    assert np.abs(x - y).max() > 1e-4  # the tails reached the text tower
    short_x, short_y = Encoder.load(tiny_bundle, device="cpu").encode_texts([LONG_X, LONG_Y])
    assert np.array_equal(short_x, short_y)  # a 16-token model cannot tell them apart

    candidates = tmp_path / "bank.jsonl"
    rows = [{"id": "long_x", "text": LONG_X}, {"id": "long_y", "text": LONG_Y}, {"id": "short", "text": "x ^ { 2 }"}]
    candidates.write_text("".join(json.dumps(row) + "\n" for row in rows))
    index = tmp_path / "index"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a truncation warning would fail here
        assert cli.main(["index", "build", "--candidates", str(candidates), "--out", str(index), "--latex",
                         "--bundle", str(long_bundle)]) == 0
    capsys.readouterr()
    image = tmp_path / "formula.png"
    Image.new("RGB", (300, 40), "white").save(image)
    assert cli.main(["query", "--image", str(image), "--index", str(index), "--bundle", str(long_bundle),
                     "--top-k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    texts = {hit["text"]: hit["score"] for hit in result["results"]}
    assert set(texts) == {LONG_X, LONG_Y, "x ^ { 2 }"}
    image_vector = encoder.encode_images(image)[0]
    for text, vector in ((LONG_X, x), (LONG_Y, y)):  # the index holds the full-context embeddings
        assert texts[text] == pytest.approx(float(image_vector @ vector), abs=1e-6)
    assert abs(texts[LONG_X] - texts[LONG_Y]) > 1e-4
