#!/usr/bin/env python3
"""Build the emoji tile dataset: sprite sheets in two art styles plus English/Chinese labels.

Run once by a maintainer; the outputs are committed so nothing needs the font, npm or an
SVG rasteriser at run time:

    apt-get install fonts-noto-color-emoji          # Noto Color Emoji (Apache-2.0)
    pip install cairosvg                            # rasterises Fluent Emoji Flat SVGs
    python datasets/emoji/build.py --work /tmp/emoji_build   # runs `npm install` there

Selection: every fully-qualified emoji of the animals-nature, food-drink, travel-places,
activities and objects groups (emojibase-data) that both styles can draw. Output
(``datasets/emoji/``): ``noto.webp`` and ``fluent.webp`` (WebP q90 sprite sheets, ~4.5 MB together; tile i at
row i // columns, column i % columns) and ``labels.json`` (names, tags, sheet geometry).
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
NPM_PACKAGES = ("@iconify-json/fluent-emoji-flat@1.2.6", "emojibase-data@17.0.0")
NOTO_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
OBJECT_GROUPS = {3: "animals-nature", 4: "food-drink", 5: "travel-places", 6: "activities", 7: "objects"}
NOTO_SIZE = 109  # the only size the CBDT bitmap font draws at


def npm_sources(work: Path) -> Path:
    """Install the two npm packages into ``work`` (once) and return its node_modules."""
    modules = work / "node_modules"
    if not (modules / "emojibase-data").is_dir() or not (modules / "@iconify-json/fluent-emoji-flat").is_dir():
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "--prefix", str(work), *NPM_PACKAGES], check=True)
    return modules


def square(rgba: Image.Image, size: int) -> Image.Image:
    """Crop to the visible pixels, centre on a transparent square and resize to ``size``."""
    box = rgba.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    if box is None:
        raise ValueError("blank rendering")
    rgba = rgba.crop(box)
    side = max(rgba.size)
    canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    canvas.paste(rgba, ((side - rgba.width) // 2, (side - rgba.height) // 2))
    return canvas.resize((size, size), Image.LANCZOS)


class NotoRenderer:
    """Draws one emoji with Noto Color Emoji; refuses sequences the font shows as several glyphs."""

    def __init__(self) -> None:
        self.font = ImageFont.truetype(str(NOTO_FONT), NOTO_SIZE)
        self.single_width = self.font.getbbox("🐶")[2]

    def __call__(self, emoji: str, size: int) -> Image.Image:
        width = self.font.getbbox(emoji)[2]
        if width > self.single_width * 1.3:  # unsupported ZWJ sequence: drawn as separate glyphs
            raise ValueError("sequence not supported by the font")
        canvas = Image.new("RGBA", (width + 20, NOTO_SIZE * 2), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text((10, 10), emoji, font=self.font, embedded_color=True)
        probe = np.asarray(canvas)
        if probe[..., 3].max() == 0 or probe[..., :3][probe[..., 3] > 0].std() < 1.0:
            raise ValueError("no colour glyph (missing from the font)")
        return square(canvas, size)


class FluentRenderer:
    """Rasterises Fluent Emoji Flat SVGs from the iconify JSON."""

    def __init__(self, modules: Path) -> None:
        import cairosvg  # builder-only dependency

        self.cairosvg = cairosvg
        package = modules / "@iconify-json/fluent-emoji-flat"
        data = json.loads((package / "icons.json").read_text())
        self.icons, self.width, self.height = data["icons"], data["width"], data["height"]
        self.aliases = data.get("aliases", {})
        self.chars = json.loads((package / "chars.json").read_text())

    def name_for(self, hexcode: str) -> str | None:
        code = hexcode.lower()
        for candidate in (code, code.replace("-fe0f", "")):
            if candidate in self.chars:
                return self.chars[candidate]
        return None

    def __call__(self, hexcode: str, size: int) -> Image.Image:
        name = self.name_for(hexcode)
        if name is None:
            raise ValueError("not in Fluent Emoji Flat")
        name = self.aliases.get(name, {}).get("parent", name)
        icon = self.icons[name]
        width, height = icon.get("width", self.width), icon.get("height", self.height)
        svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
               f'viewBox="{icon.get("left", 0)} {icon.get("top", 0)} {width} {height}">{icon["body"]}</svg>')
        png = self.cairosvg.svg2png(bytestring=svg.encode(), output_width=size * 4, output_height=size * 4)
        return square(Image.open(io.BytesIO(png)).convert("RGBA"), size)


def sheet(tiles: list[Image.Image], size: int, columns: int) -> Image.Image:
    rows = -(-len(tiles) // columns)
    out = Image.new("RGBA", (columns * size, rows * size), (0, 0, 0, 0))
    for i, tile in enumerate(tiles):
        out.paste(tile, ((i % columns) * size, (i // columns) * size))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/emoji_build"), help="scratch dir for npm packages")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--size", type=int, default=80, help="tile side in the sprite sheets (px)")
    parser.add_argument("--columns", type=int, default=32)
    args = parser.parse_args(argv)

    modules = npm_sources(args.work)
    zh = json.loads((modules / "emojibase-data/zh/data.json").read_text())
    en = {e["hexcode"]: e for e in json.loads((modules / "emojibase-data/en/data.json").read_text())}
    noto, fluent = NotoRenderer(), FluentRenderer(modules)

    labels, noto_tiles, fluent_tiles, skipped = [], [], [], []
    for entry in sorted(zh, key=lambda e: e.get("order", 1 << 30)):
        if entry.get("group") not in OBJECT_GROUPS or entry["hexcode"] not in en:
            continue
        english = en[entry["hexcode"]]
        try:
            noto_tile = noto(entry["emoji"], args.size)
            fluent_tile = fluent(entry["hexcode"], args.size)
        except ValueError as error:
            skipped.append(f"{entry['emoji']} {english['label']}: {error}")
            continue
        noto_tiles.append(noto_tile)
        fluent_tiles.append(fluent_tile)
        labels.append({
            "emoji": entry["emoji"],
            "hexcode": entry["hexcode"],
            "group": OBJECT_GROUPS[entry["group"]],
            "en": english["label"],
            "zh": entry["label"],
            "tags_en": english.get("tags", []),
            "tags_zh": entry.get("tags", []),
        })

    args.out.mkdir(parents=True, exist_ok=True)
    for style, tiles in (("noto", noto_tiles), ("fluent", fluent_tiles)):
        sheet(tiles, args.size, args.columns).save(args.out / f"{style}.webp", quality=90, alpha_quality=100, method=6)
    meta = {
        "tile_size": args.size,
        "columns": args.columns,
        "styles": {"noto": "noto.webp", "fluent": "fluent.webp"},
        "sources": {"noto": f"Debian fonts-noto-color-emoji ({NOTO_FONT.name})", "fluent": NPM_PACKAGES[0],
                    "labels": NPM_PACKAGES[1]},
        "emoji": labels,
    }
    (args.out / "labels.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{len(labels)} emoji written to {args.out}; skipped {len(skipped)}:", file=sys.stderr)
    for line in skipped:
        print("  " + line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
