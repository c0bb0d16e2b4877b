"""`sslrt video`: localize the sound of a video file frame by frame (see job.py for the pipeline).

    media file -> preprocess.media (PyAV: frames, audio) -> video.audio.AudioTrack (16 kHz windows)
    -> preprocess.window (the window the family hears) -> runtime.pipeline (Localizer batches)
    -> overlay frames -> video.writer (H.264 + the source's audio) ; video.track (JSON Lines, CSV)
"""
from sslrt.video.job import VideoOptions, VideoResult, localize_video

__all__ = ["VideoOptions", "VideoResult", "localize_video"]
