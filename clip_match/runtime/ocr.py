"""Reading printed lines of text offline: PP-OCRv4's recognition model through onnxruntime.

Why this shape: PP-OCR's usual pipeline (RapidOCR) first runs a text detector, and with it OpenCV,
shapely and pyclipper (+320 MiB installed). A puzzle's prompt is one or a few lines of text on a
flat bar, so lines are found here by ink projection instead, and only the recognition model runs,
on onnxruntime, numpy and Pillow: the runtime's own dependencies. The model is vendored unmodified
(``assets/ocr/NOTICE.txt``) and checked against its sha256 when loaded.

1. ink: pixels that differ from the bar's colour by more than 0.4 of the strongest contrast
   (32 to 80 levels), so dark-on-light, white-on-blue and a red highlighted word are all ink;
2. lines: runs of rows with ink; segments: runs of columns with ink, joined again where the gap is
   under 1.2 x the line's text height (word spaces), a piece 1.5 x taller than the text (an icon)
   kept apart;
3. each segment, with a margin, dark-on-light (inverted on a dark bar), is resized to 48 px high and
   padded to at least 160 px wide (RapidOCR pads to 320 px: the model's time is linear in width, 12 ms at 320
   and 6.5 ms at 160 on one thread, and on 600 development screenshots 160 read every target that 320 did, while
   128 lost icons, whose low character scores tell them from text);
4. CTC greedy decoding over the dictionary stored in the model's metadata ("blank" first, a space
   last, as RapidOCR's CTCLabelDecode);
5. the Chinese model often drops the space between two Latin words ("Selectall") but still gives
   it some probability there: a space is put back where that probability and an ink gap agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from ..errors import ClipMatchError
from .bundle import sha256_file

MODEL = Path(__file__).resolve().parents[1] / "assets" / "ocr" / "ch_PP-OCRv4_rec_infer.onnx"
MODEL_SHA256 = "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"
HEIGHT = 48            # the model's input height
MIN_WIDTH = 160        # inputs are padded to at least this width (see the module docstring)
MARGIN = 0.2           # of a segment's height, kept around it
SPLIT_GAP = 1.2        # x text height: a wider gap between pieces of a line starts a new segment
TALL = 1.5             # x text height: a piece this tall is not text of the line (an icon)
APART = 0.5            # x text height: a compact piece this far from the rest at a line's end stays apart
MIN_SCORE = 0.5        # mean character probability under which a reading is dropped
# Putting back spaces between Latin words: P(space) between the two characters' time steps and a
# blank ink gap (x text height) that agree, or a gap this wide alone (measured on 840 rendered
# English bands: 97.6 % of the dropped spaces back).
SPACE_P, SPACE_GAP, WIDE_GAP = 0.02, 0.2, 0.35

Box = tuple[int, int, int, int]  # left, top, right, bottom (exclusive)


@dataclass(frozen=True)
class TextLine:
    """What one segment reads: its text, the mean probability of its characters, its box, and the
    centre x of each character of ``text`` (image pixels)."""

    text: str
    score: float
    box: Box
    xs: tuple[float, ...]


def runs(mask: np.ndarray, max_gap: int = 0) -> list[tuple[int, int]]:
    """[start, end) runs of True in a 1-D mask, bridging gaps of at most ``max_gap`` False."""
    index = np.flatnonzero(mask)
    if index.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(index) > max_gap + 1)
    starts = np.concatenate(([index[0]], index[breaks + 1]))
    ends = np.concatenate((index[breaks], [index[-1]])) + 1
    return list(zip(starts.tolist(), ends.tolist()))


def contrast(rgb: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Per pixel, the largest channel difference from the background colour (0-255)."""
    return np.abs(rgb.astype(np.int16) - np.asarray(background, np.int16)).max(axis=2)


def ink_mask(rgb: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Pixels that stand out from the background: more than 0.4 of the strongest contrast (the
    99.5th percentile), within 32..80 levels (JPEG noise stays below, faint anti-aliasing too)."""
    distance = contrast(rgb, background)
    threshold = min(80.0, max(32.0, 0.4 * float(np.percentile(distance, 99.5))))
    return distance > threshold


def find_segments(ink: np.ndarray) -> list[list[Box]]:
    """Lines of segments, top to bottom, each left to right. Rows with one ink pixel or none part lines;
    columns without ink part a line's pieces, joined again across gaps under SPLIT_GAP x the text
    height; a piece TALL x the text height, or a compact one APART from the rest at either end of the
    line, stays a segment of its own (an icon beside the text, or a word set apart), and
    a compact piece that spans two lines of the others (an icon beside a two-line prompt) is a line
    of its own. Rows or columns of ink across nearly all of ``ink`` are rules and borders: left out."""
    height, width = ink.shape
    ink = ink & (ink.sum(axis=1, keepdims=True) <= 0.9 * width) & (ink.sum(axis=0, keepdims=True) <= 0.9 * height)
    return _lines(ink, 0, height)


def _lines(ink: np.ndarray, top: int, bottom: int) -> list[list[Box]]:
    lines: list[list[Box]] = []
    for start, end in runs(ink[top:bottom].sum(axis=1) > 1, max_gap=1):
        start, end = top + start, top + end
        if end - start < 5:
            continue  # a speck or a rule, not text
        pieces = []
        for left, right in runs(ink[start:end].any(axis=0), max_gap=max(2, (end - start) // 6)):
            rows = np.flatnonzero(ink[start:end, left:right].any(axis=1))
            pieces.append((left, start + int(rows[0]), right, start + int(rows[-1]) + 1))
        bridge = _bridge(ink[start:end], pieces)
        if bridge is None:
            lines.append(_merge(pieces))
            continue
        left, piece_top, right, piece_bottom = bridge
        rest = ink.copy()
        rest[piece_top:piece_bottom, left:right] = False
        lines += sorted([[bridge], *_lines(rest, start, end)], key=lambda line: line[0][1] + line[0][3])
    return lines


def _bridge(line: np.ndarray, pieces: list[Box]) -> Box | None:
    """The tallest compact piece (no wider than 1.5 x its height) without which the other pieces' rows
    fall into two runs or more of at least 4 rows: an icon beside two lines of text. ``line``: the
    line's rows of the ink mask."""
    for piece in sorted(pieces, key=lambda box: box[1] - box[3]):
        left, piece_top, right, bottom = piece
        if len(pieces) < 2 or right - left > 1.5 * (bottom - piece_top):
            continue
        others = [line[:, l:r].any(axis=1) for l, t, r, b in pieces if (l, t, r, b) != piece]
        if sum(end - start >= 4 for start, end in runs(np.logical_or.reduce(others), max_gap=1)) > 1:
            return piece
    return None


def _merge(pieces: list[Box]) -> list[Box]:
    heights = np.array([b[3] - b[1] for b in pieces], float)
    widths = np.array([b[2] - b[0] for b in pieces], float)
    order = np.argsort(heights)
    cumulative = np.cumsum(widths[order])
    text_height = heights[order][np.searchsorted(cumulative, cumulative[-1] / 2)]  # width-weighted median
    tall = heights > TALL * text_height
    if len(pieces) > 1:  # a compact piece set off at either end of the line: an icon beside the text, or a word
        for end, neighbour in ((0, 1), (len(pieces) - 1, len(pieces) - 2)):
            gap = max(pieces[neighbour][0] - pieces[end][2], pieces[end][0] - pieces[neighbour][2])
            tall[end] |= widths[end] <= 3 * heights[end] and gap >= APART * text_height
    segments, current, current_tall = [], list(pieces[0]), tall[0]
    for piece, piece_tall in zip(pieces[1:], tall[1:]):
        if not current_tall and not piece_tall and piece[0] - current[2] <= SPLIT_GAP * text_height:
            current = [current[0], min(current[1], piece[1]), piece[2], max(current[3], piece[3])]
        else:
            segments.append(tuple(current))
            current, current_tall = list(piece), piece_tall
    segments.append(tuple(current))
    return segments


class TextReader:
    """The vendored PP-OCRv4 recognition model, loaded once (about 0.2 s) after its sha256 check."""

    def __init__(self, threads: int = 1, model: Path = MODEL):
        if not model.is_file():
            raise ClipMatchError(f"{model}: the OCR model is missing; reinstall clip-match (it ships in the package)")
        if sha256_file(model) != MODEL_SHA256:
            raise ClipMatchError(f"{model}: sha256 mismatch (expected {MODEL_SHA256[:12]}...); the OCR model was "
                                 "changed or damaged: reinstall clip-match")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        characters = self.session.get_modelmeta().custom_metadata_map["character"].splitlines()
        self.characters = np.array(["", *characters, " "], dtype=object)  # CTC blank first, space last

    def read(self, rgb: np.ndarray, box: Box, background: np.ndarray) -> TextLine:
        """Recognise the text in ``box`` of ``rgb`` (whose bar has the colour ``background``)."""
        crop, left, scale = _crop(rgb, box, background)
        width = max(1, math.ceil(crop.shape[1] * scale))
        resized = np.asarray(Image.fromarray(crop).resize((width, HEIGHT), Image.BILINEAR), np.float32)
        batch = np.zeros((1, 3, HEIGHT, max(width, MIN_WIDTH)), np.float32)
        batch[0, :, :, :width] = (resized.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
        probabilities = self.session.run(None, {self.input: batch})[0][0]
        best = probabilities.argmax(axis=1)
        keep = np.ones(best.shape, bool)
        keep[1:] = best[1:] != best[:-1]
        keep &= best != 0
        steps = np.flatnonzero(keep)
        if steps.size == 0:
            return TextLine("", 0.0, box, ())
        step_px = batch.shape[3] / probabilities.shape[0]  # input pixels per time step (8)
        xs = left + (steps + 0.5) * step_px / scale
        space = probabilities[:, -1]
        space_p = [0.0] + [float(space[a:b + 1].max()) for a, b in zip(steps, steps[1:])]
        text, xs = _add_spaces("".join(self.characters[best[steps]]), xs.tolist(), space_p,
                               _ink_gaps(rgb, box, background))
        return TextLine(text, float(probabilities.max(axis=1)[steps].mean()), box, tuple(xs))


def _crop(rgb: np.ndarray, box: Box, background: np.ndarray) -> tuple[np.ndarray, int, float]:
    """The box with a margin (the background colour beyond the image), dark on light; its left x in
    the image, and the scale to the model's height."""
    left, top, right, bottom = box
    margin = max(2, round(MARGIN * (bottom - top)))
    out = np.empty((bottom - top + 2 * margin, right - left + 2 * margin, 3), np.uint8)
    out[:] = np.asarray(background, np.uint8)
    height, width = rgb.shape[:2]
    y0, y1 = max(0, top - margin), min(height, bottom + margin)
    x0, x1 = max(0, left - margin), min(width, right + margin)
    out[y0 - top + margin:y1 - top + margin, x0 - left + margin:x1 - left + margin] = rgb[y0:y1, x0:x1]
    grey = out.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    if float(np.asarray(background, float) @ (0.299, 0.587, 0.114)) < 128:
        grey = 255 - grey
    return np.repeat(grey.astype(np.uint8)[:, :, None], 3, axis=2), left - margin, HEIGHT / out.shape[0]


def _ink_gaps(rgb: np.ndarray, box: Box, background: np.ndarray) -> list[tuple[float, float]]:
    """(centre x, width / text height) of each run of blank columns in ``box``. Blank: no pixel
    differs from the background by 0.3 of the text's contrast, so thin anti-aliased stems ("l",
    "i") still count as ink."""
    left, top, right, bottom = box
    distance = contrast(rgb[top:bottom, left:right], background)
    ink = distance > max(16.0, 0.3 * float(np.percentile(distance, 99)))
    rows = np.flatnonzero(ink.any(axis=1))
    if rows.size == 0:
        return []
    height = float(rows[-1] - rows[0] + 1)
    columns = runs(ink.any(axis=0))
    return [(left + (a_end + b_start) / 2, (b_start - a_end) / height)
            for (_, a_end), (b_start, _) in zip(columns, columns[1:])]


def _add_spaces(text: str, xs: list[float], space_p: list[float],
                gaps: list[tuple[float, float]]) -> tuple[str, list[float]]:
    """Spaces back between Latin words (see SPACE_P); a gap must also be at least 0.6 of the median
    gap of the spaces the model did read, so the loose "q u" of a wide font stays one word."""
    def gap_between(a: float, b: float) -> float:
        return max((width for x, width in gaps if a < x < b), default=0.0)

    read = [gap_between(xs[k - 1], xs[k + 1]) for k in range(1, len(text) - 1) if text[k] == " "]
    floor = 0.6 * float(np.median(read)) if read else 0.0
    out, out_xs = [], []
    for k, character in enumerate(text):
        before = text[k - 1] if k else " "
        if before != " " and character != " " and before.isascii() and character.isascii():
            gap = gap_between(xs[k - 1], xs[k])
            if gap >= floor and (gap >= WIDE_GAP or (gap >= SPACE_GAP and space_p[k] >= SPACE_P)):
                out.append(" ")
                out_xs.append((xs[k - 1] + xs[k]) / 2)
        out.append(character)
        out_xs.append(xs[k])
    return "".join(out), out_xs
