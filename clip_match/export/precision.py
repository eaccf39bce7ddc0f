"""FP16 and INT8 versions of an exported fp32 ONNX tower."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx

QUANTIZED_OPS = ["MatMul", "Gemm", "Gather"]


def convert_fp16(source: Path, target: Path) -> Path:
    """FP16 weights and compute, float32 inputs/outputs (so callers do not change).

    onnxconverter-common >= 1.15 leaves the graph's own ``Cast(to=FLOAT)`` nodes (cn_clip casts to
    ``self.dtype``/float32 around LayerNorm, the attention mask and the image input) while
    marking their outputs FLOAT16, which onnxruntime refuses ("bound to different types").
    Those internal casts are rewritten to FLOAT16; only the casts feeding graph outputs stay FLOAT.
    """
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one "truncated to 1e-07" warning per tiny weight
        model = float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    outputs = {output.name for output in model.graph.output}
    for node in model.graph.node:
        if node.op_type == "Cast" and node.output[0] not in outputs:
            for attribute in node.attribute:
                if attribute.name == "to" and attribute.i == onnx.TensorProto.FLOAT:
                    attribute.i = onnx.TensorProto.FLOAT16
    onnx.save(model, str(target))
    return target


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic INT8 quantisation for CPU: int8 weights for MatMul/Gemm/Gather (embeddings),
    activations quantised per batch at run time; convolutions stay fp32.

    Measured on the RN50 image tower (2 threads, Zen 4 with VNNI): onnxruntime's ``ConvInteger``
    (what dynamic quantisation makes of a Conv) ran ~4x *slower* than fp32 Conv with int8
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
