"""The annotation tool behind `clip-match annotate`: label images in the browser, export datasets.
Runtime side: torch-free.

- `scan`: walk IMAGE_DIR, probe image headers, list non-images as skipped,
- `store`: the SQLite state (labels, skips, per-tab undo log) inside DATASET_DIR,
- `thumbs`: cached display-size copies of large or non-browser images,
- `server`: the local HTTP app (same-origin only, files served by database id),
- `exchange`: export to / import from the TSV/JSONL training format,
- `static/`: the vanilla HTML/JS/CSS page.
"""
