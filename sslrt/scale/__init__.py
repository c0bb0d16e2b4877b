"""Past one machine: sslrt on a Ray cluster (the only package of sslrt that imports Ray).

- `sslrt.scale.batch`: data-set-scale localization on Ray Data (`sslrt run --pairs FILE --ray`,
  `sslrt eval --ray`): pairs read as a dataset, decoding and preprocessing as CPU tasks, inference
  in an actor pool (one Localizer per actor), results streamed to Parquet / JSON Lines shards.
- `sslrt.scale.serve`: an HTTP service on Ray Serve (`sslrt serve`) with dynamic batching.
- `sslrt.scale.shards`: the result shards (pyarrow / json, no Ray).

Everything here is imported lazily, by the CLI's `--ray` options and `serve` command; the normal
`sslrt run` path never imports Ray. Install with `pip install 'sslrt[ray]'`.
"""
from __future__ import annotations

from sslrt.errors import BackendUnavailable

INSTALL_HINT = "pip install 'sslrt[ray]'"


def require_ray(*parts: str) -> None:
    """Import Ray (and `ray.data` / `ray.serve` for `parts`), or say in one line what to install."""
    import importlib

    for name in ("ray", *(f"ray.{p}" for p in parts)):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise BackendUnavailable(f"this needs Ray ({exc.name or name} is missing): {INSTALL_HINT}") from None


def starts_local_cluster(address: str | None = None) -> bool:
    """Whether `connect(address)` would start a local Ray cluster (rather than join one)."""
    import os

    import ray

    return address is None and not os.environ.get("RAY_ADDRESS") and not ray.is_initialized()


def connect(address: str | None = None, num_cpus: int | None = None, environment: dict[str, str] | None = None) -> bool:
    """Join the Ray cluster at `address` (`ray start --head` prints it; "auto" finds one on this
    machine), or start a local one when no address is given and none runs in this process (the
    RAY_ADDRESS variable is honoured as Ray does). Returns whether this call started it.

    `environment`: variables that the processes of a local cluster started here read when they
    start (Ray Serve's feature flags are such variables): set while the cluster starts (it
    inherits them), then restored, so that this process's own environment is left as it was. A
    cluster that already runs keeps the settings it was started with."""
    require_ray()
    import logging
    import os

    import ray

    if ray.is_initialized():
        return False
    kwargs = {"include_dashboard": False, "logging_level": logging.WARNING, "configure_logging": True}
    local = starts_local_cluster(address)
    if local and num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    saved = {name: os.environ.get(name) for name in (environment or {})} if local else {}
    try:
        for name in saved:
            os.environ[name] = environment[name]
        ray.init(address=address, **kwargs)
    except ConnectionError as exc:  # no cluster at that address (or RAY_ADDRESS): the user's input
        from sslrt.errors import SslrtError, first_line

        where = address or os.environ.get("RAY_ADDRESS")
        raise SslrtError(f"cannot join the Ray cluster at {where}: {first_line(exc)}") from None
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return True
