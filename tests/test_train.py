"""The trainer's objective and checkpoint: a few steps lower the loss; the export loads."""
import numpy as np
import pytest
import torch

from sslrt.config import ModelConfig
from sslrt.model.checkpoint import load_checkpoint
from sslrt.model.network import SoundLocalizer
from sslrt.train.loss import alignment_loss, pooled_similarity
from sslrt.measure.metrics import upsample_heatmap as _upsample
from sslrt.train.metrics import ciou_is3, summarize
from sslrt.train.trainer import write_released_checkpoint


def _tiny_batch(b=4):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(b, 3, 224, 224, generator=g)
    specs = torch.randn(b, 1, 257, 64, generator=g) * 0.3 - 1.5
    return images, specs


def test_optimizer_steps_lower_the_loss_on_the_batch():
    torch.manual_seed(0)
    model = SoundLocalizer(ModelConfig(width=4)).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    images, specs = _tiny_batch()
    identity = torch.arange(images.shape[0])

    def loss_now():
        loss, _ = alignment_loss(model.encode_image(images), model.encode_audio(specs), identity)
        return loss

    first = loss_now()
    for _ in range(3):
        opt.zero_grad()
        loss = loss_now()
        loss.backward()
        opt.step()
    assert loss_now().item() < first.item()


def test_pooled_similarity_is_the_positive_region_average():
    maps = torch.full((1, 14, 14), 0.1)
    maps[0, :3, :3] = 0.9  # clearly inside the positive region
    sim = pooled_similarity(maps)
    assert abs(float(sim) - 0.9) < 1e-3


def test_views_of_one_sample_are_positives():
    torch.manual_seed(0)
    feats = torch.nn.functional.normalize(torch.rand(4, 8, 14, 14), dim=1)
    aud = torch.nn.functional.normalize(torch.rand(4, 8), dim=1)
    loss_two_ids, _ = alignment_loss(feats, aud, torch.tensor([0, 1, 0, 1]))
    loss_four_ids, _ = alignment_loss(feats, aud, torch.arange(4))
    assert float(loss_two_ids) < float(loss_four_ids)  # more positives per row, lower loss


def test_export_is_the_released_layout_and_loads(tmp_path):
    model = SoundLocalizer(ModelConfig(width=4)).eval()
    path = str(tmp_path / "demo.pth.tar")
    write_released_checkpoint(model, path, epoch=3)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"epoch", "model_state_dict", "optimizer_state_dict"} and raw["epoch"] == 3
    keys = raw["model_state_dict"].keys()
    assert all(k.startswith(("imgnet.", "audnet.", "img_proj.", "aud_proj.", "vision_fc1.", "conv3.", "norm3."))
               for k in keys)
    loaded, cfg = load_checkpoint(path)
    assert cfg.width == 4
    images, specs = _tiny_batch(2)
    specs = torch.randn(2, 1, 257, 299) * 0.3 - 1.5
    with torch.no_grad():
        np.testing.assert_allclose(loaded(images, specs).numpy(), model(images, specs).numpy(), atol=1e-6)


def test_is3_metric_rule():
    heat = np.zeros((14, 14), np.float32)
    heat[:, :7] = 1.0  # left half hot
    assert _upsample(np.asarray(heat)[None], "bilinear_align_corners").shape == (1, 224, 224)
    good = ciou_is3(heat, [0, 0, 100, 224])  # box in the left half
    bad = ciou_is3(heat, [124, 0, 224, 224])
    assert good >= 0.5 > bad
    m = summarize([good, bad, good, good], ["a_b_1_a", "a_b_1_b", "c_d_2_c", "c_d_2_d"])
    assert m["cIoU"] == 0.75 and m["iIoU"] == 0.5 and m["images"] == 2


@pytest.mark.slow
def test_training_run_resumes_from_its_last_checkpoint(tmp_path):
    from sslrt.train import TrainConfig, train

    cfg = dict(out_dir=str(tmp_path / "run"), width=4, batch_size=8, train_images=16, heldout_images=2,
               progress=False)
    first = train(TrainConfig(epochs=1, **cfg))
    assert [h["epoch"] for h in first["history"]] == [1]
    second = train(TrainConfig(epochs=2, export=str(tmp_path / "out.pth.tar"), **cfg))
    assert [h["epoch"] for h in second["history"]] == [1, 2]
    assert second["random"] == first["random"]  # the random-weights baseline is kept, not recomputed
    assert torch.load(tmp_path / "run" / "last.pth.tar", weights_only=True)["epoch"] == 2
    load_checkpoint(tmp_path / "out.pth.tar")
