"""Neuron selection (paper Eq. 5-6): labeled batches + a model -> per-row top-K masks on linear weights.

    eligible_linears(model)                      -> {module name: nn.Linear}
    accumulate_importance(model, batches, ...)   -> {name: s}, s = |(1/N) sum_{D_l} dL/dθ|
    compute_masks(scores, k)                     -> {name: BoolTensor[out, in]}, K per row
    mask_summary / save_masks / load_masks       -> densities; <uri>/masks.safetensors + summary.json

Masks are keyed by the linear module's qualified name (``model.get_submodule(name).weight`` is the
masked tensor). Only the weight matrices of linear layers are ever masked; biases, norms, embeddings
and every other parameter are outside the masks and stay frozen during masked training.

Notable choices:
- The score is the absolute value of the *mean signed* gradient over the whole labeled set, not the
  mean of per-batch absolute gradients: gradients are summed (weighted by batch size) and the
  absolute value is taken once at the end, so batching does not change the scores.
- Ties in top-K are broken by column index (lower index wins) through a stable sort, so a mask is
  reproducible on every rank and every run; NaN scores rank below every number.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from leaml import storage

MASKS_FILE = "masks.safetensors"
SUMMARY_FILE = "summary.json"
_FORMAT = "leaml-neuron-masks/packbits-v1"
FROZEN_NOTE = ("only the weight matrices of the masked linear layers are trainable; biases, norms, "
               "embeddings and all other parameters are outside the masks and stay frozen")

K = int | float  # an int is a count per row (capped at the row), a float a fraction of the row


def eligible_linears(model: nn.Module, include: Sequence[str] = ("language_model",),
                     exclude: Sequence[str] = ("lm_head",)) -> dict[str, nn.Linear]:
    """nn.Linear modules whose qualified name contains any ``include`` and no ``exclude`` substring.

    The default selects a VLM's language-model linears; add e.g. ``"visual"`` or ``"projector"`` to
    ``include`` to opt the vision tower or projector in. ``include=("",)`` selects every linear.
    """
    return {name: m for name, m in model.named_modules()
            if isinstance(m, nn.Linear)
            and any(p in name for p in include) and not any(p in name for p in exclude)}


def accumulate_importance(model: nn.Module, batches: Iterable[Any],
                          loss_fn: Callable[[nn.Module, Any], tuple[torch.Tensor, int]],
                          params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Eq. 5: s = |(1/N) sum over every example of dL/dθ| for each tensor in ``params``.

    ``loss_fn(model, batch) -> (batch-mean loss, n_examples)``; ``params`` maps names to the model's
    parameters (e.g. ``{n: m.weight for n, m in eligible_linears(model).items()}``). Returns float32
    scores under the same names, on the parameters' device. Runs in eval mode (no dropout noise in the
    scores); leaves ``.grad``, ``requires_grad`` flags, the train/eval mode and the weights as they were.

    Per layer: each parameter's gradient is added to its float32 sum from a post-accumulate hook as
    soon as backward has formed it, then dropped, so at most about one layer's gradient is alive
    beside the sums (not a second full-size copy of every scored weight, as ``autograd.grad`` would
    return them).
    """
    sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    n_total, weight = 0, [0.0]
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    stashed = {n: p.grad for n, p in params.items()}
    handles = []
    try:
        model.eval()
        targets = {id(p) for p in params.values()}  # by identity: tensor == is elementwise
        for p, _ in flags:  # grads only where scored: the rest of the backward pass is skipped
            p.requires_grad_(id(p) in targets)
        for n, p in params.items():
            p.grad = None
            handles.append(p.register_post_accumulate_grad_hook(_adder(sums[n], weight)))
        for batch in batches:
            loss, n = loss_fn(model, batch)
            weight[0] = float(n)  # batch mean * n = batch sum
            loss.backward()
            n_total += int(n)
    finally:
        for h in handles:
            h.remove()
        for n, p in params.items():
            p.grad = stashed[n]
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)
    if n_total == 0:
        raise ValueError("accumulate_importance got no examples")
    return {n: s.div_(n_total).abs_() for n, s in sums.items()}


def _adder(total: torch.Tensor, weight: list[float]):
    def hook(p: torch.Tensor) -> None:
        total.add_(p.grad.float(), alpha=weight[0])
        p.grad = None  # this layer's gradient is no longer needed: free it before the next one forms

    return hook


def resolve_k(k: K, row_width: int) -> int:
    """Entries kept per row: an int count capped at ``row_width``, or ceil(fraction * row_width)."""
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise TypeError(f"K must be an int count or a float fraction, got {k!r}")
    if isinstance(k, int):
        if k < 1:
            raise ValueError(f"K as a count must be >= 1, got {k}")
        return min(k, row_width)
    if not 0.0 < k <= 1.0:
        raise ValueError(f"K as a fraction must be in (0, 1], got {k}")
    # round first: 0.7 * 10 == 7.000000000000001 in binary floating point, whose ceil is 8
    return max(1, min(row_width, math.ceil(round(k * row_width, 6))))


def topk_per_row(scores: torch.Tensor, k: K) -> torch.Tensor:
    """Bool mask [out, in] keeping the K highest scores of every row (one row = one output neuron).

    Ties go to the lower column index (stable descending sort); NaN counts as -inf.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D [out, in], got shape {tuple(scores.shape)}")
    k_row = resolve_k(k, scores.shape[1])
    s = torch.nan_to_num(scores.float(), nan=-math.inf)
    keep = torch.argsort(s, dim=1, descending=True, stable=True)[:, :k_row]
    return torch.zeros(s.shape, dtype=torch.bool, device=s.device).scatter_(1, keep, True)


def compute_masks(scores: Mapping[str, torch.Tensor], k: K) -> dict[str, torch.Tensor]:
    """Eq. 6 selection for every scored weight matrix."""
    return {name: topk_per_row(s, k) for name, s in scores.items()}


def mask_summary(masks: Mapping[str, torch.Tensor], model: nn.Module | None = None,
                 k: K | None = None) -> dict[str, Any]:
    """Densities per module, over the masked linear weights, and over all of ``model``'s params."""
    modules = {}
    for name, m in masks.items():
        per_row = m.sum(dim=1)
        modules[name] = {"shape": list(m.shape), "selected": int(per_row.sum()),
                         "density": float(m.float().mean()),
                         "k_row_min": int(per_row.min()), "k_row_max": int(per_row.max())}
    selected = sum(v["selected"] for v in modules.values())
    eligible = sum(m.numel() for m in masks.values())
    out: dict[str, Any] = {
        "k": k,
        "k_per_row_width": ({str(w): resolve_k(k, w) for w in sorted({m.shape[1] for m in masks.values()})}
                            if k is not None else None),
        "n_modules": len(modules), "selected": selected, "masked_weight_params": eligible,
        "density_masked_weights": selected / eligible if eligible else 0.0,
        "frozen": FROZEN_NOTE, "modules": modules,
    }
    if model is not None:
        total = sum(p.numel() for p in model.parameters())  # parameters() already dedups tied weights
        out |= {"model_params": total, "density_all_params": selected / total if total else 0.0}
    return out


def save_masks(masks: Mapping[str, torch.Tensor], uri: str, summary: Mapping[str, Any] | None = None) -> None:
    """Write ``<uri>/masks.safetensors`` (bit-packed, 1 bit per entry) and ``<uri>/summary.json``."""
    packed, shapes = {}, {}
    for name, m in masks.items():
        bits = np.packbits(m.detach().cpu().numpy().astype(bool).ravel())
        packed[name] = torch.from_numpy(bits)
        shapes[name] = list(m.shape)
    blob = st_save(packed, metadata={"format": _FORMAT, "shapes": json.dumps(shapes)})
    storage.write_bytes(storage.join(uri, MASKS_FILE), blob)
    storage.write_bytes(storage.join(uri, SUMMARY_FILE),
                        json.dumps(dict(summary or mask_summary(masks)), indent=2).encode())


def load_masks(uri: str) -> dict[str, torch.Tensor]:
    """Read the masks written by :func:`save_masks` (bool tensors on CPU).

    ``uri`` is the artifact directory, or the ``masks.safetensors`` file in it.
    """
    path = uri if str(uri).endswith(".safetensors") else storage.join(uri, MASKS_FILE)
    blob = storage.read_bytes(path)
    meta = _safetensors_metadata(blob)
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{uri}: not a neuron-mask file (format {meta.get('format')!r})")
    shapes = json.loads(meta["shapes"])
    out = {}
    for name, bits in st_load(blob).items():
        shape = shapes[name]
        flat = np.unpackbits(bits.numpy(), count=math.prod(shape))
        out[name] = torch.from_numpy(flat.astype(bool)).reshape(shape)
    return out


def load_mask_summary(uri: str) -> dict[str, Any]:
    return json.loads(storage.read_bytes(storage.join(uri, SUMMARY_FILE)))


def _safetensors_metadata(blob: bytes) -> dict[str, str]:
    # safetensors.torch.load drops the metadata; the header is an 8-byte little-endian length + JSON
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + n]).get("__metadata__", {})
