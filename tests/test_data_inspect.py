"""clip-match inspect on TSV/JSONL directories and LMDBs (ours and cn_clip's)."""
from __future__ import annotations

import json
import subprocess
import sys

from clip_match.cli import main
from clip_match.data.lmdb_build import build_lmdb
from test_data_helpers import image_bytes, tiny_dataset, tsv_line, write_lines


def inspect_json(path, capsys) -> dict:
    assert main(["inspect", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_tsv_and_lmdb_give_the_same_statistics(tmp_path, capsys):
    tiny_dataset(tmp_path, "train")
    tiny_dataset(tmp_path, "valid", n_images=4)
    build_lmdb(tmp_path, "train,valid", workers=1)
    from_tsv = inspect_json(tmp_path, capsys)
    from_lmdb = inspect_json(tmp_path / "lmdb", capsys)
    assert (from_tsv["kind"], from_lmdb["kind"]) == ("tsv", "lmdb")
    assert list(from_tsv["splits"]) == list(from_lmdb["splits"]) == ["train", "valid"]
    train = from_tsv["splits"]["train"]
    assert (train["images"], train["texts"], train["pairs"]) == (6, 3, 6)
    assert train["images_per_text"] == {"min": 1, "mean": 2.0, "max": 3}
    assert train["texts_per_image"] == {"min": 1, "mean": 1.0, "max": 1}
    assert train["samples"][0] == {"image_id": 100, "text_id": 1, "text": "一只猫", "image": "24x16 RGB"}
    for split, stats in from_lmdb["splits"].items():
        assert stats.pop("num_images_key") == stats["images"]
        assert stats == from_tsv["splits"][split]
    single = inspect_json(tmp_path / "lmdb" / "valid", capsys)["splits"]
    assert list(single) == ["valid"] and single["valid"].pop("num_images_key") == 4
    assert single["valid"] == from_lmdb["splits"]["valid"]


def test_problems_between_records_are_reported(tmp_path, capsys):
    same = image_bytes()
    write_lines(tmp_path / "train_imgs.tsv", [tsv_line(1, same), tsv_line(2, same), tsv_line(1, image_bytes(seed=2)),
                                              tsv_line(3, image_bytes(seed=3))])
    write_lines(tmp_path / "train_texts.jsonl", [
        '{"text_id": 1, "text": "猫", "image_ids": [1, 7]}',
        '{"text_id": 2, "text": "猫", "image_ids": [2]}',
        '{"text_id": 2, "text": "狗", "image_ids": [9]}',
    ])
    stats = inspect_json(tmp_path, capsys)["splits"]["train"]
    assert stats["duplicate_image_ids"] == 1
    assert stats["duplicate_image_content"] == 1
    assert stats["duplicate_text_ids"] == 1
    assert stats["duplicate_texts"] == 1
    assert stats["dangling_image_ids"] == {"count": 2, "examples": [7, 9]}
    assert stats["images_without_text"] == 1
    assert stats["samples"][1]["image"] == "missing"


def test_lmdb_from_cn_clip_with_dangling_ids(tmp_path, capsys):
    tiny_dataset(tmp_path)
    with open(tmp_path / "train_texts.jsonl", "a", encoding="utf-8") as jsonl:
        jsonl.write('{"text_id": 9, "text": "ghost", "image_ids": [12345]}\n')  # cn_clip's script checks nothing
    subprocess.run([sys.executable, "-m", "cn_clip.preprocess.build_lmdb_dataset", "--data_dir", str(tmp_path),
                    "--splits", "train", "--lmdb_dir", str(tmp_path / "theirs")], check=True, capture_output=True)
    assert main(["inspect", str(tmp_path / "theirs")]) == 0
    text = capsys.readouterr().out
    assert "train: 6 images, 4 texts, 7 pairs" in text and "dangling image ids 1" in text


def test_inspect_names_an_unknown_directory(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 2
    assert "neither TSV/JSONL splits" in capsys.readouterr().err
