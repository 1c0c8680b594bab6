"""Memory plan: a PipelineConfig -> per stage, the bytes one GPU holds and the GPUs the stage needs.

    build_plan(cfg)           -> [StagePlan]   every stage's model built on the meta device
    format_plan(plans, cfg)   -> str           the table ``leaml plan`` prints
    check_fits(cfg)                             raises PlanError naming the stage and the setting

Nothing is allocated and nothing is downloaded: models are built on ``torch.device("meta")`` from
their config (a known hub id, a local ``config.json``, or a tiny preset). Per stage:

- weights / grads / optimizer / DDP buckets: :func:`leaml.train.methods.state_bytes`, the one place
  that says what each method keeps (full AdamW, LoRA adapters, dense masks, sparse selected entries);
- activations: measured, not guessed. One decoder layer, one vision block and the LM head + loss of
  the real model run on meta tensors of the configured batch x tokens under a saved-tensor hook, which
  sums the bytes autograd keeps for backward (bf16 autocast emulated on meta, attention counted as
  the fused kernels keep it: q, k, v, output, log-sum-exp, never the s x s scores); the layer figure
  times the layer count, or, with activation checkpointing, one layer input per layer plus one
  recomputed layer. ``tests/train/test_plan.py`` checks both against a real CPU step.
- tokens per item: the stage's frames per clip x image tokens at ``media.max_pixels`` (Qwen2.5-VL:
  one token per 28 x 28 pixels) + ``media.max_text_tokens``; rows are padded to the longest item, so
  every row of a batch is planned at the cap.

The peak counted is conservative: state + every source's saved activations + the loss's transient
logits, as if gradients and activations were alive together. Stages run one after another, so the
cluster needs the most GPUs of any stage.
"""
from __future__ import annotations

import json
import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch.overrides import TorchFunctionMode

from leaml.config import ConfigError, StrictModel
from leaml.train.config import MediaCaps, TrainConfig

GIB = 2**30
QWEN_DEFAULT_MAX_PIXELS = 12_845_056  # Qwen2.5-VL's processor default: 16384 tokens a frame


class Resources(StrictModel):
    """What the cluster offers; the plan checks every stage against it before a run starts."""

    gpu_memory_gb: float | None = Field(None, gt=0)
    """Memory per GPU in GiB, as nvidia-smi reports it (an A100 80GB: 80). None: no check (CPU runs)."""
    gpus: int | None = Field(None, ge=1)
    """GPUs in the cluster (None: do not check the count)."""
    usable_fraction: float = Field(0.92, gt=0, le=1)
    """Of each GPU's memory, what a training or transformers stage may plan to use: the rest is the
    CUDA context, NCCL buffers and allocator fragmentation."""
    media: Literal["auto", "image", "video"] = "auto"
    """What the items are: video items have ``num_frames`` frames, images one. auto: the synthetic
    world's domain (sport = video); set it for a converted real dataset (SPORTU: video)."""


class PlanError(ConfigError):
    """A stage that cannot fit; the message names the stage, the figures and the settings to change."""


@dataclass
class StagePlan:
    stage: str
    setting: str
    """The config key whose values decide this stage's memory (what to change when it does not fit)."""
    model: str
    detail: str
    weights: int
    grads: int = 0
    optimizer: int = 0
    activations: int = 0
    ddp: int = 0
    """DDP's gradient buckets: a second copy of the trained gradients (no gradient_as_bucket_view)."""
    other: int = 0
    """Transients: the loss's logits, one layer's dW, an export copy; vLLM: its activation reserve."""
    gpus: int = 1
    gpu_setting: str = ""
    """The config key that sets how many GPUs the stage asks for."""
    claimed_fraction: float | None = None
    """vLLM only: it claims this fraction of each GPU, whatever the figures above."""
    hints: list[str] = field(default_factory=list)
    blocked: str = ""
    """Why the stage cannot run at any memory size (an item longer than vLLM's max_model_len)."""

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.optimizer + self.activations + self.ddp + self.other


# ---------------------------------------------------------------------------------------------
# Model configs and meta models


def qwen2_5_vl_config(vocab: int, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int,
                      tie: bool, vision_depth: int = 32, vision_hidden: int = 1280,
                      vision_intermediate: int = 3420, vision_heads: int = 16, **extra):
    """A Qwen2.5-VL config with the published layout (window attention, 4 full-attention blocks,
    28 x 28 pixels per LLM token); the sizes are the arguments."""
    from transformers import Qwen2_5_VLConfig

    from leaml.models.builders import _mrope_section

    every = max(1, vision_depth // 4)
    text = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=128000,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                 "mrope_section": _mrope_section(hidden // heads)})
    vision = dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=vision_intermediate,
                  num_heads=vision_heads, out_hidden_size=hidden, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, window_size=112,
                  fullatt_block_indexes=list(range(every - 1, vision_depth, every)))
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=tie, **extra)


# Published config.json values of the production backbones (shapes only), so no hub is needed.
KNOWN_MODELS: dict[str, dict] = {
    "Qwen/Qwen2.5-VL-3B-Instruct": dict(vocab=151936, hidden=2048, intermediate=11008, layers=36, heads=16,
                                        kv_heads=2, tie=True),
    "Qwen/Qwen2.5-VL-72B-Instruct": dict(vocab=152064, hidden=8192, intermediate=29568, layers=80, heads=64,
                                         kv_heads=8, tie=False),
}


def model_config(source: str):
    """A hub id of :data:`KNOWN_MODELS`, a local directory with ``config.json``, or a tiny preset name."""
    from leaml.models.builders import PRESETS

    if source in KNOWN_MODELS:
        return qwen2_5_vl_config(**KNOWN_MODELS[source])
    if source in PRESETS and PRESETS[source].hub_id:
        return model_config(PRESETS[source].hub_id)
    saved = _saved_json(source, "config.json")
    if saved is not None:  # a saved model (local or s3://): its config.json alone, no weights
        from transformers import AutoConfig

        kind = saved.pop("model_type")
        return AutoConfig.for_model(kind, **saved)
    if source in PRESETS:
        return _tiny_model(source).config
    raise ConfigError(f"memory plan: no config for model {source!r}; known hub ids: {sorted(KNOWN_MODELS)}; "
                      "or give a local directory holding its config.json")


def meta_model(source_or_config, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """The model on the meta device: real module tree and shapes, no memory."""
    from transformers import AutoModelForImageTextToText

    if isinstance(source_or_config, str) and not _is_known(source_or_config):
        from leaml.models.builders import PRESETS

        if source_or_config in PRESETS and PRESETS[source_or_config].arch:
            return _tiny_model(source_or_config).to(dtype)
    config = model_config(source_or_config) if isinstance(source_or_config, str) else source_or_config
    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config, dtype=dtype)


def _is_known(source: str) -> bool:
    return source in KNOWN_MODELS or _saved_json(source, "config.json") is not None


def _saved_json(source: str, name: str) -> dict | None:
    """``<source>/<name>`` of a saved model directory (local or s3://), or None when there is none."""
    from leaml import storage

    if source in KNOWN_MODELS or "/" not in source and not Path(source).exists():
        return None  # a preset name
    uri = storage.join(source, name)
    return json.loads(storage.read_text(uri)) if storage.exists(uri) else None


class _StubTokenizer:
    """What the tiny builders read from a tokenizer (the real one is trained on the run's data)."""

    def __init__(self, size: int = 1024):
        self.size, self.eos_token_id, self.pad_token_id = size, 1, 0

    def __len__(self) -> int:
        return self.size

    def convert_tokens_to_ids(self, token: str) -> int:
        return 2 + sum(map(ord, token)) % 20


def _tiny_model(preset: str) -> torch.nn.Module:
    from leaml.models.builders import _TINY_BUILDERS, PRESETS

    p = PRESETS[preset]
    with torch.device("meta"):
        return _TINY_BUILDERS[p.arch](_StubTokenizer(), **p.sizes)


# ---------------------------------------------------------------------------------------------
# Tokens per item


@dataclass(frozen=True)
class ItemTokens:
    text: int
    frames: int
    per_frame: int
    """LLM tokens one frame becomes."""
    patches_per_frame: int
    """Vision-tower tokens of one frame (before the 2 x 2 merge)."""

    @property
    def total(self) -> int:
        return self.text + self.frames * self.per_frame


def processor_max_pixels(source: str) -> int:
    """The pixel budget a model's own processor applies when ``media.max_pixels`` is unset."""
    from leaml.models.builders import PRESETS

    p = PRESETS.get(source)
    if p is not None and p.arch:  # the tiny builders: about image_size^2 (build_tiny_processor)
        return max(p.sizes.get("image_size", 64), 16) ** 2
    # transformers 5 saves the image processor inside processor_config.json; hub checkpoints have
    # preprocessor_config.json
    conf = (_saved_json(source, "processor_config.json") or {}).get("image_processor") \
        or _saved_json(source, "preprocessor_config.json") or {}
    return int((conf.get("size") or {}).get("longest_edge") or conf.get("max_pixels") or QWEN_DEFAULT_MAX_PIXELS)


def item_tokens(config, caps: MediaCaps, frames: int, default_max_pixels: int = QWEN_DEFAULT_MAX_PIXELS) -> ItemTokens:
    """Tokens of one item at the caps: Qwen2-VL style (pixels / (patch * merge)^2) or a fixed count;
    ``default_max_pixels``: the processor's own budget (:func:`processor_max_pixels`)."""
    vision = config.vision_config
    merge = getattr(vision, "spatial_merge_size", None)
    if merge:  # Qwen2.5-VL: a frame of P pixels is P / 28^2 tokens; an image is 2 temporal patches
        factor = vision.patch_size * merge
        per_frame = (caps.max_pixels or default_max_pixels) // factor**2
        return ItemTokens(caps.max_text_tokens, frames, per_frame, per_frame * merge**2)
    per_frame = getattr(config, "image_seq_length", 0) or (vision.image_size // vision.patch_size) ** 2
    return ItemTokens(caps.max_text_tokens, frames, per_frame, per_frame + 1)


# ---------------------------------------------------------------------------------------------
# Activations, measured on the meta device


class _MetaAutocast(TorchFunctionMode):
    """bf16 autocast for meta tensors (torch's autocast has no meta backend): matmul-like ops cast
    their floating inputs to bf16, as autocast does; a weight's bf16 copy is then kept for backward,
    as autocast's cached copies are."""

    OPS = {F.linear, F.conv3d, F.conv2d, torch.matmul, torch.bmm, torch.Tensor.matmul, torch.Tensor.__matmul__}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.OPS:
            args = tuple(a.to(torch.bfloat16) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
        return func(*args, **kwargs)


class _FusedAttention(torch.autograd.Function):
    """What a fused attention kernel (flash / memory-efficient, torch's CPU flash) keeps for backward."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = torch.empty_like(q)
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):  # never run: the plan only counts what forward saves
        raise NotImplementedError


_AUTOCAST = {"on": False}


def _plan_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    from transformers.integrations.sdpa_attention import repeat_kv

    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)  # padded batches repeat kv heads
    if _AUTOCAST["on"]:  # sdpa is on autocast's bf16 list
        query, key, value = (t.to(torch.bfloat16) for t in (query, key, value))
    return _FusedAttention.apply(query, key, value).transpose(1, 2), None


@contextmanager
def _planning(model: torch.nn.Module, autocast: bool):
    from transformers import AttentionInterface

    AttentionInterface.register("leaml_plan", _plan_attention)
    configs = [c for c in (model.config, getattr(model.config, "text_config", None),
                           getattr(model.config, "vision_config", None)) if c is not None]
    before = [c._attn_implementation for c in configs]
    _AUTOCAST["on"] = autocast
    try:
        for c in configs:
            c._attn_implementation = "leaml_plan"
        with _MetaAutocast() if autocast else nullcontext():
            yield
    finally:
        for c, b in zip(configs, before):
            c._attn_implementation = b
        _AUTOCAST["on"] = False


def saved_bytes(run: Callable[[], object], exclude: list[torch.Tensor]) -> int:
    """Bytes of the distinct storages autograd saves while ``run()`` builds its graph, apart from
    those of ``exclude`` (parameters: counted as weights; inputs shared across layers)."""
    skip = {t.untyped_storage()._cdata for t in exclude}
    seen: dict[int, int] = {}
    keep: list[torch.Tensor] = []  # alive until counted, so no storage address is reused meanwhile

    def pack(t):
        st = t.untyped_storage()
        if st._cdata not in skip:
            seen[st._cdata] = st.nbytes()
            keep.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run()
    del out, keep
    return sum(seen.values())


@dataclass
class Activations:
    layer: int
    """One decoder layer's saved bytes for the whole batch."""
    layer_input: int
    layers: int
    vision: int
    """Vision tower (patch embed, every block, merger), 0 when nothing there trains."""
    vision_block: int
    head: int
    """Final norm, LM head, loss (the fp32 log-softmax of every position)."""
    embed: int
    logits_transient: int
    """Alive inside the loss only: the logits and their fp32 copy."""

    def per_source(self, checkpointing: bool) -> int:
        layers = self.layers * (self.layer_input if checkpointing else self.layer)
        return layers + self.vision + self.head + self.embed

    def total(self, sources: int, checkpointing: bool) -> int:
        recompute = (self.layer + self.vision_block) if checkpointing else 0  # one layer re-run in backward
        return sources * self.per_source(checkpointing) + recompute


def measure_activations(model: torch.nn.Module, batch: int, tokens: ItemTokens, autocast: bool,
                        vision_trains: bool, checkpointing: bool = False) -> Activations:
    """Saved-for-backward bytes of ``model`` (a meta model) at ``batch`` items of ``tokens``."""
    lm, text = _language_model(model), model.config.get_text_config()
    seq, resid = tokens.total, next(model.parameters()).dtype
    params = list(model.parameters())
    with _planning(model, autocast):
        layer, layer_in = _decoder_layer_bytes(lm, text, batch, seq, resid, params)
        head = _head_bytes(model, lm, text, batch, seq, resid, params)
        qwen_vision = hasattr(getattr(model, "model", None), "visual")  # LLaVA's CLIP tower: not counted
        vis, block = (_vision_bytes(model, batch * tokens.frames * tokens.patches_per_frame, resid, params,
                                    checkpointing) if vision_trains and qwen_vision else (0, 0))
    cbytes = 2 if autocast or resid == torch.bfloat16 else 4
    logits = batch * seq * text.vocab_size * (cbytes + (4 if cbytes != 4 else 0))
    return Activations(layer, layer_in, text.num_hidden_layers, vis, block, head, 8 * batch * seq, logits)


def _language_model(model):
    inner = getattr(model, "model", model)
    return getattr(inner, "language_model", inner)


def _decoder_layer_bytes(lm, text, batch, seq, dtype, params) -> tuple[int, int]:
    x = torch.empty(batch, seq, text.hidden_size, device="meta", dtype=dtype, requires_grad=True)
    mrope = "mrope_section" in (getattr(text, "rope_parameters", None) or {})  # Qwen2.5-VL: (t, h, w) ids
    pos = torch.zeros(*((3,) if mrope else ()), batch, seq, dtype=torch.long, device="meta")
    cos, sin = lm.rotary_emb(x, pos)
    layer = lm.layers[0]
    got = saved_bytes(lambda: layer(x, attention_mask=None, position_ids=pos, position_embeddings=(cos, sin)),
                      params + [cos, sin])
    return got, x.numel() * x.element_size()


def _head_bytes(model, lm, text, batch, seq, dtype, params) -> int:
    x = torch.empty(batch, seq, text.hidden_size, device="meta", dtype=dtype, requires_grad=True)
    labels = torch.zeros(batch, seq, dtype=torch.long, device="meta")
    return saved_bytes(lambda: loss_tail(model.lm_head(lm.norm(x)), labels), params)


def loss_tail(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss of ``leaml.train.loop.target_loss`` from logits (same ops, so the same saved tensors)."""
    shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
    nll = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels.clamp(min=0), reduction="none")
    mask = shift_labels != -100
    return ((nll * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


def _vision_bytes(model, patches: int, dtype, params, checkpointing: bool) -> tuple[int, int]:
    visual = model.model.visual
    vc = model.config.vision_config
    x = torch.empty(patches, vc.hidden_size, device="meta", dtype=dtype, requires_grad=True)
    hd = vc.hidden_size // vc.num_heads
    cos = torch.empty(patches, hd, device="meta", dtype=torch.float32)
    sin = torch.empty(patches, hd, device="meta", dtype=torch.float32)
    # cu_seqlens stays on the CPU: the non-flash path splits by its values, which meta has not
    cu = torch.tensor([0, patches], dtype=torch.int32)
    block = saved_bytes(lambda: visual.blocks[0](x, cu_seqlens=cu, position_embeddings=(cos, sin)),
                        params + [cos, sin])
    pixels = torch.empty(patches, vc.in_channels * vc.temporal_patch_size * vc.patch_size ** 2, device="meta")
    ends = saved_bytes(lambda: (visual.patch_embed(pixels), visual.merger(x)), params)
    shared = 2 * cos.numel() * 4  # the rotary tables every block keeps
    per_block = x.numel() * x.element_size() if checkpointing else block
    return vc.depth * per_block + ends + shared, block


# ---------------------------------------------------------------------------------------------
# Stages


def _frames(cfg, num_frames: int) -> int:
    media = cfg.resources.media
    if media == "auto":
        media = "video" if getattr(cfg.world, "domain", "endo") == "sport" else "image"
    return num_frames if media == "video" else 1


def _source(cfg, role: str) -> str:
    src = getattr(cfg, role)
    return src.path or src.preset


def training_rows(cfg) -> list[tuple[str, TrainConfig, int, str]]:
    """(config key, settings, sources drawn per step, rows it trains) of every training stage run."""
    rows, out = cfg.rows, []
    for v in ("baseline", "distill", "leaml"):
        if v in rows:
            t = getattr(cfg.generators, v)
            out.append((f"generators.{v}", t, 2 if t.caption_weight > 0 else 1, f"generator {v}"))
    vqa_rows = [r for r in ("full", "baseline", "distill", "leaml") if r in rows]
    if vqa_rows:  # a generator row draws a labeled and a pseudo batch each step
        sources = 2 if set(vqa_rows) - {"full"} else 1
        out.append(("vqa", cfg.vqa, sources, "vqa " + "+".join(vqa_rows)))
    for key in ("lora", "fully_supervised"):
        if key in rows:
            out.append((key, getattr(cfg, key), 1, f"vqa {key}"))
    return out


def loop_passes_ddp_kwargs() -> bool:
    """Whether the training loop hands ``MethodSetup.ddp_kwargs`` (gradient_as_bucket_view) to DDP:
    its ``_wrap_ddp`` takes a ``ddp_kwargs`` argument. Until it does, DDP keeps a second copy of
    every trained gradient in its buckets, and the plan counts it."""
    import inspect

    from leaml.train import loop

    return "ddp_kwargs" in inspect.signature(loop._wrap_ddp).parameters


def plan_training(key: str, t: TrainConfig, sources: int, what: str, source: str, frames: int) -> StagePlan:
    from leaml.train.methods import frozen_weight_dtype, state_bytes

    world = t.scaling.num_workers
    dtype = frozen_weight_dtype(t)
    model = meta_model(source, dtype)
    st = state_bytes(model, t, world, bucket_view=loop_passes_ddp_kwargs())
    tokens = item_tokens(model.config, t.media, frames, processor_max_pixels(source))
    vision_trains = t.method == "full" or (t.method.startswith("masked") and
                                           any(s in ("visual", "vision_tower", "") for s in t.mask.include))
    act = measure_activations(model, t.batch_size, tokens, t.precision == "bf16", vision_trains,
                              t.activation_checkpointing)
    export = st.weights if t.method in ("lora", "masked_sparse") else 0  # merged_model deep-copies
    other = max(act.logits_transient + st.largest_dw, export - act.total(sources, t.activation_checkpointing))
    detail = (f"{t.method}, {t.precision}{', ckpt' if t.activation_checkpointing else ''}, "
              f"{t.batch_size} x {sources} src x {tokens.total} tok")
    hints = [f"{key}.activation_checkpointing=true"] if not t.activation_checkpointing else []
    hints += [f"{key}.batch_size (now {t.batch_size})", f"{key}.media.max_pixels (now {t.media.max_pixels})"]
    if t.precision == "fp32":
        hints.insert(0, f"{key}.precision=bf16")
    if st.ddp:
        hints.append(f"DDP with gradient_as_bucket_view (the loop passing MethodSetup.ddp_kwargs: "
                     f"-{st.ddp / GIB:.1f} GiB)")
    return StagePlan(f"train {what}", key, source, detail, st.weights, st.grads, st.optimizer,
                     act.total(sources, t.activation_checkpointing), st.ddp, max(0, other),
                     gpus=world if t.scaling.use_gpu else 0, gpu_setting=f"{key}.scaling.num_workers", hints=hints)


def plan_scoring(cfg, source: str, frames: int) -> StagePlan:
    """Eq. 5 on one worker: weights, fp32 score sums, one layer's gradient at a time (post-accumulate
    hooks), activations of a forward whose every LM linear needs a gradient."""
    from leaml.train.masks import eligible_linears

    t = cfg.generators.leaml
    m = t.mask
    dtype = torch.bfloat16 if m.scoring_dtype == "bfloat16" else torch.float32
    model = meta_model(source, dtype)
    linears = eligible_linears(model, m.include, m.exclude)
    scored = sum(x.weight.numel() for x in linears.values())
    largest = max((x.weight.numel() for x in linears.values()), default=0)
    tokens = item_tokens(model.config, t.media, frames, processor_max_pixels(source))
    act = measure_activations(model, m.scoring_batch_size, tokens, False, False, False)
    weights = sum(p.numel() for p in model.parameters()) * dtype.itemsize
    hints = [f"generators.leaml.mask.scoring_batch_size (now {m.scoring_batch_size})",
             "generators.leaml.mask.scoring_dtype=bfloat16", "generators.leaml.media.max_pixels"]
    return StagePlan("neuron scoring", "generators.leaml.mask", source,
                     f"{m.scoring_dtype}, batch {m.scoring_batch_size} x {tokens.total} tok", weights,
                     grads=largest * dtype.itemsize, optimizer=4 * scored,
                     activations=act.total(1, False), other=act.logits_transient,
                     gpus=math.ceil(m.scoring_gpus), gpu_setting="generators.leaml.mask.scoring_gpus", hints=hints)


def _kv_bytes_per_token(text, dtype_bytes: int, tp: int = 1) -> int:
    head_dim = text.hidden_size // text.num_attention_heads
    kv_heads = max(1, math.ceil(text.num_key_value_heads / tp))  # replicated when fewer than tp
    return 2 * text.num_hidden_layers * kv_heads * head_dim * dtype_bytes


def plan_generate(stage: str, key: str, source: str, batch: int, tokens: ItemTokens, new_tokens: int,
                  gpus: int, dtype: torch.dtype = torch.float32, note: str = "",
                  gpu_setting: str = "") -> StagePlan:
    """transformers ``generate``: weights, the KV cache of every sequence, one prefill's transients."""
    model = meta_model(source, dtype)
    text = model.config.get_text_config()
    b = dtype.itemsize
    seq = tokens.total + new_tokens
    kv = batch * seq * _kv_bytes_per_token(text, b)
    prefill = batch * tokens.total * (2 * text.hidden_size + 3 * text.intermediate_size) * b
    weights = sum(p.numel() for p in model.parameters()) * b
    return StagePlan(stage, key, source, f"{str(dtype)[6:]}{note}, {batch} seq x {seq} tok", weights,
                     activations=kv, other=prefill + batch * text.vocab_size * 4, gpus=gpus, gpu_setting=gpu_setting,
                     hints=[f"{key}.batch_size", f"{key} max_pixels"])


PROMPT_LOGPROB_BYTES = 8
"""Per prompt token and vocabulary entry, what a prompt-log-probability step holds: the fp32 logits and
their fp32 log-softmax (the QA generator's option scores on vLLM)."""


def plan_vllm(stage: str, key: str, c, source: str, tokens: ItemTokens, new_tokens: int, replicas: int,
              scoring: bool = False) -> StagePlan:
    """vLLM claims ``gpu_memory_utilization`` of each GPU (``c``: the stage's :class:`VLLMSettings`):
    weights / tp, an activation reserve, and the KV cache, which must hold at least one
    ``max_model_len`` sequence of an item (``tokens``) + ``new_tokens``. ``scoring``: the engine
    also returns prompt log-probabilities, full-vocabulary logits for up to
    ``max_num_batched_tokens`` prompt tokens a step, added to the reserve (a profile run without
    prompt log-probabilities does not see them)."""
    tp = c.tensor_parallel_size
    model = meta_model(source, torch.bfloat16)
    text = model.config.get_text_config()
    weights = sum(p.numel() for p in model.parameters()) * 2 // tp
    kv_one = c.max_model_len * _kv_bytes_per_token(text, 2, tp)
    batched = max(c.max_model_len, c.max_num_batched_tokens)
    reserve = batched * (4 * text.hidden_size + 3 * text.intermediate_size // tp) * 2 + GIB  # + CUDA graphs
    if scoring:
        reserve += c.max_num_batched_tokens * text.vocab_size * PROMPT_LOGPROB_BYTES
    hints = [f"{key}.tensor_parallel_size", f"{key}.max_model_len", f"{key}.gpu_memory_utilization"]
    plan = StagePlan(stage, key, source, f"bf16, tp {tp}, max_model_len {c.max_model_len} (item {tokens.total} tok)",
                     weights, activations=kv_one, other=reserve, gpus=tp * replicas,
                     claimed_fraction=c.gpu_memory_utilization, gpu_setting=_replica_setting(key, c),
                     hints=hints + ([f"{key}.max_num_batched_tokens"] if scoring else []))
    if tokens.total + new_tokens > c.max_model_len:
        plan.blocked = (f"an item is {tokens.total} tokens + {new_tokens} new, above {key}.max_model_len "
                        f"({c.max_model_len}): raise it or lower {key}.media.max_pixels")
    return plan


def _max_replicas(c) -> int:
    return c.autoscaling.get("max_replicas", 1) if c.num_replicas == "auto" else c.num_replicas


def _replica_setting(key: str, c) -> str:
    return f"{key}.autoscaling.max_replicas" if c.num_replicas == "auto" else f"{key}.num_replicas"


def build_plan(cfg) -> list[StagePlan]:
    """Every model stage of ``cfg`` (a PipelineConfig) in run order."""
    plans = []
    student, teacher = _source(cfg, "student"), _source(cfg, "teacher")
    variants = [v for v in ("baseline", "distill", "leaml") if v in cfg.rows]
    if any(getattr(cfg.generators, v).caption_weight > 0 for v in variants):
        plans.append(_plan_captioner(cfg, teacher))
    if "leaml" in variants and cfg.generators.leaml.method.startswith("masked"):
        plans.append(plan_scoring(cfg, student, _frames(cfg, cfg.generators.leaml.num_frames)))
    rows = training_rows(cfg)
    generators = [r for r in rows if r[0].startswith("generators.")]
    for key, t, sources, what in generators:
        plans.append(plan_training(key, t, sources, what, student, _frames(cfg, t.num_frames)))
    if generators:  # every generator is the student's size; one pseudo-QA plan covers them
        plans.append(_plan_qagen(cfg, student, generators[-1][1]))
    for key, t, sources, what in rows[len(generators):]:
        plans.append(plan_training(key, t, sources, what, student, _frames(cfg, t.num_frames)))
    plans += _plan_evaluation(cfg, student, teacher)
    return plans


def _plan_captioner(cfg, teacher: str) -> StagePlan:
    c = cfg.captioner
    source = c.model or teacher
    frames = _frames(cfg, c.num_frames)
    tokens = item_tokens(model_config(source), c.media, frames, processor_max_pixels(source))
    if c.backend == "vllm":
        if frames > 1:  # sent as a video: Qwen2.5-VL merges frame pairs (temporal patch 2)
            tokens = ItemTokens(tokens.text, math.ceil(frames / 2), tokens.per_frame, tokens.patches_per_frame)
        return plan_vllm("caption (vLLM)", "captioner", c, source, tokens, c.max_new_tokens, _max_replicas(c))
    return plan_generate("caption", "captioner", source, cfg.stream.batch_size, tokens, c.max_new_tokens,
                         math.ceil(c.replica_gpus) * _max_replicas(c), gpu_setting=_replica_setting("captioner", c))


def _plan_qagen(cfg, student: str, t: TrainConfig) -> StagePlan:
    q = cfg.qagen
    frames = _frames(cfg, q.num_frames)
    if q.backend == "vllm":  # a clip as its frames, one image each, as the generator trained: no merge
        tokens = item_tokens(model_config(student), q.media, frames, processor_max_pixels(student))
        return plan_vllm("pseudo-QA generation (vLLM)", "qagen", q, student, tokens, q.max_new_tokens,
                         _max_replicas(q), scoring=q.filter != "none" or q.decoding == "constrained")
    tokens = item_tokens(model_config(student), t.media, frames, processor_max_pixels(student))
    return plan_generate("pseudo-QA generation", "qagen", student, cfg.stream.batch_size * q.n, tokens,
                         q.max_new_tokens, math.ceil(q.replica_gpus) * _max_replicas(q), note=" (load_model default)",
                         gpu_setting=_replica_setting("qagen", q))


def _plan_evaluation(cfg, student: str, teacher: str) -> list[StagePlan]:
    e = cfg.evaluation
    out = []
    for role, source in (("student rows", student), ("zero-shot teacher", teacher)):
        if role == "zero-shot teacher" and "zero_shot_teacher" not in cfg.rows:
            continue
        tokens = item_tokens(model_config(source), cfg.vqa.media, _frames(cfg, e.num_frames),
                             processor_max_pixels(source))
        out.append(plan_generate(f"evaluate {role}", "evaluation", source, e.batch_size, tokens,
                                 e.max_new_tokens, math.ceil(e.actor_gpus) * e.num_actors,
                                 note=" (load_model default)", gpu_setting="evaluation.num_actors"))
    return out


# ---------------------------------------------------------------------------------------------
# Checking and printing


def fits(plan: StagePlan, res: Resources) -> bool | None:
    if plan.blocked:
        return False
    if res.gpu_memory_gb is None or plan.gpus == 0:
        return None
    gpu = res.gpu_memory_gb * GIB
    if plan.claimed_fraction is not None:
        return plan.total <= plan.claimed_fraction * gpu
    return plan.total <= res.usable_fraction * gpu


def problems(plans: list[StagePlan], res: Resources) -> list[str]:
    out = []
    for p in plans:
        if p.blocked:
            out.append(f"{p.stage}: {p.blocked}")
        elif fits(p, res) is False:
            budget = (p.claimed_fraction or res.usable_fraction) * res.gpu_memory_gb
            out.append(f"{p.stage}: needs {p.total / GIB:.1f} GiB per GPU, above {budget:.1f} GiB "
                       f"({res.gpu_memory_gb:g} GiB GPUs); change {p.setting}: " + "; ".join(p.hints))
        if res.gpus is not None and p.gpus > res.gpus:
            out.append(f"{p.stage}: asks for {p.gpus} GPUs, the cluster has {res.gpus} (resources.gpus); "
                       f"change {p.gpu_setting or p.setting}")
    return out


def check_fits(cfg) -> list[StagePlan]:
    """Raise :class:`PlanError` if a stage of ``cfg`` cannot fit its GPUs (no-op without
    ``resources.gpu_memory_gb``); returns the plan."""
    if cfg.resources.gpu_memory_gb is None and cfg.resources.gpus is None:
        return []
    plans = build_plan(cfg)
    found = problems(plans, cfg.resources)
    if found:
        raise PlanError("the memory plan says this run cannot fit (`leaml plan --config ...` prints it):\n  "
                        + "\n  ".join(found))
    return plans


def _gib(n: int) -> str:
    return f"{n / GIB:.1f}"


def format_plan(plans: list[StagePlan], res: Resources) -> str:
    head = f"{'stage':<38}{'GPUs':>5}  {'weights':>8}{'grads':>7}{'optim':>7}{'activ':>7}{'ddp':>6}" \
           f"{'other':>7}{'total':>7}  {'fits':<13} detail"
    lines = [f"GiB per GPU; resources: gpu_memory_gb={res.gpu_memory_gb}, gpus={res.gpus}", head, "-" * len(head)]
    for p in plans:
        ok = fits(p, res)
        mark = {None: "-", True: "yes", False: "NO"}[ok]
        if p.claimed_fraction is not None and res.gpu_memory_gb:
            spare = p.claimed_fraction * res.gpu_memory_gb * GIB - p.weights - p.other
            seqs = max(0, int(spare // max(p.activations, 1)))
            mark += f" ({seqs} seq)"
        lines.append(f"{p.stage:<38}{p.gpus:>5}  {_gib(p.weights):>8}{_gib(p.grads):>7}{_gib(p.optimizer):>7}"
                     f"{_gib(p.activations):>7}{_gib(p.ddp):>6}{_gib(p.other):>7}{_gib(p.total):>7}  {mark:<13} "
                     f"{p.detail}")
    need = max((p.gpus for p in plans), default=0)
    lines.append(f"cluster: {need} GPUs at most at once (stages run one after another)")
    for msg in problems(plans, res):
        lines.append("NO FIT: " + msg)
    return "\n".join(lines)


def plan_json(plans: list[StagePlan]) -> str:
    rows = [{"stage": p.stage, "setting": p.setting, "gpus": p.gpus, "total_bytes": p.total,
             **{k: getattr(p, k) for k in ("weights", "grads", "optimizer", "activations", "ddp", "other")}}
            for p in plans]
    return json.dumps(rows, indent=2)
