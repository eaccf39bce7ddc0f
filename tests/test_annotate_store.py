"""Annotation state, scanning, export/import and the `clip-match annotate` command line."""
from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from clip_match.annotate.exchange import attach_image_dir, export_dataset, import_dataset
from clip_match.annotate.scan import scan_images
from clip_match.annotate.store import Conflict, LabelStore
from clip_match.annotate.thumbs import MAX_SIDE
from clip_match.cli import main
from clip_match.data.formats import read_jsonl, read_tsv
from clip_match.errors import ClipMatchError
from test_annotate_helpers import make_images


def labelled_store(tmp_path: Path, count: int = 5) -> tuple[LabelStore, dict[str, int]]:
    make_images(tmp_path / "images", count)
    store = LabelStore(tmp_path / "labels")
    attach_image_dir(store, tmp_path / "images")
    return store, {img["path"]: img["id"] for img in store.state()["images"]}


def labels(store: LabelStore) -> dict[str, list[str]]:
    return {img["path"]: img["labels"] for img in store.state()["images"] if img["labels"]}


def test_scan_lists_non_images_and_stays_inside(tmp_path):
    image_dir = tmp_path / "images"
    make_images(image_dir / "sub", 2)
    (image_dir / "notes.txt").write_text("hello")
    (image_dir / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    (image_dir / ".hidden.jpg").write_bytes((image_dir / "sub" / "img0.jpg").read_bytes())
    os.symlink(tmp_path, image_dir / "loop")
    make_images(image_dir / "labels" / "thumbs", 1)  # DATASET_DIR inside IMAGE_DIR is left out
    result = scan_images(image_dir, exclude=image_dir / "labels")
    assert [image.path for image in result.images] == ["sub/img0.jpg", "sub/img1.jpg"]
    assert dict(result.rejects) == {"broken.jpg": "not an image", "loop/": "symlinked folder (not followed)",
                                    "notes.txt": "not an image"}
    with pytest.raises(ClipMatchError, match="not a folder"):
        scan_images(tmp_path / "missing")


def test_rescan_keeps_labels_of_moved_away_files_and_orders_naturally(tmp_path):
    store, ids = labelled_store(tmp_path, 12)
    assert list(ids)[:3] == ["img0.jpg", "img1.jpg", "img2.jpg"] and list(ids)[-1] == "img11.jpg"
    store.change_labels("t", ids["img11.jpg"], add=["猫"])
    moved = tmp_path / "img11.jpg"
    os.replace(tmp_path / "images" / "img11.jpg", moved)
    attach_image_dir(store, tmp_path / "images")
    assert "img11.jpg" not in labels(store) and store.missing_labelled() == ["img11.jpg"]
    os.replace(moved, tmp_path / "images" / "img11.jpg")
    attach_image_dir(store, tmp_path / "images")
    assert labels(store) == {"img11.jpg": ["猫"]}


def test_labels_skip_and_per_client_undo(tmp_path):
    store, ids = labelled_store(tmp_path)
    a, b = ids["img0.jpg"], ids["img1.jpg"]
    store.change_labels("tab1", a, add=["  cat   猫 ", "dog"])
    assert labels(store) == {"img0.jpg": ["cat 猫", "dog"]}  # whitespace collapsed
    store.change_labels("tab1", a, add=["dog"])               # no change: nothing to undo
    store.change_labels("tab2", b, add=["dog"])
    store.set_skipped("tab1", ids["img2.jpg"], True)
    store.change_labels("tab1", a, remove=["dog"])
    assert store.undo("tab1")["kind"] == "labels"             # back comes "dog" on img0
    assert labels(store) == {"img0.jpg": ["cat 猫", "dog"], "img1.jpg": ["dog"]}
    assert store.undo("tab1") == {"kind": "skip", "image_id": ids["img2.jpg"], "skipped": True}
    assert store.undo("tab1")["added"] == ["cat 猫", "dog"]
    assert store.undo("tab1") is None
    assert labels(store) == {"img1.jpg": ["dog"]}             # tab2's work is untouched
    state = store.state()
    assert not any(img["skipped"] for img in state["images"])
    assert state["labels"] == [{"name": "dog", "last_used": state["labels"][0]["last_used"], "count": 1}]


def test_rename_merge_and_their_undo(tmp_path):
    store, ids = labelled_store(tmp_path)
    store.change_labels("t", ids["img0.jpg"], add=["cat"])
    store.change_labels("t", ids["img1.jpg"], add=["cat", "kitty"])
    store.change_labels("t", ids["img2.jpg"], add=["kitty"])
    assert store.rename_label("t", "kitty", "小猫") == {"kind": "rename", "images": 2}
    assert labels(store) == {"img0.jpg": ["cat"], "img1.jpg": ["cat", "小猫"], "img2.jpg": ["小猫"]}
    assert store.rename_label("t", "cat", "小猫") == {"kind": "merge", "images": 2}
    assert labels(store) == {"img0.jpg": ["小猫"], "img1.jpg": ["小猫"], "img2.jpg": ["小猫"]}
    store.undo("t")
    assert labels(store) == {"img0.jpg": ["cat"], "img1.jpg": ["cat", "小猫"], "img2.jpg": ["小猫"]}
    store.change_labels("other", ids["img3.jpg"], add=["kitty"])  # the old name is taken again
    with pytest.raises(Conflict, match="'kitty' exists again"):
        store.undo("t")
    # The impossible undo was dropped; the next one goes on, and finds its label under its new name.
    assert store.undo("t") == {"kind": "labels", "image_id": ids["img2.jpg"], "added": ["小猫"], "removed": []}
    assert labels(store) == {"img0.jpg": ["cat"], "img1.jpg": ["cat", "小猫"], "img3.jpg": ["kitty"]}
    with pytest.raises(ClipMatchError, match="no label named"):
        store.rename_label("t", "nope", "x")


def test_state_survives_reopening_and_reports_changes_since(tmp_path):
    store, ids = labelled_store(tmp_path)
    version = store.state()["version"]
    store.change_labels("t", ids["img3.jpg"], add=["bird"])
    store.close_thread_connection()
    reopened = LabelStore(tmp_path / "labels")
    delta = reopened.state(since=version)
    assert [img["path"] for img in delta["images"]] == ["img3.jpg"] and delta["version"] == version + 1


def test_large_images_get_a_cached_thumbnail(tmp_path):
    from clip_match.annotate.thumbs import needs_thumbnail, thumbnail

    image_dir = tmp_path / "images"
    image_dir.mkdir()
    Image.new("RGB", (4000, 1000), "red").save(image_dir / "wide.png")
    Image.new("RGBA", (30, 20), (0, 0, 255, 128)).save(image_dir / "scan.tiff")
    Image.new("RGB", (30, 20), "blue").save(image_dir / "small.png")
    result = scan_images(image_dir)
    assert [needs_thumbnail(image) for image in result.images] == [True, False, True]
    for image, kind in zip(result.images, ["PNG", None, "JPEG"]):  # transparency stays (PNG)
        if kind is None:
            continue
        path = thumbnail(image_dir / image.path, 1, image, tmp_path / "thumbs")
        with Image.open(path) as small:
            assert small.format == kind and max(small.size) <= MAX_SIDE
        assert thumbnail(image_dir / image.path, 1, image, tmp_path / "thumbs") == path  # cached
    (image_dir / "wide.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # now corrupt
    changed = scan_images(image_dir).rejects
    assert changed and changed[0][0] == "wide.png"


def test_export_then_import_round_trip(tmp_path):
    store, ids = labelled_store(tmp_path, 10)
    for i in range(8):
        store.change_labels("t", ids[f"img{i}.jpg"], add=["红色" if i % 2 else "blue"])
    store.change_labels("t", ids["img0.jpg"], add=["square"])
    summary = export_dataset(tmp_path / "labels", tmp_path / "data", split=(0.5, 0.25, 0.25), seed=1)
    assert summary["images"] == 8 and summary["texts"] == 3 and summary["missing"] == 0
    texts: dict[str, list[int]] = {}
    image_ids: set[int] = set()
    for split in ("train", "valid", "test"):
        image_ids |= {line.image_id for line in read_tsv(tmp_path / "data" / f"{split}_imgs.tsv")}
        for line in read_jsonl(tmp_path / "data" / f"{split}_texts.jsonl"):
            texts.setdefault(line.text, []).extend(line.image_ids)
    assert {k: len(v) for k, v in texts.items()} == {"blue": 4, "红色": 4, "square": 1}
    assert image_ids == set(range(8))

    with pytest.raises(ClipMatchError, match="already exists"):
        export_dataset(tmp_path / "labels", tmp_path / "data")
    store.set_skipped("t", ids["img7.jpg"], True)  # a labelled image skipped later is left out
    assert export_dataset(tmp_path / "labels", tmp_path / "data", overwrite=True)["images"] == 7
    store.set_skipped("t", ids["img7.jpg"], False)
    export_dataset(tmp_path / "labels", tmp_path / "data", overwrite=True)

    result = import_dataset(tmp_path / "data", tmp_path / "again")
    assert result["images"] == 8 and result["labelled"] == 8
    store2 = LabelStore(tmp_path / "again")
    by_content = {(Path(result["image_dir"]) / p).read_bytes(): sorted(l) for p, l in labels(store2).items()}
    original = {(tmp_path / "images" / p).read_bytes(): sorted(l) for p, l in labels(store).items()}
    assert by_content == original
    with pytest.raises(ClipMatchError, match="already exists"):
        import_dataset(tmp_path / "data", tmp_path / "again")


def test_export_import_errors(tmp_path, monkeypatch):
    with pytest.raises(ClipMatchError, match="no annotations here"):
        export_dataset(tmp_path / "nothing", tmp_path / "out")
    store, ids = labelled_store(tmp_path)
    with pytest.raises(ClipMatchError, match="no labelled images"):
        export_dataset(tmp_path / "labels", tmp_path / "out")
    store.change_labels("t", ids["img1.jpg"], add=["x"])
    (tmp_path / "images" / "img1.jpg").write_bytes(b"\xff\xd8\xff truncated")  # broken after labelling
    with pytest.raises(ClipMatchError, match="img1.jpg"):
        export_dataset(tmp_path / "labels", tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing half-written
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "annotations.sqlite").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ClipMatchError, match="annotations.sqlite: cannot open annotation database: file is not a database"):
        LabelStore(tmp_path / "bad")
    with pytest.raises(ClipMatchError, match="no {train,valid,test}_imgs.tsv"):
        import_dataset(tmp_path / "images", tmp_path / "new")
    data = tmp_path / "data"
    data.mkdir()
    (data / "train_imgs.tsv").write_text("0\taGVsbG8=\n")  # base64 of b"hello": not an image
    with pytest.raises(ClipMatchError, match=r"train_imgs.tsv:1: not an image"):
        import_dataset(data, tmp_path / "new")
    assert not (tmp_path / "new" / "annotations.sqlite").exists()
    bomb = io.BytesIO()
    Image.new("1", (8000, 8000)).save(bomb, format="PNG")  # 64 Mpx, over the limit set below
    (data / "train_imgs.tsv").write_text(f"0\t{base64.b64encode(bomb.getvalue()).decode()}\n")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000_000)
    with pytest.raises(ClipMatchError, match=r"train_imgs.tsv:1: image too large"):
        import_dataset(data, tmp_path / "new")
    assert not (tmp_path / "new" / "annotations.sqlite").exists()
    good = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(good, format="PNG")
    (data / "train_imgs.tsv").write_text(f"0\t{base64.b64encode(good.getvalue()).decode()}\n")
    (data / "train_texts.jsonl").write_text(json.dumps({"text_id": 1, "text": "x" * 300, "image_ids": [0]}) + "\n")
    with pytest.raises(ClipMatchError, match=r"train_texts.jsonl:1: label is longer than"):
        import_dataset(data, tmp_path / "new")
    assert not (tmp_path / "new" / "annotations.sqlite").exists()  # a retry is not refused


def test_command_line(tmp_path, capsys):
    make_images(tmp_path / "images", 3)
    with pytest.raises(SystemExit):
        main(["annotate", "images"])  # --out is required
    assert main(["annotate", "export", "--out", str(tmp_path / "x")]) == 2
    assert "missing DATASET_DIR" in capsys.readouterr().err
    assert main(["annotate", str(tmp_path / "images"), "--out", str(tmp_path / "images")]) == 2
    assert "must not be IMAGE_DIR itself" in capsys.readouterr().err
    assert main(["annotate", str(tmp_path / "images"), "--out", str(tmp_path / "l"), "--seed", "3"]) == 2
    assert "belong to `clip-match annotate export`" in capsys.readouterr().err
    assert main(["annotate", "export", str(tmp_path / "nothing"), "--out", str(tmp_path / "d")]) == 2
    assert "no annotations here" in capsys.readouterr().err
    store, ids = labelled_store(tmp_path / "two", 4)
    for i in range(4):
        store.change_labels("t", ids[f"img{i}.jpg"], add=["x"])
    for bad in ("0.5,0.5", "a,b,c"):
        with pytest.raises(SystemExit):
            main(["annotate", "export", str(tmp_path / "two" / "labels"), "--out", str(tmp_path / "d"), "--split", bad])
    assert main(["annotate", "export", str(tmp_path / "two" / "labels"), "--out", str(tmp_path / "d"),
                 "--split", "0.5,0.6,0"]) == 2
    assert "split must be three non-negative fractions" in capsys.readouterr().err
    assert main(["annotate", "export", str(tmp_path / "two" / "labels"), "--out", str(tmp_path / "d"),
                 "--split", "1,0,0"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["splits"]["train"]["images"] == 4
