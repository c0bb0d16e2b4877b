"""The `sslrt` command: one subcommand per job (export, run, demo, ...).

Errors in the user's input end as one line on stderr and exit code 2 (see `main`); JSON goes to
stdout alone, progress and warnings to stderr.
"""
from __future__ import annotations

import csv
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer

from sslrt.errors import BackendUnavailable, SslrtError
from sslrt.progress import progress_bar as _progress_bar

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Sound source localization engine for the ICCV 2023 cross-modal alignment model.")


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def _progress(msg: str) -> None:
    # Steps of long work are shown to a person at a terminal; logs and pipes get only results/errors.
    if sys.stderr.isatty():
        _err(f"sslrt: {msg}...")


def read_pairs_csv(path: str) -> list[tuple[str, str]]:
    """`image,audio` per line (a header line `image,audio` is allowed); relative paths are relative to the CSV."""
    if not os.path.isfile(path):
        raise SslrtError(f"pairs file not found: {path}")
    base = os.path.dirname(os.path.abspath(path))
    pairs = []
    with open(path, newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            row = [c.strip() for c in row]
            if not row or not any(row) or row[0].startswith("#"):
                continue
            if lineno == 1 and [c.lower() for c in row[:2]] == ["image", "audio"]:
                continue
            if len(row) < 2 or not row[0] or not row[1]:
                raise SslrtError(f"{path}:{lineno}: expected 'image,audio', got {','.join(row)!r}")
            pairs.append(tuple(os.path.join(base, c) for c in row[:2]))
    if not pairs:
        raise SslrtError(f"pairs file has no pairs: {path}")
    for image, audio in pairs:
        for p in (image, audio):
            if not os.path.isfile(p):
                raise SslrtError(f"{path}: file not found: {p}")
    return pairs


def _default_model() -> str:
    from sslrt.resolve import demo_model_dir

    return demo_model_dir()


BACKEND_HELP = ("auto | tensorrt | onnxruntime | onnxruntime-cuda | onnxruntime-trt | torch | torch-cuda "
                "(auto: TensorRT > ONNX Runtime CUDA > ONNX Runtime CPU, by what is installed and exported; "
                "`sslrt backends` lists them).")


@app.command()
def export(
    checkpoint: Optional[Path] = typer.Argument(None, help="PyTorch checkpoint (.pth / .pth.tar) in any released layout."),
    output: Path = typer.Option(None, "--output", "-o", help="Export directory (default: CHECKPOINT's name without its suffixes + _sslrt)."),
    opset: int = typer.Option(17, help="ONNX opset (>= 17)."),
    simplify: bool = typer.Option(True, help="Simplify the graph with onnxslim where the result still matches."),
    parity_pairs: Optional[Path] = typer.Option(None, help="CSV of image,audio pairs to measure parity on (default: generated inputs)."),
    int8: bool = typer.Option(False, "--int8", help="Also write statically quantized INT8 graphs for CPU."),
    calibration_pairs: Optional[Path] = typer.Option(None, help="CSV of image,audio pairs added to INT8 calibration."),
    encoders: bool = typer.Option(True, help="Also export the vision and audio encoders (reuse of shared inputs)."),
    fmt: str = typer.Option("onnx", "--format", help="onnx | tensorrt (tensorrt also writes the ONNX graphs it is built from)."),
    precision: str = typer.Option("fp32", help="fp32 | fp16: fp16 adds an fp16 ONNX graph (float32 I/O) and, with --format tensorrt, an fp16 engine."),
    fp16: bool = typer.Option(False, "--fp16", help="Same as --precision fp16."),
    batch: Optional[str] = typer.Option(None, "--batch", help="TensorRT batch profile MIN:OPT:MAX (default 1:8:32) or one static batch size."),
    workspace: Optional[int] = typer.Option(None, "--workspace", help="TensorRT builder workspace limit in MiB (default: TensorRT's)."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="TensorRT timing cache file, read before and updated after the build "
                                                "(default: one per TensorRT version and GPU under the sslrt cache)."),
    family: Optional[str] = typer.Option(None, "--family", help="Model family of the checkpoint (default: recognised from its keys)."),
    list_targets: bool = typer.Option(False, "--list", help="List the export targets and what this machine has for each, then exit."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest (or, with --list, the table) as JSON."),
):
    """Export a checkpoint to ONNX (+ fp16 ONNX, INT8, a TensorRT engine) with parity measured against PyTorch."""
    from sslrt.export import export_checkpoint, select_targets, targets_table

    if list_targets:
        table = targets_table()
        if as_json:
            print(json.dumps(table))
            return
        print("| target | format | precision | graphs | available here | what it is |\n|---|---|---|---|---|---|")
        for t in table:
            here = "yes" if t["available"] else "no: needs " + ", ".join(t["missing"])
            print(f"| {t['key']} | {t['format']} | {t['precision']} | {t['graphs']} | {here} | {t['description']} |")
        return
    if checkpoint is None:
        raise SslrtError("give a CHECKPOINT to export (or --list)")
    if fp16:
        if precision not in ("fp32", "fp16"):
            raise SslrtError(f"--fp16 contradicts --precision {precision}")
        precision = "fp16"
    targets = select_targets(fmt, precision, int8)
    profile = None
    if batch is not None:
        from sslrt.export.tensorrt import parse_profile

        profile = parse_profile(batch)
    out = output or checkpoint.with_name(checkpoint.name.split(".")[0] + "_sslrt")
    pairs = read_pairs_csv(str(parity_pairs)) if parity_pairs else None
    calib = read_pairs_csv(str(calibration_pairs)) if calibration_pairs else None
    exported = export_checkpoint(str(checkpoint), str(out), targets=targets, opset=opset, simplify=simplify,
                                 parity_pairs=pairs, encoders=encoders, calibration_pairs=calib, progress=_progress,
                                 batch=profile, workspace_mib=workspace, family=family,
                                 timing_cache=str(timing_cache) if timing_cache else None)
    if as_json:
        print(json.dumps(exported.manifest, indent=2))
        return
    cfg = exported.config
    print(f"exported {checkpoint} ({exported.spec.name}, width {cfg.width}) -> {exported.directory}")
    for key, art in exported.artifacts.items():
        extra = f"opset {art.get('opset')}" if "opset" in art else \
            f"TensorRT {art.get('tensorrt_version')} on {art.get('gpu', {}).get('name')}, batch {art.get('profile')}"
        print(f"  {art['file']}: {key}, {art['bytes'] / 1e6:.1f} MB, {extra}")
    for key, parity in exported.manifest["parity"].items():
        print(f"  parity {key}: max abs {parity['max_abs']:.2e}, argmax agreement {parity['argmax_agreement']:.0%}, "
              f"localization agreement {parity.get('localization_agreement', float('nan')):.0%} "
              f"on {parity['samples']} pairs ({'; '.join(parity.get('inputs', []))})")


@app.command()
def backends(as_json: bool = typer.Option(False, "--json", help="Print the table as JSON.")):
    """The backend table: what each backend runs, and whether this machine can run it."""
    from sslrt.engines import backend_table

    rows = [{"backend": r.name, "runs": r.artifact, "precisions": list(r.precisions), "device": r.device,
             "auto_rank": r.auto_rank, "available": bool(r.probe()), "install": r.install_hint} for r in backend_table().values()]
    if as_json:
        print(json.dumps(rows))
        return
    print("| backend | runs | precisions | device | chosen by auto | available here |\n|---|---|---|---|---|---|")
    for r in rows:
        here = "yes" if r["available"] else f"no: {r['install']}"
        print(f"| {r['backend']} | {r['runs']} | {', '.join(r['precisions'])} | {r['device']} | "
              f"{'rank ' + str(r['auto_rank']) if r['auto_rank'] is not None else 'never'} | {here} |")


@app.command()
def run(
    image: Optional[Path] = typer.Argument(None, help="Image file (JPEG, PNG, ...)."),
    audio: Optional[Path] = typer.Argument(None, help="Audio file (wav, flac, ogg, mp3; any rate)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Export directory or checkpoint (default: the shipped demo model)."),
    backend: str = typer.Option("onnxruntime", "--backend", "-b", help=BACKEND_HELP),
    precision: Optional[str] = typer.Option(None, help="fp32 | fp16 | int8 where the export has it (default fp32; auto: the best the chosen backend has)."),
    cuda_graph: bool = typer.Option(False, "--cuda-graph", help="tensorrt / torch-cuda: replay a CUDA graph captured for the batch size of the first call."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a summary."),
    save: Optional[Path] = typer.Option(None, "--save", help="Write the heatmap overlay PNG here (one pair)."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="CSV of image,audio per line: localize them all."),
    save_dir: Optional[Path] = typer.Option(None, "--save-dir", help="With --pairs: write one overlay PNG per pair here."),
    batch_size: int = typer.Option(8, help="Pairs per engine call with --pairs."),
    threads: Optional[int] = typer.Option(None, help="Intra-op threads of the engine (default: all cores)."),
    family: Optional[str] = typer.Option(None, "--family", help="Model family of a checkpoint (default: recognised from its keys)."),
    reuse_embeddings: bool = typer.Option(True, help="Run the encoder graphs and reuse embeddings of repeated inputs (else the fused graph)."),
    sounding_threshold: Optional[float] = typer.Option(None, "--sounding-threshold",
                                                       help="'No sound source' threshold in the family's units (default: the family's published one)."),
    ray: bool = typer.Option(False, "--ray", help="With --pairs (CSV or Parquet): run on a Ray cluster (a local one unless --ray-address) "
                             "into result shards under --output; a rerun skips the pairs done (pip install 'sslrt[ray]')."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to join (what `ray start --head` prints; implies --ray)."),
    ray_actors: int = typer.Option(1, "--ray-actors", help="With --ray: inference actors, one engine each (one GPU each on a cuda backend)."),
    output: Optional[Path] = typer.Option(None, "--output", help="With --ray: folder for the result shards, run.json and summary.json."),
    shard_format: str = typer.Option("parquet", "--shard-format", help="With --ray: parquet | jsonl."),
):
    """Localize the sound of AUDIO in IMAGE (or of every pair in --pairs)."""
    if ray or ray_address:
        if image is not None or audio is not None:
            raise SslrtError("--ray localizes a --pairs file, not IMAGE AUDIO")
        from sslrt.scale.cli import run_on_ray

        return run_on_ray(pairs, output, as_json=as_json, progress=_progress, model=str(model) if model else None,
                          backend=backend, precision=precision, address=ray_address, actors=ray_actors, batch_size=batch_size,
                          threads=threads, shard_format=shard_format, save_dir=str(save_dir) if save_dir else None,
                          family=family, sounding_threshold=sounding_threshold, reuse_embeddings=reuse_embeddings)
    from sslrt.runtime.overlay import render_overlay, save_png
    from sslrt.runtime.pipeline import Localizer

    if pairs is not None:
        if image is not None or audio is not None:
            raise SslrtError("give either IMAGE AUDIO or --pairs, not both")
        pair_list = read_pairs_csv(str(pairs))
    elif image is None or audio is None:
        raise SslrtError("give IMAGE and AUDIO (or --pairs FILE.csv)")
    else:
        pair_list = [(str(image), str(audio))]
    if save is not None and len(pair_list) != 1:
        raise SslrtError("--save writes one overlay; with --pairs use --save-dir")
    if save_dir is not None and not save_dir.is_dir():
        raise SslrtError(f"--save-dir folder does not exist: {save_dir}")
    if batch_size < 1:
        raise SslrtError("--batch-size must be >= 1")

    localizer = Localizer.open(str(model) if model else None, backend=backend, precision=precision,
                               threads=threads, progress=_progress, cuda_graph=cuda_graph, notify=lambda m: _err(f"sslrt: {m}"),
                               family=family, sounding_threshold=sounding_threshold, reuse_embeddings=reuse_embeddings)
    results = []
    overlays = []  # written only after every pair succeeded: a failed run leaves no partial output
    with _progress_bar(len(pair_list) > 1) as bar:
        task = bar.add_task("localizing", total=len(pair_list)) if bar else None
        for res in localizer.localize_many(pair_list, batch_size=batch_size):
            results.append(res)
            for w in res.warnings:
                _err(f"warning: {w}")
            if save is not None or save_dir is not None:
                from sslrt.preprocess import load_image

                target = save if save is not None else save_dir / f"{Path(res.image).stem}__{Path(res.audio).stem}.png"
                overlays.append((target, render_overlay(load_image(res.image), res.heatmap, res.bbox, res.peak,
                                                        sounding=res.sounding)))
            if bar:
                bar.advance(task)
    for target, picture in overlays:
        save_png(target, picture)
    if as_json:
        if len(results) == 1 and pairs is None:
            print(json.dumps(results[0].to_dict()))
        else:
            print(json.dumps({"backend": localizer.engine.backend, "precision": localizer.engine.precision,
                              "count": len(results), "results": [r.to_dict() for r in results]}))
    else:
        for res in results:
            print(res.summary())
        for target, _ in overlays:
            print(f"overlay: {target}")


@app.command()
def bench(
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Export directory or checkpoint (default: the shipped demo model)."),
    backends: str = typer.Option("onnxruntime", help="Comma-separated backends to time besides the torch fp32 reference."),
    precisions: str = typer.Option("fp32", help="Comma-separated precisions (fp32, int8, ...) where the export has them."),
    batch: str = typer.Option("1,8", help="Comma-separated batch sizes."),
    threads: Optional[int] = typer.Option(None, help="Intra-op threads of every engine (default: all cores)."),
    scope: str = typer.Option("engine,e2e", help="engine (ready tensors) and/or e2e (files -> results)."),
    e2e_pairs: int = typer.Option(64, help="Image/audio pairs of the end-to-end scope."),
    e2e_image_size: int = typer.Option(1024, help="Side of the end-to-end scope's JPEGs (decoding grows with it)."),
    seconds: float = typer.Option(2.0, help="Minimum timed seconds per engine row."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON here."),
    report: Optional[Path] = typer.Option(None, help="Write bench.md, bench.json and bench.png into this folder."),
):
    """Time every backend/precision against the paper's PyTorch path, in one run."""
    from sslrt.measure.bench import markdown_report, run_benchmark, write_report

    def split(text: str) -> list[str]:
        return [t.strip() for t in text.split(",") if t.strip()]

    try:
        batches = [int(b) for b in split(batch)]
    except ValueError:
        raise SslrtError(f"--batch must be comma-separated integers, got {batch!r}") from None
    if not batches or min(batches) < 1:
        raise SslrtError("--batch sizes must be >= 1")
    scopes = tuple(split(scope))
    if not scopes or set(scopes) - {"engine", "e2e"}:
        raise SslrtError(f"--scope takes engine and/or e2e, got {scope!r}")
    result = run_benchmark(str(model) if model else _default_model(), split(backends), split(precisions), batches,
                           threads=threads, scopes=scopes, e2e_pairs=e2e_pairs, min_seconds=seconds,
                           e2e_image_size=e2e_image_size, progress=_progress)
    if json_file:
        from sslrt.store.atomic import write_json_atomic

        write_json_atomic(str(json_file), result)
    if report:
        for path in write_report(result, str(report)):
            _err(f"wrote {path}")
    print(markdown_report(result))


@app.command("eval")
def evaluate(
    dataset: str = typer.Option(..., "--dataset", "-d", help="vggss | flickr | is3"),
    root: Path = typer.Option(..., "--root", help="Folder holding the test set's images and audio (searched by file name)."),
    annotations: Optional[Path] = typer.Option(None, help="Annotation file (vggss.json, flickr_test.csv, is3_synthetic3240_bbox.json); default: found under --root."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Export directory or checkpoint (default: the shipped demo model)."),
    backend: str = typer.Option("onnxruntime", "--backend", "-b", help="onnxruntime | torch"),
    precision: str = typer.Option("fp32", help="fp32 (other precisions where the export has them)."),
    out: Path = typer.Option(Path("sslrt_eval"), "--out", "-o", help="Folder for per_sample.csv, summary.json and summary.md."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Also write the summary JSON here."),
    batch_size: int = typer.Option(16, help="Pairs per engine call."),
    retrieval: int = typer.Option(1000, help="Cross-modal retrieval over the first N samples (0: off)."),
    restart: bool = typer.Option(False, help="Discard the per-sample results of an earlier run in --out."),
    limit: Optional[int] = typer.Option(None, help="Evaluate only the first N samples found."),
    threads: Optional[int] = typer.Option(None, help="Intra-op threads of the engine."),
    family: Optional[str] = typer.Option(None, "--family", help="Model family of a checkpoint (default: recognised from its keys)."),
    ray: bool = typer.Option(False, "--ray", help="Run on a Ray cluster (a local one unless --ray-address); same outputs (pip install 'sslrt[ray]')."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to join (implies --ray)."),
    ray_actors: int = typer.Option(1, "--ray-actors", help="With --ray: inference actors, one engine each."),
):
    """Evaluate on VGG-SS, Flickr-SoundNet or IS3 with the official metrics (resumable)."""
    from sslrt.datasets import DATASETS
    from sslrt.measure.evaluation import run_evaluation
    from sslrt.runtime.pipeline import Localizer

    if dataset not in DATASETS:
        raise SslrtError(f"unknown dataset {dataset!r}: choose from {', '.join(DATASETS)}")
    if not root.is_dir():
        raise SslrtError(f"--root folder not found: {root}")
    model_path = str(model) if model else _default_model()
    if ray or ray_address:
        from sslrt.scale.batch import RayLocalizer

        localizer = RayLocalizer(model_path, backend=backend, precision=precision, threads=threads, progress=_progress,
                                 family=family, address=ray_address, actors=ray_actors)
    else:
        localizer = Localizer.open(model_path, backend=backend, precision=precision, threads=threads, progress=_progress,
                                   family=family)
    with _progress_bar(True) as bar:
        task = bar.add_task(f"eval {dataset}", total=None) if bar else None
        summary = run_evaluation(dataset, str(root), localizer, str(out), annotations=str(annotations) if annotations else None,
                                 batch_size=batch_size, retrieval=retrieval, restart=restart, limit=limit,
                                 model_name=model_path, progress=(lambda n: bar.advance(task, n)) if bar else None)
    if json_file:
        from sslrt.store.atomic import write_json_atomic

        write_json_atomic(str(json_file), summary)
    m = summary["metrics"]
    print(f"{dataset}: {summary['evaluated']} samples ({summary['missing']} missing"
          + (f", e.g. {', '.join(summary['missing_examples'][:3])}" if summary["missing"] else "") + ")")
    print("  " + "  ".join(f"{k} {v:.2f}" for k, v in m.items()))
    if "retrieval" in summary:
        print("  retrieval: " + "  ".join(f"{k} {v:.1f}" for k, v in summary["retrieval"].items()))
    t = summary["timing"]
    print(f"  {t['pairs_this_run']} pairs in {t['seconds']:.1f} s ({t['pairs_per_second']:.1f}/s)"
          + (f", {t['resumed']} resumed from {out / 'per_sample.csv'}" if t["resumed"] else ""))
    if summary.get("errors"):
        print(f"  {summary['errors']} pairs failed, e.g. " + "; ".join(e["error"] for e in summary["error_examples"][:3]))
    print(f"  results: {out / 'summary.md'}, {out / 'per_sample.csv'}")


@app.command()
def serve(
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Export directory or checkpoint (default: the shipped demo model)."),
    backend: str = typer.Option("onnxruntime", "--backend", "-b", help=BACKEND_HELP),
    precision: Optional[str] = typer.Option(None, help="fp32 | fp16 | int8 where the export has it."),
    replicas: int = typer.Option(1, "--replicas", help="Replicas, one engine each (one GPU each on a cuda backend)."),
    max_batch: int = typer.Option(8, "--max-batch", help="Most requests batched onto one engine call."),
    batch_wait_ms: float = typer.Option(5.0, "--batch-wait-ms", help="How long a batch waits to fill."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (localhost unless told otherwise)."),
    port: int = typer.Option(8000, "--port", help="HTTP port."),
    max_request_mb: float = typer.Option(32.0, "--max-request-mb", help="Largest request body accepted (else 413)."),
    threads: Optional[int] = typer.Option(None, help="Intra-op threads of each replica's engine."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to join (default: start a local one)."),
):
    """HTTP service on Ray Serve: POST /localize (multipart image + audio), GET /healthz, GET /models."""
    from sslrt.scale.cli import serve as serve_forever

    serve_forever(model=str(model) if model else None, backend=backend, precision=precision, replicas=replicas,
                  max_batch=max_batch, batch_wait_ms=batch_wait_ms, host=host, port=port, max_request_mb=max_request_mb,
                  threads=threads, address=ray_address, progress=_progress)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(ctx: typer.Context):
    """Train the paper's network on generated scenes (defaults = the shipped demo run; needs torch).

    Options are the trainer's: --out-dir, --width, --epochs, --batch-size, --lr, --seed, --export
    CKPT, ... (`sslrt train --help-trainer` lists them all).
    """
    try:
        from sslrt.train.__main__ import main as train_main
    except ImportError as exc:
        raise BackendUnavailable(f"training needs PyTorch ({exc.name} is missing): pip install 'sslrt[export]'") from None
    args = list(ctx.args)
    train_main(["--help" if a == "--help-trainer" else a for a in args])


@app.command()
def demo(
    out: Path = typer.Option(Path("sslrt_demo.png"), "--out", "-o", help="Where to write the overlay PNG."),
    seed: int = typer.Option(7, help="Seed of the generated scene."),
    backend: str = typer.Option("onnxruntime", "--backend", "-b", help="onnxruntime | torch"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a summary."),
):
    """Localize a generated scene with the shipped demo model: no files, no network needed."""
    from sslrt.demo import run_demo

    report = run_demo(out, seed=seed, backend=backend)
    if as_json:
        print(json.dumps(report))
        return
    for line in report["lines"]:
        print(line)


def _version(value: bool) -> None:
    if value:
        from sslrt.version import __version__

        print(f"sslrt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit.")):
    """Sound source localization engine for the ICCV 2023 cross-modal alignment model and its peers."""


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors -> one line on stderr, exit code 2; interruption -> 130;
    warnings -> one line each."""
    def _one_line_warning(message, category, filename, lineno, file=None, line=None):
        _err(f"warning: {message}")

    warnings.showwarning = _one_line_warning
    try:
        code = app(args=argv, prog_name="sslrt", standalone_mode=False)
    except SslrtError as exc:
        _err(f"error: {exc}")
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        _err("interrupted")
        sys.exit(130)
    except Exception as exc:  # usage errors of the CLI framework (they carry an exit code)
        exit_code = getattr(exc, "exit_code", None)
        if exit_code is not None and hasattr(exc, "format_message"):
            _err(f"error: {exc.format_message()}")
            sys.exit(exit_code)
        raise
    # Without standalone mode the framework returns an exit code instead of exiting (130 when it
    # caught the interruption itself); a code other than 0 must reach the shell.
    if isinstance(code, int) and code != 0:
        if code == 130:
            _err("interrupted")
        sys.exit(code)


if __name__ == "__main__":
    main()
