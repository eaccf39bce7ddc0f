"""build-lmdb and LMDBReader: cn_clip compatibility both ways, safety, atomicity, map growth."""
from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import lmdb
import numpy as np
import pytest

from clip_match.data import LMDBReader, Pair
from clip_match.data import formats, lmdb_build
from clip_match.data.formats import write_split
from clip_match.data.lmdb_build import REPORT_NAME, build_lmdb, scan_images
from clip_match.errors import ClipMatchError
from test_data_helpers import image_bytes, tiny_dataset, tsv_line, write_lines

MODES = [("RGB", "JPEG"), ("L", "JPEG"), ("CMYK", "JPEG"), ("P", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"), ("I;16", "PNG")]


def expected_pairs(data_dir: Path, split: str = "train") -> list[Pair]:
    lines = [json.loads(line) for line in (data_dir / f"{split}_texts.jsonl").read_text("utf-8").splitlines()]
    return [Pair(i, line["text_id"], line["text"]) for line in lines for i in line["image_ids"]]


def test_reader_reads_what_build_wrote(tmp_path):
    images = tiny_dataset(tmp_path)
    report = build_lmdb(tmp_path, "train", workers=1)
    assert report["splits"]["train"] == {"images": 6, "pairs": 6, "texts": 3, "skipped_images": 0, "skipped_pair_lines": 0}
    with LMDBReader(tmp_path / "lmdb" / "train") as reader:
        assert len(reader) == 6 and reader.num_images == 6
        assert list(reader) == expected_pairs(tmp_path)
        assert reader[-1] == reader[5]
        with pytest.raises(IndexError):
            reader[6]
        assert sorted(reader.image_ids()) == sorted(images)
        for image_id, data in images.items():
            assert reader.image_bytes(image_id) == data
            assert reader.image(image_id).size == (24, 16)
        with pytest.raises(ClipMatchError, match=r"imgs\[key=999\]: no such image"):
            reader.image_bytes(999)
    assert json.loads((tmp_path / "lmdb" / REPORT_NAME).read_text())["skipped"] == []


@pytest.mark.parametrize("verify", [True, False])
def test_parallel_build_writes_the_same_database(tmp_path, monkeypatch, verify):
    monkeypatch.setattr(formats, "CHUNK_BYTES", 64 << 10)
    monkeypatch.setattr(lmdb_build, "TASK_BYTES", 48 << 10)
    images = {i: image_bytes(seed=i) for i in range(600)}  # several chunks per file
    texts = [(i, f"text {i}", [i, (i + 1) % 600]) for i in range(0, 600, 2)] + [(1000, "all", sorted(images))]
    write_split(tmp_path, "train", images.items(), texts)
    write_split(tmp_path, "valid", {**images, 7: b"not an image", 555: b"nor this"}.items(), texts)
    assert (tmp_path / "train_imgs.tsv").stat().st_size > 2 * formats.CHUNK_BYTES
    one, two = (build_lmdb(tmp_path, "train,valid", lmdb_dir=tmp_path / name, verify=verify, workers=workers,
                           skip_bad=True) for name, workers in (("one", 1), ("two", 3)))
    assert {**one, "lmdb_dir": ""} == {**two, "lmdb_dir": ""}
    assert [(s["split"], s["file"], s["line"]) for s in one["skipped"]] == ([
        ("valid", "valid_imgs.tsv", 8), ("valid", "valid_imgs.tsv", 556), ("valid", "valid_texts.jsonl", 4),
        ("valid", "valid_texts.jsonl", 278), ("valid", "valid_texts.jsonl", 301), ("valid", "valid_texts.jsonl", 301),
    ] if verify else [])  # (the text on line 301 names both bad images)
    with LMDBReader(tmp_path / "one" / "train") as one, LMDBReader(tmp_path / "two" / "train") as two:
        assert list(one) == list(two) == expected_pairs(tmp_path)
        assert all(one.image_b64(i) == two.image_b64(i) for i in images)
    with LMDBReader(tmp_path / "one" / "valid") as one, LMDBReader(tmp_path / "two" / "valid") as two:
        assert list(one) == list(two) and len(one) == 1200 - (4 if verify else 0)
        assert sorted(two.image_ids()) == sorted(set(images) - ({7, 555} if verify else set()))


def test_map_grows_from_a_tiny_start(tmp_path):
    images = {i: image_bytes(size=(64, 64), seed=i) for i in range(60)}
    write_split(tmp_path, "train", images.items(), [(i, f"text {i}", [i]) for i in images])
    build_lmdb(tmp_path, "train", workers=1, map_size=32 << 10)
    assert (tmp_path / "lmdb/train/imgs/data.mdb").stat().st_size > 32 << 10
    with LMDBReader(tmp_path / "lmdb" / "train") as reader:
        assert reader.num_images == 60 and len(reader) == 60
        assert all(reader.image_bytes(i) == data for i, data in images.items())


@pytest.mark.parametrize("mode,fmt", MODES)
def test_image_modes_build_and_read_as_rgb(tmp_path, mode, fmt):
    data = image_bytes(mode, fmt=fmt)
    write_split(tmp_path, "train", [(1, data)], [(1, "x", [1])])
    build_lmdb(tmp_path, "train", workers=1)
    with LMDBReader(tmp_path / "lmdb" / "train") as reader:
        rgb = reader.image(1).convert("RGB")
    assert rgb.size == (24, 16) and rgb.mode == "RGB"
    if mode == "I;16":  # scaled to 8 bits, not clipped to white
        assert 60 < np.asarray(rgb).mean() < 200


def test_cn_clip_lmdb_dataset_reads_our_lmdb(tmp_path):
    from PIL import Image
    import io
    from cn_clip.clip import tokenize
    from cn_clip.training.data import LMDBDataset, _preprocess_text

    images = {i: image_bytes(mode, fmt=fmt, seed=i) for i, (mode, fmt) in enumerate(MODES[:6])}
    texts = [(7, "“红色”的 Flower", [0, 1, 2]), (8, "一只猫", [3, 4, 5])]
    write_split(tmp_path, "train", images.items(), texts)
    build_lmdb(tmp_path, "train", workers=1)
    dataset = LMDBDataset(str(tmp_path / "lmdb" / "train"), split="val", max_txt_length=24, resolution=32)
    assert len(dataset) == 6 and dataset.number_images == 6
    for index, (image_id, _, text) in enumerate(expected_pairs(tmp_path)):
        image, tokens, _ = dataset[index]
        original = dataset.transform(Image.open(io.BytesIO(images[image_id])))
        assert np.array_equal(image.numpy(), original.numpy())
        assert np.array_equal(tokens.numpy(), tokenize([_preprocess_text(text)], context_length=24)[0].numpy())
    del dataset


def test_reader_reads_lmdb_built_by_cn_clip_script(tmp_path):
    images = tiny_dataset(tmp_path)
    subprocess.run(
        [sys.executable, "-m", "cn_clip.preprocess.build_lmdb_dataset",
         "--data_dir", str(tmp_path), "--splits", "train", "--lmdb_dir", str(tmp_path / "theirs")],
        check=True, capture_output=True,
    )
    with LMDBReader(tmp_path / "theirs" / "train") as reader:
        assert list(reader) == expected_pairs(tmp_path)
        assert reader.num_images == len(images)
        assert {i: reader.image_bytes(i) for i in reader.image_ids()} == images


def _hostile_lmdb(split_dir: Path, payload: bytes) -> None:
    """A cn_clip-layout split whose only pair is ``payload``."""
    for name, records in (("imgs", {b"1": b"", b"num_images": b"1"}), ("pairs", {b"0": payload, b"num_samples": b"1"})):
        (split_dir / name).mkdir(parents=True)
        env = lmdb.open(str(split_dir / name), map_size=1 << 20)
        with env.begin(write=True) as txn:
            for key, value in records.items():
                txn.put(key, value)
        env.close()


class _CreatesFile:
    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_crafted_pickle_is_refused_without_running_code(tmp_path):
    proof = tmp_path / "proof.txt"
    pickle.loads(pickle.dumps(_CreatesFile(proof))).close()
    assert proof.exists()  # the payload really runs code when unpickled normally

    target = tmp_path / "pwned.txt"
    _hostile_lmdb(tmp_path / "split", pickle.dumps(_CreatesFile(target)))
    with LMDBReader(tmp_path / "split") as reader:
        with pytest.raises(ClipMatchError, match=r"pairs\[key=0\]: not a plain .*refusing to load"):
            reader[0]
    assert not target.exists()


@pytest.mark.parametrize("value", [("1", 2, "x"), (1, 2), [1, 2, "x"], (True, 2, "x"), (1, 2, b"x")])
def test_pairs_of_the_wrong_shape_are_refused(tmp_path, value):
    _hostile_lmdb(tmp_path / "split", pickle.dumps(value))
    with LMDBReader(tmp_path / "split") as reader, pytest.raises(ClipMatchError, match=r"pairs\[key=0\]: expected a tuple"):
        reader[0]


def test_reader_names_what_is_missing(tmp_path):
    with pytest.raises(ClipMatchError, match="missing imgs/"):
        LMDBReader(tmp_path)
    (tmp_path / "imgs").mkdir()
    (tmp_path / "pairs").mkdir()
    with pytest.raises(ClipMatchError, match="no data.mdb"):
        LMDBReader(tmp_path)
    for part in ("imgs", "pairs"):
        (tmp_path / part / "data.mdb").write_bytes(b"junk" * 1024)
    with pytest.raises(ClipMatchError, match=r"data.mdb: not a readable LMDB database"):
        LMDBReader(tmp_path)


def _read_everything(reader: LMDBReader) -> tuple[list[Pair], list[bytes]]:
    return list(reader), [reader.image_bytes(i) for i in sorted(reader.image_ids())]


def test_reader_works_in_worker_processes(tmp_path):
    tiny_dataset(tmp_path)
    build_lmdb(tmp_path, "train", workers=1)
    with LMDBReader(tmp_path / "lmdb" / "train") as reader:
        here = _read_everything(reader)  # opened in the parent before forking, as DataLoader does
        with multiprocessing.get_context("fork").Pool(2) as pool:
            there = pool.map(_read_everything, [reader, reader])
        assert there == [here, here]


def _children(pid: int) -> list[str]:
    """Process ids whose parent is ``pid`` (from /proc; field 4 of stat is the parent id)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == str(pid):
            found.append(stat.parent.name)
    return found


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_killing_a_build_leaves_nothing_under_the_final_name(tmp_path, workers):
    data = image_bytes(size=(96, 96))
    write_lines(tmp_path / "train_imgs.tsv", [tsv_line(i, data) for i in range(40000)])
    (tmp_path / "train_texts.jsonl").write_text(json.dumps({"text_id": 0, "text": "x", "image_ids": [0]}) + "\n")
    code = f"from clip_match.data.lmdb_build import build_lmdb; build_lmdb({str(tmp_path)!r}, 'train', workers={workers})"
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    try:
        while not list(tmp_path.glob(".lmdb.*.tmp/train/imgs/data.mdb")):
            assert process.poll() is None, "the build finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.2)
        children = _children(process.pid)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "lmdb").exists()
    assert len(children) == workers - 1  # (the build process is one of the workers)
    while any(Path(f"/proc/{pid}").exists() for pid in children):  # workers notice and exit
        assert time.monotonic() < deadline, "verification workers outlived the killed build"
        time.sleep(0.1)




def _dies_in_a_worker(path, span, verify):
    if multiprocessing.parent_process() is not None:
        os._exit(3)
    return scan_images(path, span, verify)


def _fails_in_a_worker(path, span, verify):
    if multiprocessing.parent_process() is not None:
        raise ClipMatchError(f"{path}:{span.first_line}: made up")
    return scan_images(path, span, verify)


@pytest.mark.parametrize("task,message", [
    (_dies_in_a_worker, r"train_imgs.tsv:(\d+): the worker process checking the images from this line on died "
                        r"\(exit code 3\)"),
    (_fails_in_a_worker, r"train_imgs.tsv:(\d+): made up"),
])
def test_a_worker_failure_stops_the_build_with_the_line_named(tmp_path, monkeypatch, task, message):
    data = image_bytes(size=(8, 8))
    write_split(tmp_path, "train", [(i, data) for i in range(100, 700)], [(i, f"text {i}", [i]) for i in range(100, 700)])
    line_bytes = len(tsv_line(100, data)) + 1  # (every line is as long)
    monkeypatch.setattr(lmdb_build, "TASK_BYTES", 100 * line_bytes)  # spans of 100 lines or fewer: some go to the worker
    monkeypatch.setattr(lmdb_build, "scan_images", task)  # (the forked workers run it)
    with pytest.raises(ClipMatchError, match=message):
        build_lmdb(tmp_path, "train", workers=2)
    assert not (tmp_path / "lmdb").exists() and not list(tmp_path.glob(".lmdb.*"))
