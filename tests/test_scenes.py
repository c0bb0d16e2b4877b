"""The scene generator: determinism, boxes on the objects, audio format, the IS3 writer."""
import json
import os

import numpy as np
import pytest
import soundfile as sf

from sslrt.synthetic.generated import SAMPLE_RATE
from sslrt.synthetic.scenes.generator import IMAGE_SIZE
from sslrt.synthetic.scenes import CLASS_NAMES, generate_samples, read_scene_set, render_scene, write_scene_set
from sslrt.measure.metrics import is3_image_group as image_group


def test_same_seed_same_samples_other_seed_other_samples():
    a = generate_samples(3, seed=7, seconds=1.0)
    b = generate_samples(3, seed=7, seconds=1.0)
    c = generate_samples(3, seed=8, seconds=1.0)
    for x, y in zip(a, b):
        assert x.name == y.name and x.box == y.box
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.waveform, y.waveform)
    assert any(not np.array_equal(x.image, z.image) for x, z in zip(a, c))


def test_picture_depends_on_seed_and_index_only():
    long_run = generate_samples(4, seed=3, seconds=0.5)
    tail = generate_samples(2, seed=3, seconds=0.5, start=2)
    assert [s.name for s in long_run[-len(tail):]] == [s.name for s in tail]


@pytest.mark.parametrize("layout,size", [("is3", 224), ("is3", 448), ("free", 224), ("free", 320)])
def test_boxes_inside_the_image_and_tight_on_the_object(layout, size):
    for index in range(6):
        scene = render_scene(11, index, layout=layout, size=size)
        assert 1 <= len(scene.objects) <= 3
        assert scene.image.shape == (size, size, 3) and scene.image.dtype == np.uint8
        for obj, mask in zip(scene.objects, scene.masks):
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 < x1 <= IMAGE_SIZE and 0 <= y0 < y1 <= IMAGE_SIZE
            assert obj.cls in CLASS_NAMES
            # the box (in 224 px) scaled back to image pixels covers every object pixel ...
            s = size / IMAGE_SIZE
            ys, xs = np.nonzero(mask)
            assert xs.min() >= np.floor(x0 * s) and xs.max() < np.ceil(x1 * s)
            assert ys.min() >= np.floor(y0 * s) and ys.max() < np.ceil(y1 * s)
            # ... and is tight: the object touches all four sides (within one 224-px pixel)
            assert abs(xs.min() / s - x0) <= 1 and abs((xs.max() + 1) / s - x1) <= 1
            assert abs(ys.min() / s - y0) <= 1 and abs((ys.max() + 1) / s - y1) <= 1
            # most of the box is object (shapes fill their box), so the box is on the object
            assert mask.sum() / ((x1 - x0) * (y1 - y0) * s * s) > 0.3


def test_is3_layout_objects_are_large_and_apart():
    for index in range(10):
        scene = render_scene(5, index, layout="is3")
        assert len(scene.objects) == 2
        a, b = (o.box for o in scene.objects)
        for x0, y0, x1, y1 in (a, b):
            # a quarter of the picture: large enough for the median-threshold ciou to reach 0.5
            assert (x1 - x0) * (y1 - y0) >= 0.25 * IMAGE_SIZE * IMAGE_SIZE
        assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_audio_is_16k_mono_float_in_range_and_of_requested_length():
    for s in generate_samples(4, seed=2, seconds=10.0):
        assert s.sample_rate == SAMPLE_RATE
        assert s.waveform.dtype == np.float32 and s.waveform.shape == (10 * SAMPLE_RATE,)
        assert np.abs(s.waveform).max() <= 1.0 and np.abs(s.waveform).max() > 0.05


def test_names_follow_is3_and_group_by_picture():
    samples = generate_samples(3, seed=4, seconds=0.5)
    assert len(samples) == 6  # two objects per picture, both sounding
    for s in samples:
        tokens = s.name.split("_")
        assert tokens[-1] == s.sounding and tokens[:-2] == list(s.classes) and int(tokens[-2]) == s.scene_id
    assert len({image_group(s.name) for s in samples}) == 3
    one_each = generate_samples(3, seed=4, seconds=0.5, all_sounding=False, layout="free")
    assert len(one_each) == 3


def test_is3_writer_files_and_json(tmp_path):
    samples = generate_samples(2, seed=9, seconds=2.0, sizes=(320,))
    json_path = write_scene_set(samples, tmp_path)
    entries = json.load(open(json_path))
    assert len(entries) == len(samples)
    for entry, s in zip(entries, samples):
        assert set(entry) == {"image", "audio", "gt_box"}
        assert entry["gt_box"] == [float(v) for v in s.box]
        # the official file's layout: absolute paths of the authors' machine, found by base name
        assert entry["image"].endswith(f"/{s.name}.jpg") and entry["audio"].endswith(f"/audio_wav/{s.name}.wav")
        audio = os.path.join(tmp_path, "audio_wav", f"{s.name}.wav")
        data, sr = sf.read(audio)
        info = sf.info(audio)
        assert sr == SAMPLE_RATE and info.subtype == "PCM_16" and data.shape == (2 * SAMPLE_RATE,)
        np.testing.assert_allclose(data, s.waveform, atol=1 / 32768 + 1e-6)
        from sslrt.preprocess import load_image
        image = load_image(os.path.join(tmp_path, "visual_frames", f"{s.name}.jpg"))
        assert image.shape == s.image.shape
        assert np.abs(image.astype(int) - s.image.astype(int)).mean() < 6  # JPEG at OpenCV's default quality
    back = read_scene_set(json_path)
    assert [b["name"] for b in back] == [s.name for s in samples]
    assert all(os.path.isfile(b["image"]) and os.path.isfile(b["audio"]) for b in back)
