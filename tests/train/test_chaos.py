"""Chaos under Ray Train (local Ray, 2 gloo workers, slow): a worker process SIGKILLed mid-fit
(no exception, no cleanup) is replaced, the fit resumes from its last checkpoint, and the final
weights equal an undisturbed run's on the same global batches."""
from __future__ import annotations

import time

import pytest

from leaml.models.builders import load_model
from leaml.train.loop import TrainJob, train_loop_per_worker
from leaml.train.ray_trainer import run_training

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def job(tiny_world, tiny_base, out, workers, batch_size):
    return TrainJob.model_validate({
        "name": "chaos", "init_model": tiny_base, "out_dir": str(out),
        "train": {"objective": "qa_generator", "method": "full", "max_steps": 4, "warmup_steps": 0,
                  "batch_size": batch_size, "lr": 1e-2, "report_every": 1, "checkpoint_every": 2,
                  "scaling": {"num_workers": workers, "cpus_per_worker": 0.5, "max_failures": 1}},
        "data": [{"kind": "qa", "uri": f"{tiny_world}/labeled.jsonl", "media_root": tiny_world}],
    })


@pytest.mark.timeout(900)
def test_sigkilled_worker_resumes_from_its_last_checkpoint_to_the_same_weights(tiny_world, tiny_base, tmp_path,
                                                                                capsys):
    import ray

    marker = tmp_path / "killed-once"
    # only Ray's workers get the drill: the undisturbed run below is this process
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"LEAML_KILL_ONCE_AT_STEP": f"3:{marker}"}})
    try:
        t0 = time.perf_counter()
        metrics = run_training(job(tiny_world, tiny_base, tmp_path / "killed", 2, 2), engine="ray",
                               storage_path=str(tmp_path / "ray"))
        seconds = time.perf_counter() - t0
    finally:
        ray.shutdown()
    assert marker.exists(), "no worker was killed"
    assert metrics["step"] == 4 and metrics["resumed_from"] == 2  # step 2's checkpoint, not step 0
    train_loop_per_worker(job(tiny_world, tiny_base, tmp_path / "straight", 1, 4).model_dump())
    a = dict(load_model(str(tmp_path / "killed"))[0].named_parameters())
    b = dict(load_model(str(tmp_path / "straight"))[0].named_parameters())
    assert max((a[n] - b[n]).abs().max().item() for n in a) < 1e-4
    with capsys.disabled():
        print(f"\n[chaos] SIGKILL of a Ray Train worker at step 3 of 4: fit with restart took {seconds:.0f}s")
