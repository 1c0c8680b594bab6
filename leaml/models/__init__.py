"""The model layer: tokenizer training, tiny/production presets, batching, generation, option scoring.

Importing it registers the image-only Qwen2.5-VL processor with ``AutoProcessor`` (see builders),
so a saved tiny model reloads with the Auto classes alone.
"""
from leaml.models.builders import PRESETS, ModelSpec, build_model, load_model, save_model

__all__ = ["PRESETS", "ModelSpec", "build_model", "load_model", "save_model"]
