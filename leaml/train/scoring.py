"""Neuron scoring stage: generator init checkpoint + labeled set D_l -> neuron masks artifact.

Eq. 5 on the QA loss L_QA (media -> ``<q>Q<q><a>A<a>``) over the whole labeled set, then Eq. 6
top-K per row. Computed once, in one process (D_l is small), before distillation starts, and
saved to the run dir; every DDP rank then loads the same file, so masks cannot differ by rank.
"""
from __future__ import annotations

from pydantic import Field

from leaml.config import StrictModel
from leaml.records import VQAExample, load_records
from leaml.train.config import MaskSettings
from leaml.train.data import qa_items


class ScoringConfig(StrictModel):
    init_model: str
    """The QA generator's initial checkpoint (the student base model)."""
    labeled: str
    """Labeled VQAExample records (D_l)."""
    media_root: str
    out: str
    """Mask artifact directory (masks.safetensors + summary.json)."""
    mask: MaskSettings = MaskSettings()
    num_frames: int = Field(8, ge=1)
    device: str = "auto"
    """Where the gradients are computed (``auto``: a GPU if this process has one)."""


def run_scoring(cfg: ScoringConfig) -> dict:
    """Compute and save the masks; returns the density summary."""
    from leaml.models.builders import load_model
    from leaml.train.loop import MediaBatcher, target_loss
    from leaml.train.masks import accumulate_importance, compute_masks, eligible_linears, mask_summary, save_masks

    model, processor = load_model(cfg.init_model, device=cfg.device)
    linears = eligible_linears(model, cfg.mask.include, cfg.mask.exclude)
    if not linears:
        raise ValueError(f"no linear layer matches include={cfg.mask.include} exclude={cfg.mask.exclude}; "
                         f"module names look like {[n for n, _ in model.named_modules()][1:4]}")
    items = qa_items(load_records(cfg.labeled, VQAExample), cfg.media_root)
    batcher = MediaBatcher(processor, cfg.num_frames, model.device)
    bs = cfg.mask.scoring_batch_size
    batches = (items[i:i + bs] for i in range(0, len(items), bs))

    def loss_fn(m, batch):
        return target_loss(m, batcher(batch)), len(batch)

    scores = accumulate_importance(model, batches, loss_fn, {n: m.weight for n, m in linears.items()})
    k = int(cfg.mask.k) if cfg.mask.k >= 1 else float(cfg.mask.k)
    masks = compute_masks(scores, k)
    summary = mask_summary(masks, model, k) | {"n_labeled": len(items)}
    save_masks(masks, cfg.out, summary)
    return summary
