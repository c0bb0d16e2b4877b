"""sslrt: a deployable engine for audio-visual sound source localization.

    import sslrt
    localizer = sslrt.load("export_dir_or_checkpoint.pth", backend="onnxruntime")
    result = localizer.localize("image.jpg", "audio.wav")
    result.peak, result.bbox, result.score, result.heatmap
"""
from sslrt.version import __version__


def load(model, backend: str = "onnxruntime", **options):
    """Open an export directory or a checkpoint and return a `Localizer` on the given backend."""
    from sslrt.runtime.pipeline import Localizer

    return Localizer.open(model, backend=backend, **options)


__all__ = ["load", "__version__"]
