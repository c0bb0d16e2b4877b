"""Speed and memory of `sslrt video` on a CPU; writes benchmarks/video.md and video.json.

    python benchmarks/video_bench.py [--work DIR] [--long-minutes 10] [--skip-long]

Clips are generated with PyAV (a moving scene, 1280x720, 30 fps, H.264 + AAC); the full-width
model (width 64) is a random-weight checkpoint (sslrt.synthetic.checkpoints.make_checkpoint)
exported with `--int8`. Each configuration runs in its own process (`--one`), which reports the
pipeline's result and its peak resident memory (ru_maxrss).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_clip(path: Path, seconds: float, size=(1280, 720), fps=30) -> float:
    from sslrt.synthetic.clips import moving_clip, write_moving_clip

    if path.is_file():
        return 0.0
    t0 = time.perf_counter()
    clip = moving_clip(0, seconds=seconds, fps=fps, size=size)
    tmp = path.with_suffix(".part.mp4")
    write_moving_clip(tmp, clip, preset="ultrafast")
    os.replace(tmp, path)
    return time.perf_counter() - t0


def make_model(work: Path) -> Path:
    from sslrt.export import export_checkpoint, select_targets
    from sslrt.synthetic.checkpoints import make_checkpoint

    out = work / "full_width64_sslrt"
    if (out / "manifest.json").is_file():
        return out
    ckpt = make_checkpoint(work / "full_width64.pth.tar", width=64)
    export_checkpoint(str(ckpt), str(out), targets=select_targets("onnx", "fp32", True))
    return out


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: per address space, so not inherited from the
    parent across fork + exec as ru_maxrss is on Linux)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(args) -> None:
    """One run in this process: print the result and the peak RSS as JSON."""
    from sslrt.runtime.pipeline import Localizer
    from sslrt.video import VideoOptions, localize_video

    localizer = Localizer.open(args.model or None, precision=args.precision)
    out = None if args.no_video else args.out
    result = localize_video(localizer, args.clip, out, args.track, options=VideoOptions(fps=args.fps))
    rec = result.to_dict()
    rec["peak_rss_mib"] = peak_rss_mib()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    rec["cpu_seconds"] = ru.ru_utime + ru.ru_stime  # the whole process, model loading included
    print(json.dumps(rec))


def run_one(clip: Path, model: str, precision: str, work: Path, fps: float = 4) -> dict:
    cmd = [sys.executable, __file__, "--one", "--clip", str(clip), "--model", model, "--precision", precision,
           "--fps", str(fps), "--out", str(work / "overlay.mp4"), "--track", str(work / "track.jsonl")]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    load = os.getloadavg()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"run failed: {' '.join(cmd)}\n{proc.stderr}")
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    rec["load_before"] = [round(x, 2) for x in load]
    rec["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return rec


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import av
    import onnxruntime

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "pyav": av.__version__, "ffmpeg": ".".join(map(str, getattr(av, "ffmpeg_version_info", ()) or ())) or "?"}


def report(res: dict) -> str:
    m = res["machine"]
    lines = [
        "# `sslrt video` on a CPU",
        "",
        f"Written by `benchmarks/video_bench.py`. Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, "
        f"ONNX Runtime {m['onnxruntime']}, PyAV {m['pyav']}. {res['note']}",
        "",
        f"Clip: {res['clip']} (a generated moving scene, written with PyAV; cached between runs). "
        "`--fps 4`, batch 4, overlay video written (libx264 ultrafast, crf 23) with the audio copied in; "
        "each configuration in its own process.",
        "",
        "| model | precision | RTF (wall / clip length) | wall s | CPU s (process) | CPU s / (cores x clip) | decode | audio | preprocess | inference | render | encode | peak RSS MiB | load avg before -> after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res["runs"].items():
        s = r["stages"]
        cpu = r.get("cpu_seconds")
        cpu_cells = (f"{cpu:.1f} | {cpu / (res['machine']['cores'] * r['media_seconds']):.3f}" if cpu is not None else "- | -")
        lines.append(f"| {name} | {r['precision']} | **{r['rtf']:.3f}** | {r['wall_seconds']:.1f} | {cpu_cells} | {s['decode']:.1f} | "
                     f"{s['audio']:.2f} | {s['preprocess']:.1f} | {s['inference']:.1f} | {s['render']:.1f} | {s['encode']:.1f} | "
                     f"{r['peak_rss_mib']:.0f} | {r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f} |")
    lines += ["", "Stage columns are busy seconds per stage (threads overlap, so they add up to more than the wall "
              "time on several cores): decode = PyAV decoding + RGB conversion of sampled frames, audio = windows "
              "(decode + resample), preprocess = image/spectrogram transforms, inference = engine + localization, "
              "render = overlays (incl. YUV->BGR of every frame), encode = BGR->YUV + H.264 + muxing. "
              "On a shared machine they include time the threads waited for a core. CPU s / (cores x clip) is the "
              "real-time factor the same work would have on this many idle cores with perfect overlap (a lower "
              "bound; it includes loading the model).", ""]
    if "memory" in res:
        mem = res["memory"]
        lines += ["## Memory: 1 minute vs 10 minutes", "",
                  f"| clip | RTF | peak RSS MiB |", "|---|---|---|",
                  f"| 1 min | {mem['short']['rtf']:.3f} | {mem['short']['peak_rss_mib']:.0f} |",
                  f"| {res['long_minutes']} min | {mem['long']['rtf']:.3f} | {mem['long']['peak_rss_mib']:.0f} |", "",
                  f"Peak memory of the long clip is {mem['ratio']:.3f} x the 1-minute clip's "
                  f"({'within' if abs(mem['ratio'] - 1) <= 0.10 else 'NOT within'} 10%).", ""]
    for earlier in res.get("earlier", []):
        lines += [f"## An earlier run ({earlier['when']})", "", "| model | precision | RTF | peak RSS MiB | load avg before -> after |",
                  "|---|---|---|---|---|"]
        for name, r in earlier["runs"].items():
            lines.append(f"| {name} | {r['precision']} | {r['rtf']:.3f} | {r['peak_rss_mib']:.0f} | "
                         f"{r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", action="store_true")
    ap.add_argument("--clip")
    ap.add_argument("--model", default="")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--fps", type=float, default=4)
    ap.add_argument("--out")
    ap.add_argument("--track")
    ap.add_argument("--no-video", action="store_true")
    ap.add_argument("--work", default="/tmp/sslrt_video_bench")
    ap.add_argument("--long-minutes", type=float, default=10)
    ap.add_argument("--skip-long", action="store_true")
    ap.add_argument("--note", default="")
    ap.add_argument("--report-only", action="store_true", help="Rewrite video.md from video.json.")
    args = ap.parse_args()
    if args.one:
        one(args)
        return
    sys.path.insert(0, str(REPO))
    if args.report_only:
        (REPO / "benchmarks" / "video.md").write_text(report(json.loads((REPO / "benchmarks" / "video.json").read_text())))
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    clip = work / "moving_720p30_60s.mp4"
    made = make_clip(clip, 60)
    model = str(make_model(work))
    res = {"machine": machine(), "clip": "60 s, 1280x720, 30 fps, H.264 + AAC", "clip_seconds_to_make": made,
           "note": args.note, "runs": {}, "long_minutes": args.long_minutes}
    res["runs"]["full width 64"] = run_one(clip, model, "int8", work)
    res["runs"]["full width 64 "] = run_one(clip, model, "fp32", work)
    res["runs"]["demo (width 8)"] = run_one(clip, "", "fp32", work)
    for name, r in res["runs"].items():
        print(f"{name} {r['precision']}: RTF {r['rtf']:.3f}, peak RSS {r['peak_rss_mib']:.0f} MiB, stages {r['stages']}",
              file=sys.stderr)
    previous = REPO / "benchmarks" / "video.json"
    if args.skip_long and previous.is_file():  # keep the memory comparison of an earlier full run
        old = json.loads(previous.read_text())
        res["earlier"] = old.get("earlier", []) + [{"when": "same code, same machine, minutes before", "runs": old["runs"]}]
        if "memory" in old:
            res["memory"] = old["memory"]
            res["long_minutes"] = old.get("long_minutes", args.long_minutes)
    if not args.skip_long:
        long_clip = work / f"moving_720p30_{int(args.long_minutes)}min.mp4"
        res["long_clip_seconds_to_make"] = make_clip(long_clip, args.long_minutes * 60)
        short = res["runs"]["full width 64"]
        long = run_one(long_clip, model, "int8", work)
        res["memory"] = {"short": short, "long": long, "ratio": long["peak_rss_mib"] / short["peak_rss_mib"]}
        print(f"memory: 1 min {short['peak_rss_mib']:.0f} MiB, long {long['peak_rss_mib']:.0f} MiB", file=sys.stderr)
    out = REPO / "benchmarks"
    (out / "video.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "video.md").write_text(report(res))
    print(report(res))


if __name__ == "__main__":
    main()
