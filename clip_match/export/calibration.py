"""Calibration images for static INT8: a bounded, seeded sample of a user's image folder.

Static quantisation fixes each activation's int8 range ahead of time from real inputs, so the
images should look like what the model will see. A fixed-seed sample keeps exports
reproducible; a fifth of it is held out so that verification measures images the ranges were
not fitted to. Images are decoded and preprocessed exactly as the runtime does.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import ClipMatchError
from ..runtime.images import open_image
from ..runtime.images import IMAGE_SUFFIXES, image_files
from ..runtime.preprocess import MEAN, STD, Framing, preprocess

MAX_CALIBRATION = 200  # images used to fit the ranges
MAX_HELD_OUT = 50  # images kept for verification
SEED = 0


@dataclass(frozen=True)
class CalibrationImages:
    """Preprocessed calibration images (float32, (n, 3, r, r)) and where they came from."""

    directory: Path
    calibration: np.ndarray
    held_out: np.ndarray  # empty when the folder has fewer than 5 readable images
    skipped: int  # files with an image suffix that could not be decoded

    @property
    def verification(self) -> np.ndarray:
        """Images to verify on: the held-out ones, or the calibration ones when none are held out."""
        return self.held_out if len(self.held_out) else self.calibration

    def summary(self) -> dict:
        return {"calibration_images": len(self.calibration), "held_out_images": len(self.held_out),
                "skipped_unreadable": self.skipped, "seed": SEED,
                "verified_on": "held-out images" if len(self.held_out) else "calibration images"}


def load_calibration_images(directory: str | os.PathLike, resolution: int,
                            mean=MEAN, std=STD, framing: Framing | None = None) -> CalibrationImages:
    """Up to 250 readable images from ``directory`` (recursively), sampled with a fixed seed:
    one fifth held out (at most 50), the rest (at most 200) for calibration.

    Unreadable files are skipped and counted; a folder without any readable image is an error.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ClipMatchError(f"{directory}: calibration image folder not found")
    paths = image_files(directory)
    np.random.default_rng(SEED).shuffle(paths)
    wanted = MAX_CALIBRATION + MAX_HELD_OUT
    pixels, skipped, first_error = [], 0, None
    with tqdm(total=min(wanted, len(paths)), desc="calibration images", unit="img", disable=None,
              leave=False) as progress:
        for path in paths:
            if len(pixels) == wanted:
                break
            try:
                image = open_image(path)
            except ClipMatchError as error:
                skipped += 1
                first_error = first_error or str(error)
                continue
            pixels.append(preprocess([image], resolution, mean, std, framing=framing)[0])
            progress.update()
    if skipped:
        print(f"note: skipped {skipped} unreadable file(s) in {directory} (first: {first_error})", file=sys.stderr)
    if not pixels:
        raise ClipMatchError(
            f"{directory}: no readable images for calibration (looked for {', '.join(sorted(IMAGE_SUFFIXES))}; "
            f"{skipped} unreadable file(s) skipped)"
        )
    images = np.stack(pixels)
    held_out = min(len(images) // 5, MAX_HELD_OUT)
    return CalibrationImages(directory, images[:len(images) - held_out], images[len(images) - held_out:], skipped)
