"""The one training loop, in one process, on the tiny world: objectives, methods, resume."""
from __future__ import annotations

import torch
import pytest

from leaml.models.builders import load_model
from leaml.train.loop import MediaBatcher, TrainJob, target_loss, train_loop_per_worker
from leaml.train.data import load_items, DataSpec
from leaml.train.scoring import ScoringConfig, run_scoring


def job(tiny_world, tiny_base, out, method="full", steps=3, masks=None, **train):
    return TrainJob.model_validate({
        "init_model": tiny_base, "out_dir": str(out), "masks": masks,
        "train": {"objective": "qa_generator", "method": method, "max_steps": steps, "warmup_steps": 0,
                  "batch_size": 4, "lr": 1e-2, "report_every": 1, **train},
        "data": [{"kind": "qa", "uri": f"{tiny_world}/labeled.jsonl", "media_root": tiny_world},
                 {"kind": "caption", "uri": f"{tiny_world}/teacher_corpus.jsonl", "media_root": tiny_world,
                  "weight": 0.5}],
    })


@pytest.fixture(scope="module")
def masks(tiny_world, tiny_base, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("masks"))
    summary = run_scoring(ScoringConfig(init_model=tiny_base, labeled=f"{tiny_world}/labeled.jsonl",
                                        media_root=tiny_world, out=out, mask={"k": 0.1}))
    assert 0.09 < summary["density_masked_weights"] < 0.12
    return out


def test_loss_is_on_target_tokens_only(tiny_world, tiny_base):
    model, processor = load_model(tiny_base)
    items = load_items(DataSpec(kind="vqa", uri=f"{tiny_world}/labeled.jsonl", media_root=tiny_world))[:3]
    inputs = MediaBatcher(processor, 1)(items)
    loss = target_loss(model, inputs)
    # by hand: per-example mean NLL over positions whose label is not -100, then mean over examples
    logits = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    per_example = []
    for b in range(len(items)):
        pos = (inputs["labels"][b, 1:] != -100).nonzero().flatten()
        tgt = inputs["labels"][b, 1:][pos]
        per_example.append(-logp[b, pos, tgt].mean())
        n_target = len(processor.tokenizer(items[b].target, add_special_tokens=False)["input_ids"]) + 1  # + eos
        assert len(pos) == n_target
    assert loss.item() == pytest.approx(torch.stack(per_example).mean().item(), rel=1e-5)
    # changing only prompt-side labels to -100 must not change the loss: they already are
    assert (inputs["labels"][inputs["attention_mask"] == 0] == -100).all()


@pytest.mark.parametrize("method", ["full", "lora"])
def test_full_and_lora_train_and_save_loadable_checkpoints(tiny_world, tiny_base, tmp_path, method):
    metrics = train_loop_per_worker(job(tiny_world, tiny_base, tmp_path / method, method).model_dump())
    assert metrics["step"] == 3 and metrics["loss_qa"] > 0 and metrics["loss_caption1"] > 0
    trained, _ = load_model(str(tmp_path / method))
    base, _ = load_model(tiny_base)
    moved = [n for (n, p), (_, q) in zip(trained.named_parameters(), base.named_parameters()) if not torch.equal(p, q)]
    assert moved, "training changed nothing"
    if method == "lora":  # merged adapters: only the language model's adapted linears move
        assert all("language_model" in n and n.endswith("proj.weight") for n in moved)


@pytest.mark.parametrize("method", ["masked", "masked_sparse"])
def test_masked_methods_move_only_selected_entries(tiny_world, tiny_base, masks, tmp_path, method):
    from leaml.train.masks import load_masks

    train_loop_per_worker(job(tiny_world, tiny_base, tmp_path / method, method, masks=masks,
                              weight_decay=0.1).model_dump())
    trained = dict(load_model(str(tmp_path / method))[0].named_parameters())
    base = dict(load_model(tiny_base)[0].named_parameters())
    mask_by_weight = {f"{n}.weight": m for n, m in load_masks(masks).items()}
    for name, p in base.items():
        m = mask_by_weight.get(name)
        if m is None:
            assert torch.equal(trained[name], p), f"{name} has no mask but moved"
        else:
            assert torch.equal(trained[name][~m], p[~m]), f"{name}: a frozen entry moved"
    assert any(not torch.equal(trained[n][m], base[n][m]) for n, m in mask_by_weight.items())


def test_dense_masked_and_sparse_state_agree(tmp_path, tiny_world, tiny_base, masks):
    for method in ("masked", "masked_sparse"):
        train_loop_per_worker(job(tiny_world, tiny_base, tmp_path / method, method, masks=masks,
                                  weight_decay=0.1).model_dump())
    dense = dict(load_model(str(tmp_path / "masked"))[0].named_parameters())
    sparse = dict(load_model(str(tmp_path / "masked_sparse"))[0].named_parameters())
    worst = max((dense[n] - sparse[n]).abs().max().item() for n in dense)
    assert worst < 1e-5


def test_interrupted_run_resumes_at_next_step(tmp_path, tiny_world, tiny_base, monkeypatch, capsys):
    straight = job(tiny_world, tiny_base, tmp_path / "straight", steps=4, checkpoint_every=2)
    train_loop_per_worker(straight.model_dump())

    crashing = job(tiny_world, tiny_base, tmp_path / "crash", steps=4, checkpoint_every=2)
    monkeypatch.setenv("LEAML_FAIL_ONCE_AT_STEP", f"3:{tmp_path / 'failed-once'}")
    with pytest.raises(RuntimeError, match="injected failure after step 3"):
        train_loop_per_worker(crashing.model_dump())
    assert not (tmp_path / "crash" / "model.safetensors").exists()
    metrics = train_loop_per_worker(crashing.model_dump())  # same job again: picks up step 2's checkpoint
    assert "resumed at step 2" in capsys.readouterr().out
    assert metrics["step"] == 4 and metrics["resumed_from"] == 2
    a = dict(load_model(str(tmp_path / "straight"))[0].named_parameters())
    b = dict(load_model(str(tmp_path / "crash"))[0].named_parameters())
    assert max((a[n] - b[n]).abs().max().item() for n in a) < 1e-5  # same batches, same updates


def test_captions_of_video_clips_train_on_frames(tmp_path):
    # A caption names its media by id; meta.kind (written by the captioning stage) keeps a clip a
    # clip, else its mp4 would be loaded as an image and refused.
    from leaml.records import Caption
    from leaml.train.data import caption_items

    caps = [Caption(media_id="clip-1", text="a push.", model="t", meta={"uri": "media/clip-1.mp4", "kind": "video"}),
            Caption(media_id="img-1", text="a polyp.", model="t", meta={"uri": "media/img-1.png"})]
    items = caption_items(caps, {}, str(tmp_path))
    assert [(it.media.uri, it.media.kind) for it in items] == [("media/clip-1.mp4", "video"), ("media/img-1.png", "image")]


# ---------------------------------------------------------------------------------------------
# Checkpoints: no pickle, and keyed by the job's fingerprint


class _Exploit:
    """A pickle whose loading would run code: ``__reduce__`` -> os.system(touch <marker>)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _method_and_scheduler(tiny_base):
    from leaml.train.config import TrainConfig
    from leaml.train.methods import setup_method

    model, processor = load_model(tiny_base)
    method = setup_method(model, TrainConfig(method="full", lr=1e-3))
    method.processor = processor
    return method, torch.optim.lr_scheduler.LambdaLR(method.optimizer, lambda s: 1.0)


def test_state_round_trips_without_pickle_and_crafted_pickles_are_refused(tiny_base, tmp_path):
    import pickle

    from safetensors import SafetensorError

    from leaml.train.loop import LEGACY_STATE_FILE, STATE_JSON, STATE_TENSORS, _load_state, _save_state

    method, sched = _method_and_scheduler(tiny_base)
    p0 = next(method.model.parameters())
    p0.grad = torch.ones_like(p0)
    method.optimizer.step()  # optimizer state now holds tensors keyed by int
    sched.step()
    ckpt = tmp_path / "ckpt"
    _save_state(ckpt, method, sched, {"step": 7, "loss": 1.5}, fingerprint="ab" * 8)
    assert {STATE_JSON, STATE_TENSORS} <= {p.name for p in ckpt.iterdir()}
    fresh, fresh_sched = _method_and_scheduler(tiny_base)
    step, metrics = _load_state(ckpt, fresh, fresh_sched, fingerprint="ab" * 8)
    assert (step, metrics["loss"]) == (7, 1.5) and fresh_sched.last_epoch == 1
    assert torch.equal(next(fresh.model.parameters()), p0.detach())
    a, b = method.optimizer.state_dict(), fresh.optimizer.state_dict()
    assert torch.equal(a["state"][0]["exp_avg_sq"], b["state"][0]["exp_avg_sq"])
    assert a["param_groups"][0]["betas"] == b["param_groups"][0]["betas"] == (0.9, 0.999)
    with pytest.raises(ValueError, match="belongs to job"):  # another job's state
        _load_state(ckpt, fresh, fresh_sched, fingerprint="cd" * 8)

    marker = tmp_path / "code-ran"
    crafted = pickle.dumps({"step": 1, "trainable": _Exploit(marker)})
    (ckpt / STATE_TENSORS).write_bytes(crafted)  # the new format: parsed as safetensors, never unpickled
    with pytest.raises(SafetensorError):
        _load_state(ckpt, fresh, fresh_sched)
    legacy = tmp_path / "legacy"  # the old single-file format: weights_only=True refuses callables
    legacy.mkdir()
    (legacy / LEGACY_STATE_FILE).write_bytes(crafted)
    with pytest.raises(pickle.UnpicklingError):
        _load_state(legacy, fresh, fresh_sched)
    assert not marker.exists(), "a crafted pickle ran code"


def test_changed_job_never_resumes_an_old_checkpoint(tmp_path, tiny_world, tiny_base, capsys):
    import shutil

    labeled = tmp_path / "labeled.jsonl"
    shutil.copy(f"{tiny_world}/labeled.jsonl", labeled)

    def qa_job():
        j = job(tiny_world, tiny_base, tmp_path / "out", steps=2, checkpoint_every=1)
        return j.model_copy(update={"data": [j.data[0].model_copy(update={"uri": str(labeled)})]})

    train_loop_per_worker(qa_job().model_dump())
    capsys.readouterr()
    train_loop_per_worker(qa_job().model_dump())
    assert "resumed at step 2" in capsys.readouterr().out  # unchanged: picks up its finished checkpoint
    lines = labeled.read_text().splitlines()
    labeled.write_text("\n".join(lines[:-1]) + "\n")  # one labeled pair fewer: another job
    metrics = train_loop_per_worker(qa_job().model_dump())
    assert "resumed" not in capsys.readouterr().out
    assert metrics["resumed_from"] == 0 and metrics["step"] == 2
    roots = sorted(p.name for p in (tmp_path / "out.ckpt").iterdir())
    assert len(roots) == 2 and all(len(r) == 64 for r in roots)  # one checkpoint folder per fingerprint


def test_job_names_cannot_leave_the_storage_path(tiny_base, tmp_path):
    from pydantic import ValidationError

    for bad in ("../../etc", "/abs/path", "a/b", ".hidden", ""):
        with pytest.raises(ValidationError):
            TrainJob.model_validate({"name": bad, "init_model": tiny_base, "out_dir": str(tmp_path),
                                     "data": [{"kind": "qa", "uri": "x.jsonl"}]})


def test_job_fingerprint_ignores_scheduling_but_not_what_is_trained(tiny_world, tiny_base, tmp_path):
    from leaml.fingerprint import job_fingerprint

    base = job(tiny_world, tiny_base, tmp_path / "a")

    def with_train(**update):
        return base.model_copy(update={"train": base.train.model_copy(update=update)})

    scaling = base.train.scaling
    same = [base.model_copy(update={"name": "other", "out_dir": str(tmp_path / "b")}),
            with_train(scaling=scaling.model_copy(update={"max_failures": 5, "cpus_per_worker": 0.5}))]
    other = [with_train(lr=2e-2), with_train(scaling=scaling.model_copy(update={"num_workers": 2})),
             base.model_copy(update={"init_model": tiny_world})]  # another model (any other directory)
    assert {job_fingerprint(j) for j in [base, *same]} == {job_fingerprint(base)}
    assert len({job_fingerprint(j) for j in [base, *other]}) == 4


def test_a_checkpoint_cut_short_is_skipped_for_the_one_before(tmp_path, tiny_world, tiny_base, capsys):
    from leaml.train.loop import STATE_TENSORS

    j = job(tiny_world, tiny_base, tmp_path / "out", steps=4, checkpoint_every=2)
    train_loop_per_worker(j.model_dump())
    (newest,) = (tmp_path / "out.ckpt").glob(f"*/step-0000004/{STATE_TENSORS}")
    newest.write_bytes(newest.read_bytes()[:1000])  # a kill mid-upload
    capsys.readouterr()
    metrics = train_loop_per_worker(j.model_dump())
    out = capsys.readouterr().out
    assert "is unreadable" in out and "resumed at step 2" in out
    assert metrics["step"] == 4 and metrics["resumed_from"] == 2
