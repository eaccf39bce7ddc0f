"""ONNX export of CN-CLIP towers (fp32/fp16/int8) into a verified model bundle. Needs torch."""
from __future__ import annotations

from .exporter import export_bundle, fingerprint, parse_precisions

__all__ = ["export_bundle", "fingerprint", "parse_precisions"]
