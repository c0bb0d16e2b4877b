"""sslrt on Ray: `--ray` batch runs and the Ray Serve service against the local engine, on a real
local Ray (2 CPUs) shared by every test of this module, and real HTTP on 127.0.0.1."""
from __future__ import annotations

import base64
import csv
import http.client
import json
import shutil
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import run_cli

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'sslrt[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'sslrt[ray]')")
pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'sslrt[ray]')")

from sslrt.runtime.pipeline import Localizer  # noqa: E402
from sslrt.scale import shards  # noqa: E402

VOLATILE = ("timings_ms",)  # wall-clock; everything else must be equal


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray of 2 CPUs, shared by this module; yields the ingress its Serve runs: HAProxy
    (Serve reads the flags when its processes start, so they are set while the cluster starts)
    where its binary is installed, else the proxy. The proxy ingress, the default, also runs in a
    cluster of its own in test_cli_serve_with_the_proxy_ingress."""
    import logging
    import os

    from sslrt.scale.serve import _haproxy_missing, local_cluster_environment

    ingress = "proxy" if _haproxy_missing() else "haproxy"
    environment = local_cluster_environment(ingress)
    saved = {k: os.environ.get(k) for k in environment}
    os.environ.update(environment)
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    yield ingress
    from ray import serve

    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def pairs_dir(tmp_path_factory, media):
    """Eight pairs over the generated media (two pictures x four sounds), one corrupt image and one
    missing sound; the CSV uses paths relative to itself, a header and a comment, as --pairs allows."""
    d = tmp_path_factory.mktemp("ray_pairs")
    for name in ("scene.jpg", "scene.png", "sound.wav", "stereo44k.flac", "short.ogg"):
        shutil.copyfile(media / name, d / name)
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    good = [(i, a) for i in ("scene.jpg", "scene.png") for a in ("sound.wav", "stereo44k.flac", "short.ogg", "sound.wav")][:7]
    good.append(("scene.png", "short.ogg"))
    rows = good[:4] + [("corrupt.jpg", "sound.wav")] + good[4:] + [("scene.jpg", "gone.wav")]
    with open(d / "pairs.csv", "w") as f:
        f.write("image,audio\n# a comment\n")
        for image, audio in rows:
            f.write(f"{image},{audio}\n")
    return d, [(str(d / i), str(d / a)) for i, a in good]


def _local(model_dir, pairs):
    with Localizer.open(model_dir) as loc:
        return [r.to_dict() for r in loc.localize_many(pairs, batch_size=8)]


def _same(a: dict, b: dict, skip=VOLATILE) -> None:
    for k in set(a) | set(b):
        if k not in skip:
            assert a.get(k) == b.get(k), k


def test_ray_run_equals_local_and_reports_bad_rows(ray_cluster, tiny_export, pairs_dir, tmp_path, capsys):
    d, good = pairs_dir
    out = tmp_path / "out"
    code, stdout, err = run_cli(["run", "--pairs", d / "pairs.csv", "--ray", "--output", out, "-m", tiny_export.directory,
                                 "--json", "--save-dir", tmp_path], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["computed"] == len(good) and summary["errors"] == 2 and summary["skipped"] == 0
    assert "corrupt.jpg" in err and "gone.wav" in err  # one line per failed pair
    rows = shards.latest_results(out / "shards")
    failed = {r["image"].rsplit("/", 1)[-1] + "+" + r["audio"].rsplit("/", 1)[-1]: r["error"] for r in rows.values() if r["error"]}
    assert set(failed) == {"corrupt.jpg+sound.wav", "scene.jpg+gone.wav"}
    assert "corrupt" in failed["corrupt.jpg+sound.wav"] and "not found" in failed["scene.jpg+gone.wav"]
    by_pair = {(r["image"], r["audio"]): r for r in rows.values() if not r["error"]}
    for expected in _local(tiny_export.directory, good):
        got = by_pair[(expected["image"], expected["audio"])]
        _same(expected, {k: v for k, v in got.items() if k not in ("key", "error", "overlay")})
        assert got["overlay"] and (tmp_path / got["overlay"].rsplit("/", 1)[-1]).is_file()


def test_ray_rerun_after_interruption_computes_only_the_missing_pairs(ray_cluster, tiny_export, pairs_dir, tmp_path):
    from sslrt.scale.batch import run_pairs

    d, good = pairs_dir
    # Parquet input with its own keys, JSON Lines shards of 3 rows each
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"key": [f"k{i}" for i in range(len(good))], "image": [i for i, _ in good], "audio": [a for _, a in good]})
    pq.write_table(table, tmp_path / "pairs.parquet")
    out = tmp_path / "out"
    first = run_pairs(tmp_path / "pairs.parquet", out, tiny_export.directory, shard_format="jsonl", shard_rows=3, shard_seconds=1e9)
    assert first["computed"] == len(good) and first["shards_written"] == 3
    complete = shards.latest_results(out / "shards")
    # an interrupted run: its last shard never published, a temporary file left behind
    files = shards.shard_files(out / "shards")
    lost = {json.loads(line)["key"] for line in files[-1].read_text().splitlines()}
    files[-1].rename(files[-1].with_name("." + files[-1].name + ".tmp"))
    again = run_pairs(tmp_path / "pairs.parquet", out, tiny_export.directory, shard_format="jsonl")
    assert again["computed"] == len(lost) and again["skipped"] == len(good) - len(lost) and again["errors"] == 0
    new_keys = {r["key"] for r in shards.read_rows(out / "shards") if r["key"] in lost}
    assert new_keys == lost
    rerun = shards.latest_results(out / "shards")
    assert set(rerun) == set(complete)
    for key in complete:
        _same(complete[key], rerun[key])
    # another configuration is refused
    from sslrt.errors import SslrtError

    with pytest.raises(SslrtError, match="another configuration"):
        run_pairs(tmp_path / "pairs.parquet", out, tiny_export.directory, reuse_embeddings=False)


def test_eval_on_ray_equals_local(ray_cluster, tiny_export, tmp_path, capsys):
    from sslrt.synthetic.datasets import synthetic_is3_samples, write_is3

    root = tmp_path / "data"
    write_is3(root, synthetic_is3_samples(3, seed=3))
    summaries = {}
    for mode in ("local", "ray"):
        args = ["eval", "-d", "is3", "--root", root, "-m", tiny_export.directory, "-o", tmp_path / mode,
                "--json", tmp_path / f"{mode}.json", "--batch-size", "4"] + (["--ray"] if mode == "ray" else [])
        code, _, err = run_cli(args, capsys)
        assert code == 0, err
        summaries[mode] = json.loads((tmp_path / f"{mode}.json").read_text())
    local, remote = summaries["local"], summaries["ray"]
    assert remote["evaluated"] == local["evaluated"] > 0
    assert remote["metrics"] == local["metrics"] and remote["retrieval"] == local["retrieval"]
    with open(tmp_path / "local" / "per_sample.csv") as a, open(tmp_path / "ray" / "per_sample.csv") as b:
        assert sorted(csv.reader(a)) == sorted(csv.reader(b))
    # a corrupt file is reported, the other samples are evaluated
    victim = sorted(root.rglob("*.wav"))[0]
    victim.write_bytes(b"RIFF not a wav")
    code, stdout, err = run_cli(["eval", "-d", "is3", "--root", root, "-m", tiny_export.directory, "-o", tmp_path / "bad",
                                 "--json", tmp_path / "bad.json", "--ray"], capsys)
    assert code == 0, err
    bad = json.loads((tmp_path / "bad.json").read_text())
    assert bad["errors"] >= 1 and bad["evaluated"] == local["evaluated"] - bad["errors"]
    assert victim.name in bad["error_examples"][0]["error"] and "failed" in stdout


# --- the service --------------------------------------------------------------------------------

MAX_MB = 1.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def service(ray_cluster, tiny_export):
    from sslrt.scale import serve as sslrt_serve

    port = _free_port()
    # a long batch wait: concurrent requests reliably share engine calls
    sslrt_serve.start(tiny_export.directory, port=port, max_batch=8, batch_wait_ms=100, max_request_mb=MAX_MB,
                      ingress=ray_cluster)
    yield ("127.0.0.1", port)
    sslrt_serve.stop()


def _request(service, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(*service, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data)
    finally:
        conn.close()


def multipart(fields: dict, boundary: str | None = None) -> tuple[bytes, str]:
    boundary = boundary or uuid.uuid4().hex
    body = b""
    for name, (filename, data) in fields.items():
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _localize(service, fields: dict, query: str = "") -> tuple[int, dict]:
    body, ctype = multipart(fields)
    return _request(service, "POST", "/localize" + query, body, {"Content-Type": ctype})


def test_service_equals_sslrt_run(service, tiny_export, media, capsys):
    code, stdout, err = run_cli(["run", media / "scene.jpg", media / "stereo44k.flac", "-m", tiny_export.directory, "--json"], capsys)
    assert code == 0, err
    expected = json.loads(stdout)
    status, got = _localize(service, {"image": ("scene.jpg", (media / "scene.jpg").read_bytes()),
                                      "audio": ("stereo44k.flac", (media / "stereo44k.flac").read_bytes())})
    assert status == 200, got
    assert got["image"] == "scene.jpg" and got["audio"] == "stereo44k.flac"
    _same(expected, got, skip=VOLATILE + ("image", "audio"))
    status, health = _request(service, "GET", "/healthz")
    assert status == 200 and health == {"status": "ok"}
    status, models = _request(service, "GET", "/models")
    assert status == 200 and models["family"] == "ours" and models["backend"] == "onnxruntime"
    assert models["precision"] == "fp32" and len(models["manifest_sha256"]) == 64
    assert models["ingress"] == _ingress_of(service)
    # behind HAProxy the request reached the replica's own server, on another port than the service's
    assert (models["reached"][1] != service[1]) == (models["ingress"] == "haproxy"), models["reached"]


def _ingress_of(service) -> str:
    return _request(service, "GET", "/models")[1]["ingress"]


def test_service_refuses_an_ingress_its_cluster_does_not_run(service, tiny_export):
    """Asked for the other ingress, `start` says so in one line before deploying anything: the
    running service keeps answering."""
    from sslrt.errors import SslrtError
    from sslrt.scale import serve as sslrt_serve

    other = "proxy" if _ingress_of(service) == "haproxy" else "haproxy"
    with pytest.raises(SslrtError, match=f"--ingress {other}: this Ray cluster runs Serve's"):
        sslrt_serve.start(tiny_export.directory, port=_free_port(), ingress=other)
    assert _request(service, "GET", "/healthz") == (200, {"status": "ok"})


def test_service_names_uploads_by_the_clients_names(service, media):
    """Messages about an upload name the client's file, never the replica's temporary one, and no
    temporary file outlives its request (after a 200, a 422 and a warning alike)."""
    import glob
    import io
    import tempfile

    import soundfile as sf

    silent = io.BytesIO()
    sf.write(silent, np.zeros(16000, dtype=np.float32), 16000, format="WAV", subtype="PCM_16")
    status, got = _localize(service, {"image": ("scene.jpg", (media / "scene.jpg").read_bytes()),
                                      "audio": ("quiet.wav", silent.getvalue())})
    assert status == 200, got
    assert any("quiet.wav" in w and "silent" in w for w in got["warnings"]), got["warnings"]
    assert not any("sslrt-serve-" in w for w in got["warnings"])
    status, got = _localize(service, {"image": ("scene.jpg", (media / "scene.jpg").read_bytes()),
                                      "audio": ("broken.wav", b"RIFF....WAVEgarbage")})
    assert status == 422 and "broken.wav" in got["error"] and "sslrt-serve-" not in got["error"], got
    assert glob.glob(f"{tempfile.gettempdir()}/sslrt-serve-*") == []


def test_service_overlay(service, media):
    import cv2

    status, got = _localize(service, {"image": ("scene.png", (media / "scene.png").read_bytes()),
                                      "audio": ("short.ogg", (media / "short.ogg").read_bytes()),
                                      "overlay": (None, b"true")})
    assert status == 200, got
    png = base64.b64decode(got["overlay_png_base64"])
    assert png.startswith(b"\x89PNG")
    picture = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape[:2] == (got["image_size"]["height"], got["image_size"]["width"])


def test_service_answers_bad_requests_with_4xx_and_keeps_serving(service, media):
    image, audio = (media / "scene.jpg").read_bytes(), (media / "sound.wav").read_bytes()
    good = {"image": ("scene.jpg", image), "audio": ("sound.wav", audio)}
    body, ctype = multipart(good)
    too_big = b"\0" * int(MAX_MB * (1 << 20) + 1000)
    kinds = [
        ("missing image", lambda: _localize(service, {"audio": ("sound.wav", audio)}), 400),
        ("missing audio", lambda: _localize(service, {"image": ("scene.jpg", image)}), 400),
        ("no parts", lambda: _localize(service, {}), 400),
        ("not multipart", lambda: _request(service, "POST", "/localize", b'{"image": 1}', {"Content-Type": "application/json"}), 415),
        ("no content type", lambda: _request(service, "POST", "/localize", body), 415),
        ("no boundary", lambda: _request(service, "POST", "/localize", body, {"Content-Type": "multipart/form-data"}), 400),
        ("torn body", lambda: _request(service, "POST", "/localize", body[: len(body) // 2], {"Content-Type": ctype}), 400),
        ("corrupt image", lambda: _localize(service, {**good, "image": ("x.jpg", b"\xff\xd8garbage")}), 422),
        ("corrupt audio", lambda: _localize(service, {**good, "audio": ("x.wav", b"RIFF....WAVEgarbage")}), 422),
        ("text as audio", lambda: _localize(service, {**good, "audio": ("notes.txt", b"hello")}), 422),
        ("empty image", lambda: _localize(service, {**good, "image": ("e.jpg", b"")}), 422),
        ("empty audio", lambda: _localize(service, {**good, "audio": ("e.wav", b"")}), 422),
        ("too large", lambda: _localize(service, {**good, "audio": ("big.wav", too_big)}), 413),
        ("unknown route", lambda: _request(service, "GET", "/nope"), 404),
        ("wrong method", lambda: _request(service, "GET", "/localize"), 405),
        ("post to healthz", lambda: _request(service, "POST", "/healthz", b"x"), 405),
        ("empty body", lambda: _request(service, "POST", "/localize", b"", {"Content-Type": ctype, "Content-Length": "0"}), 400),
        ("image is audio", lambda: _localize(service, {"image": ("a.jpg", audio), "audio": ("sound.wav", audio)}), 422),
        ("audio is image", lambda: _localize(service, {"image": ("scene.jpg", image), "audio": ("b.wav", image)}), 422),
        ("overlay of a bad pair", lambda: _localize(service, {**good, "image": ("x.png", b"\x89PNG\r\n"), "overlay": (None, b"1")}), 422),
    ]
    assert len(kinds) == 20
    for name, send, expected in kinds:
        status, answer = send()
        assert status == expected, (name, answer)
        assert set(answer) == {"error"} and answer["error"] and "\n" not in answer["error"], name
        assert "sslrt-serve-" not in answer["error"], name  # no temporary paths in messages
        status, answer = _localize(service, good)
        assert status == 200 and answer["peak"], (name, answer)


def test_service_batches_concurrent_requests(service, media):
    sounds = ["sound.wav", "stereo44k.flac", "short.ogg"]
    fields = [{"image": ("scene.jpg", (media / "scene.jpg").read_bytes()), "audio": (s, (media / s).read_bytes())}
              for s in sounds]
    _, before = _request(service, "GET", "/models")
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: _localize(service, fields[i % 3]), range(32)))
    assert all(status == 200 for status, _ in answers)
    # identical inputs, identical answers, whatever batch each request shared
    by_sound = {}
    for status, a in answers:
        by_sound.setdefault(a["audio"], []).append(a["heatmap"])
    assert all(all(h == hs[0] for h in hs) for hs in by_sound.values())
    _, after = _request(service, "GET", "/models")
    grown = {int(k): v - before["batch_sizes"].get(k, 0) for k, v in after["batch_sizes"].items()}
    assert sum(size * n for size, n in grown.items()) == 32
    assert max(size for size, n in grown.items() if n) > 1, after["batch_sizes"]


def test_cli_serve_with_the_proxy_ingress(tiny_export, media):
    """`sslrt serve` as a user runs it (its own local Ray, the default proxy ingress): a pair is
    localized, a bad request gets its 4xx, /models names the ingress, and Ctrl-C stops the
    service with exit code 130."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local cluster
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sslrt.cli", "serve", "-m", tiny_export.directory, "--port", str(port),
                             "--ingress", "proxy"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    service = ("127.0.0.1", port)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if _request(service, "GET", "/healthz")[0] == 200:
                    break
            except (OSError, http.client.HTTPException, json.JSONDecodeError):
                pass
            assert time.monotonic() < deadline, "sslrt serve did not answer within 180 s"
            time.sleep(0.5)
        status, got = _localize(service, {"image": ("scene.jpg", (media / "scene.jpg").read_bytes()),
                                          "audio": ("sound.wav", (media / "sound.wav").read_bytes())})
        assert status == 200 and got["peak"] and got["image"] == "scene.jpg", got
        assert _localize(service, {"image": ("scene.jpg", (media / "scene.jpg").read_bytes())})[0] == 400
        status, models = _request(service, "GET", "/models")
        assert status == 200 and models["ingress"] == "proxy"
        assert models["reached"][1] == port  # the proxy hands the request over as it reached the service
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 130, proc.stderr.read()[-3000:]


@pytest.mark.parametrize("family", ["ezvsl", "ssltie"])
def test_ray_preprocessing_uses_the_familys_transforms(family, media):
    """The CPU tasks of `--ray` prepare each pair with the model family's own front end (a peer
    family's spectrogram has another shape and rule than ours'), as the local path does."""
    from sslrt.graphs import INPUT_AUDIO, INPUT_IMAGE, input_shapes
    from sslrt.runtime.pipeline import prepare_pair
    from sslrt.scale.batch import _prepare_batch
    from sslrt.spec import get_spec

    spec = get_spec(family)
    image, audio = str(media / "scene.jpg"), str(media / "stereo44k.flac")
    batch = {"image": np.array([image], dtype=object), "audio": np.array([audio], dtype=object),
             "key": np.array(["0"], dtype=object)}
    out = _prepare_batch(batch, "table", "", np.array([], dtype=str), input_shapes(spec), spec, False)
    local = prepare_pair(image, audio, spec=spec)
    assert out["error"][0] == ""
    assert np.array_equal(out["spectrogram"][0], local.spectrogram)
    assert np.array_equal(out["image_tensor"][0], local.image_tensor)
    assert out["spectrogram"][0].shape == tuple(input_shapes(spec)[INPUT_AUDIO]) != tuple(input_shapes(get_spec("ours"))[INPUT_AUDIO])
    assert out["image_tensor"][0].shape == tuple(input_shapes(spec)[INPUT_IMAGE])
    exact = _prepare_batch(batch, "table", "", np.array([], dtype=str), input_shapes(spec), spec, True)
    assert np.array_equal(exact["image_tensor"][0], prepare_pair(image, audio, spec=spec, exact_inputs=True).image_tensor)
    assert not np.array_equal(exact["image_tensor"][0], out["image_tensor"][0])


def test_both_actor_kinds_give_the_same_rows(tiny_export, media, tmp_path):
    """The GPU pipeline's halves (_prepare_batch columns -> _LocalizeActor) and the CPU pipeline's
    one actor (_PrepareAndLocalizeActor) give the same result rows, a bad pair included, whatever
    the engine batches a block is cut into; run as plain objects, without a cluster."""
    import pickle

    from sslrt.graphs import input_shapes
    from sslrt.scale.batch import _LocalizeActor, _PrepareAndLocalizeActor, _prepare_batch
    from sslrt.spec import get_spec

    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    images = [str(media / "scene.jpg"), str(tmp_path / "bad.jpg"), str(media / "scene.png")]
    audios = [str(media / "sound.wav"), str(media / "sound.wav"), str(media / "short.ogg")]
    batch = {"image": np.array(images, dtype=object), "audio": np.array(audios, dtype=object),
             "key": np.array(["0", "1", "2"], dtype=object)}
    spec = get_spec("ours")
    prepare = {"kind": "table", "base": "", "done": np.array([], dtype=str), "spec": spec, "exact_inputs": False}
    engine = {"model": tiny_export.directory, "backend": "onnxruntime", "precision": "fp32", "threads": 1,
              "reuse_embeddings": True, "sounding_threshold": None, "keep_embeddings": False}
    # a Ray block holds several engine batches: one pair per engine call against all in one call
    split = _LocalizeActor(**engine, batch_size=1)(_prepare_batch(batch, shapes=input_shapes(spec), **prepare))
    joined = _PrepareAndLocalizeActor(prepare, **engine, batch_size=8)(batch)
    # the same rows fail, with the same message (up to the address of PIL's buffer object in it)
    assert [str(e).split(" (")[0] for e in split["error"]] == [str(e).split(" (")[0] for e in joined["error"]]
    assert [bool(e) for e in split["error"]] == [False, True, False]
    for a, b in zip(split["result"], joined["result"]):
        assert bool(a) == bool(b)
        if a:
            ra, rb = pickle.loads(a), pickle.loads(b)
            assert np.array_equal(ra.heatmap, rb.heatmap)
            assert {k: v for k, v in ra.to_dict().items() if k != "timings_ms"} == \
                   {k: v for k, v in rb.to_dict().items() if k != "timings_ms"}


def test_keep_freed_memory_applies_on_glibc():
    """The allocator setting of sslrt's own Ray processes (replicas, actors) takes effect where
    glibc runs them; in a subprocess, so that this test process keeps its allocator."""
    import platform
    import subprocess
    import sys

    if platform.libc_ver()[0] != "glibc":
        pytest.skip(f"glibc's mallopt only; this is {platform.libc_ver()[0] or 'another libc'}")
    code = "from sslrt.runtime.allocator import keep_freed_memory; print(keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr
