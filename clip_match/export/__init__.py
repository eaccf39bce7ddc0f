"""ONNX export of CN-CLIP towers (fp32/fp16/int8) into a verified model bundle.

Training side: needs torch; the runtime never imports this package.
"""
from __future__ import annotations

from .exporter import export_bundle, fingerprint, parse_precisions

__all__ = ["export_bundle", "fingerprint", "parse_precisions"]
