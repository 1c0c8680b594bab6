"""Media token caps: max_pixels / min_pixels reach the processor of every stage that loads one
(load_model, the transformers captioner, the QA generator, evaluation, the vLLM engine arguments), bound the tokens of any image,
and an item over the text cap is refused with its id, its count and the setting to change."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from leaml.models.builders import MediaCapError, apply_media_caps, check_item_tokens, load_model
from leaml.train.config import MediaCaps


def _image_tokens(processor, size) -> int:
    out = processor.image_processor(images=[Image.new("RGB", size, (90, 40, 20))], return_tensors="pt")
    merge = processor.image_processor.merge_size
    return int(out["image_grid_thw"].prod()) // merge**2


def test_load_model_applies_the_pixel_cap(tiny_base):
    _, free = load_model(tiny_base)
    _, capped = load_model(tiny_base, caps=MediaCaps(max_pixels=32 * 32, min_pixels=32 * 32))
    size = capped.image_processor.size
    assert (size["shortest_edge"], size["longest_edge"]) == (32 * 32, 32 * 32)
    big = (640, 480)
    assert _image_tokens(capped, big) <= 32 * 32 // 16**2 < _image_tokens(free, big)  # 16 px a token here


def test_caps_survive_save_and_reload(tiny_base, tmp_path):
    from transformers import AutoProcessor

    _, processor = load_model(tiny_base, caps=MediaCaps(max_pixels=48 * 48))
    processor.save_pretrained(tmp_path)
    assert AutoProcessor.from_pretrained(tmp_path).image_processor.size["longest_edge"] == 48 * 48


def test_no_caps_leave_the_processor_alone(tiny_base):
    _, processor = load_model(tiny_base)

    def edges():
        size = processor.image_processor.size
        return size["shortest_edge"], size["longest_edge"]

    before = edges()
    assert apply_media_caps(processor, MediaCaps()) is processor and edges() == before
    assert apply_media_caps(processor, None) is processor and edges() == before


def test_min_above_max_is_a_config_error():
    with pytest.raises(ValueError, match="min_pixels"):
        MediaCaps(min_pixels=100, max_pixels=10)


def test_an_item_over_the_text_cap_is_refused_by_name():
    check_item_tokens("img-1", 256, MediaCaps(max_text_tokens=256))
    with pytest.raises(MediaCapError, match=r"item 'clip-7': 300 text tokens.*media.max_text_tokens=256"):
        check_item_tokens("clip-7", 300, MediaCaps(max_text_tokens=256))


def test_transformers_captioner_loads_with_its_caps(tiny_base):
    from leaml.pipeline.captioner import Captioner

    cap = Captioner({"backend": "transformers", "model": tiny_base, "device": "cpu",
                     "media": {"max_pixels": 32 * 32}})
    assert cap.processor.image_processor.size["longest_edge"] == 32 * 32


def test_the_qa_generator_and_evaluation_load_with_their_caps(tiny_base):
    from leaml.evaluate.inference import InferenceSettings, VQAAnswerer
    from leaml.pipeline.qa_generator import QAGenerator

    gen = QAGenerator({"model": tiny_base, "device": "cpu", "replica_cpus": 1, "media": {"max_pixels": 32 * 32}})
    assert gen.processor.image_processor.size["longest_edge"] == 32 * 32
    settings = InferenceSettings(media=MediaCaps(max_pixels=48 * 48))
    answerer = VQAAnswerer({"model": tiny_base, "device": "cpu", "media": settings.media.model_dump()})
    assert answerer.processor.image_processor.size["longest_edge"] == 48 * 48


def test_vllm_engine_args_bound_memory_and_pixels():
    from leaml.pipeline.captioner import CaptionerConfig

    cfg = CaptionerConfig(backend="vllm", model="Qwen/Qwen2.5-VL-72B-Instruct", tensor_parallel_size=4,
                          max_model_len=4096, gpu_memory_utilization=0.85, media={"max_pixels": 401408})
    args = cfg.vllm_engine_args()
    assert args == {"model": "Qwen/Qwen2.5-VL-72B-Instruct", "tensor_parallel_size": 4, "max_model_len": 4096,
                    "max_num_batched_tokens": 8192, "gpu_memory_utilization": 0.85,
                    "limit_mm_per_prompt": {"image": 1, "video": 1},
                    "mm_processor_kwargs": {"max_pixels": 401408}, "distributed_executor_backend": "ray",
                    # bf16 as the memory plan sizes it; no sampling default of the checkpoint reaches a request
                    "dtype": "bfloat16", "generation_config": "vllm"}
    single = cfg.model_copy(update={"tensor_parallel_size": 1}).vllm_engine_args()
    assert "distributed_executor_backend" not in single  # one GPU: vLLM's in-process default
    mp = cfg.model_copy(update={"distributed_executor_backend": "mp"}).vllm_engine_args()
    assert mp["distributed_executor_backend"] == "mp"


class _ChatTemplate:
    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        parts = [c["type"] if c["type"] != "text" else c["text"] for c in messages[0]["content"]]
        return "<user>" + "|".join(parts) + "<assistant>"


def test_vllm_requests_send_a_clip_as_one_video_and_an_image_as_an_image():
    from leaml.models.vllm_engine import vllm_request

    frames = [Image.new("RGB", (32, 24), (i * 30, 0, 0)) for i in range(4)]
    clip = vllm_request(_ChatTemplate(), frames, "Describe it.")
    assert clip["prompt"] == "<user>video|Describe it.<assistant>"
    video = clip["multi_modal_data"]["video"]
    assert isinstance(video, np.ndarray) and video.shape == (4, 24, 32, 3) and video[2, 0, 0, 0] == 60
    image = vllm_request(_ChatTemplate(), frames[:1], "Describe it.")
    assert image["prompt"] == "<user>image|Describe it.<assistant>" and image["multi_modal_data"]["image"] is frames[0]


def test_a_tensor_parallel_vllm_replica_leaves_its_gpus_to_the_engine_workers():
    from leaml.pipeline.captioner import CaptionerConfig

    cfg = CaptionerConfig(backend="vllm", tensor_parallel_size=4, replica_gpus=4, replica_cpus=8)
    opts = cfg.deployment_options()
    assert opts["ray_actor_options"] == {"num_cpus": 8, "num_gpus": 0}
    assert opts["placement_group_bundles"] == [{"CPU": 8}] + [{"GPU": 1}] * 4
    assert opts["placement_group_strategy"] == "STRICT_PACK"
    # one GPU, or the transformers backend: the replica owns its GPU as before
    for other in (cfg.model_copy(update={"tensor_parallel_size": 1, "replica_gpus": 1}),
                  CaptionerConfig(backend="transformers", replica_gpus=1)):
        assert other.deployment_options()["ray_actor_options"]["num_gpus"] == 1
        assert "placement_group_bundles" not in other.deployment_options()
