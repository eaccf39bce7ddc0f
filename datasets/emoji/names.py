"""Build ``clip_match/assets/emoji_names.json``: every emoji's CLDR name in Chinese and English.

The runtime spells emoji out with these names before tokenising (the BERT vocabulary has no emoji:
🌂 alone is one [UNK]), so a prompt "🌂" is read as "收起的伞". Run by a maintainer; the output is
committed:

    python -m datasets.emoji.names --work /tmp/emoji_build     # runs `npm install` there

Source: npm ``emojibase-data`` (MIT), built from Unicode CLDR annotations (Unicode License v3), the
same source as the emoji dataset's labels. Skin-tone variants share their base emoji's names; keys
carry no variation selector (U+FE0F), which the runtime drops before looking up.
"""
from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

PACKAGE = "emojibase-data@17.0.0"
OUT = Path(__file__).resolve().parents[2] / "clip_match" / "assets" / "emoji_names.json"


def read_names(data_dir: Path) -> dict[str, list[str]]:
    """emoji (without U+FE0F) -> [Chinese name, English name], skin tones included."""
    languages = [json.loads((data_dir / lang / "data.json").read_text(encoding="utf-8")) for lang in ("zh", "en")]
    labels = [{entry["hexcode"]: entry["label"] for entry in entries} for entries in languages]
    names: dict[str, list[str]] = {}
    for entry in languages[1]:
        if "group" not in entry or entry["hexcode"] not in labels[0]:
            continue  # components such as lone regional-indicator letters
        pair = [labels[0][entry["hexcode"]], entry["label"]]
        for variant in [entry, *entry.get("skins", [])]:
            names[variant["emoji"].replace("\ufe0f", "")] = pair
    return names


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m datasets.emoji.names", description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for `npm install`")
    args = parser.parse_args()
    data_dir = args.work / "node_modules" / "emojibase-data"
    if not data_dir.is_dir():
        subprocess.run(["npm", "install", "--silent", "--prefix", str(args.work), PACKAGE], check=True)
    names = read_names(data_dir)
    record = {"source": f"npm {PACKAGE} (MIT), from Unicode CLDR annotations (Unicode License v3)",
              "names": dict(sorted(names.items()))}
    OUT.write_text(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(names)} emoji")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
