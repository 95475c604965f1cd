"""``python -m lib_codeformer restore``: files and folders, formats, metadata, failures, resuming."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from lib_codeformer.frontends import cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def photos(tmp_path, astronaut) -> Path:
    """inputs/a.png (with a text chunk), inputs/sub/b.jpg, inputs/sub/deep/c.webp, inputs/broken.png."""
    root = tmp_path / "inputs"
    (root / "sub" / "deep").mkdir(parents=True)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a photo, Steps: 20")
    Image.fromarray(astronaut).save(root / "a.png", pnginfo=info)
    Image.fromarray(astronaut).save(root / "sub" / "b.jpg", quality=92)
    Image.fromarray(astronaut).save(root / "sub" / "deep" / "c.webp")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def run(*args: str) -> int:
    return cli.main(["restore", *args, "--detector", "yunet", "--quiet"])


def test_folder_recursive_keeps_paths_formats_and_metadata(photos, tmp_path, small_weights_file, capsys):
    out = tmp_path / "out"
    status = run(str(photos), "--recursive", "--output", str(out), "--weights", str(small_weights_file))
    captured = capsys.readouterr()
    assert status == 1  # broken.png failed, the rest succeeded
    assert "broken.png" in captured.err
    assert "3 images written, 3 faces restored, 0 skipped, 1 failed" in captured.out
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["a.png", "sub/b.jpg", "sub/deep/c.webp"]
    with Image.open(out / "a.png") as png:
        assert png.text["parameters"] == "a photo, Steps: 20"
    with Image.open(out / "sub" / "b.jpg") as jpeg:
        assert jpeg.format == "JPEG"
    with Image.open(out / "sub" / "deep" / "c.webp") as webp:
        assert webp.format == "WEBP"
    assert not np.array_equal(np.asarray(Image.open(out / "a.png")), np.asarray(Image.open(photos / "a.png")))


def test_without_recursive_only_top_level(photos, tmp_path, small_weights_file):
    out = tmp_path / "out"
    assert run(str(photos / "a.png"), "--output", str(out), "--weights", str(small_weights_file)) == 0
    assert [p.name for p in out.iterdir()] == ["a.png"]


def test_existing_outputs_skip_overwrite_or_fail(photos, tmp_path, small_weights_file, capsys):
    out = tmp_path / "out"
    source = str(photos / "a.png")
    weights = ("--weights", str(small_weights_file))
    assert run(source, "--output", str(out), *weights) == 0
    first = (out / "a.png").read_bytes()
    (out / "a.png").write_bytes(b"keep me")
    assert run(source, "--output", str(out), *weights) == 1
    assert "exists" in capsys.readouterr().err
    assert run(source, "--output", str(out), "--skip-existing", *weights) == 0
    assert (out / "a.png").read_bytes() == b"keep me"
    assert run(source, "--output", str(out), "--overwrite", *weights) == 0
    assert (out / "a.png").read_bytes() == first


def test_never_overwrites_an_input(photos, small_weights_file, capsys):
    before = (photos / "a.png").read_bytes()
    assert run(str(photos / "a.png"), "--output", str(photos), "--overwrite", "--weights", str(small_weights_file)) == 1
    assert "is an input file" in capsys.readouterr().err
    assert (photos / "a.png").read_bytes() == before


def test_16_bit_png_round_trip(tmp_path, astronaut, small_weights_file):
    deep = astronaut.astype(np.uint16) * 257 + 1
    source = tmp_path / "deep.png"
    cv2.imwrite(str(source), cv2.cvtColor(deep, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    assert run(str(source), "--output", str(out), "--weights", str(small_weights_file)) == 0
    result = cv2.cvtColor(cv2.imread(str(out / "deep.png"), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    assert result.dtype == np.uint16
    np.testing.assert_array_equal(result[300:], deep[300:])  # far below the face: exact
    assert not np.array_equal(result, deep)


def test_interrupted_run_leaves_no_partial_files_and_resumes(photos, tmp_path, small_weights_file, monkeypatch):
    from lib_codeformer.storage import atomic

    out = tmp_path / "out"
    real_move = atomic.move_into_place
    moves = []

    def interrupt_second(temporary, target):
        moves.append(target)
        if len(moves) == 2:  # Ctrl+C while the second result is being written: its bytes are in the temporary file
            raise KeyboardInterrupt
        real_move(temporary, target)

    monkeypatch.setattr(atomic, "move_into_place", interrupt_second)
    args = (str(photos), "--recursive", "--output", str(out), "--weights", str(small_weights_file))
    assert run(*args) == 130
    leftovers = [p for p in out.rglob("*") if p.is_file()]
    assert "b.jpg" not in [p.name for p in leftovers] and "a.png" in [p.name for p in leftovers]
    for written in leftovers:  # whatever exists is complete: no temporary or truncated file
        assert not written.name.endswith(".part")
        with Image.open(written) as image:
            image.load()
    monkeypatch.setattr(atomic, "move_into_place", real_move)
    assert run(*args, "--skip-existing") == 1  # only broken.png fails
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["a.png", "b.jpg", "c.webp"]


def test_temporaries_of_a_killed_run_are_removed_by_the_next(photos, tmp_path, small_weights_file, capsys):
    """SIGKILL leaves no chance to clean up; the next run removes our temporaries whose writer is gone."""
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    killed = out / "sub" / f".b.jpg.codeformer-{int(dead)}-x1y2.part"
    killed.write_bytes(b"half a jpeg")
    live = out / f".a.png.codeformer-{os.getpid()}-z9.part"  # another run, still writing
    live.write_bytes(b"in progress")
    foreign = out / ".notes.part"  # not ours
    foreign.write_bytes(b"keep")
    assert run(str(photos / "a.png"), "--output", str(out), "--weights", str(small_weights_file)) == 0
    assert not killed.exists() and live.exists() and foreign.exists()
    assert "left by an interrupted run" in capsys.readouterr().err


def test_sigterm_cleans_up_like_ctrl_c(photos, tmp_path, small_weights_file):
    out = tmp_path / "out"
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import sys, time\n"
        "from lib_codeformer.storage import atomic\n"
        "real = atomic.move_into_place\n"
        "def slow(temporary, target):\n"
        "    print('WRITING', flush=True)\n"
        "    time.sleep(2)\n"
        "    real(temporary, target)\n"
        "atomic.move_into_place = slow\n"
        "from lib_codeformer.frontends.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    command = [sys.executable, str(driver), "restore", str(photos / "a.png"), "--output", str(out), "--quiet"]
    command += ["--detector", "yunet", "--weights", str(small_weights_file)]
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "WRITING"
        process.send_signal(signal.SIGTERM)
        printed, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "interrupted" in err and "0 skipped" in printed
    written = [p for p in out.rglob("*") if p.is_file()]
    assert all(not p.name.endswith(".part") for p in written)  # the write under way finished whole, or left nothing
    for path in written:
        with Image.open(path) as image:
            image.load()


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["restore", "--help"], ["convert", "--help"]])
def test_help_and_version_answer_without_importing_torch(argv):
    """Importing torch takes seconds: help must not wait for it."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['codeformer', *{argv!r}]\n"
        "try:\n    runpy.run_module('lib_codeformer', run_name='__main__')\n"
        "except SystemExit as exited:\n    assert exited.code == 0, exited.code\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "torch imported: False" in result.stdout
    assert "codeformer" in result.stdout


def test_usage_errors_exit_2(tmp_path, capsys):
    assert run(str(tmp_path / "nope.png"), "--output", str(tmp_path)) == 2
    (tmp_path / "x.png").write_bytes(b"")
    assert run(str(tmp_path / "x.png"), "--output", str(tmp_path / "o"), "--fidelity", "2") == 2
    assert "--fidelity: fidelity must be a number in [0, 1] (got 2)" in capsys.readouterr().err
    assert cli.main(["restore", str(tmp_path), "--detector", "nope", "--output", str(tmp_path)]) == 2
    assert "--detector: detector must be one of" in capsys.readouterr().err


def test_missing_weights_say_where_to_put_them(tmp_path, astronaut, capsys):
    source = tmp_path / "a.png"
    Image.fromarray(astronaut).save(source)
    assert run(str(source), "--output", str(tmp_path / "o"), "--weights", str(tmp_path / "missing.pth")) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "codeformer.pth" in err


def test_jobs_give_identical_outputs(photos, tmp_path, small_weights_file):
    outputs = {}
    for jobs in ("1", "3"):
        out = tmp_path / f"out{jobs}"
        assert run(str(photos), "-r", "--output", str(out), "--weights", str(small_weights_file), "--jobs", jobs) == 1
        outputs[jobs] = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert outputs["1"] == outputs["3"] and len(outputs["1"]) == 3


def test_never_writes_outside_the_output_folder(tmp_path, astronaut, small_weights_file, capsys):
    inside = tmp_path / "photos"
    inside.mkdir()
    Image.fromarray(astronaut).save(inside / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "a.png").symlink_to(elsewhere / "a.png")  # a link in the output folder pointing out of it
    assert (
        run(
            str(tmp_path / "photos" / ".." / "photos" / "a.png"),
            "--output",
            str(out),
            "--overwrite",
            "--weights",
            str(small_weights_file),
        )
        == 1
    )
    assert "outside" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == []


def test_module_entry_point(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "lib_codeformer", "--help"], capture_output=True, text=True, check=False)
    assert completed.returncode == 0 and "restore" in completed.stdout and "convert" in completed.stdout


def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path, small_weights_file, capsys):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (12000, 12000)).save(bomb)  # 144 megapixels in a few kilobytes
    assert run(str(bomb), "--output", str(tmp_path / "out"), "--weights", str(small_weights_file)) == 1
    assert "12000 x 12000 pixels is over the limit" in capsys.readouterr().err


@pytest.mark.parametrize("flag", [[], ["--no-fast-conv"]])
def test_no_fast_conv_runs_pytorch_convolutions_only(tmp_path, astronaut, small_weights_file, fast_conv_calls, flag):
    Image.fromarray(astronaut).save(tmp_path / "face.png")
    status = run(str(tmp_path / "face.png"), "--output", str(tmp_path / "out"), "--weights", str(small_weights_file), *flag)
    assert status == 0
    assert bool(fast_conv_calls) is not flag


def test_two_inputs_with_one_output_name_are_refused_up_front(tmp_path, astronaut, small_weights_file, capsys):
    """It printed "2 images written", left one out/x.png, and which input won depended on thread timing."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.fromarray(astronaut).save(tmp_path / folder / "x.png")
    out = tmp_path / "out"
    inputs = (str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"))
    status = run(*inputs, "--output", str(out), "--weights", str(small_weights_file))
    err = capsys.readouterr().err
    assert status == 2
    assert str(tmp_path / "a" / "x.png") in err and str(tmp_path / "b" / "x.png") in err
    assert not out.exists()


def test_the_output_folder_inside_an_input_folder_is_never_an_input(photos, small_weights_file, capsys):
    """With --recursive each re-run restored its own previous outputs (restored/restored/...)."""
    out = photos / "restored"
    args = (str(photos), "--recursive", "--output", str(out), "--weights", str(small_weights_file))
    assert run(*args) == 1  # broken.png
    first = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert run(*args, "--skip-existing") == 1
    assert "3 images written" not in capsys.readouterr().out.splitlines()[-1]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == first
    assert not (out / "restored").exists()


@pytest.mark.parametrize(
    ("option", "fragment"),
    [
        (["--batch-size", "0"], "--batch-size: batch_size must be a whole number in [1, 256]"),
        (["--batch-size", "-1"], "--batch-size: batch_size must be a whole number in [1, 256]"),
        (["--max-pixels", "-1"], "--max-pixels: max_pixels must be a whole number in [1, "),
        (["--jobs", "0"], "--jobs must be at least 1"),
        (["--device", "foo"], "device 'foo'"),
        (["--device", "cuda:7"], "device 'cuda:7'"),
        (["--min-face-size", "-3"], "--min-face-size: min_face_size must be a whole number in [0, 16384]"),
        (["--weights", "/nonexistent/codeformer.pth"], "--weights (/nonexistent/codeformer.pth) does not exist"),
    ],
)
def test_every_option_is_checked_before_any_work(tmp_path, astronaut, small_weights_file, capsys, option, fragment):
    Image.fromarray(astronaut).save(tmp_path / "a.png")
    out = tmp_path / "out"
    weights = [] if "--weights" in option else ["--weights", str(small_weights_file)]
    assert run(str(tmp_path / "a.png"), "--output", str(out), *weights, *option) == (1 if "--weights" in option else 2)
    assert fragment in capsys.readouterr().err
    assert not out.exists()


def test_an_unreadable_format_is_a_reported_failure_and_the_summary_is_printed(tmp_path, astronaut, small_weights_file, capsys):
    """Formats Pillow reads but cannot write (PSD, XPM) ended in a traceback and no summary."""
    Image.fromarray(astronaut).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b'/* XPM */\nstatic char *b[] = {\n"1 1 1 1",\n"a c #ff0000",\n"a"\n};\n')
    inputs = (str(tmp_path / "a.png"), str(tmp_path / "b.png"))
    status = run(*inputs, "--output", str(tmp_path / "out"), "--weights", str(small_weights_file))
    captured = capsys.readouterr()
    assert status == 1
    assert "b.png" in captured.err and "not a readable image" in captured.err
    assert "1 images written, 1 faces restored, 0 skipped, 1 failed" in captured.out


def test_the_output_folder_given_as_the_input_says_why_nothing_is_done(photos, small_weights_file, capsys):
    """Results are never read as inputs: the input folder as --output would restore nothing, silently."""
    assert run(str(photos), "-r", "--output", str(photos), "--weights", str(small_weights_file)) == 2
    assert "is the input folder (or inside it)" in capsys.readouterr().err
    assert sorted(path.name for path in photos.iterdir()) == ["a.png", "broken.png", "sub"]


def test_an_empty_folder_is_said_and_subfolders_hinted(tmp_path, astronaut, small_weights_file, capsys):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    Image.fromarray(astronaut).save(tmp_path / "in" / "sub" / "a.png")
    assert run(str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--weights", str(small_weights_file)) == 0
    err = capsys.readouterr().err
    assert "no image or video found in" in err and "--recursive" in err


def test_a_multi_page_tiff_says_only_its_first_page_was_restored(tmp_path, astronaut, small_weights_file, capsys):
    pages = [Image.fromarray(astronaut), Image.fromarray(np.ascontiguousarray(astronaut[::-1]))]
    pages[0].save(tmp_path / "scan.tiff", save_all=True, append_images=pages[1:])
    assert run(str(tmp_path / "scan.tiff"), "--output", str(tmp_path / "out"), "--weights", str(small_weights_file)) == 0
    assert "note: " in (err := capsys.readouterr().err) and "a TIFF of 2 pages: only the first page was restored" in err


def test_the_progress_bar_counts_the_faces_restored_up_to_the_last_image(photos, tmp_path, small_weights_file, capsys):
    weights = ["--weights", str(small_weights_file), "--detector", "yunet"]
    assert cli.main(["restore", str(photos / "sub"), "--recursive", "-o", str(tmp_path / "out"), *weights]) == 0
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()
    last = [line for line in bar if "image/s" in line or "s/image" in line][-1]
    assert "2/2" in last and "faces=2" in last, last  # the faces of the last image included, written or not
