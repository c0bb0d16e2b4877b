"""The track: one record per sampled time (t, peak, box, score, sounding, optionally the heatmap),
as JSON Lines and, optionally, CSV. Written line by line to temporary files the job renames."""
from __future__ import annotations

import csv
import json

CSV_FIELDS = ("t", "frame", "peak_x", "peak_y", "x0", "y0", "x1", "y1", "score", "sounding", "sounding_value")


def track_record(t: float, frame: int, result, heatmap: bool = False) -> dict:
    rec = {"t": round(t, 6), "frame": frame, "peak": result.peak, "bbox": result.bbox, "score": round(result.score, 6),
           "sounding": result.sounding,
           "sounding_value": None if result.sounding_value is None else round(result.sounding_value, 6)}
    if heatmap:
        rec["heatmap"] = [[round(float(v), 7) for v in row] for row in result.heatmap]
    return rec


class TrackWriter:
    def __init__(self, jsonl_path: str | None, csv_path: str | None):
        self._jsonl = open(jsonl_path, "w") if jsonl_path else None
        self._csv_file = open(csv_path, "w", newline="") if csv_path else None
        self._csv = csv.writer(self._csv_file) if self._csv_file else None
        if self._csv:
            self._csv.writerow(CSV_FIELDS)
        self.count = 0

    def write(self, rec: dict) -> None:
        if self._jsonl:
            self._jsonl.write(json.dumps(rec) + "\n")
        if self._csv:
            self._csv.writerow([rec["t"], rec["frame"], *rec["peak"], *rec["bbox"], rec["score"],
                                "" if rec["sounding"] is None else int(rec["sounding"]),
                                "" if rec["sounding_value"] is None else rec["sounding_value"]])
        self.count += 1

    def close(self) -> None:
        for f in (self._jsonl, self._csv_file):
            if f:
                f.close()
