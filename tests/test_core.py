"""The shared foundations: atomic writes, strict image decoding, the CLI dispatcher."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
from PIL import Image

from clip_match import cli
from clip_match.runtime.images import decode_image, open_image
from clip_match.errors import ClipMatchError
from clip_match.fsutil import atomic_dir, atomic_file, ensure_dir


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_atomic_file_leaves_old_content_when_interrupted(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target, "w") as handle:
            handle.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_dir_refuses_then_replaces(tmp_path):
    target = tmp_path / "bundle"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(ClipMatchError, match="already exists"):
        with atomic_dir(target):
            pass
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


@pytest.mark.skipif(sys.platform != "linux", reason="renameat2 is Linux's")
def test_atomic_dir_swaps_the_old_directory_out_in_one_step(tmp_path, monkeypatch):
    target = tmp_path / "index"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    renames = []
    monkeypatch.setattr(os, "replace", lambda *args: renames.append(args))  # (the two-step fallback would call it)
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "b").write_text("2")
    assert renames == [] and sorted(p.name for p in target.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_atomic_outputs_get_normal_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "f.txt", "w") as handle:
            handle.write("x")
        with atomic_dir(tmp_path / "d"):
            pass
    finally:
        os.umask(mask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_atomic_dir_never_replaces_a_directory_holding_its_inputs(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train_imgs.tsv").write_text("1\tAAAA\n")
    for target in (data, tmp_path):
        with pytest.raises(ClipMatchError, match="holds the input"):
            with atomic_dir(target, overwrite=True, inputs=[data / "train_imgs.tsv"]):
                pass
    assert (data / "train_imgs.tsv").read_text() == "1\tAAAA\n"


def test_unwritable_outputs_are_user_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ClipMatchError, match=r"file: cannot create this directory"):
        ensure_dir(tmp_path / "file")
    with pytest.raises(ClipMatchError, match=r"file is a file; give a directory name"):
        with atomic_dir(tmp_path / "file", overwrite=True):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # (no hidden leftovers)
    with pytest.raises(ClipMatchError, match=r"is a directory; give a file name"):
        with atomic_file(tmp_path):
            pass
    with pytest.raises(ClipMatchError, match=r"file/sub: cannot write here"):
        with atomic_dir(tmp_path / "file" / "sub"):
            pass
    with pytest.raises(ClipMatchError, match=r"file/out.txt: cannot write here"):
        with atomic_file(tmp_path / "file" / "out.txt"):
            pass


def test_atomic_dir_failure_keeps_nothing(tmp_path):
    with pytest.raises(ValueError):
        with atomic_dir(tmp_path / "x") as tmp:
            (tmp / "partial").write_text("...")
            raise ValueError
    assert list(tmp_path.iterdir()) == []


def test_decode_rejects_non_images_truncation_and_bombs(monkeypatch):
    with pytest.raises(ClipMatchError, match="sample.bin: not an image"):
        decode_image(b"hello", "sample.bin")
    data = _png(Image.new("RGB", (64, 64), "red"))
    with pytest.raises(ClipMatchError, match="truncated"):
        decode_image(data[: len(data) // 2], "cut.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ClipMatchError, match="bomb"):
        decode_image(data, "big.png")


def test_decoding_never_runs_postscript_and_names_any_decoder_failure(monkeypatch):
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\nshowpage\n"
    assert Image.open(io.BytesIO(eps)).format == "EPS"  # Pillow would hand it to Ghostscript on load
    with pytest.raises(ClipMatchError, match="drawing.eps: not an image"):
        decode_image(eps, "drawing.eps")

    def fails(self):  # as a corrupt TIFF's tags make Pillow fail (TypeError, NotImplementedError, ...)
        raise TypeError("'IFDRational' object cannot be interpreted as an integer")
    data = _png(Image.new("RGB", (4, 4)))
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", fails)
    with pytest.raises(ClipMatchError, match="bad.tif: corrupt or truncated image: 'IFDRational'"):
        decode_image(data, "bad.tif")


def test_sixteen_bit_images_are_scaled_not_clipped():
    ramp = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    image = decode_image(_png(Image.fromarray(ramp)), "ramp16.png")
    assert image.mode == "L"
    assert np.array_equal(np.asarray(image).ravel(), np.arange(256))


def test_a_16_bit_pgm_is_scaled_like_a_16_bit_png_and_odd_modes_become_usable():
    quarter = (np.arange(256, dtype=np.uint16) * 64).reshape(16, 16)  # a quarter of the 16-bit range
    pgm = io.BytesIO()
    Image.fromarray(quarter).save(pgm, "PPM")  # a 16-bit PGM, which Pillow opens as 32-bit "I"
    assert Image.open(io.BytesIO(pgm.getvalue())).mode == "I"
    image = decode_image(pgm.getvalue(), "quarter16.pgm")
    assert np.asarray(image).max() == 64  # as a 16-bit PNG, not stretched to white
    assert np.array_equal(np.asarray(image), np.asarray(decode_image(_png(Image.fromarray(quarter)), "q.png")))
    assert open_image(Image.new("La", (3, 2))).mode == "LA"  # (Pillow converts "La" to nothing else)
    lab = open_image(Image.new("LAB", (3, 2)))  # (nor "LAB" to grey)
    assert lab.mode == "RGB" and lab.convert("L").size == (3, 2)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert decode_image(buffer.getvalue(), "phone.jpg").size == (20, 40)


def test_open_image_accepts_arrays_and_names_bad_input(tmp_path):
    assert open_image(np.zeros((4, 5, 3), np.uint8)).size == (5, 4)
    with pytest.raises(ClipMatchError, match="float64"):
        open_image(np.zeros((4, 5)), "frame")
    with pytest.raises(ClipMatchError, match="missing.png: cannot read"):
        open_image(tmp_path / "missing.png")


def test_cli_lists_commands_without_importing_torch():
    result = subprocess.run([sys.executable, "-m", "clip_match.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for name in cli.COMMANDS:
        assert name in result.stdout
    assert "torch" not in subprocess.run(
        [sys.executable, "-c", "import sys, clip_match.cli; print(' '.join(sys.modules))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()


def test_cli_prints_user_errors_as_one_line_and_exits_2(monkeypatch, capsys):
    command = types.ModuleType("boom_command")
    command.configure = lambda parser: parser.add_argument("path")
    command.run = lambda args: (_ for _ in ()).throw(ClipMatchError(f"{args.path}:3: bad field 'text'"))
    monkeypatch.setitem(sys.modules, "boom_command", command)
    monkeypatch.setitem(cli.COMMANDS, "boom", ("boom_command", "raise a user error"))
    assert cli.main(["boom", "data.jsonl"]) == 2
    assert capsys.readouterr().err == "clip-match boom: error: data.jsonl:3: bad field 'text'\n"


def test_cli_output_into_a_closed_pipe_is_not_an_error():
    """`clip-match ... | head -1`: the reader leaving early is not an error and prints no traceback."""
    program = textwrap.dedent("""
        import sys, types
        from clip_match import cli
        command = types.ModuleType("chatty")
        command.configure = lambda parser: None
        command.run = lambda args: [print(f"line {i}") for i in range(200_000)] and 0
        sys.modules["chatty"] = command
        cli.COMMANDS["chatty"] = ("chatty", "print a lot")
        sys.exit(cli.main(["chatty"]))
    """)
    result = subprocess.run(["bash", "-c", f"{sys.executable} -c '{program}' | head -n 1; exit ${{PIPESTATUS[0]}}"],
                            capture_output=True, text=True)
    assert result.stdout == "line 0\n"
    assert result.stderr == ""
    assert result.returncode == 0


@pytest.mark.parametrize("content, message", [
    ('{"a": 1', "labels.jsonl:3: malformed JSON"),
    ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "labels.jsonl:3: malformed JSON: nested too deeply"),
    (b'{"a": "\xff"}', "labels.jsonl:3: invalid UTF-8"),
    ("[1]", "labels.jsonl:3: expected a JSON object, got list"),
    ('{"score": NaN}', "labels.jsonl:3: malformed JSON: NaN is not JSON"),
])
def test_parse_object_errors_name_the_place(content, message):
    from clip_match.jsonio import parse_object

    with pytest.raises(ClipMatchError, match=message):
        parse_object(content, "labels.jsonl:3")
