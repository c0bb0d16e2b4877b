"""Test-set readers on the real annotation files and on generated datasets, and the writers."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import soundfile as sf

from sslrt import datasets as D
from sslrt.synthetic import datasets as W
from sslrt.measure import metrics as M
from sslrt.datasets import common
from sslrt.errors import SslrtError

METADATA = Path(__file__).resolve().parents[1].parent / "shared" / "metadata"
needs_metadata = pytest.mark.skipif(not METADATA.is_dir(), reason="../shared/metadata is absent")


def _touch_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros((8, 8, 3), np.uint8))
    return path


def _touch_wav(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.zeros(160), 16000, subtype="PCM_16")
    return path


# ----------------------------------------------------------------------------------------------
# The real annotation files
# ----------------------------------------------------------------------------------------------
@needs_metadata
def test_real_vggss_annotations_count_and_missing(tmp_path):
    entries = json.loads((METADATA / "vggss.json").read_text())
    # Two clips present, in the two folder spellings: the json's own name and the official
    # code's '<id>_<start ms>_<end ms>'; a third with a flat frame <clip>.jpg under frames/.
    a, b, c = entries[0]["file"], entries[1]["file"], entries[2]["file"]
    _touch_image(tmp_path / a / "image_050.jpg")
    _touch_wav(tmp_path / f"{a}.wav")
    folder_b = D.vggsound_clip_folder(b)
    _touch_image(tmp_path / "VGGSound_img" / folder_b / "image_050.jpg")
    _touch_wav(tmp_path / "VGGSound_aud" / f"{folder_b}.wav")
    _touch_image(tmp_path / "frames" / f"{c}.jpg")
    _touch_wav(tmp_path / "audio" / f"{c}.wav")

    reading = D.read_vggss(tmp_path, METADATA / "vggss.json")
    assert len(reading.samples) + len(reading.missing) == 5158
    assert [s.key for s in reading.samples] == [a, b, c]
    assert reading.missing_files[reading.missing[0]] == ("image", "audio")
    assert reading.upsample_rule == "cv2_linear"
    sample = reading.samples[0]
    np.testing.assert_array_equal(sample.gt, M.gt_map_vggss(entries[0]["bbox"]))
    assert sample.group == sample.key


def test_vggsound_clip_folder_name():
    assert D.vggsound_clip_folder("zpWuikVorYg_000032") == "zpWuikVorYg_32000_42000"
    assert D.vggsound_clip_folder("1F3_bvIT0ig_000000") == "1F3_bvIT0ig_0_10000"
    assert D.vggsound_clip_folder("short") is None


@needs_metadata
def test_real_flickr_test_list_count_and_missing(tmp_path):
    ids = [line.split(",")[0] for line in (METADATA / "flickr_test.csv").read_text().split()]
    first, second = ids[0], ids[1]
    # first: flat <id>.jpg; second: the official copy's folder '<id>.mp4/<frame>.jpg'
    _touch_image(tmp_path / "frames" / f"{first}.jpg")
    _touch_image(tmp_path / "frames" / f"{second}.mp4" / "00000005.jpg")
    for clip in (first, second):
        _touch_wav(tmp_path / "audio" / f"{clip}.wav")
        W.flickr_xml(clip, [[0, 0, 128, 128], [64, 64, 256, 256]]).write(
            _mkdir(tmp_path / "Annotations") / f"{clip}.xml")

    reading = D.read_flickr(tmp_path, METADATA / "flickr_test.csv")
    assert len(reading.samples) + len(reading.missing) == 250 and len(ids) == 250
    assert [s.key for s in reading.samples] == [first, second]
    assert reading.samples[1].image_path.name == "00000005.jpg"
    assert reading.missing_files[reading.missing[0]] == ("image", "audio", "annotation")
    assert reading.upsample_rule == "bilinear_align_corners"


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@needs_metadata
def test_real_is3_annotations_count_and_missing(tmp_path):
    entries = json.loads((METADATA / "is3_synthetic3240_bbox.json").read_text())
    first, second = entries[0], entries[1]
    # first: per-sample image by its base name in an 'images' folder and audio in 'audio_waw'
    # (the misspelled folder of a published copy); second: one image per pair, named without
    # the category.
    key1 = Path(first["image"]).stem
    _touch_image(tmp_path / "images" / f"{key1}.jpg")
    _touch_wav(tmp_path / "audio_waw" / f"{key1}.wav")
    key2 = Path(second["image"]).stem
    _touch_image(tmp_path / "visual_frames" / f"{M.is3_image_group(key2)}.jpg")
    _touch_wav(tmp_path / "audio_wav" / f"{key2}.wav")

    reading = D.read_is3(tmp_path, METADATA / "is3_synthetic3240_bbox.json")
    assert len(reading.samples) + len(reading.missing) == 6480
    assert len(set(reading.missing)) == len(reading.missing)
    assert [s.key for s in reading.samples] == [key1, key2]
    assert reading.samples[1].image_path.name == f"{M.is3_image_group(key2)}.jpg"
    np.testing.assert_array_equal(reading.samples[0].gt, M.gt_map_is3(first["gt_box"]))
    # every image of IS3 has exactly two sounding objects
    groups = [M.is3_image_group(Path(e["image"]).stem) for e in entries]
    assert len(set(groups)) == 3240


@needs_metadata
def test_reading_walks_the_tree_once(tmp_path, monkeypatch):
    walks = []
    real_walk = os.walk
    monkeypatch.setattr(common.os, "walk", lambda *a, **k: (walks.append(a), real_walk(*a, **k))[1])
    D.read_is3(tmp_path, METADATA / "is3_synthetic3240_bbox.json")
    assert len(walks) == 1


# ----------------------------------------------------------------------------------------------
# Generated datasets: found == written
# ----------------------------------------------------------------------------------------------
def _check_media(sample, written):
    image = cv2.imread(str(sample.image_path))
    assert image.shape == written.rgb.shape
    wave, rate = sf.read(str(sample.audio_path))
    assert rate == 16000 and sf.info(str(sample.audio_path)).subtype == "PCM_16"
    assert wave.shape == written.waveform.shape
    np.testing.assert_allclose(wave, written.waveform, atol=1 / 32767)


def test_generated_vggss_is_read_back(tmp_path):
    written = W.synthetic_vggss_samples(4, seed=3)
    annotation = W.write_vggss(tmp_path, written)
    reading = D.read_vggss(tmp_path)  # annotation found under the root
    assert annotation.is_file() and reading.missing == []
    assert [s.key for s in reading.samples] == [w.name for w in written]
    for sample, w in zip(reading.samples, written):
        assert [list(b) for b in sample.boxes] == [list(b) for b in w.boxes]
        np.testing.assert_array_equal(sample.gt, M.gt_map_vggss(w.boxes))
        _check_media(sample, w)


def test_generated_flickr_is_read_back(tmp_path):
    written = W.synthetic_flickr_samples(3, seed=4)
    W.write_flickr(tmp_path, written)
    reading = D.read_flickr(tmp_path)
    assert reading.missing == []
    assert [s.key for s in reading.samples] == [w.name for w in written]
    for sample, w in zip(reading.samples, written):
        assert [list(b) for b in sample.boxes] == [list(b) for b in w.boxes]
        assert sample.gt.dtype == np.float32 and set(np.unique(sample.gt)) <= {0.0, 0.5, 1.0}
        np.testing.assert_array_equal(sample.gt, M.gt_map_flickr(w.boxes))
        _check_media(sample, w)


def test_generated_is3_is_read_back_and_grouped(tmp_path):
    written = W.synthetic_is3_samples(3, seed=5)
    W.write_is3(tmp_path, written)
    reading = D.read_is3(tmp_path)
    assert reading.missing == [] and len(reading.samples) == 6
    assert [s.key for s in reading.samples] == [w.name for w in written]
    for sample, w in zip(reading.samples, written):
        assert sample.boxes == (tuple(w.box),)
        np.testing.assert_array_equal(sample.gt, M.gt_map_is3(w.box))
        assert sample.group == M.is3_image_group(w.name)
        _check_media(sample, w)
    groups = [s.group for s in reading.samples]
    assert len(set(groups)) == 3 and all(groups.count(g) == 2 for g in groups)
    batch = D.ground_truth_batch(reading.samples)
    assert batch.shape == (6, 224, 224) and batch.dtype == np.uint8


def test_read_dataset_dispatches(tmp_path):
    W.write_is3(tmp_path, W.synthetic_is3_samples(1, seed=0))
    assert len(D.read_dataset("is3", tmp_path).samples) == 2
    with pytest.raises(SslrtError, match="unknown test set"):
        D.read_dataset("coco", tmp_path)


def test_missing_media_are_listed_not_fatal(tmp_path):
    written = W.synthetic_vggss_samples(3, seed=6)
    W.write_vggss(tmp_path, written)
    os.remove(tmp_path / f"{written[1].name}.wav")
    shutil.rmtree(tmp_path / written[2].name)
    reading = D.read_vggss(tmp_path)
    assert [s.key for s in reading.samples] == [written[0].name]
    assert reading.missing == [written[1].name, written[2].name]
    assert reading.missing_files == {written[1].name: ("audio",), written[2].name: ("image",)}


def test_synthetic_content_is_deterministic(tmp_path):
    for make in (W.synthetic_vggss_samples, W.synthetic_flickr_samples, W.synthetic_is3_samples):
        a, b = make(2, seed=11), make(2, seed=11)
        for x, y in zip(a, b):
            assert x.name == y.name
            np.testing.assert_array_equal(x.rgb, y.rgb)
            np.testing.assert_array_equal(x.waveform, y.waveform)
        assert [x.name for x in make(2, seed=12)] != [x.name for x in a]
    W.write_is3(tmp_path / "a", W.synthetic_is3_samples(1, seed=2))
    W.write_is3(tmp_path / "b", W.synthetic_is3_samples(1, seed=2))
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_write_is3_takes_plain_tuples(tmp_path):
    rgb = np.zeros((224, 224, 3), np.uint8)
    W.write_is3(tmp_path, [("cat_dog_7_cat", rgb, np.zeros(1600), (10, 20, 100, 120))])
    reading = D.read_is3(tmp_path)
    assert [s.key for s in reading.samples] == ["cat_dog_7_cat"]
    assert reading.samples[0].boxes == ((10.0, 20.0, 100.0, 120.0),)
    # or any record with the same attribute names, as a scene generator may have
    record = SimpleNamespace(name="cat_dog_7_dog", rgb=rgb, waveform=np.zeros(1600), box=[0, 0, 50, 60])
    W.write_is3(tmp_path / "records", [record])
    assert [s.key for s in D.read_is3(tmp_path / "records").samples] == ["cat_dog_7_dog"]


def test_linked_folders_are_followed_once(tmp_path):
    W.write_is3(tmp_path / "data", W.synthetic_is3_samples(1, seed=0))
    (tmp_path / "data" / "loop").symlink_to(tmp_path / "data")  # a link back up must not recurse
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "linked").symlink_to(tmp_path / "data")
    reading = D.read_is3(tmp_path / "root")
    assert len(reading.samples) == 2 and reading.missing == []


# ----------------------------------------------------------------------------------------------
# Flickr XML
# ----------------------------------------------------------------------------------------------
def test_flickr_xml_by_name_and_by_the_official_position(tmp_path):
    by_name = tmp_path / "a.xml"
    by_name.write_text("<annotation><object><bbox><ymin>20</ymin><xmin>10</xmin><xmax>30</xmax>"
                       "<ymax>40</ymax></bbox></object></annotation>")
    assert D.parse_flickr_boxes(by_name) == [(10, 20, 30, 40)]
    # Unnamed children: the official reader skips the first and reads x0, y0, x1, y1 in order.
    by_position = tmp_path / "b.xml"
    by_position.write_text("<annotation><object><bbox><c>7</c><c>1</c><c>2</c><c>3</c><c>4</c></bbox>"
                           "<bbox><c>8</c><c>5</c><c>6</c><c>7</c><c>8</c></bbox></object></annotation>")
    assert D.parse_flickr_boxes(by_position) == [(1, 2, 3, 4), (5, 6, 7, 8)]


# ----------------------------------------------------------------------------------------------
# Bad input: one clear line naming the file
# ----------------------------------------------------------------------------------------------
def test_absent_annotation_file_is_named(tmp_path):
    with pytest.raises(SslrtError, match="vggss.json") as err:
        D.read_vggss(tmp_path)
    assert "\n" not in str(err.value)
    missing = tmp_path / "nope.json"
    with pytest.raises(SslrtError, match=str(missing)):
        D.read_is3(tmp_path, missing)
    with pytest.raises(SslrtError, match="dataset folder not found"):
        D.read_flickr(tmp_path / "absent")


@pytest.mark.parametrize("content,reader", [
    ("{not json", D.read_vggss),
    ('{"file": "x"}', D.read_vggss),
    ('[{"file": "abc", "bbox": [[0, 1, 2]]}]', D.read_vggss),
    ('[{"image": "/a/b.jpg", "audio": "/a/b.wav", "gt_box": [1, 2]}]', D.read_is3),
    ('[{"image": "/a/b.jpg"}]', D.read_is3),
])
def test_malformed_annotation_is_named(tmp_path, content, reader):
    path = tmp_path / "annotation.json"
    path.write_text(content)
    with pytest.raises(SslrtError, match=str(path)) as err:
        reader(tmp_path, path)
    assert "\n" not in str(err.value)


def test_malformed_flickr_xml_is_named(tmp_path):
    written = W.synthetic_flickr_samples(1, seed=1)
    W.write_flickr(tmp_path, written)
    xml = tmp_path / "Annotations" / f"{written[0].name}.xml"
    xml.write_text("<annotation><object><bbox>")
    with pytest.raises(SslrtError, match=str(xml)):
        D.read_flickr(tmp_path)
    xml.write_text("<annotation><object><bbox><xmin>a</xmin><ymin>1</ymin><xmax>2</xmax><ymax>3</ymax>"
                   "</bbox></object></annotation>")
    with pytest.raises(SslrtError, match="not a number"):
        D.read_flickr(tmp_path)
