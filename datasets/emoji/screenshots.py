"""Seeded puzzle-widget screenshots: a puzzle's grid inside a frame that states its prompt.

What `clip-match grid SCREENSHOT` must read without being told the prompt: a page margin, a widget
with an optional title bar, the prompt on a plain, tinted or saturated bar (a Chinese or English
phrasing of the target, in one of several Debian CJK and Latin fonts, sizes and colours, the target
sometimes coloured or bold, sometimes on a line of its own, sometimes followed by a second
instruction), or a small icon of the target instead of (or beside) the word; the grid (`make_puzzle`);
an optional footer of buttons; a third saved as PNG, the rest as JPEG (quality 30-95).

Every screenshot draws from its own generator seeded with ``(seed, number)``. ``puzzles.jsonl`` lines
add to a puzzle's (`puzzles.Puzzle.record`): ``lang``, ``prompt_kind`` ("text" or "icon"),
``prompt_text`` (the prompt's lines as written, joined by newlines), ``target`` (the target as the
text writes it: "umbrellas" for the prompt "umbrella"), ``boxes`` (each tile's box in the screenshot)
and, for an icon, ``example`` (the icon as drawn, PNG: the prompt given when solving "with the prompt
given") and ``icon_box`` (where it is drawn). ``prompt`` stays what the puzzle asks for (the emoji name or tag).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from clip_match.errors import ClipMatchError
from clip_match.fsutil import atomic_dir
from clip_match.grid.tiles import LAYOUTS, check_layout

from .glyphs import EmojiSet
from .puzzles import Puzzle, check_style, make_puzzle


@dataclass(frozen=True)
class Font:
    path: str
    index: int               # face in a .ttc collection (Noto CJK: 2 is Simplified Chinese)
    bold: str | None         # the bold face's file; None: drawn bold by overstriking
    package: str             # the Debian package that installs it
    scripts: str             # "zh" (Chinese, and Latin) or "en" (Latin only)
    latin: bool = True       # used for English prompts (not the Ming/Kai faces' monospaced Latin)


_NOTO, _DEJAVU = "/usr/share/fonts/opentype/noto/", "/usr/share/fonts/truetype/dejavu/"
_LIBERATION = "/usr/share/fonts/truetype/liberation/"
FONTS: dict[str, Font] = {
    "noto-sans-cjk": Font(_NOTO + "NotoSansCJK-Regular.ttc", 2, _NOTO + "NotoSansCJK-Bold.ttc", "fonts-noto-cjk", "zh"),
    "noto-serif-cjk": Font(_NOTO + "NotoSerifCJK-Regular.ttc", 2, _NOTO + "NotoSerifCJK-Bold.ttc", "fonts-noto-cjk",
                           "zh"),
    "wqy-zenhei": Font("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", 0, None, "fonts-wqy-zenhei", "zh", False),
    "wqy-microhei": Font("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 0, None, "fonts-wqy-microhei", "zh"),
    "ar-pl-uming": Font("/usr/share/fonts/truetype/arphic/uming.ttc", 0, None, "fonts-arphic-uming", "zh", False),
    "ar-pl-ukai": Font("/usr/share/fonts/truetype/arphic/ukai.ttc", 0, None, "fonts-arphic-ukai", "zh", False),
    "dejavu-sans": Font(_DEJAVU + "DejaVuSans.ttf", 0, _DEJAVU + "DejaVuSans-Bold.ttf", "fonts-dejavu-core", "en"),
    "dejavu-serif": Font(_DEJAVU + "DejaVuSerif.ttf", 0, _DEJAVU + "DejaVuSerif-Bold.ttf", "fonts-dejavu-core", "en"),
    "dejavu-sans-condensed": Font(_DEJAVU + "DejaVuSansCondensed.ttf", 0, _DEJAVU + "DejaVuSansCondensed-Bold.ttf",
                                  "fonts-dejavu-extra", "en"),
    "liberation-sans": Font(_LIBERATION + "LiberationSans-Regular.ttf", 0, _LIBERATION + "LiberationSans-Bold.ttf",
                            "fonts-liberation", "en"),
    "liberation-serif": Font(_LIBERATION + "LiberationSerif-Regular.ttf", 0, _LIBERATION + "LiberationSerif-Bold.ttf",
                             "fonts-liberation", "en"),
}

# Prompt phrasings seen on puzzle widgets. "{}" is the target; English ones say how they write it:
# "plural" (umbrellas), "article" (an umbrella) or "as is" (umbrella). The last of each list names its
# target nowhere but by colour: its target is always drawn in another colour (bold or not).
ZH_PHRASINGS = ("请点击下图中所有的{}", "请点击图中所有的{}", "点击图中所有的{}", "请点击所有{}", "请选择所有包含{}的图片",
                "请选出下图中的{}", "请在下图中点击{}", "请选择包含{}的所有图片", "请找出所有{}", "请点击所有有{}的图片",
                "请点击下列图片中的{}", "选出图中全部{}", "请点选所有{}", "请点击【{}】", "请选择所有含有“{}”的图片",
                "请点击下图中所有的「{}」", "请点击所有{}，然后点击确认", "请选择所有{}图片：", "哪些图片里有{}？")
EN_PHRASINGS = (("Select all images with {}", "plural"), ("Select all squares with {}", "plural"),
                ("Click on all images containing {}", "article"), ("Please click each image containing {}", "article"),
                ("Click all the {}", "plural"), ("Select all {}", "plural"), ("Choose the {}", "plural"),
                ("Tap on every {}", "as is"), ("Select all images that contain {}", "plural"),
                ("Find all images of {}", "plural"), ('Select all images with "{}"', "as is"),
                ("Click on each image showing {}", "article"), ("Select all the {} (3)", "plural"),
                ("Which pictures show {}?", "plural"))
ZH_SECOND = ("如果没有，请点击跳过", "选好后请点击确认", "全部选中后点击验证")
EN_SECOND = ("If there are none, click skip", "Click verify once there are none left.", "Then click submit.")
ZH_ICON = ("请点击与示例相同的图片", "请选出所有与右侧图标相同的物体", "请点击所有包含此物体的图片", "请点击所有{}")
EN_ICON = ("Click on all images matching the example", "Select all images with this object",
           "Please click each image containing", "Select all images with {}")
ZH_TITLES = ("安全验证", "请完成下列验证后继续", "人机验证")
EN_TITLES = ("Security check", "Verify you are human", "Verification")
ZH_BUTTONS = ("验证", "确认", "提交", "跳过")
EN_BUTTONS = ("VERIFY", "Verify", "Skip", "Next", "Submit")
TINTS = ((227, 242, 253), (232, 245, 233), (255, 243, 224), (243, 229, 245), (255, 253, 231), (236, 239, 241),
         (224, 247, 250))
SATURATED = ((66, 133, 244), (26, 115, 232), (32, 33, 36), (52, 58, 64), (0, 150, 136), (76, 175, 80), (233, 30, 99),
             (63, 81, 181), (0, 120, 215), (121, 85, 72))
DARK_TEXT = ((0, 0, 0), (33, 33, 33), (51, 51, 51), (85, 85, 85), (32, 33, 36))
ACCENTS_ON_LIGHT = ((220, 38, 38), (234, 88, 12), (37, 99, 235), (22, 163, 74), (147, 51, 234), (219, 39, 119))
ACCENTS_ON_DARK = ((255, 235, 59), (255, 193, 7), (129, 212, 250), (174, 234, 0), (255, 138, 128))
ICON_SHARE = 0.15      # screenshots whose prompt is an icon
PLURAL_IRREGULAR = {"bus": "buses", "person": "people", "mouse": "mice", "goose": "geese", "tooth": "teeth",
                    "foot": "feet", "child": "children", "man": "men", "woman": "women", "knife": "knives",
                    "leaf": "leaves", "wolf": "wolves", "cactus": "cacti", "potato": "potatoes", "tomato": "tomatoes"}


@dataclass(frozen=True)
class Screenshot:
    image: Image.Image
    puzzle: Puzzle
    lang: str
    kind: str                       # "text" or "icon"
    text: str                       # the prompt's lines as written, joined by newlines
    target: str                     # the target as written ("" for an icon)
    boxes: list[tuple[int, int, int, int]]
    icon: Image.Image | None        # the icon as drawn
    icon_box: tuple[int, int, int, int] | None

    def record(self, image_name: str, icon_name: str | None) -> dict:
        extra = {"lang": self.lang, "prompt_kind": self.kind, "prompt_text": self.text, "target": self.target,
                 "boxes": [list(box) for box in self.boxes]}
        icon = {"example": icon_name, "icon_box": list(self.icon_box)} if icon_name else {}
        return {**self.puzzle.record(image_name), **extra, **icon}


def check_fonts(names: Sequence[str]) -> dict[str, Font]:
    """The fonts named, each installed, or an error naming the Debian package to install."""
    fonts = {}
    for name in names:
        if name not in FONTS:
            raise ClipMatchError(f"unknown font {name!r}; fonts: {', '.join(FONTS)}")
        font = FONTS[name]
        if not Path(font.path).is_file() or (font.bold and not Path(font.bold).is_file()):
            raise ClipMatchError(f"font {name!r} is not installed: apt-get install {font.package}")
        fonts[name] = font
    for lang, kind in (("zh", "draws Chinese"), ("en", "has a proportional Latin")):
        if not _fonts_for(fonts, lang):
            raise ClipMatchError(f"the fonts must include one that {kind}: " +
                                 ", ".join(name for name in FONTS if _fonts_for({name: FONTS[name]}, lang)))
    return fonts


def _fonts_for(fonts: dict[str, Font], lang: str) -> list[Font]:
    """The fonts that write ``lang``: Chinese ones for Chinese, those with a proportional Latin for English."""
    return [font for font in fonts.values() if (font.scripts == "zh" if lang == "zh" else font.latin)]


def pluralise(phrase: str) -> str:
    """The English plural of a name, by its last word ("closed umbrella" -> "closed umbrellas"); a name
    whose head is not its last word ("globe with meridians"), that ends in s already, or whose last word
    is shorter than 3 letters stays."""
    head, _, word = phrase.rpartition(" ")
    if any(f" {joint} " in f" {phrase} " for joint in ("with", "of", "in", "on", "and", "facing")) \
            or not word.isalpha() or word.endswith("s") or len(word) < 3:
        return phrase
    if word in PLURAL_IRREGULAR:
        plural = PLURAL_IRREGULAR[word]
    elif word.endswith("y") and word[-2:-1] not in tuple("aeiou"):
        plural = word[:-1] + "ies"
    elif word.endswith(("x", "z", "ch", "sh")):
        plural = word + "es"
    else:
        plural = word + "s"
    return f"{head} {plural}" if head else plural


def _font(font: Font, size: int, bold: bool) -> tuple[ImageFont.FreeTypeFont, int]:
    """The face and how many extra pixels to overstrike it (a bold face missing: about size / 24, as
    browsers embolden)."""
    if bold and font.bold:
        return ImageFont.truetype(font.bold, size, index=font.index), 0
    return ImageFont.truetype(font.path, size, index=font.index), max(1, round(size / 24)) if bold else 0


Run = tuple[str, ImageFont.FreeTypeFont, int, tuple[int, int, int]]  # text, face, overstrike, colour


def _width(draw: ImageDraw.ImageDraw, runs: list[Run]) -> float:
    return sum(draw.textlength(text, font=face) + strike for text, face, strike, _ in runs)


def _draw(draw: ImageDraw.ImageDraw, x: float, y: float, runs: list[Run]) -> None:
    for text, face, strike, colour in runs:
        for dx in range(strike + 1):
            draw.text((x + dx, y), text, font=face, fill=colour)
        x += draw.textlength(text, font=face) + strike


def _choose(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _phrase(rng: np.random.Generator, lang: str, prompt: str) -> tuple[str, str, bool]:
    """(phrasing with "{}", the target as written, whether the phrasing needs the target emphasised)."""
    if lang == "zh":
        phrasing = _choose(rng, ZH_PHRASINGS)
        return phrasing, prompt, phrasing == ZH_PHRASINGS[-1]
    phrasing, number = _choose(rng, EN_PHRASINGS)
    written = pluralise(prompt) if number == "plural" else prompt
    if number == "article" and prompt[:1].islower():
        phrasing = phrasing.replace("{}", ("an {}" if prompt[0] in "aeiou" else "a {}"))
    return phrasing, written, (phrasing, number) == EN_PHRASINGS[-1]


def _prompt_bar(rng: np.random.Generator, width: int, lang: str, target: str, phrasing: str, must_emphasise: bool,
                fonts: dict[str, Font], widget: tuple[int, int, int],
                icon: Image.Image | None) -> tuple[Image.Image, list[str], tuple[int, int, int, int] | None]:
    """The prompt bar: its image, its lines as written, and the icon's box in it."""
    kind = rng.choice(["plain", "tinted", "saturated"], p=[0.35, 0.25, 0.4])
    if kind == "saturated":
        colour, ink, accents = _choose(rng, SATURATED), (255, 255, 255), ACCENTS_ON_DARK
    else:
        colour = widget if kind == "plain" else tuple(int(c + rng.integers(-6, 7)) for c in _choose(rng, TINTS))
        ink, accents = _choose(rng, DARK_TEXT), ACCENTS_ON_LIGHT
    font = _choose(rng, _fonts_for(fonts, lang))
    coloured = must_emphasise or rng.random() < 0.35
    bold = rng.random() < 0.35
    word_colour = _choose(rng, accents) if coloured else ink
    all_bold = not bold and rng.random() < 0.15
    prefix, suffix = phrasing.split("{}") if "{}" in phrasing else (phrasing, "")
    space = " " if lang == "zh" and rng.random() < 0.3 else ""  # "请点击所有 雨伞": a gap before the word
    second = _choose(rng, ZH_SECOND if lang == "zh" else EN_SECOND) if icon is None and rng.random() < 0.2 else None
    two_lines = icon is None and not suffix.strip() and rng.random() < 0.25
    margin = int(rng.integers(8, 21))
    icon_side = int(rng.integers(28, 57)) if icon is not None else 0
    available = width - 2 * margin - (icon_side + 48 if icon is not None else 0)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    size = int(rng.integers(14, 25))
    while True:
        face, strike = _font(font, size, all_bold)
        word_face, word_strike = _font(font, size + (int(rng.integers(4, 9)) if two_lines else 0), bold or all_bold)
        lead = [(prefix.rstrip() if two_lines else prefix + space, face, strike, ink)]
        word = [(target, word_face, word_strike, word_colour)] if target else []
        tail = [(suffix, face, strike, ink)] if suffix else []
        lines = [lead, word] if two_lines else [lead + word + tail]
        if max(_width(draw, line) for line in lines) <= available or size <= 11:
            break
        size -= 1
    if max(_width(draw, line) for line in lines) > available and word:
        lines = [lead, word + tail]  # too long for one line even small: the target goes below
    if second:
        small = max(11, size - 3)
        while small > 11 and _width(draw, [(second, _font(font, small, False)[0], 0, ink)]) > available:
            small -= 1
        lines.append([(second, _font(font, small, False)[0], 0, ink)])
    heights = [max(f.getmetrics()[0] + f.getmetrics()[1] for _, f, _, _ in line) for line in lines]
    gap = int(rng.integers(2, 7))
    height = max(sum(heights) + gap * (len(lines) - 1) + 2 * int(rng.integers(8, 19)), icon_side + 16)
    bar = Image.new("RGB", (width, height), colour)
    pen = ImageDraw.Draw(bar)
    centred = rng.random() < 0.4
    y = (height - sum(heights) - gap * (len(lines) - 1)) / 2
    right = margin
    for line, line_height in zip(lines, heights):
        x = margin + ((available - _width(pen, line)) / 2 if centred else 0)
        _draw(pen, x, y, line)
        right = max(right, x + _width(pen, line))
        y += line_height + gap
    box = None
    if icon is not None:
        left = int(right + rng.integers(size, 2 * size + 1)) if rng.random() < 0.5 else width - margin - icon_side
        top = (height - icon_side) // 2
        sprite = icon.resize((icon_side, icon_side), Image.LANCZOS)
        bar.paste(sprite, (left, top), sprite)
        inked = sprite.getchannel("A").point(lambda alpha: 255 if alpha > 64 else 0).getbbox()
        box = (left + inked[0], top + inked[1], left + inked[2], top + inked[3])  # (what of it shows)
    written = ["".join(text for text, _, _, _ in line).strip() for line in lines]
    return bar, written, box


def _text_bar(rng: np.random.Generator, width: int, text: str, font: Font, colour: tuple, ink: tuple) -> Image.Image:
    """A title bar: one short line, with a separator below half the time."""
    face, _ = _font(font, int(rng.integers(13, 19)), rng.random() < 0.5)
    ascent, descent = face.getmetrics()
    bar = Image.new("RGB", (width, ascent + descent + int(rng.integers(12, 25))), colour)
    pen = ImageDraw.Draw(bar)
    pen.text((int(rng.integers(8, 21)), (bar.height - ascent - descent) // 2), text, font=face, fill=ink)
    if rng.random() < 0.5:
        pen.line((0, bar.height - 1, width, bar.height - 1), fill=(218, 220, 224))
    return bar


def _footer(rng: np.random.Generator, width: int, lang: str, font: Font, colour: tuple) -> Image.Image:
    """Buttons under the grid: a reload ring and an audio or info mark at the left, a labelled button
    at the right; a separator line above half the time."""
    height = int(rng.integers(40, 65))
    footer = Image.new("RGB", (width, height), colour)
    pen = ImageDraw.Draw(footer)
    if rng.random() < 0.5:
        pen.line((0, 0, width, 0), fill=(218, 220, 224))
    grey = _choose(rng, ((95, 99, 104), (117, 117, 117), (66, 66, 66)))
    x, middle = int(rng.integers(8, 21)), height // 2
    for _ in range(int(rng.integers(1, 4))):
        radius = int(rng.integers(8, 13))
        pen.arc((x, middle - radius, x + 2 * radius, middle + radius), 40, 340, fill=grey, width=3)
        x += 2 * radius + int(rng.integers(10, 19))
    label = _choose(rng, ZH_BUTTONS if lang == "zh" else EN_BUTTONS)
    face, _ = _font(font, int(rng.integers(13, 18)), True)
    button_width, button_height = int(face.getlength(label)) + int(rng.integers(24, 49)), min(height - 8, 36)
    right = width - int(rng.integers(8, 21))
    fill = _choose(rng, SATURATED[:7])
    pen.rectangle((right - button_width, middle - button_height // 2, right, middle + button_height // 2), fill=fill)
    ascent, descent = face.getmetrics()
    pen.text((right - button_width + (button_width - face.getlength(label)) / 2, middle - (ascent + descent) / 2),
             label, font=face, fill=(255, 255, 255))
    return footer


def make_screenshot(emoji: EmojiSet, rng: np.random.Generator, layout: str, style: str, lang: str,
                    fonts: dict[str, Font], icon: bool = False) -> Screenshot:
    """One widget screenshot around a fresh puzzle: text prompt in ``lang``, or an icon of the target."""
    if icon:  # an emoji whose name answers it alone: the icon shows exactly what the matching tiles show
        choices = sorted(i for i in emoji.covers(style) if emoji.answers(emoji.emoji[i].name(lang), lang) == {i})
        shown = int(_choose(rng, choices))
        puzzle = make_puzzle(emoji, rng, layout, style, lang, emoji.emoji[shown].name(lang))
        sprite = emoji.sprite(shown, style)
    else:
        puzzle, sprite = make_puzzle(emoji, rng, layout, style, lang), None
    page = (255, 255, 255) if rng.random() < 0.4 else tuple(int(v) for v in rng.integers(228, 250, 3))
    widget = (255, 255, 255) if rng.random() < 0.6 else tuple(int(v) for v in rng.integers(240, 256, 3))
    pad = int(rng.integers(0, 21))
    width = puzzle.image.width + 2 * pad
    text_fonts = _fonts_for(fonts, lang)
    if icon:
        phrasing, target, emphasise = _choose(rng, ZH_ICON if lang == "zh" else EN_ICON), "", False
        if "{}" in phrasing:  # the icon beside the word
            target = puzzle.prompt
    else:
        phrasing, target, emphasise = _phrase(rng, lang, puzzle.prompt)
    bar, lines, icon_box = _prompt_bar(rng, width, lang, target, phrasing, emphasise, fonts, widget, sprite)
    header = [bar]
    if rng.random() < 0.25:
        title = _choose(rng, ZH_TITLES if lang == "zh" else EN_TITLES)
        header.insert(0, _text_bar(rng, width, title, _choose(rng, text_fonts), widget, _choose(rng, DARK_TEXT)))
    footer = [_footer(rng, width, lang, _choose(rng, text_fonts), widget)] if rng.random() < 0.7 else []
    above = int(rng.integers(0, 17))  # between the prompt and the grid
    parts_height = sum(part.height for part in header + footer)
    border = int(rng.integers(1, 3)) if rng.random() < 0.5 else 0
    margins = [int(v) for v in rng.integers(0, 41, 4)]  # left, top, right, bottom
    canvas = Image.new("RGB", (margins[0] + margins[2] + width + 2 * border,
                               margins[1] + margins[3] + parts_height + above + puzzle.image.height + pad
                               + (pad if footer else 0) + 2 * border), page)
    pen = ImageDraw.Draw(canvas)
    left, top = margins[0] + border, margins[1] + border
    if border:
        pen.rectangle((margins[0], margins[1], canvas.width - margins[2] - 1, canvas.height - margins[3] - 1),
                      outline=(200, 200, 200), width=border, fill=widget)
    else:
        pen.rectangle((left, top, left + width - 1, canvas.height - margins[3] - 1), fill=widget)
    y = top
    for part in header:
        canvas.paste(part, (left, y))
        y += part.height
    icon_image = None
    if icon_box is not None:
        icon_box = (icon_box[0] + left, icon_box[1] + y - bar.height, icon_box[2] + left, icon_box[3] + y - bar.height)
        icon_image = canvas.crop(icon_box)
    y += above
    canvas.paste(puzzle.image, (left + pad, y))
    boxes = [(l + left + pad, t + y, r + left + pad, b + y) for l, t, r, b in puzzle.boxes]
    y += puzzle.image.height + (pad if footer else 0)
    for part in footer:
        canvas.paste(part, (left, y))
        y += part.height
    return Screenshot(canvas, puzzle, lang, "icon" if icon else "text", "\n".join(lines), target, boxes, icon_image,
                      icon_box)


def write_screenshots(out_dir: str | os.PathLike, count: int, seed: int, styles: Sequence[str] = ("noto", "fluent"),
                      layouts: Sequence[str] = tuple(LAYOUTS), fonts: Sequence[str] = tuple(FONTS),
                      emoji: EmojiSet | None = None, overwrite: bool = False) -> Path:
    """Write ``count`` screenshots (languages, layouts and styles in turn; ICON_SHARE of them with an
    icon prompt; a third PNG, the rest JPEG quality 30-95) plus ``puzzles.jsonl``, atomically."""
    for style in styles:
        check_style(style)
    for layout in layouts:
        check_layout(layout)
    chosen = check_fonts(fonts)
    emoji = emoji or EmojiSet()
    width = max(4, len(str(count)))
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        with open(tmp / "puzzles.jsonl", "w", encoding="utf-8") as lines:
            for i in tqdm(range(count), desc="screenshots", unit="image", disable=None, leave=False):
                rng = np.random.default_rng([seed, i])
                shot = make_screenshot(emoji, rng, layouts[i % len(layouts)], styles[i // 2 % len(styles)],
                                       ("zh", "en")[i % 2], chosen, icon=rng.random() < ICON_SHARE)
                name = f"{i + 1:0{width}d}"
                if rng.random() < 1 / 3:
                    image_name = f"{name}.png"
                    shot.image.save(tmp / image_name)
                else:
                    image_name = f"{name}.jpg"
                    shot.image.save(tmp / image_name, quality=int(rng.integers(30, 96)))
                icon_name = f"{name}_icon.png" if shot.icon is not None else None
                if icon_name:
                    shot.icon.save(tmp / icon_name)
                lines.write(json.dumps(shot.record(image_name, icon_name), ensure_ascii=False) + "\n")
    return Path(out_dir)
