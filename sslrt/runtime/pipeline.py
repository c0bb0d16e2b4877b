"""The runtime: (image, audio) -> Localization, one pair or many, on any engine."""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from sslrt.config import INPUT_AUDIO, INPUT_IMAGE, OUTPUT_HEATMAP
from sslrt.engines import Engine, create_engine
from sslrt.errors import SslrtError
from sslrt.export.source import ModelSource
from sslrt.preprocess import image_to_tensor, load_audio, load_image, spectrogram_from_waveform
from sslrt.runtime.postprocess import localize_heatmaps

ImageInput = "str | os.PathLike | np.ndarray"
AudioInput = "str | os.PathLike | np.ndarray | tuple[np.ndarray, int]"


@dataclass
class Localization:
    """Where the sound comes from in one image. Coordinates are original image pixels [x, y]."""

    heatmap: np.ndarray  # (14, 14) raw cosine map
    score: float
    peak: list[float]
    bbox: list[float]
    image_size: tuple[int, int]  # (height, width)
    backend: str
    precision: str
    timings_ms: dict[str, float]
    image: str | None = None
    audio: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "image": self.image,
            "audio": self.audio,
            "heatmap": [[round(float(v), 7) for v in row] for row in self.heatmap],
            "score": round(self.score, 6),
            "peak": self.peak,
            "bbox": self.bbox,
            "image_size": {"height": self.image_size[0], "width": self.image_size[1]},
            "backend": self.backend,
            "precision": self.precision,
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "warnings": self.warnings,
        }

    def summary(self) -> str:
        x0, y0, x1, y1 = self.bbox
        name = f"{os.path.basename(self.image)} + {os.path.basename(self.audio)}: " if self.image and self.audio else ""
        t = self.timings_ms
        return (f"{name}sound at ({self.peak[0]:.0f}, {self.peak[1]:.0f}) px, box [{x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}], "
                f"score {self.score:.3f}  [{self.backend} {self.precision}; preprocess {t['preprocess']:.1f} ms, "
                f"inference {t['inference']:.1f} ms, postprocess {t['postprocess']:.1f} ms]")


@dataclass
class PreparedPair:
    image_tensor: np.ndarray
    spectrogram: np.ndarray
    rgb: np.ndarray
    image: str | None
    audio: str | None
    warnings: list[str]
    preprocess_ms: float


def _name(x) -> str | None:
    return os.fspath(x) if isinstance(x, (str, os.PathLike)) else None


def prepare_pair(image, audio) -> PreparedPair:
    """Decode and transform one pair; silent audio is kept, with a warning recorded."""
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rgb = load_image(image) if isinstance(image, (str, os.PathLike)) else image
        tensor = image_to_tensor(rgb)
        if isinstance(audio, (str, os.PathLike)):
            samples, sr = load_audio(audio)
            name = os.fspath(audio)
        elif isinstance(audio, tuple):
            samples, sr = audio
            name = "audio"
        else:
            samples, sr, name = audio, 16000, "audio"
        spec = spectrogram_from_waveform(samples, sr, name=name)
    return PreparedPair(tensor, spec, rgb, _name(image), _name(audio), [str(w.message) for w in caught],
                        (time.perf_counter() - t0) * 1e3)


class Localizer:
    """An engine plus the paper's pre- and postprocessing. Build with `sslrt.load(...)`."""

    def __init__(self, engine: Engine, source: ModelSource | None = None):
        self.engine = engine
        self.source = source

    @classmethod
    def open(cls, model, backend: str = "onnxruntime", precision: str | None = "fp32", threads: int | None = None,
             progress=None, cuda_graph: bool = False, notify=None) -> "Localizer":
        """`backend` is a registry name (see sslrt.engines.BACKENDS) or "auto"; `notify` receives the
        line that says what auto chose."""
        source = model if isinstance(model, ModelSource) else ModelSource.from_path(model)
        return cls(create_engine(backend, source, precision=precision, threads=threads, progress=progress,
                                 cuda_graph=cuda_graph, notify=notify), source)

    def describe(self) -> str:
        return self.engine.describe()

    def localize(self, image: ImageInput, audio: AudioInput) -> Localization:
        """One pair; `image` is a path or an RGB uint8 array, `audio` a path, a 16 kHz waveform or (waveform, rate)."""
        return next(self.localize_many([(image, audio)], batch_size=1))

    def run_prepared(self, batch: list[PreparedPair]) -> list[Localization]:
        t0 = time.perf_counter()
        feeds = {INPUT_IMAGE: np.stack([p.image_tensor for p in batch]), INPUT_AUDIO: np.stack([p.spectrogram for p in batch])}
        heatmaps = self.engine.run(feeds)[OUTPUT_HEATMAP]
        t1 = time.perf_counter()
        if not np.isfinite(heatmaps).all():
            raise SslrtError("the engine produced NaN or infinite heatmaps: the model's weights or engine are broken")
        located = localize_heatmaps(heatmaps, [p.rgb.shape[:2] for p in batch])
        t2 = time.perf_counter()
        n = len(batch)
        results = []
        for p, h, loc in zip(batch, heatmaps, located):
            results.append(Localization(
                heatmap=h.reshape(h.shape[-2:]), score=loc["score"], peak=loc["peak"], bbox=loc["bbox"],
                image_size=tuple(p.rgb.shape[:2]), backend=self.engine.backend, precision=self.engine.precision,
                timings_ms={"preprocess": p.preprocess_ms, "inference": (t1 - t0) * 1e3 / n, "postprocess": (t2 - t1) * 1e3 / n},
                image=p.image, audio=p.audio, warnings=p.warnings))
        return results

    def localize_many(self, pairs: Iterable[tuple], batch_size: int = 8) -> Iterator[Localization]:
        """Pairs in, results out in the same order, `batch_size` pairs per engine call."""
        batch: list[PreparedPair] = []
        for image, audio in pairs:
            batch.append(prepare_pair(image, audio))
            if len(batch) == batch_size:
                yield from self.run_prepared(batch)
                batch = []
        if batch:
            yield from self.run_prepared(batch)

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> "Localizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
