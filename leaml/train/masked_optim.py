"""Dense masked AdamW (the paper's GPS-style path): model + masks -> an optimizer that moves only the
mask-selected entries of each masked linear weight (Eq. 6).

    freeze_unmasked(model, masks)                 -> {weight Parameter: BoolTensor}, the rest frozen
    build_masked_adamw(model, masks, lr=..., ...) -> MaskedAdamW
    prepare_masked_training(model, masks, lr=...) -> (params, MaskedAdamW, before_step)
    clip_trainable_grad_norm_(optimizer, max_norm) -> total norm of the trainable entries

Guarantees:
- An entry outside its mask is bit-identical to its starting value after any number of steps: the new
  weight is ``torch.where(mask, updated, old)``, so no arithmetic (decoupled weight decay, momentum
  left from earlier steps, NaN/inf gradients) ever reaches an unselected entry.
- The update of a selected entry is exactly torch.optim.AdamW's (same operations in the same order),
  so the sparse path in ``sparse.py`` agrees with this one to float rounding.
- Clipping sees only trainable entries: grads are masked before the norm is taken.

DDP: every rank loads the same masks; DDP all-reduces the full dense gradient in backward and the mask
is applied afterwards. Masking is linear and identical on every rank, so mask(mean_r g_r) ==
mean_r(mask(g_r)): before or after the all-reduce gives the same update (masking first would not save
communication, DDP's buckets are dense anyway).

Memory: gradients and both Adam moments are full-size for every masked weight, whatever the density;
``sparse.py`` keeps them for the selected entries only.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn


def freeze_unmasked(model: nn.Module, masks: Mapping[str, torch.Tensor],
                    train_unmasked: bool = False) -> dict[torch.Tensor, torch.Tensor]:
    """Make masked linear weights trainable and, unless ``train_unmasked``, freeze every other param.

    Returns {weight Parameter: bool mask on the weight's device}, the form :class:`MaskedAdamW` takes.
    """
    by_param = {}
    for name, mask in masks.items():
        lin = model.get_submodule(name)
        if not isinstance(lin, nn.Linear):
            raise TypeError(f"mask {name!r} names a {type(lin).__name__}, not an nn.Linear")
        if tuple(mask.shape) != tuple(lin.weight.shape):
            raise ValueError(f"mask {name!r} has shape {tuple(mask.shape)}, weight {tuple(lin.weight.shape)}")
        by_param[lin.weight] = mask.to(device=lin.weight.device, dtype=torch.bool)
    if not train_unmasked:
        for p in model.parameters():
            p.requires_grad_(False)
    for w in by_param:
        w.requires_grad_(True)
    return by_param


class MaskedAdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay) whose step only changes entries selected by a per-param mask.

    ``masks`` maps parameters to bool tensors of the same shape; parameters without a mask get plain
    AdamW. Defaults match torch.optim.AdamW.
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict],
                 masks: Mapping[torch.Tensor, torch.Tensor],
                 lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.masks = dict(masks)

    @torch.no_grad()
    def mask_grads_(self) -> None:
        """Zero the gradient outside each mask (masked_fill, so a NaN/inf there cannot leak into a norm)."""
        for p, mask in self.masks.items():
            if p.grad is not None:
                p.grad.masked_fill_(mask.logical_not(), 0)

    def clip_grad_norm_(self, max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
        return clip_trainable_grad_norm_(self, max_norm, norm_type)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.mask_grads_()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict) -> None:
        # mirrors torch.optim.adam._single_tensor_adam (decoupled decay, no amsgrad) op for op
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        step, exp_avg, exp_avg_sq, grad = state["step"].item(), state["exp_avg"], state["exp_avg_sq"], p.grad
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = lr / (1 - beta1**step)
        denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(eps)
        new = p * (1 - lr * wd)
        new.addcdiv_(exp_avg, denom, value=-step_size)
        mask = self.masks.get(p)
        p.copy_(new if mask is None else torch.where(mask, new, p))


def build_masked_adamw(model: nn.Module, masks: Mapping[str, torch.Tensor], *, lr: float,
                       betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                       weight_decay: float = 1e-2, train_unmasked: bool = False) -> MaskedAdamW:
    """Freeze what the masks do not cover and return a MaskedAdamW over the trainable parameters."""
    by_param = freeze_unmasked(model, masks, train_unmasked)
    params = [p for p in model.parameters() if p.requires_grad]
    return MaskedAdamW(params, by_param, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def prepare_masked_training(model: nn.Module, masks: Mapping[str, torch.Tensor], *, lr: float,
                            weight_decay: float = 1e-2, **adamw,
                            ) -> tuple[list[torch.Tensor], MaskedAdamW, Callable[[], None]]:
    """For a loop that clips with ``torch.nn.utils.clip_grad_norm_(params)``: call ``before_step()``
    (masks the grads) first, so the norm covers the trainable entries only."""
    opt = build_masked_adamw(model, masks, lr=lr, weight_decay=weight_decay, **adamw)
    params = [p for g in opt.param_groups for p in g["params"]]
    return params, opt, opt.mask_grads_


def clip_trainable_grad_norm_(optimizer: torch.optim.Optimizer, max_norm: float,
                              norm_type: float = 2.0) -> torch.Tensor:
    """Clip the gradients of the optimizer's params by the norm of their trainable entries.

    Works for MaskedAdamW (grads are masked first) and for any optimizer over sparse ``values``
    (every entry there is trainable). Returns the norm before clipping.
    """
    if isinstance(optimizer, MaskedAdamW):
        optimizer.mask_grads_()
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    return torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
