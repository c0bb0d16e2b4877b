"""Procedural audio-visual scenes for training and testing the localizer (see generator.py)."""
from sslrt.synthetic.scenes.classes import CLASS_NAMES, CLASSES
from sslrt.synthetic.scenes.generator import (
    Scene,
    SceneObject,
    SceneSample,
    generate_samples,
    render_scene,
    synthesize_sound,
)
from sslrt.synthetic.scenes.is3 import read_scene_set, write_scene_set

__all__ = ["CLASSES", "CLASS_NAMES", "Scene", "SceneObject", "SceneSample", "generate_samples",
           "render_scene", "synthesize_sound", "read_scene_set", "write_scene_set"]
