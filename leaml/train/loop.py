"""The one training loop: a :class:`TrainJob` -> a Hugging Face checkpoint in ``job.out_dir``.

``train_loop_per_worker`` has Ray Train's shape: run it under ``TorchTrainer`` (see
:mod:`leaml.train.ray_trainer`) for DDP, or call it directly in one process (tests, debugging).
What changes per objective is only the data mixture (:class:`DataSpec` list); what changes per
method (full / LoRA / masked / masked_sparse) lives in :mod:`leaml.train.methods`.

Loss: for each source, the per-token mean NLL of each example's target tokens, averaged over the
batch's examples (so every rank's shard weighs the same and DDP equals one big batch), times the
source weight, summed over the sources drawn at this step (L_G = L_QA + w * L_C).
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import Field

from leaml import storage
from leaml.config import StrictModel
from leaml.train.config import TrainConfig
from leaml.train.data import BatchStream, DataSpec, TrainItem, load_items

STATE_FILE = "trainer_state.pt"


class TrainJob(StrictModel):
    name: str = "train"
    """Run name (Ray Train RunConfig name; resume looks for it under storage_path)."""
    train: TrainConfig = TrainConfig()
    init_model: str
    """Checkpoint to start from (local dir or s3:// prefix in Hugging Face format)."""
    out_dir: str
    """Where the final Hugging Face checkpoint is written (local or s3://)."""
    data: list[DataSpec] = Field(min_length=1)
    masks: str | None = None
    """Neuron-mask artifact (safetensors) for the masked methods."""
    local_checkpoint_dir: str | None = None
    """Single-process runs: where resumable checkpoints go (default ``<out_dir>.ckpt``)."""


@dataclass
class WorkerContext:
    rank: int = 0
    world_size: int = 1
    under_ray: bool = False


def _context() -> WorkerContext:
    try:
        import ray.train

        ctx = ray.train.get_context()
        return WorkerContext(ctx.get_world_rank(), ctx.get_world_size(), True)
    except Exception:  # noqa: BLE001 - not inside a Ray Train worker
        return WorkerContext()


def train_loop_per_worker(job_dict: dict) -> dict:
    """Train as configured; returns the final metrics (rank 0 has written ``out_dir``)."""
    from leaml.models.builders import load_model
    from leaml.train.methods import setup_method

    job = TrainJob.model_validate(job_dict)
    cfg, ctx = job.train, _context()
    if not cfg.scaling.use_gpu:
        torch.set_num_threads(cfg.scaling.torch_threads or max(1, int(cfg.scaling.cpus_per_worker)))
    torch.manual_seed(cfg.seed)
    device = _device(cfg, ctx)
    model, processor = load_model(job.init_model, device=str(device))
    method = setup_method(model, cfg, job.masks)
    method.processor = processor
    train_model = _wrap_ddp(method.model, ctx)
    scheduler = torch.optim.lr_scheduler.LambdaLR(method.optimizer, _cosine_with_warmup(cfg))
    streams = [BatchStream(load_items(s), cfg.batch_size, cfg.seed + i, ctx.rank, ctx.world_size)
               for i, s in enumerate(job.data)]
    start, metrics = _resume(job, ctx, method, scheduler)
    batcher = MediaBatcher(processor, cfg.num_frames, device)
    progress = _Progress(cfg, ctx, start)
    for step in range(start, cfg.max_steps):
        train_model.train()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            losses = _step_losses(train_model, batcher, job.data, streams, step)
        total = sum(w * l for w, l in losses.values())
        total.backward()
        grad_norm = method.clip_and_step(cfg.grad_clip)
        scheduler.step()
        method.optimizer.zero_grad(set_to_none=True)
        metrics = {"step": step + 1, "resumed_from": start, "loss": total.item(), "grad_norm": float(grad_norm),
                   "lr": scheduler.get_last_lr()[0], **{f"loss_{k}": l.item() for k, (_, l) in losses.items()}}
        progress.update(metrics)
        _maybe_inject_failure(step + 1)
        if _due(step + 1, cfg.checkpoint_every, cfg.max_steps) or _due(step + 1, cfg.report_every, cfg.max_steps):
            _report(job, ctx, method, scheduler, metrics, with_checkpoint=_due(step + 1, cfg.checkpoint_every, cfg.max_steps))
    if ctx.rank == 0:
        method.export(job.out_dir, processor)
        storage.write_text(storage.join(job.out_dir, "train_metrics.json"), json.dumps(metrics, indent=2))
    progress.close()
    return metrics


def _device(cfg: TrainConfig, ctx: WorkerContext) -> torch.device:
    if not cfg.scaling.use_gpu:
        return torch.device("cpu")
    if ctx.under_ray:
        import ray.train.torch

        return ray.train.torch.get_device()
    return torch.device("cuda")


def _maybe_inject_failure(step: int) -> None:
    """Fault injection for resume tests and drills: ``LEAML_FAIL_ONCE_AT_STEP=<step>:<marker file>``
    makes the run crash once after that step (the marker file records that it already did)."""
    import os

    spec = os.environ.get("LEAML_FAIL_ONCE_AT_STEP")
    if not spec:
        return
    at, _, marker = spec.partition(":")
    if step == int(at) and marker and not os.path.exists(marker):
        Path(marker).write_text(str(step))
        raise RuntimeError(f"injected failure after step {step}")


def _due(step: int, every: int, last: int) -> bool:
    return step == last or (every > 0 and step % every == 0)


def _cosine_with_warmup(cfg: TrainConfig):
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _wrap_ddp(model: torch.nn.Module, ctx: WorkerContext) -> torch.nn.Module:
    if ctx.world_size <= 1:
        return model
    import ray.train.torch

    # find_unused_parameters: a batch without video leaves some vision parameters unused.
    return ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})


class MediaBatcher:
    """TrainItems -> model inputs with labels masked to the target tokens (media decoded once)."""

    def __init__(self, processor, num_frames: int, device: torch.device | str = "cpu"):
        self.processor, self.num_frames, self.device = processor, num_frames, torch.device(device)
        self._media: dict[tuple[str, str], list] = {}

    def __call__(self, items: list[TrainItem]) -> dict[str, torch.Tensor]:
        from leaml.models.batching import encode_for_training

        media = [self._frames(it) for it in items]
        inputs = encode_for_training(self.processor, media, [it.prompt for it in items], [it.target for it in items])
        return {k: v.to(self.device) if hasattr(v, "to") else v for k, v in inputs.items()}

    def _frames(self, item: TrainItem) -> list:
        from leaml.media import load_media

        key = (item.media_root, item.media.uri)
        if key not in self._media:
            self._media[key] = load_media(item.media, num_frames=self.num_frames, root=item.media_root or None)
        return self._media[key]


def _step_losses(model, batcher: MediaBatcher, specs: list[DataSpec], streams: list[BatchStream], step: int) -> dict:
    losses = {}
    for i, (spec, stream) in enumerate(zip(specs, streams)):
        if step % spec.every or spec.weight == 0:
            continue
        inputs = batcher(stream.batch_at(step // spec.every))
        losses[f"{spec.kind}{i if i else ''}"] = (spec.weight, target_loss(model, inputs))
    return losses


def target_loss(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over examples of each example's per-token mean NLL on its target (labels != -100)."""
    labels = inputs["labels"]
    logits = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
    shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(shift_logits.transpose(1, 2), shift_labels.clamp(min=0), reduction="none")
    mask = (shift_labels != -100).float()
    per_example = (nll * mask).sum(1) / mask.sum(1).clamp(min=1)
    return per_example.mean()


class _Progress:
    """Loss and steps/s while it runs: a tqdm bar in one process, log lines from rank 0 under Ray."""

    def __init__(self, cfg: TrainConfig, ctx: WorkerContext, start: int):
        self.cfg, self.ctx, self.t0, self.start = cfg, ctx, time.perf_counter(), start
        self.bar = None
        if not ctx.under_ray:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=cfg.max_steps, initial=start, desc=f"train[{cfg.objective}/{cfg.method}]")

    def update(self, m: dict) -> None:
        rate = (m["step"] - self.start) / max(time.perf_counter() - self.t0, 1e-9)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{m['loss']:.3f}", it_s=f"{rate:.2f}")
        elif self.ctx.rank == 0 and (m["step"] % self.cfg.report_every == 0 or m["step"] == self.cfg.max_steps):
            print(f"[train {self.cfg.objective}/{self.cfg.method}] step {m['step']}/{self.cfg.max_steps} "
                  f"loss {m['loss']:.4f} {rate:.2f} steps/s", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------
# Checkpoints: trainable state (the training-form parameters, optimizer, scheduler, step) beside a
# Hugging Face export of the model. Resume rebuilds the training form from init_model exactly as
# at the start and loads the trainable state into it, whatever the method.


def _save_state(dirpath: Path, method, scheduler, metrics: dict) -> None:
    trainable = {n: p.detach().cpu() for n, p in method.model.named_parameters() if p.requires_grad}
    torch.save({"step": metrics["step"], "metrics": metrics, "trainable": trainable,
                "optimizer": method.optimizer.state_dict(), "scheduler": scheduler.state_dict()}, dirpath / STATE_FILE)
    method.export(str(dirpath / "hf_model"), method.processor)  # usable as is, e.g. to evaluate mid-run


def _load_state(dirpath: Path, method, scheduler) -> tuple[int, dict]:
    state = torch.load(dirpath / STATE_FILE, map_location="cpu", weights_only=False)
    params = dict(method.model.named_parameters())
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)
    method.optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"]), state.get("metrics", {})


def _local_ckpt_root(job: TrainJob) -> str:
    return job.local_checkpoint_dir or (job.out_dir.rstrip("/") + ".ckpt")


def _resume(job: TrainJob, ctx: WorkerContext, method, scheduler) -> tuple[int, dict]:
    """(step to start at, metrics of that step) from the latest checkpoint; (0, {}) when none."""
    if ctx.under_ray:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return 0, {}
        with ckpt.as_directory() as d:
            step, metrics = _load_state(Path(d), method, scheduler)
    else:
        done = sorted(f for f in storage.list_files(_local_ckpt_root(job)) if f.endswith(STATE_FILE))
        if not done:
            return 0, {}
        with tempfile.TemporaryDirectory() as d:
            storage.write_bytes(str(Path(d) / STATE_FILE), storage.read_bytes(done[-1]))
            step, metrics = _load_state(Path(d), method, scheduler)
    if ctx.rank == 0:
        print(f"[train] resumed at step {step}", flush=True)
    return step, metrics


def _report(job: TrainJob, ctx: WorkerContext, method, scheduler, metrics: dict, with_checkpoint: bool) -> None:
    step = metrics["step"]
    if not ctx.under_ray:
        if with_checkpoint:
            with tempfile.TemporaryDirectory() as d:
                _save_state(Path(d), method, scheduler, metrics)
                storage.upload_dir(d, storage.join(_local_ckpt_root(job), f"step-{step:07d}"))
        return
    import ray.train

    if not with_checkpoint:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if ctx.rank == 0:  # masks and weights are identical on every rank: one copy is enough
            _save_state(Path(d), method, scheduler, metrics)
            checkpoint = ray.train.Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=checkpoint)
