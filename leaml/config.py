"""Typed configs: YAML file + dotted command-line overrides -> a validated pydantic model.

Every config model forbids unknown keys, so a typo is an error that names the file, the key and
what was expected, instead of a setting silently ignored::

    configs/demo.yaml: train.lr: Input should be a valid number, unable to parse string as a
    number (got 'fast')
    configs/demo.yaml: train.lrr: unknown key (allowed here: batch_size, epochs, lr, ...)
"""
from __future__ import annotations

from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from leaml import storage


class StrictModel(BaseModel):
    """Base of every config: unknown keys are errors; values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


C = TypeVar("C", bound=BaseModel)


class ConfigError(ValueError):
    """A config that does not validate; the message names the source, the key and the problem."""


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["train.lr=3e-4", "model.preset=tiny-llava"]`` -> nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.lr=1e-4")
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is set to a value and a section")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def split_overrides(names: list[str] | None, overrides: list[str]) -> tuple[list[str] | None, list[str]]:
    """(names, overrides) with every ``key=value`` among ``names`` moved to the overrides: an
    ``nargs="*"`` option such as ``--stages caption run_dir=/x`` swallows what follows it, and no
    name contains ``=``. Names left empty become None (= no selection)."""
    names = names or []
    moved = [t for t in names if "=" in t]
    kept = [t for t in names if "=" not in t]
    return kept or None, [*overrides, *moved]


def deep_merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = deep_merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def validate_config(model: type[C], data: dict, source: str = "<config>") -> C:
    """Validate ``data`` against ``model``; errors become one readable :class:`ConfigError`."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError("\n".join(_describe(err, source, model) for err in e.errors())) from None


def load_config(model: type[C], path: str | None = None, overrides: list[str] | None = None) -> C:
    """Read YAML (local or ``s3://``) if given, apply dotted overrides, validate."""
    data: dict = {}
    source = path or "<defaults>"
    if path:
        try:
            data = yaml.safe_load(storage.read_text(path)) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    if overrides:
        data = deep_merge(data, parse_overrides(overrides))
        source += " + overrides"
    return validate_config(model, data, source)


def dump_config(cfg: BaseModel) -> str:
    """YAML text of a config (what a run actually used; written into the run directory)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def _describe(err: dict, source: str, model: type[BaseModel]) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "<top>"
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, err["loc"][:-1])
        hint = f" (allowed here: {', '.join(allowed)})" if allowed else ""
        return f"{source}: {key}: unknown key{hint}"
    got = err.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{source}: {key}: {err['msg']}{shown}"


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (nested) model at ``loc``; best effort, for the error hint only."""
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        current = _model_of(fields[part].annotation)
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else []


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None
