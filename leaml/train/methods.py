"""Update methods: a model + TrainConfig -> what to train, the optimizer, and how to export.

- ``full``: every parameter moves (AdamW).
- ``lora``: peft adapters on the language model's linears; exported merged, so every checkpoint
  downstream is a plain Hugging Face model.
- ``masked``: the paper's way (GPS-style): full-size gradients, masked to the selected entries
  before clipping and the step; weight decay masked too, so frozen entries never move.
- ``masked_sparse``: gradient and AdamW state only for the selected entries (beyond the paper);
  same updates as ``masked``, memory proportional to the mask density.

``precision: bf16`` stores the frozen weights in bfloat16 where the method trains a separate fp32
copy (lora, masked_sparse); ``activation_checkpointing`` recomputes each layer in backward.
:func:`state_bytes` is the one place that says what each method keeps per GPU (the memory plan,
``leaml.plan``, reads it; ``tests/train/test_plan.py`` checks it against a real step).

Checkpoints hold what the method trains and nothing else (:meth:`MethodSetup.checkpoint_state`):
all parameters (full), the adapters (lora), the sparse values (masked_sparse), the selected entries
(masked), each with its optimizer state; resume rebuilds the rest from the base weights and the
mask artifact, as at the start. The whole model is exported once, at the end.
"""
from __future__ import annotations

import copy
import re
import tempfile
from dataclasses import dataclass, field
from typing import Callable

import torch

from leaml import storage
from leaml.train.config import TrainConfig


@dataclass
class MethodSetup:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    params: list[torch.nn.Parameter]
    before_step: Callable[[], None] = lambda: None
    merged_model: Callable[[torch.nn.Module], torch.nn.Module] = field(default=lambda m: m)
    processor: object = None
    ddp_kwargs: dict = field(default_factory=dict)
    """Extra DistributedDataParallel arguments this method wants (the loop passes them on)."""
    selections: dict[str, torch.Tensor] = field(default_factory=dict)
    """Trained parameters that move only at some entries (dense masked): name -> bool mask. A
    checkpoint keeps those entries only; the others equal the base weights by construction."""

    def clip_and_step(self, max_norm: float) -> torch.Tensor:
        """Mask (if any), clip over the trainable entries only, step."""
        self.before_step()
        norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        self.optimizer.step()
        return norm

    def export(self, out_uri: str, processor) -> None:
        """Write a plain Hugging Face checkpoint (adapters / sparse values merged in)."""
        from leaml.models.builders import save_model

        save_model(self.merged_model(self.model), processor, out_uri)

    def checkpoint_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(trained parameters by name, optimizer ``state_dict``): what a resumable checkpoint keeps.

        Only what the method trains: every parameter (full), the adapters (lora), the sparse values
        (masked_sparse), or the selected entries of each masked weight and of its two moments
        (masked; outside the mask the weight is the base's and the moments are 0, bit for bit:
        ``MaskedAdamW`` zeroes those gradients). Base weights + this = the training state.
        """
        params = {n: p.detach() for n, p in self.model.named_parameters() if p.requires_grad}
        state = self.optimizer.state_dict()
        if not self.selections:
            return params, state
        by_index = self._selections_by_index()
        params = {n: _select(p, self.selections.get(n)) for n, p in params.items()}
        state = {**state, "state": {i: {k: _select(v, by_index.get(i)) for k, v in s.items()}
                                    for i, s in state["state"].items()}}
        return params, state

    def load_checkpoint_state(self, params: dict[str, torch.Tensor], optimizer_state: dict) -> None:
        """The inverse of :meth:`checkpoint_state`, on a method set up afresh from the base weights.
        Whole tensors are copied as they are (a checkpoint of the earlier format holds those)."""
        own = dict(self.model.named_parameters())
        unknown = sorted(set(params) - set(own))
        if unknown:
            raise ValueError(f"checkpoint holds parameters this model does not train: {unknown[:3]}")
        with torch.no_grad():
            for name, value in params.items():
                p, mask = own[name], self.selections.get(name)
                if _is_selected_form(value, mask):
                    p.masked_scatter_(mask, value.to(p.device, p.dtype))
                else:
                    p.copy_(value)
        by_index = self._selections_by_index()
        state = {int(i): {k: _expand(v, by_index.get(int(i))) for k, v in s.items()}
                 for i, s in optimizer_state["state"].items()}
        self.optimizer.load_state_dict({**optimizer_state, "state": state})

    def _selections_by_index(self) -> dict[int, torch.Tensor]:
        """The masks keyed as ``optimizer.state_dict()`` numbers parameters (param-group order)."""
        name_of = {id(p): n for n, p in self.model.named_parameters()}
        ordered = [p for g in self.optimizer.param_groups for p in g["params"]]
        return {i: self.selections[name_of[id(p)]] for i, p in enumerate(ordered)
                if name_of.get(id(p)) in self.selections}


def _select(t, mask: torch.Tensor | None):
    """The entries of ``t`` at ``mask`` (row-major) where ``t`` is mask-shaped; else ``t``."""
    if mask is None or not torch.is_tensor(t) or t.shape != mask.shape:
        return t
    return t.masked_select(mask)


def _is_selected_form(t, mask: torch.Tensor | None) -> bool:
    return (mask is not None and torch.is_tensor(t) and t.shape != mask.shape and t.dim() == 1
            and t.numel() == int(mask.sum()))


def _expand(t, mask: torch.Tensor | None):
    """Selected entries -> a mask-shaped tensor, zero elsewhere (as the moments are there)."""
    if not _is_selected_form(t, mask):
        return t
    return torch.zeros(mask.shape, dtype=t.dtype, device=mask.device).masked_scatter_(mask, t.to(mask.device))


# gradient_as_bucket_view: DDP's all-reduce buckets become the .grad storage instead of a second
# copy of every trainable gradient (+4 B per trainable parameter in fp32 otherwise).
DDP_KWARGS = {"gradient_as_bucket_view": True}


def frozen_weight_dtype(cfg: TrainConfig) -> torch.dtype:
    """The dtype of the model's own weights during training (see ``TrainConfig.precision``)."""
    separate_copy = cfg.method in ("lora", "masked_sparse")  # the trained values live elsewhere, in fp32
    return torch.bfloat16 if cfg.precision == "bf16" and separate_copy else torch.float32


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Recompute every decoder layer and vision block in backward (transformers >= 5 names it
    ``activation_checkpointing_enable``; ``gradient_checkpointing_enable`` before)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def setup_method(model: torch.nn.Module, cfg: TrainConfig, masks_uri: str | None = None) -> MethodSetup:
    model.to(frozen_weight_dtype(cfg))
    if cfg.activation_checkpointing:
        # non-reentrant: works with DDP's find_unused_parameters and with frozen inputs (LoRA,
        # sparse values), where the reentrant variant would see no input needing a gradient
        enable_activation_checkpointing(model)
    if cfg.method == "full":
        return _full(model, cfg)
    if cfg.method == "lora":
        return _lora(model, cfg)
    if masks_uri is None:
        raise ValueError(f"method {cfg.method!r} needs a neuron-mask artifact (run the scoring stage first)")
    from leaml.train.masks import load_masks

    masks = load_masks(masks_uri)
    return (_masked if cfg.method == "masked" else _masked_sparse)(model, cfg, masks)


def _adamw(params, cfg: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999))


def _full(model, cfg: TrainConfig) -> MethodSetup:
    # ``freeze``: a staged recipe keeps a pretrained part (the vision tower) fixed while the rest
    # learns to read it; frozen parameters get no gradient and no optimizer state.
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(not any(f in name for f in cfg.freeze))
        if p.requires_grad:
            params.append(p)
    if not params:
        raise ValueError(f"train.freeze={cfg.freeze} freezes every parameter of the model")
    return MethodSetup(model, _adamw(params, cfg), params, ddp_kwargs=dict(DDP_KWARGS))


def lora_target_regex(cfg: TrainConfig) -> str:
    """Adapters only on the eligible (language-model) linears, never on the vision tower."""
    scopes = "|".join(re.escape(s) for s in cfg.mask.include)
    names = "|".join(re.escape(n) for n in cfg.lora.target_modules)
    return rf".*({scopes}).*\.({names})$"


def _lora(model, cfg: TrainConfig) -> MethodSetup:
    from peft import LoraConfig, get_peft_model

    lcfg = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=lora_target_regex(cfg), bias="none")
    peft_model = get_peft_model(model, lcfg)
    params = [p for p in peft_model.parameters() if p.requires_grad]

    def merged(m):
        return copy.deepcopy(m).merge_and_unload()

    return MethodSetup(peft_model, _adamw(params, cfg), params, merged_model=merged, ddp_kwargs=dict(DDP_KWARGS))


def _masked(model, cfg: TrainConfig, masks: dict[str, torch.Tensor]) -> MethodSetup:
    from leaml.train.masked_optim import prepare_masked_training

    params, optimizer, before_step = prepare_masked_training(model, masks, lr=cfg.lr, weight_decay=cfg.weight_decay)
    mask_of = {id(p): m for p, m in optimizer.masks.items()}
    selections = {n: mask_of[id(p)] for n, p in model.named_parameters() if id(p) in mask_of}
    return MethodSetup(model, optimizer, params, before_step=before_step, ddp_kwargs=dict(DDP_KWARGS),
                       selections=selections)


def _masked_sparse(model, cfg: TrainConfig, masks: dict[str, torch.Tensor]) -> MethodSetup:
    from leaml.train.sparse import build_sparse_adamw, merge_sparse_params

    # build_sparse_adamw installs the flat values and a post-step hook that writes them back into
    # the frozen weights (a fused AdamW would otherwise leave the forward on stale weights).
    # fp32 values: the master copy of the selected entries when the frozen weights are bf16
    optimizer = build_sparse_adamw(model, masks, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                   values_dtype=torch.float32)
    params = [p for g in optimizer.param_groups for p in g["params"]]

    def merged(m):
        m = copy.deepcopy(m)
        merge_sparse_params(m)
        return m

    # the index buffers are constant and identical on every rank: never broadcast them
    return MethodSetup(model, optimizer, params, merged_model=merged,
                       ddp_kwargs=dict(DDP_KWARGS, forward_sync_buffers=False))


# ---------------------------------------------------------------------------------------------
# What each method keeps per GPU (the memory plan's accounting; no allocation: works on meta models)


@dataclass
class StateBytes:
    """Bytes per GPU a method keeps for the whole run, beside the activations of a step."""

    weights: int
    """The model's own weights (frozen or trained in place)."""
    grads: int
    optimizer: int
    """AdamW moments, plus the trained copies (LoRA adapters, sparse values) and their selection."""
    ddp: int
    """DDP's gradient buckets (0 with gradient_as_bucket_view) for a multi-worker run."""
    largest_dw: int = 0
    """masked_sparse: one layer's full-size weight gradient, formed and gathered inside backward."""
    trainable: int = 0
    """Number of trained values."""


def state_bytes(model: torch.nn.Module, cfg: TrainConfig, world_size: int = 1,
                bucket_view: bool = True) -> StateBytes:
    """What ``setup_method(model, cfg)`` keeps: ``model`` is the loaded model (a meta one will do).
    ``bucket_view``: DDP runs with ``gradient_as_bucket_view`` (no second copy of the gradients)."""
    n_params = sum(p.numel() for p in model.parameters())
    wbytes = frozen_weight_dtype(cfg).itemsize
    ddp_factor = 0 if world_size <= 1 or bucket_view else 1
    if cfg.method == "full":
        # fp32 weights are the AdamW master copy; grads fp32; exp_avg + exp_avg_sq fp32 (not for ``freeze``)
        n = sum(p.numel() for name, p in model.named_parameters() if not any(f in name for f in cfg.freeze))
        return StateBytes(4 * n_params, 4 * n, 8 * n, 4 * n * ddp_factor, trainable=n)
    if cfg.method == "lora":
        n = lora_param_count(model, cfg)
        return StateBytes(wbytes * n_params, 4 * n, 4 * n + 8 * n, 4 * n * ddp_factor, trainable=n)
    shapes = _mask_shapes(model, cfg)
    selected = sum(rows * _k_row(cfg, width) for rows, width in shapes)
    masked = sum(rows * width for rows, width in shapes)
    if cfg.method == "masked":  # full-size grads and moments for every masked weight, a bool mask each
        return StateBytes(4 * n_params, 4 * masked, 8 * masked + masked, 4 * masked * ddp_factor,
                          trainable=selected)
    # masked_sparse: per selected entry fp32 values + grad + 2 moments; an index per linear (int32
    # flat indices or a 1-byte bool mask, whichever is smaller, as sparse._index_for picks)
    index = sum(min(rows * width, 4 * rows * _k_row(cfg, width)) for rows, width in shapes)
    compute = 2 if cfg.precision == "bf16" else 4
    largest = max((r * w for r, w in shapes), default=0)
    return StateBytes(wbytes * n_params, 4 * selected, 12 * selected + index, 4 * selected * ddp_factor,
                      largest_dw=compute * largest, trainable=selected)


def checkpoint_bytes(model: torch.nn.Module, cfg: TrainConfig) -> int:
    """Tensor bytes of one resumable checkpoint (:meth:`MethodSetup.checkpoint_state`): 12 B per
    trained value (the fp32 value and its two fp32 AdamW moments), plus a step counter per trained
    tensor (not counted). The whole model is written once, by the final export."""
    return 12 * state_bytes(model, cfg).trainable


def lora_param_count(model: torch.nn.Module, cfg: TrainConfig) -> int:
    """r * (in + out) per adapted linear (A: r x in, B: out x r), as peft builds them."""
    pattern = re.compile(lora_target_regex(cfg))
    return sum(cfg.lora.r * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and pattern.fullmatch(name))


def _mask_shapes(model: torch.nn.Module, cfg: TrainConfig) -> list[tuple[int, int]]:
    from leaml.train.masks import eligible_linears

    return [tuple(m.weight.shape) for m in eligible_linears(model, cfg.mask.include, cfg.mask.exclude).values()]


def _k_row(cfg: TrainConfig, width: int) -> int:
    from leaml.train.masks import resolve_k

    return resolve_k(float(cfg.mask.k) if cfg.k_is_fraction else int(cfg.mask.k), width)
