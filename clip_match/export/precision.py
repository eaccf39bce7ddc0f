"""FP16 and INT8 versions of an exported fp32 ONNX tower."""
from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
from tqdm import tqdm

from ..runtime.bundle import IMAGE_INPUT

QUANTIZED_OPS = ["MatMul", "Gemm", "Gather"]
CALIBRATION_BATCH = 8
ATTENTION_POOL = "/visual/attnpool/"  # the ONNX node names torch gives cn_clip's ModifiedResNet.attnpool
_FLOAT = onnx.TensorProto.FLOAT


def convert_fp16(source: Path, target: Path) -> Path:
    """FP16 weights and compute, float32 inputs/outputs (so callers do not change).

    onnxconverter-common >= 1.15 keeps the graph's own ``Cast(to=FLOAT)`` nodes (cn_clip casts to
    ``self.dtype``/float32 around LayerNorm, the attention mask and the image input) while
    typing their outputs FLOAT16, which onnxruntime refuses ("bound to different types"). Those
    original casts (not the ones the converter adds around graph outputs or blocked ops) are
    rewritten to FLOAT16. A ViT's cast of the image is the graph's first node, and the converter
    drops it: its first convolution would read the float32 input (`_cast_float_inputs`).
    """
    from onnxconverter_common import float16

    original = onnx.load(str(source))
    float_casts = {node.name for node in original.graph.node if node.op_type == "Cast" and _cast_to(node) == _FLOAT}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one "truncated to 1e-07" warning per tiny weight
        model = float16.convert_float_to_float16(original, keep_io_types=True)
    for node in model.graph.node:
        if node.name in float_casts:
            for attribute in node.attribute:
                if attribute.name == "to":
                    attribute.i = onnx.TensorProto.FLOAT16
    _cast_float_inputs(model)
    onnx.save(model, str(target))
    return target


def _cast_float_inputs(model: onnx.ModelProto) -> None:
    """Give the nodes that compute on a float32 graph input (not the casts or shape reads) a float16
    copy of it, made by one Cast placed first."""
    for graph_input in model.graph.input:
        if graph_input.type.tensor_type.elem_type != _FLOAT:
            continue
        readers = [node for node in model.graph.node
                   if graph_input.name in node.input and node.op_type not in ("Cast", "Shape")]
        if not readers:
            continue
        half = f"{graph_input.name}_float16"
        for node in readers:
            node.input[:] = [half if name == graph_input.name else name for name in node.input]
        model.graph.node.insert(0, onnx.helper.make_node("Cast", [graph_input.name], [half], name=f"/{half}",
                                                         to=onnx.TensorProto.FLOAT16))


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic INT8 quantisation for CPU: int8 weights for MatMul/Gemm/Gather (embeddings),
    activations quantised per batch at run time; convolutions stay fp32.

    Measured on the RN50 image tower (2 threads, Zen 4 with VNNI): onnxruntime's ``ConvInteger``
    (what dynamic quantisation makes of a Conv) ran 4-6x *slower* than fp32 Conv with int8
    weights and ~1.5x slower with uint8 weights, while dynamic MatMul made the BERT text tower
    ~2x faster. Fast int8 convolutions need static (calibrated) quantisation: `quantize_int8_static`.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_quantizer():
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=QUANTIZED_OPS)
    return target


def quantize_int8_static(source: Path, target: Path, images: np.ndarray) -> Path:
    """Static INT8 (QDQ) of the image tower, calibrated on preprocessed ``images``.

    Per-channel int8 weights, uint8 activations whose ranges are the min/max seen on the
    calibration images (onnxruntime's recommended CPU setting on VNNI hardware). onnxruntime
    fuses the QDQ pairs around Conv into ``QLinearConv``, which unlike dynamic ``ConvInteger``
    is fast. The model is first run through onnxruntime's ``quant_pre_process`` (shape
    inference and graph optimisation), as its quantiser recommends.

    A ResNet's attention pool stays fp32 except its weight products (`_float_attention`): on an
    RN50 trained on emoji tiles, quantising it too moved tile embeddings to a mean cosine of 0.994
    with fp32 and changed 18 of 40 puzzle answers; kept in float, 0.9997, for ~10 % more time
    (BENCHMARKS.md, grid puzzles).
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.progress = tqdm(total=len(images), desc="calibrate int8", unit="img", disable=None,
                                 leave=False)
            self.starts = iter(range(0, len(images), CALIBRATION_BATCH))

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self.starts, None)
            if start is None:
                return None
            batch = images[start:start + CALIBRATION_BATCH]
            self.progress.update(len(batch))
            return {IMAGE_INPUT: batch}

    with _quiet_quantizer(), tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        try:
            quant_pre_process(str(source), str(prepared))
        except AssertionError:  # its symbolic shape inference fails on a ViT's reshapes; ONNX's own suffices
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        reader = Batches()
        try:
            quantize_static(str(prepared), str(target), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax,
                            nodes_to_exclude=_float_attention(onnx.load(str(prepared))))
        finally:
            reader.progress.close()
    return target


def _float_attention(model: onnx.ModelProto) -> list[str]:
    """The nodes of a ResNet tower's attention pool (cn_clip's ``visual.attnpool``) other than its
    products with weights: the positional-embedding add, the scaled query-key products, the softmax
    and the weighted sum. Their activations span ranges that 8 bits resolve badly, and they cost
    little next to the convolutions. Empty for other towers."""
    weights = {initializer.name for initializer in model.graph.initializer}
    return [node.name for node in model.graph.node if node.name.startswith(ATTENTION_POOL)
            and not (node.op_type in ("MatMul", "Gemm") and any(name in weights for name in node.input))]


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime's quantisers log generic advice ("consider pre-processing") on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _cast_to(node: onnx.NodeProto) -> int:
    return next(attribute.i for attribute in node.attribute if attribute.name == "to")
