"""Neuron scoring as a Ray task: it runs on a worker process (not the driver), writes the mask
artifact there, and gives the same masks as scoring in this process; the per-layer accumulation
(post-accumulate hooks) gives the same scores as one ``autograd.grad`` over every weight."""
from __future__ import annotations

import os

import pytest
import torch

from leaml.train.masks import accumulate_importance, load_masks
from leaml.train.scoring import ScoringConfig, run_scoring, run_scoring_task


def _cfg(tiny_world, tiny_base, out) -> ScoringConfig:
    # fractional CPUs: the 2-core test machine keeps room for Ray's own workers
    return ScoringConfig(init_model=tiny_base, labeled=f"{tiny_world}/labeled.jsonl", media_root=tiny_world,
                         out=str(out), mask={"k": 0.1, "scoring_cpus": 0.5, "scoring_batch_size": 4})


@pytest.mark.ray
def test_scoring_runs_as_a_remote_task_and_matches_local(tiny_world, tiny_base, tmp_path):
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_scoring_task(_cfg(tiny_world, tiny_base, tmp_path / "remote"), engine="ray")
    finally:
        ray.shutdown()
    assert remote["worker"]["pid"] != os.getpid()  # computed in a Ray worker, not in the driver
    assert remote["worker"]["gpus"] == []  # scoring_gpus 0: a CPU task
    local = run_scoring_task(_cfg(tiny_world, tiny_base, tmp_path / "local"), engine="local")
    assert remote["selected"] == local["selected"] and remote["n_labeled"] == local["n_labeled"]
    got, want = load_masks(str(tmp_path / "remote")), load_masks(str(tmp_path / "local"))
    assert got.keys() == want.keys() and all(torch.equal(got[n], want[n]) for n in want)


def test_per_layer_accumulation_equals_one_gradient_over_all_weights():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    params = {"0": model[0].weight, "2": model[2].weight}
    batches = [(torch.randn(n, 6), torch.randn(n, 3)) for n in (3, 5, 2)]

    def loss_fn(m, batch):
        x, y = batch
        return ((m(x) - y) ** 2).mean(), len(x)

    got = accumulate_importance(model, batches, loss_fn, params)
    want = {n: torch.zeros_like(p) for n, p in params.items()}
    for batch in batches:
        loss, n = loss_fn(model, batch)
        for name, g in zip(params, torch.autograd.grad(loss, list(params.values()))):
            want[name] += g * n
    for name in params:
        torch.testing.assert_close(got[name], (want[name] / 10).abs())
    assert all(p.grad is None for p in model.parameters())  # nothing left behind


def test_bf16_scoring_selects_nearly_the_fp32_masks(tiny_world, tiny_base, tmp_path):
    base = _cfg(tiny_world, tiny_base, tmp_path / "fp32")
    run_scoring(base)
    bf16 = base.model_copy(update={"out": str(tmp_path / "bf16"),
                                   "mask": base.mask.model_copy(update={"scoring_dtype": "bfloat16"})})
    run_scoring(bf16)
    a, b = load_masks(base.out), load_masks(bf16.out)
    same = sum(int((a[n] & b[n]).sum()) for n in a) / sum(int(a[n].sum()) for n in a)
    print(f"bf16 scoring keeps {100 * same:.1f}% of the fp32 selection")
    assert same > 0.8  # the same K per row; only near-ties swap


def test_an_item_over_the_text_cap_stops_scoring_by_name(tiny_world, tiny_base, tmp_path):
    from leaml.models.builders import MediaCapError

    from leaml.train.config import MediaCaps

    cfg = _cfg(tiny_world, tiny_base, tmp_path).model_copy(update={"media": MediaCaps(max_text_tokens=3)})
    with pytest.raises(MediaCapError, match=r"item '.+': \d+ text tokens, above media.max_text_tokens=3"):
        run_scoring(cfg)
    assert not (tmp_path / "masks.safetensors").exists()
