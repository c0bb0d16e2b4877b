"""Preparation in worker processes (sslrt.runtime.offload) and the allocator of sslrt's own
processes (sslrt.runtime.allocator): same results as in threads, errors as one line, no worker
left behind, no re-run of the parent's main script."""
import operator
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sslrt.errors import SslrtError
from sslrt.runtime.offload import ProcessOffload
from sslrt.runtime.pipeline import Localizer

from conftest import run_cli

REPO = Path(__file__).resolve().parents[1]


def _children(pid: int) -> list[int]:
    """Live processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def _is_live_worker(pid: int) -> bool:
    """`pid` is still a running sslrt worker process (whoever its parent is now)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return b"sslrt.runtime.offload" in cmdline and state != "Z"


def _pairs(media, tmp_path):
    """Files of every kind, an array image, a (waveform, rate) sound, silent audio, repeats."""
    import soundfile as sf

    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000 * 3, np.float32), 16000, subtype="PCM_16")
    array = np.random.default_rng(0).integers(0, 256, (90, 70, 3), dtype=np.uint8)
    wave = (0.1 * np.sin(np.arange(22050 * 2) * 0.05)).astype(np.float32)
    jpg, png = media / "scene.jpg", media / "scene.png"
    return [(jpg, media / "sound.wav"), (png, media / "stereo44k.flac"), (jpg, silent), (array, (wave, 22050)),
            (png, media / "short.ogg"), (jpg, media / "sound.wav")]


@pytest.mark.parametrize("reuse_embeddings", [True, False])
def test_pairs_prepared_in_worker_processes_equal_those_prepared_here(tiny_export, media, tmp_path, reuse_embeddings):
    pairs = _pairs(media, tmp_path)
    with Localizer.open(tiny_export.directory, reuse_embeddings=reuse_embeddings) as here:
        expected = list(here.localize_many(pairs, batch_size=4, workers=0))
    with Localizer.open(tiny_export.directory, reuse_embeddings=reuse_embeddings) as loc:
        got = list(loc.localize_many(pairs, batch_size=4, workers=2, processes=True))
        assert list(loc._offloads) == [2] and len(loc._offloads[2]._workers) >= 1  # the work did go to processes
        workers = [w.process for w in loc._offloads[2]._workers]
    assert [p.poll() for p in workers] == [0] * len(workers)  # stopped with the Localizer, exit code 0
    assert len(got) == len(expected) == len(pairs)
    for a, b in zip(got, expected):
        assert np.array_equal(a.heatmap, b.heatmap)
        assert (a.peak, a.bbox, a.image_size, a.warnings) == (b.peak, b.bbox, b.image_size, b.warnings)
    assert any("silent" in w for w in got[2].warnings)  # a warning raised in a worker reaches the result


def test_a_bad_input_fails_in_a_worker_process_as_it_does_here(tiny_export, media, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((media / "scene.jpg").read_bytes()[:300])
    pairs = [(media / "scene.jpg", media / "sound.wav"), (broken, media / "sound.wav")]
    with Localizer.open(tiny_export.directory) as loc:
        with pytest.raises(SslrtError) as here:
            list(loc.localize_many(pairs, batch_size=2, workers=0))
        loc.image_cache.clear()
        loc.audio_cache.clear()
        with pytest.raises(SslrtError) as there:
            list(loc.localize_many(pairs, batch_size=2, workers=2, processes=True))
    assert str(there.value) == str(here.value) and "broken.jpg" in str(here.value)


def test_a_killed_worker_is_one_line_and_its_slot_gets_a_fresh_one():
    offload = ProcessOffload(1)
    try:
        assert offload(operator.add, 2, 3) == 5
        first = offload._workers[0].process
        with pytest.raises(SslrtError, match="worker process died"):
            offload(os._exit, 9)  # the worker ends mid-task, as the kernel's OOM killer would end it
        assert first.poll() is not None
        assert offload(operator.mul, 6, 7) == 42  # a new worker took the slot
        assert offload._workers[0].process is not first
        with pytest.raises(ZeroDivisionError):  # a task's own error is the caller's, the worker lives on
            offload(operator.truediv, 1, 0)
        assert offload._workers[0].process.poll() is None
    finally:
        offload.close()
    assert all(w.process.poll() is not None for w in offload._workers) and offload._workers == []


class _FailsToUnpickle:
    """Pickles fine here; unpickling it (in the worker) raises ZeroDivisionError."""

    def __reduce__(self):
        return operator.truediv, (1, 0)


def test_what_does_not_cross_the_process_boundary_is_one_line_and_the_worker_lives_on(tmp_path, monkeypatch):
    import threading

    offload = ProcessOffload(1)
    try:
        assert offload(operator.add, 1, 1) == 2
        first = offload._workers[0].process
        with pytest.raises(Exception, match="pickle"):  # the parent cannot send it: nothing was sent
            offload(operator.add, lambda: 1, 2)
        with pytest.raises(SslrtError, match="could not load its task: ZeroDivisionError") as loading:
            offload(operator.add, _FailsToUnpickle(), 2)
        with pytest.raises(SslrtError, match="reply could not be sent") as replying:
            offload(threading.Lock)  # its result does not pickle
        assert "\n" not in str(loading.value) + str(replying.value)
        monkeypatch.chdir(tmp_path)  # relative paths mean in the worker what they mean here
        assert offload(os.getcwd) == str(tmp_path)
        assert offload._workers[0].process is first and first.poll() is None  # one worker all along
    finally:
        offload.close()
    assert first.wait(10) == 0
    with pytest.raises(RuntimeError, match="closed"):  # refused, not left waiting for a slot
        offload(operator.add, 1, 1)


def test_workers_do_not_rerun_the_parents_main_script(tiny_export, media, tmp_path):
    """A user's script without an `if __name__ == "__main__":` guard (multiprocessing's spawn and
    forkserver workers would re-run it, and it would start workers from its workers)."""
    script = tmp_path / "unguarded.py"
    marker = tmp_path / "runs.txt"
    script.write_text(
        "import sys\n"
        f"open({str(marker)!r}, 'a').write('run\\n')\n"
        "from sslrt.runtime.pipeline import Localizer\n"
        f"loc = Localizer.open({str(tiny_export.directory)!r})\n"
        f"pairs = [({str(media / 'scene.jpg')!r}, {str(media / 'sound.wav')!r}), ({str(media / 'scene.png')!r}, {str(media / 'short.ogg')!r})]\n"
        "print(len(list(loc.localize_many(pairs, batch_size=1, workers=2, processes=True))))\n"
        "loc.close()\n")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"
    assert marker.read_text() == "run\n"  # the script ran once: in the parent only


SLOW_RUN = r"""
import sys, time
import sslrt.runtime.pipeline as p
real = p.Localizer.infer
def slow(self, *a, **k):
    time.sleep(0.3)
    return real(self, *a, **k)
p.Localizer.infer = slow
from sslrt.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize("sig, code, group", [(signal.SIGINT, 130, False), (signal.SIGTERM, 143, False),
                                               (signal.SIGINT, 130, True)])
def test_signal_during_a_run_in_worker_processes_leaves_no_worker(sig, code, group, tiny_export, media, tmp_path):
    """`group`: Ctrl-C in a terminal, which signals the whole foreground process group."""
    csv = tmp_path / "pairs.csv"
    csv.write_text("".join(f"{media}/scene.jpg,{media}/sound.wav\n" for _ in range(40)))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN, "run", "--pairs", str(csv), "-m", str(tiny_export.directory),
                             "--batch-size", "1", "--worker-processes", "--workers", "2", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), start_new_session=group)
    t0 = time.monotonic()
    while len(_children(proc.pid)) < 1:  # the first worker process has started
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() - t0 < 120, "no worker process started"
        time.sleep(0.05)
    time.sleep(0.5)
    workers = _children(proc.pid)
    assert workers and all(_is_live_worker(pid) for pid in workers)
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert stderr == "interrupted\n"  # no worker's traceback either
    t0 = time.monotonic()
    while any(_is_live_worker(pid) for pid in workers):
        assert time.monotonic() - t0 < 10, "a worker process outlived the run"
        time.sleep(0.05)


def test_sslrt_run_stops_its_worker_processes_when_it_returns(tiny_export, media, tmp_path, capsys):
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"{media}/scene.jpg,{media}/sound.wav\n{media}/scene.png,{media}/short.ogg\n")
    code, out, err = run_cli(["run", "--pairs", csv, "-m", tiny_export.directory, "--workers", "2", "--worker-processes",
                              "--batch-size", "1"], capsys)
    assert code == 0, err
    assert out.count("sound at") == 2
    assert not [pid for pid in _children(os.getpid()) if _is_live_worker(pid)]


def test_bad_worker_counts_are_one_line(tiny_export, media, tmp_path, capsys):
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"{media}/scene.jpg,{media}/sound.wav\n")
    code, _, err = run_cli(["run", "--pairs", csv, "-m", tiny_export.directory, "--workers", "-1"], capsys)
    assert code == 2 and err == "error: --workers must be between 0 and 256, got -1\n"


def test_the_sslrt_command_keeps_freed_memory_where_it_prepares_many_pairs(tiny_export, media, tmp_path, capsys, monkeypatch):
    """Only in its own process (main() without arguments), and only where many pairs follow."""
    import sslrt.cli as cli
    import sslrt.runtime.allocator as allocator

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"{media}/scene.jpg,{media}/sound.wav\n" * 2)
    code, _, err = run_cli(["run", "--pairs", csv, "-m", tiny_export.directory], capsys)
    assert code == 0, err
    assert calls == []  # an in-process caller's allocator is theirs
    monkeypatch.setattr(cli, "_AS_COMMAND", True)
    code, _, err = run_cli(["run", media / "scene.jpg", media / "sound.wav", "-m", tiny_export.directory], capsys)
    assert code == 0, err
    assert calls == []  # one pair: nothing to reuse
    code, _, err = run_cli(["run", "--pairs", csv, "-m", tiny_export.directory], capsys)
    assert code == 0, err
    assert calls == [1]


def test_keep_freed_memory_leaves_the_users_malloc_settings_alone():
    code = ("import sslrt.runtime.allocator as a; print(a.keep_freed_memory())")
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="1000000", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
