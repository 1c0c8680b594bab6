"""Model builders: ``ModelSpec`` -> ``(model, processor)``, plus save/load of both.

Two layers, as in torchtune: fully parameterised tiny builders (``build_tiny_qwen2_5_vl``,
``build_tiny_llava``) and named presets fixing their sizes (``PRESETS``). Production presets only
name a hub id; every model is an ``AutoModelForImageTextToText`` with an ``AutoProcessor``, so the
stages never branch on the backbone.

Saved directories are plain ``save_pretrained`` output plus ``leaml_model.json`` (preset, arch),
loadable offline by the Auto classes once ``leaml.models`` is imported (which registers the
image-only Qwen2.5-VL processor, see :class:`Qwen2_5_VLImageProcessorOnly`).
"""
from __future__ import annotations

import copy
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Literal

import torch
from pydantic import BaseModel, ConfigDict, model_validator
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PretrainedConfig,
    PreTrainedModel,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2Config,
    Qwen2VLImageProcessorPil,
)

from leaml import storage
from leaml.train.config import MediaCaps  # noqa: F401 - re-exported: the caps live with the settings
from leaml.models.tokenizer import LLAVA_IMAGE_TOKEN, chat_template, train_tokenizer

Arch = Literal["qwen2_5_vl", "llava"]
INFO_FILE = "leaml_model.json"
INFO_ATTR = "leaml_info"  # plain attribute on the model: {"preset", "arch"}, written by save_model
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ---------------------------------------------------------------------------------------------
# Image-only Qwen2.5-VL processor


class Qwen2_5_VLImageProcessorOnly(Qwen2_5_VLProcessor):
    """Qwen2.5-VL's processor without its video processor.

    In transformers 5.x the Qwen2-VL video processor exists only with torchvision, and
    ``ProcessorMixin`` derives the required sub-processors from ``__init__``'s signature, so the
    stock class cannot be built or reloaded here. Dropping the argument drops the requirement;
    videos go through the image path as several frames (see ``leaml.models.batching``).
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class _ImageOnlyProcessorKey(PretrainedConfig):
    # AutoProcessor resolves a saved "processor_class" name through its registry; registering
    # under a private key (not Qwen2_5_VLConfig) leaves the stock mapping for hub checkpoints alone.
    model_type = "leaml_qwen2_5_vl_image_only"


def register_auto_classes() -> None:
    """Make ``AutoProcessor.from_pretrained`` find :class:`Qwen2_5_VLImageProcessorOnly` (idempotent)."""
    AutoProcessor.register(_ImageOnlyProcessorKey, Qwen2_5_VLImageProcessorOnly, exist_ok=True)


register_auto_classes()  # a dict insert, no I/O: importing leaml.models is enough to reload a save


# ---------------------------------------------------------------------------------------------
# Settings


class ModelSpec(BaseModel):
    """Which model to build: a named preset or a saved/hub model, and where to put it."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    preset: str | None = None
    """A name in ``PRESETS`` (``tiny-qwen2.5-vl``, ``qwen2.5-vl-3b``, ...); exclusive with ``path``."""
    path: str | None = None
    """A saved model: local directory, ``s3://`` prefix, or a hub id; exclusive with ``preset``."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Parameter dtype; bfloat16 halves memory on GPUs, float32 is the CPU default."""
    device: str = "cpu"
    """torch device string (``cpu``, ``cuda``, ``cuda:1``)."""

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSpec":
        if (self.preset is None) == (self.path is None):
            raise ValueError(
                "set exactly one of `preset` (a named model) or `path` (a saved model or hub id); "
                f"got preset={self.preset!r}, path={self.path!r}"
            )
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; known: {sorted(PRESETS)}")
        return self


class MediaCapError(ValueError):
    """One item exceeds a media cap; the message names the item, the count, the cap and the setting."""


def apply_media_caps(processor: ProcessorMixin, caps: MediaCaps | None) -> ProcessorMixin:
    """Set the caps on a Qwen2-VL-style image processor (in place; returns it). Processors without a
    pixel budget (LLaVA's fixed-size CLIP) are returned unchanged: their token count is fixed."""
    ip = getattr(processor, "image_processor", None)
    size = getattr(ip, "size", None)
    if caps is None or size is None or _get(size, "longest_edge") is None:
        return processor
    size = dict(size) if isinstance(size, dict) else size  # a plain dict or transformers' SizeDict
    if caps.max_pixels is not None:
        size["longest_edge"] = caps.max_pixels
    if caps.min_pixels is not None:
        size["shortest_edge"] = min(caps.min_pixels, size["longest_edge"])
    ip.size = size
    for key, edge in (("min_pixels", "shortest_edge"), ("max_pixels", "longest_edge")):
        if getattr(ip, key, None) is not None:  # transformers < 5 reads these attributes instead
            setattr(ip, key, size[edge])
    return processor


def _get(size, key: str):
    try:
        return size[key]
    except (KeyError, TypeError):
        return None


def check_item_tokens(item_id: str, n_text_tokens: int, caps: MediaCaps) -> None:
    """Refuse one item whose text would exceed the cap (pixels are capped by resizing instead)."""
    if n_text_tokens > caps.max_text_tokens:
        raise MediaCapError(
            f"item {item_id!r}: {n_text_tokens} text tokens, above media.max_text_tokens="
            f"{caps.max_text_tokens}; shorten the item or raise media.max_text_tokens (the memory "
            "plan sizes activations by it: re-run `leaml plan`)")


# ---------------------------------------------------------------------------------------------
# Fully parameterised tiny builders


def _init_weights(build: Callable[[], PreTrainedModel], seed: int) -> PreTrainedModel:
    # The same seed gives the same weights without touching the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _mrope_section(head_dim: int) -> list[int]:
    # Qwen2.5-VL splits the rotary half-dim into (temporal, height, width) parts that must sum to
    # head_dim // 2; the 3B model uses [16, 24, 24] of 64, i.e. 1/4, 3/8, 3/8.
    half = head_dim // 2
    hw = half * 3 // 8
    return [half - 2 * hw, hw, hw]


def build_tiny_qwen2_5_vl(
    tokenizer,
    hidden_size: int = 128,
    layers: int = 4,
    heads: int = 4,
    intermediate_size: int = 256,
    vision_hidden: int = 64,
    vision_layers: int = 2,
    vision_heads: int = 4,
    patch_size: int = 8,
    image_size: int = 64,
    seed: int = 0,
) -> Qwen2_5_VLForConditionalGeneration:
    """A Qwen2.5-VL of the given sizes; an ``image_size`` square gives (image_size/2/patch)^2 tokens."""
    ids = tokenizer.convert_tokens_to_ids
    text = dict(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, intermediate_size=intermediate_size,
        max_position_embeddings=2048,
        rope_parameters={
            "rope_type": "default", "rope_theta": 10000.0,
            "mrope_section": _mrope_section(hidden_size // heads),
        },
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        depth=vision_layers, hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
        num_heads=vision_heads, patch_size=patch_size, spatial_merge_size=2, temporal_patch_size=2,
        out_hidden_size=hidden_size,
        window_size=image_size,  # in pixels: the default image is one attention window
        fullatt_block_indexes=[vision_layers - 1],
    )
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, tie_word_embeddings=True,
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )
    return _init_weights(lambda: Qwen2_5_VLForConditionalGeneration(config), seed)


def build_tiny_llava(
    tokenizer,
    hidden_size: int = 128,
    layers: int = 4,
    heads: int = 4,
    intermediate_size: int = 256,
    vision_hidden: int = 64,
    vision_layers: int = 2,
    vision_heads: int = 4,
    patch_size: int = 16,
    image_size: int = 64,
    seed: int = 0,
) -> LlavaForConditionalGeneration:
    """A LLaVA: tiny CLIP vision tower + MLP projector + tiny Qwen2 LM; (image_size/patch)^2 tokens."""
    text = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, intermediate_size=intermediate_size,
        max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden, intermediate_size=2 * vision_hidden, num_hidden_layers=vision_layers,
        num_attention_heads=vision_heads, image_size=image_size, patch_size=patch_size,
        projection_dim=vision_hidden,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, tie_word_embeddings=True,
        image_token_id=tokenizer.convert_tokens_to_ids(LLAVA_IMAGE_TOKEN),
        image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_layer=-1,  # only 2 layers: the penultimate one would waste half the tower
        vision_feature_select_strategy="default",  # drop CLS: one token per patch
    )
    return _init_weights(lambda: LlavaForConditionalGeneration(config), seed)


def build_tiny_processor(
    arch: Arch, tokenizer, image_size: int = 64, patch_size: int | None = None
) -> ProcessorMixin:
    """The PIL-backed processor of ``arch`` for images of about ``image_size`` pixels a side."""
    tokenizer = copy.deepcopy(tokenizer)  # the template is per architecture; keep the caller's clean
    tokenizer.chat_template = chat_template(arch)
    if arch == "qwen2_5_vl":
        patch = patch_size or 8
        factor = 2 * patch  # merge_size * patch: each LLM token covers factor x factor pixels
        images = Qwen2VLImageProcessorPil(
            patch_size=patch, merge_size=2, temporal_patch_size=2,
            # not upscaled down to 2x2 tokens; larger images are downscaled to ~image_size^2 pixels
            min_pixels=(2 * factor) ** 2, max_pixels=max(image_size, factor) ** 2,
        )
        return Qwen2_5_VLImageProcessorOnly(images, tokenizer, chat_template=chat_template(arch))
    if arch == "llava":
        patch = patch_size or 16
        images = CLIPImageProcessorPil(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        )
        return LlavaProcessor(
            images, tokenizer, patch_size=patch, vision_feature_select_strategy="default",
            num_additional_image_tokens=1,  # CLIP's CLS, dropped again by the "default" strategy
            chat_template=chat_template(arch),
        )
    raise ValueError(f"unknown architecture {arch!r}; expected 'qwen2_5_vl' or 'llava'")


# ---------------------------------------------------------------------------------------------
# Named presets


@dataclass(frozen=True)
class Preset:
    """A named model: a hub id (production) or a tiny builder with fixed sizes."""

    role: Literal["student", "teacher"]
    hub_id: str | None = None
    arch: Arch | None = None
    sizes: dict = field(default_factory=dict)


# Sizes are fixed here (torchtune-style presets); the builders' defaults equal the tiny student.
_TINY_STUDENT = dict(
    hidden_size=128, layers=4, heads=4, intermediate_size=256, vision_hidden=64, vision_layers=2
)
_TINY_TEACHER = dict(  # 1.5x width and layers (~2.5x the weights): larger, yet pretrainable in minutes on 2 cores
    hidden_size=192, layers=6, heads=6, intermediate_size=384, vision_hidden=96, vision_layers=2
)
PRESETS: dict[str, Preset] = {
    "qwen2.5-vl-3b": Preset("student", hub_id="Qwen/Qwen2.5-VL-3B-Instruct"),
    "qwen2.5-vl-72b": Preset("teacher", hub_id="Qwen/Qwen2.5-VL-72B-Instruct"),
    "tiny-qwen2.5-vl": Preset("student", arch="qwen2_5_vl", sizes=_TINY_STUDENT),
    "tiny-qwen2.5-vl-teacher": Preset("teacher", arch="qwen2_5_vl", sizes=_TINY_TEACHER),
    "tiny-llava": Preset("student", arch="llava", sizes=_TINY_STUDENT),
}
_TINY_BUILDERS = {"qwen2_5_vl": build_tiny_qwen2_5_vl, "llava": build_tiny_llava}


def build_model(
    spec: ModelSpec, tokenizer_texts: Iterable[str] | None = None, tokenizer=None, seed: int = 0
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Build or load the model of ``spec``, in eval mode, on its device and dtype.

    A tiny preset needs a tokenizer: pass one, or ``tokenizer_texts`` to train one on.
    """
    if spec.path is not None:
        return load_model(spec.path, dtype=spec.dtype, device=spec.device)
    preset = PRESETS[spec.preset]
    if preset.hub_id is not None:
        model, processor = load_model(preset.hub_id, dtype=spec.dtype, device=spec.device)
    else:
        if tokenizer is None:
            if tokenizer_texts is None:
                raise ValueError(
                    f"preset {spec.preset!r} trains its tokenizer locally: "
                    "pass `tokenizer` or `tokenizer_texts`"
                )
            tokenizer = train_tokenizer(tokenizer_texts)
        model, processor = _build_tiny(preset, tokenizer, seed)
        model = model.to(device=spec.device, dtype=DTYPES[spec.dtype]).eval()
    setattr(model, INFO_ATTR, {"preset": spec.preset, "arch": model.config.model_type})
    return model, processor


def _build_tiny(preset: Preset, tokenizer, seed: int) -> tuple[PreTrainedModel, ProcessorMixin]:
    model = _TINY_BUILDERS[preset.arch](tokenizer, seed=seed, **preset.sizes)
    processor = build_tiny_processor(
        preset.arch, tokenizer, image_size=preset.sizes.get("image_size", 64),
        patch_size=model.config.vision_config.patch_size,
    )
    return model, processor


# ---------------------------------------------------------------------------------------------
# Save / load


def save_model(model: PreTrainedModel, processor: ProcessorMixin, uri: str) -> None:
    """``save_pretrained`` model and processor, plus ``leaml_model.json``, to a local dir or ``s3://``.

    ``leaml_model.json`` is written last, so its presence marks a complete save.
    """
    info = {"arch": model.config.model_type, **getattr(model, INFO_ATTR, {})}
    info.pop("source", None)  # where it was loaded from is not a property of the saved model
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) if storage.is_s3(uri) else Path(uri)
        model.save_pretrained(local)
        processor.save_pretrained(local)
        if storage.is_s3(uri):
            storage.upload_dir(local, uri)
    storage.write_text(storage.join(uri, INFO_FILE), json.dumps(info, indent=2) + "\n")


def resolve_device(device: str) -> str:
    """``auto``: the GPU this process was given (Ray hides GPUs from actors that asked for none), else CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(
    uri: str, dtype: str = "float32", device: str = "cpu", caps: MediaCaps | None = None
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load a saved model (local dir, ``s3://`` prefix) or a hub id, in eval mode, on ``device``
    (``cpu``, ``cuda``, ``cuda:1``, or ``auto``); ``caps`` bound the processor's pixels per frame."""
    device = resolve_device(device)
    local = storage.local_path(uri)
    source = str(local) if local.exists() else uri  # not a local path: a hub id
    model = AutoModelForImageTextToText.from_pretrained(source, dtype=DTYPES[dtype]).to(device).eval()
    processor = apply_media_caps(_load_processor(source, model.config.model_type), caps)
    info_file = local / INFO_FILE
    info = json.loads(info_file.read_text()) if info_file.exists() else {"preset": None}
    setattr(model, INFO_ATTR, {**info, "arch": model.config.model_type, "source": uri})
    return model, processor


def _load_processor(source: str, model_type: str) -> ProcessorMixin:
    try:
        return AutoProcessor.from_pretrained(source)
    except ImportError:
        # A hub Qwen2.5-VL names the stock processor, whose video half needs torchvision.
        if model_type != "qwen2_5_vl":
            raise
        return Qwen2_5_VLImageProcessorOnly.from_pretrained(source)
