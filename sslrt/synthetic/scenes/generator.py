"""Procedural audio-visual scenes with known sounding-object boxes, deterministic from a seed.

A scene is one picture with one to three objects (see classes.py) on a muted background; each
object that sounds gives one sample: the picture, a 16 kHz waveform of that object's sound mixed
with background noise, and the object's tight box in 224-pixel units of the resized picture
(the IS3 convention). Image `index` of a run with `seed` depends on (seed, index) only, so a
larger run starts with the same scenes as a smaller one.

Layouts:
- "is3": two objects, one in each half of the picture (left/right or top/bottom), each filling
  most of its half like the objects of IS3. The official metric thresholds the heatmap at its
  median, so the predicted region always covers about half the picture; an object must cover
  about a quarter of the picture for even a perfect heatmap to reach ciou 0.5, hence large objects.
- "free": one to three objects of random size (56-150 px) placed anywhere without overlap.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import signal

from sslrt.spec import DEFAULT_FAMILY, get_spec
from sslrt.synthetic.generated import SAMPLE_RATE
from sslrt.synthetic.scenes.classes import CLASS_BY_NAME, CLASS_NAMES

LAYOUTS = ("is3", "free")
IMAGE_SIZE = get_spec(DEFAULT_FAMILY).image.size  # scene boxes are in pixels of the model's input


@dataclass(frozen=True)
class SceneObject:
    cls: str
    box: tuple[int, int, int, int]  # tight box of the object's pixels, x0, y0, x1, y1 (exclusive), 224 px


@dataclass
class Scene:
    image: np.ndarray  # (S, S, 3) uint8 RGB
    objects: list[SceneObject]
    scene_id: int
    masks: list[np.ndarray] = field(repr=False, default_factory=list)  # (S, S) bool per object, image px


@dataclass
class SceneSample:
    name: str  # IS3-style `<cls1>_<cls2>_<id>_<soundingcls>`; the image's group is the name minus its last token
    image: np.ndarray  # (S, S, 3) uint8 RGB, shared by the samples of one scene
    waveform: np.ndarray  # (n,) float32 in [-1, 1] at `sample_rate`
    sample_rate: int
    box: tuple[int, int, int, int]  # sounding object's box, x0, y0, x1, y1 in 224 px
    classes: tuple[str, ...]  # classes in the picture, in drawing order
    sounding: str  # class of the sounding object
    scene_id: int


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """Independent stream per (seed, image, purpose): images and sounds never share draws."""
    return np.random.default_rng([seed, index, stream])


# ---------------------------------------------------------------------------------------------
# Background


def _muted_colour(rng) -> np.ndarray:
    """A low-saturation colour: objects are saturated, so colour alone never hides an object."""
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.3), rng.uniform(0.2, 0.8))
    return np.array([r, g, b], np.float32) * 255


def render_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32: a linear gradient between two muted colours plus smooth and fine noise."""
    c0, c1 = _muted_colour(rng), _muted_colour(rng)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy)
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    img = c0 + ramp[..., None] * (c1 - c0)
    cells = int(rng.integers(3, 12))
    blotches = cv2.resize(rng.standard_normal((cells, cells, 3)).astype(np.float32), (size, size),
                          interpolation=cv2.INTER_CUBIC)
    img += blotches * rng.uniform(0, 25)
    img += rng.standard_normal((size, size, 1)).astype(np.float32) * rng.uniform(0, 12)
    return img


# ---------------------------------------------------------------------------------------------
# Layout: object boxes in 224-pixel units, before rasterisation


def _layout_is3(rng) -> list[tuple[float, float, float, float]]:
    half = IMAGE_SIZE / 2
    boxes = []
    vertical_split = rng.uniform() < 0.5  # objects side by side (left | right)
    for slot in range(2):
        short = rng.uniform(92, 108)
        long = rng.uniform(130, 200)
        w, h = (short, long) if vertical_split else (long, short)
        ox = slot * half if vertical_split else 0.0
        oy = 0.0 if vertical_split else slot * half
        span_w = half if vertical_split else IMAGE_SIZE
        span_h = IMAGE_SIZE if vertical_split else half
        x0 = ox + rng.uniform(0, span_w - w)
        y0 = oy + rng.uniform(0, span_h - h)
        boxes.append((x0, y0, x0 + w, y0 + h))
    return boxes


def _overlaps(a, b, gap=4.0) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def _layout_free(rng, n_objects: int) -> list[tuple[float, float, float, float]]:
    """Rejection sampling of non-overlapping boxes; shrinks the size range if a layout is crowded."""
    hi = 150.0
    while True:
        boxes = []
        for _ in range(200):
            w, h = rng.uniform(56, hi, size=2)
            x0, y0 = rng.uniform(0, IMAGE_SIZE - w), rng.uniform(0, IMAGE_SIZE - h)
            box = (x0, y0, x0 + w, y0 + h)
            if not any(_overlaps(box, b) for b in boxes):
                boxes.append(box)
                if len(boxes) == n_objects:
                    return boxes
        hi = max(60.0, hi * 0.85)


# ---------------------------------------------------------------------------------------------
# Rendering


def _vary_colour(colour, rng) -> np.ndarray:
    """Per-instance brightness jitter; hue stays put so the class keeps its colour."""
    return np.clip(np.asarray(colour, np.float32) * rng.uniform(0.85, 1.1), 0, 255)


def render_scene(seed: int, index: int, *, layout: str = "is3", size: int = IMAGE_SIZE,
                 n_objects: int | None = None, classes: tuple[str, ...] = CLASS_NAMES) -> Scene:
    """Picture `index` of run `seed`: background, objects, tight boxes (224 px) and masks (image px)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    rng = _rng(seed, index, 0)
    if layout == "is3":
        boxes = _layout_is3(rng)
    else:
        boxes = _layout_free(rng, int(n_objects or rng.integers(1, 4)))
    names = [classes[i] for i in rng.choice(len(classes), size=len(boxes), replace=False)]
    img = render_background(rng, size)
    scale = size / IMAGE_SIZE
    objects, masks = [], []
    for name, (bx0, by0, bx1, by1) in zip(names, boxes):
        cls = CLASS_BY_NAME[name]
        x0, y0 = int(round(bx0 * scale)), int(round(by0 * scale))
        x1, y1 = min(size, int(round(bx1 * scale))), min(size, int(round(by1 * scale)))
        h, w = y1 - y0, x1 - x0
        local = cls.shape(h, w)
        texture = cls.texture(h, w, _vary_colour(cls.colour, rng), rng)
        region = img[y0:y1, x0:x1]
        region[local] = texture[local]
        mask = np.zeros((size, size), bool)
        mask[y0:y1, x0:x1] = local
        masks.append(mask)
        objects.append(SceneObject(name, _tight_box_224(mask, size)))
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return Scene(image=image, objects=objects, scene_id=index, masks=masks)


def _tight_box_224(mask: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """Bounding box of the mask's pixels (x1, y1 exclusive) in 224 px, outward-rounded so it covers them."""
    ys = np.flatnonzero(mask.any(1))
    xs = np.flatnonzero(mask.any(0))
    s = IMAGE_SIZE / size
    x0, y0 = int(np.floor(xs[0] * s)), int(np.floor(ys[0] * s))
    x1, y1 = int(np.ceil((xs[-1] + 1) * s)), int(np.ceil((ys[-1] + 1) * s))
    return (x0, y0, min(x1, IMAGE_SIZE), min(y1, IMAGE_SIZE))


def synthesize_sound(cls_name: str, rng: np.random.Generator, seconds: float = 10.0,
                     sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The class's sound mixed with background noise at a random level: (n,) float32 in [-1, 1]."""
    if sample_rate != SAMPLE_RATE:
        raise ValueError("the sound generators are defined at 16 kHz")
    n = int(round(seconds * sample_rate))
    source = CLASS_BY_NAME[cls_name].sound(rng, n).astype(np.float32)
    source = source / (np.sqrt(np.mean(source**2)) + 1e-12)
    # background: white noise plus a low-frequency rumble (one-pole low-pass), 5-25 dB below the source
    white = rng.standard_normal(n, dtype=np.float32)
    rumble = signal.lfilter([1.0], [1.0, -0.98], rng.standard_normal(n, dtype=np.float32)).astype(np.float32)
    noise = white / np.sqrt(np.mean(white**2)) + rng.uniform(0, 1) * rumble / (np.sqrt(np.mean(rumble**2)) + 1e-12)
    noise /= np.sqrt(np.mean(noise**2)) + 1e-12
    snr_db = rng.uniform(5, 25)
    mix = source + noise * 10 ** (-snr_db / 20)
    level = rng.uniform(0.1, 0.9)  # peak level of the clip
    mix *= level / (np.max(np.abs(mix)) + 1e-12)
    return mix.astype(np.float32)


def generate_samples(n_images: int, seed: int, *, layout: str = "is3", sizes: tuple[int, ...] = (IMAGE_SIZE,),
                     all_sounding: bool = True, seconds: float = 10.0,
                     classes: tuple[str, ...] = CLASS_NAMES, start: int = 0) -> list[SceneSample]:
    """Samples of pictures `start .. start+n_images-1` of run `seed`.

    all_sounding: one sample per object (IS3: every object of the picture sounds in turn);
    otherwise one sample per picture, its sounding object drawn at random (training batches then
    never hold one picture twice). `layout` "mixed" draws "is3" or "free" per picture.
    """
    samples = []
    for index in range(start, start + n_images):
        pick = _rng(seed, index, 1)
        size = int(sizes[pick.integers(len(sizes))])
        scene_layout = layout if layout != "mixed" else LAYOUTS[int(pick.integers(2))]
        scene = render_scene(seed, index, layout=scene_layout, size=size, classes=classes)
        names = tuple(o.cls for o in scene.objects)
        sounding = range(len(scene.objects)) if all_sounding else [int(pick.integers(len(scene.objects)))]
        for k in sounding:
            obj = scene.objects[k]
            wave = synthesize_sound(obj.cls, _rng(seed, index, 2 + k), seconds)
            samples.append(SceneSample(
                name="_".join(names) + f"_{index}_{obj.cls}", image=scene.image, waveform=wave,
                sample_rate=SAMPLE_RATE, box=obj.box, classes=names, sounding=obj.cls, scene_id=index))
    return samples
