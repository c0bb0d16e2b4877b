"""The `sslrt` command: one subcommand per job (export, run, demo, ...).

Errors in the user's input end as one line on stderr and exit code 2 (see `main`); JSON goes to
stdout alone, progress and warnings to stderr.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Optional

import typer

from sslrt.errors import BackendUnavailable, SslrtError
from sslrt.progress import progress_bar as _progress_bar
from sslrt.progress import step_printer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Sound source localization engine for the ICCV 2023 cross-modal alignment model.")


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


# Steps of long work are shown to a person at a terminal; logs and pipes get only results/errors.
_progress = step_printer()


def read_pairs_csv(path: str) -> list[tuple[str, str]]:
    """`image,audio` per line (a header line `image,audio` is allowed); relative paths are relative to the CSV.

    The file is UTF-8 text (a byte-order mark is allowed); anything else is one line of error."""
    if not os.path.isfile(path):
        raise SslrtError(f"pairs file not found: {path}")
    base = os.path.dirname(os.path.abspath(path))
    pairs = []
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise SslrtError(f"pairs file cannot be read: {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        lineno = data[:exc.start].count(b"\n") + 1
        raise SslrtError(f"{path}:{lineno}: the pairs file is not UTF-8 text (byte {data[exc.start]:#04x}): "
                         "save it as UTF-8") from None
    if "\x00" in text:
        raise SslrtError(f"{path}:{text[:text.index(chr(0))].count(chr(10)) + 1}: the pairs file holds a NUL byte: "
                         "not a text file")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            lineno = reader.line_num
            row = [c.strip() for c in row]
            if not row or not any(row) or row[0].startswith("#"):
                continue
            if not pairs and [c.lower() for c in row[:2]] == ["image", "audio"]:
                continue
            if len(row) < 2 or not row[0] or not row[1]:
                shown = ",".join(row)
                raise SslrtError(f"{path}:{lineno}: expected 'image,audio', got {shown[:200]!r}")
            pairs.append(tuple(os.path.join(base, c) for c in row[:2]))
    except csv.Error as exc:
        raise SslrtError(f"{path}:{reader.line_num}: not a CSV line ({exc})") from None
    if not pairs:
        raise SslrtError(f"pairs file has no pairs: {path}")
    for image, audio in pairs:
        for p in (image, audio):
            if not os.path.isfile(p):
                raise SslrtError(f"{path}: file not found: {p!r}"[:400])
    return pairs


def _overlay_name(image: str, audio: str, row: int, taken: set[str], ext: str = "png") -> str:
    """IMAGE-STEM__AUDIO-STEM.png (or .jpg), with the pair's row number where another pair of the
    run has that name already (d1/x.jpg,d1/y.wav and d2/x.jpg,d2/y.wav)."""
    base = f"{Path(image).stem}__{Path(audio).stem}"
    name, n = f"{base}.{ext}", 0
    while name in taken:
        n += 1
        name = f"{base}_{row}.{ext}" if n == 1 else f"{base}_{row}_{n}.{ext}"
    taken.add(name)
    return name


CHECKPOINT_SUFFIXES = (".pth.tar", ".pth", ".pt", ".tar", ".ckpt")


def export_stem(name: str) -> str:
    """A checkpoint's file name without its checkpoint suffix (my.model.v2.pth -> my.model.v2);
    other dots are part of the name."""
    for suffix in CHECKPOINT_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[:-len(suffix)]
    return name


def _is_video(path: Path) -> bool:
    from sslrt.preprocess.media import is_video_file

    return is_video_file(path)


MAX_WORKERS = 256  # --workers: threads or processes beside the engine
_AS_COMMAND = False  # main() reads the process's own arguments: this process is the command


def process_age_ms() -> float | None:
    """Milliseconds since this process started (Python's start-up and the imports, when called as
    a command begins); None where /proc does not say (10 ms resolution)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = float(f.read().rpartition(")")[2].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, (uptime - start_ticks / os.sysconf("SC_CLK_TCK")) * 1e3)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _keep_freed_memory() -> None:
    """Many pairs ahead, in the `sslrt` command's own process: malloc keeps the memory each pair
    frees for the next one instead of faulting it back in page by page (sslrt.runtime.allocator;
    1.3-1.6x the preparation throughput). Not in-process callers' (tests, a user's main())."""
    if _AS_COMMAND:
        from sslrt.runtime.allocator import keep_freed_memory

        keep_freed_memory()


def _draw_overlay(image, res):
    """The overlay of one result: `image` an RGB array or the image file (decoded again here, in a
    drawing thread, rather than kept in memory from the preparation)."""
    from sslrt.preprocess import load_image
    from sslrt.runtime.overlay import render_overlay

    rgb = load_image(image) if isinstance(image, str) else image
    return render_overlay(rgb, res.heatmap, res.bbox, res.peak, sounding=res.sounding)


def _default_model() -> str:
    from sslrt.resolve import demo_model_dir

    return demo_model_dir()


EXACT_INPUTS_HELP = ("Input tensors bit for bit as the official code computes them (the image resize in its float32 "
                     "operation order, ~7x its cost; SSL-TIE's mel spectrogram on torch's kernels, which needs torch). "
                     "Default: within ~1e-6.")
BACKEND_HELP = ("auto | tensorrt | onnxruntime | onnxruntime-cuda | onnxruntime-trt | openvino | torch | torch-cuda "
                "(auto: TensorRT > ONNX Runtime CUDA > OpenVINO CPU > ONNX Runtime CPU, by what is installed and exported; "
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
    out = output or checkpoint.with_name(export_stem(checkpoint.name) + "_sslrt")
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
def models(as_json: bool = typer.Option(False, "--json", help="Print the table as JSON.")):
    """The model families sslrt knows: paper, map, audio front end, evaluation rules, "no sound source" threshold."""
    from sslrt.spec import all_specs

    rows = []
    for spec in all_specs():
        a = spec.audio
        front = (f"{a.reader}, {a.segment} {a.segment_seconds:g} s, {a.spectrogram} n_fft {a.n_fft} hop {a.hop}"
                 f"{f' {a.n_mels} mels' if a.n_mels else ''}, {a.log}, {list(a.shape)}")
        rows.append({"family": spec.name, "paper": spec.title, "map_size": spec.map_size, "heads": spec.heads,
                     "heatmap_units": spec.heatmap_units, "audio_front_end": front, "eval_upsample": spec.eval_upsample,
                     "eval_normalize": spec.eval_normalize, "sounding_threshold": spec.sounding_threshold,
                     "sounding_units": spec.sounding_units, "reported": spec.reported})
    if as_json:
        print(json.dumps(rows))
        return
    print("| family | paper | map | units | audio front end | is3 / vggss upsampling | no-sound threshold |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        up = f"{r['eval_upsample'].get('is3')} / {r['eval_upsample'].get('vggss')}"
        print(f"| {r['family']} | {r['paper']} | {r['map_size']}x{r['map_size']} | {r['heatmap_units']} | "
              f"{r['audio_front_end']} | {up} | {r['sounding_threshold']} ({r['sounding_units']}) |")


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
    image: Optional[Path] = typer.Argument(None, help="Image file (JPEG, PNG, ...) or a video file (its frame at --at, default the middle one)."),
    audio: Optional[Path] = typer.Argument(None, help="Audio file (wav, flac, ogg, mp3, m4a, opus, a video's audio, ...; any rate). "
                                           "Optional with a video: its own audio, the window centred on the frame."),
    at: Optional[float] = typer.Option(None, "--at", help="With a video: the time (seconds) of the frame and of the audio window's centre (default: the middle)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Export directory or checkpoint (default: the shipped demo model)."),
    backend: str = typer.Option("onnxruntime", "--backend", "-b", help=BACKEND_HELP),
    precision: Optional[str] = typer.Option(None, help="fp32 | fp16 | int8 where the export has it (default fp32; auto: the best the chosen backend has)."),
    cuda_graph: bool = typer.Option(False, "--cuda-graph", help="tensorrt / torch-cuda: replay a CUDA graph captured for the batch size of the first call."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a summary."),
    save: Optional[Path] = typer.Option(None, "--save", help="Write the heatmap overlay here (one pair): PNG or JPEG by the name."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="CSV of image,audio per line: localize them all."),
    save_dir: Optional[Path] = typer.Option(None, "--save-dir", help="With --pairs: write one overlay per pair here (see --overlay-format)."),
    overlay_format: Optional[str] = typer.Option(None, "--overlay-format", help="With --save-dir: png (the default, lossless) or jpg "
                                                 "(~10x faster to encode and ~5x smaller for a 1024 px overlay)."),
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
    exact_inputs: bool = typer.Option(False, "--exact-inputs", help=EXACT_INPUTS_HELP),
    workers: Optional[int] = typer.Option(None, "--workers", help="With --pairs: decoding threads or processes beside the engine "
                                          "(default: one per core up to 4 on a CPU; every core but one on a GPU; 0: none)."),
    processes: Optional[bool] = typer.Option(None, "--worker-processes/--worker-threads", help="With --pairs: --workers are processes or threads "
                                             "(default: processes beside a GPU engine on 4+ cores, where threads cannot keep up)."),
):
    """Localize the sound of AUDIO in IMAGE (or of every pair in --pairs)."""
    if overlay_format is not None:
        overlay_format = {"jpeg": "jpg"}.get(overlay_format.lower(), overlay_format.lower())
        if overlay_format not in ("png", "jpg"):
            raise SslrtError(f"--overlay-format must be png or jpg, got {overlay_format!r}")
        if save_dir is None:
            raise SslrtError("--overlay-format goes with --save-dir (--save takes the format from its file name)")
        if (ray or ray_address) and overlay_format != "png":
            raise SslrtError("--overlay-format jpg is for local runs; --ray writes PNG overlays")
    if ray or ray_address:
        if image is not None or audio is not None:
            raise SslrtError("--ray localizes a --pairs file, not IMAGE AUDIO")
        from sslrt.scale.cli import run_on_ray

        return run_on_ray(pairs, output, as_json=as_json, progress=_progress, model=str(model) if model else None,
                          backend=backend, precision=precision, address=ray_address, actors=ray_actors, batch_size=batch_size,
                          threads=threads, shard_format=shard_format, save_dir=str(save_dir) if save_dir else None,
                          family=family, sounding_threshold=sounding_threshold, reuse_embeddings=reuse_embeddings,
                          exact_inputs=exact_inputs)
    from sslrt.engines.base import check_batch_size
    from sslrt.runtime.overlay import StagedPictures, check_picture_path, remove_stale_pictures
    from sslrt.machine import usable_cores
    from sslrt.runtime.pipeline import Localizer

    startup_ms = process_age_ms() if _AS_COMMAND else None  # Python and the imports of this command

    video_input = None
    if pairs is not None:
        if image is not None or audio is not None:
            raise SslrtError("give either IMAGE AUDIO or --pairs, not both")
        pair_list = read_pairs_csv(str(pairs))
    elif image is not None and _is_video(image):
        from sslrt.video.frames import check_video_input

        video_info = check_video_input(str(image), str(audio) if audio is not None else None, at)
        video_input = True
        pair_list = []  # built once the model's spec (its audio window) is known
    elif image is None or audio is None:
        raise SslrtError("give IMAGE and AUDIO (or --pairs FILE.csv)")
    else:
        pair_list = [(str(image), str(audio))]
    if at is not None and video_input is None:
        raise SslrtError("--at picks a time in a video: give a video file as IMAGE")
    if save is not None and len(pair_list) != 1 and video_input is None:
        raise SslrtError("--save writes one overlay; with --pairs use --save-dir")
    if save is not None:
        check_picture_path(save, "overlay (--save)")
    if save_dir is not None and not save_dir.is_dir():
        raise SslrtError(f"--save-dir folder does not exist: {save_dir}")
    if save is not None or save_dir is not None:
        remove_stale_pictures(save_dir if save_dir is not None else os.path.dirname(os.path.abspath(save)))
    check_batch_size(batch_size, "--batch-size")
    if workers is not None and not 0 <= workers <= MAX_WORKERS:
        raise SslrtError(f"--workers must be between 0 and {MAX_WORKERS}, got {workers}")
    if len(pair_list) > 1:
        _keep_freed_memory()

    localizer = Localizer.open(str(model) if model else None, backend=backend, precision=precision,
                               threads=threads, progress=_progress, cuda_graph=cuda_graph, notify=lambda m: _err(f"sslrt: {m}"),
                               family=family, sounding_threshold=sounding_threshold, reuse_embeddings=reuse_embeddings,
                               exact_inputs=exact_inputs)
    try:  # the engines and any worker processes stop with the command, also when it fails
        if video_input is not None:
            from sslrt.video.frames import video_pair

            video_input = video_pair(str(image), str(audio) if audio is not None else None, at, localizer.spec, video_info)
            pair_list = [(video_input.rgb, video_input.audio)]
        results = []
        overlays = []  # the targets, renamed into place only after every pair succeeded
        taken: set[str] = set()  # names given in this run: two pairs never share an overlay file
        drawing_threads = min(4, usable_cores()) if len(pair_list) > 1 else 0
        with StagedPictures(drawing_threads) as staged, _progress_bar(len(pair_list) > 1) as bar:
            task = bar.add_task("localizing", total=len(pair_list)) if bar else None
            for row, res in enumerate(localizer.localize_many(pair_list, batch_size=batch_size, workers=workers, processes=processes), start=1):
                if video_input is not None:
                    res.image, res.audio = video_input.image_name, video_input.audio_name
                results.append(res)
                for w in res.warnings:
                    _err(f"warning: {w}")
                if save is not None or save_dir is not None:
                    target = save if save is not None else save_dir / _overlay_name(res.image, res.audio, row, taken, overlay_format or "png")
                    staged.add_later(target, functools.partial(_draw_overlay, video_input.rgb if video_input is not None else res.image, res))
                if bar:
                    bar.advance(task)
            overlays = staged.commit()
    finally:
        localizer.close()
    if results and startup_ms is not None:
        results[0].timings_ms["startup"] = startup_ms
    if as_json:
        if len(results) == 1 and pairs is None:
            print(json.dumps(results[0].to_dict()))
        else:
            print(json.dumps({"backend": localizer.engine.backend, "precision": localizer.engine.precision,
                              "count": len(results), "results": [r.to_dict() for r in results]}))
    else:
        for res in results:
            print(res.summary())
        for target in overlays:
            print(f"overlay: {target}")


@app.command()
def video(
    source: Path = typer.Argument(..., metavar="IN", help="Video file (any container/codec FFmpeg reads) with an audio stream."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Overlay video (default: IN's name + _sslrt.mp4 here). H.264 in MP4; .mkv/.mov also work."),
    fps: float = typer.Option(4.0, "--fps", help="Sampled times per second (0: every frame); frames between them show interpolated heatmaps."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Export directory or checkpoint (default: the shipped demo model)."),
    backend: str = typer.Option("onnxruntime", "--backend", "-b", help=BACKEND_HELP),
    precision: Optional[str] = typer.Option(None, help="fp32 | fp16 | int8 where the export has it (default fp32)."),
    start: Optional[float] = typer.Option(None, "--start", help="Process from this time (seconds)."),
    end: Optional[float] = typer.Option(None, "--end", help="Process up to this time (seconds)."),
    no_video: bool = typer.Option(False, "--no-video", help="Write the track only, no overlay video."),
    track: Optional[Path] = typer.Option(None, "--track", help="JSON Lines track (default: OUT with .jsonl)."),
    csv_out: bool = typer.Option(False, "--csv", help="Also write the track as CSV (beside the JSON Lines)."),
    heatmaps: bool = typer.Option(False, "--heatmaps", help="Put each sampled time's native heatmap in the track."),
    as_json: bool = typer.Option(False, "--json", help="Print the track (JSON Lines) on stdout instead of a summary."),
    batch_size: int = typer.Option(4, help="Sampled frames per engine call."),
    threads: Optional[int] = typer.Option(None, help="Intra-op threads of the engine (default: all cores)."),
    codec: Optional[str] = typer.Option(None, "--codec", help="Video encoder (default libx264, else mpeg4)."),
    family: Optional[str] = typer.Option(None, "--family", help="Model family of a checkpoint (default: recognised from its keys)."),
    sounding_threshold: Optional[float] = typer.Option(None, "--sounding-threshold", help="'No sound source' threshold in the family's units."),
):
    """Where the sound comes from, frame by frame: an overlay video and a track (streaming)."""
    from sslrt.preprocess.media import probe
    from sslrt.runtime.pipeline import Localizer
    from sslrt.video import VideoOptions, localize_video
    from sslrt.video.job import check_media, time_range

    info = probe(source, "video")  # bad input fails before the model loads
    check_media(info)
    time_range(info, start, end)
    stem = source.name.rsplit(".", 1)[0] + "_sslrt"
    out = None if no_video else (output or Path(stem + ".mp4"))
    track_path = track or (out.with_suffix(".jsonl") if out is not None else Path(stem + ".jsonl"))
    csv_path = track_path.with_suffix(".csv") if csv_out else None
    _keep_freed_memory()
    localizer = Localizer.open(str(model) if model else None, backend=backend, precision=precision, threads=threads,
                               progress=_progress, notify=lambda m: _err(f"sslrt: {m}"), family=family,
                               sounding_threshold=sounding_threshold)
    options = VideoOptions(fps=fps, start=start, end=end, batch_size=batch_size, video=not no_video, heatmaps=heatmaps,
                           codec=codec)
    with _progress_bar(True, fields=("speed",)) as bar:
        task = bar.add_task("frames", total=None, speed="") if bar else None

        def show(frames: int, done: float, total: float) -> None:
            if bar:
                import time as _time

                elapsed = _time.perf_counter() - t0
                rtf = elapsed / done if done > 0 else float("nan")
                bar.update(task, completed=frames, total=round(total * info.video.fps) if total and info.video.fps else None,
                           speed=f"{frames / max(elapsed, 1e-9):.1f} fps, RTF {rtf:.2f}")

        import time as _time

        t0 = _time.perf_counter()
        result = localize_video(localizer, str(source), str(out) if out else None, str(track_path),
                                str(csv_path) if csv_path else None, options, progress=show)
    for note in result.notes:
        _err(f"warning: {note}")
    if as_json:
        with open(track_path) as f:
            for line in f:
                sys.stdout.write(line)
        return
    s = result.stages
    print(f"{source}: {result.frames} frames, {result.samples} sampled times ({fps:g}/s) over {result.media_seconds:.2f} s "
          f"in {result.wall_seconds:.2f} s (real-time factor {result.rtf:.2f}) on {localizer.describe()}")
    print("  busy seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in s.items()))
    if out is not None:
        print(f"overlay video: {out} ({result.codec})")
    print(f"track: {track_path}" + (f", {csv_path}" if csv_path else ""))


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
    rounds: int = typer.Option(3, help="Interleaved rounds: each round times every row of a scope in turn, so that a machine "
                                       "whose speed drifts slows the reference and the other rows alike. Every engine is then "
                                       "open at once, and each round is a full end-to-end pass. 1: one row after the other."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON here."),
    report: Optional[Path] = typer.Option(None, help="Write bench.md, bench.json and bench.png into this folder."),
    models_list: Optional[str] = typer.Option(None, "--models", help="Comma-separated models (export directories or checkpoints): "
                                                                     "one side-by-side table of the families' speed and INT8 agreement."),
):
    """Time every backend/precision against the paper's PyTorch path, in one run."""
    from sslrt.measure.bench import markdown_report, run_benchmark, write_report

    def split(text: str) -> list[str]:
        return [t.strip() for t in text.split(",") if t.strip()]

    try:
        batches = [int(b) for b in split(batch)]
    except ValueError:
        raise SslrtError(f"--batch must be comma-separated integers, got {batch!r}") from None
    if not batches:
        raise SslrtError("--batch sizes must be >= 1")
    from sslrt.engines.base import check_batch_size, check_threads

    for b in batches:
        check_batch_size(b, "--batch sizes")
    check_threads(threads, "--threads")
    if not 1 <= rounds <= 100:
        raise SslrtError(f"--rounds must be between 1 and 100, got {rounds}")
    if e2e_pairs < 1 or e2e_pairs > 100_000:
        raise SslrtError(f"--e2e-pairs must be between 1 and 100000, got {e2e_pairs}")
    _keep_freed_memory()  # end to end measured as `sslrt run --pairs` runs it
    scopes = tuple(split(scope))
    if not scopes or set(scopes) - {"engine", "e2e"}:
        raise SslrtError(f"--scope takes engine and/or e2e, got {scope!r}")
    if models_list is not None:
        from sslrt.measure.bench import compare_models, models_markdown

        if model is not None:
            raise SslrtError("give either --model or --models")
        if not split(models_list):
            raise SslrtError("--models needs at least one model")
        result = compare_models(split(models_list), split(backends), split(precisions), batches, threads=threads,
                                e2e_pairs=e2e_pairs, e2e_image_size=e2e_image_size, min_seconds=seconds, rounds=rounds,
                                progress=_progress)
        text = models_markdown(result)
        if json_file:
            from sslrt.store.atomic import write_json_atomic

            write_json_atomic(str(json_file), result)
        if report:
            from sslrt.store.atomic import atomic_path, write_json_atomic

            os.makedirs(report, exist_ok=True)
            write_json_atomic(str(report / "models.json"), result)
            with atomic_path(str(report / "models.md")) as tmp:
                Path(tmp).write_text(text)
            _err(f"wrote {report / 'models.md'}")
        print(text)
        return
    result = run_benchmark(str(model) if model else _default_model(), split(backends), split(precisions), batches,
                           threads=threads, scopes=scopes, e2e_pairs=e2e_pairs, min_seconds=seconds,
                           e2e_image_size=e2e_image_size, rounds=rounds, progress=_progress)
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
    models_list: Optional[str] = typer.Option(None, "--models", help="Comma-separated models: evaluate each (into OUT/<n>_<family>) "
                                                                     "and print one side-by-side table."),
    ray: bool = typer.Option(False, "--ray", help="Run on a Ray cluster (a local one unless --ray-address); same outputs (pip install 'sslrt[ray]')."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to join (implies --ray)."),
    ray_actors: int = typer.Option(1, "--ray-actors", help="With --ray: inference actors, one engine each."),
    exact_inputs: bool = typer.Option(False, "--exact-inputs", help=EXACT_INPUTS_HELP),
):
    """Evaluate on VGG-SS, Flickr-SoundNet or IS3 with the official metrics (resumable)."""
    from sslrt.datasets import DATASETS
    from sslrt.measure.evaluation import check_options, run_evaluation
    from sslrt.runtime.pipeline import Localizer

    if dataset not in DATASETS:
        raise SslrtError(f"unknown dataset {dataset!r}: choose from {', '.join(DATASETS)}")
    if not root.is_dir():
        raise SslrtError(f"--root folder not found: {root}")
    check_options(str(out), batch_size, retrieval, limit)
    _keep_freed_memory()
    if json_file is not None and json_file.is_dir():
        raise SslrtError(f"--json must name a file, and {json_file} is a folder")
    if models_list is not None:
        if model is not None or family is not None:
            raise SslrtError("give either --model (with --family) or --models")
        names = [m.strip() for m in models_list.split(",") if m.strip()]
        if not names:
            raise SslrtError("--models needs at least one model")
        rows = []
        for i, name in enumerate(names):
            loc = Localizer.open(name, backend=backend, precision=precision, threads=threads, progress=_progress,
                                 exact_inputs=exact_inputs)
            folder = out / f"{i}_{loc.spec.name}"
            summary = run_evaluation(dataset, str(root), loc, str(folder), annotations=str(annotations) if annotations else None,
                                     batch_size=batch_size, retrieval=retrieval, restart=restart, limit=limit, model_name=name)
            loc.close()
            rows.append((name, summary))
        keys = list(rows[0][1]["metrics"])
        print(f"| model | family | samples | {' | '.join(keys)} | pairs/s |")
        print("|---|---|---|" + "---|" * len(keys) + "---|")
        for name, summary in rows:
            print(f"| {name} | {summary['family']} | {summary['evaluated']} | "
                  + " | ".join(f"{summary['metrics'][k]:.2f}" for k in keys)
                  + f" | {summary['timing']['pairs_per_second']:.1f} |")
        return
    model_path = str(model) if model else _default_model()
    if ray or ray_address:
        from sslrt.scale.batch import RayLocalizer

        localizer = RayLocalizer(model_path, backend=backend, precision=precision, threads=threads, progress=_progress,
                                 family=family, address=ray_address, actors=ray_actors, exact_inputs=exact_inputs)
    else:
        localizer = Localizer.open(model_path, backend=backend, precision=precision, threads=threads, progress=_progress,
                                   family=family, exact_inputs=exact_inputs)
    try:
        with _progress_bar(True) as bar:
            task = bar.add_task(f"eval {dataset}", total=None) if bar else None
            summary = run_evaluation(dataset, str(root), localizer, str(out), annotations=str(annotations) if annotations else None,
                                     batch_size=batch_size, retrieval=retrieval, restart=restart, limit=limit,
                                     model_name=model_path, progress=(lambda n: bar.advance(task, n)) if bar else None)
    finally:
        localizer.close()
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
    ingress: str = typer.Option("proxy", "--ingress",
                                help="proxy: Serve's HTTP proxy actor, bound to --host only. haproxy: Serve's HAProxy "
                                     "ingress, ~1.5x the throughput on 2 cores; HAProxy also opens its stats (8404) and "
                                     "metrics (9101) ports on all interfaces."),
):
    """HTTP service on Ray Serve: POST /localize (multipart image + audio), GET /healthz, GET /models."""
    from sslrt.scale.cli import serve as serve_forever

    serve_forever(model=str(model) if model else None, backend=backend, precision=precision, replicas=replicas,
                  max_batch=max_batch, batch_wait_ms=batch_wait_ms, host=host, port=port, max_request_mb=max_request_mb,
                  threads=threads, address=ray_address, ingress=ingress, progress=_progress)


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
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to write the overlay (default sslrt_demo.png, with --video sslrt_demo.mp4)."),
    seed: int = typer.Option(7, help="Seed of the generated scene."),
    backend: str = typer.Option("onnxruntime", "--backend", "-b", help="onnxruntime | torch"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a summary."),
    video_demo: bool = typer.Option(False, "--video", help="A moving scene: generate a short clip, run `sslrt video` on it, write the overlay video."),
):
    """Localize a generated scene with the shipped demo model: no files, no network needed."""
    from sslrt.demo import run_demo, run_video_demo

    if video_demo:
        report = run_video_demo(out or Path("sslrt_demo.mp4"), seed=seed, backend=backend)
    else:
        report = run_demo(out or Path("sslrt_demo.png"), seed=seed, backend=backend)
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


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: unwinds like KeyboardInterrupt (every `finally` runs, so
    staging folders and temp files are removed), but is not caught by the CLI framework, which
    would print a blank line of its own."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _install_signal_handlers() -> dict:
    """SIGINT and SIGTERM -> Interrupted in the main thread, once: a second signal while the first
    unwinds is ignored, so the cleanup it runs is not cut short. Returns the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    fired = []

    def handler(signum, frame):
        if fired:
            return
        fired.append(signum)
        raise Interrupted(signum)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            if signal.getsignal(sig) is signal.SIG_IGN:  # ignored by whoever started us (nohup, &): keep it so
                continue
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):
            pass
    return previous


def _one_line(text: str) -> str:
    return " ".join(str(text).split("\n")).replace("\r", " ")


# -- the quick path of the commands a person runs often ---------------------------------------
# The CLI framework coerces every option through pydantic (~0.15-0.3 s of imports and schema
# building on each call, as much as numpy, OpenCV and ONNX Runtime together). For well-formed
# command lines of these commands, whose options are all plain (str, int, float, Path, flags),
# the values are parsed here from the same declarations; anything else (--help, a mistake, an
# option this parser does not know) goes to the framework, which gives its usual messages.
QUICK_COMMANDS = ("run",)


def _plain_type(annotation):
    import typing

    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Union and len(args) == 1:
        annotation = args[0]
    return annotation if annotation in (str, int, float, Path, bool) else None


@functools.lru_cache(maxsize=None)
def _quick_declarations(name: str):
    """(positional [(param, type, required)], options {flag: (param, type, value for a flag)},
    defaults) of command `name`, or None where a parameter is not plain."""
    import inspect
    import typing

    from typer.models import ArgumentInfo, OptionInfo

    command = next((c for c in app.registered_commands if (c.name or c.callback.__name__) == name), None)
    if command is None:
        return None
    hints = typing.get_type_hints(command.callback)
    positional, options, defaults = [], {}, {}
    for param in inspect.signature(command.callback).parameters.values():
        info, kind = param.default, _plain_type(hints.get(param.name))
        if kind is None or not isinstance(info, (ArgumentInfo, OptionInfo)) or info.callback or info.envvar \
                or info.parser or info.min is not None or info.max is not None or info.exists or info.default is ...:
            return None
        defaults[param.name] = info.default
        if isinstance(info, ArgumentInfo):
            positional.append((param.name, kind))
            continue
        decls = info.param_decls or (f"--{param.name.replace('_', '-')}",)
        if kind is bool and not info.param_decls:
            decls = (f"--{param.name.replace('_', '-')}/--no-{param.name.replace('_', '-')}",)
        for decl in decls:
            for i, flag in enumerate(decl.split("/")):
                options[flag.strip()] = (param.name, kind, i == 0) if kind is bool else (param.name, kind, None)
    return positional, options, defaults


def fast_parse(argv: list[str]):
    """(callback, keyword arguments) for a well-formed command line of QUICK_COMMANDS, else None."""
    if not argv or argv[0] not in QUICK_COMMANDS:
        return None
    declared = _quick_declarations(argv[0])
    if declared is None:
        return None
    positional, options, kwargs = declared[0], declared[1], dict(declared[2])
    command = next(c for c in app.registered_commands if (c.name or c.callback.__name__) == argv[0])
    tokens, free = list(argv[1:]), []
    try:
        while tokens:
            token = tokens.pop(0)
            if token == "--" or token == "-":
                return None
            if not token.startswith("-"):
                free.append(token)
                continue
            flag, _, value = token.partition("=")
            if flag not in options:
                return None
            name, kind, flag_value = options[flag]
            if kind is bool:
                if value:
                    return None
                kwargs[name] = flag_value
                continue
            if not value:
                if not tokens:
                    return None
                value = tokens.pop(0)
            kwargs[name] = kind(value)
        if len(free) > len(positional):
            return None
        for (name, kind), value in zip(positional, free):
            kwargs[name] = kind(value)
    except ValueError:
        return None
    return command.callback, kwargs


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors -> one line on stderr, exit code 2; interruption (SIGINT,
    Ctrl-C) -> "interrupted", exit code 130 (SIGTERM: 143), after cleanup; warnings -> one line each."""
    global _AS_COMMAND
    _AS_COMMAND = _AS_COMMAND or argv is None
    code = _run_command(list(sys.argv[1:] if argv is None else argv))
    if argv is None and _nothing_left_to_tear_down():
        _exit_at_once(code)
    if argv is None and code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        # Interrupted, with Ray's exit hooks still to run (they stop its workers, which takes
        # seconds): a second Ctrl-C must not cut them short with a traceback. SIGTERM still kills.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if code:
        sys.exit(code)


def _run_command(args: list[str]) -> int:
    def _one_line_warning(message, category, filename, lineno, file=None, line=None):
        _err(f"warning: {_one_line(message)}")

    warnings.showwarning = _one_line_warning
    previous = _install_signal_handlers()
    try:
        fast = fast_parse(args)
        if fast is not None:
            callback, kwargs = fast
            code = callback(**kwargs)
        else:
            code = app(args=args, prog_name="sslrt", standalone_mode=False)
    except SslrtError as exc:
        _err(f"error: {_one_line(exc)}")
        return 2
    except Interrupted as exc:
        _err("interrupted")
        return 128 + exc.signum
    except (KeyboardInterrupt, typer.Abort):
        _err("interrupted")
        return 130
    except Exception as exc:  # usage errors of the CLI framework (they carry an exit code)
        exit_code = getattr(exc, "exit_code", None)
        if exit_code is not None and hasattr(exc, "format_message"):
            _err(f"error: {_one_line(exc.format_message())}")
            return exit_code
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    # Without standalone mode the framework returns an exit code instead of exiting (130 when it
    # caught the interruption itself); a code other than 0 must reach the shell.
    if isinstance(code, int) and code != 0:
        if code == 130:
            _err("interrupted")
        return code
    return 0


def _nothing_left_to_tear_down() -> bool:
    """True when the process holds nothing that the interpreter's shutdown must finish: no other
    thread still running and no Ray (whose exit hooks stop its workers)."""
    if "ray" in sys.modules:
        return False
    return all(t is threading.main_thread() or not t.is_alive() for t in threading.enumerate())


def _exit_at_once(code: int) -> None:
    """Leave without the interpreter's teardown. Every output is written and closed by then (files
    atomically, sessions' work done); what remains is freeing memory, finalizing ~600 modules and
    ONNX Runtime's and OpenCV's globals, ~50-80 ms that a person at the shell would wait for."""
    for stream in (sys.stdout, sys.stderr):
        if stream is None:  # started with that descriptor closed
            continue
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach the reader
            if stream is sys.stdout and code == 0:
                code = 120  # what Python's own shutdown returns when it cannot flush stdout
    os._exit(code)


if __name__ == "__main__":
    main()
