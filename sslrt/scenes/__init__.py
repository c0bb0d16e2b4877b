"""Procedural audio-visual scenes for training and testing the localizer (see generator.py)."""
from sslrt.scenes.classes import CLASS_NAMES, CLASSES
from sslrt.scenes.generator import (
    Scene,
    SceneObject,
    SceneSample,
    generate_samples,
    render_scene,
    synthesize_sound,
)
from sslrt.scenes.is3 import read_is3, write_is3

__all__ = ["CLASSES", "CLASS_NAMES", "Scene", "SceneObject", "SceneSample", "generate_samples",
           "render_scene", "synthesize_sound", "read_is3", "write_is3"]
