"""benchmarks/gpu_check.py: its CPU smoke runs the library's path (run_training on 2 gloo workers,
partial checkpoint, export, reload, one Serve request) and passes its own checks."""

import pytest

from tests.bench import benchmark_module


@pytest.fixture(scope="module")
def gpu_check():
    with benchmark_module("gpu_check") as module:
        yield module


def test_defaults_and_the_vllm_skip_reason(gpu_check):
    tiny = gpu_check.parse_args(["--device", "cpu", "--tiny"])
    assert (tiny.methods, tiny.steps, tiny.batch_size) == (["masked_sparse"], 4, 2)
    full = gpu_check.parse_args([])
    assert full.device == "cuda" and full.methods == ["masked_sparse", "full"] and full.steps == 40
    assert "CUDA" in gpu_check.vllm_caption("x", "y", "cpu", 1, None)["skipped"]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cpu_smoke_passes(gpu_check, tmp_path, capsys):
    import json

    assert gpu_check.main(["--device", "cpu", "--tiny", "--work-dir", str(tmp_path), "--json",
                           str(tmp_path / "out.json")]) == 0
    figures = json.loads((tmp_path / "out.json").read_text())
    run = figures["train"]["masked_sparse"]
    assert figures["workers"] == 2 and run["backend"] == "gloo" and run["steps"] == 4
    assert run["checkpoint_bytes"] < 0.5 * run["export_bytes"] and run["tokens_per_s"] > 0
    assert figures["checks"]["masked_sparse"]["frozen_moved"] == 0 and figures["serve"]["answer"]
    assert "GPU check: PASSED" in capsys.readouterr().out
