"""`sslrt eval` end to end on generated datasets in each official layout."""
import csv
import json

import pytest

from conftest import run_cli
from sslrt.synthetic.datasets import (
    synthetic_flickr_samples, synthetic_is3_samples, synthetic_vggss_samples, write_flickr, write_is3, write_vggss,
)

LAYOUTS = {
    "vggss": lambda root: write_vggss(root, synthetic_vggss_samples(6, seed=1)),
    "flickr": lambda root: write_flickr(root, synthetic_flickr_samples(5, seed=2)),
    "is3": lambda root: write_is3(root, synthetic_is3_samples(3, seed=3)),
}


@pytest.mark.parametrize("dataset", sorted(LAYOUTS))
def test_eval_onnxruntime_equals_torch_reference(dataset, tmp_path, tiny_export, capsys):
    root = tmp_path / "data"
    LAYOUTS[dataset](root)
    summaries = {}
    for backend in ("onnxruntime", "torch"):
        out = tmp_path / f"out_{backend}"
        code, stdout, err = run_cli(["eval", "-d", dataset, "--root", root, "-m", tiny_export.directory, "-b", backend,
                                     "-o", out, "--json", tmp_path / f"{backend}.json", "--batch-size", "4"], capsys)
        assert code == 0, err
        summaries[backend] = json.loads((tmp_path / f"{backend}.json").read_text())
        assert (out / "summary.md").is_file()
        with open(out / "per_sample.csv") as f:
            assert len(list(csv.DictReader(f))) == summaries[backend]["evaluated"]
    ort, ref = summaries["onnxruntime"], summaries["torch"]
    assert ort["evaluated"] > 0 and ort["missing"] == 0
    assert ort["metrics"] == ref["metrics"]
    expected = {"cIoU", "AUC", "cIoU_adap", "AUC_adap"} | ({"iIoU", "iAUC", "iIoU_adap", "iAUC_adap"} if dataset == "is3" else set())
    assert set(ort["metrics"]) == expected
    assert set(ort["retrieval"]) >= {"audio_to_image_R@1", "image_to_audio_R@1"}


def test_eval_resumes_from_per_sample_results(tmp_path, tiny_export, capsys):
    root = tmp_path / "data"
    write_is3(root, synthetic_is3_samples(4, seed=5))
    out = tmp_path / "out"
    args = ["eval", "-d", "is3", "--root", root, "-m", tiny_export.directory, "-o", out, "--batch-size", "2"]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    full = json.loads((out / "summary.json").read_text())
    # simulate an interrupted run: keep the header and 3 rows, and a torn last line
    lines = (out / "per_sample.csv").read_text().splitlines()
    (out / "per_sample.csv").write_text("\n".join(lines[:4]) + "\n" + lines[4][:5])
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["timing"]["resumed"] == 3 and resumed["timing"]["pairs_this_run"] == full["evaluated"] - 3
    assert resumed["metrics"] == full["metrics"]
    code, _, err = run_cli(args[:-4] + ["-o", out, "-b", "torch"], capsys)
    assert code == 2 and "another configuration" in err


def test_eval_reports_missing_files(tmp_path, tiny_export, capsys):
    root = tmp_path / "data"
    write_vggss(root, synthetic_vggss_samples(4, seed=7))
    victim = next(root.rglob("*.wav"))
    victim.unlink()
    code, out, err = run_cli(["eval", "-d", "vggss", "--root", root, "-m", tiny_export.directory, "-o", tmp_path / "o",
                              "--json", tmp_path / "s.json"], capsys)
    assert code == 0, err
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["missing"] == 1 and s["evaluated"] == 3 and "1 missing" in out


def test_eval_bad_root(tmp_path, tiny_export, capsys):
    code, _, err = run_cli(["eval", "-d", "is3", "--root", tmp_path / "nope", "-m", tiny_export.directory], capsys)
    assert code == 2 and "not found" in err
    code, _, err = run_cli(["eval", "-d", "coco", "--root", tmp_path, "-m", tiny_export.directory], capsys)
    assert code == 2 and "unknown dataset" in err
