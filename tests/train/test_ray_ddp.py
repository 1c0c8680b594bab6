"""Masked-gradient DDP under Ray Train (gloo, 2 workers, local Ray): frozen entries never move on
any rank, DDP equals one process on the same global batches, and a crashed run resumes."""
from __future__ import annotations

import pytest
import torch

from leaml.models.builders import load_model
from leaml.train.loop import TrainJob, train_loop_per_worker
from leaml.train.masks import load_masks
from leaml.train.ray_trainer import run_training
from leaml.train.scoring import ScoringConfig, run_scoring

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def fail_marker(tmp_path_factory):
    """The failure switch workers read: the marker file present = disarmed (already failed once)."""
    marker = tmp_path_factory.mktemp("fault") / "failed-once"
    marker.write_text("disarmed")
    return marker


@pytest.fixture(scope="module")
def ray_local(fail_marker):
    import ray

    # Workers get their environment from the runtime env fixed at init, not from later setenv.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"LEAML_FAIL_ONCE_AT_STEP": f"3:{fail_marker}"}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def masks(tiny_world, tiny_base, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("masks"))
    run_scoring(ScoringConfig(init_model=tiny_base, labeled=f"{tiny_world}/labeled.jsonl",
                              media_root=tiny_world, out=out, mask={"k": 0.2}))
    return out


def job(tiny_world, tiny_base, out, masks, workers, batch_size, steps=3, **train):
    return TrainJob.model_validate({
        "name": f"ddp-{workers}", "init_model": tiny_base, "out_dir": str(out), "masks": masks,
        "train": {"objective": "qa_generator", "method": "masked", "max_steps": steps, "warmup_steps": 0,
                  "batch_size": batch_size, "lr": 1e-2, "weight_decay": 0.1, "report_every": 1,
                  "scaling": {"num_workers": workers, "cpus_per_worker": 0.5}, **train},
        "data": [{"kind": "qa", "uri": f"{tiny_world}/labeled.jsonl", "media_root": tiny_world}],
    })


def params(uri):
    return dict(load_model(uri)[0].named_parameters())


def test_two_worker_ddp_moves_only_masked_entries_and_matches_one_process(ray_local, tiny_world, tiny_base,
                                                                          masks, tmp_path):
    run_training(job(tiny_world, tiny_base, tmp_path / "ddp", masks, workers=2, batch_size=2),
                 engine="ray", storage_path=str(tmp_path / "ray"))
    train_loop_per_worker(job(tiny_world, tiny_base, tmp_path / "single", masks, workers=1, batch_size=4).model_dump())
    ddp, single, base = params(str(tmp_path / "ddp")), params(str(tmp_path / "single")), params(tiny_base)
    by_weight = {f"{n}.weight": m for n, m in load_masks(masks).items()}
    for name, p0 in base.items():
        m = by_weight.get(name, torch.zeros_like(p0, dtype=torch.bool))
        assert torch.equal(ddp[name][~m], p0[~m]), f"{name}: a frozen entry moved under DDP"
    assert all(not torch.equal(ddp[n][m], base[n][m]) for n, m in by_weight.items() if m.any())
    worst = max((ddp[n] - single[n]).abs().max().item() for n in base)
    assert worst < 1e-4, f"DDP (2x2) and one process (1x4) differ by {worst}"


def test_worker_failure_resumes_from_checkpoint(ray_local, fail_marker, tiny_world, tiny_base, masks, tmp_path):
    marker = fail_marker
    marker.unlink()  # arm: the first attempt crashes after step 3, FailureConfig restarts it
    j = job(tiny_world, tiny_base, tmp_path / "resumed", masks, workers=2, batch_size=2, steps=4,
            checkpoint_every=2)
    metrics = run_training(j, engine="ray", storage_path=str(tmp_path / "ray"))
    assert marker.exists(), "the injected failure did not happen"
    assert metrics["step"] == 4 and metrics["resumed_from"] == 2  # restarted from step 2's checkpoint
    straight = job(tiny_world, tiny_base, tmp_path / "straight", masks, workers=1, batch_size=4, steps=4)
    train_loop_per_worker(straight.model_dump())
    a, b = params(str(tmp_path / "resumed")), params(str(tmp_path / "straight"))
    assert max((a[n] - b[n]).abs().max().item() for n in a) < 1e-4
