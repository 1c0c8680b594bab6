"""Update methods: a model + TrainConfig -> what to train, the optimizer, and how to export.

- ``full``: every parameter moves (AdamW).
- ``lora``: peft adapters on the language model's linears; exported merged, so every checkpoint
  downstream is a plain Hugging Face model.
- ``masked``: the paper's way (GPS-style): full-size gradients, masked to the selected entries
  before clipping and the step; weight decay masked too, so frozen entries never move.
- ``masked_sparse``: gradient and AdamW state only for the selected entries (beyond the paper);
  same updates as ``masked``, memory proportional to the mask density.
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


def setup_method(model: torch.nn.Module, cfg: TrainConfig, masks_uri: str | None = None) -> MethodSetup:
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
    params = [p for p in model.parameters()]
    for p in params:
        p.requires_grad_(True)
    return MethodSetup(model, _adamw(params, cfg), params)


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

    return MethodSetup(peft_model, _adamw(params, cfg), params, merged_model=merged)


def _masked(model, cfg: TrainConfig, masks: dict[str, torch.Tensor]) -> MethodSetup:
    from leaml.train.masked_optim import prepare_masked_training

    params, optimizer, before_step = prepare_masked_training(model, masks, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return MethodSetup(model, optimizer, params, before_step=before_step)


def _masked_sparse(model, cfg: TrainConfig, masks: dict[str, torch.Tensor]) -> MethodSetup:
    from leaml.train.sparse import build_sparse_adamw, merge_sparse_params

    # build_sparse_adamw installs the flat values and a post-step hook that writes them back into
    # the frozen weights (a fused AdamW would otherwise leave the forward on stale weights).
    optimizer = build_sparse_adamw(model, masks, lr=cfg.lr, weight_decay=cfg.weight_decay)
    params = [p for g in optimizer.param_groups for p in g["params"]]

    def merged(m):
        m = copy.deepcopy(m)
        merge_sparse_params(m)
        return m

    return MethodSetup(model, optimizer, params, merged_model=merged)
