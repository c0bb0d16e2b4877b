"""Result shards of a data-set-scale run: Parquet or JSON Lines files, each published atomically.

One row per pair: `key` (the pair's identity: the input's `key` column, else a hash of its two
resolved paths), `error` (null, or the one-line reason the pair failed), `overlay` (the PNG's path
where overlays were asked for) and the fields of `Localization.to_dict()` (the JSON of `sslrt run
--json`). A shard is written under a temporary name and renamed when complete, so a reader (and a
rerun that skips finished pairs) only ever sees whole shards. A key may appear in several shards
when an earlier run failed on it: a row without error supersedes rows with one.

No Ray here: the shards are plain files any Parquet / JSON reader opens.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Iterable

from sslrt.store.atomic import atomic_path

FORMATS = {"parquet": ".parquet", "jsonl": ".jsonl"}
SHARD_PREFIX = "part-"


def _schema():
    import pyarrow as pa

    return pa.schema([
        ("key", pa.string()), ("error", pa.string()), ("image", pa.string()), ("audio", pa.string()),
        ("family", pa.string()), ("heatmap", pa.list_(pa.list_(pa.float64()))), ("heatmap_size", pa.list_(pa.int64())),
        ("heatmap_units", pa.string()), ("score", pa.float64()), ("sounding", pa.bool_()),
        ("sounding_value", pa.float64()), ("sounding_threshold", pa.float64()), ("peak", pa.list_(pa.float64())),
        ("bbox", pa.list_(pa.float64())), ("image_size", pa.struct([("height", pa.int64()), ("width", pa.int64())])),
        ("backend", pa.string()), ("precision", pa.string()),
        ("timings_ms", pa.struct([("preprocess", pa.float64()), ("inference", pa.float64()), ("postprocess", pa.float64())])),
        ("warnings", pa.list_(pa.string())), ("overlay", pa.string()),
    ])


def shard_files(folder: str | os.PathLike) -> list[Path]:
    """The complete shards of a folder (temporary files of an interrupted writer are not shards)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.name.startswith(SHARD_PREFIX) and p.suffix in FORMATS.values() and p.is_file())


def read_rows(folder: str | os.PathLike, columns: list[str] | None = None) -> Iterable[dict]:
    """Every row of every shard of `folder`, as dicts (only `columns` where given)."""
    for path in shard_files(folder):
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            yield from pq.read_table(path, columns=columns).to_pylist()
        else:
            with open(path) as f:
                for line in f:
                    if line.strip():
                        row = json.loads(line)
                        yield {c: row.get(c) for c in columns} if columns else row


def finished_keys(folder: str | os.PathLike) -> set[str]:
    """Keys whose result exists (rows without error): what a rerun skips."""
    return {r["key"] for r in read_rows(folder, ["key", "error"]) if r["error"] is None}


def latest_results(folder: str | os.PathLike) -> dict[str, dict]:
    """key -> its row, a row without error superseding one with."""
    rows: dict[str, dict] = {}
    for row in read_rows(folder):
        if row["key"] not in rows or row.get("error") is None:
            rows[row["key"]] = row
    return rows


class ShardWriter:
    """Buffers result rows and publishes a shard every `rows` rows or `seconds` seconds (so an
    interrupted run loses at most that much work), and at `close`."""

    def __init__(self, folder: str | os.PathLike, fmt: str = "parquet", rows: int = 1000, seconds: float = 10.0):
        if fmt not in FORMATS:
            raise ValueError(f"shard format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        self.folder, self.fmt, self.max_rows, self.max_seconds = Path(folder), fmt, rows, seconds
        self.folder.mkdir(parents=True, exist_ok=True)
        self.run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.buffer: list[dict] = []
        self.written: list[Path] = []
        self._since = time.monotonic()

    def add(self, row: dict) -> None:
        self.buffer.append(row)
        if len(self.buffer) >= self.max_rows or time.monotonic() - self._since >= self.max_seconds:
            self.flush()

    def flush(self) -> None:
        self._since = time.monotonic()
        if not self.buffer:
            return
        path = self.folder / f"{SHARD_PREFIX}{self.run_id}-{len(self.written):05d}{FORMATS[self.fmt]}"
        with atomic_path(str(path), suffix=FORMATS[self.fmt]) as tmp:
            if self.fmt == "parquet":
                import pyarrow as pa
                import pyarrow.parquet as pq

                pq.write_table(pa.Table.from_pylist(self.buffer, schema=_schema()), tmp)
            else:
                with open(tmp, "w") as f:
                    for row in self.buffer:
                        f.write(json.dumps(row) + "\n")
        self.written.append(path)
        self.buffer = []

    def close(self) -> None:
        self.flush()
