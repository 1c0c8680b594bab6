"""Typed settings of the one training loop: objective, update method, optimisation, scaling."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from leaml.config import StrictModel

Objective = Literal["qa_generator", "vqa", "pretrain"]
Method = Literal["full", "lora", "masked", "masked_sparse"]


class MediaCaps(StrictModel):
    """Token caps on what one item puts into a model: pixels per frame and text tokens.

    Qwen2.5-VL's processor allows 12.8 M pixels per frame (~16k tokens) by default, the most
    reported cause of VLM OOMs; every stage that loads a processor applies these caps
    (:func:`apply_media_caps`), and the memory plan (``leaml plan``) sizes activations by them.
    Frames per clip are each stage's ``num_frames``.
    """

    max_pixels: int | None = Field(None, ge=1)
    """Pixels per frame after resizing (larger frames are scaled down); None = the processor's own.
    Qwen2.5-VL: one LLM token per 28x28 pixels, so 401408 = 512 tokens a frame."""
    min_pixels: int | None = Field(None, ge=1)
    """Smaller frames are scaled up to this many pixels; None = the processor's own."""
    max_text_tokens: int = Field(512, ge=1)
    """Prompt + target text tokens of one item; an item above it is refused (:func:`check_item_tokens`)."""

    @model_validator(mode="after")
    def _ordered(self) -> "MediaCaps":
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) must be <= max_pixels ({self.max_pixels})")
        return self


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
    scoring_dtype: Literal["float32", "bfloat16"] = "float32"
    """Weights of the scoring forward/backward. Score sums are float32 either way; bfloat16 halves
    the weights on a GPU (the scores are a mean of gradients: bf16 rounding only reorders near-ties)."""
    scoring_gpus: float = Field(0.0, ge=0)
    """GPUs of the Ray task that scores (0 = CPU). The task runs on a worker, never in the driver."""
    scoring_cpus: float = Field(1.0, gt=0)
    """CPUs of the scoring task (fractional on small machines)."""


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
    freeze: list[str] = []
    """full only: qualified-name substrings of parameters kept fixed (e.g. ``visual.blocks``
    while a pretrained tower's connector and language model are aligned to it)."""
    pack_by_media: bool = False
    """vqa sources: all QA pairs of one media item in one multi-turn sequence (loss on the answers
    only), so the item is encoded once per step instead of once per question."""
    max_turns: int = Field(8, ge=1)
    """Most QA pairs packed into one sequence (longer lists are split into several items)."""
    turn_order: Literal["shuffled", "as_written"] = "shuffled"
    """Packed sequences: their turns in a new seeded order each epoch, or in the records' order.
    Evaluation asks one question at a time, as the first turn; in the records' order every sport
    clip's first turn asks its sport, and a fully supervised student answered "soccer" to 65% of
    the carrier-role questions (docs/CALIBRATION.md round 11)."""
    lora: LoraSettings = LoraSettings()
    mask: MaskSettings = MaskSettings()
    scaling: ScalingSettings = ScalingSettings()
    report_every: int = Field(25, ge=1)
    """Steps between progress reports (ray.train.report costs ~1.5 s: not every step)."""
    checkpoint_every: int = Field(0, ge=0)
    """Steps between resumable checkpoints (0 = only at the end)."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16: autocast the forward to bfloat16 (GPUs), and, where the method trains a separate copy
    (lora: adapters, masked_sparse: the selected entries, both kept fp32), the frozen weights are
    stored in bf16. full and masked update the weights themselves, so those stay fp32: an AdamW step
    at lr 1e-5 changes a weight by ~1e-5 of its size, below bf16's resolution (2^-8), and would be
    rounded away. fp32: everything fp32 (the CPU default)."""
    activation_checkpointing: bool = False
    """Recompute each decoder layer in backward (``gradient_checkpointing_enable``): activations drop
    from every layer's intermediates to one layer input per layer, for ~1/3 more compute."""
    media: MediaCaps = MediaCaps()
    """Pixel and text caps of every item (the plan sizes activations by them)."""
    seed: int = 0
    num_frames: int = Field(8, ge=1)
    """Frames per video item."""

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if self.warmup_steps >= self.max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be < max_steps ({self.max_steps})")
        if self.freeze and self.method != "full":
            raise ValueError(f"train.freeze applies to method 'full' only, not {self.method!r}")
        if self.k_is_fraction and self.mask.k > 1:
            raise ValueError("mask.k must be an integer count >= 1 or a fraction in (0, 1)")
        return self

    @property
    def k_is_fraction(self) -> bool:
        return self.mask.k < 1 or not float(self.mask.k).is_integer()
