"""Export the two towers of a cn_clip model to ONNX with dynamic batch (and text length) axes."""
from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch

from ..errors import ClipMatchError
from ..runtime.bundle import IMAGE_INPUT, IMAGE_OUTPUT, TEXT_INPUT, TEXT_OUTPUT

OPSET = 17
_MAX_PROTO_BYTES = 2 * 1024**3  # protobuf's limit for a single-file ONNX model


class ImageTower(torch.nn.Module):
    """image (N, 3, R, R) float32 -> unnormalised features (N, D)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(image)


class TextTower(torch.nn.Module):
    """text: token ids (N, L) int64 -> unnormalised features (N, D); the attention mask is ``ids != 0``
    inside (cn_clip's ``encode_text``), so callers pass token ids only and may pad to any L."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(text)


def export_image_tower(model: torch.nn.Module, resolution: int, path: Path) -> Path:
    example = torch.zeros(2, 3, resolution, resolution)
    return _export(ImageTower(model), example, IMAGE_INPUT, IMAGE_OUTPUT, {0: "batch"}, path)


def export_text_tower(model: torch.nn.Module, context_length: int, path: Path) -> Path:
    example = torch.zeros(2, context_length, dtype=torch.long)
    example[:, 0] = 101  # [CLS]
    example[0, 1:4] = torch.tensor([1962, 4638, 102])
    example[1, 1] = 102  # [SEP]; the rest is [PAD], so the traced graph sees a real mask
    return _export(TextTower(model), example, TEXT_INPUT, TEXT_OUTPUT, {0: "batch", 1: "sequence"}, path)


def _export(tower: torch.nn.Module, example: torch.Tensor, input_name: str, output_name: str,
            axes: dict[int, str], path: Path) -> Path:
    tower.eval()  # export restores the wrapper's mode afterwards, which must stay eval
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            tower, (example,), str(path),
            input_names=[input_name], output_names=[output_name],
            dynamic_axes={input_name: axes, output_name: {0: "batch"}},
            opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )
    _inline_shared_weights(path)
    extra = [p.name for p in path.parent.iterdir() if p != path and not p.name.endswith(".onnx")]
    if extra or path.stat().st_size >= _MAX_PROTO_BYTES:
        raise ClipMatchError(
            f"{path.name}: this tower's weights exceed the 2 GB single-file ONNX limit; "
            "clip_match bundles support models below it (RN50, ViT-B-16, ViT-L-14)"
        )
    return path


def _inline_shared_weights(path: Path) -> None:
    """Give every weight its own initializer.

    The exporter stores identical tensors once and feeds the copies through ``Identity`` nodes
    (randomly initialised ResNets have many: cn_clip zero-initialises every ``bn3``, so the fused
    conv weights coincide). Quantisation needs each Conv/MatMul weight to be an initializer.
    """
    model = onnx.load(str(path))
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    shared = [node for node in graph.node if node.op_type == "Identity" and node.input[0] in initializers]
    if not shared:
        return
    for node in shared:
        copy = onnx.TensorProto()
        copy.CopyFrom(initializers[node.input[0]])
        copy.name = node.output[0]
        graph.initializer.append(copy)
        graph.node.remove(node)
    onnx.save(model, str(path))
