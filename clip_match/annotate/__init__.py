"""The annotation tool behind `clip-match annotate`: label images or tile puzzles in the browser, export datasets.
Runtime side: torch-free.

- `scan`: walk IMAGE_DIR, probe image headers, list non-images as skipped,
- `puzzles`: puzzle mode's inputs: each puzzle's tiles (the grid finder of `clip-match grid`), the prompts file,
- `store`: the SQLite state (labels, puzzle answers and tile labels, skips, per-tab undo log) inside DATASET_DIR,
- `assist`: model suggestions (pre-marked tiles, ranked labels) computed by a background worker,
- `thumbs`: cached display-size copies of large or non-browser images,
- `server`: the local HTTP app (same-origin only, files served by database id),
- `exchange`: export to / import from the TSV/JSONL format (and puzzles for eval-grid),
- `static/`: the vanilla HTML/JS/CSS page.
"""
