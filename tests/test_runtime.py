"""The runtime: split (encoders) and fused paths agree, and shared inputs are encoded once."""
import os

import numpy as np
import pytest

import sslrt
from sslrt.engines import create_engine
from sslrt.resolve import resolve_model
from sslrt.runtime.pipeline import Localizer


class CountingEngine:
    """Wraps a real engine and records the batch size of every call."""

    def __init__(self, engine):
        self.engine, self.calls = engine, []
        self.backend, self.precision, self.device = engine.backend, engine.precision, engine.device

    def run(self, feeds):
        self.calls.append(len(next(iter(feeds.values()))))
        return self.engine.run(feeds)

    def describe(self):
        return self.engine.describe()

    def close(self):
        self.engine.close()


def _split_localizer(export_dir):
    source = resolve_model(export_dir)
    return Localizer({g: CountingEngine(create_engine("onnxruntime", source, graph=g)) for g in ("vision", "audio")}, source)


def test_split_and_fused_paths_agree(tiny_export, media):
    pairs = [(media / "scene.jpg", media / "sound.wav"), (media / "scene.png", media / "stereo44k.flac")]
    fused = Localizer.open(tiny_export.directory, reuse_embeddings=False)
    split = sslrt.load(tiny_export.directory)
    assert not fused.split and split.split
    for a, b in zip(fused.localize_many(pairs), split.localize_many(pairs)):
        assert np.abs(a.heatmap - b.heatmap).max() <= 1e-5
        assert a.bbox == b.bbox and a.peak == b.peak


def test_each_distinct_input_is_encoded_once(tiny_export, media):
    loc = _split_localizer(tiny_export.directory)
    img = media / "scene.jpg"
    sounds = [media / "sound.wav", media / "stereo44k.flac", media / "short.ogg"]
    results = list(loc.localize_many([(img, s) for s in sounds], batch_size=8))
    assert loc.engines["vision"].calls == [1] and loc.engines["audio"].calls == [3]
    # interactive use: another call with the same image and a known sound runs no encoder at all
    again = loc.localize(img, sounds[1])
    assert loc.engines["vision"].calls == [1] and loc.engines["audio"].calls == [3]
    assert np.array_equal(again.heatmap, results[1].heatmap)


def test_an_input_shared_by_the_pairs_in_flight_is_decoded_once(tiny_export, media, monkeypatch):
    """One image, many sounds (and one sound, many images): decoded and transformed once, before
    any embedding reaches the cache; the results equal those of one pair at a time."""
    from sslrt.runtime import pipeline

    decoded, spectrograms = [], []
    real_load, real_audio = pipeline.load_image, pipeline._prepare_audio
    monkeypatch.setattr(pipeline, "load_image", lambda *a, **k: decoded.append(1) or real_load(*a, **k))
    monkeypatch.setattr(pipeline, "_prepare_audio", lambda a, spec=None, exact=False: spectrograms.append(1) or real_audio(a, spec, exact))
    img, sounds = media / "scene.jpg", [media / "sound.wav", media / "stereo44k.flac", media / "short.ogg"]
    pairs = [(img, s) for s in sounds] + [(media / "scene.png", sounds[0])]
    for workers in (0, 1, 2):
        loc = Localizer.open(tiny_export.directory)
        decoded.clear(), spectrograms.clear()
        got = list(loc.localize_many(pairs, batch_size=2, workers=workers))
        assert len(decoded) == 2 and len(spectrograms) == 3, workers
        alone = [Localizer.open(tiny_export.directory).localize(*p) for p in pairs]
        assert all(np.array_equal(a.heatmap, b.heatmap) and a.warnings == b.warnings for a, b in zip(got, alone))


def test_arrays_are_cached_by_content(tiny_export, media):
    from sslrt.preprocess import load_image

    loc = _split_localizer(tiny_export.directory)
    rgb = load_image(media / "scene.jpg")
    wave = np.sin(np.arange(16000 * 3) / 10.0) * 0.2
    loc.localize(rgb, wave)
    loc.localize(rgb.copy(), wave * 0.5)  # same image content, different sound
    assert loc.engines["vision"].calls == [1] and loc.engines["audio"].calls == [1, 1]
    rgb2 = rgb.copy()
    rgb2[0, 0, 0] ^= 1
    loc.localize(rgb2, wave)
    assert loc.engines["vision"].calls == [1, 1]


def test_pipelined_and_sequential_runs_give_the_same_results(tiny_export, media):
    pairs = [(media / "scene.jpg", media / "sound.wav"), (media / "scene.png", media / "short.ogg")] * 5
    loc = Localizer.open(tiny_export.directory, reuse_embeddings=False)
    seq = [r.heatmap for r in loc.localize_many(pairs, batch_size=3, workers=0)]
    par = [r.heatmap for r in loc.localize_many(pairs, batch_size=3, workers=2)]
    assert len(seq) == len(par) == 10
    assert all(np.array_equal(a, b) for a, b in zip(seq, par))


def test_preparation_threads_follow_the_engines_device():
    from sslrt.runtime.pipeline import MAX_GPU_PREPARE_PROCESSES, MAX_GPU_PREPARE_WORKERS, prepare_workers

    # a CPU engine shares the cores: one thread per core, at most four
    assert [prepare_workers("cpu", n) for n in (1, 2, 4, 16)] == [1, 2, 4, 4]
    # a GPU engine leaves every core but the one driving it to preparation
    assert [prepare_workers("cuda", n) for n in (1, 2, 6, 64)] == [1, 1, 5, MAX_GPU_PREPARE_WORKERS]
    assert prepare_workers("?", 16) == 4  # an engine whose device is not known counts as a CPU one
    # in worker processes (no GIL between them) every core but one, however many
    assert [prepare_workers("cuda", n, processes=True) for n in (1, 2, 6, 16, 64)] == [1, 1, 5, 15, MAX_GPU_PREPARE_PROCESSES]


def test_usable_cores_follow_the_cgroups_cpu_quota(tmp_path):
    from sslrt.machine import usable_cores

    mine = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    for text, expected in (("max 100000\n", mine), ("100000 100000\n", 1), ("150000 100000\n", min(mine, 2)),
                           ("6400000 100000\n", mine), ("garbage\n", mine)):
        cpu_max.write_text(text)
        assert usable_cores(str(cpu_max)) == expected, text
    assert usable_cores(str(tmp_path / "absent")) == mine


def test_worker_processes_are_the_default_beside_a_gpu_engine_with_cores_to_spare():
    from sslrt.runtime.pipeline import MIN_CORES_FOR_PROCESSES, prepare_in_processes

    assert prepare_in_processes("cuda", MIN_CORES_FOR_PROCESSES)
    assert not prepare_in_processes("cuda", MIN_CORES_FOR_PROCESSES - 1)  # a start that would not pay
    assert not prepare_in_processes("cpu", 64)  # a CPU engine needs the cores itself


def test_localize_many_sizes_its_preparation_pool_by_the_device(tiny_export, media, monkeypatch):
    import concurrent.futures

    import sslrt.runtime.pipeline as pipeline

    sizes = []

    class Recording(concurrent.futures.ThreadPoolExecutor):
        def __init__(self, max_workers=None, *a, **k):
            sizes.append(max_workers)
            super().__init__(max_workers, *a, **k)

    monkeypatch.setattr(pipeline, "ThreadPoolExecutor", Recording)
    monkeypatch.setattr(pipeline, "usable_cores", lambda: 6)
    loc = _split_localizer(tiny_export.directory)
    pairs = [(media / "scene.jpg", media / "sound.wav")] * 2
    list(loc.localize_many(pairs, batch_size=1))
    assert sizes == [4, 1]  # a CPU engine: at most four preparation threads (and one finisher)
    for engine in loc.engines.values():
        engine.device = "cuda"  # as a GPU engine reports itself
    sizes.clear()
    try:
        list(loc.localize_many(pairs, batch_size=1))
        assert sizes == [5, 1]  # every core but the one driving the engine
        assert list(loc._offloads) == [5]  # in worker processes (6 cores)
    finally:
        loc.close()
    one = _split_localizer(tiny_export.directory)
    for engine in one.engines.values():
        engine.device = "cuda"
    list(one.localize_many(pairs[:1], batch_size=1))
    assert one._offloads == {}  # one pair overlaps nothing: no worker process is started for it


def test_one_picture_under_two_names_is_encoded_once(tiny_export, media, tmp_path):
    import shutil

    twin = tmp_path / "same_picture_other_name.jpg"
    shutil.copyfile(media / "scene.jpg", twin)
    loc = _split_localizer(tiny_export.directory)
    a, b = loc.localize_many([(media / "scene.jpg", media / "sound.wav"), (twin, media / "short.ogg")], batch_size=2)
    assert loc.engines["vision"].calls == [1] and loc.engines["audio"].calls == [2]
    assert a.image.endswith("scene.jpg") and b.image.endswith("same_picture_other_name.jpg")


def test_a_cache_hit_survives_eviction_before_its_batch_runs(tiny_export, media):
    """Prefetching prepares pairs ahead; an embedding found then must not be lost if the LRU evicts it."""
    from sslrt.runtime.pipeline import EmbeddingCache, prepare_pair

    loc = _split_localizer(tiny_export.directory)
    loc.image_cache, loc.audio_cache = EmbeddingCache(1), EmbeddingCache(1)
    first = loc.localize(media / "scene.jpg", media / "sound.wav")
    prepared = prepare_pair(media / "scene.jpg", media / "sound.wav", loc.image_cache, loc.audio_cache)
    assert prepared.image_tensor is None and prepared.spectrogram is None  # both were cache hits
    loc.localize(media / "scene.png", media / "short.ogg")  # evicts both (capacity 1)
    again = loc.run_prepared([prepared])[0]
    assert np.array_equal(again.heatmap, first.heatmap)


def test_an_image_in_memory_is_the_file_on_disk(tiny_export, media):
    """ImageBytes (an upload held in memory, as `sslrt serve` passes it): the same heatmap as the
    file, the same cache entry (keyed by content), its own name in results and errors."""
    import pytest

    from sslrt.errors import SslrtError
    from sslrt.preprocess import ImageBytes

    loc = _split_localizer(tiny_export.directory)
    on_disk = loc.localize(media / "scene.png", media / "sound.wav")
    in_memory = loc.localize(ImageBytes("upload.png", (media / "scene.png").read_bytes()), media / "short.ogg")
    assert loc.engines["vision"].calls == [1]  # the second pair found the picture's embedding
    assert in_memory.image == "upload.png" and in_memory.image_size == on_disk.image_size
    fresh = _split_localizer(tiny_export.directory)
    again = fresh.localize(ImageBytes("upload.png", (media / "scene.png").read_bytes()), media / "sound.wav")
    assert np.array_equal(again.heatmap, on_disk.heatmap)
    with pytest.raises(SslrtError, match="upload.jpg"):
        fresh.localize(ImageBytes("upload.jpg", b"\xff\xd8 not a jpeg"), media / "sound.wav")
    with pytest.raises(SslrtError, match="image is empty: empty.png"):
        fresh.localize(ImageBytes("empty.png", b""), media / "sound.wav")
    with pytest.raises(SslrtError, match="expected a path, a waveform"):  # an image where the sound goes
        fresh.localize(media / "scene.png", ImageBytes("upload.png", (media / "scene.png").read_bytes()))


def test_lanes_give_the_sequential_results_in_order(tiny_export, media, monkeypatch):
    """An engine of two lanes (ONNX Runtime on two threads): whole batches on either lane, at once,
    results in the pairs' order, equal to one batch after the other; the first call's costs are
    flagged on each lane's first batch, the load time once."""
    pairs = [(media / "scene.jpg", media / "sound.wav"), (media / "scene.png", media / "short.ogg"),
             (media / "scene.jpg", media / "stereo44k.flac")] * 4
    seq = list(Localizer.open(tiny_export.directory, threads=2).localize_many(pairs, batch_size=5, workers=0))
    loc = Localizer.open(tiny_export.directory, threads=2)
    assert loc.split and loc.lanes == 2
    lanes, real = [], Localizer.infer
    monkeypatch.setattr(Localizer, "infer", lambda self, batch, lane=None: lanes.append(lane) or real(self, batch, lane))
    got = list(loc.localize_many(pairs, batch_size=5, workers=2))
    assert len(got) == len(seq) == 12 and len(lanes) == 3 and set(lanes) <= {0, 1}
    assert [(r.image, r.audio) for r in got] == [(str(i), str(a)) for i, a in pairs]
    assert all(np.array_equal(a.heatmap, b.heatmap) and a.bbox == b.bbox for a, b in zip(got, seq))
    assert [bool(r.timings_ms.get("first_call")) for r in got] == [True] * 10 + [False] * 2
    assert [("load" in r.timings_ms) for r in got] == [True] + [False] * 11
    assert not any(r.timings_ms.get("first_call") for r in loc.localize_many(pairs[:4], batch_size=2))
    lanes.clear()
    list(loc.localize_many(pairs[:5], batch_size=5))  # one batch: nothing to run beside it, no lane
    list(loc.localize_many(iter(pairs[:5]), batch_size=5))  # also when the input has no length
    assert lanes == [None, None]
    loc.close()


def _lane_threads() -> int:
    import threading

    return sum(t.name.startswith("sslrt-lane") for t in threading.enumerate())


def test_a_failing_pair_on_a_lane_raises_and_a_stopped_run_ends(tiny_export, media, tmp_path):
    from sslrt.errors import SslrtError

    bad = tmp_path / "not_an_image.jpg"
    bad.write_bytes(b"\xff\xd8 this is no JPEG")
    good = (media / "scene.jpg", media / "sound.wav")
    loc = Localizer.open(tiny_export.directory, threads=2)
    assert loc.lanes == 2
    with pytest.raises(SslrtError):
        list(loc.localize_many([good] * 5 + [(bad, media / "sound.wav")] + [good] * 6, batch_size=2, workers=2))
    assert _lane_threads() == 0
    run = loc.localize_many([good] * 40, batch_size=2, workers=2)
    assert next(run).image == str(good[0])
    run.close()  # the consumer stops: nothing more starts, the lanes' threads end
    assert _lane_threads() == 0
    assert len(list(loc.localize_many([good] * 3, batch_size=2))) == 3  # and the Localizer still runs
    loc.close()


def test_close_stops_the_lanes_of_a_suspended_run(tiny_export, media):
    """A consumer that raised while holding the generator leaves its lanes running the engines;
    close() stops them first, so that no lane loads a closed engine again."""
    import time

    good = (media / "scene.jpg", media / "sound.wav")
    loc = Localizer.open(tiny_export.directory, threads=2)
    run = loc.localize_many([good] * 40, batch_size=2, workers=2)
    next(run)  # lanes now run the next batches while the generator waits
    loc.close()
    assert _lane_threads() == 0
    time.sleep(0.3)
    assert all(engine._session is None and engine._halves is None for engine in loc.engines.values())
    with pytest.raises(Exception):  # what was left of the run fails: its Localizer is closed
        list(run)
    assert all(engine._session is None for engine in loc.engines.values())
