"""`sslrt eval`: a test set in its official layout -> the paper's metrics, on any backend.

dataset files -> runtime (batched, pipelined) -> per-sample cIoU (official rule of the test set)
-> per_sample.csv (appended batch by batch, so an interrupted run resumes) -> summary.json/.md

Resuming gives the summary of an uninterrupted run, retrieval included:
- per_sample.csv is never appended to blindly: its header is checked, a row torn by a kill (no
  newline at its end, or fields that do not parse) is dropped and the file cut back to its last
  complete row, so the next row starts on a line of its own; an empty file gets its header.
- the retrieval embeddings (the float16 values an uninterrupted run keeps in memory) are written
  per batch to retrieval/*.npz, each shard atomically and before the batch's rows reach the CSV,
  so every row of the retrieval subset has its embeddings on disk; rows that lack them (a shard
  lost or unreadable) are run again for their embeddings alone. Persisting rather than
  recomputing keeps a resume as cheap as its missing rows: the subset is the first N samples,
  which an interrupted run has usually done.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from dataclasses import dataclass

import numpy as np

from sslrt.measure import metrics
from sslrt.datasets import DatasetReading, ground_truth_batch, read_dataset
from sslrt.engines.base import check_batch_size
from sslrt.errors import SslrtError
from sslrt.store.atomic import atomic_path, write_json_atomic

PER_SAMPLE = "per_sample.csv"
RUN_INFO = "run.json"
RETRIEVAL_DIR = "retrieval"
MAX_RETRIEVAL = 10_000  # the similarity matrix is N x N float64: 800 MB at this size
FIELDS = ["key", "group", "ciou", "ciou_adaptive", "score", "peak_x", "peak_y"]


@dataclass
class EvalRow:
    key: str
    group: str
    ciou: float
    ciou_adaptive: float
    score: float
    peak_x: float
    peak_y: float


def _parse_row(rec: list[str]) -> EvalRow | None:
    if len(rec) != len(FIELDS) or not rec[0]:
        return None
    try:
        values = [float(v) for v in rec[2:]]
    except ValueError:
        return None
    return EvalRow(rec[0], rec[1], *values)


def read_rows(path: str) -> dict[str, EvalRow]:
    """Rows of an earlier (possibly interrupted) run, repairing the file for appending: an empty
    file gets its header, a torn or malformed row is dropped (the file is cut back to its last
    complete row, or rewritten without the bad rows). A file that is not a per_sample.csv of sslrt
    is refused."""
    rows: dict[str, EvalRow] = {}
    if not os.path.isfile(path):
        return rows
    with open(path, "rb") as f:
        data = f.read()
    header = (",".join(FIELDS) + "\r\n").encode()
    end = data.rfind(b"\n") + 1  # a last line without its newline was torn
    if end == 0 and header.startswith(data.lstrip()):  # empty, or torn in its header
        _rewrite_rows(path, rows)
        return rows
    try:
        complete = data[:end].decode("utf-8")
    except UnicodeDecodeError:
        complete = ""
    if complete.split("\n", 1)[0].rstrip("\r") != ",".join(FIELDS):
        raise SslrtError(f"{path} is not a per_sample.csv of sslrt eval (its header is not {','.join(FIELDS)}): "
                         "use --restart or another --out")
    clean = True
    try:
        records = list(csv.reader(io.StringIO(complete, newline="")))[1:]
    except csv.Error:
        records, clean = [], False
    for rec in records:
        row = _parse_row(rec)
        if row is None or row.key in rows:
            clean = False
            if row is None:
                continue
        rows[row.key] = row
    if not clean:
        _rewrite_rows(path, rows)
    elif end != len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    return rows


def _rewrite_rows(path: str, rows: dict[str, EvalRow]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(FIELDS)
            for row in rows.values():
                writer.writerow([getattr(row, k) for k in FIELDS])


def _write_shard(folder: str, keys: list[str], image: list[np.ndarray], audio: list[np.ndarray]) -> None:
    """One batch's retrieval embeddings, written atomically under a name no other batch takes."""
    os.makedirs(folder, exist_ok=True)
    name = os.path.join(folder, f"{time.time_ns():020d}_{os.getpid()}.npz")
    with atomic_path(name, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, keys=np.array(keys, dtype=str), image=np.stack(image), audio=np.stack(audio))


def _read_shards(folder: str, wanted: set[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The persisted embeddings of `wanted` keys; unreadable shards are skipped (their rows run again)."""
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if not os.path.isdir(folder):
        return found
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".npz") or name.startswith("."):
            continue
        try:
            with np.load(os.path.join(folder, name), allow_pickle=False) as z:
                keys, image, audio = z["keys"], z["image"], z["audio"]
            if not (len(keys) == len(image) == len(audio)):
                continue
        except Exception:  # noqa: BLE001 - a damaged shard only costs its rows a rerun
            continue
        for k, v, a in zip(keys.tolist(), image, audio):
            if k in wanted:
                found[k] = (v, a)
    return found


def retrieval_similarity(image_emb: np.ndarray, audio_emb: np.ndarray, chunk: int = 64) -> np.ndarray:
    """sim[i, j] = global A-V similarity of audio i with image j (training's sum(P*A)/sum(P))."""
    n, c = audio_emb.shape
    v = image_emb.reshape(n, c, -1).astype(np.float32)
    a = audio_emb.astype(np.float32)
    sim = np.empty((n, n), dtype=np.float64)
    for j0 in range(0, n, chunk):
        maps = np.einsum("ic,jcp->ijp", a, v[j0:j0 + chunk], optimize=True)  # (n_audio, chunk, hw)
        sim[:, j0:j0 + chunk] = metrics.av_similarity(maps.reshape(-1, maps.shape[-1])).reshape(n, -1)
    return sim


def _markdown(summary: dict) -> str:
    lines = [f"# sslrt eval: {summary['dataset']}", "",
             f"model `{summary['model']}`, backend {summary['backend']} {summary['precision']}; "
             f"{summary['evaluated']} samples evaluated, {summary['missing']} missing", "",
             "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in summary["metrics"].items()]
    if summary.get("retrieval"):
        lines += [f"| {k} ({summary['retrieval_samples']} pairs) | {v:.2f} |" for k, v in summary["retrieval"].items()]
    t = summary["timing"]
    lines += ["", f"{t['pairs_this_run']} pairs in {t['seconds']:.1f} s this run ({t['pairs_per_second']:.1f} pairs/s)", ""]
    return "\n".join(lines)


def check_options(out_dir: str, batch_size: int = 16, retrieval: int = 1000, limit: int | None = None) -> None:
    """The options of a run, checked before any model opens (one-line errors)."""
    check_batch_size(batch_size, "--batch-size")
    if isinstance(retrieval, bool) or not isinstance(retrieval, int) or not 0 <= retrieval <= MAX_RETRIEVAL:
        raise SslrtError(f"--retrieval must be between 0 (off) and {MAX_RETRIEVAL}, got {retrieval!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise SslrtError(f"--limit must be >= 1, got {limit!r}")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise SslrtError(f"--out must be a folder, and {out_dir} is a file")


def run_evaluation(dataset: str, root: str, localizer, out_dir: str, annotations: str | None = None,
                   batch_size: int = 16, workers: int | None = None, retrieval: int = 1000, restart: bool = False,
                   limit: int | None = None, model_name: str = "", progress=None) -> dict:
    """Evaluate, resuming from out_dir/per_sample.csv unless `restart`; returns the summary."""
    check_options(out_dir, batch_size, retrieval, limit)
    reading: DatasetReading = read_dataset(dataset, root, annotations)
    samples = reading.samples[:limit] if limit else reading.samples
    if not samples:
        raise SslrtError(f"no {dataset} samples found under {root} ({len(reading.missing)} listed in the annotations are missing)")
    os.makedirs(out_dir, exist_ok=True)
    info = {"dataset": dataset, "root": os.path.abspath(root), "model": model_name, "family": localizer.spec.name,
            "backend": localizer.engine.backend, "precision": localizer.engine.precision}
    csv_path = os.path.join(out_dir, PER_SAMPLE)
    info_path = os.path.join(out_dir, RUN_INFO)
    shard_dir = os.path.join(out_dir, RETRIEVAL_DIR)
    if restart or not os.path.isfile(info_path):
        for p in (csv_path, info_path):
            if os.path.exists(p):
                os.unlink(p)
        shutil.rmtree(shard_dir, ignore_errors=True)
        write_json_atomic(info_path, info)
    else:
        try:
            with open(info_path, encoding="utf-8") as f:
                earlier = json.load(f)
        except (OSError, ValueError) as exc:
            raise SslrtError(f"{info_path} is unreadable ({type(exc).__name__}): use --restart or another --out") from None
        if not isinstance(earlier, dict):
            raise SslrtError(f"{info_path} is not a run description of sslrt eval: use --restart or another --out")
        if earlier != info:
            raise SslrtError(f"{out_dir} holds a run of another configuration ({earlier.get('dataset')}, "
                             f"{earlier.get('backend')} {earlier.get('precision')}, {earlier.get('model')}): use --restart or another --out")
    done = read_rows(csv_path)
    todo = [s for s in samples if s.key not in done]
    rule = localizer.spec.eval_upsample[dataset]
    keep = {s.key for s in samples[:retrieval]} if retrieval and localizer.split else set()
    embeddings = _read_shards(shard_dir, {k for k in keep if k in done}) if keep else {}
    failures: list[dict] = []

    t0 = time.perf_counter()
    new_file = not os.path.isfile(csv_path)
    with open(csv_path, "a", newline="") as f:
        writer = csv.writer(f)
        if new_file:
            writer.writerow(FIELDS)
            f.flush()
        results = localizer.localize_many(((s.image_path, s.audio_path) for s in todo), batch_size=batch_size,
                                          workers=workers, keep_embeddings=bool(keep))
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            located = [next(results) for _ in chunk]
            # A localizer that reports failed pairs instead of raising (sslrt.scale's FailedPair)
            for s, r in zip(chunk, located):
                if getattr(r, "error", None) is not None:
                    failures.append({"key": s.key, "image": str(s.image_path), "audio": str(s.audio_path), "error": r.error})
            kept = [(s, r) for s, r in zip(chunk, located) if getattr(r, "error", None) is None]
            if not kept:
                continue
            chunk, located = [s for s, _ in kept], [r for _, r in kept]
            pred = metrics.heatmaps_to_predictions(np.stack([r.heatmap for r in located]), rule,
                                                   localizer.spec.eval_normalize)
            fixed, adaptive = metrics.ciou_fixed_and_adaptive(pred, ground_truth_batch(chunk))
            kept = {}
            for s, r in zip(chunk, located):
                if s.key in keep and r.image_embedding is not None:
                    kept[s.key] = (r.image_embedding.astype(np.float16), r.audio_embedding.astype(np.float16))
            if kept:  # embeddings on disk before their rows: a row in the CSV has its embeddings
                _write_shard(shard_dir, list(kept), [v for v, _ in kept.values()], [a for _, a in kept.values()])
                embeddings.update(kept)
            for s, r, cf, ca in zip(chunk, located, fixed, adaptive):
                row = EvalRow(s.key, s.group, float(cf), float(ca), r.score, r.peak[0], r.peak[1])
                done[s.key] = row
                writer.writerow([getattr(row, k) for k in FIELDS])
            f.flush()
            if progress:
                progress(len(chunk))
    lacking = [s for s in samples if s.key in keep and s.key in done and s.key not in embeddings]
    if lacking:  # rows done by an earlier run whose embeddings were lost: run them for those alone
        for start in range(0, len(lacking), batch_size):
            chunk = lacking[start:start + batch_size]
            located = list(localizer.localize_many([(s.image_path, s.audio_path) for s in chunk], batch_size=batch_size,
                                                   workers=0, keep_embeddings=True))
            kept = {s.key: (r.image_embedding.astype(np.float16), r.audio_embedding.astype(np.float16))
                    for s, r in zip(chunk, located) if getattr(r, "image_embedding", None) is not None}
            if kept:
                _write_shard(shard_dir, list(kept), [v for v, _ in kept.values()], [a for _, a in kept.values()])
                embeddings.update(kept)
    seconds = time.perf_counter() - t0

    rows = [done[s.key] for s in samples if s.key in done]
    if not rows:
        raise SslrtError(f"no {dataset} sample could be localized: {failures[0]['error'] if failures else ''}")
    fixed = np.array([r.ciou for r in rows])
    adaptive = np.array([r.ciou_adaptive for r in rows])
    groups = [r.group for r in rows] if dataset == "is3" else None
    summary = {
        **info,
        "evaluated": len(rows), "missing": len(reading.missing), "missing_examples": reading.missing[:10],
        "metrics": metrics.summarize_localization_percent(fixed, adaptive, groups),
        "timing": {"pairs_this_run": len(todo), "resumed": len(samples) - len(todo), "seconds": seconds,
                   "pairs_per_second": len(todo) / seconds if seconds > 0 and todo else 0.0},
    }
    if failures:
        summary["errors"], summary["error_examples"] = len(failures), failures[:10]
    if len(embeddings) >= 2:
        keys = [s.key for s in samples if s.key in embeddings]
        sim = retrieval_similarity(np.stack([embeddings[k][0] for k in keys]), np.stack([embeddings[k][1] for k in keys]))
        summary["retrieval"] = metrics.retrieval_recall_percent(sim)
        summary["retrieval_samples"] = len(keys)
    write_json_atomic(os.path.join(out_dir, "summary.json"), summary)
    with atomic_path(os.path.join(out_dir, "summary.md")) as tmp:
        with open(tmp, "w") as f:
            f.write(_markdown(summary))
    return summary
