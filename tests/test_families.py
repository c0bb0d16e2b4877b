"""Every family through the whole engine: export, `sslrt run` (ONNX Runtime and the PyTorch
reference), the "no sound source" flag, and `sslrt eval` with each family's official evaluation
rules, checked against golden_peers.json (the official code's own outputs) where it has numbers."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import FAMILIES, PEERS, SAMPLES, run_cli

pytestmark = pytest.mark.skipif(not (PEERS / "golden_peers.json").is_file(), reason=f"golden peers not found under {PEERS}")

# ezvsl and fnac files hold the same tensors: their family must be named (tests/test_peers.py).
NAMED = {"ezvsl", "fnac"}


def _scale(family: str) -> float:
    from sslrt.spec import get_spec

    return get_spec(family).heatmap_scale


@pytest.fixture(scope="session")
def family_export(tmp_path_factory, peer_checkpoint):
    """family -> export directory of its released-layout checkpoint (full width), made once."""
    from sslrt.export import export_checkpoint

    made = {}

    def get(family: str) -> str:
        if family not in made:
            out = tmp_path_factory.mktemp(f"export_{family}") / "export"
            made[family] = export_checkpoint(str(peer_checkpoint(family)), str(out), family=family if family in NAMED else None,
                                             simplify=False).directory
        return made[family]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_run_matches_the_official_heatmaps_on_onnxruntime(family, family_export, golden_peers, capsys):
    export = family_export(family)
    manifest = json.loads((__import__("pathlib").Path(export) / "manifest.json").read_text())
    assert manifest["family"] == family and manifest["spec"]["name"] == family
    assert manifest["checkpoint_reading"]["family_detected"] is (family not in NAMED)
    for pair in golden_peers["families"][family]["pairs"]:
        code, out, err = run_cli(["run", SAMPLES / pair["image"], SAMPLES / pair["audio"], "--model", export, "--json"], capsys)
        assert code == 0, err
        result = json.loads(out)
        golden = np.asarray(pair["heatmap"], dtype=np.float64)
        assert result["family"] == family and result["heatmap_size"] == list(golden.shape)
        assert result["heatmap_units"] == ("cosine" if _scale(family) == 1 else "cosine / 0.03")
        # 1e-4 in cosine units: 1e-4 / tau in the /tau families' own units
        assert np.abs(np.asarray(result["heatmap"]) - golden).max() <= 1e-4 * _scale(family), pair
        assert isinstance(result["sounding"], bool) and result["sounding_threshold"] == manifest["spec"]["sounding_threshold"]


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_reference_backend_on_the_other_prefix_variant(family, peer_checkpoint, golden_peers, capsys):
    """`--backend torch` straight from a checkpoint (no export) in the variant the family did not
    release ('module.' keys or none): the family is still found, the heatmap is the official one."""
    ckpt = peer_checkpoint(family, "other")
    extra = ["--family", family] if family in NAMED else []
    for pair in golden_peers["families"][family]["pairs"]:
        code, out, err = run_cli(["run", SAMPLES / pair["image"], SAMPLES / pair["audio"], "--model", ckpt, "--backend", "torch",
                                  "--json", *extra], capsys)
        assert code == 0, err
        result = json.loads(out)
        assert result["family"] == family and result["backend"] == "torch"
        assert np.abs(np.asarray(result["heatmap"]) - np.asarray(pair["heatmap"])).max() <= 1e-5 * _scale(family), pair


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_onnxruntime_on_the_other_prefix_variant(family, peer_checkpoint, golden_peers, tmp_path, capsys):
    """The export of the variant the family did not release ('module.' keys or none) runs on ONNX
    Runtime to the official heatmaps, as the released variant's does."""
    from sslrt.export import export_checkpoint

    ckpt = peer_checkpoint(family, "other")
    export = export_checkpoint(str(ckpt), str(tmp_path / "export"), family=family if family in NAMED else None,
                               simplify=False).directory
    for pair in golden_peers["families"][family]["pairs"]:
        code, out, err = run_cli(["run", SAMPLES / pair["image"], SAMPLES / pair["audio"], "--model", export, "--json"], capsys)
        assert code == 0, err
        result = json.loads(out)
        assert result["family"] == family and result["backend"] == "onnxruntime"
        assert np.abs(np.asarray(result["heatmap"]) - np.asarray(pair["heatmap"])).max() <= 1e-4 * _scale(family), pair


def test_an_ambiguous_checkpoint_without_family_is_one_line(peer_checkpoint, media, capsys):
    code, out, err = run_cli(["run", media / "scene.jpg", media / "sound.wav", "--model", peer_checkpoint("fnac")], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and "--family" in err


@pytest.mark.parametrize("family", FAMILIES)
def test_evaluator_map_threshold_and_ciou_are_the_official_ones(family, golden_peers):
    """The golden accordion heatmap through the family's IS3 rules equals the official
    evaluator's 224x224 map, threshold and cIoU."""
    from sslrt.measure import metrics
    from sslrt.spec import get_spec

    spec = get_spec(family)
    fam = golden_peers["families"][family]
    ev = fam["eval_pair"]
    heatmap = np.asarray(fam["pairs"][ev["index"]]["heatmap"], dtype=np.float32)[None]
    pred = metrics.heatmaps_to_predictions(heatmap, spec.eval_upsample["is3"], spec.eval_normalize)
    gt = metrics.gt_map_is3(ev["gt_box_is3"])[None]
    assert np.abs(pred[0] - np.asarray(ev["is3"]["map"], dtype=np.float32)).max() <= 1e-6
    fixed, adaptive = metrics.ciou_fixed_and_adaptive(pred, gt)
    assert metrics.fixed_thresholds(pred)[0] == pytest.approx(ev["is3"]["threshold"], abs=1e-6)
    assert fixed[0] == pytest.approx(ev["is3"]["ciou"], abs=1e-9)
    assert adaptive[0] == pytest.approx(ev["is3"]["ciou_adaptive"], abs=1e-9)
    if "vggss_branch" in ev:
        vg = metrics.heatmaps_to_predictions(heatmap, spec.eval_upsample["vggss"], spec.eval_normalize)
        assert np.abs(vg[0] - np.asarray(ev["vggss_branch"]["map"], dtype=np.float32)).max() <= 1e-6


def _official_ciou(h: np.ndarray, box, family: str) -> tuple[float, float]:
    """A literal transcription of the family's IS3 evaluation loop (PEER_FACTS §3.3) in torch/cv2."""
    import cv2
    import torch
    import torch.nn.functional as F

    if family == "ssltie":  # validate_ssltie: cv2 for every test set, 1 - normalize(-h)
        up = cv2.resize(h.astype(np.float32), (224, 224), interpolation=cv2.INTER_LINEAR)
    else:
        up = F.interpolate(torch.from_numpy(h.astype(np.float32))[None, None], (224, 224), mode="bilinear",
                           align_corners=True)[0, 0].numpy()

    def normalize(v):
        lo, hi = v.min(), v.max()
        return v if hi == lo else (v - lo) / (hi - lo)

    pred = normalize(up) if family in ("ezvsl", "slavc", "fnac") else 1 - normalize(-up)
    gt = np.zeros((224, 224))
    x0, y0, x1, y1 = (int(v) for v in box)
    gt[y0:y1, x0:x1] = 1
    out = []
    for k in (int(224 * 224 / 2), 224 * 224 - int(np.count_nonzero(gt))):
        thr = np.sort(pred.flatten())[k]
        infer = (pred > thr).astype(np.float64)
        out.append(np.sum(infer * gt) / (np.sum(gt) + np.sum(infer * (gt == 0))))
    return out[0], out[1]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["ours", "ezvsl", "ssltie"])
def test_eval_gives_each_familys_official_metrics(family, family_export, tmp_path, capsys):
    """`sslrt eval` on a generated IS3 set = the family's own evaluation loop applied to the
    heatmaps `sslrt run` gives for the same pairs (ours: align-corners + 1-normalize(-h); ezvsl:
    align-corners + normalize(h); ssltie: cv2 everywhere)."""
    from sslrt.datasets import read_is3
    from sslrt.measure import metrics
    from sslrt.synthetic.datasets import synthetic_is3_samples, write_is3

    root = tmp_path / "is3"
    write_is3(root, synthetic_is3_samples(3, seed=11))
    code, out, err = run_cli(["eval", "--dataset", "is3", "--root", root, "--model", family_export(family),
                              "-o", tmp_path / "eval", "--retrieval", "0"], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["family"] == family
    samples = read_is3(root).samples
    code, out, err = run_cli(["run", "--pairs", _pairs_csv(tmp_path, samples), "--model", family_export(family), "--json"], capsys)
    assert code == 0, err
    results = json.loads(out)["results"]
    fixed, adaptive = zip(*(_official_ciou(np.asarray(r["heatmap"]), s.boxes[0], family) for r, s in zip(results, samples)))
    expected = metrics.summarize_localization_percent(np.array(fixed), np.array(adaptive), [s.group for s in samples])
    assert summary["metrics"] == pytest.approx(expected, abs=1e-9)


def _pairs_csv(folder, samples) -> str:
    path = folder / "pairs.csv"
    path.write_text("".join(f"{s.image_path},{s.audio_path}\n" for s in samples))
    return str(path)


def test_models_table_lists_every_family(capsys):
    code, out, err = run_cli(["models", "--json"], capsys)
    assert code == 0, err
    rows = {r["family"]: r for r in json.loads(out)}
    assert set(rows) == set(FAMILIES)
    assert rows["ours"]["map_size"] == 14 and rows["ezvsl"]["map_size"] == 7
    assert rows["slavc"]["sounding_threshold"] == 0.5450 and rows["slavc"]["sounding_units"] == "half_cosine"
    code, out, err = run_cli(["models"], capsys)
    assert code == 0 and "ssltie" in out and "| family |" in out


def test_bench_models_side_by_side(tiny_export, tmp_path, capsys):
    from sslrt.resolve import DEMO_EXPORT

    code, out, err = run_cli(["bench", "--models", f"{DEMO_EXPORT},{tiny_export.directory}", "--precisions", "fp32,int8",
                              "--batch", "1", "--seconds", "0.05", "--e2e-pairs", "2", "--e2e-image-size", "64",
                              "--report", tmp_path / "rep"], capsys)
    assert code == 0, err
    table = [line for line in out.splitlines() if line.startswith("| ours ")]
    assert len(table) == 2
    assert "n/a" in table[1].split("|")[-2]  # the tiny export has no INT8 graphs: no agreement to measure
    assert "%" in table[0].split("|")[-2]
    report = json.loads((tmp_path / "rep" / "models.json").read_text())
    assert [r["model"]["family"] for r in report["runs"]] == ["ours", "ours"]
    assert all(any(row["speedup"] for row in r["rows"] if row["backend"] == "onnxruntime") for r in report["runs"])


def test_eval_several_models_side_by_side(tiny_export, tmp_path, capsys):
    from sslrt.resolve import DEMO_EXPORT
    from sslrt.synthetic.datasets import synthetic_is3_samples, write_is3

    root = tmp_path / "is3"
    write_is3(root, synthetic_is3_samples(2, seed=5))
    code, out, err = run_cli(["eval", "--dataset", "is3", "--root", root, "--models", f"{DEMO_EXPORT},{tiny_export.directory}",
                              "-o", tmp_path / "ev", "--retrieval", "0"], capsys)
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("| ") and "| ours |" in line]
    assert len(rows) == 2 and sorted(p.name for p in (tmp_path / "ev").iterdir()) == ["0_ours", "1_ours"]
    for folder in (tmp_path / "ev").iterdir():
        summary = json.loads((folder / "summary.json").read_text())
        assert f"{summary['metrics']['cIoU']:.2f}" in "".join(rows)
