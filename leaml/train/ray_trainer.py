"""A TrainJob -> a trained checkpoint, on Ray Train (DDP) or in this process.

Ray Train V2 has no ``resume_from_checkpoint``: a run resumes when it is started again under the
same ``RunConfig(name, storage_path)``; the loop then finds its checkpoint through
``ray.train.get_checkpoint()``. So the run name is ``<job.name>-<fingerprint[:16]>``: a job whose
settings or inputs changed (new pseudo pairs, another init model) starts a new run instead of
exporting the old run's finished checkpoint.
"""
from __future__ import annotations

from typing import Literal

from leaml.train.loop import TrainJob, train_loop_per_worker


def run_training(job: TrainJob, engine: Literal["ray", "local"] = "ray", storage_path: str | None = None,
                 ray_address: str | None = None) -> dict:
    """Train; returns the final metrics. ``storage_path`` holds Ray Train's run and checkpoints."""
    from leaml.fingerprint import job_fingerprint

    if job.fingerprint is None:  # once, in the driver: workers then agree on it without re-reading inputs
        job = job.model_copy(update={"fingerprint": job_fingerprint(job)})
    if engine == "local":
        return train_loop_per_worker(job.model_dump())
    return _run_on_ray(job, storage_path, ray_address)


def _run_on_ray(job: TrainJob, storage_path: str | None, ray_address: str | None) -> dict:
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from leaml.jobs import init_ray

    init_ray(ray_address)
    sc = job.train.scaling
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=job.model_dump(),
        torch_config=TorchConfig(backend="nccl" if sc.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=sc.num_workers, use_gpu=sc.use_gpu,
                                               resources_per_worker={"CPU": sc.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=run_name(job),
            storage_path=_storage_path(storage_path or job.out_dir.rstrip("/") + ".ray"),
            failure_config=ray.train.FailureConfig(max_failures=sc.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    return dict(result.metrics or {})


def run_name(job: TrainJob) -> str:
    """Ray Train's run name: the job's name and its fingerprint (the resume key)."""
    return f"{job.name}-{job.fingerprint[:16]}" if job.fingerprint else job.name


def _storage_path(path: str) -> str:
    """Ray wants an absolute local path or a URI."""
    from pathlib import Path

    return path if "://" in path else str(Path(path).resolve())
