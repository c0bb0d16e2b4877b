"""Peak memory of `sslrt run` on huge inputs against ordinary ones (issue 14's bar: within 2x).

Generates, in a temporary folder: a 10 s and a 1-hour 48 kHz stereo 16-bit WAV (the long one, 660 MiB,
written in chunks), and a real 1024x1024 and 20000x20000 JPEG (the big one encoded by OpenCV from
a generated 1.2 GB array, once). Each case runs `sslrt run IMAGE AUDIO --json` (shipped demo
model, onnxruntime) in a fresh interpreter that reports its own peak RSS (VmHWM).

    python benchmarks/memory.py                       # writes benchmarks/memory.md
    python benchmarks/memory.py --before 80354d3      # adds a column for that revision's sslrt/

`--before` extracts that revision's sslrt/ with `git archive` and runs it the same way (expect
several GB there: it decodes the whole WAV and the whole 20000x20000 JPEG).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# Runs in the child: the CLI in-process, then its own peak RSS on the last line. VmHWM, not
# getrusage's ru_maxrss: Linux carries the parent's high-water mark into a forked child.
CHILD = """
import json, sys, time
from sslrt.cli import main
t = time.perf_counter()
code = 0
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"code": code, "seconds": time.perf_counter() - t, "peak_kb": int(hwm.split()[1])}), file=sys.__stderr__)
"""


def make_inputs(d: Path) -> dict[str, Path]:
    import cv2
    import soundfile as sf

    from sslrt.synthetic.generated import generated_image, generated_waveform

    files = {}
    rate, rng = 48000, np.random.default_rng(0)
    files["wav_10s"] = d / "10s_48k_stereo.wav"
    sf.write(files["wav_10s"], rng.uniform(-0.3, 0.3, (10 * rate, 2)), rate, subtype="PCM_16")
    files["wav_1h"] = d / "1h_48k_stereo.wav"
    with sf.SoundFile(files["wav_1h"], "w", rate, 2, subtype="PCM_16") as f:
        minute = rng.uniform(-0.3, 0.3, (60 * rate, 2))
        for _ in range(60):
            f.write(minute)
    files["jpg_1024"] = d / "1024x1024.jpg"
    cv2.imwrite(str(files["jpg_1024"]), generated_image(1, (1024, 1024))[:, :, ::-1])
    files["jpg_7000"] = d / "7000x7000.jpg"  # 49 MP: the largest kind the default limit lets through
    cv2.imwrite(str(files["jpg_7000"]), cv2.resize(generated_image(3, (250, 250)), (7000, 7000)))
    files["jpg_20000"] = d / "20000x20000.jpg"
    big = cv2.resize(generated_image(2, (250, 250)), (20000, 20000), interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(str(files["jpg_20000"]), big)
    del big
    return files


def run_case(image: Path, audio: Path, pythonpath: Path, cwd: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "OMP_NUM_THREADS": "2"}
    env.pop("SSLRT_MAX_IMAGE_PIXELS", None)  # the default limit
    proc = subprocess.run([sys.executable, "-c", CHILD, "run", str(image), str(audio), "--json"],
                          capture_output=True, text=True, env=env, cwd=cwd)  # cwd: not the repo, whose sslrt/ would shadow PYTHONPATH
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    errors = [l for l in proc.stderr.strip().splitlines()[:-1] if l.startswith("error:")]
    report["message"] = errors[0] if errors else ""
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="also run this git revision's sslrt/ (expect GBs)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "memory.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        t = time.perf_counter()
        files = make_inputs(d)
        print(f"inputs generated in {time.perf_counter() - t:.0f} s: "
              + ", ".join(f"{p.name} {p.stat().st_size / 2**20:.1f} MiB" for p in files.values()), file=sys.stderr)
        trees = {"this tree": REPO}
        if args.before:
            old = d / "before"
            old.mkdir()
            archive = subprocess.run(["git", "-C", str(REPO), "archive", args.before, "sslrt"], check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
            trees[f"before ({args.before})"] = old
        cases = [("1024x1024 JPEG + 10 s WAV (reference)", "jpg_1024", "wav_10s"),
                 ("1024x1024 JPEG + 1 h WAV", "jpg_1024", "wav_1h"),
                 ("20000x20000 JPEG + 10 s WAV", "jpg_20000", "wav_10s"),
                 ("7000x7000 JPEG (49 MP, under the limit) + 10 s WAV", "jpg_7000", "wav_10s")]
        results = {}
        for tree, path in trees.items():
            for name, image, audio in cases:
                r = run_case(files[image], files[audio], path, d)
                results[(tree, name)] = r
                print(f"{tree:>20} | {name:40} | exit {r['code']} | {r['peak_kb'] / 1024:8.0f} MiB | {r['seconds']:6.1f} s | {r['message']}",
                      file=sys.stderr)
    lines = ["# Peak memory of `sslrt run` on huge inputs", "",
             "`python benchmarks/memory.py" + (f" --before {args.before}" if args.before else "") + "`: each row is one",
             "`sslrt run IMAGE AUDIO --json` (shipped demo model, onnxruntime CPU) in a fresh interpreter;",
             "peak RSS is that process's VmHWM. Inputs are generated: 48 kHz stereo 16-bit WAVs, JPEGs",
             "encoded by OpenCV (the 20000x20000 one from a real 1.2 GB array). Issue 14's bar: the huge",
             "inputs within 2x of the reference row; the last row shows what the default 50 MP limit lets a",
             "decode cost. Memory does not depend on machine load; seconds do.", ""]
    for tree in trees:
        ref = results[(tree, cases[0][0])]["peak_kb"]
        lines += [f"## {tree}", "", "| case | exit | peak RSS | vs reference | seconds | message |", "|---|---|---|---|---|---|"]
        for name, _, _ in cases:
            r = results[(tree, name)]
            lines.append(f"| {name} | {r['code']} | {r['peak_kb'] / 1024:.0f} MiB | {r['peak_kb'] / ref:.2f}x | "
                         f"{r['seconds']:.1f} | {r['message'].replace('|', '/').replace(str(d), '$TMP') if r['message'] else ''} |")
        lines.append("")
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
