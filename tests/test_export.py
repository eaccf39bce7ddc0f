"""ONNX export into a verified model bundle: precisions, parity, atomic replacement, bad input."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from clip_match.cli import main
from clip_match.errors import ClipMatchError
from clip_match.export import export_bundle, parse_precisions
from clip_match.export import verify as parity
from clip_match.runtime.bundle import MANIFEST_NAME, Bundle, sha256_file


def test_tiny_bundle_layout(tiny_bundle):
    manifest = json.loads((tiny_bundle / MANIFEST_NAME).read_text())
    assert manifest["arch"] == "tiny" and manifest["config"]["vision_layers"] == [1, 1, 1, 1]
    assert (manifest["embed_dim"], manifest["image_resolution"], manifest["context_length"]) == (64, 64, 16)
    assert manifest["precisions"] == {"fp32": {"image": "image.fp32.onnx", "text": "text.fp32.onnx"},
                                      "int8": {"image": "image.int8.onnx", "text": "text.int8.onnx"}}
    assert sorted(p.name for p in tiny_bundle.iterdir()) == sorted([MANIFEST_NAME, *manifest["files"]])
    assert "vocab.txt" in manifest["files"]
    for name, digest in manifest["files"].items():
        assert sha256_file(tiny_bundle / name) == digest
    assert manifest["verification"]["fp32"]["image_min_cosine"] >= 0.9999
    assert manifest["verification"]["int8"]["text_min_cosine"] >= 0.99
    assert manifest["quantization"]["int8"]["image"]["method"] == "dynamic"  # no calibration images
    assert [t.name for t in (tiny_bundle.parent).iterdir()] == ["bundle"]  # no temporary leftovers


def test_towers_have_dynamic_axes_and_inline_weights(tiny_bundle):
    image = onnx.load(str(tiny_bundle / "image.fp32.onnx"))
    text = onnx.load(str(tiny_bundle / "text.fp32.onnx"))
    dims = lambda graph: [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims(image.graph) == ["batch", 3, 64, 64]
    assert dims(text.graph) == ["batch", "sequence"]
    assert text.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert all(not init.external_data for init in [*image.graph.initializer, *text.graph.initializer])
    session = ort.InferenceSession(str(tiny_bundle / "text.int8.onnx"), providers=["CPUExecutionProvider"])
    for shape in [(1, 3), (5, 16), (2, 7)]:
        ids = np.zeros(shape, dtype=np.int64)
        ids[:, 0], ids[:, -1] = 101, 102
        assert session.run(["unnorm_text_features"], {"text": ids})[0].shape == (shape[0], 64)


def test_cli_exports_all_three_precisions_verified(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "all"
    assert main(["export", str(tiny_checkpoint), "--arch", "tiny", "--out", str(out),
                 "--precision", "fp32,fp16,int8", "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)  # stdout is exactly the JSON manifest
    assert list(manifest["precisions"]) == ["fp32", "fp16", "int8"]
    for precision, floor in parity.MIN_COSINE.items():
        assert min(manifest["verification"][precision].values()) >= floor
    fp16 = onnx.load(str(out / "image.fp16.onnx"))
    outputs = {o.name for o in fp16.graph.output}
    internal_float_casts = [n.name for n in fp16.graph.node if n.op_type == "Cast" and n.output[0] not in outputs
                            and n.attribute[0].i == onnx.TensorProto.FLOAT]
    assert internal_float_casts == []
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 I/O kept

    # the fingerprint names the weights, not the precision
    assert manifest["fingerprint"] == Bundle.load(out).fingerprint


def test_a_vit_exports_to_fp16_and_static_int8(tmp_path, calibration_dir):
    """A ViT's image cast is the graph's first node (the fp16 converter drops it), and onnxruntime's
    symbolic shape inference fails on its reshapes (static int8's pre-processing)."""
    import torch

    from clip_match.model import create_model, load_config, save_slim_checkpoint

    (tmp_path / "vit.json").write_text(json.dumps(load_config("tiny").to_dict() | {
        "name": "tinyvit", "image_resolution": 64, "vision_layers": 2, "vision_width": 64, "vision_patch_size": 16,
        "vision_head_width": 32}))
    config = load_config(tmp_path / "vit.json")
    torch.manual_seed(0)
    checkpoint = save_slim_checkpoint(create_model(config), tmp_path / "vit.pt", config)
    bundle = export_bundle(checkpoint, config, tmp_path / "bundle", precisions=("fp32", "fp16", "int8"),
                           calibration_images=calibration_dir)
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    assert manifest["quantization"]["int8"]["image"]["method"] == "static"
    for precision, floor in parity.MIN_COSINE.items():
        assert min(manifest["verification"][precision].values()) >= floor


def test_reexport_replaces_cleanly(tiny_checkpoint, tmp_path):
    out = tmp_path / "bundle"
    export_bundle(tiny_checkpoint, "tiny", out, precisions="int8", verify=False)
    (out / "stale.onnx").write_bytes(b"left over")
    with pytest.raises(ClipMatchError, match="already exists"):
        export_bundle(tiny_checkpoint, "tiny", out, verify=False)
    export_bundle(tiny_checkpoint, "tiny", out, precisions="fp32", verify=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["clip_match.json", "image.fp32.onnx", "text.fp32.onnx",
                                                     "vocab.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    assert Bundle.load(out).precisions == ["fp32"]


def test_verification_failure_writes_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(parity.MIN_COSINE, "fp32", 1.5)
    with pytest.raises(ClipMatchError, match=r"verification failed: fp32 image tower cosine .* below 1.5"):
        export_bundle(tiny_checkpoint, "tiny", tmp_path / "bundle")
    assert list(tmp_path.iterdir()) == []


def test_fingerprint_differs_between_models(tiny_bundle, tmp_path):
    import torch

    from clip_match.model import create_model, load_config, save_slim_checkpoint

    torch.manual_seed(7)
    other = save_slim_checkpoint(create_model("tiny"), tmp_path / "other.pt", load_config("tiny"))
    bundle = export_bundle(other, "tiny", tmp_path / "other", verify=False)
    assert Bundle.load(bundle).fingerprint != Bundle.load(tiny_bundle).fingerprint


def test_bad_precision_and_wrong_arch(tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(ClipMatchError, match="unknown precision 'bf16'; valid precisions: fp32, fp16, int8"):
        parse_precisions("fp32,bf16")
    assert parse_precisions(" int8 , fp32,int8") == ("int8", "fp32")
    assert main(["export", str(tiny_checkpoint), "--arch", "demo", "--out", str(tmp_path / "x")]) == 2
    error = capsys.readouterr().err
    assert "incompatible checkpoint" in error and "visual.conv1.weight" in error
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_rn50_export_runs_with_dynamic_batch(tmp_path, calibration_dir):
    """Official RN50@RBT3-chinese (random weights): verified fp32 + int8 export (image tower static,
    calibrated on a small folder), any batch size and text length.

    Random ResNet weights contain identical tensors (zero-initialised bn3), which the exporter
    shares through Identity nodes; int8 quantisation needs them inlined again."""
    import torch

    from clip_match.model import create_model, load_config, save_slim_checkpoint

    config = load_config("RN50")
    torch.manual_seed(0)
    checkpoint = save_slim_checkpoint(create_model(config), tmp_path / "rn50.pt", config, fp16=True)
    bundle = export_bundle(checkpoint, config, tmp_path / "rn50", precisions=("fp32", "int8"),
                           calibration_images=calibration_dir)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    sessions = {name: ort.InferenceSession(str(bundle / name), options, providers=["CPUExecutionProvider"])
                for name in ("image.fp32.onnx", "image.int8.onnx", "text.fp32.onnx", "text.int8.onnx")}
    for batch in (1, 3):
        for name, session in sessions.items():
            feed = ({"image": np.zeros((batch, 3, 224, 224), np.float32)} if name.startswith("image")
                    else {"text": np.full((batch, 9), 700, dtype=np.int64)})
            assert session.run(None, feed)[0].shape == (batch, 1024), name
    manifest = Bundle.load(bundle).manifest
    verification = manifest["verification"]
    assert verification["fp32"]["image_min_cosine"] >= 0.9999
    assert min(verification["int8"].values()) >= 0.99 and parity.CALIBRATION_KEY in verification["int8"]
    assert manifest["quantization"]["int8"]["image"]["method"] == "static"
