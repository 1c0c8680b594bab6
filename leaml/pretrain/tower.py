"""Stage 1 of the base-model recipe: the vision tower (and its connector) learns to see, alone.

(model, images, dense scene labels) -> the model's vision tower and connector trained in place.

Why a stage of its own: trained end to end from random weights, a tiny VLM's language model does
not learn to read its visual tokens within CPU budgets (46% at 1,000 steps on endo, answer prior
45%), while the same tower trained alone with linear heads reads the same labels to 84% in 40 s.
Real VLMs are built the same way: a vision encoder pretrained on its own (CLIP, SigLIP), then the
connector aligned, then instruction tuning.

The heads read the *connector's output tokens* (what the language model will see), flattened, so
they keep where each token sits: a 9-cell location is a linear function of which token fires. Each
label is one classification head; the loss is the mean of their cross-entropies. The heads are
thrown away afterwards: only the tower and the connector stay in the model.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from PIL import Image

from leaml.data.synth_common import LabelHead


def image_tokens(model, processor, images: Sequence[Image.Image]) -> torch.Tensor:
    """The connector's output for each image: ``[batch, tokens, hidden]`` (what the LM receives)."""
    pixels = processor.image_processor(images=list(images), return_tensors="pt")
    inner = model.model
    dtype = next(inner.parameters()).dtype
    if model.config.model_type == "qwen2_5_vl":
        out = inner.get_image_features(pixels["pixel_values"].to(model.device, dtype),
                                       pixels["image_grid_thw"].to(model.device))
    else:  # llava: the projector's output per patch (CLS dropped by the "default" strategy)
        out = inner.get_image_features(pixel_values=pixels["pixel_values"].to(model.device, dtype))
    feats = out.pooler_output if hasattr(out, "pooler_output") else out
    return torch.stack(list(feats)) if isinstance(feats, (list, tuple)) else feats


def vision_parameters(model) -> list[torch.nn.Parameter]:
    """The tower's and the connector's parameters (everything the image passes before the LM)."""
    inner = model.model
    parts = [inner.visual] if hasattr(inner, "visual") else [inner.vision_tower, inner.multi_modal_projector]
    return [p for part in parts for p in part.parameters()]


class _Heads(torch.nn.Module):
    def __init__(self, in_features: int, heads: Sequence[LabelHead]):
        super().__init__()
        self.heads = list(heads)
        self.proj = torch.nn.Linear(in_features, sum(h.classes for h in heads))

    def loss_and_hits(self, feats: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.proj(feats.flatten(1).float())
        losses, hits, start = [], [], 0
        for i, h in enumerate(self.heads):
            part, y = logits[:, start:start + h.classes], labels[:, i]
            start += h.classes
            losses.append(torch.nn.functional.cross_entropy(part, y.clamp(min=0), reduction="none")
                          * (y >= 0))
            hits.append((part.argmax(-1) == y).float().masked_fill(y < 0, float("nan")))
        n = (labels >= 0).sum(0).clamp(min=1)
        return (torch.stack(losses, 1).sum(0) / n).mean(), torch.stack(hits, 1)


@dataclass
class TowerResult:
    steps: int
    seconds: float
    train_loss: float
    held_out: dict[str, float]
    """Accuracy per head on the held-out images (never trained on)."""


def train_tower(model, processor, images: Sequence[Image.Image], scenes: Sequence[dict],
                heads: Sequence[LabelHead], steps: int, batch_size: int = 64, lr: float = 2e-3,
                held_out: int = 256, seed: int = 0, log: Callable[[str], None] = print) -> TowerResult:
    """Train the tower + connector of ``model`` with linear ``heads`` on ``images``; the last
    ``held_out`` images measure it. The LM is untouched (its gradients are never computed)."""
    if len(images) != len(scenes) or len(images) <= held_out:
        raise ValueError(f"{len(images)} images, {len(scenes)} scenes, {held_out} held out")
    labels = torch.tensor([[h.read(s) for h in heads] for s in scenes], dtype=torch.long)
    n_train = len(images) - held_out
    params = vision_parameters(model)
    model.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    model.train()
    with torch.no_grad():
        width = image_tokens(model, processor, images[:1]).flatten(1).shape[1]
    head = _Heads(width, heads).to(model.device)
    opt = torch.optim.AdamW([{"params": params}, {"params": head.parameters()}], lr=lr, weight_decay=0.01)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    gen, t0, loss = torch.Generator().manual_seed(seed), time.perf_counter(), torch.tensor(0.0)
    for step in range(steps):
        idx = torch.randint(n_train, (batch_size,), generator=gen).tolist()
        loss, _ = head.loss_and_hits(image_tokens(model, processor, [images[i] for i in idx]),
                                     labels[idx].to(model.device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % max(1, steps // 10) == 0:
            log(f"[tower] step {step + 1}/{steps} loss {loss.item():.3f} ({time.perf_counter() - t0:.0f}s)")
    acc = _held_out_accuracy(model, processor, head, images[n_train:], labels[n_train:])
    model.requires_grad_(True)
    model.eval()
    return TowerResult(steps, time.perf_counter() - t0, float(loss.item()),
                       {h.name: a for h, a in zip(heads, acc)})


@torch.no_grad()
def _held_out_accuracy(model, processor, head: _Heads, images, labels, batch: int = 128) -> list[float]:
    model.eval()
    hits = torch.cat([head.loss_and_hits(image_tokens(model, processor, images[i:i + batch]),
                                         labels[i:i + batch].to(model.device))[1]
                      for i in range(0, len(images), batch)])
    return torch.nanmean(hits, 0).tolist()
