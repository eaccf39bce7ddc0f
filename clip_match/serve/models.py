"""What a server serves: named model bundles (each a `GridSolver`, which owns its `Encoder` and grid
calibration) and named candidate indexes, each tied to the first bundle of its model. Loaded before
the server listens, so a bad bundle or index stops `clip-match serve` with a one-line error."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import ClipMatchError
from ..grid.solver import GridSolver
from ..index.label_index import LabelIndex
from ..runtime.bundle import TOWERS
from ..runtime.encoder import Encoder

DEFAULT_BUNDLE_NAME = "demo"
BATCHING = ("auto", "merge", "off")   # merge requests in one encoder call: where exact, always, never


@dataclass(frozen=True)
class ServedBundle:
    name: str
    solver: GridSolver

    @property
    def encoder(self) -> Encoder:
        return self.solver.encoder

    def mergeable(self, tower: str) -> bool:
        """Whether this tower's vector for one input is the same whatever else shares its encoder call,
        bit for bit: on CPU, for float towers and statically quantised int8 (fixed activation ranges),
        tested; not for dynamic int8 (its activation range is the whole batch's: the demo model's tile scores
        moved by up to 0.01 with their companions), nor on CUDA, whose kernels may change with the batch size."""
        encoder = self.encoder
        if encoder.device != "cpu":
            return False
        if encoder.precision != "int8":
            return True
        quantization = encoder.bundle.manifest.get("quantization", {}).get("int8", {}).get(tower, {})
        return quantization.get("method") == "static"

    def merge(self, batching: str) -> dict[str, bool]:
        """Per tower, whether concurrent requests share encoder calls under ``batching`` (`BATCHING`)."""
        if batching not in BATCHING:
            raise ClipMatchError(f"unknown batching {batching!r}; choose from {', '.join(BATCHING)}")
        return {tower: batching == "merge" or (batching == "auto" and self.mergeable(tower)) for tower in TOWERS}


@dataclass(frozen=True)
class ServedIndex:
    name: str
    path: Path
    index: LabelIndex
    bundle: str          # the served bundle whose model built it


class Models:
    """The served bundles (the first is the default) and indexes, by name."""

    def __init__(self, bundles: Sequence[ServedBundle], indexes: Sequence[ServedIndex] = ()):
        if not bundles:
            raise ClipMatchError("no model bundle to serve")
        self.bundles = {bundle.name: bundle for bundle in bundles}
        self.indexes = {index.name: index for index in indexes}
        self.default_bundle = bundles[0].name

    @classmethod
    def load(cls, bundles: Sequence[tuple[str, str | os.PathLike | None]] = (),
             indexes: Sequence[tuple[str, str | os.PathLike]] = (), device: str = "auto",
             precision: str | None = None, threads: int | None = None) -> Models:
        """Open ``(name, directory)`` bundles (none: the packaged demo model as "demo") and indexes;
        each index is served with the first bundle of the model it was built with."""
        bundles = list(bundles) or [(DEFAULT_BUNDLE_NAME, None)]
        _check_names("bundle", [name for name, _ in bundles])
        _check_names("index", [name for name, _ in indexes])
        served = [ServedBundle(name, GridSolver(path, device=device, precision=precision, threads=threads))
                  for name, path in bundles]
        served_indexes = []
        for name, path in indexes:
            index = LabelIndex.load(path)
            owner = next((bundle.name for bundle in served if bundle.encoder.fingerprint == index.fingerprint), None)
            if owner is None:
                raise ClipMatchError(f"index {name} ({path}) was built with model {index.fingerprint}, which no served "
                                     f"bundle has ({', '.join(f'{b.name}: {b.encoder.fingerprint}' for b in served)})")
            served_indexes.append(ServedIndex(name, Path(path), index, owner))
        return cls(served, served_indexes)


def _check_names(what: str, names: list[str]) -> None:
    for name in names:
        if not name or not all(char.isalnum() or char in "-_." for char in name):
            raise ClipMatchError(f"{what} name {name!r}: use letters, digits, '-', '_' and '.'")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ClipMatchError(f"{what} name {repeated[0]!r} is given twice")
