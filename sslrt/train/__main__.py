"""python -m sslrt.train [options]: train on generated scenes (defaults = the shipped demo run)."""
from __future__ import annotations

import argparse
import dataclasses

from sslrt.train.trainer import TrainConfig, train


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sslrt.train", description=__doc__)
    for field in dataclasses.fields(TrainConfig):
        default = field.default
        flag = "--" + field.name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            kind = float if isinstance(default, float) else int if isinstance(default, int) else str
            parser.add_argument(flag, type=kind, default=default)
    args = parser.parse_args(argv)
    train(TrainConfig(**vars(args)))


if __name__ == "__main__":
    main()
