#!/usr/bin/env python
"""Markdown of renovation_ab.sh's runs: each row's speed-up against the PyTorch reference of its
own run, before and after the renovation, two interleaved runs each."""
import json
import sys
from pathlib import Path

work = Path(sys.argv[1])
runs = {side: [json.loads((work / f"{side}_{i}.json").read_text()) for i in (1, 2)] for side in ("before", "after")}
m = runs["after"][0]["machine"]
print("# `sslrt bench` before and after the architecture renovation (issue 9)\n")
print(f"Machine: {m['cpu']}, {m['cores']} cores; full-width (64) random checkpoint exported with INT8; "
      "`bash benchmarks/renovation_ab.sh` (before = fce55a7, after = this tree; runs interleaved "
      "before, after, before, after). Speed-up = the run's own PyTorch fp32 eager ms/pair / the row's.\n")
print("| scope | backend | precision | batch | before run 1 | before run 2 | after run 1 | after run 2 | after / before (mean) |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|")
keys = [(r["scope"], r["backend"], r["precision"], r["batch"]) for r in runs["after"][0]["rows"] if r["backend"] != "torch"]
for key in keys:
    vals = {}
    for side in ("before", "after"):
        vals[side] = []
        for run in runs[side]:
            row = next(r for r in run["rows"] if (r["scope"], r["backend"], r["precision"], r["batch"]) == key)
            vals[side].append(row["speedup"])
    ratio = (sum(vals["after"]) / 2) / (sum(vals["before"]) / 2)
    cells = [f"{v:.2f}x" for v in vals["before"] + vals["after"]]
    print(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | " + " | ".join(cells) + f" | {ratio:.2f} |")
ref = {side: [next(r["ms_per_pair"] for r in run["rows"] if r["backend"] == "torch" and r["scope"] == "engine" and r["batch"] == 1)
              for run in runs[side]] for side in runs}
print(f"\nReference (torch fp32, engine, batch 1) ms/pair: before {ref['before']}, after {ref['after']}.")
