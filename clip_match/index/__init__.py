"""Candidate texts embedded once into a FAISS index on disk (`label_index.LabelIndex`), read from
candidate files (`candidates`), optionally mixed with example images (`examples`).

Runtime: torch-free. Formula-specific parts (LaTeX keys, layout codes) come from `clip_match.formulas`.
"""
