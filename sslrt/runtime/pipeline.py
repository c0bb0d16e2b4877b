"""The runtime: (image, audio) -> Localization, one pair or many, on any engine."""
from __future__ import annotations

import hashlib
import itertools
import os
import queue
import threading
import time
import warnings
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sized

import numpy as np

from sslrt.engines import Engine, check_batch_size, check_threads, create_engine, get_row, graphs_for, resolve_backend
from sslrt.errors import AudioInputWarning, SslrtError
from sslrt.graphs import INPUT_AUDIO, INPUT_IMAGE, OUTPUT_AUDIO_EMBEDDING, OUTPUT_HEATMAP, OUTPUT_IMAGE_EMBEDDING, cosine_map
from sslrt.machine import usable_cores
from sslrt.preprocess import image_to_tensor, load_image, spectrogram_from_waveform
from sslrt.preprocess.audio import read_audio
from sslrt.preprocess.image import ImageBytes, read_image_bytes
from sslrt.resolve import ResolvedModel, resolve_model
from sslrt.runtime.localization import localize_heatmaps
from sslrt.spec import ModelSpec

ImageInput = "str | os.PathLike | np.ndarray | ImageBytes"
AudioInput = "str | os.PathLike | np.ndarray | tuple[np.ndarray, int]"


@dataclass
class Localization:
    """Where the sound comes from in one image. Coordinates are original image pixels [x, y]."""

    heatmap: np.ndarray  # the family's native map (14x14 or 7x7), in its units (see `heatmap_units`)
    score: float
    peak: list[float]
    bbox: list[float]
    image_size: tuple[int, int]  # (height, width)
    backend: str
    precision: str
    # preprocess, inference (the batch's engine time / pairs), postprocess; the results of a
    # Localizer's first batch add first_call: true (their inference includes the engines' warm-up)
    # and the first result "load" (resolving the model and opening the engines; `sslrt run` adds
    # "startup": process start -> the command, i.e. Python and the imports).
    timings_ms: dict[str, float]
    image: str | None = None
    audio: str | None = None
    warnings: list[str] = field(default_factory=list)
    family: str = "ours"
    heatmap_units: str = "cosine"
    # "No sound source": sounding = sounding_value > sounding_threshold (None where the family has none).
    sounding: bool | None = None
    sounding_value: float | None = None
    sounding_threshold: float | None = None
    # Set by localize_many(keep_embeddings=True) on the split path: (C,14,14) and (C,), for retrieval.
    image_embedding: np.ndarray | None = field(default=None, repr=False)
    audio_embedding: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {
            "image": self.image,
            "audio": self.audio,
            "family": self.family,
            "heatmap": [[round(float(v), 7) for v in row] for row in self.heatmap],
            "heatmap_size": list(self.heatmap.shape),
            "heatmap_units": self.heatmap_units,
            "score": round(self.score, 6),
            "sounding": self.sounding,
            "sounding_value": None if self.sounding_value is None else round(self.sounding_value, 6),
            "sounding_threshold": self.sounding_threshold,
            "peak": self.peak,
            "bbox": self.bbox,
            "image_size": {"height": self.image_size[0], "width": self.image_size[1]},
            "backend": self.backend,
            "precision": self.precision,
            "timings_ms": {k: v if isinstance(v, bool) else round(v, 3) for k, v in self.timings_ms.items()},
            "warnings": self.warnings,
        }

    def summary(self) -> str:
        x0, y0, x1, y1 = self.bbox
        name = f"{os.path.basename(self.image)} + {os.path.basename(self.audio)}: " if self.image and self.audio else ""
        t = self.timings_ms
        silent = "no sound source (" if self.sounding is False else ""
        first = "".join(f", {k} {t[k]:.1f} ms" for k in ("load", "startup") if k in t)
        first += " (first call)" if t.get("first_call") else ""
        return (f"{name}{silent}sound at ({self.peak[0]:.0f}, {self.peak[1]:.0f}) px, box [{x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}], "
                f"score {self.score:.3f}{')' if silent else ''}  [{self.family}, {self.backend} {self.precision}; "
                f"preprocess {t['preprocess']:.1f} ms, "
                f"inference {t['inference']:.1f} ms, postprocess {t['postprocess']:.1f} ms{first}]")


@dataclass
class PreparedPair:
    """One pair after decoding and transforms. Where the embedding cache held an input, its
    embedding is carried here instead of its tensor, so a later eviction cannot lose it."""

    image_key: object
    audio_key: object
    image_tensor: np.ndarray | None
    spectrogram: np.ndarray | None
    image_size: tuple[int, int]
    image: str | None
    audio: str | None
    warnings: list[str]
    audio_warnings: list[str]  # the subset about the audio, kept with its embedding in the cache
    preprocess_ms: float
    image_embedding: np.ndarray | None = None
    audio_embedding: np.ndarray | None = None


def _name(x) -> str | None:
    if isinstance(x, ImageBytes):
        return x.name
    return os.fspath(x) if isinstance(x, (str, os.PathLike)) else None


def _digest(buffer) -> str:
    return hashlib.blake2b(buffer, digest_size=16).hexdigest()


def input_key(x) -> object:
    """Identity of an input for the embedding cache: an audio file by path, size and mtime; an
    array by content (image files are keyed by their bytes in prepare_pair)."""
    if isinstance(x, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(x))
        try:
            st = os.stat(path)
        except OSError:
            return ("file", path)  # the loader reports the missing file
        return ("file", path, st.st_size, st.st_mtime_ns)
    if isinstance(x, tuple):
        return ("wave", input_key(x[0]), x[1])
    arr = np.ascontiguousarray(x)
    return ("array", arr.shape, str(arr.dtype), _digest(arr.data))


class EmbeddingCache:
    """A small LRU of (embedding, extra) by input key: a second sound on a seen image skips the
    image's decoding, preprocessing and vision encoder."""

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)


def _prepare_audio(audio, spec: ModelSpec | None = None, exact: bool = False) -> tuple[np.ndarray, str]:
    """A path (read as the family's reader does: for ours its first 10 s), (waveform, rate), or a
    bare waveform at 16 kHz -> the family's audio input. The waveform's dtype and layout rules are
    spectrogram_from_waveform's (waveform_frames); the rate is checked there too, before any
    resampling."""
    audio_spec = spec.audio if spec is not None else None
    if isinstance(audio, (str, os.PathLike)):
        clip = read_audio(audio, audio_spec)
        name = os.fspath(audio)
        return spectrogram_from_waveform(clip.samples, clip.sample_rate, audio_spec, name=name, duration=clip.duration,
                                         exact=exact), name
    elif isinstance(audio, tuple):
        if len(audio) != 2:
            raise SslrtError(f"audio: expected a (waveform, sample_rate) pair, got a tuple of {len(audio)} items")
        (samples, sr), name = audio, "audio"
    else:
        samples, sr, name = audio, 16000, "audio"
    return spectrogram_from_waveform(samples, sr, audio_spec, name=name, exact=exact), name


class InFlight:
    """Preparations shared by key while their pairs are being prepared: an input repeated within
    the batches in flight (one image with many sounds, one sound with many images) is decoded
    and transformed once, before its embedding reaches the cache. Bounded, thread-safe; a failed
    preparation fails every pair that shares it, as it would have alone."""

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, compute):
        with self._lock:
            future = self._items.get(key)
            owner = future is None
            if owner:
                future = self._items[key] = Future()
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
            else:
                self._items.move_to_end(key)
        if owner:
            try:
                future.set_result(compute())
            except BaseException as exc:
                future.set_exception(exc)
                raise
        return future.result()


def _recording(compute):
    """compute() with the warnings it raises: (value, [(message, is an AudioInputWarning)])."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = compute()
    return value, [(str(w.message), issubclass(w.category, AudioInputWarning)) for w in caught]


def image_input(name: str | None, encoded: np.ndarray | None, array, image_spec, exact: bool):
    """An image's model input and size, with the warnings raised: ((tensor, (h, w)), caught).
    `encoded`: a file's bytes (decoded here), else `array` (RGB). Top-level, so that a worker
    process can run it (sslrt.runtime.offload)."""
    def compute():
        rgb = load_image(name, encoded) if encoded is not None else array
        return image_to_tensor(rgb, image_spec, exact=exact), tuple(np.shape(rgb)[:2])

    return _recording(compute)


def audio_input(audio, spec: ModelSpec | None, exact: bool):
    """An audio input's spectrogram and name, with the warnings raised: ((spectrogram, name), caught)."""
    return _recording(lambda: _prepare_audio(audio, spec, exact))


def _run_here(fn, *args):
    return fn(*args)


def prepare_pair(image, audio, image_cache: EmbeddingCache | None = None,
                 audio_cache: EmbeddingCache | None = None, spec: ModelSpec | None = None,
                 in_flight: InFlight | None = None, exact_inputs: bool = False, offload=None) -> PreparedPair:
    """Decode and transform one pair with the family's transforms (`spec`; None: the paper's),
    skipping what the caches already hold (and, with `in_flight`, what another pair being prepared
    shares); silent audio is kept, with a warning recorded. `exact_inputs`: both tensors bit for bit
    as the official code computes them (image_to_tensor(exact=True); a mel front end on torch's
    kernels, which then needs torch). `offload(fn, *args)`: where the decoding and transforms run
    (a sslrt.runtime.offload.ProcessOffload; None: in this thread); keys and caches stay here."""
    t0 = time.perf_counter()
    encoded = None
    if isinstance(image, (str, os.PathLike)):
        # By content, not path: test sets store one picture under several names (IS3: one file per
        # sounding object), and its embedding is then computed once.
        encoded = read_image_bytes(image)
        image_key = ("image file", _digest(encoded.data))
    elif isinstance(image, ImageBytes):  # an upload: the same key as the same file on disk
        encoded = image.encoded()
        image_key = ("image file", _digest(encoded.data))
    else:
        image_key = input_key(image)
    audio_key = input_key(audio)
    once = in_flight.get if in_flight is not None else (lambda key, compute: compute())
    run = offload or _run_here

    cached_image = image_cache.get(image_key) if image_cache else None
    image_caught = []
    if cached_image is not None:
        tensor, size = None, cached_image[1]
    else:
        image_spec = spec.image if spec is not None else None
        array = None if encoded is not None else image
        (tensor, size), image_caught = once(("image", image_key),
                                            lambda: run(image_input, _name(image), encoded, array, image_spec, exact_inputs))
    cached_audio = audio_cache.get(audio_key) if audio_cache else None  # (embedding, its audio warnings)
    if cached_audio is not None:
        spectrogram = None
        audio_caught = [(m, True) for m in cached_audio[1]]
    else:
        (spectrogram, _), audio_caught = once(("audio", audio_key), lambda: run(audio_input, audio, spec, exact_inputs))
    caught = image_caught + audio_caught
    audio_warnings = [m for m, is_audio in audio_caught if is_audio]
    messages = [m for m, is_audio in caught if not is_audio] + audio_warnings
    return PreparedPair(image_key, audio_key, tensor, spectrogram, size, _name(image), _name(audio), messages, list(audio_warnings),
                        (time.perf_counter() - t0) * 1e3,
                        cached_image[0] if cached_image is not None else None,
                        cached_audio[0] if cached_audio is not None else None)


# A GPU engine leaves the host's cores to preparation. In threads, at most this many: a pair holds
# the GIL for part of its preparation (py-spy --gil, 1024 px JPEG + 10 s WAV: 239 of 1999 samples,
# mostly the resize's per-block NumPy calls), and on the 16-core Xeon of an H200 machine threads
# peaked at 8 (preparation alone: 261 / 363 / 265 pairs/s with 4 / 8 / 15; see sslrt.runtime.offload).
MAX_GPU_PREPARE_WORKERS = 8
# Worker processes pay a start (~0.2-0.5 s: Python, NumPy, OpenCV in each), ~70 MB of memory each
# and ~1.3 MB of tensors per pair through a socket: worth it only where threads cannot keep up,
# i.e. beside a GPU engine on a host with cores to spare; at most this many by default.
MIN_CORES_FOR_PROCESSES = 4
MAX_GPU_PREPARE_PROCESSES = 32


def prepare_in_processes(device: str, cores: int) -> bool:
    """Whether `localize_many` prepares pairs in worker processes by default: beside a GPU engine
    with at least MIN_CORES_FOR_PROCESSES cores (end to end on an H200 with 16 cores, torch-cuda
    fp16 at batch 32: threads held it at ~240 pairs/s of the engine's 6,300; see
    benchmarks/gpu/). On a CPU the engine needs the cores itself: threads."""
    return device == "cuda" and cores >= MIN_CORES_FOR_PROCESSES


def prepare_workers(device: str, cores: int, processes: bool = False) -> int:
    """Default preparation threads (or, with `processes`, worker processes) of `localize_many` for
    an engine on `device` ("cpu", "cuda").

    On a CPU the engine needs the cores too: one thread per core, at most four (measured on two
    cores, see localize_many). On a GPU the engine needs one host thread and decoding gets the
    other cores: every one of them in processes, up to MAX_GPU_PREPARE_WORKERS in threads (the
    GIL; ~9-16 ms of CPU per 1024 px pair, so four threads would cap end to end near 250-450
    pairs/s, a tenth of a GPU engine's).
    """
    cores = max(1, int(cores))
    if device != "cuda":
        return min(4, cores)
    if processes:
        return max(1, min(MAX_GPU_PREPARE_PROCESSES, cores - 1))
    return max(1, min(MAX_GPU_PREPARE_WORKERS, cores - 1))


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class Localizer:
    """Engines plus the paper's pre- and postprocessing. Build with `sslrt.load(...)`.

    With encoder graphs (`vision`, `audio`) the heatmap is computed from embeddings, each encoder
    runs once per distinct input of a batch, and recent embeddings are cached; with only the
    fused graph every pair runs whole.
    """

    def __init__(self, engines: dict[str, Engine], model: ResolvedModel | None = None, cache_size: int = 64,
                 spec: ModelSpec | None = None, sounding_threshold: float | None = None, exact_inputs: bool = False):
        if "fused" not in engines and not {"vision", "audio"} <= set(engines):
            raise ValueError("a Localizer needs the fused graph or both encoder graphs")
        self.engines = engines
        self.model = model
        self.spec = spec or (model.spec if model is not None else None)
        if self.spec is None:
            raise ValueError("a Localizer needs the model's spec (give a resolved model or a spec)")
        self.sounding_threshold = sounding_threshold
        self.exact_inputs = exact_inputs  # input tensors bit for bit as the official code's (slower resize)
        self.split = {"vision", "audio"} <= set(engines)
        self.load_ms: float | None = None  # set by open(): resolving the model and opening its engines
        self._first_call = True
        self._offloads: dict = {}  # worker processes of localize_many(processes=True) by count, kept between calls
        self._lane_runs: set = set()  # (stop event, lane pool) of each localize_many running on lanes
        self._lanes_lock = threading.Lock()
        self.image_cache = EmbeddingCache(cache_size) if self.split else None
        self.audio_cache = EmbeddingCache(cache_size) if self.split else None

    @classmethod
    def open(cls, model=None, backend: str = "onnxruntime", precision: str | None = "fp32", threads: int | None = None,
             progress=None, cuda_graph: bool = False, notify=None, reuse_embeddings: bool = True,
             family: str | None = None, sounding_threshold: float | None = None,
             exact_inputs: bool = False) -> "Localizer":
        """`model`: an export directory, a checkpoint, a ResolvedModel or None (the demo model).
        `backend` is a name of the backend table (sslrt.engines.backend_names()) or "auto";
        `notify` receives the line that says what auto chose. With `reuse_embeddings` and encoder
        graphs in the export, the encoders run instead of the fused graph. Exactly the sessions
        that will run are opened."""
        t0 = time.perf_counter()
        check_threads(threads)  # before any export or session: a bad count fails at once
        # The PyTorch reference runs the checkpoint itself: a checkpoint is then not exported.
        reference_only = backend != "auto" and get_row(backend).artifact == "checkpoint"
        resolved = resolve_model(model, progress=progress, family=family, export=not reference_only)
        # The choice (auto, or a backend's default precision) is made from the manifest alone.
        row, precision = resolve_backend(backend, resolved.artifacts, precision, notify=notify)
        graphs = graphs_for(row, resolved.artifacts, precision) if reuse_embeddings else ("fused",)
        wanted = ("vision", "audio") if {"vision", "audio"} <= set(graphs) else ("fused",)
        engines: dict[str, Engine] = {}
        try:
            for graph in wanted:
                engines[graph] = create_engine(row.name, resolved, precision=precision, graph=graph, threads=threads,
                                               cuda_graph=cuda_graph)
        except BaseException:
            for engine in engines.values():
                engine.close()
            raise
        localizer = cls(engines, resolved, sounding_threshold=sounding_threshold, exact_inputs=exact_inputs)
        localizer.load_ms = (time.perf_counter() - t0) * 1e3
        return localizer

    @property
    def engine(self) -> Engine:
        """The engine that names the backend and precision (all graphs share them)."""
        return next(iter(self.engines.values()))

    @property
    def lanes(self) -> int:
        """Batches that may run at once, each on its own share of the cores (Engine.lanes; with
        encoder graphs, lane i of each). An engine object without the attribute has one."""
        return min(getattr(engine, "lanes", 1) for engine in self.engines.values())

    def describe(self) -> str:
        graphs = "encoders + cosine map" if self.split else "fused graph"
        return f"{self.engine.describe()} ({graphs})"

    def localize(self, image: ImageInput, audio: AudioInput) -> Localization:
        """One pair; `image` is a path, an RGB uint8 array or an ImageBytes (an encoded file in memory),
        `audio` a path, a 16 kHz waveform or (waveform, rate)."""
        return next(self.localize_many([(image, audio)], batch_size=1, workers=0))

    def _run(self, graph: str, feeds: dict, lane: int | None) -> dict:
        engine = self.engines[graph]
        return engine.run(feeds) if lane is None else engine.run_lane(feeds, lane)

    def _heatmaps(self, batch: list[PreparedPair], lane: int | None = None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(heatmaps, image embeddings, audio embeddings); the embeddings are None on the fused path."""
        if not self.split:
            feeds = {INPUT_IMAGE: np.stack([p.image_tensor for p in batch]), INPUT_AUDIO: np.stack([p.spectrogram for p in batch])}
            return self._run("fused", feeds, lane)[OUTPUT_HEATMAP], None, None
        image_emb = self._embed(batch, "image", self.image_cache, "vision", INPUT_IMAGE, OUTPUT_IMAGE_EMBEDDING,
                                lambda p: p.image_size, lane)
        audio_emb = self._embed(batch, "audio", self.audio_cache, "audio", INPUT_AUDIO, OUTPUT_AUDIO_EMBEDDING,
                                lambda p: tuple(p.audio_warnings), lane)
        v = np.stack([image_emb[p.image_key] for p in batch])
        a = np.stack([audio_emb[p.audio_key] for p in batch])
        return cosine_map(v, a, self.spec.heatmap_scale), v, a

    def _embed(self, batch, kind, cache, graph, input_name, output_name, extra, lane: int | None = None) -> dict:
        """Embeddings of the batch's distinct `kind` ("image" or "audio") inputs: those carried from
        the cache at preparation used as they are, the others run once each and cached."""
        tensor_attr = "image_tensor" if kind == "image" else "spectrogram"
        found, todo = {}, {}
        for p in batch:
            key = getattr(p, f"{kind}_key")
            if key in found or key in todo:
                continue
            carried = getattr(p, f"{kind}_embedding")
            if carried is not None:
                found[key] = carried
            else:
                todo[key] = p
        if todo:
            out = self._run(graph, {input_name: np.stack([getattr(p, tensor_attr) for p in todo.values()])}, lane)[output_name]
            for (key, p), emb in zip(todo.items(), out):
                found[key] = emb
                cache.put(key, (emb, extra(p)))
        return found

    def prepare(self, image, audio, in_flight: InFlight | None = None, offload=None) -> PreparedPair:
        """One pair decoded and transformed for this model: its family's transforms, its embedding
        caches, its exactness (every caller of the engine prepares pairs through here)."""
        return prepare_pair(image, audio, self.image_cache, self.audio_cache, self.spec, in_flight, self.exact_inputs,
                            offload)

    def _process_offload(self, processes: int):
        """The worker processes for `processes` workers, kept for the next call (a pool of another
        size stays too: a suspended localize_many may still use it; close() stops them all)."""
        from sslrt.runtime.offload import ProcessOffload

        if processes not in self._offloads:
            self._offloads[processes] = ProcessOffload(processes)
        return self._offloads[processes]

    def run_prepared(self, batch: list[PreparedPair], keep_embeddings: bool = False) -> list[Localization]:
        return self._finish(batch, self.infer(batch), keep_embeddings)

    def infer(self, batch: list[PreparedPair], lane: int | None = None) -> tuple:
        """The engine's part of a batch: (heatmaps, image embeddings, audio embeddings, inference ms
        per pair). `lane`: on that lane of the engines alone (Engine.run_lane; None: run())."""
        t0 = time.perf_counter()
        heatmaps, v, a = self._heatmaps(batch, lane)
        return heatmaps, v, a, (time.perf_counter() - t0) * 1e3 / len(batch)

    def _mark_first_call(self, results: list[Localization], load: bool = True) -> None:
        """Flag the results whose timings include the first call's costs (lazy compiles, warm-up);
        the first batch's first result also carries the Localizer's load time."""
        for r in results:
            r.timings_ms["first_call"] = True
        if load and results and self.load_ms is not None:
            results[0].timings_ms["load"] = self.load_ms

    def _finish(self, batch: list[PreparedPair], inferred: tuple, keep_embeddings: bool = False,
                mark_first: bool = True) -> list[Localization]:
        """Heatmaps -> results (peak, box, score, sounding): pure numpy and OpenCV, so it may run in
        another thread while the engine runs the next batch."""
        heatmaps, v, a, inference_ms = inferred
        t1 = time.perf_counter()
        if not np.isfinite(heatmaps).all():
            raise SslrtError("the engine produced NaN or infinite heatmaps: the model's weights or engine are broken")
        located = localize_heatmaps(heatmaps, [p.image_size for p in batch], self.spec, self.sounding_threshold)
        t2 = time.perf_counter()
        n = len(batch)
        engine = self.engine
        results = [Localization(
            heatmap=h.reshape(h.shape[-2:]), score=loc["score"], peak=loc["peak"], bbox=loc["bbox"],
            image_size=p.image_size, backend=engine.backend, precision=engine.precision,
            timings_ms={"preprocess": p.preprocess_ms, "inference": inference_ms, "postprocess": (t2 - t1) * 1e3 / n},
            image=p.image, audio=p.audio, warnings=p.warnings, family=self.spec.name, heatmap_units=self.spec.heatmap_units,
            sounding=loc["sounding"], sounding_value=loc["sounding_value"], sounding_threshold=loc["sounding_threshold"])
            for p, h, loc in zip(batch, heatmaps, located)]
        if mark_first and self._first_call:
            self._first_call = False
            self._mark_first_call(results)
        if keep_embeddings and v is not None:
            for r, vi, ai in zip(results, v, a):
                r.image_embedding, r.audio_embedding = vi, ai
        return results

    def localize_many(self, pairs: Iterable[tuple], batch_size: int = 8, workers: int | None = None,
                      keep_embeddings: bool = False, processes: bool | None = None) -> Iterator[Localization]:
        """Pairs in, results out in the same order, `batch_size` pairs per engine call.

        With `workers` > 0, decoding and preprocessing of the next batches run in a thread pool
        while the engine runs the current one (OpenCV, NumPy and the engines release the GIL);
        None: `prepare_workers` for the engine's device (on a CPU, one per core, at most four).
        `processes`: the decoding and transforms run in `workers` worker processes instead, the
        threads only reading files, keying the caches and waiting (sslrt.runtime.offload: the
        GIL stops threads from feeding a GPU); None: `prepare_in_processes` for the engine's
        device (a GPU engine on a host of 4 cores or more). The processes stay until close().
        Two workers on two cores, although the engine uses both cores too, keep the next batch
        ready: end to end at batch 8 (1024 px JPEG + 10 s
        WAV, full width) went from 87% to 90-93% of engine-only throughput in fp32 and from 77% to
        82% in INT8 (one worker). An input repeated among the pairs in flight is prepared once.
        The heatmaps of one batch become results (peak, box, score) in another thread while the
        engine runs the next batch (~1 ms per pair of NumPy/OpenCV that left the engine idle), so a
        batch's results come out once the next batch has run: end to end at batch 8, INT8, full
        width, 0.8-2.9% more pairs/s (interleaved A/B, 360 and 1024 px, both CPU backends); more
        to gain where the host work is a bigger share (a GPU engine; not measured here).

        On an engine of several lanes (Engine.lanes: the CPU backends on two cores or more) each
        batch runs whole on one lane, `lanes` batches at once, and is finished in its lane's
        thread (_localize_in_lanes), instead of one batch at a time split across the lanes: a
        split batch ends when its slowest part does, and while a preparation thread holds a core
        the other lane's core waits at that barrier (measured on two cores: 60-150 ms of one core
        per 64-pair pass at 360 px, INT8, ~5% of its time). End to end at batch 8, full width,
        against split batches in the same process, interleaved (benchmarks/cpu/lanes_ab.md):
        1.01-1.04x pairs/s in all eight rows (two backends, INT8 and fp32, 1024 and 360 px); e2e /
        inference alone, INT8 1024 px: ONNX Runtime 80.6% -> 83.7%, OpenVINO 78.3% -> 79.0% (its
        CPU bound there ~83%); 360 px: 89.2% -> 91.0% and 86.3% -> 88.3%. Heatmaps bit-identical.
        A result's "inference" time is then its batch's on one lane (about twice the split
        batch's). One batch (a sized input of at most `batch_size` pairs) runs split, as before.

        Where the engine keeps every core busy (the CPU backends at batch 8), preparation cannot
        hide behind inference: a preparation thread that takes a core from one of the engine's
        threads stalls the other at the kernel's end, so end to end approaches engine time plus
        preparation CPU / cores (`sslrt bench`'s CPU bound), whatever the schedule. Measured and
        not taken (interleaved A/B, 64 pairs of 1024 px, INT8 and fp32, both CPU backends): the
        preparation threads at nice 19 or SCHED_IDLE (the engine then runs at its engine-only
        speed and the preparation between batches: within +-2%), and ONNX Runtime's dynamically
        sized parallel blocks (session.dynamic_block_base 4 and 16: within 1%).
        """
        check_batch_size(batch_size)
        if workers != 0:  # (localize(), one pair in this thread, reads no core count)
            device, cores = getattr(self.engine, "device", "cpu"), usable_cores()
            if processes is None:
                # one pair overlaps nothing: a worker's start (~0.2-0.5 s) would only delay it
                processes = prepare_in_processes(device, cores) and not (isinstance(pairs, Sized) and len(pairs) <= 1)
            if workers is None:
                workers = prepare_workers(device, cores, processes)
        offload = self._process_offload(workers) if processes and workers > 0 else None
        lookahead = 2  # batches in flight beyond the one running: bounds memory on long runs
        batches = _batches(pairs, batch_size)
        lanes = self.lanes if workers > 0 else 1
        if lanes > 1:  # one batch has nothing to run beside it (and a lane may open a session of its own)
            head = list(itertools.islice(batches, 2))
            batches = itertools.chain(head, batches)
            lanes = lanes if len(head) > 1 else 1
        # about the pairs in flight
        in_flight = InFlight(capacity=max(8, batch_size * (lookahead + 1 + (lanes if lanes > 1 else 0))))
        prepare = lambda pair: self.prepare(pair[0], pair[1], in_flight, offload)  # noqa: E731
        if workers <= 0:
            for batch in batches:
                yield from self.run_prepared([prepare(pair) for pair in batch], keep_embeddings)
            return
        if lanes > 1:
            yield from self._localize_in_lanes(batches, prepare, workers, lanes, lookahead, keep_embeddings)
            return
        # Two pools: preparation (`workers` threads, up to `lookahead` batches ahead) and finishing
        # (one thread: heatmaps -> results of batch k while the engine runs batch k+1; a queue of
        # its own, so that it never waits behind the next batches' preparation).
        with ThreadPoolExecutor(max_workers=workers) as pool, ThreadPoolExecutor(max_workers=1) as finisher:
            pending: deque = deque()
            finishing = None  # the previous batch's results, being computed

            def run(prepared_futures):
                nonlocal finishing
                batch = [f.result() for f in prepared_futures]
                inferred = self.infer(batch)
                done, finishing = finishing, finisher.submit(self._finish, batch, inferred, keep_embeddings)
                return done.result() if done is not None else []

            for batch in batches:
                pending.append([pool.submit(prepare, pair) for pair in batch])
                if len(pending) > lookahead:
                    yield from run(pending.popleft())
            while pending:
                yield from run(pending.popleft())
            if finishing is not None:
                yield from finishing.result()

    def _localize_in_lanes(self, batches: Iterator[list], prepare, workers: int, lanes: int, lookahead: int,
                           keep_embeddings: bool) -> Iterator[Localization]:
        """localize_many on an engine of several lanes: each batch runs whole on one lane and is
        finished (results) in that lane's thread, `lanes` batches at once and one more queued for
        the first lane to come free; results in order. A batch split across the lanes ends when
        its slowest part does, and a preparation thread that took a core from that part left the
        other lane idle meanwhile; lanes wait for nobody.

        The lanes run the engines while this generator waits at a `yield`: close() stops them (the
        batches not yet on a lane are dropped, those running end) before it closes the engines,
        which a lane would otherwise load again."""
        stop = threading.Event()
        free = queue.SimpleQueue()
        for lane in range(lanes):
            free.put(lane)
        first_batches = lanes if self._first_call else 0  # each lane's first call pays its start
        self._first_call = False

        def run_on_a_lane(prepared_futures):
            batch = [f.result() for f in prepared_futures]
            if stop.is_set():
                raise SslrtError("the Localizer was closed while its batches ran")
            lane = free.get()
            try:
                inferred = self.infer(batch, lane)
            finally:
                free.put(lane)
            return self._finish(batch, inferred, keep_embeddings, mark_first=False)

        with ThreadPoolExecutor(max_workers=workers) as pool, \
                ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="sslrt-lane") as lane_pool:
            run = (stop, lane_pool)
            with self._lanes_lock:
                self._lane_runs.add(run)
            pending: deque = deque()  # prepared futures of batches not yet handed to a lane
            running: deque = deque()  # futures of the batches' results, in order
            done = 0

            def results_beyond(limit: int):
                nonlocal done
                while len(running) > limit:
                    results = running.popleft().result()
                    if done < first_batches:
                        self._mark_first_call(results, load=done == 0)
                    done += 1
                    yield from results

            try:
                for batch in batches:
                    pending.append([pool.submit(prepare, pair) for pair in batch])
                    if len(pending) > lookahead:
                        running.append(lane_pool.submit(run_on_a_lane, pending.popleft()))
                        yield from results_beyond(lanes)
                while pending:
                    running.append(lane_pool.submit(run_on_a_lane, pending.popleft()))
                    yield from results_beyond(lanes)
                yield from results_beyond(0)
            finally:  # an error, an interruption or a consumer that stopped: start nothing more
                for future in running:
                    future.cancel()
                for futures in pending:
                    for future in futures:
                        future.cancel()
                with self._lanes_lock:
                    self._lane_runs.discard(run)

    def close(self) -> None:
        # first the lanes of a localize_many that was left suspended (its consumer raised or
        # stopped without closing it): they must not run, or load, an engine closed below
        with self._lanes_lock:
            runs, self._lane_runs = list(self._lane_runs), set()
        for stop, lane_pool in runs:
            stop.set()
            lane_pool.shutdown(wait=True, cancel_futures=True)
        offloads, self._offloads = self._offloads, {}
        for offload in offloads.values():
            offload.close()
        for engine in self.engines.values():
            engine.close()

    def __enter__(self) -> "Localizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
