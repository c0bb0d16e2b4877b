"""Checkpoint loading: every released layout, and one clear line for anything else."""
import pytest
import torch

from conftest import make_checkpoint
from sslrt.errors import SslrtError
from sslrt.model import load_checkpoint


@pytest.mark.parametrize("layout,prefix", [("released", ""), ("released", "module."), ("model", "module."), ("bare", "")])
def test_layouts_load_to_the_same_network(tmp_path, layout, prefix):
    ref_model, ref_cfg = load_checkpoint(make_checkpoint(tmp_path / "ref.pth", width=4, seed=5))
    model, cfg = load_checkpoint(make_checkpoint(tmp_path / "x.pth", width=4, seed=5, layout=layout, prefix=prefix))
    assert cfg == ref_cfg and cfg.width == 4
    image, audio = torch.randn(2, 3, 224, 224), torch.randn(2, 1, 257, 299)
    with torch.no_grad():
        assert torch.equal(model(image, audio), ref_model(image, audio))


def test_missing_tensor_is_named(tmp_path):
    path = make_checkpoint(tmp_path / "x.pth", width=4)
    obj = torch.load(path, weights_only=True)
    del obj["model_state_dict"]["audnet.layer3.1.bn2.running_var"]
    torch.save(obj, path)
    with pytest.raises(SslrtError, match=r"missing tensor 'audnet\.layer3\.1\.bn2\.running_var'"):
        load_checkpoint(path)


def test_misshapen_tensor_is_named(tmp_path):
    path = make_checkpoint(tmp_path / "x.pth", width=4)
    obj = torch.load(path, weights_only=True)
    obj["model_state_dict"]["imgnet.layer2.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(obj, path)
    with pytest.raises(SslrtError, match=r"'imgnet\.layer2\.0\.conv1\.weight' has shape \[3, 3, 3, 3\]"):
        load_checkpoint(path)


def test_nan_weights_are_refused(tmp_path):
    path = make_checkpoint(tmp_path / "x.pth", width=4)
    obj = torch.load(path, weights_only=True)
    obj["model_state_dict"]["audnet.bn1.weight"][0] = float("nan")
    torch.save(obj, path)
    with pytest.raises(SslrtError, match="NaN"):
        load_checkpoint(path)


def test_other_model_and_non_checkpoints_are_refused(tmp_path):
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, other)
    with pytest.raises(SslrtError, match="not a checkpoint of the paper's model"):
        load_checkpoint(other)
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(SslrtError, match="not a PyTorch checkpoint"):
        load_checkpoint(text)
    with pytest.raises(SslrtError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")
