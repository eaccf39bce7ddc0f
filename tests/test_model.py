"""Model configs, the fp32 factory, and checkpoints in cn_clip's official format."""
from __future__ import annotations

import json

import pytest
import torch

from clip_match import cli
from clip_match.errors import ClipMatchError
from clip_match.model import create_model, load_checkpoint, load_config, read_state_dict, save_slim_checkpoint
from clip_match.model.resize import POSITIONAL_EMBEDDING, resize_checkpoint


def test_shipped_and_official_configs():
    tiny = load_config("tiny")
    assert (tiny.embed_dim, tiny.image_resolution, tiny.context_length) == (64, 64, 16)
    demo = load_config("demo")
    assert (demo.embed_dim, demo.image_resolution, demo.text_hidden_size) == (256, 96, 256)
    rn50 = load_config("RN50")
    assert rn50 == load_config("RN50@RBT3-chinese")
    assert rn50.vision_layers == (3, 4, 6, 3) and rn50.context_length == 52 and rn50.embed_dim == 1024
    vit = load_config("ViT-H-14")
    assert vit.vision_head_width == 80 and not vit.is_resnet


def test_config_from_json_path_and_context_length(tmp_path):
    path = tmp_path / "formula.json"
    path.write_text(json.dumps(load_config("tiny").to_dict() | {"name": "formula", "context_length": 160}))
    config = load_config(path)
    assert config.name == "formula" and config.context_length == 160
    assert load_config("tiny", context_length=100).context_length == 100


@pytest.mark.parametrize("name, context, message", [
    ("nope", None, "unknown model config 'nope'"),
    ("RN50@GPT-9", None, "cn_clip has no config 'GPT-9'"),
    ("tiny", 1000, "context_length 1000 must be between 2 and text_max_position_embeddings (512)"),
    ("tiny", 0, "context_length must be a whole number >= 1, got 0"),
])
def test_config_errors(name, context, message):
    with pytest.raises(ClipMatchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(name, context_length=context)


def test_config_rejects_resolution_not_multiple_of_32(tmp_path):
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(load_config("tiny").to_dict() | {"image_resolution": 70}))
    with pytest.raises(ClipMatchError, match="multiple of 32"):
        load_config(path)
    path.write_text(json.dumps({"embed_dim": 8, "colour": "red"}))
    with pytest.raises(ClipMatchError, match=r"unknown fields \['colour'\]"):
        load_config(path)


def test_create_model_is_fp32_cn_clip_and_silent(capfd):
    from cn_clip.clip.model import CLIP

    model = create_model("tiny")
    assert isinstance(model, CLIP)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert capfd.readouterr().out == ""


def test_slim_checkpoint_format(tiny_checkpoint, tmp_path):
    checkpoint = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 0 and checkpoint["step"] == 0 and checkpoint["name"] == "tiny"
    assert all(key.startswith("module.") for key in checkpoint["state_dict"])
    model = load_checkpoint(tiny_checkpoint, load_config("tiny"))
    half = save_slim_checkpoint(model, tmp_path / "half.pt", load_config("tiny"), fp16=True, epoch=3, step=42)
    checkpoint = torch.load(half, map_location="cpu", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["step"]) == (3, 42)
    assert checkpoint["state_dict"]["module.visual.conv1.weight"].dtype == torch.float16
    reloaded = load_checkpoint(half, load_config("tiny"))
    assert reloaded.visual.conv1.weight.dtype == torch.float32
    torch.testing.assert_close(reloaded.visual.conv1.weight, model.visual.conv1.weight.half().float())


@pytest.mark.slow
def test_cn_clip_checkpoint_round_trip(tmp_path, capsys):
    """cn_clip's create_model (official RN50, fp16, module. keys, a bert.pooler key) -> clip_match -> cn_clip."""
    from cn_clip.clip.utils import create_model as cn_create_model

    torch.manual_seed(1)
    original = cn_create_model("RN50@RBT3-chinese")
    state = {f"module.{k}": v for k, v in original.state_dict().items()}
    state["module.bert.pooler.dense.weight"] = torch.zeros(768, 768, dtype=torch.float16)
    torch.save({"state_dict": state, "epoch": 2, "step": 10, "optimizer": {}}, tmp_path / "official.pt")
    capsys.readouterr()

    config = load_config("RN50@RBT3-chinese")
    model = load_checkpoint(tmp_path / "official.pt", config)
    for key, value in original.state_dict().items():
        assert torch.equal(model.state_dict()[key], value.float()), key
    assert capsys.readouterr().out == ""

    save_slim_checkpoint(model, tmp_path / "slim.pt", config, fp16=True)
    back = cn_create_model("RN50@RBT3-chinese", torch.load(tmp_path / "slim.pt", map_location="cpu"))
    for key, value in original.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_incompatible_checkpoint_lists_keys(tiny_checkpoint, tmp_path):
    with pytest.raises(ClipMatchError) as error:
        load_checkpoint(tiny_checkpoint, load_config("demo"))
    message = str(error.value)
    assert "incompatible checkpoint" in message and str(tiny_checkpoint) in message
    assert "visual.conv1.weight checkpoint (8, 3, 3, 3) vs model (16, 3, 3, 3)" in message

    state = read_state_dict(tiny_checkpoint)
    del state["text_projection"]
    state["extra.weight"] = torch.zeros(2)
    torch.save({"state_dict": state}, tmp_path / "broken.pt")
    with pytest.raises(ClipMatchError, match=r"missing text_projection \(64, 64\).*unexpected extra.weight \(2,\)"):
        load_checkpoint(tmp_path / "broken.pt", load_config("tiny"))


@pytest.mark.parametrize("content, message", [
    (b"not a checkpoint", "not a readable PyTorch checkpoint"),
    (None, "checkpoint not found"),
])
def test_unreadable_checkpoint(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ClipMatchError, match=message) as error:
        read_state_dict(path)
    assert str(path) in str(error.value)


def test_resize_checkpoint_to_a_larger_resolution(tiny_checkpoint, tmp_path):
    config96 = tmp_path / "tiny96.json"
    config96.write_text(json.dumps(load_config("tiny").to_dict() | {"name": "tiny96", "image_resolution": 96}))
    out = resize_checkpoint(tiny_checkpoint, load_config(config96), tmp_path / "tiny96.pt")
    before, after = read_state_dict(tiny_checkpoint), read_state_dict(out)
    assert after[POSITIONAL_EMBEDDING].shape[0] == 1 + 3 * 3 and before[POSITIONAL_EMBEDDING].shape[0] == 1 + 2 * 2
    assert torch.equal(after[POSITIONAL_EMBEDDING][0], before[POSITIONAL_EMBEDDING][0])  # the pooled token's row
    # a smooth resize: the 3x3 grid's centre is the mean of the 2x2 grid
    assert torch.allclose(after[POSITIONAL_EMBEDDING][1 + 4], before[POSITIONAL_EMBEDDING][1:].mean(0), atol=1e-5)
    assert all(torch.equal(after[k], v) for k, v in before.items() if k != POSITIONAL_EMBEDDING)
    model = load_checkpoint(out, load_config(config96))
    with torch.no_grad():
        assert model.encode_image(torch.zeros(1, 3, 96, 96)).shape == (1, 64)


@pytest.mark.parametrize("change, message", [
    ({"context_length": "16"}, "context_length must be a whole number >= 1, got '16'"),
    ({"embed_dim": 64.5}, "embed_dim must be a whole number >= 1"),
    ({"vision_layers": "2"}, "vision_layers must be a whole number"),
    ({"vision_layers": 2, "vision_patch_size": None}, "vision_patch_size must be a whole number >= 1 for a ViT"),
    ({"text_hidden_act": "tanh"}, "text_hidden_act must be one of gelu"),
    ({"text_num_attention_heads": 3}, "text_num_attention_heads must be a divisor of text_hidden_size"),
    ({"image_resolution": -64}, "image_resolution must be a whole number >= 1"),
])
def test_config_values_are_checked_by_field(tmp_path, change, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(load_config("tiny").to_dict() | change))
    with pytest.raises(ClipMatchError, match=f"model config .*{message}"):
        load_config(path)


def test_resize_command_refuses_other_architectures(tiny_checkpoint, tmp_path, capsys):
    wider = tmp_path / "wider.json"
    wider.write_text(json.dumps(load_config("tiny").to_dict() | {"name": "wider", "embed_dim": 128}))
    out = tmp_path / "out.pt"
    assert cli.main(["resize", str(tiny_checkpoint), "--model", str(wider), "--out", str(out)]) == 2
    assert "incompatible checkpoint" in capsys.readouterr().err and not out.exists()
    trimming = tmp_path / "trimming.json"  # the same weights fit, but the model would frame its images otherwise
    trimming.write_text(json.dumps(load_config("tiny").to_dict() | {"name": "trimming", "trim_margin": 4}))
    assert cli.main(["resize", str(tiny_checkpoint), "--model", str(trimming), "--out", str(out)]) == 2
    assert "trained with trim_margin None, but model trimming has 4" in capsys.readouterr().err and not out.exists()
