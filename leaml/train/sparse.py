"""Sparse optimizer state (beyond the paper): model + masks -> one flat trainable ``values`` Parameter
per masked linear, so gradients and AdamW state exist only for the selected entries.

    install_sparse_params(model, masks) -> [values Parameter]   (give these to torch.optim.AdamW)
    build_sparse_adamw(model, masks, lr=...) -> torch.optim.AdamW  (install + AdamW + sync hook)
    merge_sparse_params(model)          -> [names]              (plain nn.Linear again, trained weights)
    trainable_state_bytes(model, optimizer) -> {grads, optimizer_state, selection, sparse_values, total}

Same updates as ``masked_optim.MaskedAdamW`` (tested), at memory proportional to the density.

How it works: each masked nn.Linear is swapped for a :class:`SparseLinear` that shares its weight W
and bias. W is frozen and holds the *effective* weight: whenever ``values`` has changed since the
last forward (its version counter moved) or after an optimizer step (a step post-hook), the values
are written into W's selected entries in place. Forward is a plain ``F.linear`` on W; a custom autograd
Function returns a gradient for ``values`` only. Its dW is formed inside one layer's backward and
gathered to the selected entries at once, so at most one layer's dW is alive at a time.

Why not a parametrization (W = base.masked_scatter(mask, values) in forward): autograd saves each
layer's full-size W_eff for backward, i.e. a second copy of every masked weight lives from forward to
backward, and a full-size grad for W_eff is materialised as well.

Selected entries are indexed in row-major order, either by a bool mask (1 byte per entry of W) or by
int32 flat indices (int64 past 2**31 entries), whichever is smaller: indices win below density
1/4 (1/8 for int64).

Traps:
- ``AdamW(fused=True)`` (and any write through ``p.data``) does not bump the version counter, so the
  forward check alone would train on stale weights: :func:`build_sparse_adamw` registers a step
  post-hook that syncs; with an optimizer of your own, call :func:`sync_after_step` once.
- Install before wrapping in DDP (the ``values`` are then ordinary Parameters DDP all-reduces). The
  index is a constant, non-persistent buffer, identical on every rank (the masks come from one
  file): :func:`install_sparse_params` lists every index in the model's
  ``_ddp_params_and_buffers_to_ignore``, so DDP neither broadcasts it at wrap time nor re-sends it
  before every forward (~2.25 GB per forward for Qwen2.5-VL-3B at K=1000), whatever arguments the
  wrapper gets; ``forward_sync_buffers=False`` (``broadcast_buffers`` before torch 2.13) then only
  spares the few small buffers left (rotary tables).
- The swap replaces module objects: hooks registered on the original nn.Linear are not carried over.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn


class _SelectedGradLinear(torch.autograd.Function):
    """y = x W^T + b, with the weight gradient returned only at the selected entries of W."""

    @staticmethod
    def forward(ctx, x, weight, bias, values, index):
        # weight is saved by reference (no copy); its version check makes a backward through a graph
        # built before an optimizer step fail loudly instead of using updated weights
        ctx.save_for_backward(x, weight, index)
        ctx.values_dtype = values.dtype
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, index = ctx.saved_tensors
        grad_x = grad_bias = grad_values = None
        g = grad_out.reshape(-1, grad_out.shape[-1])
        if ctx.needs_input_grad[0]:
            grad_x = grad_out @ weight.to(grad_out.dtype)  # dtypes differ under autocast
        if ctx.needs_input_grad[2]:
            grad_bias = g.sum(0)
        if ctx.needs_input_grad[3]:
            dw = g.t() @ x.reshape(-1, x.shape[-1]).to(g.dtype)  # transient, this layer only
            grad_values = _gather(dw, index).to(ctx.values_dtype)
        return grad_x, None, grad_bias, grad_values, None


class SparseLinear(nn.Linear):
    """An nn.Linear whose trainable part is ``sparse_values``, the selected entries of ``weight``."""

    def __init__(self, linear: nn.Linear, mask: torch.Tensor, values_dtype: torch.dtype | None = None):
        nn.Module.__init__(self)  # not nn.Linear.__init__: that would allocate and init a new weight
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_parameter("weight", linear.weight)
        self.register_parameter("bias", linear.bias)
        self.weight.requires_grad_(False)
        # non-persistent: a function of the mask artifact, not state to save with the model
        self.register_buffer("sparse_index", _index_for(mask.to(self.weight.device)), persistent=False)
        with torch.no_grad():
            values = _gather(self.weight, self.sparse_index).to(values_dtype or self.weight.dtype)
        self.sparse_values = nn.Parameter(values)
        self._synced = _version(self.sparse_values)

    def sync_(self, force: bool = False) -> None:
        """Write ``values`` into the weight's selected entries if they changed since the last write."""
        if force or _version(self.sparse_values) != self._synced:
            with torch.no_grad():
                _scatter_(self.weight, self.sparse_index, self.sparse_values.to(self.weight.dtype))
            self._synced = _version(self.sparse_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sync_()
        return _SelectedGradLinear.apply(x, self.weight, self.bias, self.sparse_values, self.sparse_index)

    def extra_repr(self) -> str:
        n, index = self.sparse_values.numel(), self.sparse_index.dtype
        return f"{super().extra_repr()}, selected={n}, index={index}"


def install_sparse_params(model: nn.Module, masks: Mapping[str, torch.Tensor], *,
                          values_dtype: torch.dtype | None = None,
                          train_unmasked: bool = False) -> list[nn.Parameter]:
    """Swap every masked nn.Linear for a SparseLinear; return the new ``values`` Parameters.

    Unless ``train_unmasked``, every other parameter is frozen. ``values_dtype=torch.float32`` keeps
    fp32 master values for a bf16 model (selected entries only).
    """
    if not train_unmasked:
        for p in model.parameters():
            p.requires_grad_(False)
    out = []
    for name, mask in masks.items():
        lin = model.get_submodule(name)
        if type(lin) is not nn.Linear:  # subclasses (quantised, already sparse) have other weights
            raise TypeError(f"{name!r} is a {type(lin).__name__}; only plain nn.Linear can be made sparse")
        if tuple(mask.shape) != tuple(lin.weight.shape):
            raise ValueError(f"mask {name!r} has shape {tuple(mask.shape)}, weight {tuple(lin.weight.shape)}")
        sparse = SparseLinear(lin, mask, values_dtype)
        _set_submodule(model, name, sparse)
        out.append(sparse.sparse_values)
    ignore_buffers_in_ddp(model, [f"{name}.sparse_index" for name in masks])
    return out


def ignore_buffers_in_ddp(model: nn.Module, names: list[str]) -> None:
    """Add buffer names (qualified from ``model``) to what DDP skips when it syncs buffers; the same
    attribute ``DistributedDataParallel._set_params_and_buffers_to_ignore_for_model`` writes."""
    current = list(getattr(model, "_ddp_params_and_buffers_to_ignore", []))
    model._ddp_params_and_buffers_to_ignore = current + [n for n in names if n not in current]


def build_sparse_adamw(model: nn.Module, masks: Mapping[str, torch.Tensor], *, lr: float,
                       betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                       weight_decay: float = 1e-2, values_dtype: torch.dtype | None = None,
                       train_unmasked: bool = False, **adamw_options) -> torch.optim.AdamW:
    """Install sparse values and return a torch AdamW over every trainable param, synced each step.

    ``adamw_options`` go to torch.optim.AdamW (``foreach``, ``fused``, ...).
    """
    install_sparse_params(model, masks, values_dtype=values_dtype, train_unmasked=train_unmasked)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **adamw_options)
    sync_after_step(opt, model)
    return opt


def sync_after_step(optimizer: torch.optim.Optimizer, model: nn.Module):
    """Sync every SparseLinear after each ``optimizer.step()``; returns the hook handle."""
    return optimizer.register_step_post_hook(lambda *_: sync_sparse_params(model))


def sync_sparse_params(model: nn.Module) -> None:
    """Force every SparseLinear's weight to reflect its values (for optimizers that bypass versions)."""
    for m in model.modules():
        if isinstance(m, SparseLinear):
            m.sync_(force=True)


def merge_sparse_params(model: nn.Module) -> list[str]:
    """Turn every SparseLinear back into a plain nn.Linear holding the trained weights.

    The weight keeps ``requires_grad=False``; the model is then ready for ``save_pretrained``.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, SparseLinear)]
    for name in names:
        sparse = model.get_submodule(name)
        sparse.sync_(force=True)
        with torch.device("meta"):  # no allocation: weight and bias are replaced right below
            lin = nn.Linear(sparse.in_features, sparse.out_features, bias=sparse.bias is not None)
        lin.weight, lin.bias = sparse.weight, sparse.bias
        _set_submodule(model, name, lin)
    return names


def trainable_state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes allocated for training beyond the model's frozen weights, per kind and in total.

    grads: ``.grad`` of every parameter; optimizer_state: every tensor in ``optimizer.state``;
    selection: MaskedAdamW's masks or SparseLinear's index buffers; sparse_values: the trainable
    copies of the selected entries (the dense path trains the weights themselves: 0).
    """
    seen: set[int] = set()

    def nbytes(tensors) -> int:
        total = 0
        for t in tensors:
            if torch.is_tensor(t) and t.untyped_storage().data_ptr() not in seen:
                seen.add(t.untyped_storage().data_ptr())
                total += t.untyped_storage().nbytes()
        return total

    sparse = [m for m in model.modules() if isinstance(m, SparseLinear)]
    out = {
        "grads": nbytes(p.grad for p in model.parameters() if p.grad is not None),
        "optimizer_state": nbytes(v for s in optimizer.state.values() for v in s.values()),
        "selection": nbytes([*getattr(optimizer, "masks", {}).values(), *(m.sparse_index for m in sparse)]),
        "sparse_values": nbytes(m.sparse_values for m in sparse),
    }
    out["total"] = sum(out.values())
    return out


def _index_for(mask: torch.Tensor) -> torch.Tensor:
    """The smaller of: the bool mask itself, or the flat (row-major) indices of its True entries."""
    mask = mask.to(torch.bool)
    dtype = torch.int32 if mask.numel() < 2**31 else torch.int64
    if int(mask.sum()) * dtype.itemsize < mask.numel():
        return mask.reshape(-1).nonzero().squeeze(1).to(dtype)  # nonzero is sorted: row-major order
    return mask.clone()


def _gather(full: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    if index.dtype == torch.bool:
        return full.masked_select(index)  # row-major, same order as the flat indices
    return full.reshape(-1).index_select(0, index)


def _scatter_(full: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> None:
    if index.dtype == torch.bool:
        full.masked_scatter_(index, values)
    else:
        full.view(-1)[index] = values  # index_put_ takes int32 indices (index_copy_ does not)


def _version(t: torch.Tensor) -> tuple[int, int]:
    # data_ptr too: .to(device) / .half() swap the storage and restart the counter
    return t._version, t.data_ptr()


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    if not name:
        raise ValueError("cannot replace the root module; wrap the linear in a container")
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
