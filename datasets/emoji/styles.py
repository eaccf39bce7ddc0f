"""The central list of emoji art styles: every style here may train, validate and calibrate a model.

Each style's art comes from one pinned source (an npm package or a Debian font package) under its
own licence (ATTRIBUTION.md). `build.py` renders these sources into sprite sheets; `glyphs.py`
and `generate.py` accept exactly these names. Some emoji sets are reserved for held-out
evaluation and must never appear here: tests/test_emoji_sources.py names them and fails if any
of this package's source or style lists does.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    package: str         # npm package or Debian package name
    version: str         # pinned version
    registry: str        # "npm" or "debian"
    licence: str         # the images' licence (SPDX id where one exists)
    monochrome: bool = False  # black glyphs on transparent: drawn in a random ink colour

    def describe(self) -> str:
        return f"{self.package}@{self.version}" if self.registry == "npm" else f"Debian {self.package} {self.version}"


STYLE_SOURCES: dict[str, Source] = {
    # the two original styles: the shipped demo model trained on these sheets, tile for tile
    "noto": Source("fonts-noto-color-emoji", "2.042-0+deb12u1", "debian", "Apache-2.0"),
    "fluent": Source("@iconify-json/fluent-emoji-flat", "1.2.6", "npm", "MIT"),
    # colour
    "fluent-emoji": Source("@iconify-json/fluent-emoji", "1.2.7", "npm", "MIT"),  # 3D-like shading
    "noto-v1": Source("@iconify-json/noto-v1", "1.2.5", "npm", "Apache-2.0"),     # the older "blob" Noto
    "emojione": Source("@iconify-json/emojione", "1.2.3", "npm", "CC-BY-4.0"),
    "emojione-v1": Source("@iconify-json/emojione-v1", "1.2.3", "npm", "CC-BY-SA-4.0"),
    "fxemoji": Source("@iconify-json/fxemoji", "1.2.2", "npm", "CC-BY-4.0"),  # art: CC BY 4.0 upstream
    "streamline-emojis": Source("@iconify-json/streamline-emojis", "1.2.4", "npm", "CC-BY-4.0"),
    # monochrome
    "fluent-emoji-high-contrast": Source("@iconify-json/fluent-emoji-high-contrast", "1.2.6", "npm", "MIT",
                                              monochrome=True),
    "emojione-monotone": Source("@iconify-json/emojione-monotone", "1.2.1", "npm", "CC-BY-4.0",
                                     monochrome=True),
    "noto-emoji-mono": Source("@fontsource/noto-emoji", "5.3.2", "npm", "OFL-1.1", monochrome=True),
    "symbola": Source("fonts-symbola", "2.60-1.1", "debian", "free for any use (Symbola licence)",
                           monochrome=True),
}
STYLES: tuple[str, ...] = tuple(STYLE_SOURCES)
LABELS_SOURCE = Source("emojibase-data", "17.0.0", "npm", "MIT")  # names and tags of every emoji
