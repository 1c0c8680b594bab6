"""Neuron scoring stage: generator init checkpoint + labeled set D_l -> neuron masks artifact.

Eq. 5 on the QA loss L_QA (media -> ``<q>Q<q><a>A<a>``) over the whole labeled set, then Eq. 6
top-K per row. Computed once, in one process (D_l is small), before distillation starts, and
saved to the run dir; every DDP rank then loads the same file, so masks cannot differ by rank.

:func:`run_scoring_task` runs it as a Ray task on a worker with ``mask.scoring_gpus`` GPUs (never
in the driver, which on a cluster is a CPU head): the model, the float32 score sums (one per scored
weight, accumulated layer by layer in backward) and the top-K all stay on that worker, which writes
the mask artifact itself and returns only the density summary.
"""
from __future__ import annotations

from pydantic import Field

from leaml.config import StrictModel
from leaml.records import VQAExample, load_records
from leaml.train.config import MaskSettings, MediaCaps
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
    media: MediaCaps = MediaCaps()
    """Pixel caps of the processor (the generator's own, so scores see the items training sees)."""


def run_scoring(cfg: ScoringConfig) -> dict:
    """Compute and save the masks; returns the density summary."""
    from leaml.models.builders import load_model
    from leaml.train.loop import MediaBatcher, target_loss
    from leaml.train.masks import accumulate_importance, compute_masks, eligible_linears, mask_summary, save_masks

    model, processor = load_model(cfg.init_model, dtype=cfg.mask.scoring_dtype, device=cfg.device, caps=cfg.media)
    linears = eligible_linears(model, cfg.mask.include, cfg.mask.exclude)
    if not linears:
        raise ValueError(f"no linear layer matches include={cfg.mask.include} exclude={cfg.mask.exclude}; "
                         f"module names look like {[n for n, _ in model.named_modules()][1:4]}")
    items = qa_items(load_records(cfg.labeled, VQAExample), cfg.media_root)
    check_text_caps(items, processor.tokenizer, cfg.media)
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


def check_text_caps(items, tokenizer, caps: MediaCaps) -> None:
    """Refuse the first item whose text (every turn's prompt + target) is above ``caps.max_text_tokens``."""
    from leaml.models.builders import check_item_tokens

    for it in items:
        n = sum(len(tokenizer(p + t, add_special_tokens=False)["input_ids"]) for p, t in it.conversation)
        check_item_tokens(it.media.id, n, caps)


def run_scoring_task(cfg: ScoringConfig, engine: str = "ray", ray_address: str | None = None) -> dict:
    """:func:`run_scoring` as a Ray task with ``mask.scoring_gpus`` GPUs and ``mask.scoring_cpus``
    CPUs (``engine="local"``: in this process); returns the density summary."""
    if engine == "local":
        return run_scoring(cfg)
    import ray

    from leaml.jobs import init_ray

    init_ray(ray_address)
    task = ray.remote(num_gpus=cfg.mask.scoring_gpus, num_cpus=cfg.mask.scoring_cpus, max_retries=1)(_score_remote)
    return ray.get(task.remote(cfg.model_dump()))


def _score_remote(cfg: dict) -> dict:
    summary = run_scoring(ScoringConfig.model_validate(cfg))
    summary["worker"] = _where()
    return summary


def _where() -> dict:
    import os

    import ray

    ctx = ray.get_runtime_context()
    return {"pid": os.getpid(), "node": ctx.get_node_id(), "gpus": ray.get_gpu_ids()}
