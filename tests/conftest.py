"""Shared fixtures: the golden checkpoint of ../shared, its export, and tiny generated models."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SSLRT_SHARED", REPO.parent / "shared"))
SAMPLES = SHARED / "samples"
GOLDEN = SHARED / "golden"

needs_shared = pytest.mark.skipif(not (GOLDEN / "golden_heatmaps.json").is_file(),
                                  reason=f"../shared (golden heatmaps, real samples) not found at {SHARED}")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Checkpoint exports are cached per user; tests must neither read nor fill the real cache.
    monkeypatch.setenv("SSLRT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def golden():
    if not (GOLDEN / "golden_heatmaps.json").is_file():
        pytest.skip(f"golden heatmaps not found under {GOLDEN}")
    return json.loads((GOLDEN / "golden_heatmaps.json").read_text())


@pytest.fixture(scope="session")
def golden_checkpoint(tmp_path_factory, golden):
    """The paper-format checkpoint of ../shared/golden, rebuilt bit for bit by its own script."""
    import torch

    spec = importlib.util.spec_from_file_location("make_golden_checkpoint", GOLDEN / "make_golden_checkpoint.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    path = tmp_path_factory.mktemp("golden") / "golden.pth.tar"
    torch.save({"epoch": 0, "model_state_dict": mod.build(), "optimizer_state_dict": {}}, path)
    return path


@pytest.fixture(scope="session")
def golden_export(tmp_path_factory, golden_checkpoint):
    from sslrt.export import export_checkpoint

    return export_checkpoint(str(golden_checkpoint), str(tmp_path_factory.mktemp("exports") / "golden"))


from sslrt.synthetic.checkpoints import make_checkpoint  # noqa: E402  (re-exported for the tests)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.pth.tar", width=4)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, tiny_checkpoint):
    from sslrt.export import export_checkpoint

    return export_checkpoint(str(tiny_checkpoint), str(tmp_path_factory.mktemp("exports") / "tiny"))


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    """Small generated inputs on disk: an image, a 16 kHz wav, a 44.1 kHz stereo flac, a short ogg."""
    import cv2
    import soundfile as sf

    from sslrt.synthetic.generated import generated_image, generated_waveform

    d = tmp_path_factory.mktemp("media")
    rgb = generated_image(3, (120, 160))
    cv2.imwrite(str(d / "scene.jpg"), rgb[:, :, ::-1])
    cv2.imwrite(str(d / "scene.png"), rgb[:, :, ::-1])
    wave = generated_waveform(3, 4.0)
    sf.write(d / "sound.wav", wave, 16000, subtype="PCM_16")
    t = np.arange(int(44100 * 2.5)) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 220 * t)], axis=1)
    sf.write(d / "stereo44k.flac", stereo, 44100)
    sf.write(d / "short.ogg", wave[:8000], 16000)
    return d


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run the console entry point in-process; returns (exit code, stdout, stderr)."""
    from sslrt.cli import main

    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


# -- the peer families' golden data (../shared/golden/peers) -------------------------------------
PEERS = GOLDEN / "peers"
FAMILIES = ("ours", "lvs", "ezvsl", "slavc", "fnac", "ssltie")
# The file is what it is whatever its prefix; "other" is the variant the family did not release.
OTHER_PREFIX = {"": "module", "module.": "none"}


@pytest.fixture(scope="session")
def golden_peers():
    if not (PEERS / "golden_peers.json").is_file():
        pytest.skip(f"golden peers not found under {PEERS}")
    return json.loads((PEERS / "golden_peers.json").read_text())


@pytest.fixture(scope="session")
def peer_maker():
    spec = importlib.util.spec_from_file_location("make_peer_checkpoint", PEERS / "make_peer_checkpoint.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def peer_checkpoint(tmp_path_factory, peer_maker):
    """(family, prefix variant, safe metadata) -> a checkpoint file, each built once per session."""
    import torch

    made = {}
    root = tmp_path_factory.mktemp("peers")

    def get(family: str, variant: str = "default", safe: bool = False):
        if variant == "other":
            variant = OTHER_PREFIX[peer_maker.DEFAULT_PREFIX[family]]
        key = (family, variant, safe)
        if key not in made:
            # named after no family: detection must not read the name
            path = root / f"checkpoint_{len(made)}.pth"
            if family == "ours" and variant == "module":
                # make_peer_checkpoint seeds ours' tensors by the full key, prefix included (to
                # stay bit-identical to make_golden_checkpoint), so its --prefix module file holds
                # other weights: prefix the golden file's own tensors instead.
                obj = peer_maker.build(family, "default", safe)
                obj["model_state_dict"] = {"module." + k: v for k, v in obj["model_state_dict"].items()}
            else:
                obj = peer_maker.build(family, variant, safe)
            torch.save(obj, path)
            made[key] = path
        return made[key]

    return get
