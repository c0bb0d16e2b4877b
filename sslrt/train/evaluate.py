"""python -m sslrt.train.evaluate: IS3 metrics of a checkpoint (or of random weights) on an
IS3-layout set, read from its files through the official transforms.

    python -m sslrt.train.evaluate --is3 runs/demo/heldout/is3_synthetic3240_bbox.json \
        --checkpoint sslrt/assets/demo/demo_sup.pth.tar --random-width 8
"""
from __future__ import annotations

import argparse
import json

import torch

from sslrt.config import ModelConfig
from sslrt.model.checkpoint import load_checkpoint
from sslrt.model.network import SoundLocalizer
from sslrt.train.data import load_is3_set
from sslrt.train.trainer import evaluate


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sslrt.train.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--is3", required=True, help="IS3-layout JSON (entries {image, audio, gt_box})")
    parser.add_argument("--checkpoint", help="checkpoint to evaluate")
    parser.add_argument("--random-width", type=int, help="also evaluate random weights of this width")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_is3_set(args.is3)
    results = {}
    if args.checkpoint:
        model, _ = load_checkpoint(args.checkpoint)
        results["checkpoint"] = evaluate(model, data)
    if args.random_width:
        torch.manual_seed(args.seed)
        results[f"random_width{args.random_width}"] = evaluate(SoundLocalizer(ModelConfig(width=args.random_width)), data)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
