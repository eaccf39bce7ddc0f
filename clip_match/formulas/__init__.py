"""Formula images against LaTeX strings: LaTeX normalisation (`latex`), model-free layout codes of
where the ink is (`layout_codes`), the retrieval protocols behind `clip-match eval-retrieval`
(`evaluate`), and rendering formulas offline (`render`: TeX Live or matplotlib's mathtext;
`render_cache`: clean renders on disk by content; `variants`: seeded copies that differ as real
images do), which `clip-match index build --render` and ``datasets/formulas/`` share. Dataset
building and training augmentation live in ``datasets/formulas/``.

Runtime: torch-free; matplotlib only inside the mathtext renderer.
"""
