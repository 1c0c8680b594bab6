"""Neuron selection: hand-computed Eq. 5 scores, top-K per row, summaries, mask files."""
import json
import math

import pytest
import torch
from torch import nn

from leaml.train.masks import (accumulate_importance, compute_masks, eligible_linears, load_mask_summary,
                               load_masks, mask_summary, resolve_k, save_masks, topk_per_row)


class Toy(nn.Module):
    """A VLM-shaped toy: vision tower, language model, lm_head (397 parameters)."""

    def __init__(self):
        super().__init__()
        self.vision = nn.Sequential(nn.Linear(4, 8))
        self.language_model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 8))
        self.lm_head = nn.Linear(8, 5)

    def forward(self, x):
        return self.lm_head(self.language_model(self.vision(x)))


def test_eligible_linears_by_pattern():
    m = Toy()
    assert list(eligible_linears(m)) == ["language_model.0", "language_model.3"]
    assert list(eligible_linears(m, include=["language_model", "vision"])) == [
        "vision.0", "language_model.0", "language_model.3"]
    assert len(eligible_linears(m, include=[""], exclude=[])) == 4


# y = W x, W = 0 (2x3), loss = 0.5 ||W x - t||^2, so dL/dW = (W x - t) x^T = -t x^T per example
X = torch.tensor([[1.0, 2.0, 0.0], [1.0, -1.0, 3.0], [0.0, 1.0, 1.0]])
T = torch.tensor([[1.0, -1.0], [1.0, 1.0], [2.0, 0.0]])
# per-example grads: [[-1,-2,0],[1,2,0]], [[-1,1,-3],[-1,1,-3]], [[0,-2,-2],[0,0,0]]
SIGNED_MEAN_ABS = torch.tensor([[2 / 3, 1.0, 5 / 3], [0.0, 1.0, 1.0]])  # |sum| / 3
MEAN_OF_ABS = torch.tensor([[2 / 3, 5 / 3, 5 / 3], [2 / 3, 1.0, 1.0]])  # what Eq. 5 is not


def _linear_model():
    m = nn.Linear(3, 2, bias=False)
    nn.init.zeros_(m.weight)
    return m


def _mse(model, batch):
    x, t = batch
    return 0.5 * ((model(x) - t) ** 2).sum(1).mean(), len(x)


@pytest.mark.parametrize("splits", [[[0, 1, 2]], [[0, 1], [2]], [[0], [1], [2]]])
def test_importance_is_abs_of_mean_signed_gradient_whatever_the_batching(splits):
    m = _linear_model()
    m.weight.requires_grad_(False)  # frozen going in: must come back frozen
    m.train()
    batches = [(X[i], T[i]) for i in splits]
    s = accumulate_importance(m, batches, _mse, {"w": m.weight})["w"]
    torch.testing.assert_close(s, SIGNED_MEAN_ABS)
    assert not torch.allclose(s, MEAN_OF_ABS)
    assert m.weight.grad is None and not m.weight.requires_grad and m.training
    assert torch.equal(m.weight, torch.zeros(2, 3))


def test_importance_leaves_existing_grads_alone():
    m = _linear_model()
    m.weight.grad = torch.ones(2, 3)
    accumulate_importance(m, [(X, T)], _mse, {"w": m.weight})
    assert torch.equal(m.weight.grad, torch.ones(2, 3))


def test_topk_on_hand_scores_with_deterministic_ties():
    assert topk_per_row(SIGNED_MEAN_ABS, 2).tolist() == [[False, True, True], [False, True, True]]
    # row 1 ties cols 1 and 2 at 1.0: the lower column index wins
    assert topk_per_row(SIGNED_MEAN_ABS, 1).tolist() == [[False, False, True], [False, True, False]]
    # mean-of-abs would pick another neuron entry in row 0 (col 1 ties col 2 at 5/3)
    assert topk_per_row(MEAN_OF_ABS, 1)[0].tolist() == [False, True, False]


@pytest.mark.parametrize("k, width, expected", [
    (3, 10, 3), (3000, 1536, 1536), (1000, 8960, 1000),  # count, capped count (the paper's SPORTU K)
    (0.5, 3, 2), (0.7, 10, 7), (0.05, 10, 1), (1.0, 7, 7), (0.1, 1536, 154),  # fraction: ceil
])
def test_resolve_k(k, width, expected):
    assert resolve_k(k, width) == expected
    assert topk_per_row(torch.rand(4, width), k).sum(1).tolist() == [expected] * 4


@pytest.mark.parametrize("bad", [0, -1, 0.0, 1.5, True, "3"])
def test_resolve_k_rejects(bad):
    with pytest.raises((ValueError, TypeError)):
        resolve_k(bad, 10)


def test_nan_scores_rank_last():
    s = torch.tensor([[math.nan, 0.1, 0.2]])
    assert topk_per_row(s, 2).tolist() == [[False, True, True]]


def _toy_masks(k):
    torch.manual_seed(0)
    m = Toy()
    scores = {n: torch.rand_like(lin.weight) for n, lin in eligible_linears(m).items()}
    return m, compute_masks(scores, k)


def test_mask_summary_densities():
    m, masks = _toy_masks(4)  # rows 8 wide (language_model.0) and 16 wide (language_model.3)
    s = mask_summary(masks, m, k=4)
    assert s["modules"]["language_model.0"] == {"shape": [16, 8], "selected": 64, "density": 0.5,
                                                "k_row_min": 4, "k_row_max": 4}
    assert s["modules"]["language_model.3"]["density"] == 0.25
    assert s["selected"] == 96 and s["masked_weight_params"] == 256
    assert s["density_masked_weights"] == 0.375
    assert s["model_params"] == 397 and s["density_all_params"] == pytest.approx(96 / 397)
    assert s["k_per_row_width"] == {"8": 4, "16": 4}
    assert mask_summary(masks, k=0.3)["k_per_row_width"] == {"8": 3, "16": 5}
    assert "biases" in s["frozen"]


def test_save_load_round_trip(tmp_path):
    m, masks = _toy_masks(0.3)
    masks["odd"] = torch.rand(3, 5) > 0.5  # 15 entries: not a multiple of 8 bits
    summary = mask_summary(masks, m, k=0.3)
    uri = str(tmp_path / "run" / "neuron_masks")
    save_masks(masks, uri, summary)
    back = load_masks(uri)
    assert back.keys() == masks.keys()
    for name in masks:
        assert back[name].dtype == torch.bool and torch.equal(back[name], masks[name])
    assert load_mask_summary(uri) == json.loads(json.dumps(summary))
    assert torch.equal(load_masks(f"{uri}/masks.safetensors")["odd"], masks["odd"])
    # bit-packed: 128 + 128 + 15 entries -> 16 + 16 + 2 bytes of data plus the header
    assert (tmp_path / "run" / "neuron_masks" / "masks.safetensors").stat().st_size < 34 + 600
