"""What the `sslrt` command does with `--ray` and `serve` (imported by sslrt.cli only then)."""
from __future__ import annotations

import json
import sys

from sslrt.errors import SslrtError


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def run_on_ray(pairs, output, *, as_json: bool, progress=None, **options) -> None:
    """`sslrt run --pairs FILE --ray`: shards under --output, one line per failed pair on stderr,
    then the summary (a line, or the JSON with --json)."""
    from sslrt.progress import progress_bar
    from sslrt.scale.batch import run_pairs

    if pairs is None:
        raise SslrtError("--ray localizes a --pairs file (CSV or Parquet); for one pair run without --ray")
    if output is None:
        raise SslrtError("--ray writes result shards: give --output FOLDER")
    with progress_bar(True) as bar:
        task = bar.add_task("localizing on ray", total=None) if bar else None
        summary = run_pairs(str(pairs), str(output), progress=progress, notify=lambda m: _err(f"sslrt: {m}"),
                            on_error=lambda key, image, audio, error: _err(f"error: {image} + {audio}: {error}"),
                            on_result=(lambda row: bar.advance(task)) if bar else None, **options)
    if as_json:
        print(json.dumps(summary))
        return
    print(f"{summary['computed']} pairs localized, {summary['errors']} failed, {summary['skipped']} done earlier "
          f"({summary['backend']} {summary['precision']}, {summary['actors']} actor(s)); "
          f"{summary['seconds']:.1f} s, {summary['pairs_per_second']:.1f} pairs/s")
    print(f"results: {summary['shards']} ({summary['shard_format']}), summary: {summary['output']}/summary.json")


def serve(**options) -> None:
    from sslrt.scale.serve import serve_forever

    serve_forever(announce=lambda m: _err(m), **options)
