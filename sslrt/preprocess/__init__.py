"""Files -> model inputs, in numpy only (no torch), equal to the paper's evaluation transforms."""
from sslrt.preprocess.audio import load_audio, spectrogram_from_waveform, audio_to_spectrogram
from sslrt.preprocess.image import ImageBytes, load_image, image_to_tensor

__all__ = ["load_audio", "spectrogram_from_waveform", "audio_to_spectrogram", "load_image", "image_to_tensor", "ImageBytes"]
