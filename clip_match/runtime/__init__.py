"""The torch-free runtime: model bundles, their ONNX towers behind onnxruntime (`Encoder`), image
decoding (`images`), cn_clip's preprocessing (`preprocess`) and its tokenizer (`tokenizer`).

Runtime: imports neither torch nor `clip_match.train`, `model` or `export` (tests/test_imports.py).
"""
