"""Shared argument handling of the entry points: ``--config FILE`` plus dotted ``key=value`` overrides."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, TypeVar

from pydantic import BaseModel

C = TypeVar("C", bound=BaseModel)


def main_with_config(model: type[C], run: Callable[[C], object], description: str,
                     extra: Callable[[argparse.ArgumentParser], None] | None = None, argv=None) -> int:
    from leaml.config import ConfigError, load_config

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="YAML config (local path or s3://)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-4")
    if extra:
        extra(parser)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(model, args.config, args.overrides)
    except ConfigError as e:
        print(f"config error:\n{e}", file=sys.stderr)
        return 2
    run(cfg, args) if extra else run(cfg)
    return 0
