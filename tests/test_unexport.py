"""`clip-match unexport`: a bundle back to a trainable checkpoint that computes what the bundle does."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clip_match import cli
from clip_match.errors import ClipMatchError
from clip_match.export import export_bundle
from clip_match.export.calibration import load_calibration_images
from clip_match.model import load_checkpoint, load_config
from clip_match.model.unexport import module_path, unexport
from clip_match.runtime.encoder import Encoder


def test_module_path_follows_torchs_exporter_names():
    assert module_path("/visual/layer1/layer1.0/downsample/downsample.0/Conv") == "visual.layer1.0.downsample.0"
    assert module_path("/bert/encoder/layer.0/attention/self/query/MatMul_quant") == \
        "bert.encoder.layer.0.attention.self.query"
    assert module_path("/MatMul") == ""


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_unexported_model_computes_the_bundles_features(precision, tiny_checkpoint, calibration_dir, tmp_path):
    bundle = export_bundle(tiny_checkpoint, "tiny", tmp_path / "bundle", precisions=(precision,),
                           calibration_images=calibration_dir if precision == "int8" else None)
    report = unexport(bundle, calibration_dir, tmp_path / "back.pt")
    assert report["precision"] == precision and report["image_min_cosine"] >= (0.9999 if precision == "fp32" else 0.99)
    model = load_checkpoint(tmp_path / "back.pt", load_config("tiny"))
    assert model.logit_scale.item() == pytest.approx(np.log(100))

    # exported again, the model answers as the bundle did
    again = export_bundle(tmp_path / "back.pt", "tiny", tmp_path / "again", precisions=("fp32",))
    images = [np.full((40, 50, 3), value, np.uint8) for value in (30, 120, 220)]
    texts = ["一只猫", "a red umbrella", "E = m c ^ { 2 }"]
    before, after = Encoder.load(bundle, device="cpu", threads=1), Encoder.load(again, device="cpu", threads=1)
    minimum = 0.9999 if precision == "fp32" else 0.99
    assert (np.sum(before.encode_images(images) * after.encode_images(images), axis=1) >= minimum).all()
    assert (np.sum(before.encode_texts(texts) * after.encode_texts(texts), axis=1) >= minimum).all()


def test_batch_norms_start_training_where_the_bundle_is(tiny_checkpoint, calibration_dir, tmp_path):
    """In train mode, on the calibration batch, each batch norm's batch statistics are the ones it was
    given: the first training step sees the bundle's function, not a re-normalised one."""
    bundle = export_bundle(tiny_checkpoint, "tiny", tmp_path / "bundle", precisions=("fp32",))
    unexport(bundle, calibration_dir, tmp_path / "back.pt")
    model = load_checkpoint(tmp_path / "back.pt", load_config("tiny"))
    images = torch.from_numpy(load_calibration_images(calibration_dir, 64).calibration)
    with torch.no_grad():
        evaluated = model.eval().encode_image(images)
        trained = model.train().encode_image(images)
    assert torch.allclose(evaluated, trained, atol=1e-4 * evaluated.abs().max().item())


def test_bad_inputs_are_clear_errors(tiny_bundle, calibration_dir, tmp_path, capsys):
    with pytest.raises(ClipMatchError, match="not a model bundle"):
        unexport(tmp_path, calibration_dir, tmp_path / "out.pt")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["unexport", str(tiny_bundle), "--calibration-images", str(empty),
                     "--out", str(tmp_path / "out.pt")]) == 2
    assert f"{empty}: no readable images for calibration" in capsys.readouterr().err
    assert not (tmp_path / "out.pt").exists()
    assert cli.main(["unexport", str(tiny_bundle), "--calibration-images", str(calibration_dir),
                     "--out", str(tmp_path / "out.pt")]) == 0
    assert json.loads(capsys.readouterr().out)["precision"] == "fp32"
