"""The model layer: tokenizer training, tiny/production presets, batching, generation, option scoring.

The names below resolve lazily (PEP 562): ``import leaml.models.limits`` (the VQA gateway's
processor limits) must not pull in torch and transformers (~500 MiB in a process that holds no
model). ``from leaml.models import build_model`` works as before and imports
:mod:`leaml.models.builders`, which registers the image-only Qwen2.5-VL processor with
``AutoProcessor`` on import; every function that loads a model lives there, so the registration
always precedes a load, and a saved tiny model reloads with the Auto classes once builders is imported.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from leaml.models.builders import PRESETS, ModelSpec, build_model, load_model, save_model

__all__ = ["PRESETS", "ModelSpec", "build_model", "load_model", "save_model"]


def __getattr__(name: str):
    if name in __all__:
        value = getattr(importlib.import_module("leaml.models.builders"), name)
        globals()[name] = value  # resolved once
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
