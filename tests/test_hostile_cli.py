"""Issue 14, the command side: hostile options and files end as one line on stderr and exit 2,
leaving nothing behind; limits on threads and batch sizes; overlay names and formats."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from sslrt.errors import SslrtError


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def assert_one_line_exit_2(args, capsys, folder: Path, fragment: str = ""):
    """The command fails with exit 2, one line on stderr, nothing on stdout, and `folder` holds
    exactly what it held before."""
    before = _listing(folder)
    code, out, err = run_cli(args, capsys)
    assert code == 2, (args, code, err)
    assert out == "", (args, out)
    assert err.count("\n") == 1 and err.startswith("error: "), (args, err)
    assert fragment in err, (args, err)
    assert _listing(folder) == before, (args, set(_listing(folder)) ^ set(before))
    return err


# -- limits ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("threads", ["100000", "0", "-3"])
def test_run_threads_out_of_range(threads, tiny_export, media, tmp_path, capsys):
    assert_one_line_exit_2(["run", media / "scene.jpg", media / "sound.wav", "-m", tiny_export.directory,
                            "--threads", threads], capsys, tmp_path, "threads must be between 1 and")


def test_api_threads_and_batch_size_limits(tiny_export, media):
    import sslrt
    from sslrt.engines import MAX_BATCH_SIZE, max_threads

    with pytest.raises(SslrtError, match="between 1 and"):
        sslrt.load(tiny_export.directory, threads=100000)
    with pytest.raises(SslrtError, match="whole number"):
        sslrt.load(tiny_export.directory, threads=2.5)
    loc = sslrt.load(tiny_export.directory, threads=max_threads())  # the limit itself is allowed
    pairs = [(str(media / "scene.jpg"), str(media / "sound.wav"))]
    for bad in (0, -1, MAX_BATCH_SIZE + 1):
        with pytest.raises(SslrtError, match="batch size must be between 1 and"):
            list(loc.localize_many(pairs, batch_size=bad))
    assert len(list(loc.localize_many(pairs, batch_size=MAX_BATCH_SIZE))) == 1


@pytest.mark.parametrize("batch", ["0", "-1", "1025"])
def test_run_batch_size_out_of_range(batch, tiny_export, media, tmp_path, capsys):
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"{media}/scene.jpg,{media}/sound.wav\n")
    assert_one_line_exit_2(["run", "--pairs", csv, "-m", tiny_export.directory, "--batch-size", batch], capsys, tmp_path,
                           "--batch-size must be between 1 and 1024")


# -- --pairs files --------------------------------------------------------------------------------
def test_pairs_in_latin1_is_one_line(tiny_export, media, tmp_path, capsys):
    csv = tmp_path / "pairs.csv"
    csv.write_bytes(f"{media}/scene.jpg,{media}/sound.wav\n".encode() + "caf\u00e9.jpg,x.wav\n".encode("latin-1"))
    err = assert_one_line_exit_2(["run", "--pairs", csv, "-m", tiny_export.directory], capsys, tmp_path, "not UTF-8")
    assert "pairs.csv:2" in err


def test_pairs_with_a_byte_order_mark_reads_the_first_path(tiny_export, media, tmp_path, capsys):
    csv = tmp_path / "pairs.csv"
    csv.write_bytes(b"\xef\xbb\xbf" + f"image,audio\n{media}/scene.jpg,{media}/sound.wav\n".encode())
    code, out, err = run_cli(["run", "--pairs", csv, "-m", tiny_export.directory, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["count"] == 1


def test_pairs_with_nul_bytes_or_a_huge_field(tiny_export, tmp_path, capsys):
    csv = tmp_path / "pairs.csv"
    csv.write_bytes(b"a.jpg,b.wav\n\x00\x00,\x00\n")
    assert_one_line_exit_2(["run", "--pairs", csv, "-m", tiny_export.directory], capsys, tmp_path, "NUL")
    csv.write_text('"' + "x" * 200_000 + '",b.wav\n')
    assert_one_line_exit_2(["run", "--pairs", csv, "-m", tiny_export.directory], capsys, tmp_path, "not a CSV line")


# -- overlays -------------------------------------------------------------------------------------
def test_save_to_a_folder_or_an_unknown_format(tiny_export, media, tmp_path, capsys):
    args = ["run", media / "scene.jpg", media / "sound.wav", "-m", tiny_export.directory, "--save"]
    (tmp_path / "folder").mkdir()
    assert_one_line_exit_2(args + [tmp_path / "folder"], capsys, tmp_path, "is a folder")
    assert_one_line_exit_2(args + [tmp_path / "o.gif"], capsys, tmp_path, ".png, .jpg or .jpeg")
    assert_one_line_exit_2(args + [tmp_path / "nope" / "o.png"], capsys, tmp_path, "does not exist")


def test_save_writes_the_format_of_its_extension(tiny_export, media, tmp_path, capsys):
    for name, magic in (("o.jpg", b"\xff\xd8\xff"), ("o.JPEG", b"\xff\xd8\xff"), ("o.png", b"\x89PNG")):
        code, _, err = run_cli(["run", media / "scene.jpg", media / "sound.wav", "-m", tiny_export.directory,
                                "--save", tmp_path / name], capsys)
        assert code == 0, err
        assert (tmp_path / name).read_bytes()[:len(magic)] == magic, name


def test_save_dir_never_overwrites_within_a_run(tiny_export, media, tmp_path, capsys):
    import cv2
    import numpy as np

    for d, colour in (("d1", 0), ("d2", 255)):
        (tmp_path / d).mkdir()
        cv2.imwrite(str(tmp_path / d / "x.jpg"), np.full((60, 80, 3), colour, np.uint8))
        shutil.copyfile(media / "sound.wav", tmp_path / d / "y.wav")
    csv = tmp_path / "pairs.csv"
    csv.write_text("d1/x.jpg,d1/y.wav\nd2/x.jpg,d2/y.wav\nd1/x.jpg,d1/y.wav\n")
    out = tmp_path / "overlays"
    out.mkdir()
    code, stdout, err = run_cli(["run", "--pairs", csv, "-m", tiny_export.directory, "--save-dir", out], capsys)
    assert code == 0, err
    names = sorted(os.listdir(out))
    assert names == ["x__y.png", "x__y_2.png", "x__y_3.png"], names
    assert cv2.imread(str(out / "x__y.png")).mean() < cv2.imread(str(out / "x__y_2.png")).mean()


def test_staged_pictures_are_written_as_made_and_renamed_only_on_commit(tmp_path):
    import numpy as np

    from sslrt.runtime.overlay import StagedPictures

    picture = np.full((20, 30, 3), 200, np.uint8)
    with StagedPictures() as staged:
        staged.add(tmp_path / "a.png", picture)
        staged.add(tmp_path / "b.jpg", picture)
        hidden = sorted(os.listdir(tmp_path))
        # on disk already (memory holds one picture at a time), under hidden names
        assert len(hidden) == 2 and all(n.startswith(".") for n in hidden)
        assert staged.commit() == [str(tmp_path / "a.png"), str(tmp_path / "b.jpg")]
    assert sorted(os.listdir(tmp_path)) == ["a.png", "b.jpg"]
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(KeyboardInterrupt):
        with StagedPictures() as staged:
            staged.add(tmp_path / "c.png", picture)
            raise KeyboardInterrupt
    assert sorted(os.listdir(tmp_path)) == ["a.png", "b.jpg"]  # nothing of the interrupted run


def test_pictures_drawn_in_threads_keep_the_run_order_bounded_memory_and_cleanup(tmp_path):
    import threading
    import time

    import cv2
    import numpy as np

    from sslrt.runtime.overlay import StagedPictures

    def slow(value, delay):
        def make():
            time.sleep(delay)
            return np.full((8, 8, 3), value, np.uint8)
        return make

    with StagedPictures(threads=3) as staged:
        for i in range(12):  # later pictures finish first: the order is still the calls'
            staged.add_later(tmp_path / f"p{i:02d}.png", slow(i, 0.02 * (12 - i) / 12))
            assert len(staged._in_flight) <= 6  # at most 2 per drawing thread held at once
        assert staged.commit() == [str(tmp_path / f"p{i:02d}.png") for i in range(12)]
    assert sorted(os.listdir(tmp_path)) == [f"p{i:02d}.png" for i in range(12)]
    assert all(cv2.imread(str(tmp_path / f"p{i:02d}.png"))[0, 0, 0] == i for i in range(12))

    # a drawing that fails fails the run at commit, and nothing of the run stays
    out = tmp_path / "failed"
    out.mkdir()

    def boom():
        raise SslrtError("cannot draw this one")

    with pytest.raises(SslrtError, match="cannot draw this one"):
        with StagedPictures(threads=2) as staged:
            staged.add_later(out / "fine.png", slow(1, 0))
            staged.add_later(out / "boom.png", boom)
            staged.commit()
    assert os.listdir(out) == []

    # a failed drawing surfaces while the run goes on (not only at commit), and nothing is published
    def broken():
        raise SslrtError("cannot draw the first")

    early = tmp_path / "early"
    early.mkdir()
    with pytest.raises(SslrtError, match="cannot draw the first"):
        with StagedPictures(threads=1) as staged:
            staged.add_later(early / "p0.png", broken)
            for i in range(1, 5):  # the third add waits for the first picture: its error comes out here
                staged.add_later(early / f"p{i}.png", slow(i, 0))
            pytest.fail("add_later did not report the failed drawing")
    assert os.listdir(early) == []

    # a run that fails (or is interrupted) while a picture is being drawn: the cleanup waits for
    # the drawing thread, which would otherwise write its hidden file again after the removal
    drawing = threading.Event()

    def long():
        drawing.set()
        time.sleep(0.3)
        return np.zeros((8, 8, 3), np.uint8)

    with pytest.raises(KeyboardInterrupt):
        with StagedPictures(threads=2) as staged:
            staged.add_later(out / "long.png", long)
            drawing.wait(5)
            raise KeyboardInterrupt
    time.sleep(0.5)  # past the drawing's end, had it not been waited for
    assert os.listdir(out) == []


def test_a_full_disk_is_one_line(tmp_path):
    import numpy as np

    from sslrt.runtime.overlay import _encode_to

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here (it answers every write with ENOSPC on Linux)")
    with pytest.raises(SslrtError) as failed:
        noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)  # ~200 KB: past stdio's buffer
        _encode_to("/dev/full", str(tmp_path / "a.png"), ".png", noise)
    assert str(failed.value).startswith(f"cannot write {tmp_path / 'a.png'}: ") and "\n" not in str(failed.value)


def test_staged_pictures_of_a_killed_run_are_removed_by_the_next(tiny_export, media, tmp_path, capsys):
    import subprocess
    import sys

    from sslrt.runtime.overlay import StagedPictures, remove_stale_pictures

    out = tmp_path / "overlays"
    out.mkdir()
    # a run killed after staging (SIGKILL: no `finally`), and one still running (this process)
    script = ("import numpy as np, os, signal\nfrom sslrt.runtime.overlay import StagedPictures\n"
              f"s = StagedPictures(); s.add({str(out / 'dead.png')!r}, np.zeros((8, 8, 3), np.uint8))\n"
              "os.kill(os.getpid(), signal.SIGKILL)")
    assert subprocess.run([sys.executable, "-c", script], timeout=60).returncode == -9
    alive = StagedPictures()
    alive.add(out / "alive.png", np.zeros((8, 8, 3), np.uint8))
    staged = sorted(os.listdir(out))
    assert len(staged) == 2 and all(n.startswith(".sslrt-staged.") for n in staged)
    (out / "keep.png").write_bytes(b"not ours")
    code, _, err = run_cli(["run", media / "scene.jpg", media / "sound.wav", "-m", tiny_export.directory,
                            "--save", out / "new.png"], capsys)
    assert code == 0, err
    left = sorted(os.listdir(out))
    assert "keep.png" in left and "new.png" in left
    assert [n for n in left if n.startswith(".")] == [n for n in staged if f".{os.getpid()}." in n]  # the live run's stays
    assert remove_stale_pictures(out) == []
    alive.discard()
    assert sorted(os.listdir(out)) == ["keep.png", "new.png"]


def test_staged_names_from_elsewhere_are_left_alone(tmp_path):
    """Only this host's staged pictures of dead runs are swept: another machine's (a shared folder)
    stay; a name of ours with a PID too large to exist is stale, not a crash."""
    from sslrt.runtime.overlay import _host, remove_stale_pictures

    other = tmp_path / ".sslrt-staged.some-other-host.999999.a.png.x.tmp.png"
    huge = tmp_path / f".sslrt-staged.{_host()}.99999999999999999999.a.png.x.tmp.png"
    for p in (other, huge):
        p.write_bytes(b"x")
    assert remove_stale_pictures(tmp_path) == [str(huge)]
    assert other.exists() and not huge.exists()


def test_staged_pictures_publish_whole_despite_ctrl_c(tmp_path):
    """Ctrl-C during commit's renames is held back until every picture is in place."""
    import signal

    from sslrt.runtime import overlay
    from sslrt.runtime.overlay import StagedPictures

    picture = np.zeros((8, 8, 3), np.uint8)
    staged = StagedPictures()
    for name in "abc":
        staged.add(tmp_path / f"{name}.png", picture)
    real_replace = os.replace

    def replace_then_interrupt(src, dst):  # the signal arrives in the middle of the loop
        real_replace(src, dst)
        if dst.endswith("a.png"):
            signal.raise_signal(signal.SIGINT)

    handler = signal.getsignal(signal.SIGINT)
    overlay.os.replace = replace_then_interrupt
    try:
        with pytest.raises(KeyboardInterrupt):
            staged.commit()
    finally:
        overlay.os.replace = real_replace
    assert sorted(os.listdir(tmp_path)) == ["a.png", "b.png", "c.png"]
    assert signal.getsignal(signal.SIGINT) is handler  # the handler the commit held the signal from


def test_staged_pictures_commit_failure_is_one_line(tmp_path):
    from sslrt.runtime.overlay import StagedPictures

    staged = StagedPictures()
    staged.add(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    staged.add(tmp_path / "b.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "b.png").mkdir()
    (tmp_path / "b.png" / "x").write_text("a folder in the way")
    with pytest.raises(SslrtError, match="1 of 2 overlays were written"):
        staged.commit()
    staged.discard()
    assert sorted(os.listdir(tmp_path)) == ["a.png", "b.png"]


def test_a_failed_run_leaves_no_overlay(tiny_export, media, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)  # a JPEG that stops after its first marker
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"{media}/scene.jpg,{media}/sound.wav\n{media}/scene.png,{media}/sound.wav\n{bad},{media}/sound.wav\n")
    out = tmp_path / "overlays"
    out.mkdir()
    code, _, err = run_cli(["run", "--pairs", csv, "-m", tiny_export.directory, "--batch-size", "1", "--save-dir", out], capsys)
    assert code == 2 and "bad.jpg" in err and err.count("\n") == 1
    assert os.listdir(out) == []  # neither the first pairs' overlays nor hidden staged files


# -- eval options ---------------------------------------------------------------------------------
@pytest.fixture
def is3_root(tmp_path):
    from sslrt.synthetic.datasets import synthetic_is3_samples, write_is3

    root = tmp_path / "data"
    write_is3(root, synthetic_is3_samples(2, seed=5))
    return root


def test_eval_bad_options(is3_root, tiny_export, tmp_path, capsys):
    base = ["eval", "-d", "is3", "--root", is3_root, "-m", tiny_export.directory]
    assert_one_line_exit_2(base + ["-o", tmp_path / "o", "--batch-size", "0"], capsys, tmp_path, "--batch-size")
    assert_one_line_exit_2(base + ["-o", tmp_path / "o", "--retrieval", "-1"], capsys, tmp_path, "--retrieval")
    assert_one_line_exit_2(base + ["-o", tmp_path / "o", "--retrieval", "100000"], capsys, tmp_path, "--retrieval")
    assert_one_line_exit_2(base + ["-o", tmp_path / "o", "--limit", "0"], capsys, tmp_path, "--limit")
    (tmp_path / "afile").write_text("x")
    assert_one_line_exit_2(base + ["-o", tmp_path / "afile"], capsys, tmp_path, "is a file")
    assert_one_line_exit_2(base + ["-o", tmp_path / "o", "--json", tmp_path], capsys, tmp_path, "is a folder")


@pytest.mark.parametrize("garbage", [b"", b"{not json", b"[1, 2]", b"\xff\xfe\x00"])
def test_eval_garbage_run_json(garbage, is3_root, tiny_export, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "run.json").write_bytes(garbage)
    assert_one_line_exit_2(["eval", "-d", "is3", "--root", is3_root, "-m", tiny_export.directory, "-o", out], capsys,
                           tmp_path, "run.json")


def test_eval_foreign_per_sample_csv(is3_root, tiny_export, tmp_path, capsys):
    out = tmp_path / "o"
    args = ["eval", "-d", "is3", "--root", is3_root, "-m", tiny_export.directory, "-o", out]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    (out / "per_sample.csv").write_text("name,value\na,1\n")
    assert_one_line_exit_2(args, capsys, tmp_path, "not a per_sample.csv")


# -- demo, train, export ----------------------------------------------------------------------------
def test_demo_bad_options(tmp_path, capsys):
    assert_one_line_exit_2(["demo", "--seed", "-1", "-o", tmp_path / "d.png"], capsys, tmp_path, "--seed")
    assert_one_line_exit_2(["demo", "--seed", str(2**40), "-o", tmp_path / "d.png"], capsys, tmp_path, "--seed")
    assert_one_line_exit_2(["demo", "--out", tmp_path], capsys, tmp_path, "is a folder")
    assert_one_line_exit_2(["demo", "--out", tmp_path / "d.bmp"], capsys, tmp_path, ".png, .jpg or .jpeg")


def test_demo_writes_jpeg_by_extension(tmp_path, capsys):
    code, _, err = run_cli(["demo", "-o", tmp_path / "d.jpg"], capsys)
    assert code == 0, err
    assert (tmp_path / "d.jpg").read_bytes()[:3] == b"\xff\xd8\xff"


@pytest.mark.parametrize("args, fragment", [
    (["--train-images", "0"], "--train-images"),
    (["--batch-size", "0"], "--batch-size"),
    (["--train-images", "4", "--batch-size", "8"], "--train-images must be >= 8"),
    (["--epochs", "0"], "--epochs"),
    (["--threads", "100000"], "--threads"),
    (["--lr", "nan"], "--lr"),
    (["--width", "abc"], "invalid int value"),
    (["--bogus"], "unrecognized arguments"),
])
def test_train_bad_options(args, fragment, tmp_path, capsys):
    assert_one_line_exit_2(["train", "--out-dir", tmp_path / "run", *args], capsys, tmp_path, fragment)


def test_export_bad_options(tiny_checkpoint, tmp_path, capsys):
    ckpt = tmp_path / "c.pth"
    shutil.copyfile(tiny_checkpoint, ckpt)
    (tmp_path / "afile").write_text("x")
    assert_one_line_exit_2(["export", ckpt, "-o", tmp_path / "afile"], capsys, tmp_path, "is a file")
    assert_one_line_exit_2(["export", ckpt, "-o", ckpt], capsys, tmp_path, "the checkpoint itself")
    assert_one_line_exit_2(["export", ckpt, "-o", tmp_path / "e", "--opset", "99"], capsys, tmp_path, "opset 99")
    assert_one_line_exit_2(["export", ckpt, "-o", tmp_path / "e", "--opset", "9"], capsys, tmp_path, "opset 9")
    assert_one_line_exit_2(["export", tmp_path / "missing.pth", "-o", tmp_path / "e"], capsys, tmp_path, "not found")
    assert_one_line_exit_2(["export", ckpt, "-o", tmp_path / "afile" / "sub"], capsys, tmp_path, "is a file")


def test_export_default_folder_strips_only_checkpoint_suffixes(tiny_checkpoint, tmp_path, capsys):
    from sslrt.cli import export_stem

    assert export_stem("my.model.v2.pth") == "my.model.v2"
    assert export_stem("model.pth.tar") == "model" and export_stem("m.v1.ckpt") == "m.v1"
    assert export_stem("m.PT") == "m" and export_stem("m.tar") == "m" and export_stem("noext") == "noext"
    assert export_stem(".pth") == ".pth"
    ckpt = tmp_path / "my.model.v2.pth"
    shutil.copyfile(tiny_checkpoint, ckpt)
    code, _, err = run_cli(["export", ckpt, "--no-encoders", "--no-simplify"], capsys)
    assert code == 0, err
    assert (tmp_path / "my.model.v2_sslrt" / "manifest.json").is_file()
    assert not (tmp_path / "my_sslrt").exists()


def test_run_help_lists_int8(capsys):
    code, out, _ = run_cli(["run", "--help"], capsys)
    assert code == 0 and "int8" in out
