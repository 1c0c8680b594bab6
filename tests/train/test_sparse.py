"""Masked updates: the dense MaskedAdamW path (Eq. 6) and the sparse-state path agree, and frozen
entries never move. Both paths are tested here because the sparse one is checked against the dense."""
import copy
import pickle

import pytest
import torch
from torch import nn

from leaml.train.masked_optim import (MaskedAdamW, build_masked_adamw, clip_trainable_grad_norm_,
                                      prepare_masked_training)
from leaml.train.masks import compute_masks, eligible_linears
from leaml.train.sparse import (SparseLinear, build_sparse_adamw, install_sparse_params, merge_sparse_params,
                                trainable_state_bytes)
from tests.train.test_masks import Toy

LR, WD, CLIP = 1e-2, 0.1, 0.05


def _setup(k, seed=0):
    torch.manual_seed(seed)
    model = Toy()
    scores = {n: torch.rand_like(lin.weight) for n, lin in eligible_linears(model).items()}
    data = [(torch.randn(4, 3, 4), torch.randn(4, 3, 5)) for _ in range(6)]  # [batch, seq, dim]
    return model, compute_masks(scores, k), data


def _train(model, opt, data):
    losses, norms = [], []
    for x, y in data:
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        norms.append(float(clip_trainable_grad_norm_(opt, CLIP)))
        opt.step()
        losses.append(loss.item())
    return losses, norms


def test_masked_adamw_moves_only_selected_entries():
    model, masks, data = _setup(3)
    before = copy.deepcopy(model.state_dict())
    opt = build_masked_adamw(model, masks, lr=LR, weight_decay=WD)
    _, norms = _train(model, opt, data)
    assert max(norms) > CLIP  # clipping was active
    after = model.state_dict()
    for name, mask in masks.items():
        w0, w = before[f"{name}.weight"], after[f"{name}.weight"]
        assert torch.equal(w[~mask], w0[~mask])  # bit-identical under decay and momentum
        assert (w[mask] != w0[mask]).all()
    untouched = [k for k in after if k[: -len(".weight")] not in masks]
    assert len(untouched) == 8  # biases, LayerNorm, vision, lm_head: frozen
    assert all(torch.equal(after[k], before[k]) for k in untouched)


def test_masked_out_entries_ignore_momentum_from_earlier_steps_and_bad_grads():
    model, masks, data = _setup(3)
    opt = build_masked_adamw(model, masks, lr=LR, weight_decay=WD)
    real = opt.masks
    opt.masks = {p: torch.ones_like(m) for p, m in real.items()}  # one unmasked step: state everywhere
    _train(model, opt, data[:1])
    assert all((opt.state[p]["exp_avg"][~m] != 0).any() for p, m in real.items())
    opt.masks = real
    snapshot = {p: p.detach().clone() for p in real}
    for x, y in data[1:]:
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        for p, m in real.items():
            p.grad[~m] = float("inf")  # must not leak into the norm nor the weights
        assert torch.isfinite(opt.clip_grad_norm_(CLIP))
        opt.step()
    for p, m in real.items():
        assert torch.equal(p[~m], snapshot[p][~m])
        assert (p[m] != snapshot[p][m]).all()


def test_clip_norm_counts_trainable_entries_only():
    lin = nn.Linear(2, 2, bias=False)
    mask = torch.tensor([[True, False], [False, True]])
    opt = MaskedAdamW([lin.weight], {lin.weight: mask}, lr=LR)
    lin.weight.grad = torch.tensor([[3.0, 100.0], [100.0, 4.0]])
    norm = clip_trainable_grad_norm_(opt, 1.0)
    assert float(norm) == pytest.approx(5.0)  # sqrt(3^2 + 4^2); unmasked would be ~141
    torch.testing.assert_close(lin.weight.grad, torch.tensor([[0.6, 0.0], [0.0, 0.8]]))  # coef 1/5


def test_prepare_masked_training_for_a_loop_using_torch_clip():
    model = nn.Sequential(nn.Linear(2, 2, bias=False))
    mask = torch.tensor([[True, False], [False, True]])
    params, opt, before_step = prepare_masked_training(model, {"0": mask}, lr=LR)
    assert params == [model[0].weight] and isinstance(opt, MaskedAdamW)
    model[0].weight.grad = torch.tensor([[3.0, 100.0], [100.0, 4.0]])
    before_step()
    assert float(torch.nn.utils.clip_grad_norm_(params, 1.0)) == pytest.approx(5.0)


# fused AdamW does not bump the version counter: the step post-hook keeps the weights in sync
@pytest.mark.parametrize("k, index_dtype, options", [(1, torch.int32, {}), (0.5, torch.bool, {"fused": True})])
def test_sparse_matches_dense_masked_adamw(k, index_dtype, options):
    dense, masks, data = _setup(k)
    sparse = copy.deepcopy(dense)
    dense_opt = build_masked_adamw(dense, masks, lr=LR, weight_decay=WD)
    sparse_opt = build_sparse_adamw(sparse, masks, lr=LR, weight_decay=WD, **options)
    values = sparse_opt.param_groups[0]["params"]
    assert {sparse.get_submodule(n).sparse_index.dtype for n in masks} == {index_dtype}
    assert [v.numel() for v in values] == [int(m.sum()) for m in masks.values()]
    d_loss, d_norm = _train(dense, dense_opt, data)
    s_loss, s_norm = _train(sparse, sparse_opt, data)
    assert max(d_norm) > CLIP
    assert d_loss == pytest.approx(s_loss, abs=1e-6) and d_norm == pytest.approx(s_norm, abs=1e-6)
    assert trainable_state_bytes(sparse, sparse_opt)["total"] < trainable_state_bytes(dense, dense_opt)["total"]
    assert merge_sparse_params(sparse) == list(masks)
    assert not any(isinstance(m, SparseLinear) for m in sparse.modules())
    d_state, s_state = dense.state_dict(), sparse.state_dict()
    assert d_state.keys() == s_state.keys()  # merged: a plain checkpoint again
    assert max((d_state[key] - s_state[key]).abs().max().item() for key in d_state) < 1e-6


def test_trainable_state_bytes_scale_with_density():
    model, masks, data = _setup(2)  # 2 per row: 16 rows + 8 rows -> 48 selected entries
    values = install_sparse_params(model, masks)
    opt = torch.optim.AdamW(values, lr=LR)
    _train(model, opt, data[:1])
    got = trainable_state_bytes(model, opt)
    nnz = 48
    assert got["grads"] == 4 * nnz and got["sparse_values"] == 4 * nnz
    assert got["optimizer_state"] == 2 * 4 * nnz + 2 * 4  # exp_avg, exp_avg_sq + a float32 step each
    assert got["selection"] == 4 * nnz  # int32 indices


def test_stale_graph_after_step_fails_loudly():
    model, masks, data = _setup(1)
    opt = torch.optim.AdamW(install_sparse_params(model, masks), lr=LR)
    (x, y), (x2, y2) = data[:2]
    ((model(x) - y) ** 2).mean().backward()
    opt.step()
    stale = ((model(x) - y) ** 2).mean()
    opt.step()  # values changed: the next forward rewrites the weight this graph saved
    model(x2)
    with pytest.raises(RuntimeError, match="inplace"):
        stale.backward()


def test_sparse_model_pickles_and_keeps_training_state():
    model, masks, data = _setup(1)
    opt = torch.optim.AdamW(install_sparse_params(model, masks), lr=LR)
    _train(model, opt, data[:2])
    clone = pickle.loads(pickle.dumps(model))
    x = data[0][0]
    torch.testing.assert_close(clone(x), model(x), rtol=0, atol=0)


def _ddp_train(rank, world, store, out):
    """One DDP rank of the sparse path; each rank trains on its slice of every batch."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        model, masks, data = _setup(1)  # same seed on every rank: same model, masks and data
        opt = torch.optim.AdamW(install_sparse_params(model, masks), lr=LR, weight_decay=WD)
        ddp = DDP(model, forward_sync_buffers=False)  # the index buffer is constant
        n = len(data[0][0]) // world
        _train(ddp, opt, [(x[rank * n:(rank + 1) * n], y[rank * n:(rank + 1) * n]) for x, y in data])
        merge_sparse_params(model)
        if rank == 0 and out:
            torch.save(model.state_dict(), out)
    finally:
        dist.destroy_process_group()


def _assert_matches_dense(state):
    dense, masks, data = _setup(1)
    _train(dense, build_masked_adamw(dense, masks, lr=LR, weight_decay=WD), data)
    assert max((dense.state_dict()[k] - state[k]).abs().max().item() for k in state) < 1e-6


def test_sparse_params_train_under_ddp(tmp_path):
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group is already running in this test session")
    _ddp_train(0, 1, tmp_path / "store", tmp_path / "state.pt")
    _assert_matches_dense(torch.load(tmp_path / "state.pt"))


@pytest.mark.slow
def test_sparse_params_under_two_rank_ddp_match_dense_full_batch(tmp_path):
    # DDP averages the two half-batch gradients, which is the full-batch gradient of a mean loss
    torch.multiprocessing.spawn(_ddp_train, args=(2, tmp_path / "store", tmp_path / "state.pt"), nprocs=2)
    _assert_matches_dense(torch.load(tmp_path / "state.pt"))


def test_ddp_never_sends_the_sparse_index(tmp_path, monkeypatch):
    """Under DDP's default arguments (what ``ray.train.torch.prepare_model`` passes) the index buffers
    are neither in DDP's buffer list nor in what it broadcasts before a forward; other buffers are."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    if dist.is_initialized():
        pytest.skip("a process group is already running in this test session")
    sent: list[torch.Tensor] = []
    real = dist._broadcast_coalesced

    def recording(group, tensors, *args, **kwargs):
        sent.extend(tensors)
        return real(group, tensors, *args, **kwargs)

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model, masks, data = _setup(1)
        model.register_buffer("scale", torch.ones(1))  # a buffer DDP must still keep in sync
        opt = torch.optim.AdamW(install_sparse_params(model, masks), lr=LR)
        index = [model.get_submodule(n).sparse_index for n in masks]
        monkeypatch.setattr(dist, "_broadcast_coalesced", recording)
        ddp = DDP(model)
        assert ddp.will_sync_module_buffers()  # forward sync is on, as by default
        _train(ddp, opt, data[:2])
    finally:
        dist.destroy_process_group()
    assert any(t is model.scale for t in ddp.modules_buffers)
    assert not any(t is i for t in ddp.modules_buffers for i in index)
    assert any(t is model.scale for t in sent) and not any(t is i for t in sent for i in index)
    assert "sparse_index" not in "".join(model.state_dict())  # non-persistent: not saved with the model
