"""Formula datasets: LaTeX rendered offline (TeX Live or matplotlib), augmented, written as TSV/JSONL.

Entry point: ``python -m datasets.formulas.build --help``.
"""
