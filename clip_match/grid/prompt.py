"""Reading a puzzle's prompt from its screenshot: the bars around the grid, an icon or the text, the target.

A widget shows its prompt in a header above the grid (sometimes below it): a sentence such as
"请点击下图中所有的 雨伞" or "Select all images with umbrellas", sometimes a small picture to match
instead. The regions above and below the grid are cut into *bars* (runs of rows of one background
colour, measured over the grid's columns, so a tinted bar or a page margin is its own background), and
the bars into lines and segments of ink (`clip_match.runtime.ocr`).

- An icon in the header (a compact segment the recogniser cannot read as text, or one that towers
  over the text beside it) is the prompt: it is cropped and matched as an example image ("header-icon").
- Otherwise the header's lines are read nearest the grid first, and after each line the text so far
  is tried: ``--prompt-pattern`` when given (its one named group), else a quoted or bracketed word
  (【X】, "X", 「X」), else the built-in templates (`extract_target`); a sentence no template knows
  gives the one word printed in another colour (or bolder) than the rest of its line. When nothing is
  read above the grid, the text below it is tried with the templates ("ocr-text").

English targets are read as singular ("umbrellas" -> "umbrella") unless an article says they already
are: the models are trained on names, and a plural can move a text's embedding far (the demo model:
cherry / cherries 0.32 cosine).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import ClipMatchError
from ..runtime.ocr import MIN_SCORE, Box, TextLine, TextReader, contrast, find_segments, ink_mask
from .tiles import Grid

_BAR_TOLERANCE = 12     # levels: rows whose colours differ by less belong to one bar
_FLAT = 24              # levels: 95 % of a row of a bar without ink lie this close to its median
_MIN_BAR = 8            # px: thinner bars (borders, separators) hold no text
_ICON_SIZE = 16         # px: smaller segments are no icons (a bracket, a question mark)
_ICON_SCORE = 0.8       # an icon reads as characters of a lower mean probability than this ...
_ICON_TALL = 1.8        # ... or, when this many times as tall as the text beside it, ...
_ICON_SCORE_TALL = 0.95  # ... than this
_EMPHASIS_COLOUR = 60   # levels: letters this far in colour from the rest of their line are emphasised ...
_EMPHASIS_STROKE = 1.35  # ... or letters whose strokes are this many times as wide as the rest
_MAX_TARGET = 40        # characters: longer "targets" are sentences no template knows
_CJK = "\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef"
_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‟": '"', "«": '"', "»": '"', "‘": "'", "’": "'"})
_RING = re.compile(r"^[○◯〇●◎Oo0]\s+|\s*[○◯〇●◎]$|\s+[Oo0]$")  # a reload ring at a piece's end, read as a letter
_BRACKETED = re.compile(r'[【「『《〖\["]\s*(?P<target>[^】」』》〗\]"]{1,40}?)\s*[】」』》〗\]"]')
# Words a footer's buttons say: never a target.
_CONTROLS = frozenset({"验证", "确认", "确定", "提交", "刷新", "跳过", "换一张", "重试", "下一步", "verify", "skip",
                       "submit", "next", "refresh", "reload", "confirm", "check"})

_POINTERS = re.compile(r"示例|图标|样例|右侧|左侧|上方|此物|相同|\b(?:example|this|these|shown|icon|sample)\b", re.I)
_ZH_PLACE = r"(?:下图|下方图片|下方|下面|以下图片|下列图片|图片|图)?中?"
_ZH_LEAD = re.compile(rf"^请?你?(?:在|从)?{_ZH_PLACE}(?:依次|按顺序)?(?:点击|点选|选择|选出|选中|找出|找到|勾选|选取|圈出)"
                      rf"{_ZH_PLACE}(?:所有|全部)?的?")
_ZH_PICTURES = r"(?:图片|图像|照片|方块|格子)"
_ZH_CONTAINING = re.compile(rf"^(?:包含|含有|带有|有)(?P<target>.+?)的(?:所有|全部)?的?{_ZH_PICTURES}$")
_ZH_TAIL = re.compile(rf"的?(?:所有|全部)?的?{_ZH_PICTURES}$")
_ZH_CLAUSES = re.compile(r"[,，。.;；!！?？·•]")  # (the OCR reads a small "，" as "·" at times)


def _words(*phrases: str) -> str:
    """A regex of alternative lead-in phrases whose words may be fused (the OCR drops spaces: "Selectall")
    and whose letters may be parted by one stray space ("al l")."""
    return "(?:" + "|".join(r"\s*".join(r"\s?".join(map(re.escape, word)) for word in phrase.split())
                            for phrase in phrases) + ")"


_EN_OBJECTS = _words("images", "image", "squares", "square", "pictures", "picture", "photos", "photo", "tiles", "tile",
                     "boxes", "box", "cells", "cell") + r"\b\s*"
_EN_VERBS = _words("select", "click on", "click", "tap on", "tap", "choose", "pick", "find")
_EN_LINKS = _words("with", "containing", "that contains", "that contain", "that have", "that has", "which contains",
                   "which contain", "showing", "that shows", "that show", "featuring", "of")
_EN_LEAD = re.compile(
    rf"^(?:{_words('please')}\s*)?{_EN_VERBS}\s*"
    rf"(?:(?:{_words('all', 'any', 'each', 'every')}|al\b)\s*(?:{_words('of')}\b\s*)?(?:{_words('the')}\b\s*)?(?:{_EN_OBJECTS})?"
    rf"|{_words('the')}\b\s*(?:{_EN_OBJECTS})?|{_EN_OBJECTS})"
    rf"(?:{_EN_LINKS}(?:\b|(?=an?\s))\s*)?(?P<article>{_words('an', 'a', 'the')}\b\s*)?", re.IGNORECASE)
_EN_SENTENCES = re.compile(r"(?<=[.!?])\s+")
# English plurals: irregular ones, singulars in -ie, and nouns that end in s whichever the number
_IRREGULAR = {"buses": "bus", "people": "person", "mice": "mouse", "geese": "goose", "teeth": "tooth",
              "feet": "foot", "children": "child", "men": "man", "women": "woman", "knives": "knife",
              "leaves": "leaf", "wolves": "wolf", "loaves": "loaf", "cacti": "cactus", "octopi": "octopus",
              "dice": "die", "oxen": "ox", "potatoes": "potato", "tomatoes": "tomato", "heroes": "hero", "axes": "axe"}
_IE = frozenset({"cookie", "movie", "pie", "tie", "necktie", "veggie", "cabbie", "zombie", "brownie", "hoodie",
                 "selfie", "smoothie", "genie", "die", "lie"})
_ALWAYS_S = frozenset({"glasses", "sunglasses", "goggles", "scissors", "binoculars", "trousers", "jeans", "shorts",
                       "pants", "clothes", "chopsticks", "tongs", "pliers", "tweezers", "news", "series", "species",
                       "fireworks", "sparkles", "billiards", "darts", "gymnastics", "athletics", "physics", "stairs",
                       "christmas", "gas", "lens", "canvas", "atlas", "tennis", "iris", "axis", "mantis", "trellis",
                       "oasis", "chassis"})


@dataclass(frozen=True)
class PromptReading:
    """What a screenshot's prompt says: the target text or the icon to match, where it came from
    ("ocr-text" or "header-icon"), the text read (lines joined by newlines; "" for an icon) and the
    icon's box in the screenshot."""

    prompt: str | Image.Image
    source: str
    text: str
    box: Box | None = None


@dataclass(frozen=True)
class _Bar:
    top: int
    bottom: int
    colour: np.ndarray
    lines: list[list[Box]]   # segments (bar coordinates: x as in the image, y from the bar's top)


def compile_pattern(pattern: str, seconds: float | None = None) -> re.Pattern | TimedPattern:
    """A ``--prompt-pattern``: a regular expression with exactly one named group (the target). With
    ``seconds``, each search of it is bounded in time (`TimedPattern`: for patterns from others)."""
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ClipMatchError(f"--prompt-pattern {pattern!r} is not a regular expression: {error}") from None
    if len(compiled.groupindex) != 1:
        raise ClipMatchError(f"--prompt-pattern {pattern!r} needs exactly one named group for the target, e.g. "
                             f"'点击(?P<target>.+?)的图片', not {len(compiled.groupindex)}")
    return compiled if seconds is None else TimedPattern(pattern, seconds)


class PatternTimeout(ClipMatchError):
    """A `TimedPattern` search ran out of time: the pattern's fault, not the image's."""


class TimedPattern:
    """A prompt pattern whose every search gives up after ``seconds`` (an error naming it), so that a
    pattern that backtracks without end fails its own request: `re` has no time limit and holds the
    GIL while it searches, which would stall a whole server. Compiled by the `regex` package (the
    ``serve`` extra), whose syntax is `re`'s and whose searches can time out and release the GIL."""

    def __init__(self, pattern: str, seconds: float):
        try:
            import regex
        except ImportError:
            raise ClipMatchError("a time-bounded prompt pattern needs the regex package: "
                                 "pip install 'clip-match[serve]'") from None
        self.pattern, self.seconds = pattern, seconds
        self._compiled = regex.compile(pattern)

    def search(self, text: str):  # -> regex.Match | None
        try:
            return self._compiled.search(text, timeout=self.seconds, concurrent=True)
        except TimeoutError:
            raise PatternTimeout(f"prompt pattern {self.pattern!r} gave no answer within {self.seconds:g} s on the "
                                 f"text read {text!r}: simplify it (nested repeats backtrack without end)") from None


class PromptReader:
    """Reads prompts from screenshots with one `TextReader` (the OCR model, loaded once)."""

    def __init__(self, threads: int = 1):
        self.reader = TextReader(threads)

    def read(self, image: Image.Image, grid: Grid,
             pattern: re.Pattern | TimedPattern | None = None) -> PromptReading:
        """The prompt of the screenshot ``image`` whose tiles ``grid`` holds: an icon in the header, else
        the target of the text read above, then below, the grid. Errors (exit 2) when no bar holds
        anything, or when the text read gives no target (quoting it)."""
        rgb = np.asarray(image.convert("RGB"))
        top, bottom = grid.rows[0][0], grid.rows[-1][1]
        left, right = grid.cols[0][0], grid.cols[-1][1]
        header, footer = _bars(rgb, 0, top, left, right), _bars(rgb, bottom, rgb.shape[0], left, right)
        if not any(bar.lines for bar in header + footer):
            raise ClipMatchError("found no prompt above or below the grid (nothing but the grid?); give it with "
                                 "--text or --example")
        readings: dict[Box, TextLine] = {}  # each segment is read once

        def read(bar: _Bar, box: Box) -> TextLine:
            if box not in readings:
                readings[box] = self.reader.read(rgb, box, bar.colour)
            return readings[box]

        for bar, segments in _lines(header, upwards=True):
            for segment in segments[::-1]:
                box = _icon_box(rgb, segment, bar, read)
                if box is not None:
                    picture = Image.fromarray(rgb[box[1]:box[3], box[0]:box[2]])
                    return PromptReading(picture, "header-icon", "", box)
        read_texts: list[str] = []
        for bars, upwards in ((header, True), (footer, False)):
            if read_texts:
                break  # (below the grid only when nothing was read above it: buttons say "Verify", "跳过")
            lines: list[list[TextLine]] = []
            for bar, segments in _lines(bars, upwards):
                pieces = [piece for piece in (read(bar, box) for box in segments)
                          if piece.text.strip() and piece.score >= MIN_SCORE]
                # (a lone Latin letter or symbol is a ring or arrow icon read as "O", not text)
                pieces = [p for p in pieces if len(p.text.strip()) > 1 or re.match(f"[{_CJK}]", p.text)]
                if not pieces:
                    continue
                lines.insert(0 if upwards else len(lines), pieces)
                target = extract_target(_text(lines), pattern)
                if target is not None:
                    return PromptReading(target, "ocr-text", _text(lines))
            target = _emphasised(rgb, lines, bars) if lines and pattern is None and upwards else None
            if target is not None:
                return PromptReading(target, "ocr-text", _text(lines))
            read_texts += [_text(lines)] if lines else []
        if not read_texts:
            raise ClipMatchError("read no text in the bars around the grid; give the prompt with --text or --example")
        text = " / ".join(line for lines in read_texts for line in lines.splitlines())
        how = "the --prompt-pattern" if pattern is not None else "no template"
        raise ClipMatchError(f"read the prompt {text!r} but {how} found its target in it; give the target with "
                             "--text, or a --prompt-pattern with one named group for it")


def _text(lines: list[list[TextLine]]) -> str:
    """The lines read, top to bottom: their pieces joined by spaces, normalised, one per line."""
    return "\n".join(normalise(" ".join(_RING.sub("", piece.text) for piece in pieces)) for pieces in lines)


def _bars(rgb: np.ndarray, top: int, bottom: int, left: int, right: int) -> list[_Bar]:
    """The bars of rows [top, bottom), judged over the grid's columns: runs of flat rows (no ink) of one
    colour, joined across the rows of ink between two runs of the same colour (the lines of text on a
    bar); rows of ink between bars of two colours go to the one whose colour more of their pixels
    have. Each bar comes with its lines of ink segments."""
    region = rgb[top:bottom, left:right:3].astype(np.int16)  # (every third column tells a bar's colour)
    if len(region) < _MIN_BAR:
        return []
    colours = np.median(region, axis=1)
    flat = (np.abs(region - colours[:, None]).max(axis=2) <= _FLAT).mean(axis=1) >= 0.95  # (JPEG specks aside)
    spans: list[list] = []  # [start, end, colour]
    for row in np.flatnonzero(flat).tolist():
        if spans and np.abs(colours[row] - spans[-1][2]).max() <= _BAR_TOLERANCE:
            spans[-1][1] = row + 1  # (across any rows of ink: the same bar)
        else:
            if spans:  # rows of ink between two colours: to the bar most of their pixels match
                middle = region[spans[-1][1]:row]
                near = [(np.abs(middle - colour).max(axis=2) <= _BAR_TOLERANCE).sum()
                        for colour in (spans[-1][2], colours[row])]
                spans[-1][1] = row if near[0] >= near[1] else spans[-1][1]
                start = spans[-1][1]
            else:
                start = 0
            spans.append([start, row + 1, colours[row]])
    if not spans:
        spans = [[0, len(region), np.median(region.reshape(-1, 3), axis=0)]]
    spans[-1][1] = len(region)
    return [_Bar(top + start, top + end, colour, find_segments(ink_mask(rgb[top + start:top + end], colour)))
            for start, end, colour in spans if end - start >= _MIN_BAR]


def _lines(bars: list[_Bar], upwards: bool) -> list[tuple[_Bar, list[Box]]]:
    """Every line of the bars as (bar, segment boxes in image coordinates), nearest the grid first."""
    lines = [(bar, [(l, t + bar.top, r, b + bar.top) for l, t, r, b in line]) for bar in bars for line in bar.lines]
    return lines[::-1] if upwards else lines


def _icon_box(rgb: np.ndarray, box: Box, bar: _Bar, read) -> Box | None:
    """The box of the icon a header segment is, or None. An icon is compact (sides within 5:2, at
    least _ICON_SIZE px) and not read as text: its characters' mean probability is under _ICON_SCORE,
    or _ICON_SCORE_TALL when it is _ICON_TALL times as tall as the bar's other segments (emoji read
    as characters at 0.05-0.9, text at 0.95 and more). Its box grows over the fainter ink joined to
    it (the text's contrast set the threshold that found the segment; a picture's pale parts fall
    below it)."""
    left, top, right, bottom = box
    width, height = right - left, bottom - top
    if min(width, height) < _ICON_SIZE / 2 or not 0.4 <= width / height <= 4:
        return None  # (the faint ink it grows over may square it)
    text = [b - t for line in bar.lines for l, t, r, b in line if (l, t + bar.top, r, b + bar.top) != box]
    tall = bool(text) and height >= _ICON_TALL * float(np.median(text))
    if read(bar, box).score >= (_ICON_SCORE_TALL if tall else _ICON_SCORE):
        return None
    x0, y0 = max(0, left - width // 2), max(bar.top, top - height // 2)
    x1, y1 = min(rgb.shape[1], right + width // 2), min(bar.bottom, bottom + height // 2)
    faint = _dilate(_dilate(contrast(rgb[y0:y1, x0:x1], bar.colour) > 40))  # (across gaps of 4 px in a picture)
    for l, t, r, b in (segment for line in bar.lines for segment in line):  # (never into the text beside it)
        if (l, t + bar.top, r, b + bar.top) != box:
            faint[max(0, t + bar.top - y0):max(0, b + bar.top - y0), max(0, l - x0):max(0, r - x0)] = False
    grown = np.zeros_like(faint)
    grown[top - y0:bottom - y0, left - x0:right - x0] = faint[top - y0:bottom - y0, left - x0:right - x0]
    for _ in range(max(width, height) // 2):  # (grow within the faint ink until it stops)
        wider = _dilate(grown) & faint
        if (wider == grown).all():
            break
        grown = wider
    rows, columns = np.flatnonzero(grown.any(axis=1)), np.flatnonzero(grown.any(axis=0))
    left, top = min(left, x0 + int(columns[0])), min(top, y0 + int(rows[0]))
    right, bottom = max(right, x0 + int(columns[-1]) + 1), max(bottom, y0 + int(rows[-1]) + 1)
    width, height = right - left, bottom - top
    compact = min(width, height) >= _ICON_SIZE and 0.4 <= width / height <= 2.5
    return (left, top, right, bottom) if compact else None


def _dilate(mask: np.ndarray) -> np.ndarray:
    """``mask`` grown by one pixel up, down, left and right."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def _emphasised(rgb: np.ndarray, lines: list[list[TextLine]], bars: list[_Bar]) -> str | None:
    """The one run of characters, in the one line that has such a run, printed in another colour or
    bolder than the rest of its line."""
    found = []
    for pieces in lines:
        background = next(bar.colour for bar in bars if bar.top <= pieces[0].box[1] < bar.bottom)
        marks = [mark for piece in pieces  # (a space between pieces)
                 for mark in [(" ", background, 0.0), *_character_inks(rgb, piece, background)]]
        run = _odd_run(marks)
        if run is not None:
            found.append(run)
    return found[0] if len(found) == 1 else None


def _character_inks(rgb: np.ndarray, line: TextLine,
                    background: np.ndarray) -> list[tuple[str, np.ndarray, float]]:
    """Each character of ``line`` with its ink's colour (the mean of its most contrasting pixels) and
    stroke width, from the columns around its x: twice its ink's area (contrast as a share of the line's
    strongest, so anti-aliased edges count in part) over the length of its outline."""
    left, top, right, bottom = line.box
    box = rgb[top:bottom, left:right]
    distance = contrast(box, background)
    weight = np.clip(distance / max(1, distance.max()), 0, 1)
    strong = weight > 0.5
    xs = np.array(line.xs) - left
    half = 0.35 * (float(np.median(np.diff(xs))) if len(xs) > 1 else bottom - top)
    out = []
    for character, x in zip(line.text, xs):
        window = slice(max(0, int(x - half)), max(1, int(x + half) + 1))
        ink = strong[:, window]
        if not ink.any():
            out.append((character, np.asarray(background, float), 0.0))
            continue
        outline = np.count_nonzero(np.diff(ink, axis=0)) + np.count_nonzero(np.diff(ink, axis=1))
        core = weight[:, window] >= 0.8 * weight[:, window].max()  # (its purest ink: edges blend with the bar)
        stroke = 2 * float(weight[:, window].sum()) / max(1, outline)
        out.append((character, box[:, window][core].mean(axis=0), stroke))
    return out


def _odd_run(marks: list[tuple[str, np.ndarray, float]]) -> str | None:
    """The letters set off from the rest of their line, when they are one run (widened to whole words
    in Latin script): by colour (the two colours the letters group into, _EMPHASIS_COLOUR levels apart
    or more: the more saturated one, or the rarer when both are as plain), else by stroke width (the
    wider of the two groups the largest step in the sorted widths parts, when _EMPHASIS_STROKE times
    the other). Spaces and punctuation take no part."""
    letters = [i for i, (character, _, _) in enumerate(marks) if character.isalnum()]
    if len(letters) < 2:
        return None
    colours = np.array([marks[i][1] for i in letters], float)
    strokes = np.array([marks[i][2] for i in letters], float)
    distances = np.abs(colours[:, None] - colours[None]).max(axis=2)
    centres = colours[list(np.unravel_index(np.argmax(distances), distances.shape))]
    for _ in range(5):  # two-means from the two letters farthest apart
        odd = np.abs(colours - centres[1]).max(axis=1) < np.abs(colours - centres[0]).max(axis=1)
        if 0 < odd.sum() < len(odd):
            centres = np.array([colours[~odd].mean(axis=0), colours[odd].mean(axis=0)])
    if np.abs(centres[0] - centres[1]).max() >= _EMPHASIS_COLOUR:
        chroma = np.ptp(centres, axis=1)
        if abs(chroma[0] - chroma[1]) >= _EMPHASIS_COLOUR / 2 and chroma[0] > chroma[1] or (
                abs(chroma[0] - chroma[1]) < _EMPHASIS_COLOUR / 2 and odd.sum() > len(odd) / 2):
            odd = ~odd
    else:
        order = np.sort(strokes)
        step = int(np.argmax(np.diff(order)))
        if order[:step + 1].mean() * _EMPHASIS_STROKE > order[step + 1:].mean():
            return None
        odd = strokes > order[step]
    chosen = np.flatnonzero(odd)
    if odd.all() or not odd.any() or chosen[-1] - chosen[0] + 1 != len(chosen):
        return None
    first, last = letters[chosen[0]], letters[chosen[-1]]
    text = "".join(character for character, _, _ in marks)
    while text[first].isascii() and text[first - 1:first].isalnum():  # (whole Latin words: a letter's x is a
        first -= 1                                                      # guess, its ink may be a neighbour's;
    while text[last].isascii() and text[last + 1:last + 2].isalnum():   # most of the words' letters must be
        last += 1                                                       # set off)
    if len(chosen) < 2 / 3 * sum(character.isalnum() for character in text[first:last + 1]):
        return None
    return normalise(text[first:last + 1])


def normalise(text: str) -> str:
    """NFKC (full-width forms to ASCII), curly quotes straight, whitespace collapsed and dropped
    next to CJK characters (the model reads gaps between Chinese words as spaces), an apostrophe
    between letters kept tight (the model reads a space after it, or a double quote)."""
    text = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).translate(_QUOTES)).strip()
    text = re.sub(r"(?<=[A-Za-z])['\"] ?(?=[A-Za-z])", "'", text)  # ("o' clock", 'woman" s': an apostrophe)
    return re.sub(rf"(?<=[{_CJK}]) | (?=[{_CJK}])", "", text)


def extract_target(text: str, pattern: re.Pattern | TimedPattern | None = None) -> str | None:
    """The target of a prompt's text (lines separated by newlines), or None: ``pattern``'s named group
    (searched in the lines joined by spaces) when given; else a quoted or bracketed word; else the
    first line a Chinese or English template knows ("请点击下图中所有的雨伞", "Select all images with
    umbrellas"; a line that ends with the lead-in takes the next line as its target)."""
    lines = [normalise(line) for line in text.splitlines() if line.strip()]
    if pattern is not None:
        found = pattern.search(" ".join(lines))
        target = normalise(next(iter(found.groupdict().values())) or "") if found else ""
        return target or None
    bracketed = _BRACKETED.search(" ".join(lines))
    if bracketed:
        return _checked(bracketed["target"])
    for i, line in enumerate(lines):
        following = lines[i + 1] if i + 1 < len(lines) else ""
        target = _zh_target(line, following) if re.search(f"[{_CJK}]", line) else _en_target(line, following)
        if target is not None:
            return target
    return None


def _zh_target(line: str, following: str) -> str | None:
    for clause in _ZH_CLAUSES.split(re.sub(r"[:：\s]", "", line)):
        lead = _ZH_LEAD.match(clause)
        if not lead:
            continue
        rest = clause[lead.end():] or _ZH_CLAUSES.split(re.sub(r"[:：\s]", "", following))[0]
        containing = _ZH_CONTAINING.match(rest)
        return _checked(containing["target"] if containing else _ZH_TAIL.sub("", rest) or rest)  # (照片 is a target)
    return None


def _en_target(line: str, following: str) -> str | None:
    for sentence in _EN_SENTENCES.split(line):
        lead = _EN_LEAD.match(sentence)
        if not lead:
            continue
        rest = sentence[lead.end():] or _EN_SENTENCES.split(following)[0]
        if not rest and re.fullmatch(_EN_OBJECTS, sentence.split()[-1], re.IGNORECASE):
            rest = sentence.split()[-1]  # (nothing after the lead-in, nor below it: "Choose the cells")
        target = _checked(rest)
        return target if target is None or lead["article"] else singular(target)
    return None


def _checked(target: str) -> str | None:
    """A target, stripped of punctuation and brackets; None when empty, a sentence, a button's word,
    or a pointer to a picture ("the example", "与示例相同": an icon the reader did not find)."""
    target = re.sub(r"\s*\([^()]*\)$", "", target).strip(" .,:;!?'\"“”「」『』【】《》〈〉[]()")  # (a count: "(3)")
    if not target or len(target) > _MAX_TARGET or target.casefold() in _CONTROLS or _POINTERS.search(target):
        return None
    return target


def singular(phrase: str) -> str:
    """``phrase`` with its last word made singular by the common English rules ("buses" -> "bus",
    "cherries" -> "cherry", "watches" -> "watch", "taxis" -> "taxi"); words that end in s either way stay."""
    head, _, word = phrase.rpartition(" ")
    lower = word.casefold()
    if not word.isalpha() or lower in _ALWAYS_S or len(lower) < 3:
        return phrase
    if lower in _IRREGULAR:
        single = _IRREGULAR[lower]
    elif lower[:-1] in _IE:
        single = lower[:-1]
    elif lower.endswith("ies"):
        single = lower[:-3] + "y"
    elif lower.endswith(("ches", "shes", "xes", "sses", "zzes")):
        single = lower[:-2]
    elif lower.endswith("s") and not lower.endswith(("ss", "us")):
        single = lower[:-1]
    else:
        return phrase
    if word[0].isupper():
        single = single[0].upper() + single[1:]
    return f"{head} {single}" if head else single
