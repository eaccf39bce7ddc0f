"""Formula datasets: LaTeX rendered offline (TeX Live or matplotlib, by `clip_match.formulas.render`),
augmented, written as TSV/JSONL.

Entry point: ``python -m datasets.formulas.build --help``.
"""
