"""Typed settings of the one training loop: objective, update method, optimisation, scaling."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from leaml.config import StrictModel

Objective = Literal["qa_generator", "vqa", "pretrain"]
Method = Literal["full", "lora", "masked", "masked_sparse"]


class LoraSettings(StrictModel):
    r: int = Field(8, ge=1)
    """LoRA rank: higher = more capacity and memory."""
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    """Linear layer names to adapt (language-model linears in every supported backbone)."""


class MaskSettings(StrictModel):
    """Neuron selection (paper Eq. 5-6): top-K entries per row of each eligible linear weight."""

    k: float = Field(0.25, gt=0)
    """K per row: an integer >= 1 is a count (capped at the row length, as the paper's K=3000 on
    1536-wide rows must be); a value in (0, 1) is a fraction of the row."""
    include: list[str] = ["language_model"]
    """Qualified-name substrings of eligible linears (add "visual"/"vision_tower"/"projector" to
    let the vision side move too)."""
    exclude: list[str] = ["lm_head"]
    scoring_batch_size: int = Field(8, ge=1)
    """Batch size used to accumulate the mean QA gradient over the labeled set (result does not
    depend on it)."""


class ScalingSettings(StrictModel):
    num_workers: int = Field(1, ge=1)
    """Ray Train workers (DDP ranks)."""
    use_gpu: bool = False
    """GPU + NCCL when true; CPU + gloo otherwise."""
    cpus_per_worker: float = Field(1.0, gt=0)
    """Keep <= 1 on a 2-core machine so the trainer's own actor still fits."""
    max_failures: int = Field(1, ge=0)
    """Worker failures tolerated (restart from the latest checkpoint)."""
    torch_threads: int | None = Field(None, ge=1)
    """CPU intra-op threads per worker; None = floor(cpus_per_worker), at least 1. Tiny models on
    a small shared machine lose far more to thread oversubscription than they gain."""


class TrainConfig(StrictModel):
    """One config serves every objective; the mixture of data sources follows the objective."""

    objective: Objective = "vqa"
    """qa_generator: L_QA (+ caption_weight * L_C); vqa: L_VQA on answer tokens; pretrain: base
    model on the general domain (captions, VQA, QA writing)."""
    method: Method = "full"
    """full fine-tuning, LoRA (peft), masked (dense masked AdamW, the paper's way) or
    masked_sparse (gradient and AdamW state only for the selected entries)."""
    lr: float = Field(1e-4, gt=0)
    """Tiny CPU models want ~1e-3..1e-4; the paper used 1e-5 on 2B models."""
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(10, ge=0)
    max_steps: int = Field(200, ge=1)
    """Optimizer steps (cosine decay to 0 over them)."""
    batch_size: int = Field(8, ge=1)
    """Examples per source per step, per worker."""
    grad_clip: float = Field(1.0, gt=0)
    """Max global grad norm, over the trainable entries only."""
    caption_weight: float = Field(1.0, ge=0)
    """Weight of L_C in L_G = L_QA + w * L_C (qa_generator only; 0 disables distillation)."""
    caption_every: int = Field(1, ge=1)
    """Take a caption batch every N steps (the labeled:unlabeled sampling ratio)."""
    lora: LoraSettings = LoraSettings()
    mask: MaskSettings = MaskSettings()
    scaling: ScalingSettings = ScalingSettings()
    report_every: int = Field(25, ge=1)
    """Steps between progress reports (ray.train.report costs ~1.5 s: not every step)."""
    checkpoint_every: int = Field(0, ge=0)
    """Steps between resumable checkpoints (0 = only at the end)."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16: autocast the forward to bfloat16 (GPUs); weights, grads and AdamW state stay fp32."""
    seed: int = 0
    num_frames: int = Field(8, ge=1)
    """Frames per video item."""

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if self.warmup_steps >= self.max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be < max_steps ({self.max_steps})")
        if self.k_is_fraction and self.mask.k > 1:
            raise ValueError("mask.k must be an integer count >= 1 or a fraction in (0, 1)")
        return self

    @property
    def k_is_fraction(self) -> bool:
        return self.mask.k < 1 or not float(self.mask.k).is_integer()
