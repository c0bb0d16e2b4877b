"""Files -> preprocess -> engine -> postprocess -> result. No torch on this path."""
