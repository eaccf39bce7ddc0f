"""Static (calibrated) INT8 image tower: export, verification on held-out images, manifest, bad folders."""
from __future__ import annotations

import json
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from clip_match import Encoder
from clip_match.cli import main
from clip_match.errors import ClipMatchError
from clip_match.export import calibration, export_bundle
from clip_match.export import verify as parity
from clip_match.export.precision import ATTENTION_POOL


@pytest.fixture(scope="module")
def static_bundle(tiny_checkpoint, calibration_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("static") / "bundle"
    assert main(["export", str(tiny_checkpoint), "--arch", "tiny", "--out", str(out), "--precision", "fp32,int8",
                 "--calibration-images", str(calibration_dir)]) == 0
    return out


def test_static_int8_export_is_verified_and_recorded(static_bundle):
    manifest = json.loads((static_bundle / "clip_match.json").read_text())
    image, text = manifest["quantization"]["int8"]["image"], manifest["quantization"]["int8"]["text"]
    assert (image["method"], image["format"], image["weights"]) == ("static", "QDQ", "int8 per channel")
    # 12 readable images: a fifth (2) held out for verification, 10 for calibration; the corrupt one skipped
    assert (image["calibration_images"], image["held_out_images"], image["skipped_unreadable"]) == (10, 2, 1)
    assert image["verified_on"] == "held-out images"
    assert text["method"] == "dynamic"
    verification = manifest["verification"]["int8"]
    assert set(verification) == {"image_min_cosine", "text_min_cosine", parity.CALIBRATION_KEY}
    assert min(verification.values()) >= parity.MIN_COSINE["int8"]


def test_static_int8_image_tower_is_qdq_and_has_dynamic_batch(static_bundle, synthetic_images):
    model = onnx.load(str(static_bundle / "image.int8.onnx"))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops and "ConvInteger" not in ops
    int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert int8_weights  # conv weights are stored as int8
    session = ort.InferenceSession(str(static_bundle / "image.int8.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 3, 5):
        assert session.run(None, {"image": np.zeros((batch, 3, 64, 64), np.float32)})[0].shape == (batch, 64)

    fresh = synthetic_images(6, seed=99)  # not among the calibration images
    fp32 = Encoder.load(static_bundle, device="cpu", precision="fp32").encode_images(fresh)
    int8 = Encoder.load(static_bundle, device="cpu", precision="int8").encode_images(fresh)
    assert (fp32 * int8).sum(axis=1).min() >= 0.99


def test_static_int8_keeps_the_attention_pool_float_but_its_weight_products(static_bundle):
    graph = onnx.load(str(static_bundle / "image.int8.onnx")).graph
    producer = {output: node for node in graph.node for output in node.output}
    attention = [node for node in graph.node if node.name.startswith(ATTENTION_POOL)]
    softmax = next(node for node in attention if node.op_type == "Softmax")
    assert producer[softmax.input[0]].op_type != "DequantizeLinear"  # query-key products in float
    weighted = [node for node in attention if node.op_type in ("MatMul", "Gemm")
                and any(producer.get(name) and producer[name].op_type == "DequantizeLinear" for name in node.input)]
    assert len(weighted) == 4  # q, k, v and output projections in int8


def test_int8_without_calibration_notes_that_convolutions_stay_fp32(tiny_checkpoint, tmp_path, capsys):
    out = export_bundle(tiny_checkpoint, "tiny", tmp_path / "bundle", precisions="int8", verify=False)
    assert capsys.readouterr().err.count("--calibration-images") == 1
    image = json.loads((out / "clip_match.json").read_text())["quantization"]["int8"]["image"]
    assert image["method"] == "dynamic" and image["note"] == "convolutions stay fp32"
    export_bundle(tiny_checkpoint, "tiny", tmp_path / "fp32", verify=False)
    assert "calibration" not in capsys.readouterr().err  # no int8, no note


def test_calibration_sample_is_bounded_and_seeded(calibration_dir, monkeypatch):
    monkeypatch.setattr(calibration, "MAX_CALIBRATION", 4)
    monkeypatch.setattr(calibration, "MAX_HELD_OUT", 1)
    first = calibration.load_calibration_images(calibration_dir, 32)
    again = calibration.load_calibration_images(calibration_dir, 32)
    assert first.calibration.shape == (4, 3, 32, 32) and first.held_out.shape == (1, 3, 32, 32)
    assert np.array_equal(first.calibration, again.calibration) and np.array_equal(first.held_out, again.held_out)


def test_verification_on_calibration_images_fails_loudly(tiny_checkpoint, calibration_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(parity, "measure_images", lambda *args: 0.42)
    with pytest.raises(ClipMatchError, match="int8 image tower cosine to PyTorch fp32 on the calibration folder's "
                                             "images is 0.420000, below 0.99"):
        export_bundle(tiny_checkpoint, "tiny", tmp_path / "bundle", precisions="int8",
                      calibration_images=calibration_dir)
    assert list(tmp_path.iterdir()) == []


def test_bad_calibration_folders(tiny_checkpoint, tmp_path, capsys):
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    (unreadable / "a.jpg").write_bytes(b"not a jpeg")
    (unreadable / "b.png").write_bytes(b"")
    (unreadable / "readme.txt").write_text("hello")
    with pytest.raises(ClipMatchError, match=rf"{re.escape(str(unreadable))}: no readable images .* 2 unreadable file\(s\) skipped"):
        export_bundle(tiny_checkpoint, "tiny", tmp_path / "out", precisions="int8", calibration_images=unreadable)
    with pytest.raises(ClipMatchError, match="calibration image folder not found"):
        export_bundle(tiny_checkpoint, "tiny", tmp_path / "out", precisions="int8",
                      calibration_images=tmp_path / "missing")
    with pytest.raises(ClipMatchError, match="only used for int8"):
        export_bundle(tiny_checkpoint, "tiny", tmp_path / "out", precisions="fp32,fp16", calibration_images=unreadable)
    capsys.readouterr()
    assert main(["export", str(tiny_checkpoint), "--arch", "tiny", "--out", str(tmp_path / "out"),
                 "--precision", "int8", "--calibration-images", str(tmp_path / "empty")]) == 2
    assert f"{tmp_path / 'empty'}: calibration image folder not found" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unreadable"]  # nothing written
