#!/usr/bin/env python3
"""Build the emoji tile dataset: one sprite sheet per art style (styles.py) plus labels.json.

Run by a maintainer; the outputs are committed, so nothing needs npm, the fonts or an SVG
rasteriser at run time:

    pip install resvg-py==0.5.0          # or: pip install -e '.[emoji-build]'
    apt-get install fonts-noto-color-emoji=2.042-0+deb12u1 fonts-symbola=2.60-1.1
    python -m datasets.emoji.build --work /tmp/emoji_build                  # runs `npm install` there
    python -m datasets.emoji.build --work /tmp/emoji_build --styles symbola  # rebuild only these sheets

Without root, unpack the Debian packages instead (`apt-get download PACKAGE=VERSION`, then
`dpkg-deb -x PACKAGE_*.deb DIR`) and pass `--fonts-root DIR`. The font files are pinned by sha256.

Selection: every fully-qualified emoji of the animals-nature, food-drink, travel-places,
activities and objects groups (emojibase-data) that both original styles (noto, fluent) draw:
853 emoji, in emojibase order, which fixes every index. Every other style draws the ones its
source has; a glyph that is missing, excluded, fails or renders blank is skipped and counted
(build_report.json), never a blank tile. A build into a folder whose labels.json lists other
emoji stops: the committed sheets' indices would no longer match.

Output (``--out``, default this folder): ``<style>.webp`` (WebP q90, lossless alpha; tile j, at
row j // columns and column j % columns, is emoji ``covers[j]`` of the style's labels.json entry),
``labels.json`` (names, tags, geometry; per style: sheet, source, licence, monochrome, covers and,
for SVG sets, the source icon of each tile) and ``build_report.json`` (per style: tiles, skips by
reason, every failure). Styles not rebuilt keep their entries.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.metadata
import io
import json
import re
import shlex
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from clip_match.errors import ClipMatchError

from .styles import LABELS_SOURCE, STYLE_SOURCES, STYLES

HERE = Path(__file__).resolve().parent
OBJECT_GROUPS = {3: "animals-nature", 4: "food-drink", 5: "travel-places", 6: "activities", 7: "objects"}
RESVG = ("resvg-py", "0.5.0")
# Icon names of the SVG sets that ship no chars.json follow Iconify's naming, the same as these tables.
NAME_TABLES = ("fluent-emoji-flat", "fluent-emoji-high-contrast")
NPM_PACKAGES = {source.package: source.version
                for source in (LABELS_SOURCE, *STYLE_SOURCES.values()) if source.registry == "npm"}
FONT_FILES = {  # style -> (file under the package's root, sha256); Debian files lie under --fonts-root
    "noto": ("usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
             "e5899ed38b8ed83e08bd3ac5de09791e9d19d288333a796de1d35ad17396f1ec"),
    "symbola": ("usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf",
                "af8bd8cc9c808272034651cb5ebf6c38370ae536fe631eb89462f127f11e793f"),
    "noto-emoji-mono": ("files/noto-emoji-emoji-400-normal.woff", None),  # npm: pinned by version
}
ICONIFY = {  # style -> how its icon names map to code points (default: NAME_TABLES, emojibase, Unicode names)
    "fluent": {"chars_from": "fluent-emoji-flat"},
    "fluent-emoji": {"chars_from": "fluent-emoji-flat"},  # the same icon names as the flat set
    "noto-v1": {}, "emojione": {}, "emojione-v1": {}, "emojione-monotone": {},
    # fxemoji's names are not CLDR names ('dog' is U+1F436 DOG FACE): map by upstream file names only
    "fxemoji": {"codepoints": HERE / "fxemoji_codepoints.json"},
    "streamline-emojis": {"strip_variant": True},  # 'pizza-1', 'pizza-2': variants of one emoji
    "fluent-emoji-high-contrast": {"chars_from": "fluent-emoji-high-contrast"},
}
# The older sets draw U+1F52B as a revolver; labels.json says "water pistol" (checked by eye).
EXCLUDED = {"1F52B": ("noto-v1", "emojione", "emojione-v1", "emojione-monotone", "fxemoji", "streamline-emojis",
                      "symbola")}
OVERSAMPLE = 4         # SVGs and mono fonts are drawn at 4x the tile, cropped, then shrunk
MIN_VISIBLE = 0.002    # share of the drawing that must be visible, else the glyph counts as blank
NOTO_SIZE = 109        # the only size the CBDT bitmap font draws at
SKIP_REASONS = ("not in the source", "excluded", "failed", "blank")


class Skip(Exception):
    """A glyph a style does not draw; ``reason`` is one of SKIP_REASONS."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


def norm(hexcode: str) -> str:
    """Upper-case code points joined by '-', without variation selectors: one key for every table."""
    return "-".join(p.upper() for p in re.split(r"[-_ ]", hexcode.strip()) if p and p.upper() not in ("FE0F", "FE0E"))


def square(rgba: Image.Image, size: int) -> Image.Image:
    """Crop to the visible pixels, centre on a transparent square and resize to ``size``."""
    alpha = rgba.getchannel("A")
    if (np.asarray(alpha) > 8).mean() < MIN_VISIBLE:
        raise Skip("blank", "nothing visible drawn")
    rgba = rgba.crop(alpha.point(lambda a: 255 if a > 8 else 0).getbbox())
    side = max(rgba.size)
    canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    canvas.paste(rgba, ((side - rgba.width) // 2, (side - rgba.height) // 2))
    return canvas.resize((size, size), Image.LANCZOS)


# ---------------------------------------------------------------------------------------- sources

def npm_sources(work: Path, install: bool) -> Path:
    """``work``/node_modules with every pinned npm package, installed there first unless ``install`` is off."""
    modules = work / "node_modules"

    def missing() -> list[str]:
        wrong = []
        for package, version in NPM_PACKAGES.items():
            manifest = modules / package / "package.json"
            if not manifest.is_file() or json.loads(manifest.read_text(encoding="utf-8")).get("version") != version:
                wrong.append(f"{package}@{version}")
        return wrong

    command = ["npm", "install", "--silent", "--prefix", str(work), *(f"{p}@{v}" for p, v in NPM_PACKAGES.items())]
    if missing() and install:
        work.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run(command, check=True)
        except (OSError, subprocess.CalledProcessError) as error:
            print(f"build.py: npm install failed: {error}", file=sys.stderr)
    if missing():
        raise ClipMatchError(f"npm packages not installed in {modules}: {', '.join(missing())}; "
                             f"install them with: {shlex.join(command)}")
    return modules


def font_file(style: str, modules: Path, fonts_root: Path) -> Path:
    """The style's font file, checked against its pinned sha256 (Debian fonts)."""
    source = STYLE_SOURCES[style]
    relative, sha256 = FONT_FILES[style]
    if source.registry == "npm":
        return modules / source.package / relative
    path = fonts_root / relative
    install = (f"apt-get install {source.package}={source.version} (or: apt-get download "
               f"{source.package}={source.version} && dpkg-deb -x {source.package}_*.deb DIR, then --fonts-root DIR)")
    if not path.is_file():
        raise ClipMatchError(f"{source.describe()} is not installed ({path} not found); install it with: {install}")
    if hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
        raise ClipMatchError(f"{path} is not the font of {source.describe()} (sha256 differs); "
                             f"install that version with: {install}")
    return path


def resvg_module():
    """resvg-py, the SVG renderer (cairosvg drops the blur filters of fluent-emoji's shading)."""
    try:
        import resvg_py
    except ImportError:
        raise ClipMatchError(f"{RESVG[0]} is not installed; install it with: pip install {RESVG[0]}=={RESVG[1]}") from None
    version = importlib.metadata.version(RESVG[0])
    if version != RESVG[1]:
        print(f"build.py: warning: {RESVG[0]} {version}, sheets were built with {RESVG[1]}", file=sys.stderr)
    return resvg_py


# ------------------------------------------------------------------------------------- renderers

def slug(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


@functools.cache
def reference_names(modules: Path) -> dict[str, str]:
    """Iconify-style icon name -> code points, first source wins: Iconify's own name tables, then
    emojibase's CLDR labels, then Unicode character names (older sets use them)."""
    names: dict[str, str] = {}
    for prefix in NAME_TABLES:
        for code, name in json.loads((modules / "@iconify-json" / prefix / "chars.json").read_text()).items():
            names.setdefault(name, norm(code))
    entries = json.loads((modules / "emojibase-data/en/data.json").read_text(encoding="utf-8"))
    for entry in entries:
        names.setdefault(slug(entry["label"]), norm(entry["hexcode"]))
    for entry in entries:
        points = [p for p in norm(entry["hexcode"]).split("-") if p != "200D"]
        if len(points) == 1 and unicodedata.name(chr(int(points[0], 16)), None):
            names.setdefault(slug(unicodedata.name(chr(int(points[0], 16)))), norm(entry["hexcode"]))
    return names


class IconifyStyle:
    """One @iconify-json SVG set, drawn with resvg; ``currentColor`` (monochrome sets) becomes black."""

    def __init__(self, style: str, modules: Path, resvg, chars_from: str | None = None,
                 codepoints: Path | None = None, strip_variant: bool = False) -> None:
        self.resvg = resvg
        package = modules / STYLE_SOURCES[style].package
        data = json.loads((package / "icons.json").read_text(encoding="utf-8"))
        self.icons, self.aliases = data["icons"], data.get("aliases", {})
        self.width, self.height = data.get("width", 16), data.get("height", 16)
        known = self.icons.keys() | self.aliases.keys()
        self.by_hex: dict[str, str] = {}
        if chars_from:
            for code, icon in json.loads((modules / "@iconify-json" / chars_from / "chars.json").read_text()).items():
                if icon in known:
                    self.by_hex.setdefault(norm(code), icon)
        if codepoints:
            for icon, code in json.loads(codepoints.read_text())["names"].items():
                if icon in known:
                    self.by_hex.setdefault(norm(code), icon)
        else:  # also after chars.json: it omits some alias-only icons
            names = reference_names(modules)
            # icons before aliases; plain names before '-1' before '-2' variants
            for icon in sorted(self.icons, key=lambda n: (bool(re.search(r"-\d+$", n)), n)) + sorted(self.aliases):
                key = re.sub(r"-\d+$", "", icon) if strip_variant and icon not in names else icon
                if key in names:
                    self.by_hex.setdefault(names[key], icon)

    def svg(self, icon: str) -> tuple[str, bool, bool, int]:
        """The icon's SVG document (aliases resolved), its horizontal and vertical flips, its quarter turns."""
        hflip = vflip = False
        rotate, box = 0, {}
        while icon in self.aliases:
            alias = self.aliases[icon]
            hflip, vflip = hflip ^ bool(alias.get("hFlip")), vflip ^ bool(alias.get("vFlip"))
            rotate += alias.get("rotate", 0)
            box = {**{k: v for k, v in alias.items() if k in ("width", "height", "left", "top")}, **box}
            icon = alias["parent"]
        data = self.icons[icon]
        hflip, vflip = hflip ^ bool(data.get("hFlip")), vflip ^ bool(data.get("vFlip"))
        width, height = box.get("width", data.get("width", self.width)), box.get("height", data.get("height", self.height))
        left, top = box.get("left", data.get("left", 0)), box.get("top", data.get("top", 0))
        body = data["body"].replace("currentColor", "#000000")
        document = (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
                    f'width="{width}" height="{height}" viewBox="{left} {top} {width} {height}">{body}</svg>')
        return document, hflip, vflip, (rotate + data.get("rotate", 0)) % 4

    def draw(self, hexcode: str, text: str, size: int) -> tuple[Image.Image, str | None]:
        icon = self.by_hex.get(norm(hexcode))
        if icon is None:
            raise Skip("not in the source")
        document, hflip, vflip, quarter = self.svg(icon)
        if "class=" in document and "<style" not in document:  # fxemoji 'tramcar' lost its stylesheet: all black
            raise Skip("failed", f"{icon}: CSS classes without a stylesheet")
        try:
            png = self.resvg.svg_to_bytes(svg_string=document, width=size * OVERSAMPLE, height=size * OVERSAMPLE,
                                          skip_system_fonts=True)
        except ValueError as error:
            raise Skip("failed", f"{icon}: resvg: {error}") from None
        image = Image.open(io.BytesIO(bytes(png))).convert("RGBA")
        if hflip:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        if vflip:
            image = image.transpose(Image.FLIP_TOP_BOTTOM)
        if quarter:
            image = image.rotate(-90 * quarter, expand=True)
        return square(image, size), icon


class MonoFontStyle:
    """A monochrome outline font drawn in black with Pillow (raqm shapes ZWJ ligatures).

    Refused: a code point the font draws as its .notdef box, and a sequence that shapes into
    several glyphs (wider than 1.3 single emoji: no ligature)."""

    def __init__(self, path: Path, size: int) -> None:
        self.font = ImageFont.truetype(str(path), size * OVERSAMPLE)
        self.single_width = self.width("\U0001F436")
        self.notdef = {self.mask(c) for c in ("\U0010FFFD", "\U000E0FFF")}  # unassigned: drawn as .notdef

    def width(self, text: str) -> int:
        box = self.font.getbbox(text)
        return box[2] - box[0]

    def mask(self, text: str) -> bytes:
        mask = self.font.getmask(text, mode="L")
        return repr(mask.size).encode() + bytes(mask)

    def draw(self, hexcode: str, text: str, size: int) -> tuple[Image.Image, str | None]:
        points = norm(hexcode).split("-")
        plain = "".join(chr(int(p, 16)) for p in points)  # selectors dropped: a mono font draws the text form
        if any(p != "200D" and self.mask(chr(int(p, 16))) in self.notdef for p in points):
            raise Skip("not in the source")
        if len(points) > 1 and self.width(plain) > self.single_width * 1.3:
            raise Skip("not in the source", "sequence drawn as several glyphs")
        left, top, right, bottom = self.font.getbbox(plain)
        pad = size
        canvas = Image.new("RGBA", (right - left + 2 * pad, bottom - top + 2 * pad), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text((pad - left, pad - top), plain, font=self.font, fill="black")
        return square(canvas, size), None


class NotoColorStyle:
    """Noto Color Emoji (CBDT bitmaps); refuses sequences the font shows as several glyphs."""

    def __init__(self, path: Path) -> None:
        self.font = ImageFont.truetype(str(path), NOTO_SIZE)
        self.single_width = self.font.getbbox("🐶")[2]

    def draw(self, hexcode: str, text: str, size: int) -> tuple[Image.Image, str | None]:
        width = self.font.getbbox(text)[2]
        if width > self.single_width * 1.3:
            raise Skip("not in the source", "sequence drawn as several glyphs")
        canvas = Image.new("RGBA", (width + 20, NOTO_SIZE * 2), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text((10, 10), text, font=self.font, embedded_color=True)
        probe = np.asarray(canvas)
        if probe[..., 3].max() == 0 or probe[..., :3][probe[..., 3] > 0].std() < 1.0:
            raise Skip("not in the source", "no colour glyph")
        return square(canvas, size), None


def renderer(style: str, modules: Path, fonts_root: Path, size: int):
    """The object that draws ``style``: ``draw(hexcode, text, size) -> (tile, source icon or None)``."""
    if style == "noto":
        return NotoColorStyle(font_file(style, modules, fonts_root))
    if style in FONT_FILES:
        return MonoFontStyle(font_file(style, modules, fonts_root), size)
    return IconifyStyle(style, modules, resvg_module(), **ICONIFY[style])


def draw_tile(style: str, drawer, entry: dict, size: int) -> tuple[Image.Image, str | None]:
    """One tile of ``entry`` (an emojibase entry) in ``style``, or Skip."""
    if style in EXCLUDED.get(norm(entry["hexcode"]), ()):
        raise Skip("excluded", "the source draws another object than the label says")
    return drawer.draw(entry["hexcode"], entry["emoji"], size)


# ----------------------------------------------------------------------------------------- build

def select(modules: Path, noto, fluent, size: int) -> tuple[list[dict], dict[str, list], list[str]]:
    """The dataset's emoji (labels.json entries, in order), the two original styles' tiles and icons,
    and the candidates left out (not drawn by both)."""
    zh = json.loads((modules / "emojibase-data/zh/data.json").read_text(encoding="utf-8"))
    en = {e["hexcode"]: e for e in json.loads((modules / "emojibase-data/en/data.json").read_text(encoding="utf-8"))}
    labels, drawn, left_out = [], {"noto": [], "fluent": []}, []
    for entry in sorted(zh, key=lambda e: e.get("order", 1 << 30)):
        if entry.get("group") not in OBJECT_GROUPS or entry["hexcode"] not in en:
            continue
        english = en[entry["hexcode"]]
        try:
            tiles = {"noto": draw_tile("noto", noto, entry, size), "fluent": draw_tile("fluent", fluent, entry, size)}
        except Skip as skip:
            left_out.append(f"{entry['emoji']} {english['label']}: {skip}")
            continue
        for style, tile in tiles.items():
            drawn[style].append(tile)
        labels.append({
            "emoji": entry["emoji"],
            "hexcode": entry["hexcode"],
            "group": OBJECT_GROUPS[entry["group"]],
            "en": english["label"],
            "zh": entry["label"],
            "tags_en": english.get("tags", []),
            "tags_zh": entry.get("tags", []),
        })
    return labels, drawn, left_out


def sheet(tiles: list[Image.Image], size: int, columns: int) -> Image.Image:
    rows = -(-len(tiles) // columns)
    out = Image.new("RGBA", (columns * size, rows * size), (0, 0, 0, 0))
    for i, tile in enumerate(tiles):
        out.paste(tile, ((i % columns) * size, (i // columns) * size))
    return out


def dump(meta: dict) -> str:
    """JSON with each item of a top-level list or object on one line: short, readable diffs."""
    def one(value) -> str:
        return json.dumps(value, ensure_ascii=False)

    parts = []
    for key, value in meta.items():
        if isinstance(value, dict):
            parts.append(f" {one(key)}: {{\n" + ",\n".join(f"  {one(k)}: {one(v)}" for k, v in value.items()) + "\n }")
        elif isinstance(value, list):
            parts.append(f" {one(key)}: [\n" + ",\n".join(f"  {one(v)}" for v in value) + "\n ]")
        else:
            parts.append(f" {one(key)}: {one(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def missing_styles(out: Path) -> list[str]:
    """The styles without a sheet or a labels.json entry in ``out``."""
    entries = read_json(out / "labels.json").get("styles", {})
    return [s for s in STYLES if not (isinstance(entries.get(s), dict) and (out / f"{s}.webp").is_file())]


def build(work: Path, out: Path, styles: list[str], fonts_root: Path = Path("/"), size: int = 80,
          columns: int = 32, install: bool = True) -> dict:
    """Render ``styles`` into ``out`` (see the module docstring); returns the build report of those styles."""
    labels_path, report_path = out / "labels.json", out / "build_report.json"
    old, old_report = read_json(labels_path), read_json(report_path)
    if old and (old.get("tile_size"), old.get("columns")) != (size, columns):
        raise ClipMatchError(f"{labels_path}: tiles of {old.get('tile_size')} px in {old.get('columns')} columns; "
                             f"build with --size {old.get('tile_size')} --columns {old.get('columns')} or into another --out")
    kept = [s for s in STYLES if s not in styles]
    for style in kept:
        if not isinstance(old.get("styles", {}).get(style), dict):
            raise ClipMatchError(f"{labels_path} has no entry for style {style!r}; build it too (--styles ... {style})")
    modules = npm_sources(work, install)
    drawers = {style: renderer(style, modules, fonts_root, size) for style in dict.fromkeys(("noto", "fluent", *styles))}
    labels, original, left_out = select(modules, drawers["noto"], drawers["fluent"], size)
    if old and old.get("emoji") != labels:
        raise ClipMatchError(f"{labels_path} lists other emoji than these sources select: the committed sheets' "
                             "indices would no longer match; build every style into an empty --out")
    print(f"{len(labels)} emoji selected; {len(left_out)} candidates not drawn by both noto and fluent", file=sys.stderr)

    entries, report = {}, {}
    for style in styles:
        tiles, covers, icons = [], [], []
        skipped = dict.fromkeys(SKIP_REASONS, 0)
        failures = {}
        for index, entry in enumerate(labels):
            try:
                tile, icon = original[style][index] if style in original else draw_tile(style, drawers[style], entry, size)
            except Skip as skip:
                skipped[skip.reason] += 1
                if skip.reason != "not in the source":
                    failures[f"{entry['hexcode']} {entry['en']}"] = f"{skip.reason}: {skip}"
                continue
            tiles.append(tile)
            covers.append(index)
            icons.append(icon)
        if not tiles:
            raise ClipMatchError(f"style {style!r} drew none of the {len(labels)} emoji; check its source")
        source = STYLE_SOURCES[style]
        # written under a temporary name: a build that stops leaves every sheet matching labels.json
        sheet(tiles, size, columns).save(out / f".{style}.webp.partial", "WEBP", quality=90, alpha_quality=100,
                                         method=6)
        entries[style] = {"sheet": f"{style}.webp", "source": source.describe(), "licence": source.licence,
                          "monochrome": source.monochrome, "covers": covers}
        if any(icons):
            entries[style]["icons"] = icons
        report[style] = {"tiles": len(tiles), "skipped": skipped, "failures": failures}
        print(f"{style}: {len(tiles)} tiles, skipped {sum(skipped.values())} "
              f"({', '.join(f'{n} {reason}' for reason, n in skipped.items() if n)})", file=sys.stderr)
        for what, why in failures.items():
            print(f"  {what}: {why}", file=sys.stderr)

    meta = {
        "tile_size": size,
        "columns": columns,
        "labels_source": LABELS_SOURCE.describe(),
        "styles": {s: entries[s] if s in entries else old["styles"][s] for s in STYLES},
        "emoji": labels,
    }
    for style in styles:
        (out / f".{style}.webp.partial").replace(out / f"{style}.webp")
    labels_path.write_text(dump(meta), encoding="utf-8")
    full_report = {s: report[s] if s in report else old_report[s] for s in STYLES if s in report or s in old_report}
    report_path.write_text(dump(full_report), encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/emoji_build"), help="folder for the npm packages")
    parser.add_argument("--no-install", dest="install", action="store_false",
                        help="use the npm packages already in --work (default: npm install the missing ones)")
    parser.add_argument("--fonts-root", type=Path, default=Path("/"),
                        help="where the Debian font packages are installed or unpacked (default: /)")
    parser.add_argument("--styles", nargs="+", choices=STYLES,
                        help="sheets to (re)build (default: those missing from --out; the others are kept)")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--size", type=int, default=80, help="tile side in the sprite sheets (px)")
    parser.add_argument("--columns", type=int, default=32)
    args = parser.parse_args(argv)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        styles = args.styles or missing_styles(args.out)
        if not styles:
            print("build.py: every sheet exists; checking the sources and selection only (--styles rebuilds)",
                  file=sys.stderr)
        build(args.work, args.out, list(dict.fromkeys(styles)), args.fonts_root, args.size, args.columns,
              args.install)
    except ClipMatchError as error:
        print(f"build.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
