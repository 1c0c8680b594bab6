"""benchmarks/masked_training.py at its smallest: the memory figures it reports are exact counts."""

import pytest

from tests.bench import benchmark_module


@pytest.fixture(scope="module")
def bench():
    with benchmark_module("masked_training") as module:
        yield module


def test_smallest_run_reports_exact_state_bytes(bench):
    args = bench.parse_args(["--preset", "tiny-qwen2.5-vl", "--steps", "1", "--warmup", "0", "--memory-steps", "1",
                             "--batch-size", "2", "--batches", "1", "--fractions", "0.02", "0.5", "--no-paper"])
    fixture, results = bench.run_benchmark(args)
    by = {(r.method, r.label): r for r in results}
    assert set(by) == {("full", ""), ("lora", ""), *((m, k) for k in ("2%", "50%")
                                                    for m in ("masked", "masked_sparse"))}
    n_params = fixture.summaries["2%"]["model_params"]
    n_masked = fixture.summaries["2%"]["masked_weight_params"]
    assert by["full", ""].state["grads"] == 4 * n_params  # fp32 grad for every parameter
    for label in ("2%", "50%"):
        dense, sparse = by["masked", label], by["masked_sparse", label]
        selected = fixture.summaries[label]["selected"]
        assert dense.state["grads"] == 4 * n_masked  # full-size whatever the density
        assert dense.state["selection"] == n_masked  # one bool per masked entry
        assert sparse.state["grads"] == sparse.extra_weights == 4 * selected
        assert all(r.step_ms > 0 and r.cpu_ms > 0 and r.rss_mib > 0 for r in (dense, sparse))
    assert by["masked_sparse", "2%"].selection == "int32" and by["masked_sparse", "50%"].selection == "bool"
    assert by["masked_sparse", "2%"].state_bytes < by["lora", ""].state_bytes < by["masked_sparse", "50%"].state_bytes
    goals = bench.check_goals(results, fixture)
    memory_goals = [(ok, text) for ok, text in goals if "step CPU time" not in text]
    assert len(memory_goals) == 3 and all(ok for ok, _ in memory_goals), memory_goals
    assert "masked_sparse" in bench.format_table(results)


def test_paper_k_keeps_nvila_fraction_per_kind_of_row(bench):
    import torch

    widths = {"m.q_proj": 1536, "m.down_proj": 8960, "s.q_proj": 256, "s.down_proj": 512}
    masks = bench.paper_k_masks({n: torch.rand(3, w) for n, w in widths.items()})
    kept = {n: set(m.sum(dim=1).tolist()) for n, m in masks.items()}
    assert kept == {"m.q_proj": {1000}, "m.down_proj": {1000}, "s.q_proj": {167}, "s.down_proj": {57}}
