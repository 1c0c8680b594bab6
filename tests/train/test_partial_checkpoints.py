"""Checkpoints hold only what the method trains (adapters, selected entries, or everything for full),
and a run resumed from one ends bit for bit where an uninterrupted run of the same steps ends."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors import safe_open

from leaml.models.builders import load_model
from leaml.train.loop import STATE_JSON, STATE_TENSORS, TrainJob, export_checkpoint, train_loop_per_worker
from leaml.train.scoring import ScoringConfig, run_scoring

K = 0.1


@pytest.fixture(scope="module")
def masks(tiny_world, tiny_base, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("masks"))
    run_scoring(ScoringConfig(init_model=tiny_base, labeled=f"{tiny_world}/labeled.jsonl",
                              media_root=tiny_world, out=out, mask={"k": K}))
    return out


def job(tiny_world, tiny_base, out, method, masks=None, **train):
    return TrainJob.model_validate({
        "init_model": tiny_base, "out_dir": str(out), "masks": masks if method.startswith("masked") else None,
        "train": {"objective": "qa_generator", "method": method, "max_steps": 4, "warmup_steps": 0,
                  "batch_size": 2, "lr": 1e-2, "weight_decay": 0.1, "report_every": 1, "checkpoint_every": 2,
                  "mask": {"k": K}, **train},
        "data": [{"kind": "qa", "uri": f"{tiny_world}/labeled.jsonl", "media_root": tiny_world}],
    })


def params(uri: str) -> dict[str, torch.Tensor]:
    return dict(load_model(uri)[0].named_parameters())


def checkpoint_tensors(step_dir) -> dict[str, torch.Tensor]:
    with safe_open(str(step_dir / STATE_TENSORS), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


# lora with dropout: the dropout masks of a resumed step must be the uninterrupted run's too
METHODS = {"full": {}, "lora": {"lora": {"r": 4, "dropout": 0.1}}, "masked": {}, "masked_sparse": {}}


@pytest.mark.parametrize("method", list(METHODS))
def test_resume_from_a_partial_checkpoint_ends_where_an_uninterrupted_run_ends(
        method, tiny_world, tiny_base, masks, tmp_path, monkeypatch, capsys):
    from leaml.train.methods import checkpoint_bytes

    straight = job(tiny_world, tiny_base, tmp_path / "straight", method, masks, **METHODS[method])
    train_loop_per_worker(straight.model_dump())
    crashing = job(tiny_world, tiny_base, tmp_path / "crash", method, masks, **METHODS[method])
    monkeypatch.setenv("LEAML_FAIL_ONCE_AT_STEP", f"3:{tmp_path / 'failed-once'}")
    with pytest.raises(RuntimeError, match="injected failure after step 3"):
        train_loop_per_worker(crashing.model_dump())
    capsys.readouterr()
    metrics = train_loop_per_worker(crashing.model_dump())  # a fresh process would do the same
    assert "resumed at step 2" in capsys.readouterr().out and metrics["resumed_from"] == 2
    assert metrics["tokens"] > 0 and metrics["tokens_per_s"] > 0 and metrics["mean_step_time_s"] > 0
    a, b = params(str(tmp_path / "straight")), params(str(tmp_path / "crash"))
    differ = [n for n in a if not torch.equal(a[n], b[n])]
    assert not differ, f"{method}: resumed run differs from the uninterrupted one in {differ[:3]}"

    # what is on disk: the trainer state alone, holding what the method trains, 12 B per value
    (step_dir,) = (tmp_path / "straight.ckpt").glob("*/step-0000002")
    assert sorted(p.name for p in step_dir.iterdir()) == sorted([STATE_JSON, STATE_TENSORS])  # no model export
    tensors = checkpoint_tensors(step_dir)
    trained = {k.split("/", 2)[2]: t for k, t in tensors.items() if k.startswith("/trainable/")}
    model, _ = load_model(tiny_base)
    n_model = sum(p.numel() for p in model.parameters())
    if method == "full":
        assert set(trained) == set(a) and sum(t.numel() for t in trained.values()) == n_model
    elif method == "lora":
        assert trained and all(".lora_A." in n or ".lora_B." in n for n in trained)
    elif method == "masked_sparse":
        assert trained and all(n.endswith(".sparse_values") for n in trained)
    else:  # dense masked: the selected entries of each masked weight, 1-D
        assert trained and all(t.dim() == 1 for t in trained.values())
    steps = sum(1 for k in tensors if k.endswith("/step"))  # one fp32 step counter per trained tensor
    assert steps == len(trained)
    stored = sum(t.numel() * t.element_size() for t in tensors.values())
    assert stored == checkpoint_bytes(model, straight.train) + 4 * steps
    if method != "full":
        assert stored < 0.3 * 4 * n_model  # well below one fp32 copy of the model

    # a mid-run checkpoint -> a whole model, equal to the run's own export at that step
    final = (tmp_path / "straight.ckpt").glob("*/step-0000004")
    assert export_checkpoint(straight, str(next(final)), str(tmp_path / "exported")) == 4
    c = params(str(tmp_path / "exported"))
    assert all(torch.equal(a[n], c[n]) for n in a)


def _masked_method(tiny_base, masks):
    from leaml.train.config import TrainConfig
    from leaml.train.methods import setup_method

    model, _ = load_model(tiny_base)
    return setup_method(model, TrainConfig(method="masked", lr=1e-2, weight_decay=0.1, mask={"k": K}), masks)


def _one_step(method, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for p in method.params:
        p.grad = torch.randn(p.shape, generator=gen)
    method.clip_and_step(1.0)
    method.optimizer.zero_grad(set_to_none=True)


def test_dense_masked_state_round_trips_from_selected_entries_and_from_whole_tensors(tiny_base, masks):
    trained = _masked_method(tiny_base, masks)
    for seed in range(2):
        _one_step(trained, seed)
    partial = trained.checkpoint_state()
    n_selected = sum(int(m.sum()) for m in trained.selections.values())
    assert sum(p.numel() for p in partial[0].values()) == n_selected
    moments = [v for s in partial[1]["state"].values() for k, v in s.items() if k.startswith("exp_avg")]
    assert sum(v.numel() for v in moments) == 2 * n_selected
    whole = ({n: p.detach().clone() for n, p in trained.model.named_parameters() if p.requires_grad},
             trained.optimizer.state_dict())  # the earlier checkpoint format: whole tensors
    partial, whole = copy.deepcopy(partial), copy.deepcopy(whole)  # state_dict() holds live tensors
    ref_params = [p.detach().clone() for p in trained.model.parameters()]
    ref_opt = copy.deepcopy(trained.optimizer.state_dict()["state"])
    _one_step(trained, 7)
    for state in (partial, whole):
        fresh = _masked_method(tiny_base, masks)
        fresh.load_checkpoint_state(*state)
        assert all(torch.equal(p, q) for p, q in zip(ref_params, fresh.model.parameters()))
        got = fresh.optimizer.state_dict()["state"]
        assert all(torch.equal(ref_opt[i][k], got[i][k]) for i in ref_opt for k in ref_opt[i])
        _one_step(fresh, 7)  # and the next step is the same step
        assert all(torch.equal(p, q) for p, q in zip(trained.params, fresh.params))


def test_a_checkpoint_of_other_selected_weights_is_refused(tiny_world, tiny_base, masks, tmp_path):
    from leaml.train.loop import _load_state

    j = job(tiny_world, tiny_base, tmp_path / "out", "masked", masks, max_steps=2, checkpoint_every=1)
    train_loop_per_worker(j.model_dump())
    (step_dir,) = (tmp_path / "out.ckpt").glob("*/step-0000001")
    meta = json.loads((step_dir / STATE_JSON).read_text())
    meta["selected_entries_of"] = meta["selected_entries_of"][1:]  # as if the masks had changed
    (step_dir / STATE_JSON).write_text(json.dumps(meta))
    method = _masked_method(tiny_base, masks)
    sched = torch.optim.lr_scheduler.LambdaLR(method.optimizer, lambda s: 1.0)
    with pytest.raises(ValueError, match="selected entries of other weights"):
        _load_state(step_dir, method, sched)
