"""Full-width parity on the real samples against the heatmaps of the paper's own code (golden)."""
import json

import numpy as np
import pytest

from conftest import SAMPLES, needs_shared, run_cli
from official import official_image_tensor, official_spectrogram_file

pytestmark = [needs_shared, pytest.mark.slow]


@pytest.mark.parametrize("backend,bound", [("onnxruntime", 1e-4), ("torch", 1e-5), ("openvino", 1e-4)])
def test_cli_heatmap_matches_golden(backend, bound, golden, golden_export, capsys):
    if backend == "openvino":  # one pair: its direct graph (split batches: the test below)
        pytest.importorskip("openvino", reason="openvino is not installed (pip install 'sslrt[openvino]')")
    for pair in golden["pairs"]:
        code, out, err = run_cli(["run", SAMPLES / pair["image"], SAMPLES / pair["audio"], "--model",
                                  golden_export.directory, "--backend", backend, "--json"], capsys)
        assert code == 0, err
        result = json.loads(out)
        heatmap = np.array(result["heatmap"])
        assert heatmap.shape == (14, 14)
        assert np.abs(heatmap - np.array(pair["heatmap"])).max() <= bound
        assert result["backend"] == backend and result["precision"] == "fp32"


def test_openvino_split_batches_match_golden(golden, golden_export):
    """A batch of the golden pairs on OpenVINO runs its Winograd throughput model (fp32)."""
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'sslrt[openvino]')")
    import os

    import sslrt

    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: no throughput streams to split a batch across")

    pairs = [(SAMPLES / p["image"], SAMPLES / p["audio"]) for p in golden["pairs"]]
    localizer = sslrt.load(golden_export.directory, backend="openvino")
    got = list(localizer.localize_many(pairs, batch_size=len(pairs)))
    assert sum(e.winograd_rewritten for e in localizer.engines.values()) == 14  # layer3 + layer4, both towers
    for result, pair in zip(got, golden["pairs"]):
        assert np.abs(result.heatmap - np.array(pair["heatmap"])).max() <= 1e-4


def test_mp3_pair_matches_the_official_path(golden_checkpoint, golden_export):
    """No golden heatmap exists for the mp3: compare with the official transforms + reference network."""
    import torch

    import sslrt
    from sslrt.model import load_checkpoint

    model, _ = load_checkpoint(golden_checkpoint)
    image = torch.from_numpy(official_image_tensor(SAMPLES / "car_img.jpeg"))[None]
    audio = torch.from_numpy(official_spectrogram_file(SAMPLES / "car_engine.mp3"))[None]
    with torch.no_grad():
        expected = model(image, audio)[0, 0].numpy()
    for backend, bound in [("onnxruntime", 1e-4), ("torch", 1e-5)]:
        got = sslrt.load(golden_export.directory, backend=backend).localize(SAMPLES / "car_img.jpeg", SAMPLES / "car_engine.mp3")
        assert np.abs(got.heatmap - expected).max() <= bound


def test_export_manifest_records_measured_parity(golden_export, golden_checkpoint):
    from sslrt.store.manifest import sha256_file

    m = golden_export.manifest
    assert m["checkpoint"]["sha256"] == sha256_file(golden_checkpoint)
    assert m["model"]["width"] == 64
    assert m["parity"]["onnx_fp32_vs_torch_fp32"]["max_abs"] <= 1e-4
    assert m["artifacts"]["onnx_fp32"]["opset"] >= 17
