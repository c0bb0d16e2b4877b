"""Synthetic content, one package for demo, training, tests and benchmarks: deterministic
generated inputs (`generated`), procedural scenes with known sounding boxes (`scenes`), small
datasets written in the official test-set layouts (`datasets`) and random-weight checkpoints in
the released layouts (`checkpoints`, needs torch)."""
