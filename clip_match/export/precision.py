"""FP16 and INT8 versions of an exported fp32 ONNX tower."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx


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
    """Dynamic INT8 quantisation for CPU: int8 weights, activations quantised per batch at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a generic "consider pre-processing" warning
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return target
