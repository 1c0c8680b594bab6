"""The memory plan against real CPU memory, on a small-width model with Qwen2.5-VL's real layout
(GQA, M-RoPE, window + full-attention vision blocks, 2 x 2 patch merger, tied embeddings).

Activations: the plan's meta-device figure vs the bytes autograd really keeps for backward in one
real forward + loss of the whole model (every distinct storage saved for backward, parameters
apart), with and without activation checkpointing. State: the plan's weights / grads / optimizer
bytes vs the storage of the parameters, ``.grad`` tensors, optimizer state, trained copies and
index buffers after one real optimizer step, for full, LoRA and masked_sparse (fp32 and bf16).
"""
from __future__ import annotations

import pytest
import torch

from leaml.plan import ItemTokens, measure_activations, meta_model, qwen2_5_vl_config, saved_bytes
from leaml.train.config import TrainConfig
from leaml.train.loop import target_loss

BATCH, SIDE, TEXT = 2, 16, 128  # a 16 x 16-patch image (224 px a side) = 64 LLM tokens, + 128 text tokens
TOKENS = ItemTokens(text=TEXT, frames=1, per_frame=SIDE * SIDE // 4, patches_per_frame=SIDE * SIDE)
IMAGE, VSTART, VEND = 10, 12, 13


def small_config():
    return qwen2_5_vl_config(vocab=1024, hidden=128, intermediate=344, layers=3, heads=4, kv_heads=2, tie=True,
                             vision_depth=4, vision_hidden=64, vision_intermediate=128, vision_heads=2,
                             image_token_id=IMAGE, video_token_id=11, vision_start_token_id=VSTART,
                             vision_end_token_id=VEND, bos_token_id=None, eos_token_id=1, pad_token_id=0)


def real_model():
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Qwen2_5_VLForConditionalGeneration(small_config())


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = [VSTART] + [IMAGE] * (SIDE * SIDE // 4) + [VEND]
    ids = torch.tensor([image + torch.randint(20, 1000, (TEXT - 2,), generator=g).tolist() for _ in range(BATCH)])
    labels = torch.full_like(ids, -100)
    labels[:, -8:] = ids[:, -8:]  # the answer: the loss sees every position's logits anyway
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels,
                pixel_values=torch.randn(BATCH * SIDE * SIDE, 3 * 2 * 14 * 14, generator=g),
                image_grid_thw=torch.tensor([[1, SIDE, SIDE]] * BATCH))


@pytest.mark.parametrize("checkpointing,autocast", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["fp32", "fp32-ckpt", "bf16-autocast", "bf16-autocast-ckpt"])
def test_planned_activations_match_a_real_forward(checkpointing, autocast):
    from leaml.train.methods import enable_activation_checkpointing

    model = real_model().train()
    if checkpointing:
        enable_activation_checkpointing(model)
    inputs = batch()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):  # as the loop runs bf16
            return target_loss(model, inputs)

    measured = saved_bytes(step, list(model.parameters()))
    plan = measure_activations(meta_model(small_config()), BATCH, TOKENS, autocast=autocast, vision_trains=True,
                               checkpointing=checkpointing)
    planned = plan.per_source(checkpointing)
    print(f"activations, checkpointing={checkpointing}, autocast={autocast}: measured "
          f"{measured / 2**20:.2f} MiB, planned {planned / 2**20:.2f} MiB")
    assert planned == pytest.approx(measured, rel=0.20)
    if not checkpointing:  # the figure is dominated by what it should be: layers and vision, not noise
        assert plan.layers * plan.layer + plan.vision > 0.8 * planned


def _storage(tensors) -> int:
    seen = {}
    for t in tensors:
        if torch.is_tensor(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


def _measured_state(setup) -> dict[str, int]:
    from leaml.train.sparse import SparseLinear

    named = dict(setup.model.named_parameters())
    copies = {n for n in named if "lora_" in n or n.endswith("sparse_values")}
    index = [m.sparse_index for m in setup.model.modules() if isinstance(m, SparseLinear)]
    state = [v for s in setup.optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.numel() > 1]
    return {"weights": _storage(p for n, p in named.items() if n not in copies),
            "grads": _storage(p.grad for p in named.values() if p.grad is not None),
            "optimizer": _storage(state) + _storage(named[n] for n in copies) + _storage(index)}


@pytest.mark.parametrize("method,precision", [("full", "fp32"), ("full", "bf16"), ("lora", "fp32"), ("lora", "bf16"),
                                              ("masked_sparse", "fp32"), ("masked_sparse", "bf16")])
def test_planned_state_matches_a_real_step(tmp_path, method, precision):
    from leaml.train.masks import compute_masks, eligible_linears, save_masks
    from leaml.train.methods import setup_method, state_bytes

    cfg = TrainConfig(method=method, precision=precision, mask={"k": 48}, lora={"r": 4}, warmup_steps=0, max_steps=2)
    model = real_model()
    masks = None
    if method == "masked_sparse":
        g = torch.Generator().manual_seed(1)
        scores = {n: torch.rand(m.weight.shape, generator=g) for n, m in eligible_linears(model).items()}
        save_masks(compute_masks(scores, 48), str(tmp_path / "masks"))
        masks = str(tmp_path / "masks")
    setup = setup_method(model, cfg, masks)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = target_loss(setup.model, batch())
    loss.backward()
    setup.clip_and_step(1.0)
    measured = _measured_state(setup)
    planned = state_bytes(meta_model(small_config()), cfg)
    print(f"{method}/{precision}: measured {measured}, planned {planned}")
    for key in ("weights", "grads", "optimizer"):
        assert getattr(planned, key) == pytest.approx(measured[key], rel=0.20), key
    assert planned.ddp == 0  # one worker: no DDP buckets


def test_ddp_buckets_are_a_second_copy_of_the_gradients_without_bucket_view():
    from leaml.train.methods import state_bytes

    model, cfg = meta_model(small_config()), TrainConfig(method="full")
    assert state_bytes(model, cfg, world_size=8, bucket_view=False).ddp == state_bytes(model, cfg).grads
    assert state_bytes(model, cfg, world_size=8, bucket_view=True).ddp == 0
