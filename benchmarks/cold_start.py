#!/usr/bin/env python
"""Cold start of `sslrt run` on one pair with the demo model, against importing its libraries.

    PYTHONPATH=. python benchmarks/cold_start.py            # writes benchmarks/cpu/cold_start.{md,json}

Each run is a new process (what a person at a shell waits for), timed from spawn to exit; the
runs alternate between `sslrt run IMAGE AUDIO --json` (the console script's code: `from
sslrt.cli import main; main()`) and `python -c "import numpy, cv2, onnxruntime"` (the floor any
Python tool on these libraries pays), after one untimed run of each (page cache). Inputs: one
generated 1024x1024 JPEG and 10 s 16 kHz WAV (the benchmark's e2e pair). Bar: median wall of
`sslrt run` <= 2x the import floor. The report also gives the medians of the JSON's timings_ms
(startup = Python and the imports, load = resolving the model and opening the sessions, then
the first pair's preprocess / inference / postprocess) and the slowest imports of one run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BASELINE = "import numpy, cv2, onnxruntime"
# the same imports, leaving as sslrt leaves (no interpreter teardown): the like-for-like floor
BASELINE_EXIT = "import numpy, cv2, onnxruntime, os; os._exit(0)"
RUN = "from sslrt.cli import main; main()"


def timed(cmd: list[str], env: dict) -> tuple[float, str, str]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    wall = (time.perf_counter() - t) * 1e3
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-500:]}")
    return wall, proc.stdout, proc.stderr


def slowest_imports(env: dict, run: list[str], n: int = 12) -> list[dict]:
    """Top-level imports of one `sslrt run`, by cumulative time (python -X importtime)."""
    _, _, err = timed([sys.executable, "-X", "importtime", *run[1:]], env)
    rows = []
    for line in err.splitlines():
        parts = line[len("import time:"):].split("|") if line.startswith("import time:") else []
        if len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("  "):  # top level only
            rows.append({"module": parts[2].strip(), "cumulative_ms": int(parts[1]) / 1e3})
    return sorted(rows, key=lambda r: -r["cumulative_ms"])[:n]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--model", default=None, help="export directory (default: the shipped demo model)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "cpu" / "cold_start"))
    args = ap.parse_args()

    import cv2
    import soundfile as sf

    from sslrt.measure.bench import machine_info
    from sslrt.synthetic.generated import generated_image, generated_waveform

    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # As `pip install` does for an installed package (numpy, cv2 and onnxruntime were byte-compiled
    # at their install): a source checkout under PYTHONDONTWRITEBYTECODE=1 (this project's machines)
    # would otherwise compile sslrt's modules in every run, ~40 ms that no installed sslrt pays.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "sslrt")], check=True)
    with tempfile.TemporaryDirectory(prefix="sslrt_cold_") as folder:
        image, audio = os.path.join(folder, "scene.jpg"), os.path.join(folder, "sound.wav")
        cv2.imwrite(image, generated_image(0, (1024, 1024))[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        sf.write(audio, generated_waveform(0), 16000, subtype="PCM_16")
        run = [sys.executable, "-c", RUN, "run", image, audio, "--json", *(["-m", args.model] if args.model else [])]
        base = [sys.executable, "-c", BASELINE]
        base_exit = [sys.executable, "-c", BASELINE_EXIT]
        timed(run, env), timed(base, env), timed(base_exit, env)
        walls = {"sslrt run": [], "import floor": [], "import floor, no teardown": []}
        timings = []
        for _ in range(args.runs):
            wall, out, _ = timed(run, env)
            walls["sslrt run"].append(wall)
            timings.append(json.loads(out)["timings_ms"])
            walls["import floor"].append(timed(base, env)[0])
            walls["import floor, no teardown"].append(timed(base_exit, env)[0])
        imports = slowest_imports(env, run)
    med = {k: statistics.median(v) for k, v in walls.items()}
    ratio = med["sslrt run"] / med["import floor"]
    ratio_no_teardown = med["sslrt run"] / med["import floor, no teardown"]
    keys = [k for k in ("startup", "load", "preprocess", "inference", "postprocess") if all(k in t for t in timings)]
    parts = {k: statistics.median(t[k] for t in timings) for k in keys}
    report = {"machine": machine_info(), "runs": args.runs, "model": args.model or "demo",
              "commands": {"sslrt run": f"python -c '{RUN}' run scene.jpg sound.wav --json", "import floor": f"python -c '{BASELINE}'",
                           "import floor, no teardown": f"python -c '{BASELINE_EXIT}'"},
              "wall_ms": walls, "median_ms": med, "ratio": ratio, "ratio_no_teardown": ratio_no_teardown,
              "bar": 2.0, "meets_bar": ratio <= 2.0,
              "sslrt_run_timings_ms_median": parts, "slowest_imports": imports}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    m = report["machine"]
    lines = ["# Cold start: `sslrt run` on one pair", "",
             f"Machine: {m['cpu']}, {m['cores']} cores. Model: {report['model']}. One 1024x1024 JPEG + 10 s WAV. "
             f"{args.runs} runs each, alternating, each a new process timed from spawn to exit "
             "(`python benchmarks/cold_start.py`). sslrt's modules are byte-compiled first, as `pip install` "
             "compiles an installed package's (and had compiled numpy's, cv2's and onnxruntime's).", "",
             "| command | median wall ms | min | max |", "|---|---:|---:|---:|"]
    lines += [f"| {k} (`{report['commands'][k]}`) | {med[k]:.0f} | {min(v):.0f} | {max(v):.0f} |" for k, v in walls.items()]
    lines += ["", f"**sslrt run / import floor = {ratio:.2f}x** (bar: <= 2x: {'met' if ratio <= 2 else 'NOT met'}). "
              f"sslrt leaves without the interpreter's teardown once its output is flushed; against the floor that leaves "
              f"the same way: {ratio_no_teardown:.2f}x.", "",
              "Where `sslrt run`'s wall time goes (medians of its JSON `timings_ms`; startup = Python + the command's imports, "
              "load = resolving the model + opening the sessions; the rest is the process exit, which sslrt makes without "
              "the interpreter's teardown once its output is flushed):", "",
              "| part | ms |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in parts.items()]
    lines += ["", "Slowest top-level imports of one run (`python -X importtime`, cumulative):", "",
              "| module | ms |", "|---|---:|"]
    lines += [f"| {r['module']} | {r['cumulative_ms']:.0f} |" for r in imports]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
