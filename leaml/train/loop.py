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

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
"""Training state is tensors (safetensors) + everything else (JSON): nothing in a checkpoint is
unpickled, so whoever can write the bucket cannot run code on the workers."""
LEGACY_STATE_FILE = "trainer_state.pt"
STATE_FORMAT = 2
"""1: every trainable tensor whole, beside an ``hf_model/`` export; 2: selected entries only, no export."""


class TrainJob(StrictModel):
    name: str = Field("train", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    """Run name (Ray Train RunConfig name, suffixed with the fingerprint; one path component, so
    it can never point outside storage_path)."""
    train: TrainConfig = TrainConfig()
    init_model: str
    """Checkpoint to start from (local dir or s3:// prefix in Hugging Face format)."""
    out_dir: str
    """Where the final Hugging Face checkpoint is written (local or s3://)."""
    data: list[DataSpec] = Field(min_length=1)
    masks: str | None = None
    """Neuron-mask artifact (safetensors) for the masked methods."""
    local_checkpoint_dir: str | None = None
    """Single-process runs: where resumable checkpoints go (default ``<out_dir>.ckpt``); they sit
    in a subfolder named by the job's fingerprint."""
    fingerprint: str | None = Field(None, pattern=r"^[0-9a-f]{16,64}$")
    """What the job trains (settings + content digests of its model, data and masks): the resume
    key. None: computed from the job (``run_training`` sets it once, in the driver)."""


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
    model, processor = load_model(job.init_model, device=str(device), caps=cfg.media)
    method = setup_method(model, cfg, job.masks)
    method.processor = processor
    train_model = _wrap_ddp(method.model, ctx, method.ddp_kwargs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(method.optimizer, _cosine_with_warmup(cfg))
    shuffle_turns = cfg.pack_by_media and cfg.turn_order == "shuffled"
    streams = [BatchStream(load_items(s, cfg.max_turns if cfg.pack_by_media else 1), cfg.batch_size, cfg.seed + i,
                           ctx.rank, ctx.world_size, shuffle_turns) for i, s in enumerate(job.data)]
    start, metrics = _resume(job, ctx, method, scheduler)
    batcher = MediaBatcher(processor, cfg.num_frames, device)
    progress, meter = _Progress(cfg, ctx, start), _Throughput()
    for step in range(start, cfg.max_steps):
        torch.manual_seed(_step_seed(cfg.seed, step, ctx.rank))  # dropout: the same after a resume
        t0 = time.perf_counter()
        train_model.train()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            losses, tokens = _step_losses(train_model, batcher, job.data, streams, step)
        total = sum(w * l for w, l in losses.values())
        total.backward()
        grad_norm = method.clip_and_step(cfg.grad_clip)
        scheduler.step()
        method.optimizer.zero_grad(set_to_none=True)
        metrics = {"step": step + 1, "resumed_from": start, "loss": total.item(), "grad_norm": float(grad_norm),
                   "lr": scheduler.get_last_lr()[0], **{f"loss_{k}": l.item() for k, (_, l) in losses.items()}}
        metrics |= meter.add(time.perf_counter() - t0, int(tokens))  # after .item(): the step has finished
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
    if spec:
        at, _, marker = spec.partition(":")
        if step == int(at) and marker and not os.path.exists(marker):
            Path(marker).write_text(str(step))
            raise RuntimeError(f"injected failure after step {step}")
    _maybe_kill_self(step, os.environ.get("LEAML_KILL_ONCE_AT_STEP"))


def _maybe_kill_self(step: int, spec: str | None) -> None:
    """Chaos drills: ``LEAML_KILL_ONCE_AT_STEP=<step>:<marker file>`` SIGKILLs the first worker
    process to finish that step (no exception, no cleanup: as the OOM killer or a lost spot node
    would); creating the marker exclusively picks that one worker and disarms the drill."""
    if not spec:
        return
    at, _, marker = spec.partition(":")
    if step == int(at) and marker:
        kill_self_once(marker)


def kill_self_once(marker: str) -> None:
    """SIGKILL this process unless ``marker`` exists: it is created exclusively first, so exactly
    one process dies, once, however many workers, replicas or actors get there."""
    import os
    import signal

    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def _step_seed(seed: int, step: int, rank: int) -> int:
    """The RNG seed of one step on one rank: a function of (seed, step, rank) alone, so a resumed
    run draws the same dropout masks as an uninterrupted one (the RNG state is not checkpointed)."""
    import hashlib

    return int.from_bytes(hashlib.blake2b(f"{seed}:{step}:{rank}".encode(), digest_size=8).digest(), "little") >> 1


def _due(step: int, every: int, last: int) -> bool:
    return step == last or (every > 0 and step % every == 0)


def _cosine_with_warmup(cfg: TrainConfig):
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _wrap_ddp(model: torch.nn.Module, ctx: WorkerContext, ddp_kwargs: dict | None = None) -> torch.nn.Module:
    """DDP with the method's own arguments (``MethodSetup.ddp_kwargs``: gradients as views of the
    all-reduce buckets, so DDP keeps no second copy of them; no buffer sync for masked_sparse)."""
    if ctx.world_size <= 1:
        return model
    import ray.train.torch

    # find_unused_parameters: a batch without video leaves some vision parameters unused.
    kwargs = {"find_unused_parameters": True, **(ddp_kwargs or {})}
    return ray.train.torch.prepare_model(model, parallel_strategy_kwargs=kwargs)


class MediaBatcher:
    """TrainItems -> model inputs with labels masked to the target tokens (media decoded once)."""

    def __init__(self, processor, num_frames: int, device: torch.device | str = "cpu"):
        self.processor, self.num_frames, self.device = processor, num_frames, torch.device(device)
        self._media: dict[tuple[str, str], list] = {}

    def __call__(self, items: list[TrainItem]) -> dict[str, torch.Tensor]:
        from leaml.models.batching import encode_conversations

        media = [self._frames(it) for it in items]
        inputs = encode_conversations(self.processor, media, [it.conversation for it in items])
        return {k: v.to(self.device) if hasattr(v, "to") else v for k, v in inputs.items()}

    def _frames(self, item: TrainItem) -> list:
        from leaml.media import load_media

        key = (item.media_root, item.media.uri)
        if key not in self._media:
            self._media[key] = load_media(item.media, num_frames=self.num_frames, root=item.media_root or None)
        return self._media[key]


def _step_losses(model, batcher: MediaBatcher, specs: list[DataSpec], streams: list[BatchStream],
                 step: int) -> tuple[dict, torch.Tensor | int]:
    """({source: (weight, loss)}, real (unpadded) tokens this rank put through the model; a device
    tensor, read once the step is done, so counting costs no extra synchronisation)."""
    losses, tokens = {}, 0
    for i, (spec, stream) in enumerate(zip(specs, streams)):
        if step % spec.every or spec.weight == 0:
            continue
        inputs = batcher(stream.batch_at(step // spec.every))
        tokens = tokens + inputs["attention_mask"].sum()
        losses[f"{spec.kind}{i if i else ''}"] = (spec.weight, target_loss(model, inputs))
    return losses, tokens


def target_loss(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over QA pairs (targets) of each one's per-token mean NLL (labels != -100). A packed row
    holds several pairs, told apart by ``label_turns``: packed or not, every pair weighs the same."""
    labels, turns = inputs["labels"], inputs.get("label_turns")
    logits = model(**{k: v for k, v in inputs.items() if k not in ("labels", "label_turns")}).logits
    shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(shift_logits.transpose(1, 2), shift_labels.clamp(min=0), reduction="none")
    mask = shift_labels != -100
    if turns is None:
        per_example = (nll * mask).sum(1) / mask.sum(1).clamp(min=1)
        return per_example.mean()
    turn = turns[:, 1:][mask]
    n = int(turn.max()) + 1 if turn.numel() else 1
    sums = torch.zeros(n, device=nll.device).index_add_(0, turn, nll[mask])
    counts = torch.zeros(n, device=nll.device).index_add_(0, turn, torch.ones_like(nll[mask]))
    return (sums / counts.clamp(min=1)).mean()


class _Throughput:
    """Step time and tokens/s of this worker, over this process's steps after its first (which pays
    for lazy initialisation: kernels, allocator, media decoding of the first batches)."""

    def __init__(self):
        self.steps, self.seconds, self.tokens = 0, 0.0, 0

    def add(self, seconds: float, tokens: int) -> dict:
        self.steps += 1
        if self.steps > 1:
            self.seconds, self.tokens = self.seconds + seconds, self.tokens + tokens
        mean = self.seconds / (self.steps - 1) if self.steps > 1 else seconds
        rate = self.tokens / self.seconds if self.seconds > 0 else tokens / max(seconds, 1e-9)
        return {"step_time_s": seconds, "tokens": tokens, "mean_step_time_s": mean, "tokens_per_s": rate}


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
# Checkpoints: what the method trains and nothing else (MethodSetup.checkpoint_state: all
# parameters for full, the adapters for lora, the selected entries for masked / masked_sparse, each
# with its optimizer state) + scheduler + step. Resume rebuilds the training form from init_model
# and the job's masks exactly as at the start and loads that state into it. The whole model is
# written once, by the final export (export_checkpoint makes one of a mid-run checkpoint).


def _save_state(dirpath: Path, method, scheduler, metrics: dict, fingerprint: str = "") -> None:
    from safetensors.torch import save_file

    params, optimizer = method.checkpoint_state()  # only what the method trains (see methods.py)
    tensors: dict[str, torch.Tensor] = {}
    tree = _split_tensors({"trainable": params, "optimizer": optimizer}, "", tensors)
    dirpath.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dirpath / STATE_TENSORS))
    meta = {"format": STATE_FORMAT, "fingerprint": fingerprint, "step": metrics["step"], "metrics": metrics,
            "selected_entries_of": sorted(method.selections), "state": tree,
            "scheduler": _json_safe(scheduler.state_dict())}
    (dirpath / STATE_JSON).write_text(json.dumps(meta))  # last: its presence marks a whole checkpoint


def _load_state(dirpath: Path, method, scheduler, fingerprint: str = "") -> tuple[int, dict]:
    from safetensors.torch import load_file

    if not (dirpath / STATE_JSON).exists():
        return _load_legacy_state(dirpath, method, scheduler)
    meta = json.loads((dirpath / STATE_JSON).read_text())
    if fingerprint and meta.get("fingerprint") != fingerprint:
        raise ValueError(f"checkpoint {dirpath.name} belongs to job {str(meta.get('fingerprint'))[:12]}, "
                         f"not {fingerprint[:12]}: refusing to resume another job's state")
    if meta.get("format", 1) >= 2 and meta.get("selected_entries_of", []) != sorted(method.selections):
        raise ValueError(f"checkpoint {dirpath.name} holds the selected entries of other weights than this "
                         f"job's masks select: refusing to scatter them")
    state = _join_tensors(meta["state"], load_file(str(dirpath / STATE_TENSORS)))
    _apply_state(method, scheduler, state["trainable"], state["optimizer"], meta["scheduler"])
    return int(meta["step"]), meta.get("metrics", {})


def _load_legacy_state(dirpath: Path, method, scheduler) -> tuple[int, dict]:
    """A checkpoint of the old single-file format: read with ``weights_only=True``, which refuses
    any pickle that names a callable (a crafted ``__reduce__`` is an UnpicklingError, never run)."""
    state = torch.load(dirpath / LEGACY_STATE_FILE, map_location="cpu", weights_only=True)
    _apply_state(method, scheduler, state["trainable"], state["optimizer"], state["scheduler"])
    return int(state["step"]), state.get("metrics", {})


def _apply_state(method, scheduler, trainable: dict, optimizer: dict, sched: dict) -> None:
    method.load_checkpoint_state(trainable, optimizer)
    scheduler.load_state_dict(sched)


def _split_tensors(obj, path: str, tensors: dict[str, torch.Tensor]):
    """A state tree -> JSON (each tensor replaced by ``{"__tensor__": key}``, stored in ``tensors``).
    Dicts keep non-string keys (optimizer state is keyed by int) as ``{"__items__": [[k, v], ...]}``."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous()
        return {"__tensor__": path}
    if isinstance(obj, dict):
        return {"__items__": [[k, _split_tensors(v, f"{path}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [_split_tensors(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"training state holds a {type(obj).__name__} at {path or '/'}: not storable without pickle")


def _join_tensors(tree, tensors: dict[str, torch.Tensor]):
    if isinstance(tree, list):
        return [_join_tensors(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__tensor__" in tree:
        return tensors[tree["__tensor__"]]
    if "__tuple__" in tree:
        return tuple(_join_tensors(v, tensors) for v in tree["__tuple__"])
    return {k: _join_tensors(v, tensors) for k, v in tree["__items__"]}


def _json_safe(state: dict) -> dict:
    """A scheduler's state_dict as JSON: LambdaLR keeps None for plain-function lambdas; anything
    that is not plain data would need pickle, so it is refused here rather than at load."""
    json.dumps(state)
    return state


def _local_ckpt_root(job: TrainJob) -> str:
    """``<out_dir>.ckpt/<fingerprint>``: a job whose settings or inputs changed finds no checkpoint."""
    return storage.join(job.local_checkpoint_dir or (job.out_dir.rstrip("/") + ".ckpt"), _job_fingerprint(job))


def _job_fingerprint(job: TrainJob) -> str:
    from leaml.fingerprint import job_fingerprint

    # run_training sets it once in the driver; a direct call (tests, debugging) digests the inputs
    # here, which is cheap: file digests are cached by (size, mtime)
    return job.fingerprint or job_fingerprint(job)


def _resume(job: TrainJob, ctx: WorkerContext, method, scheduler) -> tuple[int, dict]:
    """(step to start at, metrics of that step) from the latest whole checkpoint of this job;
    (0, {}) when none."""
    fingerprint = _job_fingerprint(job)
    dirs = _ray_checkpoint_dirs() if ctx.under_ray else _state_dirs(_local_ckpt_root(job))
    for step_dir in _newest_first(dirs, fingerprint):
        with tempfile.TemporaryDirectory() as d:
            _fetch_state(step_dir, Path(d))
            try:
                step, metrics = _load_state(Path(d), method, scheduler, fingerprint)
            except Exception as e:  # noqa: BLE001 - cut short by a kill mid-upload: take the one before
                print(f"[train] checkpoint {step_dir} is unreadable ({type(e).__name__}); trying an older one",
                      flush=True)
                continue
        if ctx.rank == 0:
            print(f"[train] resumed at step {step}", flush=True)
        return step, metrics
    if ctx.under_ray:  # a storage this scan cannot list: Ray's own record of the latest checkpoint
        return _resume_from_ray_record(method, scheduler, fingerprint, ctx)
    return 0, {}


def _fetch_state(step_dir: str, local: Path) -> None:
    for name in (STATE_JSON, STATE_TENSORS):
        storage.write_bytes(str(local / name), storage.read_bytes(storage.join(step_dir, name)))


def export_checkpoint(job: TrainJob | dict, step_dir: str, out_uri: str) -> int:
    """A resumable checkpoint (local or s3:// folder) -> a Hugging Face model in ``out_uri``, merged
    like the final export; returns its step. Checkpoints hold only what the method trains, so this
    is how a mid-run one is evaluated: the base model and masks are set up as the run did, then the
    checkpoint's state is loaded into them."""
    from leaml.models.builders import load_model
    from leaml.train.methods import setup_method

    job = TrainJob.model_validate(job) if isinstance(job, dict) else job
    model, processor = load_model(job.init_model, caps=job.train.media)
    method = setup_method(model, job.train, job.masks)
    scheduler = torch.optim.lr_scheduler.LambdaLR(method.optimizer, _cosine_with_warmup(job.train))
    with tempfile.TemporaryDirectory() as d:
        _fetch_state(step_dir, Path(d))
        step, _ = _load_state(Path(d), method, scheduler, _job_fingerprint(job))
    method.export(out_uri, processor)
    return step


def _state_dirs(root: str) -> list[str]:
    return [f[: -len(STATE_JSON) - 1] for f in storage.list_files(root) if f.endswith("/" + STATE_JSON)]


def _ray_checkpoint_dirs() -> list[str]:
    """Every checkpoint folder of this Ray Train run in storage, whether or not the controller
    registered it: Ray Train V2 learns of a reported checkpoint when it next polls the workers
    (every 2 s), so a worker killed right after reporting leaves a whole checkpoint that
    ``get_checkpoint()`` does not know (measured: a SIGKILL at step 3 restarted from step 0)."""
    import ray.train

    st = ray.train.get_context().get_storage()
    root = st.experiment_fs_path
    if type(st.storage_filesystem).__name__ == "S3FileSystem":
        root = "s3://" + root.lstrip("/")
    elif type(st.storage_filesystem).__name__ != "LocalFileSystem":
        return []
    return [d for d in _state_dirs(root) if "/checkpoint_" in d]


def _newest_first(dirs: list[str], fingerprint: str) -> list[str]:
    """Checkpoint folders of this job, highest step first (their JSON is small: read them all)."""
    steps = []
    for d in dirs:
        try:
            meta = json.loads(storage.read_text(storage.join(d, STATE_JSON)))
        except (OSError, ValueError):
            continue
        if meta.get("fingerprint") == fingerprint:
            steps.append((int(meta["step"]), d))
    return [d for _, d in sorted(steps, reverse=True)]


def _resume_from_ray_record(method, scheduler, fingerprint: str, ctx: WorkerContext) -> tuple[int, dict]:
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return 0, {}
    with ckpt.as_directory() as d:
        step, metrics = _load_state(Path(d), method, scheduler, fingerprint)
    if ctx.rank == 0:
        print(f"[train] resumed at step {step}", flush=True)
    return step, metrics


def _upload_checkpoint(local: Path, dest: str) -> None:
    """Copy a checkpoint dir with its ``trainer_state.json`` last, so a copy cut short is never
    taken for a whole checkpoint."""
    files = sorted(p for p in local.rglob("*") if p.is_file())
    for p in sorted(files, key=lambda p: p.name == STATE_JSON):
        storage.write_bytes(storage.join(dest, str(p.relative_to(local))), p.read_bytes())


def _report(job: TrainJob, ctx: WorkerContext, method, scheduler, metrics: dict, with_checkpoint: bool) -> None:
    step = metrics["step"]
    if not ctx.under_ray:
        if with_checkpoint:
            with tempfile.TemporaryDirectory() as d:
                _save_state(Path(d), method, scheduler, metrics, _job_fingerprint(job))
                _upload_checkpoint(Path(d), storage.join(_local_ckpt_root(job), f"step-{step:07d}"))
        return
    import ray.train

    if not with_checkpoint:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if ctx.rank == 0:  # masks and weights are identical on every rank: one copy is enough
            _save_state(Path(d), method, scheduler, metrics, _job_fingerprint(job))
            checkpoint = ray.train.Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=checkpoint)
