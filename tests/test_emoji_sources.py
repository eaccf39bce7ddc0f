"""Twemoji and OpenMoji, in any packaging, are reserved for held-out evaluation: nothing may train,
validate, tune, calibrate or build a lookup on them. This fails if a training or validation source
or style list of the emoji dataset names one of them."""
from __future__ import annotations

import json
import re

import pytest

from datasets.emoji import build, generate
from datasets.emoji.glyphs import DEFAULT_ROOT
from datasets.emoji.styles import LABELS_SOURCE, STYLE_SOURCES, STYLES

# Matched after lower-casing and dropping everything but letters and digits, so that "Open-Moji",
# "twe_moji" and "TwitterColorEmoji" are caught too. "twitter" covers emoji-datasource-twitter and
# the Twitter Color Emoji fonts (Twemoji art).
RESERVED = re.compile(r"twemoji|openmoji|twitter")
SPELLINGS = ("twemoji", "@twemoji/svg", "@twemoji/api", "@discordapp/twemoji", "@iconify-json/twemoji",
             "@iconify-json/openmoji", "openmoji", "emoji-datasource-twitter", "Twemoji Mozilla",
             "TwitterColorEmoji-SVGinOT.ttf", "fonts-twemoji", "Open-Moji", "TWE_MOJI")


def reserved(text: str) -> list[str]:
    return RESERVED.findall(re.sub(r"[^a-z0-9]", "", text.lower()))


def test_the_check_catches_every_spelling():
    assert all(reserved(name) for name in SPELLINGS)
    assert not reserved("@iconify-json/fluent-emoji-high-contrast emojione-v1 fonts-symbola noto-emoji-mono")


def help_text(command: str, capsys) -> str:
    with pytest.raises(SystemExit):
        generate.main([command, "--help"])
    return capsys.readouterr().out


def test_no_training_style_or_source_names_a_reserved_set(capsys):
    labels = json.loads((DEFAULT_ROOT / "labels.json").read_text(encoding="utf-8"))
    lists = {
        "styles.py STYLES": list(STYLES),
        "styles.py sources": [s.describe() for s in (LABELS_SOURCE, *STYLE_SOURCES.values())],
        "build.py npm packages": [f"{p}@{v}" for p, v in build.NPM_PACKAGES.items()],
        "build.py fonts and name tables": [p for p, _ in build.FONT_FILES.values()] + list(build.NAME_TABLES),
        "build.py SVG sets": list(build.ICONIFY),
        "labels.json styles": [json.dumps({name: entry}) for name, entry in labels["styles"].items()],
        "labels.json labels": [labels["labels_source"]],
        "generate.py --styles / --style": [help_text(c, capsys) for c in ("pairs", "puzzles", "tiles")],
    }
    # and every file of the dataset's code, its build report and the training script, whole
    for path in sorted(DEFAULT_ROOT.glob("*.py")) + [DEFAULT_ROOT / "train_demo.sh", DEFAULT_ROOT / "build_report.json"]:
        lists[str(path.relative_to(DEFAULT_ROOT.parent.parent))] = [path.read_text(encoding="utf-8")]
    found = {where: hits for where, texts in lists.items() if (hits := sorted({h for t in texts for h in reserved(t)}))}
    assert not found, f"reserved emoji sets named in training/validation sources: {found}"
