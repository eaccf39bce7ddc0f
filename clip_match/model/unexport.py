"""Back from a bundle to trainable weights, so that training can go on from a model whose PyTorch
checkpoint is gone (the demo bundle's never was kept) instead of starting over.

The exporter's ONNX keeps every parameter: named ones under ``model.<name>`` (fp32, fp16 or int8 with
their scale and zero point), the rest under anonymous names that the node using them places (a
Linear's transposed weight in a MatMul, the attention pool's q/k/v weights, biases and positional
embedding). Two things are gone and come back as follows:

- Batch norm was folded into each convolution's weight and bias. The folded convolution is kept, and
  its batch norm is set to pass the convolution's output through unchanged in eval mode while its
  batch statistics (measured on calibration images, per channel) make train mode start close to it.
- ``logit_scale`` is not exported: it starts at the trainer's ceiling, ln 100, where trained
  CLIP models end.

The rebuilt model is checked against the bundle's own ONNX towers (`export.verify`: the least cosine
of the precision read, on sample images and texts and on held-out calibration images); below the
precision's threshold nothing is written.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from onnx import numpy_helper

from ..errors import ClipMatchError
from ..export import verify
from ..export.calibration import load_calibration_images
from ..runtime.bundle import Bundle
from .checkpoint import save_slim_checkpoint
from .config import ModelConfig
from .factory import create_model

LOGIT_SCALE = math.log(100)  # the trainer's ceiling (trainer.MAX_LOGIT_SCALE)
_PRECISIONS = ("fp32", "fp16", "int8")  # the most faithful copy of the weights first
_ATTENTION_POOL = "visual.attnpool"


def unexport(bundle_dir: str | os.PathLike, calibration_images: str | os.PathLike, out: str | os.PathLike) -> dict:
    """Write a slim checkpoint of the bundle's model to ``out``; returns what was read and verified."""
    bundle = Bundle.load(bundle_dir)
    config = ModelConfig.from_dict(bundle.manifest.get("config") or {}, str(bundle.path / "clip_match.json"))
    if not config.is_resnet:
        raise ClipMatchError(f"{bundle.path}: only ResNet image towers can be read back (model {config.name})")
    precision = next(p for p in _PRECISIONS if p in bundle.precisions)
    paths = {tower: bundle.tower_path(tower, precision) for tower in ("image", "text")}
    (image, folded), (text, _) = onnx_parameters(paths["image"]), onnx_parameters(paths["text"])
    model = create_model(config).eval()
    _load(model, {**image, **text}, bundle.path)
    images = load_calibration_images(calibration_images, config.image_resolution, bundle.manifest["mean"],
                                     bundle.manifest["std"], bundle.framing)
    _restore_batch_norms(model, folded, torch.from_numpy(images.calibration))
    samples = verify.make_samples(config)
    result = verify.measure(paths["image"], paths["text"], samples, verify.reference_features(model, samples))
    result[verify.CALIBRATION_KEY] = verify.measure_images(paths["image"], images.verification,
                                                           verify.reference_images(model, images.verification))
    verify.check(precision, result)
    save_slim_checkpoint(model, out, config)
    return {"checkpoint": str(out), "bundle": str(bundle.path), "precision": precision, "model": config.name,
            "batch_norm_statistics_from": images.summary(), "logit_scale": LOGIT_SCALE,
            **{key: round(value, 6) for key, value in result.items()}}


def onnx_parameters(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """An exported tower's parameters by model parameter name (float32), and the folded convolutions'
    biases by convolution name (the model keeps them in batch norms)."""
    import onnx

    graph = onnx.load(str(path)).graph
    values = _dequantised(graph, {init.name: numpy_helper.to_array(init) for init in graph.initializer})
    state = {_parameter_name(name): value for name, value in values.items() if name.startswith("model.")}
    conv_biases, pool_weights, pool_biases = {}, [], []
    for node in graph.node:
        module = module_path(node.name)
        if node.op_type == "Conv" and node.input[1] in values:
            state[f"{module}.weight"] = values[node.input[1]]
            if len(node.input) > 2:
                conv_biases[module] = values[node.input[2]]
        elif node.op_type in ("MatMul", "MatMulInteger") and node.input[1] in values:
            name, weight = node.input[1], values[node.input[1]]  # x @ W
            if name.startswith("model."):  # a Linear's weight transposed under its own name, or a projection
                name = _parameter_name(name)
                state[name] = weight.T if name.endswith(".weight") else weight
            elif module == _ATTENTION_POOL:
                pool_weights.append(weight.T)
            else:
                state[f"{module}.weight"] = weight.T
        elif node.op_type == "Add" and module == _ATTENTION_POOL:
            value = next((values[name] for name in node.input if name in values and not name.startswith("model.")),
                         None)
            if value is not None and value.ndim == 3:  # (cells, 1, width): the positional embedding
                state[f"{module}.positional_embedding"] = value[:, 0]
            elif value is not None:
                pool_biases.append(value)
    for name, weight, bias in zip(("q_proj", "k_proj", "v_proj"), pool_weights, pool_biases):
        state[f"{_ATTENTION_POOL}.{name}.weight"] = weight
        state[f"{_ATTENTION_POOL}.{name}.bias"] = bias
    return _float32(state), _float32(conv_biases)


def _float32(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: value.astype(np.float32) for name, value in values.items()}


def _parameter_name(initializer: str) -> str:
    """``model.visual.attnpool.c_proj.weight_quantized`` (or ``..._DequantizeLinear_Output``) -> the parameter."""
    name = initializer[len("model."):]
    for suffix in ("_quantized", "_DequantizeLinear_Output"):
        name = name.removesuffix(suffix)
    return name


def module_path(node_name: str) -> str:
    """The module a node of torch's exporter belongs to: ``/visual/layer1/layer1.0/conv1/Conv`` ->
    ``visual.layer1.0.conv1`` (a child listed under its container's name replaces it)."""
    path: list[str] = []
    for part in node_name.strip("/").split("/")[:-1]:
        if path and part.startswith(path[-1] + "."):
            path[-1] = part
        else:
            path.append(part)
    return ".".join(path)


def _dequantised(graph, stored: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every float initializer, and every quantised one as float: ``X_quantized`` with ``X_scale`` and
    ``X_zero_point`` (dynamic int8), or the output of a DequantizeLinear of an initializer (static int8)."""
    values, consumed = {}, set()  # consumed: the quantised tensors, scales and zero points read
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in stored and node.input[1] in stored:
            value, scale = stored[node.input[0]].astype(np.float32), stored[node.input[1]]
            zero_point = stored[node.input[2]].astype(np.float32) if len(node.input) > 2 else np.zeros_like(scale)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * value.ndim
            if scale.ndim:
                shape[axis] = -1
            values[node.output[0]] = (value - zero_point.reshape(shape)) * scale.reshape(shape)
            consumed |= set(node.input)
    for name, value in stored.items():  # dynamic int8: per tensor, or per output column (the last axis)
        base = name.removesuffix("_quantized")
        if base != name and name not in consumed and f"{base}_scale" in stored:
            zero_point = stored.get(f"{base}_zero_point", np.zeros((), value.dtype))
            values[name] = (value.astype(np.float32) - zero_point.astype(np.float32)) * stored[f"{base}_scale"]
            consumed |= {f"{base}_scale", f"{base}_zero_point"}
    return {**{name: value for name, value in stored.items() if value.dtype.kind == "f" and name not in consumed},
            **values}


def _load(model: torch.nn.Module, state: dict[str, np.ndarray], where: Path) -> None:
    """Copy ``state`` into ``model``: every parameter but batch norms' and ``logit_scale``."""
    parameters = dict(model.named_parameters())
    batch_norms = {name for name, module in model.named_modules() if isinstance(module, torch.nn.BatchNorm2d)}
    missing = [name for name in parameters
               if name not in state and name != "logit_scale" and name.rsplit(".", 1)[0] not in batch_norms]
    unknown = [name for name in state if name not in parameters]
    if missing or unknown:
        raise ClipMatchError(f"{where}: the ONNX towers do not map onto the model: missing {missing[:5]}, "
                             f"unexpected {unknown[:5]}; only bundles written by `clip-match export` can be read back")
    with torch.no_grad():
        for name, value in state.items():
            if tuple(parameters[name].shape) != value.shape:
                raise ClipMatchError(f"{where}: {name} has shape {value.shape} in the bundle, "
                                     f"{tuple(parameters[name].shape)} in the model")
            parameters[name].copy_(torch.from_numpy(value))
        model.logit_scale.fill_(LOGIT_SCALE)


def _restore_batch_norms(model: torch.nn.Module, folded: dict[str, np.ndarray], images: torch.Tensor) -> None:
    """Give each convolution's batch norm the folded bias and the statistics of the convolution's
    output on ``images``: ``(x - mean) / sqrt(var + eps) * sqrt(var + eps) + mean + bias`` is the
    folded model's ``x + bias`` in eval mode, and close to it in train mode on batches like ``images``."""
    modules = list(model.named_modules())
    pairs = []  # (convolution name, its batch norm): the next batch norm after each convolution
    for index, (name, module) in enumerate(modules):
        if isinstance(module, torch.nn.Conv2d):
            norm = next(m for _, m in modules[index + 1:] if isinstance(m, torch.nn.BatchNorm2d))
            pairs.append((name, module, norm))
    unfolded = [name for name, _, _ in pairs if name not in folded]
    if unfolded:
        raise ClipMatchError(f"no batch norm folded into convolution {unfolded[0]} (no bias in the ONNX); only "
                             "bundles written by `clip-match export` can be read back")
    with torch.no_grad():
        for name, _, norm in pairs:  # eval: x + bias, the folded convolution
            norm.weight.fill_(1.0)
            norm.bias.copy_(torch.from_numpy(folded[name]))
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0 - norm.eps)
        statistics = {}
        hooks = [conv.register_forward_hook(
            lambda _, __, output, name=name: statistics.__setitem__(name, (output.mean((0, 2, 3)),
                                                                           output.var((0, 2, 3), unbiased=False))))
            for name, conv, _ in pairs]
        model.eval()
        model.encode_image(images)
        for hook in hooks:
            hook.remove()
        for name, _, norm in pairs:
            mean, variance = statistics[name]
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(variance)
            norm.weight.copy_(torch.sqrt(variance + norm.eps))
            norm.bias.add_(mean)
