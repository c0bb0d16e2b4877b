"""`sslrt eval`: a test set in its official layout -> the paper's metrics, on any backend.

dataset files -> runtime (batched, pipelined) -> per-sample cIoU (official rule of the test set)
-> per_sample.csv (appended batch by batch, so an interrupted run resumes) -> summary.json/.md
"""
from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass

import numpy as np

from sslrt.measure import metrics
from sslrt.datasets import DatasetReading, ground_truth_batch, read_dataset
from sslrt.errors import SslrtError
from sslrt.store.atomic import atomic_path, write_json_atomic

PER_SAMPLE = "per_sample.csv"
RUN_INFO = "run.json"
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


def read_rows(path: str) -> dict[str, EvalRow]:
    """Rows of an earlier (possibly interrupted) run; a torn last line is dropped."""
    rows: dict[str, EvalRow] = {}
    if not os.path.isfile(path):
        return rows
    with open(path, newline="") as f:
        for rec in csv.DictReader(f):
            try:
                row = EvalRow(rec["key"], rec["group"], float(rec["ciou"]), float(rec["ciou_adaptive"]), float(rec["score"]),
                              float(rec["peak_x"]), float(rec["peak_y"]))
            except (TypeError, ValueError, KeyError):
                continue
            rows[row.key] = row
    return rows


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


def run_evaluation(dataset: str, root: str, localizer, out_dir: str, annotations: str | None = None,
                   batch_size: int = 16, workers: int = 1, retrieval: int = 1000, restart: bool = False,
                   limit: int | None = None, model_name: str = "", progress=None) -> dict:
    """Evaluate, resuming from out_dir/per_sample.csv unless `restart`; returns the summary."""
    reading: DatasetReading = read_dataset(dataset, root, annotations)
    samples = reading.samples[:limit] if limit else reading.samples
    if not samples:
        raise SslrtError(f"no {dataset} samples found under {root} ({len(reading.missing)} listed in the annotations are missing)")
    os.makedirs(out_dir, exist_ok=True)
    info = {"dataset": dataset, "root": os.path.abspath(root), "model": model_name, "family": localizer.spec.name,
            "backend": localizer.engine.backend, "precision": localizer.engine.precision}
    csv_path = os.path.join(out_dir, PER_SAMPLE)
    info_path = os.path.join(out_dir, RUN_INFO)
    if restart or not os.path.isfile(info_path):
        for p in (csv_path, info_path):
            if os.path.exists(p):
                os.unlink(p)
        write_json_atomic(info_path, info)
    else:
        with open(info_path) as f:
            earlier = json.load(f)
        if earlier != info:
            raise SslrtError(f"{out_dir} holds a run of another configuration ({earlier.get('dataset')}, "
                             f"{earlier.get('backend')} {earlier.get('precision')}, {earlier.get('model')}): use --restart or another --out")
    done = read_rows(csv_path)
    todo = [s for s in samples if s.key not in done]
    rule = localizer.spec.eval_upsample[dataset]
    keep = {s.key for s in samples[:retrieval]} if retrieval and localizer.split else set()
    embeddings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    failures: list[dict] = []

    t0 = time.perf_counter()
    new_file = not os.path.isfile(csv_path)
    with open(csv_path, "a", newline="") as f:
        writer = csv.writer(f)
        if new_file:
            writer.writerow(FIELDS)
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
            pred = metrics.heatmaps_to_predictions(np.stack([r.heatmap for r in located]), rule)
            fixed, adaptive = metrics.ciou_fixed_and_adaptive(pred, ground_truth_batch(chunk))
            for s, r, cf, ca in zip(chunk, located, fixed, adaptive):
                row = EvalRow(s.key, s.group, float(cf), float(ca), r.score, r.peak[0], r.peak[1])
                done[s.key] = row
                writer.writerow([getattr(row, k) for k in FIELDS])
                if s.key in keep and r.image_embedding is not None:
                    embeddings[s.key] = (r.image_embedding.astype(np.float16), r.audio_embedding.astype(np.float16))
            f.flush()
            if progress:
                progress(len(chunk))
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
