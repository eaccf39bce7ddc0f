"""FP16 and INT8 versions of an exported fp32 ONNX tower."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx

QUANTIZED_OPS = ["MatMul", "Gemm", "Gather"]
_FLOAT = onnx.TensorProto.FLOAT


def convert_fp16(source: Path, target: Path) -> Path:
    """FP16 weights and compute, float32 inputs/outputs (so callers do not change).

    onnxconverter-common >= 1.15 keeps the graph's own ``Cast(to=FLOAT)`` nodes (cn_clip casts to
    ``self.dtype``/float32 around LayerNorm, the attention mask and the image input) while
    typing their outputs FLOAT16, which onnxruntime refuses ("bound to different types"). Those
    original casts (not the ones the converter adds around graph outputs or blocked ops) are
    rewritten to FLOAT16.
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
    onnx.save(model, str(target))
    return target


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic INT8 quantisation for CPU: int8 weights for MatMul/Gemm/Gather (embeddings),
    activations quantised per batch at run time; convolutions stay fp32.

    Measured on the RN50 image tower (2 threads, Zen 4 with VNNI): onnxruntime's ``ConvInteger``
    (what dynamic quantisation makes of a Conv) ran 4-6x *slower* than fp32 Conv with int8
    weights and ~1.5x slower with uint8 weights, while dynamic MatMul made the BERT text tower
    ~2x faster. Fast int8 convolutions need static (calibrated) quantisation; see
    benchmarks/bench_encoder.py and BENCHMARKS.md.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a generic "consider pre-processing" warning
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=QUANTIZED_OPS)
    finally:
        root.setLevel(level)
    return target


def _cast_to(node: onnx.NodeProto) -> int:
    return next(attribute.i for attribute in node.attribute if attribute.name == "to")
