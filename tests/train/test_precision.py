"""``precision: bf16`` and ``activation_checkpointing`` through the one loop (via methods.py): which
weights become bf16 and which stay fp32 per method, checkpointing switched on, and a real bf16 +
checkpointed masked_sparse run on the tiny world that moves only selected entries."""
from __future__ import annotations

import pytest
import torch

from leaml.models.builders import load_model
from leaml.train.config import TrainConfig
from leaml.train.loop import TrainJob, train_loop_per_worker
from leaml.train.methods import setup_method
from leaml.train.scoring import ScoringConfig, run_scoring


@pytest.fixture(scope="module")
def masks(tiny_world, tiny_base, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("masks"))
    run_scoring(ScoringConfig(init_model=tiny_base, labeled=f"{tiny_world}/labeled.jsonl", media_root=tiny_world,
                              out=out, mask={"k": 0.1}))
    return out


@pytest.mark.parametrize("method", ["full", "lora", "masked_sparse"])
def test_bf16_stores_frozen_weights_in_bf16_and_trained_values_in_fp32(tiny_base, masks, method):
    model, _ = load_model(tiny_base)
    cfg = TrainConfig(method=method, precision="bf16", activation_checkpointing=True)
    setup = setup_method(model, cfg, masks if method == "masked_sparse" else None)
    trained = {p.dtype for p in setup.params}
    frozen = {p.dtype for p in setup.model.parameters() if not p.requires_grad}
    assert trained == {torch.float32}  # AdamW's master values: full's weights, adapters, sparse values
    assert frozen == (set() if method == "full" else {torch.bfloat16})
    base = setup.model.get_base_model() if method == "lora" else setup.model
    assert base.is_gradient_checkpointing


def test_fp32_changes_nothing(tiny_base):
    model, _ = load_model(tiny_base)
    setup = setup_method(model, TrainConfig(method="lora"))
    assert {p.dtype for p in setup.model.parameters()} == {torch.float32}
    assert not setup.model.get_base_model().is_gradient_checkpointing


def test_bf16_checkpointed_masked_sparse_trains_only_selected_entries(tiny_world, tiny_base, masks, tmp_path):
    from leaml.train.masks import load_masks

    job = TrainJob.model_validate({
        "init_model": tiny_base, "out_dir": str(tmp_path / "out"), "masks": masks,
        "train": {"objective": "qa_generator", "method": "masked_sparse", "max_steps": 2, "warmup_steps": 0,
                  "batch_size": 4, "lr": 1e-2, "report_every": 1, "precision": "bf16",
                  "activation_checkpointing": True},
        "data": [{"kind": "qa", "uri": f"{tiny_world}/labeled.jsonl", "media_root": tiny_world}],
    })
    metrics = train_loop_per_worker(job.model_dump())
    assert metrics["step"] == 2 and 0 < metrics["loss"] < 50
    trained = dict(load_model(str(tmp_path / "out"))[0].named_parameters())
    base = {n: p.to(torch.bfloat16).float() for n, p in load_model(tiny_base)[0].named_parameters()}
    for name, m in load_masks(masks).items():
        w = f"{name}.weight"
        assert torch.equal(trained[w][~m], base[w][~m]), f"{w}: a frozen entry moved"  # bf16-rounded only
    assert any(not torch.equal(trained[f"{n}.weight"][m], base[f"{n}.weight"][m]) for n, m in load_masks(masks).items())
