"""python -m sslrt.train [options]: train on generated scenes (defaults = the shipped demo run)."""
from __future__ import annotations

import argparse
import dataclasses
import sys

from sslrt.errors import SslrtError
from sslrt.train.trainer import TrainConfig, train


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line (sslrt's rule for bad input), not usage + message
        raise SslrtError(f"train: {message}")


def main(argv=None) -> None:
    parser = _Parser(prog="python -m sslrt.train", description=__doc__)
    for field in dataclasses.fields(TrainConfig):
        default = field.default
        flag = "--" + field.name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            kind = float if isinstance(default, float) else int if isinstance(default, int) else str
            parser.add_argument(flag, type=kind, default=default)
    args = parser.parse_args(argv)
    train(TrainConfig(**vars(args)).check())


if __name__ == "__main__":
    try:
        main()
    except SslrtError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
