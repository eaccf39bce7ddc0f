"""The model bundle: a directory that holds everything the runtime needs, checked on load.

Layout (written by `clip_match.export`)::

    clip_match.json          manifest: architecture, resolution, context length, framing (trim margin,
                             fold), mean/std,
                             embedding dim, precisions -> file names, sha256 of every file,
                             fingerprint, parity measured at export, how each int8
                             tower was quantised (static with calibration counts, or dynamic)
    image.<precision>.onnx   image tower: float32 "image" (N, 3, R, R) -> "unnorm_image_features" (N, D)
    text.<precision>.onnx    text tower: int64 "text" (N, L <= context) -> "unnorm_text_features" (N, D)
                             (cn_clip's deployment names; bundles exported before 0.2 name them
                             "image"/"input_ids" -> "features", and the runtime reads either)
    vocab.txt                the tokenizer vocabulary
    grid_calibration.json    optional: the grid solver's tile crop and k-unknown rule
                             (`clip_match.grid.select`), listed under 'files' like the rest

The ``fingerprint`` identifies the weights, not the precision: every precision of one model
shares it, so an index built with one tower precision accepts another. Torch-free.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checks import is_positive_int
from ..errors import ClipMatchError
from ..fsutil import atomic_file
from ..jsonio import read_manifest
from .preprocess import Framing, checked_framing

MANIFEST_NAME = "clip_match.json"
FORMAT = "clip_match.bundle"
FORMAT_VERSION = 1
TOWER_PRECISIONS = ("fp32", "fp16", "int8")
TOWERS = ("image", "text")
IMAGE_INPUT, TEXT_INPUT = "image", "text"  # cn_clip's ONNX names, so its deployment snippet runs on our towers
IMAGE_OUTPUT, TEXT_OUTPUT = "unnorm_image_features", "unnorm_text_features"
VOCAB_NAME = "vocab.txt"


def tower_file_name(tower: str, precision: str) -> str:
    return f"{tower}.{precision}.onnx"


def check_precision(precision: str) -> str:
    """Return ``precision`` if valid, else raise an error listing the valid names."""
    if precision not in TOWER_PRECISIONS:
        raise ClipMatchError(f"unknown precision {precision!r}; valid precisions: {', '.join(TOWER_PRECISIONS)}")
    return precision


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Bundles shipped inside the package, by the name `--bundle NAME` and `Encoder.load(NAME)` take.
PACKAGED_BUNDLES = {"demo": "demo_bundle", "formula": "formula_bundle"}


def packaged_bundle_path(name: str = "demo") -> Path:
    """The packaged bundle called ``name``: "demo" (emoji grid puzzles) or "formula" (formula images)."""
    if name not in PACKAGED_BUNDLES:
        raise ClipMatchError(f"no packaged bundle called {name!r} (packaged: {', '.join(PACKAGED_BUNDLES)})")
    path = Path(__file__).resolve().parent.parent / "assets" / PACKAGED_BUNDLES[name]
    if not (path / MANIFEST_NAME).is_file():
        raise ClipMatchError(
            f"the {name} model is not bundled ({path} has no {MANIFEST_NAME}); "
            "export one with `clip-match export CHECKPOINT --arch NAME --out DIR` and pass that directory"
        )
    return path


def packaged_bundle_with(fingerprint: str) -> str | None:
    """The name of the packaged bundle whose model has ``fingerprint`` (None: none has)."""
    for name in PACKAGED_BUNDLES:
        try:
            if Bundle.load(packaged_bundle_path(name)).fingerprint == fingerprint:
                return name
        except ClipMatchError:
            continue
    return None


def resolve_bundle_path(path: str | os.PathLike | None) -> Path:
    """A bundle directory from what a user gave: a directory, a packaged bundle's name ("demo",
    "formula"; a directory of that name in the working directory wins), or None for the demo."""
    if path is None:
        return packaged_bundle_path()
    if str(path) in PACKAGED_BUNDLES and not Path(path).exists():
        return packaged_bundle_path(str(path))
    return Path(path)


def _check_fields(manifest: dict[str, Any], where: Path) -> None:
    """The manifest's values have the types the runtime relies on (a hand-edited manifest fails here,
    naming the field, not deep inside onnxruntime)."""
    for field in ("embed_dim", "context_length", "image_resolution"):
        if not is_positive_int(manifest[field]):
            raise ClipMatchError(f"{where}: field {field!r} must be a positive whole number, got {manifest[field]!r}")
    for field in ("mean", "std"):
        values = manifest[field]
        if not (isinstance(values, list) and len(values) == 3
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
            raise ClipMatchError(f"{where}: field {field!r} must be 3 numbers (R, G, B), got {values!r}")
    if not all(manifest["std"]):
        raise ClipMatchError(f"{where}: field 'std' must not contain zero")
    for field in ("fingerprint", "vocab"):
        if field in manifest and not isinstance(manifest[field], str):
            raise ClipMatchError(f"{where}: field {field!r} must be a string, got {manifest[field]!r}")


@dataclass(frozen=True)
class Bundle:
    """A bundle directory with its manifest read and its files checked against their sha256."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> Bundle:
        """Read ``path`` (a directory or a packaged bundle's name; default: the packaged demo bundle);
        every listed file must exist.

        File contents are checked against their sha256 when first used (`tower_path`), so loading
        one precision does not hash all the others.
        """
        path = resolve_bundle_path(path)
        manifest = read_manifest(path, MANIFEST_NAME, "model bundle", FORMAT, FORMAT_VERSION, "re-export the model",
                                 ("fingerprint", "embed_dim", "context_length", "image_resolution", "mean", "std",
                                  "precisions", "files"))
        _check_fields(manifest, path / MANIFEST_NAME)
        bundle = cls(path, manifest)
        for name in manifest["files"]:
            if not (path / name).is_file():
                raise ClipMatchError(f"{path / name}: file listed in the bundle manifest is missing")
        precisions = manifest["precisions"]
        if not isinstance(precisions, dict) or not precisions:
            raise ClipMatchError(f"{path / MANIFEST_NAME}: field 'precisions' lists no precision")
        for precision, towers in precisions.items():
            check_precision(precision)
            if not isinstance(towers, dict) or any(towers.get(tower) not in manifest["files"] for tower in TOWERS):
                raise ClipMatchError(f"{path / MANIFEST_NAME}: precision {precision!r} must name an image and a text "
                                     "file listed under 'files'")
        bundle.framing  # checked here, so a bad field fails the load, not the first image
        bundle.checked_file(bundle.manifest.get("vocab", VOCAB_NAME))
        return bundle

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def embed_dim(self) -> int:
        return int(self.manifest["embed_dim"])

    @property
    def context_length(self) -> int:
        return int(self.manifest["context_length"])

    @property
    def resolution(self) -> int:
        return int(self.manifest["image_resolution"])

    @property
    def framing(self) -> Framing | None:
        """What happens to every image before the resize (None: the plain resize)."""
        return checked_framing(self.manifest.get("trim_margin"), self.manifest.get("fold_wide", False),
                               str(self.path / MANIFEST_NAME), self.manifest.get("flatten_light", False))

    @property
    def vocab_path(self) -> Path:
        """The tokenizer vocabulary (checked by `load`)."""
        return self.path / self.manifest.get("vocab", VOCAB_NAME)

    @property
    def precisions(self) -> list[str]:
        return list(self.manifest["precisions"])

    def tower_path(self, tower: str, precision: str) -> Path:
        """The checked ONNX file of ``tower`` ("image"/"text") at ``precision``."""
        check_precision(precision)
        if precision not in self.manifest["precisions"]:
            raise ClipMatchError(
                f"{self.path}: bundle has no {precision} model; it has: {', '.join(self.precisions)}"
            )
        return self.checked_file(self.manifest["precisions"][precision][tower])

    def optional_file(self, name: str) -> Path | None:
        """``name`` inside the bundle after its sha256 check, or None when the bundle has no such file.
        A file that is there but not listed in the manifest is refused: nothing vouches for it."""
        if name in self.manifest["files"]:
            return self.checked_file(name)
        if (self.path / name).exists():
            raise ClipMatchError(f"{self.path / name}: not listed in the bundle manifest; write it with the command "
                                 f"that makes it (e.g. `clip-match eval-grid ... --calibrate {self.path / name}`), "
                                 "which lists it, or remove it")
        return None

    def checked_file(self, name: str) -> Path:
        """``name`` inside the bundle, after comparing its sha256 with the manifest."""
        path = self.path / name
        expected = self.manifest["files"].get(name)
        if expected is None:
            raise ClipMatchError(f"{path}: not listed in the bundle manifest")
        try:
            actual = sha256_file(path)
        except OSError as error:
            raise ClipMatchError(f"{path}: cannot read bundle file: {error.strerror or error}") from None
        if actual != expected:
            raise ClipMatchError(
                f"{path}: sha256 mismatch (manifest {expected[:12]}..., file {actual[:12]}...); "
                "the bundle file was altered or damaged — re-export the model"
            )
        return path


def is_bundle_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / MANIFEST_NAME).is_file()


def write_file(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; into a bundle directory, the file is also listed (sha256)
    in the bundle's manifest (`add_bundle_file`), so the bundle vouches for it like for its towers."""
    path = Path(path)
    if is_bundle_dir(path.parent):
        return add_bundle_file(path.parent, path.name, data)
    with atomic_file(path) as handle:
        handle.write(data)
    return path


def add_bundle_file(bundle_dir: str | os.PathLike, name: str, data: bytes) -> Path:
    """Write ``name`` into a bundle and list its sha256 in the manifest, each file replaced atomically
    (the file first: a crash in between leaves it unlisted, which `Bundle.optional_file` refuses)."""
    bundle = Bundle.load(bundle_dir)
    models = {bundle.manifest.get("vocab", VOCAB_NAME), *(f for towers in bundle.manifest["precisions"].values()
                                                           for f in towers.values())}
    if name in models or name == MANIFEST_NAME or Path(name).name != name:
        raise ClipMatchError(f"{name!r}: not a name for an extra bundle file (a plain file name, not a model file)")
    with atomic_file(bundle.path / name) as handle:
        handle.write(data)
    manifest = dict(bundle.manifest, files={**bundle.manifest["files"], name: hashlib.sha256(data).hexdigest()})
    with atomic_file(bundle.path / MANIFEST_NAME, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return bundle.path / name
