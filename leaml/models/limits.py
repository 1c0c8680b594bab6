"""Processor limits per backbone: (processor, frames, context length) -> a refusal before the model runs.

What each backbone's processor cannot take, checked here in microseconds instead of failing a
batch (or a whole stage) inside the model:

- Qwen2.5-VL (``Qwen2VLImageProcessor``): ``smart_resize`` raises ``ValueError`` on an aspect ratio
  over 200:1 (``unsupported_aspect_ratio``); any other size is resized to a multiple of
  ``f = patch_size * merge_size`` pixels within [``min_pixels``, ``max_pixels``], so a frame costs
  ``(h / f) * (w / f)`` tokens, at most ``max_pixels / f**2`` (tiny preset: 16; the 7B's
  defaults: 16,384).
- LLaVA (CLIP processor): shortest edge resized, centre-cropped: any size works; a frame always
  costs ``(crop / patch)**2`` tokens.
- Both: the prompt with every frame's tokens must fit ``max_position_embeddings``
  (``too_many_tokens``: too many frames, or frames too large for the context).

Failures no check foresees are isolated by retrying (``leaml.streaming.call_isolating``,
``leaml.serve.vqa_deployment.VQAPredictor.predict_many``).
"""
from __future__ import annotations

import math
from typing import Sequence

MAX_ASPECT_RATIO = 200
PROMPT_RESERVE = 256
"""Context left for the prompt text and the answer beside the media tokens."""


class ModelInputError(ValueError):
    """An input the model cannot take; ``code`` is stable (the REST API returns it)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message

    def __reduce__(self):  # Ray ships exceptions between processes: keep the code
        return (type(self), (self.code, self.message))


def frame_tokens(processor, width: int, height: int) -> int | None:
    """LLM tokens one frame of this size costs under ``processor`` (None: a processor we do not know)."""
    ip = getattr(processor, "image_processor", None)
    if ip is None:
        return None
    merge = getattr(ip, "merge_size", None)
    if merge:  # Qwen2-VL family
        f = ip.patch_size * merge
        size = getattr(ip, "size", None)
        lo = getattr(ip, "min_pixels", None) or getattr(size, "shortest_edge", None) or f * f
        hi = getattr(ip, "max_pixels", None) or getattr(size, "longest_edge", None) or 1 << 40
        h, w = round(height / f) * f, round(width / f) * f  # as smart_resize, step for step
        if h * w > hi:
            beta = math.sqrt(height * width / hi)
            h, w = max(f, math.floor(height / beta / f) * f), max(f, math.floor(width / beta / f) * f)
        elif h * w < lo:
            beta = math.sqrt(lo / (height * width))
            h, w = math.ceil(height * beta / f) * f, math.ceil(width * beta / f) * f
        return (h // f) * (w // f)
    crop, patch = getattr(ip, "crop_size", None), getattr(processor, "patch_size", None)
    if crop is not None and patch:  # LLaVA
        return (crop.height // patch) * (crop.width // patch)
    return None


def check_media(processor, frames: Sequence, max_positions: int | None = None) -> None:
    """Raise :class:`ModelInputError` when ``frames`` (PIL images of one item) break a limit above."""
    qwen = getattr(getattr(processor, "image_processor", None), "merge_size", None) is not None
    total = 0
    for frame in frames:
        if not isinstance(getattr(frame, "size", None), tuple):  # not a PIL image: nothing to check here
            continue
        w, h = frame.size
        if qwen and max(w, h) > MAX_ASPECT_RATIO * min(w, h):
            raise ModelInputError("unsupported_aspect_ratio",
                                  f"a {w}x{h} frame: this model takes aspect ratios up to {MAX_ASPECT_RATIO}:1")
        total += frame_tokens(processor, w, h) or 0
    if max_positions and total > max_positions - PROMPT_RESERVE:
        raise ModelInputError("too_many_tokens",
                              f"{len(frames)} frames make {total} tokens; this model's context takes "
                              f"{max_positions - PROMPT_RESERVE} beside the prompt")


def context_length(model) -> int | None:
    cfg = getattr(model, "config", None)
    text = cfg.get_text_config() if cfg is not None and hasattr(cfg, "get_text_config") else cfg
    return getattr(text, "max_position_embeddings", None)
