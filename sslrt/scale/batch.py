"""Data-set-scale localization on Ray Data: the same results as `Localizer.localize_many`.

    pairs (CSV lines / Parquet rows, read by the cluster, never held by the driver)
      -> _prepare_batch: key, skip finished keys, decode + preprocess (sslrt's own prepare_pair);
         a bad row becomes an `error`, not a failure
      -> _LocalizeActor (ActorPoolStrategy(size=actors)): one Localizer per actor, the same
         run_prepared as the local path
         (CPU backend: both steps in one actor, _PrepareAndLocalizeActor; cuda backend:
         _prepare_batch as CPU tasks feeding one GPU per actor)
      -> [map_batches(_render_overlays): CPU tasks, where overlays are asked for]
      -> the driver streams the rows into shards (sslrt.scale.shards), published atomically

`run_pairs` is `sslrt run --pairs FILE --ray`; `RayLocalizer` is a Localizer whose localize_many
runs on the cluster (in order), which `sslrt eval --ray` hands to the unchanged evaluation.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from sslrt.errors import SslrtError, first_line
from sslrt.scale import connect, require_ray
from sslrt.scale.shards import FORMATS, ShardWriter, finished_keys

RUN_INFO = "run.json"
SHARDS = "shards"


def pair_key(image: str, audio: str) -> str:
    """The identity of a pair without a `key` column: a hash of its two resolved paths."""
    return hashlib.blake2b(f"{image}\n{audio}".encode(), digest_size=16).hexdigest()


@dataclass
class FailedPair:
    """A pair the cluster could not localize (missing or corrupt file, ...), with its reason."""

    image: str | None
    audio: str | None
    error: str
    key: str = ""


# --- the tasks and the actor (run on the cluster) ------------------------------------------------


def _normalize(batch: dict, kind: str, base: str) -> tuple[list[str], list[str], list[str], list[str]]:
    """A batch of input rows -> (keys, images, audios, errors); header and comment lines dropped."""
    keys, images, audios, errors = [], [], [], []
    if kind == "csv":  # the lines of a `--pairs` CSV: the local reader's format (image,audio[,...])
        for line in batch["text"]:
            line = str(line)
            row = [c.strip() for c in next(csv.reader([line]), [])]
            if not row or not any(row) or row[0].startswith("#") or [c.lower() for c in row[:2]] == ["image", "audio"]:
                continue
            if len(row) < 2 or not row[0] or not row[1]:
                keys.append(pair_key(line, ""))
                images.append(row[0] if row else "")
                audios.append("")
                errors.append(f"expected 'image,audio', got {line!r}")
                continue
            image, audio = (os.path.join(base, c) for c in row[:2])
            keys.append(pair_key(image, audio))
            images.append(image)
            audios.append(audio)
            errors.append("")
        return keys, images, audios, errors
    given = batch.get("key")
    for i, (image, audio) in enumerate(zip(batch["image"], batch["audio"])):
        image = "" if image is None else str(image)
        audio = "" if audio is None else str(audio)
        image = os.path.join(base, image) if image and base else image
        audio = os.path.join(base, audio) if audio and base else audio
        keys.append(str(given[i]) if given is not None else pair_key(image, audio))
        images.append(image)
        audios.append(audio)
        errors.append("" if image and audio else "the row has no image or no audio path")
    return keys, images, audios, errors


# Pairs per Ray Data block, rounded down to whole engine batches (at least one): see _pipeline.
ROWS_PER_BLOCK = 32


def _prepare_rows(batch: dict, kind: str, base: str, done: np.ndarray, spec, exact_inputs: bool):
    """Decode and preprocess the pairs of a batch not finished yet (sslrt's prepare_pair, so the
    tensors equal the local path's: the family's transforms, `spec`): (keys, images, audios,
    errors, {row: PreparedPair}). A pair that fails keeps its row, with the error."""
    from sslrt.runtime.pipeline import prepare_pair

    keys, images, audios, errors = _normalize(batch, kind, base)
    if len(done) and keys:
        fresh = ~np.isin(np.array(keys), done)
        keep = [i for i in range(len(keys)) if fresh[i]]
        keys, images, audios, errors = ([x[i] for i in keep] for x in (keys, images, audios, errors))
    prepared = {}
    for i in range(len(keys)):
        if errors[i]:
            continue
        try:
            prepared[i] = prepare_pair(images[i], audios[i], spec=spec, exact_inputs=exact_inputs)
        except Exception as exc:  # noqa: BLE001  a bad row is reported, never the end of the job
            errors[i] = first_line(exc)
    return keys, images, audios, errors, prepared


def _prepare_batch(batch: dict, kind: str, base: str, done: np.ndarray, shapes: dict, spec, exact_inputs: bool) -> dict:
    """CPU task (feeding GPU actors): `_prepare_rows` as columns, the tensors stacked."""
    from sslrt.graphs import INPUT_AUDIO, INPUT_IMAGE

    keys, images, audios, errors, prepared = _prepare_rows(batch, kind, base, done, spec, exact_inputs)
    n = len(keys)
    image_tensor = np.zeros((n, *shapes[INPUT_IMAGE]), np.float32)
    spectrogram = np.zeros((n, *shapes[INPUT_AUDIO]), np.float32)
    heights, widths = np.zeros(n, np.int64), np.zeros(n, np.int64)
    image_keys, audio_keys, warnings, audio_warnings = [""] * n, [""] * n, ["[]"] * n, ["[]"] * n
    preprocess_ms = np.zeros(n, np.float64)
    for i, p in prepared.items():
        image_tensor[i], spectrogram[i] = p.image_tensor, p.spectrogram
        heights[i], widths[i] = p.image_size
        image_keys[i], audio_keys[i] = repr(p.image_key), repr(p.audio_key)
        warnings[i], audio_warnings[i] = json.dumps(p.warnings), json.dumps(p.audio_warnings)
        preprocess_ms[i] = p.preprocess_ms
    text = lambda xs: np.array(xs, dtype=object)  # noqa: E731
    return {"key": text(keys), "image": text(images), "audio": text(audios), "error": text(errors),
            "image_key": text(image_keys), "audio_key": text(audio_keys), "warnings": text(warnings),
            "audio_warnings": text(audio_warnings), "image_height": heights, "image_width": widths, "preprocess_ms": preprocess_ms,
            "image_tensor": image_tensor, "spectrogram": spectrogram}


class _LocalizeActor:
    """One Localizer per actor: the engine is opened once and runs every batch the pool sends."""

    def __init__(self, model: str, backend: str, precision: str, threads: int | None, reuse_embeddings: bool,
                 sounding_threshold: float | None, keep_embeddings: bool, batch_size: int):
        from sslrt.runtime.pipeline import Localizer
        from sslrt.runtime.allocator import keep_freed_memory

        keep_freed_memory()  # this actor's process is sslrt's
        self.localizer = Localizer.open(model, backend=backend, precision=precision, threads=threads,
                                        reuse_embeddings=reuse_embeddings, sounding_threshold=sounding_threshold)
        self.keep_embeddings = keep_embeddings
        self.batch_size = batch_size  # pairs per engine call; a Ray block may hold several calls

    def __call__(self, batch: dict) -> dict:
        """A batch of `_prepare_batch` columns -> result rows."""
        from sslrt.runtime.pipeline import PreparedPair

        errors = [str(e) for e in batch["error"]]
        prepared = {i: PreparedPair(
            image_key=("image", str(batch["image_key"][i])), audio_key=("audio", str(batch["audio_key"][i])),
            image_tensor=np.asarray(batch["image_tensor"][i]), spectrogram=np.asarray(batch["spectrogram"][i]),
            image_size=(int(batch["image_height"][i]), int(batch["image_width"][i])),
            image=str(batch["image"][i]), audio=str(batch["audio"][i]),
            warnings=json.loads(batch["warnings"][i]), audio_warnings=json.loads(batch["audio_warnings"][i]),
            preprocess_ms=float(batch["preprocess_ms"][i])) for i in range(len(errors)) if not errors[i]}
        return self._localize(batch["key"], batch["image"], batch["audio"], errors, prepared)

    def _localize(self, keys, images, audios, errors: list[str], prepared: dict) -> dict:
        """The prepared rows through the engine; the result rows (a pickled Localization, or the error)."""
        results = [b""] * len(errors)
        rows = list(prepared)
        for lo in range(0, len(rows), self.batch_size):
            chunk = rows[lo:lo + self.batch_size]
            try:
                located = self.localizer.run_prepared([prepared[i] for i in chunk], keep_embeddings=self.keep_embeddings)
            except Exception as exc:  # noqa: BLE001  the batch's pairs are reported, the job goes on
                for i in chunk:
                    errors[i] = first_line(exc)
            else:
                for i, r in zip(chunk, located):
                    results[i] = pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL)
        text = lambda xs: np.array(xs, dtype=object)  # noqa: E731
        return {"key": text(keys), "image": text(images), "audio": text(audios), "error": text(errors),
                "result": text(results)}


class _PrepareAndLocalizeActor(_LocalizeActor):
    """CPU backends: an actor that prepares its batches itself, then runs them, the prepared pairs
    handed over as they are. Even when Ray Data fuses a preprocessing task into the actor's
    process, tensors between two operators become an Arrow block and back (measured: ~5 ms of CPU
    per pair of 1024 px JPEG + 10 s WAV)."""

    def __init__(self, prepare: dict, **options):
        super().__init__(**options)
        self.prepare = prepare

    def __call__(self, batch: dict) -> dict:
        return self._localize(*_prepare_rows(batch, **self.prepare))


def overlay_name(image: str, audio: str) -> str:
    """The overlay file of a pair: the local `--save-dir` naming."""
    return f"{Path(image).stem}__{Path(audio).stem}.png"


def _render_overlays(batch: dict, save_dir: str) -> dict:
    """CPU task: the overlay PNG of every localized pair of the batch (written atomically)."""
    from sslrt.preprocess import load_image
    from sslrt.runtime.overlay import render_overlay, save_png

    paths = [""] * len(batch["key"])
    for i, blob in enumerate(batch["result"]):
        if not blob:
            continue
        r = pickle.loads(blob)
        target = os.path.join(save_dir, overlay_name(r.image, r.audio))
        try:
            save_png(target, render_overlay(load_image(r.image), r.heatmap, r.bbox, r.peak, sounding=r.sounding))
            paths[i] = target
        except Exception as exc:  # noqa: BLE001
            batch["error"][i] = f"overlay: {first_line(exc)}"
    return {**batch, "overlay": np.array(paths, dtype=object)}


# --- the driver ----------------------------------------------------------------------------------


@dataclass
class _Plan:
    """What every actor opens: the resolved export, its backend row and precision."""

    model_dir: str
    backend: str
    precision: str
    device: str
    spec: object
    split: bool
    manifest_sha256: str


def _plan(model, backend: str, precision: str | None, family: str | None, reuse_embeddings: bool, progress=None,
          notify=None) -> _Plan:
    from sslrt.engines import get_row, graphs_for, resolve_backend
    from sslrt.resolve import resolve_model
    from sslrt.store.manifest import MANIFEST, sha256_file

    resolved = resolve_model(model, progress=progress, family=family)  # a checkpoint is exported once, here
    row, precision = resolve_backend(backend, resolved.artifacts, precision, notify=notify)
    graphs = graphs_for(row, resolved.artifacts, precision) if reuse_embeddings else ("fused",)
    return _Plan(resolved.directory, row.name, precision, get_row(row.name).device, resolved.spec,
                 {"vision", "audio"} <= set(graphs), sha256_file(os.path.join(resolved.directory, MANIFEST)))


def _pipeline(ds, plan: _Plan, kind: str, base: str, done: np.ndarray, *, actors: int, actor_cpus: float | None,
              batch_size: int, threads: int | None, reuse_embeddings: bool, sounding_threshold: float | None,
              keep_embeddings: bool = False, save_dir: str | None = None, exact_inputs: bool = False):
    import ray
    import ray.data

    from sslrt.engines.base import check_batch_size
    from sslrt.graphs import input_shapes

    if actors < 1:
        raise SslrtError("--ray-actors must be >= 1")
    gpu = plan.device == "cuda"
    cpus = float(ray.cluster_resources().get("CPU", 0))
    if actor_cpus is None:  # leave one CPU to the reading tasks, share the rest among the actors
        actor_cpus = 1.0 if gpu else max(0.25, min(1.0, (cpus - 1) / actors))
    if actors * actor_cpus > cpus - 1:
        raise SslrtError(f"{actors} actor(s) of {actor_cpus:g} CPU leave no CPU for reading the pairs on this cluster "
                         f"of {cpus:g} CPUs: give fewer --ray-actors")
    if threads is None and not gpu:
        threads = max(1, int(actor_cpus))  # the engine uses the cores its actor reserved
    # Blocks of a few engine batches: small enough that the pairs of one file spread over the
    # actors, large enough that Ray Data's per-block work (scheduling in the driver, the object
    # store) is paid once per several batches.
    check_batch_size(batch_size)
    block_rows = batch_size * max(1, ROWS_PER_BLOCK // batch_size)
    ds = ds.repartition(target_num_rows_per_block=block_rows)
    prepare = {"kind": kind, "base": base, "done": done, "spec": plan.spec, "exact_inputs": exact_inputs}
    engine = {"model": plan.model_dir, "backend": plan.backend, "precision": plan.precision, "threads": threads,
              "reuse_embeddings": reuse_embeddings, "sounding_threshold": sounding_threshold,
              "keep_embeddings": keep_embeddings, "batch_size": batch_size}
    pool = ray.data.ActorPoolStrategy(size=actors)
    if gpu:
        # CPU tasks decode and feed the GPU actors (one GPU each)
        ds = ds.map_batches(_prepare_batch, batch_size=block_rows, batch_format="numpy", num_cpus=1.0,
                            fn_kwargs={**prepare, "shapes": input_shapes(plan.spec)})
        ds = ds.map_batches(_LocalizeActor, batch_size=block_rows, batch_format="numpy", compute=pool,
                            num_cpus=actor_cpus, num_gpus=1, fn_constructor_kwargs=engine)
    else:
        # `actors` processes decode and infer side by side; no tensors between operators
        ds = ds.map_batches(_PrepareAndLocalizeActor, batch_size=block_rows, batch_format="numpy", compute=pool,
                            num_cpus=actor_cpus, fn_constructor_kwargs={"prepare": prepare, **engine})
    if save_dir is not None:
        ds = ds.map_batches(_render_overlays, batch_size=block_rows, batch_format="numpy", num_cpus=1,
                            fn_kwargs={"save_dir": os.path.abspath(save_dir)})
    return ds


def _quiet_data_context():
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # sslrt shows its own progress; Ray's bars would garble stderr
    ctx.print_on_execution_start = False
    return ctx


def read_pairs_dataset(path: str | os.PathLike):
    """A pairs file as a Ray dataset, read by the cluster: a CSV in the `--pairs` format (image,audio
    per line, optional header, `#` comments; paths relative to the file), or Parquet (a file or a
    folder of files) with columns `image`, `audio` and optionally `key`. Returns (dataset, kind, base)."""
    import ray.data

    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(path):
        raise SslrtError(f"pairs file not found: {path}")
    if os.path.isdir(path) or path.endswith(".parquet"):
        import pyarrow.parquet as pq

        first = path if os.path.isfile(path) else next((str(p) for p in sorted(Path(path).rglob("*.parquet"))), None)
        if first is None:
            raise SslrtError(f"no Parquet files in {path}")
        names = set(pq.read_schema(first).names)
        if not {"image", "audio"} <= names:
            raise SslrtError(f"{first}: a pairs Parquet file needs columns 'image' and 'audio' (has {', '.join(sorted(names))})")
        columns = ["image", "audio"] + (["key"] if "key" in names else [])
        base = path if os.path.isdir(path) else os.path.dirname(path)
        return ray.data.read_parquet(path).select_columns(columns), "table", base
    return ray.data.read_text(path), "csv", os.path.dirname(path)


def _check_run_info(out: Path, info: dict) -> None:
    from sslrt.store.atomic import write_json_atomic

    path = out / RUN_INFO
    if path.is_file():
        earlier = json.loads(path.read_text())
        if earlier != info:
            differs = ", ".join(f"{k}: {earlier.get(k)!r} there, {info.get(k)!r} now"
                                for k in sorted(set(earlier) | set(info)) if earlier.get(k) != info.get(k))
            raise SslrtError(f"{out} holds results of another configuration ({differs}): use another --output")
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(str(path), info)


def run_pairs(pairs_file: str | os.PathLike, output: str | os.PathLike, model=None, backend: str = "onnxruntime",
              precision: str | None = None, *, address: str | None = None, actors: int = 1, actor_cpus: float | None = None,
              batch_size: int = 8, threads: int | None = None, shard_format: str = "parquet",
              save_dir: str | os.PathLike | None = None, family: str | None = None, sounding_threshold: float | None = None,
              reuse_embeddings: bool = True, shard_rows: int = 1000, shard_seconds: float = 10.0, progress=None,
              on_error=None, on_result=None, notify=None, exact_inputs: bool = False) -> dict:
    """Localize every pair of `pairs_file` on a Ray cluster into result shards under `output`.

    Pairs whose results already exist in `output` are skipped (a rerun after an interruption
    computes only the rest); a pair that fails is a row with its `error`, reported to `on_error(key,
    image, audio, error)`. Returns the summary (also written to `output/summary.json`)."""
    require_ray("data")
    if shard_format not in FORMATS:
        raise SslrtError(f"shard format must be one of {', '.join(FORMATS)}, got {shard_format!r}")
    if batch_size < 1:
        raise SslrtError("--batch-size must be >= 1")
    if save_dir is not None and not os.path.isdir(save_dir):
        raise SslrtError(f"--save-dir folder does not exist: {save_dir}")
    out = Path(output)
    plan = _plan(model, backend, precision, family, reuse_embeddings, progress=progress, notify=notify)
    info = {"model": plan.model_dir, "manifest_sha256": plan.manifest_sha256, "family": plan.spec.name,
            "backend": plan.backend, "precision": plan.precision, "sounding_threshold": sounding_threshold,
            "reuse_embeddings": reuse_embeddings}
    if exact_inputs:  # only then: run.json files of earlier versions stay valid for reruns
        info["exact_inputs"] = True
    _check_run_info(out, info)
    shards = out / SHARDS
    done_keys = finished_keys(shards)
    done = np.array(sorted(done_keys), dtype=str)
    connect(address)
    _quiet_data_context()
    ds, kind, base = read_pairs_dataset(pairs_file)
    ds = _pipeline(ds, plan, kind, base, done, actors=actors, actor_cpus=actor_cpus, batch_size=batch_size,
                   threads=threads, reuse_embeddings=reuse_embeddings, sounding_threshold=sounding_threshold,
                   save_dir=str(save_dir) if save_dir is not None else None, exact_inputs=exact_inputs)
    writer = ShardWriter(shards, shard_format, rows=shard_rows, seconds=shard_seconds)
    computed, failed, examples = 0, 0, []
    t0 = time.perf_counter()
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            overlays = batch.get("overlay")
            for i, key in enumerate(batch["key"]):
                error = str(batch["error"][i]) or None
                image, audio = str(batch["image"][i]), str(batch["audio"][i])
                if error is None:
                    row = pickle.loads(batch["result"][i]).to_dict()
                    computed += 1
                else:
                    row = {"image": image, "audio": audio}
                    failed += 1
                    if len(examples) < 10:
                        examples.append({"key": str(key), "image": image, "audio": audio, "error": error})
                    if on_error:
                        on_error(str(key), image, audio, error)
                row.update(key=str(key), error=error, overlay=(str(overlays[i]) or None) if overlays is not None else None)
                writer.add(row)
                if on_result:
                    on_result(row)
    finally:
        writer.close()
    seconds = time.perf_counter() - t0
    summary = {**info, "pairs_file": os.path.abspath(os.fspath(pairs_file)), "output": str(out.resolve()),
               "shards": str(shards.resolve()), "shard_format": shard_format, "shards_written": len(writer.written),
               "computed": computed, "errors": failed, "skipped": len(done_keys), "error_examples": examples,
               "actors": actors, "batch_size": batch_size, "seconds": seconds,
               "pairs_per_second": (computed + failed) / seconds if seconds > 0 else 0.0}
    from sslrt.store.atomic import write_json_atomic

    write_json_atomic(str(out / "summary.json"), summary)
    return summary


class _EngineInfo:
    def __init__(self, backend: str, precision: str, device: str):
        self.backend, self.precision, self.device = backend, precision, device

    def describe(self) -> str:
        return f"{self.backend} {self.precision} on {self.device}"


class RayLocalizer:
    """A Localizer whose `localize_many` runs on a Ray cluster: decoding and preprocessing in CPU
    tasks, inference in an actor pool; results come back in the order of the pairs. Where a pair
    fails, a `FailedPair` takes its place (with `errors="yield"`) or the call raises (`"raise"`)."""

    def __init__(self, model=None, backend: str = "onnxruntime", precision: str | None = "fp32", threads: int | None = None,
                 *, address: str | None = None, actors: int = 1, actor_cpus: float | None = None, family: str | None = None,
                 sounding_threshold: float | None = None, reuse_embeddings: bool = True, progress=None, notify=None,
                 errors: str = "yield", exact_inputs: bool = False):
        require_ray("data")
        self.plan = _plan(model, backend, precision, family, reuse_embeddings, progress=progress, notify=notify)
        self.spec = self.plan.spec
        self.split = self.plan.split
        self.engine = _EngineInfo(self.plan.backend, self.plan.precision, self.plan.device)
        self.options = {"actors": actors, "actor_cpus": actor_cpus, "threads": threads, "reuse_embeddings": reuse_embeddings,
                        "sounding_threshold": sounding_threshold, "exact_inputs": exact_inputs}
        self.errors = errors
        connect(address)

    def describe(self) -> str:
        return f"{self.engine.describe()} on Ray ({self.options['actors']} actor(s))"

    def localize_many(self, pairs: Iterable[tuple], batch_size: int = 8, workers: int = 1,
                      keep_embeddings: bool = False) -> Iterator:
        """Pairs of paths in, Localizations (or FailedPairs) out, in the same order."""
        import ray.data

        items = [{"image": os.path.abspath(os.fspath(i)), "audio": os.path.abspath(os.fspath(a)), "key": str(n)}
                 for n, (i, a) in enumerate(pairs)]
        if not items:
            return
        ctx = _quiet_data_context()
        preserve = ctx.execution_options.preserve_order
        ctx.execution_options.preserve_order = True
        try:
            ds = _pipeline(ray.data.from_items(items), self.plan, "table", "", np.array([], dtype=str),
                           batch_size=batch_size, keep_embeddings=keep_embeddings, **self.options)
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for i in range(len(batch["key"])):
                    error = str(batch["error"][i])
                    if not error:
                        yield pickle.loads(batch["result"][i])
                    elif self.errors == "raise":
                        raise SslrtError(error)
                    else:
                        yield FailedPair(str(batch["image"][i]), str(batch["audio"][i]), error, str(batch["key"][i]))
        finally:
            ctx.execution_options.preserve_order = preserve

    def localize(self, image, audio):
        result = next(iter(self.localize_many([(image, audio)], batch_size=1)))
        if isinstance(result, FailedPair):
            raise SslrtError(result.error)
        return result

    def close(self) -> None:
        pass

    def __enter__(self) -> "RayLocalizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
