"""The torch-free runtime encoder against the PyTorch model it was exported from."""
from __future__ import annotations

import io
import json
import multiprocessing
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip_match import Encoder
from clip_match.errors import ClipMatchError
from clip_match.runtime.bundle import Bundle, packaged_bundle_path

TEXTS = ["一只橘色的猫", "A Red Umbrella", "the dog’s “ball”", "很长的文本" * 20, "x"]  # ("" is refused: test_prompts.py)


def _pictures() -> list[Image.Image]:
    rng = np.random.default_rng(3)
    return [
        Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)),
        Image.new("RGBA", (40, 200), (200, 30, 30, 128)),
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), "L"),
    ]


@pytest.fixture(scope="module")
def torch_model(tiny_checkpoint):
    from clip_match.model import load_checkpoint, load_config

    return load_checkpoint(tiny_checkpoint, load_config("tiny"))


@pytest.fixture(scope="module")
def encoder(tiny_bundle):
    return Encoder.load(tiny_bundle, device="cpu", threads=2)


def _normalised(features):
    features = features.detach().float().numpy()
    return features / np.linalg.norm(features, axis=1, keepdims=True)


def test_texts_match_pytorch(encoder, torch_model):
    import torch
    from cn_clip.clip import tokenize

    from clip_match.runtime.tokenizer import normalize_text

    expected = _normalised(torch_model.encode_text(tokenize([normalize_text(t) for t in TEXTS], 16)))
    actual = encoder.encode_texts(TEXTS, batch_size=4)
    assert actual.dtype == np.float32 and actual.shape == (len(TEXTS), 64)
    np.testing.assert_allclose(np.linalg.norm(actual, axis=1), 1.0, rtol=1e-5)
    assert (actual * expected).sum(axis=1).min() > 0.9999
    np.testing.assert_allclose(encoder.encode_texts(TEXTS, batch_size=1), actual, atol=1e-5)
    assert encoder.encode_texts([]).shape == (0, 64)
    assert torch.is_grad_enabled()  # nothing global was changed


def test_images_match_pytorch_for_every_input_kind(encoder, torch_model, tmp_path):
    import torch
    from cn_clip.clip.utils import image_transform

    pictures = _pictures()
    with torch.no_grad():
        batch = torch.stack([image_transform(64)(p) for p in pictures])
        expected = _normalised(torch_model.encode_image(batch))
    actual = encoder.encode_images(pictures, batch_size=2)
    assert actual.shape == (3, 64) and (actual * expected).sum(axis=1).min() > 0.9999

    path = tmp_path / "picture.png"
    pictures[0].save(path)
    buffer = io.BytesIO()
    pictures[0].save(buffer, format="PNG")
    kinds = encoder.encode_images([path, str(path), buffer.getvalue(), np.asarray(pictures[0]), pictures[0]])
    np.testing.assert_allclose(kinds, np.repeat(actual[:1], 5, axis=0), atol=1e-5)
    np.testing.assert_allclose(encoder.encode_images(path), actual[:1], atol=1e-5)


def test_context_length_is_configurable_end_to_end(tiny_checkpoint, torch_model, tmp_path):
    from cn_clip.clip import tokenize

    from clip_match.export import export_bundle
    from clip_match.model import load_config

    bundle = export_bundle(tiny_checkpoint, load_config("tiny", context_length=40), tmp_path / "long")
    encoder = Encoder.load(bundle, device="cpu", threads=2)
    long_text = "x ^ { 2 } + \\frac { a } { b } " * 6
    assert encoder.context_length == 40 and (tokenize(long_text, 40) != 0).sum() == 40
    expected = _normalised(torch_model.encode_text(tokenize([long_text, "短"], 40)))
    assert (encoder.encode_texts([long_text, "短"]) * expected).sum(axis=1).min() > 0.9999


def test_attributes_and_int8(tiny_bundle, encoder):
    assert (encoder.embed_dim, encoder.context_length, encoder.resolution) == (64, 16, 64)
    assert encoder.precision == "fp32" and encoder.device == "cpu"
    int8 = Encoder.load(tiny_bundle, device="cpu", precision="int8", threads=2)
    assert int8.fingerprint == encoder.fingerprint == Bundle.load(tiny_bundle).fingerprint
    cosine = (int8.encode_texts(TEXTS) * encoder.encode_texts(TEXTS)).sum(axis=1)
    assert cosine.min() > 0.99


def test_parallel_resizing_gives_the_same_features_and_survives_a_fork(tiny_bundle, encoder):
    images = [Image.new("RGB", (90 + 7 * i, 80 + 3 * i), (25 * i, 60, 120)) for i in range(9)]
    serial = Encoder.load(tiny_bundle, device="cpu", threads=1)  # resizes in the calling thread
    features = encoder.encode_images(images)
    np.testing.assert_array_equal(features, serial.encode_images(images))
    # a forked child cannot use its parent's (already started) resizing threads: it must start its own
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=lambda: results.put(encoder.encode_images(images)), daemon=True)
    child.start()
    try:
        np.testing.assert_allclose(results.get(timeout=60), features, atol=1e-6)
    finally:
        child.kill()
        child.join()


def test_bad_images_are_named(encoder, tmp_path):
    with pytest.raises(ClipMatchError, match=r"images\[1\]: not an image"):
        encoder.encode_images([_pictures()[0], b"definitely not a png"])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(ClipMatchError, match=str(broken)):
        encoder.encode_images([broken])
    with pytest.raises(ClipMatchError, match="missing.png: cannot read"):
        encoder.encode_images([tmp_path / "missing.png"])
    with pytest.raises(ClipMatchError, match=r"texts\[1\]: expected a str"):
        encoder.encode_texts(["ok", None])


def test_damaged_bundles_are_named(tiny_bundle, tmp_path):
    copy = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    with open(copy / "text.int8.onnx", "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\x01\x02")
    Encoder.load(copy, device="cpu", precision="fp32")  # only the files used are hashed
    with pytest.raises(ClipMatchError, match=r"text.int8.onnx: sha256 mismatch"):
        Encoder.load(copy, device="cpu", precision="int8")
    (copy / "image.fp32.onnx").unlink()
    with pytest.raises(ClipMatchError, match=r"image.fp32.onnx: file listed in the bundle manifest is missing"):
        Encoder.load(copy)
    shutil.copyfile(tiny_bundle / "image.fp32.onnx", copy / "image.fp32.onnx")
    manifest = json.loads((copy / "clip_match.json").read_text(encoding="utf-8"))
    del manifest["precisions"]["int8"]["text"]
    (copy / "clip_match.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ClipMatchError, match="precision 'int8' must name an image and a text file"):
        Encoder.load(copy)
    good = json.loads((tiny_bundle / "clip_match.json").read_text(encoding="utf-8"))
    for change, message in (({"embed_dim": "abc"}, "field 'embed_dim' must be a positive whole number"),
                            ({"embed_dim": good["embed_dim"] * 2}, "field 'embed_dim' is .* but the image tower's is"),
                            ({"image_resolution": good["image_resolution"] + 1}, "field 'image_resolution' is .*"),
                            ({"mean": [0.5, 0.5]}, "field 'mean' must be 3 numbers"),
                            ({"files": list(good["files"])}, "field 'files' must map file names"),
                            ({"vocab": 5}, "field 'vocab' must be a string")):
        (copy / "clip_match.json").write_text(json.dumps({**good, **change}), encoding="utf-8")
        with pytest.raises(ClipMatchError, match=f"clip_match.json: {message}"):
            Encoder.load(copy, device="cpu")
    (copy / "clip_match.json").unlink()
    with pytest.raises(ClipMatchError, match="not a model bundle"):
        Encoder.load(copy)


def test_bad_options(tiny_bundle):
    with pytest.raises(ClipMatchError, match="unknown precision 'int4'; valid precisions: fp32, fp16, int8"):
        Encoder.load(tiny_bundle, precision="int4")
    with pytest.raises(ClipMatchError, match="bundle has no fp16 model; it has: fp32, int8"):
        Encoder.load(tiny_bundle, precision="fp16")
    with pytest.raises(ClipMatchError, match="unknown device 'tpu'"):
        Encoder.load(tiny_bundle, device="tpu")
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(ClipMatchError, match="no CUDAExecutionProvider"):
            Encoder.load(tiny_bundle, device="cuda")


def test_packaged_bundle_path():
    try:
        path = packaged_bundle_path()
    except ClipMatchError as error:
        assert "demo model is not bundled yet" in str(error)
    else:
        assert Bundle.load(path).embed_dim > 0


def test_runtime_never_imports_torch(tiny_bundle, tmp_path):
    Image.new("RGB", (30, 20), "blue").save(tmp_path / "blue.png")
    script = (
        "import sys\n"
        "from clip_match import Encoder\n"
        f"encoder = Encoder.load({str(tiny_bundle)!r}, precision='int8', threads=1)\n"
        "assert encoder.encode_texts(['猫']).shape == (1, 64)\n"
        f"assert encoder.encode_images([{str(tmp_path / 'blue.png')!r}]).shape == (1, 64)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'cn_clip'))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_a_trimming_model_sees_one_formula_on_any_canvas(tiny_checkpoint, encoder, tmp_path):
    from dataclasses import replace

    import torch

    from clip_match.export import export_bundle
    from clip_match.model import load_config

    assert "trim_margin" not in load_config("tiny").to_dict()  # configs that do not trim keep their fingerprint
    with pytest.raises(ClipMatchError, match="trim_margin must be null or a whole number"):
        replace(load_config("tiny"), trim_margin=-1)
    with pytest.raises(ClipMatchError, match="trained with trim_margin None, but model tiny has 2"):
        export_bundle(tiny_checkpoint, replace(load_config("tiny"), trim_margin=2), tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    trimming_config = replace(load_config("tiny"), trim_margin=2)
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    checkpoint["model_config"] = trimming_config.to_dict()  # as the trainer records a trimming model
    torch.save(checkpoint, tmp_path / "trimming.pt")
    bundle = export_bundle(tmp_path / "trimming.pt", trimming_config, tmp_path / "trim", precisions=("fp32",))
    manifest = json.loads((bundle / "clip_match.json").read_text(encoding="utf-8"))
    assert manifest["trim_margin"] == 2 and manifest["config"]["trim_margin"] == 2
    trimming = Encoder.load(bundle, device="cpu", threads=2)
    canvases = [Image.new("RGB", size, "white") for size in ((160, 50), (90, 90))]
    for canvas, at in zip(canvases, ((8, 6), (30, 50))):
        canvas.paste((0, 0, 0), (at[0], at[1], at[0] + 30, at[1] + 10))
    same, different = trimming.encode_images(canvases), encoder.encode_images(canvases)
    np.testing.assert_array_equal(same[0], same[1])  # one input, whatever the canvas
    assert not np.array_equal(different[0], different[1])
    for field, value, message in (("trim_margin", "4", "trim_margin must be null or a whole number >= 0, got '4'"),
                                  ("fold_wide", 1, "fold_wide must be true or false, and true only with a trim_margin")):
        (bundle / "clip_match.json").write_text(json.dumps({**manifest, field: value}), encoding="utf-8")
        with pytest.raises(ClipMatchError, match=f"clip_match.json: {message}"):
            Encoder.load(bundle, device="cpu")


def _export_framed(tiny_checkpoint, tmp_path, flag: str) -> Path:
    """The tiny model trained (so its checkpoint says) with ``trim_margin`` 2 and ``flag`` ("fold_wide",
    "flatten_light") on, exported; a config without the flag is refused, and the flag needs a trim margin."""
    from dataclasses import replace

    import torch

    from clip_match.export import export_bundle
    from clip_match.model import load_config

    with pytest.raises(ClipMatchError, match=f"{flag} must be true or false, and true only with a trim_margin"):
        replace(load_config("tiny"), **{flag: True})
    config = replace(load_config("tiny"), trim_margin=2, **{flag: True})
    assert config.to_dict()[flag] is True and flag not in load_config("tiny").to_dict()
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    checkpoint["model_config"] = config.to_dict()
    torch.save(checkpoint, tmp_path / "framed.pt")
    with pytest.raises(ClipMatchError, match=f"trained with {flag} True, but model tiny has False"):
        export_bundle(tmp_path / "framed.pt", replace(config, **{flag: False}), tmp_path / "refused")
    bundle = export_bundle(tmp_path / "framed.pt", config, tmp_path / "framed", precisions=("fp32",))
    assert json.loads((bundle / "clip_match.json").read_text(encoding="utf-8"))[flag] is True
    return bundle


def test_a_folding_model_sees_a_wide_formula_folded_into_strips(tiny_checkpoint, encoder, tmp_path):
    from clip_match.runtime.preprocess import Framing

    bundle = _export_framed(tiny_checkpoint, tmp_path, "fold_wide")
    wide = Image.new("RGB", (400, 40), "white")
    for left in range(10, 380, 24):
        wide.paste((0, 0, 0), (left, 12, left + 12, 28))
    folded = Framing(2, fold=True)(wide)
    assert folded.height > folded.width / 2  # the formula's strips, stacked
    np.testing.assert_allclose(Encoder.load(bundle, device="cpu").encode_images([wide]),
                               encoder.encode_images([folded]), atol=1e-6)


def test_a_flattening_model_evens_out_the_light_before_the_trim(tiny_checkpoint, encoder, tmp_path):
    from clip_match.runtime.preprocess import Framing

    bundle = _export_framed(tiny_checkpoint, tmp_path, "flatten_light")
    photo = Image.new("L", (200, 60), 255)
    photo.paste(20, (30, 10, 70, 22))
    shade = np.linspace(1.0, 0.4, 200, dtype=np.float32)[None, :]
    photo = Image.fromarray((np.asarray(photo, np.float32) * shade).astype(np.uint8)).convert("RGB")
    np.testing.assert_allclose(Encoder.load(bundle, device="cpu").encode_images([photo]),
                               encoder.encode_images([Framing(2, flatten=True)(photo)]), atol=1e-6)
