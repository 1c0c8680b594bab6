"""The production presets' memory settings and the memory plan that checks them before a run.

Presets: every training row runs bf16 with activation checkpointing and pixel caps (full keeps fp32
master weights: its AdamW updates the weights themselves), scoring runs bf16 on a GPU task, the
vLLM captioner has its memory and pixel bounds. Plan: every stage of a preset is planned from the
real module shapes, ``leaml plan`` prints it, and ``leaml run`` refuses a run that cannot fit,
naming the stage and the setting, before anything is written.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from leaml.config import load_config
from leaml.pipeline.config import PipelineConfig
from leaml.plan import GIB, PlanError, build_plan, check_fits, format_plan, loop_passes_ddp_kwargs

REPO = Path(__file__).resolve().parents[2]
PRESETS = ["kvasir.yaml", "sportu.yaml"]
QWEN_3B_PARAMS = 3_754_622_976  # the count tests/infra/test_presets.py checks


def preset(name: str, *overrides: str) -> PipelineConfig:
    return load_config(PipelineConfig, str(REPO / "ray_jobs" / "configs" / name), list(overrides))


def trainings(cfg: PipelineConfig) -> dict:
    return {"generators.baseline": cfg.generators.baseline, "generators.distill": cfg.generators.distill,
            "generators.leaml": cfg.generators.leaml, "vqa": cfg.vqa, "lora": cfg.lora,
            "fully_supervised": cfg.fully_supervised}


@pytest.mark.parametrize("name", PRESETS)
def test_presets_resolve_to_bf16_with_checkpointing_and_caps(name):
    from leaml.train.methods import frozen_weight_dtype

    cfg = preset(name)
    for key, t in trainings(cfg).items():
        assert t.precision == "bf16" and t.activation_checkpointing, key
        assert t.media.max_pixels and t.media.max_pixels <= 401408, key  # <= 512 tokens a frame
        # the weights a method updates in place stay fp32 (AdamW's master copy); frozen ones are bf16
        want = torch.float32 if t.method in ("full", "masked") else torch.bfloat16
        assert frozen_weight_dtype(t) == want, key
    mask = cfg.generators.leaml.mask
    assert mask.scoring_dtype == "bfloat16" and mask.scoring_gpus >= 1
    c = cfg.captioner
    assert c.media.max_pixels == cfg.generators.leaml.media.max_pixels
    assert c.max_model_len <= 8192 and c.gpu_memory_utilization <= 0.95 and c.distributed_executor_backend == "ray"
    q = cfg.qagen  # the generator on vLLM sees items at the pixel caps it was trained with
    assert q.backend == "vllm" and q.media == cfg.generators.leaml.media
    assert q.max_model_len <= 8192 and q.gpu_memory_utilization <= 0.95
    assert cfg.resources.gpu_memory_gb == 80


def test_the_default_config_stays_fp32_and_unchecked():
    cfg = PipelineConfig()
    assert all(t.precision == "fp32" and not t.activation_checkpointing for t in trainings(cfg).values())
    assert cfg.resources.gpu_memory_gb is None and check_fits(cfg) == []  # CPU runs: nothing checked


@pytest.fixture(scope="module")
def kvasir_plan():
    return {p.stage: p for p in build_plan(preset("kvasir.yaml"))}


def test_the_plan_covers_every_stage_from_the_real_shapes(kvasir_plan):
    assert list(kvasir_plan) == [
        "caption (vLLM)", "neuron scoring", "train generator baseline", "train generator distill",
        "train generator leaml", "pseudo-QA generation (vLLM)", "train vqa full+baseline+distill+leaml",
        "train vqa lora", "train vqa fully_supervised", "evaluate student rows"]
    full, sparse, lora = (kvasir_plan[s] for s in ("train generator baseline", "train generator leaml",
                                                    "train vqa lora"))
    assert full.weights == 4 * QWEN_3B_PARAMS and full.optimizer == 8 * QWEN_3B_PARAMS  # fp32 master + 2 moments
    assert sparse.weights == lora.weights == 2 * QWEN_3B_PARAMS  # frozen bf16
    assert sparse.grads == 4 * 1_032_192_000  # K=1000: the selected entries the preset's comment counts
    assert lora.grads < 0.01 * full.grads
    # DDP's buckets: a second copy of the gradients until the loop passes gradient_as_bucket_view
    assert full.ddp == (0 if loop_passes_ddp_kwargs() else full.grads)
    vllm = kvasir_plan["caption (vLLM)"]
    assert 33 * GIB < vllm.weights < 35 * GIB and vllm.gpus == 16  # 72B bf16 over tp 4, 4 replicas
    qagen = kvasir_plan["pseudo-QA generation (vLLM)"]
    assert qagen.weights == 2 * QWEN_3B_PARAMS and qagen.gpus == 8  # bf16, tp 1, up to 8 replicas
    assert qagen.claimed_fraction == 0.90 and qagen.total < 0.90 * 80 * GIB
    assert full.gpus == 8 and kvasir_plan["neuron scoring"].gpus == 1


def test_pixel_caps_and_checkpointing_are_what_make_activations_fit():
    capped = {p.stage: p for p in build_plan(preset("kvasir.yaml"))}["train generator distill"]
    free = {p.stage: p for p in build_plan(preset(
        "kvasir.yaml", "generators.distill.media.max_pixels=null",
        "generators.distill.activation_checkpointing=false"))}["train generator distill"]
    assert capped.activations < 10 * GIB < 100 * GIB < free.activations


def test_leaml_plan_prints_the_table(capsys):
    from leaml.cli import main

    assert main(["plan", "--config", str(REPO / "ray_jobs" / "configs" / "sportu.yaml"), "resources.gpus=8"]) == 0
    out = capsys.readouterr().out
    assert "train generator leaml" in out and "masked_sparse, bf16, ckpt" in out
    assert "asks for 16 GPUs, the cluster has 8" in out  # the 4 x tp-4 captioner replicas


def test_run_refuses_a_plan_that_cannot_fit_before_writing_anything(tmp_path, capsys):
    from leaml.cli import main
    from leaml.pipeline.graph import run_pipeline

    cfg = PipelineConfig(run_dir=str(tmp_path / "run"), engine="local", resources={"gpu_memory_gb": 0.01},
                         rows=["zero_shot_student", "full"], vqa={"scaling": {"use_gpu": True}})
    with pytest.raises(PlanError, match=r"train vqa full: needs .* GiB per GPU.*change vqa:.*vqa.batch_size"):
        run_pipeline(cfg)
    assert not (tmp_path / "run").exists()
    config = tmp_path / "c.yaml"
    config.write_text(f"run_dir: {tmp_path / 'run2'}\nengine: local\nrows: [full]\n"
                      "vqa: {scaling: {use_gpu: true}}\nresources: {gpu_memory_gb: 0.01}\n")
    assert main(["run", "--config", str(config)]) == 2
    assert "the memory plan says this run cannot fit" in capsys.readouterr().err


def test_format_marks_fit_and_no_fit():
    plans = build_plan(preset("kvasir.yaml"))
    text = format_plan(plans, preset("kvasir.yaml").resources)
    lines = {ln.split("  ")[0].strip(): ln for ln in text.splitlines()}
    assert " yes " in lines["train generator leaml"] and " yes " in lines["train vqa lora"]


def test_a_saved_model_is_planned_from_its_config_json_alone(tiny_base):
    from leaml.models.builders import load_model
    from leaml.plan import meta_model, processor_max_pixels

    real, processor = load_model(tiny_base)
    meta = meta_model(tiny_base)
    assert next(meta.parameters()).is_meta
    assert sum(p.numel() for p in meta.parameters()) == sum(p.numel() for p in real.parameters())
    assert processor_max_pixels(tiny_base) == processor.image_processor.size["longest_edge"]


def test_a_model_on_s3_is_planned_without_downloading_its_weights(tiny_base, s3_bucket):
    from leaml import storage
    from leaml.plan import meta_model

    uri = f"{s3_bucket}/models/student"
    for name in ("config.json", "processor_config.json"):  # no weights there: the plan must not need them
        storage.write_text(f"{uri}/{name}", (Path(tiny_base) / name).read_text())
    assert sum(p.numel() for p in meta_model(uri).parameters()) == sum(p.numel() for p in meta_model(tiny_base).parameters())


def test_the_generator_is_planned_at_its_training_tokens_with_room_for_prompt_logprobs():
    plans = {p.stage: p for p in build_plan(preset("sportu.yaml"))}
    qagen, caption = plans["pseudo-QA generation (vLLM)"], plans["caption (vLLM)"]
    # 8 frames x 256 tokens + 256 text, each frame an image as in training; the teacher's video merges pairs
    assert "(item 2304 tok)" in qagen.detail and "x 2304 tok" in plans["train generator leaml"].detail
    assert "(item 1280 tok)" in caption.detail
    # the filter's option scores: fp32 logits + log-softmax of max_num_batched_tokens prompt tokens
    unfiltered = {p.stage: p for p in build_plan(preset("sportu.yaml", "qagen.filter=none"))}
    assert qagen.other - unfiltered["pseudo-QA generation (vLLM)"].other == 4096 * 151_936 * 8
    on_transformers = {p.stage for p in build_plan(preset("sportu.yaml", "qagen.backend=transformers"))}
    assert "pseudo-QA generation" in on_transformers  # the float32 generate plan, as before


def test_an_item_longer_than_vllms_context_blocks_the_qa_generator():
    cfg = preset("sportu.yaml", "qagen.max_model_len=2048")
    with pytest.raises(PlanError, match=r"pseudo-QA generation \(vLLM\): an item is 2304 tokens \+ 64 new, "
                                        r"above qagen.max_model_len \(2048\)"):
        check_fits(cfg)


def test_an_item_longer_than_vllms_context_blocks_the_captioner():
    cfg = preset("kvasir.yaml", "captioner.max_model_len=512")
    (caption,) = [p for p in build_plan(cfg) if p.stage == "caption (vLLM)"]
    assert "above captioner.max_model_len (512)" in caption.blocked
    with pytest.raises(PlanError, match=r"caption \(vLLM\): an item is \d+ tokens \+ 128 new"):
        check_fits(cfg)
