"""``metrics.jsonl`` (one JSON record per log or validation) and its plot, ``metrics.png``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..fsutil import atomic_file


class MetricsLog:
    """Append-only JSONL of training and validation records, plotted after each validation."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "metrics.jsonl"
        self.plot_path = run_dir / "metrics.png"

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (a resumed run writes them again)."""
        kept = [r for r in self.records() if r["step"] <= step]
        with atomic_file(self.path, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in kept)

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def records(self) -> list[dict[str, Any]]:
        """The records; lines that do not parse (the end of a write cut off by a crash) are left out."""
        if not self.path.exists():
            return []
        records = []
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            for line in filter(str.strip, handle):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
        return [record for record in records if isinstance(record, dict) and "step" in record and "kind" in record]

    def plot(self) -> None:
        """Loss (train and validation) and validation recall against steps."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        records = self.records()
        train = [r for r in records if r["kind"] == "train"]
        val = [r for r in records if r["kind"] == "val"]
        figure, (loss_axes, recall_axes) = plt.subplots(1, 2, figsize=(11, 4))
        loss_axes.plot([r["step"] for r in train], [r["loss"] for r in train], label="train")
        loss_axes.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation")
        loss_axes.set(xlabel="step", ylabel="InfoNCE loss", title="loss")
        loss_axes.legend()
        for key in ("mean_recall", "i2t_r1", "t2i_r1"):
            recall_axes.plot([r["step"] for r in val], [r[key] for r in val], "o-", label=key)
        recall_axes.set(xlabel="step", ylabel="%", title="validation recall", ylim=(0, 100))
        recall_axes.legend()
        figure.tight_layout()
        with atomic_file(self.plot_path, "wb") as handle:
            figure.savefig(handle, format="png", dpi=100)
        plt.close(figure)
