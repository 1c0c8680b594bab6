"""Shared argument handling of the entry points: ``--config FILE`` plus dotted ``key=value``
overrides, which may stand anywhere on the line (also after ``--stages a b``). Inside a Ray job a
relative output path is refused (:mod:`leaml.jobs`), and every job says where its artifacts are."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, TypeVar

from pydantic import BaseModel

C = TypeVar("C", bound=BaseModel)

OUTPUT_KEYS = ("run_dir", "out_dir", "out")
"""Top-level config fields that name where a job writes (pipeline, train / evaluate, scoring)."""


def main_with_config(model: type[C], run: Callable[[C], object], description: str,
                     extra: Callable[[argparse.ArgumentParser], None] | None = None, argv=None) -> int:
    from leaml.config import ConfigError, load_config

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (local path or s3://)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-4")
    if extra:
        extra(parser)
    args = parse_args(parser, argv)
    try:
        cfg = check_outputs(load_config(model, args.config, args.overrides))
        run(cfg, args) if extra else run(cfg)
    except ConfigError as e:
        print(f"config error:\n{e}", file=sys.stderr)
        return 2
    announce_outputs(cfg)
    return 0


def parse_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """``parse_known_args``, then every leftover ``key=value`` joins the overrides (in order), and
    ``key=value`` tokens an ``nargs="*"`` option such as ``--stages`` swallowed move there too."""
    from leaml.config import split_overrides

    args, unknown = parser.parse_known_args(argv)
    stray = [t for t in unknown if t.startswith("-") or "=" not in t]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    args.overrides = [*args.overrides, *unknown]
    if hasattr(args, "stages"):
        args.stages, args.overrides = split_overrides(args.stages, args.overrides)
    return args


def check_outputs(cfg: C) -> C:
    """``cfg``, with a relative output path refused inside a Ray job (or resolved against
    $LEAML_RUN_ROOT: a copy, as some configs are frozen)."""
    from leaml.jobs import job_path

    update = {}
    for key in OUTPUT_KEYS:
        value = getattr(cfg, key, None)
        if isinstance(value, str) and job_path(value, key) != value:
            update[key] = job_path(value, key)
    return cfg.model_copy(update=update) if update else cfg


def announce_outputs(cfg: BaseModel) -> None:
    from leaml.jobs import announce

    for key in OUTPUT_KEYS:
        value = getattr(cfg, key, None)
        if isinstance(value, str) and value:
            announce(key, value)
