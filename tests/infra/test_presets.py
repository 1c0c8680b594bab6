"""Shipped configs: every YAML parses with its typed config, and the production presets carry the
paper's settings (LEAML, Sec. "Implementation details") with the neuron density their comments state.

The density is recomputed from Qwen2.5-VL-3B's real module shapes: the model is built on the meta
device (no weights, no download) from its published config, and the eligible linears and the K cap
come from the same library functions the scoring stage uses.
"""
from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest
import yaml

from leaml.config import load_config
from leaml.pipeline.config import PipelineConfig

REPO = Path(__file__).resolve().parents[2]
PIPELINE_CONFIGS = sorted((REPO / "ray_jobs" / "configs").glob("*.yaml"))
SERVE_CONFIGS = sorted((REPO / "serve_configs").glob("*.yaml"))
PAPER = {"kvasir.yaml": 1000, "sportu.yaml": 3000}  # K per row (neuron selection)
PAPER_ROWS = {"zero_shot_student", "lora", "full", "baseline", "distill", "leaml", "fully_supervised"}
PAPER_BATCH, PAPER_LR = 16, 1e-5

# Qwen/Qwen2.5-VL-3B-Instruct's config.json, the parts that fix parameter shapes.
QWEN25_VL_3B = dict(
    text_config=dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                     num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=128000,
                     rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}),
    vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                       patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                       fullatt_block_indexes=[7, 15, 23, 31]),
    tie_word_embeddings=True,
)
# Args model of each Serve builder a shipped serve config may name.
SERVE_BUILDER_ARGS = {
    "leaml.serve.gateway:build_app": "leaml.serve.gateway:GatewayArgs",
    "leaml.pipeline.captioner:build_captioner_app": "leaml.pipeline.captioner:CaptionerConfig",
    "leaml.pipeline.qa_generator:build_qa_generator_app": "leaml.pipeline.qa_generator:QAGenConfig",
}


def resolve(path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


# ---------------------------------------------------------------------------------------------
# Every shipped YAML parses


@pytest.mark.parametrize("path", PIPELINE_CONFIGS, ids=lambda p: p.name)
def test_pipeline_config_parses(path):
    load_config(PipelineConfig, str(path))  # ConfigError names the file and the key


@pytest.mark.parametrize("path", SERVE_CONFIGS, ids=lambda p: p.name)
def test_serve_config_parses(path):
    from ray.serve.schema import ServeDeploySchema

    cfg = yaml.safe_load(path.read_text())
    ServeDeploySchema.model_validate(cfg)
    for app in cfg["applications"]:
        assert app["import_path"] in SERVE_BUILDER_ARGS, f"{path.name}: add the args model of {app['import_path']}"
        assert callable(resolve(app["import_path"]))
        resolve(SERVE_BUILDER_ARGS[app["import_path"]]).model_validate(app.get("args", {}))


# ---------------------------------------------------------------------------------------------
# The paper's settings


def trainings(cfg: PipelineConfig) -> dict:
    return {"generators.baseline": cfg.generators.baseline, "generators.distill": cfg.generators.distill,
            "generators.leaml": cfg.generators.leaml, "vqa": cfg.vqa, "lora": cfg.lora,
            "fully_supervised": cfg.fully_supervised}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_production_preset_has_the_papers_settings(name):
    from leaml.models.builders import PRESETS

    text = (REPO / "ray_jobs" / "configs" / name).read_text()
    cfg = load_config(PipelineConfig, str(REPO / "ray_jobs" / "configs" / name))
    # models: the 3B student (hub id or s3://), the 72B teacher served by vLLM with tensor parallelism
    assert cfg.student.path == PRESETS["qwen2.5-vl-3b"].hub_id or cfg.student.path.startswith("s3://")
    assert cfg.teacher.path == PRESETS["qwen2.5-vl-72b"].hub_id
    assert cfg.captioner.backend == "vllm" and cfg.captioner.tensor_parallel_size > 1
    assert cfg.captioner.model in ("", cfg.teacher.path)  # "" = the teacher
    # data on S3, 1% labels (fixed by the converted dataset: labeled.jsonl), the paper's table rows
    assert cfg.data_dir.startswith("s3://") and cfg.run_dir.startswith("s3://") and cfg.engine == "ray"
    assert "labeled.jsonl (1% of the train QA pairs)" in text
    assert set(cfg.rows) == PAPER_ROWS
    # AdamW lr 1e-5 (cosine decay is the loop's only schedule), global batch 16, on GPUs
    for key, t in trainings(cfg).items():
        assert t.lr == PAPER_LR, key
        assert t.batch_size * t.scaling.num_workers == PAPER_BATCH, f"{key}: global batch"
        assert t.scaling.use_gpu, key
    # neuron selection: K per row on the generator that uses masks
    leaml = cfg.generators.leaml
    assert leaml.method.startswith("masked") and leaml.mask.k == PAPER[name]
    assert leaml.mask.include == ["language_model"] and leaml.caption_weight > 0
    assert cfg.generators.baseline.caption_weight == 0 and cfg.generators.distill.method == "full"
    # nucleus sampling for pseudo QA, several per item
    assert 0 < cfg.qagen.top_p < 1 and cfg.qagen.n > 1 and cfg.qagen.temperature > 0


@pytest.mark.parametrize("path", PIPELINE_CONFIGS, ids=lambda p: p.name)
def test_the_qa_generator_runs_on_vllm_where_the_gpus_are(path):
    # the GPU presets sample and score on vLLM (the generator is exported as a plain HF checkpoint);
    # every CPU profile keeps transformers, since vLLM needs a GPU
    q = load_config(PipelineConfig, str(path)).qagen
    assert (q.backend == "vllm") == (path.name in PAPER)
    if q.backend == "vllm":
        assert q.replica_gpus == q.tensor_parallel_size == 1  # a 3B model: one GPU, no placement group
        assert "placement_group_bundles" not in q.deployment_options()
        assert q.vllm_engine_args()["limit_mm_per_prompt"] == {"image": q.num_frames, "video": 0}


def test_evaluation_and_captions_decode_greedily():
    from leaml.evaluate.inference import InferenceConfig
    from leaml.models.batching import generate
    from leaml.pipeline.captioner import CaptionerConfig

    assert inspect.signature(generate).parameters["do_sample"].default is False
    assert not {"do_sample", "top_p", "top_k", "temperature"} & InferenceConfig.model_fields.keys()
    assert CaptionerConfig(backend="vllm").decoding()["do_sample"] is False


# ---------------------------------------------------------------------------------------------
# Neuron density of the presets on Qwen2.5-VL-3B


@pytest.fixture(scope="module")
def qwen25_vl_3b_on_meta():
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):  # shapes only: no memory, no download
        return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**QWEN25_VL_3B))


def density(model, k: int, include: list[str], exclude: list[str]) -> dict:
    from leaml.train.masks import eligible_linears, resolve_k

    linears = eligible_linears(model, include, exclude)
    shapes = [tuple(m.weight.shape) for m in linears.values()]
    selected = sum(rows * resolve_k(k, width) for rows, width in shapes)
    eligible = sum(rows * width for rows, width in shapes)
    total = sum(p.numel() for p in model.parameters())
    return {"n_linears": len(shapes), "selected": selected, "eligible": eligible, "params": total,
            "density_masked_weights": selected / eligible, "density_all_params": selected / total}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_preset_density_on_qwen25_vl_3b_matches_its_comment(name, qwen25_vl_3b_on_meta, record_property):
    cfg = load_config(PipelineConfig, str(REPO / "ray_jobs" / "configs" / name))
    mask = cfg.generators.leaml.mask
    d = density(qwen25_vl_3b_on_meta, int(mask.k), mask.include, mask.exclude)
    print(f"\n{name}: K={int(mask.k)} -> density {d['density_masked_weights']:.4f} of {d['eligible']:,} LM linear "
          f"weights ({d['selected']:,} selected), {d['density_all_params']:.4f} of all {d['params']:,} parameters")
    record_property("density", d)
    # 36 layers x (q, k, v, o, gate, up, down); K capped at the 2048-wide rows, 11008-wide down_proj rows
    assert d["n_linears"] == 36 * 7 and d["eligible"] == 36 * 77_070_336
    k, cap = int(mask.k), lambda width: min(int(mask.k), width)
    per_layer = (2048 + 256 + 256 + 2048 + 11008 + 11008) * cap(2048) + 2048 * cap(11008)
    assert d["selected"] == 36 * per_layer, f"K={k}"
    stated = re.search(r"density (0\.\d{4}) of the masked LM linears, (0\.\d{4}) of all ([\d,]+) parameters",
                       (REPO / "ray_jobs" / "configs" / name).read_text())
    assert stated, f"{name}: the density comment is missing"
    assert float(stated.group(1)) == round(d["density_masked_weights"], 4)
    assert float(stated.group(2)) == round(d["density_all_params"], 4)
    assert int(stated.group(3).replace(",", "")) == d["params"]
