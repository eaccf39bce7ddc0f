"""The torch-free tokenizer returns exactly what cn_clip.clip.tokenize returns."""
from __future__ import annotations

import functools
import hashlib
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from clip_match.errors import ClipMatchError
from clip_match.runtime.tokenizer import VOCAB_PATH, Tokenizer, normalize_text, tokenize

CONTEXT_LENGTHS = (2, 16, 52, 77, 150)
NUM_RANDOM_TEXTS = 10_500

_WORDS = "a cat dog The QUICK brown Fox jumps over lazy dogs unaffable tokenization Hello World CLIP x y z".split()
_LATEX = (
    r"\frac{a}{b}", r"x^{2}+y_{i}", r"\sum_{i=1}^{n} i^2", r"\alpha\beta\gamma", r"\sqrt[3]{x}",
    r"\begin{matrix} 1 & 2 \\ 3 & 4 \end{matrix}", r"\int_0^\infty e^{-x}\,dx", r"\left( \mathbf{v} \right)",
    r"a \leq b \neq c", r"\{ x \mid x > 0 \}", "$E = mc^2$", r"\operatorname{sin} \theta", "~ # % & _ ^ ` | @",
)
_EMOJI = (
    "😀", "🐱", "☂️", "☔", "🌂", "👍🏽", "👨\u200d👩\u200d👧", "🇨🇳", "1️⃣", "🏳️\u200d🌈", "🤖", "❤", "✨", "🀄", "©", "™",
)
_FULL_WIDTH = "，。！？：；（）【】《》「」『』、…—～￥＂＇＃＄％＆＊＋－／＜＝＞＠＼＾＿｀｛｜｝\u3000・·"
_CONTROL = (
    "\x00", "\x01", "\x07", "\x1b", "\x7f", "\x85", "\u200b", "\u200c", "\u200d", "\u200e", "\ufeff", "\ufffd",
    "\u2028", "\u2029", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\xa0", "\u3000", "\u2009", "\u00ad", "\U000e0001",
)
_ACCENTED = (
    "café", "naïve", "Ångström", "e\u0301", "Ñandú", "Việt Nam", "Straße", "İstanbul", "ǅ", "ΣΊΣΥΦΟΣ", "ﬁne",
    "a\u0300\u0301\u0302", "\u0301", "Ǆemal", "ÆØÅ", "ḱṷṓn",
)
_OTHER_SCRIPTS = (
    "ひらがな", "カタカナ", "ｶﾀｶﾅ", "한국어", "مرحبا", "שלום", "สวัสดี", "नमस्ते", "Привет", "Ελληνικά", "ᠮᠣᠩᠭᠣᠯ", "ཀཁག",
)
_CHINESE = ("一只猫", "可爱的小狗", "天安门广场", "红色的苹果", "机器学习", "雨伞", "中文分词", "图片", "百度", "北京欢迎你")
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _fragment(rng: random.Random) -> str:
    kind = rng.randrange(13)
    if kind == 0:
        low, high = rng.choice(_CJK_RANGES) if rng.random() < 0.3 else (0x4E00, 0x9FFF)
        return "".join(chr(rng.randint(low, high)) for _ in range(rng.randint(1, 12)))
    if kind == 1:
        return rng.choice(_CHINESE)
    if kind == 2:
        return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 6)))
    if kind == 3:
        return "".join(chr(rng.randint(0x21, 0x7E)) for _ in range(rng.randint(1, 20)))
    if kind == 4:
        return rng.choice(_LATEX)
    if kind == 5:
        return "".join(rng.choice(_EMOJI) for _ in range(rng.randint(1, 4)))
    if kind == 6:
        return "".join(rng.choice(_FULL_WIDTH + "ＡＢＣｘｙｚ０１２３") for _ in range(rng.randint(1, 6)))
    if kind == 7:
        return rng.choice(_CONTROL) * rng.randint(1, 3)
    if kind == 8:
        return rng.choice(_ACCENTED)
    if kind == 9:
        return rng.choice(_OTHER_SCRIPTS)
    if kind == 10:  # any code point, surrogates and unassigned ones included
        return "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randint(1, 5)))
    if kind == 11:  # long unspaced words: many word pieces
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(10, 60)))
    return f"{rng.randint(0, 10**6)}{rng.choice(['', '.', ',', '%', 'km', '年'])}{rng.randint(0, 99)}"


def _random_text(rng: random.Random) -> str:
    separators = ("", " ", "  ", "\t", "\u3000", "\n")
    pieces = [_fragment(rng) for _ in range(rng.choice((0, 1, 1, 2, 3, 5, 8, 30)))]
    text = "".join(piece + rng.choice(separators) for piece in pieces)
    return text.upper() if rng.random() < 0.05 else text


@pytest.fixture(scope="module")
def texts() -> list[str]:
    rng = random.Random(20240503)
    near_limit = ["".join(rng.choice("abcdefghij") for _ in range(n)) for n in (199, 200, 201, 250)]
    fixed = ["", " ", "\x00", "[CLS] [SEP] [UNK] [PAD] [MASK]", "##ing", "’s “quoted”", "一" * 500, "word " * 200]
    fixed += near_limit + [f"猫 {word} 狗" for word in near_limit]
    return fixed + [_random_text(rng) for _ in range(NUM_RANDOM_TEXTS)]


@pytest.fixture(scope="module")
def cn_clip_tokenize():
    """cn_clip's own tokenize; its word-piece step is memoised per text so that the five
    context lengths cost one pass (the truncation and padding code still runs every time)."""
    clip = pytest.importorskip("cn_clip.clip")
    word_pieces = functools.lru_cache(maxsize=None)(clip._tokenizer.tokenize)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(clip._tokenizer, "tokenize", word_pieces)
        yield clip.tokenize


def test_tokenize_matches_cn_clip_on_10k_varied_texts(texts, cn_clip_tokenize):
    unk = Tokenizer().unk_id
    for context_length in CONTEXT_LENGTHS:
        ours = tokenize(texts, context_length)
        expected = cn_clip_tokenize(texts, context_length).numpy()
        assert ours.dtype == np.int64 and ours.shape == expected.shape == (len(texts), context_length)
        wrong = np.flatnonzero((ours != expected).any(axis=1))
        assert wrong.size == 0, f"{wrong.size} rows differ at context {context_length}, first: {texts[wrong[0]]!r}"
    # The sample really exercises truncation, [UNK] and empty rows.
    at_16 = tokenize(texts, 16)
    assert (at_16[:, -1] != 0).sum() > 1000
    assert (at_16 == unk).any(axis=1).sum() > 500
    assert (at_16[:, 2] == 0).sum() > 100


def test_pad_to_longest_is_the_full_result_cut_at_the_longest_row(texts):
    sample = texts[100:164]
    full = tokenize(sample, 77)
    short = tokenize(sample, 77, pad_to_longest=True)
    longest = int((full != 0).sum(axis=1).max())
    assert short.shape == (len(sample), longest)
    np.testing.assert_array_equal(short, full[:, :longest])
    assert tokenize(["猫", "一只猫"], 52, pad_to_longest=True).shape == (2, 5)


def test_single_string_empty_list_and_minimal_context():
    np.testing.assert_array_equal(tokenize("猫"), tokenize(["猫"]))
    assert tokenize([], 52).shape == (0, 52)
    assert tokenize([], 52, pad_to_longest=True).shape == (0, 2)
    tokenizer = Tokenizer()
    assert tokenize("一只猫", 2).tolist() == [[tokenizer.cls_id, tokenizer.sep_id]]
    np.testing.assert_array_equal(tokenize("一只猫", np.int64(8)), tokenize("一只猫", 8))


def test_known_pieces_and_long_word_is_one_unk():
    tokenizer = Tokenizer()
    pieces = ["u", "##na", "##ff", "##able", "猫", "!", "na", "##ive", "cafe", ",", "x", "^", "{", "2", "}"]
    expected = [tokenizer.cls_id] + [tokenizer.vocab[piece] for piece in pieces] + [tokenizer.sep_id, 0]
    assert tokenize("Unaffable 猫! naïve Café, x^{2}", 18)[0].tolist() == expected
    assert tokenizer.encode("a" * 201) == [tokenizer.unk_id]
    assert tokenizer.unk_id not in tokenizer.encode("a" * 200)


def test_normalize_text_maps_quotes_and_lower_cases():
    assert normalize_text("It’s a ‘Big’ “Cat”") == "it's a 'big' \"cat\""
    tokenizer = Tokenizer()
    assert tokenizer.unk_id in tokenizer.encode("it’s")
    assert tokenizer.unk_id not in tokenizer.encode(normalize_text("it’s"))


def test_bad_input_is_named():
    with pytest.raises(ClipMatchError, match=r"texts\[1\]: expected a str, got int"):
        tokenize(["ok", 3])
    with pytest.raises(ClipMatchError, match="context_length"):
        tokenize("猫", 1)


def test_vocabulary_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(ClipMatchError, match="nope.txt"):
        Tokenizer(missing)
    not_bert = tmp_path / "vocab.txt"
    not_bert.write_text("[PAD]\n[CLS]\nhello\n", encoding="utf-8")
    with pytest.raises(ClipMatchError, match=r"vocab.txt: not a BERT vocabulary, missing \[SEP\], \[UNK\]"):
        Tokenizer(not_bert)


def test_packaged_vocabulary_is_cn_clips():
    cn_clip_vocab = Path(pytest.importorskip("cn_clip.clip.bert_tokenizer").default_vocab())
    assert hashlib.sha256(VOCAB_PATH.read_bytes()).digest() == hashlib.sha256(cn_clip_vocab.read_bytes()).digest()
    assert len(Tokenizer().vocab) == 21128


def test_runtime_modules_do_not_import_torch():
    code = textwrap.dedent(
        """
        import sys
        from PIL import Image
        from clip_match.runtime.tokenizer import tokenize
        from clip_match.runtime.preprocess import preprocess
        tokenize(["一只猫 a cat"], 52)
        preprocess([Image.new("RGB", (5, 7))], 32)
        heavy = sorted(name for name in ("torch", "torchvision", "cn_clip") if name in sys.modules)
        assert not heavy, heavy
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
