"""Formula images against LaTeX strings: LaTeX normalisation (`latex`), model-free layout codes of
where the ink is (`layout_codes`), and the retrieval protocols behind `clip-match eval-retrieval`
(`evaluate`). Dataset building and rendering live in ``datasets/formulas/``.

Runtime: torch-free.
"""
