"""`sslrt bench`: latency and throughput per backend and precision, against the paper's PyTorch
path measured in the same run.

Two scopes:
- engine: the model alone on ready tensors (fused graph), per batch size;
- e2e: files -> decode, preprocess, inference, postprocess (`localize_many`), 64 pairs by default,
  plus the interactive case of a new sound on an already seen image.
The reference row is the torch backend, fp32, eager, fused graph, sequential (the paper's code).

Every row of a scope is measured in interleaved rounds (`rounds`): all engines (or pipelines) stay
open, and each round times each of them in turn. A machine whose speed drifts during the run
(other load, a VM's neighbours, frequency) then slows the reference and the candidates alike, so
the speed-ups, which are ratios, do not depend on which row ran in the slow minute. Measured on
the 2-core VM: one row after the other, the reference row read 94.7 ms/pair in one run and 104.8 in
another, moving every speed-up by 10%. The price: every engine of the run is open at once (memory
is their sum, GPU memory included), and the end-to-end scope makes one full pass over its pairs
per round (rounds x its time). `rounds=1` measures one row after the other, one open at a time.

The two scopes run minutes apart, so their ratio (e2e / engine) moves with the machine's speed
between them: two runs on the 2-core VM, an hour apart, read 86% and 91% for the torch row at batch
8, whose bound is 96%. Each round of the end-to-end scope therefore also times the same pipeline's
inference alone, on the same pairs prepared beforehand, right after that pipeline's pass: e2e /
inference, a ratio of two passes seconds apart (`e2e_over_inference`, one value per round).
"""
from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np

from sslrt.engines import create_engine
from sslrt.errors import SslrtError
from sslrt.graphs import INPUT_AUDIO, INPUT_IMAGE, input_shapes
from sslrt.resolve import resolve_model
from sslrt.store.atomic import atomic_path, write_json_atomic

REFERENCE = ("torch", "fp32")


@dataclass
class Row:
    scope: str
    backend: str
    precision: str
    batch: int
    p50_ms: float  # per call (engine: one batch; e2e: one batch of pairs)
    p90_ms: float
    p99_ms: float
    pairs_per_s: float
    ms_per_pair: float
    speedup: float | None = None  # reference ms_per_pair / this ms_per_pair, same scope and batch
    runs: int = 0
    cpu_ms_per_pair: float | None = None  # engine rows: process CPU time (all threads) per pair
    # e2e rows, per round: the throughput of the end-to-end pass over that of the same pipeline's
    # inference alone on (the first INFERENCE_PAIRS of) the same pairs, ready inputs, timed right
    # after it; i.e. inference ms/pair / end-to-end ms/pair
    e2e_over_inference: list[float] | None = None


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def time_calls(fn, warmup: int = 2, min_runs: int = 10, min_seconds: float = 2.0, max_runs: int = 500,
               cpu_ms: list | None = None) -> list[float]:
    """Call fn until both min_runs and min_seconds are reached; returns per-call milliseconds.
    With `cpu_ms` (a list), appends the process's CPU milliseconds per call over the timed calls
    (every thread's: the engine's pools included)."""
    for _ in range(warmup):
        fn()
    times, start, cpu_start = [], time.perf_counter(), time.process_time()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < min_seconds):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    if cpu_ms is not None:
        cpu_ms.append((time.process_time() - cpu_start) * 1e3 / len(times))
    return times


def _row(scope, backend, precision, batch, times, pairs_per_call) -> Row:
    p50 = statistics.median(times)
    mean = statistics.fmean(times)
    return Row(scope, backend, precision, batch, p50, _percentile(times, 90), _percentile(times, 99),
               pairs_per_call / (mean / 1e3), mean / pairs_per_call, runs=len(times))


def _feeds(spec, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = input_shapes(spec)
    return {INPUT_IMAGE: rng.standard_normal((batch, *shapes[INPUT_IMAGE]), dtype=np.float32),
            INPUT_AUDIO: rng.uniform(-1.3, -0.2, (batch, *shapes[INPUT_AUDIO])).astype(np.float32)}


def bench_engine(engine, batch: int, spec, seed: int = 0, **timing) -> list[float]:
    """Per-call milliseconds of engine.run on one generated batch (`timing`: see time_calls)."""
    feeds = _feeds(spec, batch, seed)
    return time_calls(lambda: engine.run(feeds), **timing)


def bench_engines(engines: dict, batch: int, spec, rounds: int = 3, seed: int = 0, warmup: int = 2, min_runs: int = 10,
                  min_seconds: float = 2.0, max_runs: int = 500, progress=None) -> dict:
    """{key: (per-call ms, process CPU ms per call)} of each engine on the same generated batch,
    measured in `rounds` interleaved rounds: each round times every engine in turn (`_round_orders`)
    for its share of `min_seconds` and `min_runs`, after one untimed call (the caches and thread
    pools that the previous engine left behind are not this engine's cost)."""
    feeds = _feeds(spec, batch, seed)
    rounds = max(1, rounds)
    share = {"min_runs": max(1, -(-min_runs // rounds)), "min_seconds": min_seconds / rounds,
             "max_runs": max(1, max_runs // rounds)}
    times: dict = {key: [] for key in engines}
    cpu_ms: dict = {key: 0.0 for key in engines}
    for key, engine in engines.items():
        for _ in range(warmup):
            engine.run(feeds)
    for r, order in enumerate(_round_orders(list(engines), rounds)):
        if progress:
            progress(f"engine batch {batch}: round {r + 1}/{rounds}")
        for key in order:
            engine = engines[key]
            cpu: list[float] = []
            block = time_calls(lambda: engine.run(feeds), warmup=1, cpu_ms=cpu, **share)
            times[key] += block
            cpu_ms[key] += cpu[0] * len(block)
    return {key: (times[key], cpu_ms[key] / len(times[key])) for key in engines}


def _round_orders(keys: list, rounds: int) -> list[list]:
    """The order of the rows in each round: forward, then backward (A B, B A, A B, ...), so that
    no row always follows the same one (what a row inherits from its predecessor evens out)."""
    return [keys if r % 2 == 0 else keys[::-1] for r in range(rounds)]


def make_pair_files(folder: str, n: int, image_size: int = 1024, seed: int = 0) -> list[tuple[str, str]]:
    """n distinct (JPEG, 10 s 16 kHz wav) pairs, sized like the IS3 test images."""
    import cv2
    import soundfile as sf

    from sslrt.synthetic.generated import generated_image, generated_waveform

    pairs = []
    for i in range(n):
        img, wav = os.path.join(folder, f"img_{i:03d}.jpg"), os.path.join(folder, f"snd_{i:03d}.wav")
        cv2.imwrite(img, generated_image(seed + i, (image_size, image_size))[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        sf.write(wav, generated_waveform(seed + i), 16000, subtype="PCM_16")
        pairs.append((img, wav))
    return pairs


def machine_info() -> dict:
    import importlib.metadata as md

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "gpu": None, "versions": {}}
    for name in ("sslrt", "onnxruntime", "onnxruntime-gpu", "openvino", "torch", "numpy", "opencv-python-headless", "tensorrt"):
        try:
            info["versions"][name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    from sslrt.engines import cuda_device_count

    if cuda_device_count() > 0:
        try:
            from sslrt.engines.tensorrt import device_info

            info["gpu"] = device_info()["name"]
        except Exception:  # cuda-python absent: a GPU is there, its name is not known without it
            info["gpu"] = "CUDA GPU"
    return info


def run_benchmark(model: str, backends: list[str], precisions: list[str], batches: list[int], threads: int | None = None,
                  scopes: tuple[str, ...] = ("engine", "e2e"), e2e_pairs: int = 64, min_seconds: float = 2.0,
                  min_runs: int = 10, e2e_image_size: int = 1024, rounds: int = 3, progress=None) -> dict:
    """The bench's rows (see the module's docstring); `rounds`: interleaved rounds per scope and batch."""
    say = progress or (lambda msg: None)
    source = resolve_model(model, progress=say)
    exported = source.exported
    combos = list(dict.fromkeys([REFERENCE] + [(b, p) for b in backends for p in precisions]))
    batches = list(dict.fromkeys(batches))
    # Interleaved rounds need every row open at once (memory: the sum of the engines); one round
    # measures one row after the other, with one engine or pipeline open at a time.
    rounds = max(1, rounds)
    groups = [combos] if rounds > 1 else [[combo] for combo in combos]
    rows: list[Row] = []
    skipped = []
    timing = {"min_seconds": min_seconds, "min_runs": min_runs}

    if "engine" in scopes:
        for group in groups:
            engines = {}
            try:
                for backend, precision in group:
                    try:
                        engines[(backend, precision)] = create_engine(backend, source, precision=precision, threads=threads)
                    except SslrtError as exc:
                        skipped.append(f"{backend} {precision}: {exc}")
                for batch in batches if engines else ():
                    measured = bench_engines(engines, batch, source.spec, rounds=rounds, progress=say, **timing)
                    for (backend, precision), (times, cpu_ms) in measured.items():
                        rows.append(_row("engine", backend, precision, batch, times, batch))
                        rows[-1].cpu_ms_per_pair = cpu_ms / batch
            finally:
                for engine in engines.values():
                    engine.close()

    interactive = None
    prepare_cpu_ms = None
    if "e2e" in scopes:
        from sslrt.runtime.pipeline import Localizer

        with tempfile.TemporaryDirectory(prefix="sslrt_bench_") as folder:
            say(f"writing {e2e_pairs} image/audio pairs")
            pairs = make_pair_files(folder, e2e_pairs, image_size=e2e_image_size)
            for group in groups:
                localizers = {}
                try:
                    for backend, precision in group:
                        is_ref = (backend, precision) == REFERENCE
                        try:
                            # the reference runs as the paper's code does: fused graph, no prefetching
                            localizers[(backend, precision)] = Localizer.open(source, backend=backend, precision=precision,
                                                                              threads=threads, reuse_embeddings=not is_ref)
                        except SslrtError as exc:
                            skipped.append(f"e2e {backend} {precision}: {exc}")
                    # one prepared set per model transform for every batch size (the pipelines of one
                    # model share it), of at most INFERENCE_PAIRS pairs: memory ~0.9 MB per pair
                    prepared, ready = {}, {}
                    for key, loc in localizers.items():
                        transform = (loc.spec.name, loc.exact_inputs)
                        if transform not in prepared:
                            prepared[transform] = prepare_all(loc, pairs[:INFERENCE_PAIRS])
                        ready[key] = prepared[transform]
                    for batch in batches if localizers else ():
                        for key, loc in localizers.items():  # warm-up: page cache, lazy initialisation
                            e2e_pass(loc, pairs, batch, key == REFERENCE)
                            if prepare_cpu_ms is None:
                                prepare_cpu_ms = prepare_cpu(loc, pairs)
                        passes = {key: [] for key in localizers}
                        ratios = {key: [] for key in localizers}
                        for r, order in enumerate(_round_orders(list(localizers), rounds)):
                            say(f"e2e batch {batch}: round {r + 1}/{rounds}")
                            for key in order:
                                done = e2e_pass(localizers[key], pairs, batch, key == REFERENCE)
                                passes[key].append(done)
                                inference_ms = inference_pass(localizers[key], ready[key], batch) / len(ready[key])
                                ratios[key].append(inference_ms / (done[0] / len(pairs)))
                        for (backend, precision), done in passes.items():
                            total_ms = sum(t for t, _ in done)
                            per_batch = [ms for _, marks in done for ms in marks]
                            n = len(pairs) * len(done)
                            rows.append(Row("e2e", backend, precision, batch, statistics.median(per_batch), _percentile(per_batch, 90),
                                            _percentile(per_batch, 99), n / (total_ms / 1e3), total_ms / n, runs=len(per_batch),
                                            e2e_over_inference=ratios[(backend, precision)]))
                    for (backend, precision), loc in localizers.items():
                        if interactive is None and (backend, precision) != REFERENCE and loc.split:
                            say(f"interactive {backend} {precision}")
                            interactive = bench_interactive(loc, pairs) | {"backend": backend, "precision": precision}
                finally:
                    for loc in localizers.values():
                        loc.close()

    from sslrt.machine import usable_cores  # the cores the CPU bound shares out

    # the tables list each backend's rows together, in the order asked
    rows.sort(key=lambda r: (r.scope != "engine", combos.index((r.backend, r.precision)), batches.index(r.batch)))
    for row in rows:
        ref = next((r for r in rows if (r.backend, r.precision) == REFERENCE and r.scope == row.scope and r.batch == row.batch), None)
        row.speedup = ref.ms_per_pair / row.ms_per_pair if ref else None
    return {"model": {"path": exported.directory, "width": exported.config.width, "family": exported.spec.name,
                      "checkpoint_sha256": exported.checkpoint_sha256},
            "machine": machine_info(), "threads": threads, "reference": "torch fp32 eager, fused graph, sequential",
            "e2e_inputs": f"{e2e_pairs} pairs of a {e2e_image_size}x{e2e_image_size} JPEG (quality 90) and a 10 s 16 kHz wav",
            "rows": [asdict(r) for r in rows], "interactive": interactive, "skipped": skipped, "rounds": rounds,
            "prepare_cpu_ms_per_pair": prepare_cpu_ms, "cores": threads or usable_cores()}


def _clear_caches(loc) -> None:
    """Empty the Localizer's embedding caches (absent on the fused path): every pair prepared anew."""
    for cache in (loc.image_cache, loc.audio_cache):
        if cache is not None:
            cache.clear()


# Pairs of the e2e scope whose inference alone is timed after each pass (ms per pair of these).
INFERENCE_PAIRS = 64


def prepare_all(loc, pairs) -> list:
    """Every pair decoded and transformed (empty caches), ready for `inference_pass`."""
    _clear_caches(loc)
    ready = [loc.prepare(image, audio) for image, audio in pairs]
    _clear_caches(loc)
    return ready


def inference_pass(loc, ready: list, batch: int) -> float:
    """Total ms of the pipeline's inference alone over prepared pairs, `batch` per engine call,
    caches emptied first (every embedding computed, as in `e2e_pass`): the engine-only time of
    the very graphs and batches an end-to-end pass runs."""
    _clear_caches(loc)
    start = time.perf_counter()
    for lo in range(0, len(ready), batch):
        loc.infer(ready[lo:lo + batch])
    return (time.perf_counter() - start) * 1e3


def prepare_cpu(loc, pairs, settle_s: float = 0.05) -> float:
    """CPU milliseconds per pair of decoding and preprocessing alone (`Localizer.prepare`, one
    thread, empty caches): the host work every pair adds to the engine's."""
    _clear_caches(loc)
    time.sleep(settle_s)  # the engine's pools stop spinning (their CPU is not the preparation's)
    start = time.process_time()
    for image, audio in pairs:
        loc.prepare(image, audio)
    return (time.process_time() - start) * 1e3 / len(pairs)


def cpu_bound(engine_ms_per_pair: float, engine_cpu_ms: float, prepare_cpu_ms: float, cores: int) -> float:
    """The most end to end can reach, as a fraction of engine-only throughput, when every pair's
    engine and preparation CPU share `cores` cores perfectly: a pair takes at least its engine
    time and at least its share of the CPU work."""
    return engine_ms_per_pair / max(engine_ms_per_pair, (engine_cpu_ms + prepare_cpu_ms) / cores)


def host_budget(engine_ms_per_pair: float, engine_cpu_ms: float, cores: int, target: float = 0.9) -> float:
    """The host CPU ms per pair (decoding, transforms, results) at which `cpu_bound` is `target`:
    what the work beside the engine may cost for end to end to reach that share of engine-only
    throughput, even perfectly overlapped. Negative where the engine alone uses the cores past it."""
    return cores * engine_ms_per_pair / target - engine_cpu_ms


def e2e_pass(loc, pairs, batch: int, sequential: bool, workers: int | None = None,
             processes: bool | None = None) -> tuple[float, list[float]]:
    """One pass over the pair files with empty embedding caches: (total ms, ms between batch
    completions). `workers`, `processes`: preparation threads or processes where not `sequential`
    (None: localize_many's default)."""
    _clear_caches(loc)
    marks, start = [], time.perf_counter()
    many = loc.localize_many(pairs, batch_size=batch, workers=0 if sequential else workers, processes=processes)
    for i, _ in enumerate(many, start=1):
        if i % batch == 0 or i == len(pairs):
            marks.append(time.perf_counter())
    per_batch = np.diff([start] + marks) * 1e3
    return (marks[-1] - start) * 1e3, per_batch.tolist()


def bench_interactive(loc, pairs: list[tuple[str, str]], n: int = 8) -> dict:
    """Cost of one more sound on an already seen image, against a full new pair (files in, results out)."""
    full, extra = [], []
    n = min(n, len(pairs))
    for i in range(n):
        loc.image_cache.clear()
        loc.audio_cache.clear()
        img, snd = pairs[i]
        t = time.perf_counter()
        loc.localize(img, snd)
        full.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        loc.localize(img, pairs[(i + 1) % len(pairs)][1])
        extra.append((time.perf_counter() - t) * 1e3)
    f, e = statistics.median(full), statistics.median(extra)
    return {"full_pair_ms": f, "extra_sound_ms": e, "ratio": e / f, "runs": n}


def markdown_report(result: dict) -> str:
    m = result["machine"]
    lines = ["# sslrt bench", "",
             f"Machine: {m['cpu']}, {m['cores']} cores" + (f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU")
             + f"; threads {result['threads'] or 'default'}.",
             f"Model: width {result['model']['width']} ({result['model']['path']}).",
             f"Reference: {result['reference']}. Speed-up = reference ms/pair / row ms/pair, same scope and batch, same run"
             + (f"; the rows of each scope and batch measured in {result['rounds']} interleaved rounds." if result.get("rounds") else "."), ""]
    for scope, title in (("engine", "Engine only (ready tensors)"), ("e2e", f"End to end (files -> results: {result.get('e2e_inputs')})")):
        rows = [r for r in result["rows"] if r["scope"] == scope]
        if not rows:
            continue
        lines += [f"## {title}", "", "| backend | precision | batch | p50 ms | p90 ms | p99 ms | ms/pair | pairs/s | speed-up |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(f"| {r['backend']} | {r['precision']} | {r['batch']} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | "
                         f"{r['p99_ms']:.1f} | {r['ms_per_pair']:.1f} | {r['pairs_per_s']:.2f} | "
                         + (f"{r['speedup']:.2f}x |" if r["speedup"] is not None else "n/a (no reference row) |"))
        lines.append("")
    if result.get("interactive"):
        it = result["interactive"]
        lines += ["## Interactive: another sound on a seen image", "",
                  f"{it['backend']} {it['precision']}: full pair {it['full_pair_ms']:.1f} ms, extra sound {it['extra_sound_ms']:.1f} ms "
                  f"= {it['ratio']:.0%} of a full pair.", ""]
    e2e = {(r["backend"], r["precision"], r["batch"]): r for r in result["rows"] if r["scope"] == "e2e"}
    ratios = [(k, r, e2e[k]["pairs_per_s"] / r["pairs_per_s"]) for k, r in
              (((r["backend"], r["precision"], r["batch"]), r) for r in result["rows"] if r["scope"] == "engine") if k in e2e]
    prep = result.get("prepare_cpu_ms_per_pair")
    if ratios:
        lines += ["## End to end vs engine only (throughput)", ""]
        if prep is None:  # a report written before the CPU columns
            lines += ["| backend | precision | batch | e2e / engine |", "|---|---|---:|---:|"]
            lines += [f"| {b} | {p} | {n} | {x:.0%} |" for (b, p, n), _, x in ratios]
        else:
            cores = result.get("cores") or m["cores"]
            lines += [f"Decoding and preprocessing take {prep:.1f} ms of CPU per pair (one thread). e2e / engine: the two "
                      "scopes' pairs/s, measured minutes apart; e2e / inference: per round, the end-to-end pass against the same "
                      "pipeline's inference alone on the same pairs (ready inputs) right after it, median and range over the "
                      "rounds (a machine whose speed drifts between the scopes moves the first, not the second). CPU bound: "
                      f"the most end to end can reach when each pair's engine CPU and that work share the {cores} cores "
                      "perfectly. Host budget for 90%: the CPU per pair that decoding, transforms and results may take for "
                      "that bound to be 90%.", "",
                      "| backend | precision | batch | e2e / engine | e2e / inference | engine CPU ms/pair | CPU bound | host budget for 90% |",
                      "|---|---|---:|---:|---:|---:|---:|---:|"]
            for (b, p, n), r, x in ratios:
                eng_cpu = r.get("cpu_ms_per_pair")
                same = _ratio_cell(e2e[(b, p, n)].get("e2e_over_inference"))
                if eng_cpu is None:
                    lines.append(f"| {b} | {p} | {n} | {x:.0%} | {same} | n/a | n/a | n/a |")
                else:
                    budget = host_budget(r["ms_per_pair"], eng_cpu, cores)
                    lines.append(f"| {b} | {p} | {n} | {x:.0%} | {same} | {eng_cpu:.1f} "
                                 f"| {cpu_bound(r['ms_per_pair'], eng_cpu, prep, cores):.0%} | {budget:.1f} ms |")
        lines.append("")
    lines += fastest_section(result["rows"])
    if result["skipped"]:
        lines += ["Skipped: " + "; ".join(result["skipped"]), ""]
    lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), ""]
    return "\n".join(lines)


def _ratio_cell(ratios: list[float] | None) -> str:
    """'91% (89-93%)': the median and range of per-round ratios; n/a for a report without them."""
    if not ratios:
        return "n/a"
    if len(ratios) == 1:
        return f"{ratios[0]:.0%}"
    return f"{statistics.median(ratios):.0%} ({min(ratios):.0%}-{max(ratios):.0%})"


def fastest(rows: list[dict]) -> dict:
    """(precision, batch, scope) -> the row with the most pairs/s among the measured backends."""
    best: dict = {}
    for r in rows:
        key = (r["precision"], r["batch"], r["scope"])
        if key not in best or r["pairs_per_s"] > best[key]["pairs_per_s"]:
            best[key] = r
    return best


def fastest_section(rows: list[dict]) -> list[str]:
    """The table a user picks a backend from: per precision and batch, the fastest measured
    backend engine only and end to end, with its speed-up over the reference."""
    best = fastest(rows)
    keys = sorted({(p, n) for p, n, _ in best}, key=lambda k: (k[0] != "fp32", k[0], k[1]))
    if not keys:
        return []

    def cell(row):
        if row is None:
            return "not measured"
        return f"{row['backend']} ({row['speedup']:.2f}x)" if row["speedup"] is not None else row["backend"]

    lines = ["## Fastest here", "", "| precision | batch | engine only | end to end |", "|---|---:|---|---|"]
    lines += [f"| {p} | {n} | {cell(best.get((p, n, 'engine')))} | {cell(best.get((p, n, 'e2e')))} |" for p, n in keys]
    top = max((r for (p, n, scope), r in best.items() if scope == "e2e"), key=lambda r: r["pairs_per_s"], default=None)
    if top is not None:
        lines += ["", f"Most pairs/s end to end: `sslrt run --pairs ... --backend {top['backend']} --precision {top['precision']} --batch-size {top['batch']}` "
                      f"({top['pairs_per_s']:.1f} pairs/s)."]
    return lines + [""]


def plot_report(result: dict, path: str) -> bool:
    """Latency per pair vs batch, one line per backend/precision and scope. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    for ax, scope in zip(axes, ("engine", "e2e")):
        rows = [r for r in result["rows"] if r["scope"] == scope]
        for key in sorted({(r["backend"], r["precision"]) for r in rows}):
            pts = sorted((r["batch"], r["ms_per_pair"]) for r in rows if (r["backend"], r["precision"]) == key)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{key[0]} {key[1]}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch")
        ax.set_ylabel("ms per pair")
        ax.set_title({"engine": "engine only", "e2e": "end to end"}[scope])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"sslrt bench: {result['machine']['cpu']}, {result['machine']['cores']} cores", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return True


def write_report(result: dict, folder: str) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    written = [os.path.join(folder, "bench.json"), os.path.join(folder, "bench.md")]
    write_json_atomic(written[0], result)
    with atomic_path(written[1]) as tmp:
        with open(tmp, "w") as f:
            f.write(markdown_report(result))
    if plot_report(result, os.path.join(folder, "bench.png")):
        written.append(os.path.join(folder, "bench.png"))
    return written


# -- several models side by side (`sslrt bench --models a,b,c`) ---------------------------------
def precision_agreement(model, candidate: str = "int8", reference: str = "fp32", pairs: int = 32, seed: int = 2024,
                        threads: int | None = None) -> dict | None:
    """Localization agreement of the `candidate` graphs with the `reference` ones on generated
    inputs of the model's family (ONNX Runtime, fused graph); None where the export lacks either."""
    from sslrt.export.onnx import parity_inputs
    from sslrt.measure.parity import compare_engines

    resolved = resolve_model(model)
    try:
        ref = create_engine("onnxruntime", resolved, precision=reference, threads=threads)
        cand = create_engine("onnxruntime", resolved, precision=candidate, threads=threads)
    except SslrtError:
        return None
    image, audio, source = parity_inputs(resolved.spec, n=pairs, seed=seed)
    stats = compare_engines(ref, cand, image, audio)
    ref.close()
    cand.close()
    return stats | {"inputs": source}


def compare_models(models: list[str], backends: list[str], precisions: list[str], batches: list[int],
                   threads: int | None = None, e2e_pairs: int = 32, e2e_image_size: int = 1024, min_seconds: float = 2.0,
                   agreement_pairs: int = 32, rounds: int = 3, progress=None) -> dict:
    """One bench run per model (each with its own PyTorch reference row), plus the INT8-vs-fp32
    localization agreement of each, for one side-by-side table."""
    say = progress or (lambda msg: None)
    runs = []
    for model in models:
        say(f"model {model}")
        result = run_benchmark(model, backends, precisions, batches, threads=threads, e2e_pairs=e2e_pairs,
                               e2e_image_size=e2e_image_size, min_seconds=min_seconds, rounds=rounds, progress=say)
        result["int8_vs_fp32"] = precision_agreement(model, pairs=agreement_pairs, threads=threads) if "int8" in precisions else None
        runs.append(result)
    return {"machine": machine_info(), "threads": threads, "runs": runs,
            "reference": "torch fp32 eager, fused graph, sequential (per model)"}


def models_markdown(result: dict) -> str:
    m = result["machine"]
    lines = ["# sslrt bench: model families side by side", "",
             f"Machine: {m['cpu']}, {m['cores']} cores" + (f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU")
             + f"; threads {result['threads'] or 'default'}. One run; every model's speed-up is against its own "
             "PyTorch fp32 eager reference in that run"
             + (f", its rows measured in {result['runs'][0]['rounds']} interleaved rounds." if result["runs"] and result["runs"][0].get("rounds") else "."), ""]
    batches = sorted({r["batch"] for run in result["runs"] for r in run["rows"]})
    combos = [(r["backend"], r["precision"]) for r in result["runs"][0]["rows"] if r["scope"] == "engine"] if result["runs"] else []
    combos = list(dict.fromkeys(c for c in combos if c != REFERENCE))
    head = ["family", "width"]
    for scope in ("engine", "e2e"):
        for b, p in combos:
            for n in batches:
                head.append(f"{scope} {b} {p} b{n} ms/pair (x ref)")
    head.append("INT8 vs fp32 localization agreement")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in result["runs"]:
        rows = {(r["scope"], r["backend"], r["precision"], r["batch"]): r for r in run["rows"]}
        cells = [run["model"].get("family", "?"), str(run["model"]["width"])]
        for scope in ("engine", "e2e"):
            for b, p in combos:
                for n in batches:
                    r = rows.get((scope, b, p, n))
                    cells.append("n/a" if r is None else f"{r['ms_per_pair']:.1f}"
                                 + (f" ({r['speedup']:.2f}x)" if r.get("speedup") else ""))
        agree = run.get("int8_vs_fp32")
        cells.append("n/a" if not agree else f"{agree['localization_agreement']:.1%} ({agree['samples']} pairs, "
                                              f"argmax {agree['argmax_agreement']:.1%})")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "e2e: files -> results through decode, the family's transforms, inference and postprocessing "
              f"({result['runs'][0]['e2e_inputs'] if result['runs'] else ''}).", ""]
    return "\n".join(lines)
