"""Shared pytest setup. Fixtures that several test modules use live here."""
from __future__ import annotations

import os

import pytest

# Keep tests deterministic and polite on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Slim checkpoint (official CN-CLIP format) of the shipped "tiny" config, random weights, seed 0."""
    import torch

    from clip_match.model import create_model, load_config, save_slim_checkpoint

    config = load_config("tiny")
    torch.manual_seed(0)
    model = create_model(config)
    return save_slim_checkpoint(model, tmp_path_factory.mktemp("tiny_checkpoint") / "tiny.pt", config)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint, tmp_path_factory):
    """Verified model bundle (fp32 + int8) exported from `tiny_checkpoint`."""
    from clip_match.export import export_bundle

    return export_bundle(tiny_checkpoint, "tiny", tmp_path_factory.mktemp("tiny_bundle") / "bundle",
                         precisions=("fp32", "int8"))
