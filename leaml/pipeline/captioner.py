"""Captioning stage: unlabeled media -> teacher captions (``captions/shard-*.jsonl`` of Caption).

- :class:`Captioner` is the model side, a plain class: ``transformers`` (any image-text-to-text
  checkpoint, greedy so captioning twice gives the same text), ``vllm`` (GPU clusters; optional
  import, not exercised on CPU) or ``reports`` (media that already come with free text).
  :func:`build_captioner_app` wraps it in a Ray Serve deployment with autoscaling settings.
- :class:`CaptionRequester` is the stream's side (a :class:`leaml.streaming.MediaUDF`: a corrupt
  file becomes an error row, the stream goes on) and sends each batch to its model target; an item
  the model refuses becomes its error row too (``streaming.call_isolating`` splits the batch).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from leaml.streaming import ItemFailure, MediaUDF, ReplicaSettings
from leaml.train.config import MediaCaps

APP_NAME = "leaml-captioner"
DEPLOYMENT_NAME = "Captioner"


class CaptionerConfig(ReplicaSettings):
    """The teacher captioner; its replica settings (``num_replicas``, ``autoscaling``, ``replica_*``)
    are :class:`~leaml.streaming.ReplicaSettings`."""

    backend: Literal["transformers", "vllm", "reports"] = "transformers"
    model: str = ""
    """Checkpoint (local dir, s3:// or hub id); unused by the reports backend."""
    max_new_tokens: int = Field(40, ge=1)
    num_frames: int = Field(8, ge=1)
    device: str = "auto"
    """transformers backend: where the model runs (``auto``: the replica's GPU if it has one)."""
    tensor_parallel_size: int = Field(1, ge=1)
    """vLLM only: GPUs per engine (the 72B teacher wants 4-8)."""
    media: MediaCaps = MediaCaps()
    """Pixels per frame and text caps (transformers: the processor; vLLM: ``mm_processor_kwargs``)."""
    max_model_len: int = Field(8192, ge=256)
    """vLLM: the longest prompt + caption; the KV cache must hold one such sequence (the memory plan
    checks it, and that an item at the media caps fits in it)."""
    max_num_batched_tokens: int = Field(8192, ge=256)
    """vLLM: tokens one engine step prefills (bounds its activation memory)."""
    gpu_memory_utilization: float = Field(0.90, gt=0, le=0.98)
    """vLLM: the fraction of each GPU the engine claims (weights + activations + KV cache)."""
    distributed_executor_backend: Literal["ray", "mp"] | None = None
    """vLLM: how an engine spans its tensor-parallel GPUs. None: ``ray`` when tensor_parallel_size > 1,
    since a Serve replica is a Ray actor and ``mp`` would fork workers outside Ray's placement."""

    def decoding(self) -> dict:
        """What makes a caption reproducible; recorded with every caption."""
        return {"backend": self.backend, "model": self.model, "do_sample": False,
                "max_new_tokens": self.max_new_tokens, "num_frames": self.num_frames}

    def deployment_options(self) -> dict:
        """The replica settings' Serve options; a tensor-parallel vLLM engine adds its placement group."""
        opts = super().deployment_options()
        if _uses_ray_executor(self):
            # vLLM's ray executor starts one Ray worker per GPU inside the replica's placement group
            # (the Ray Serve LLM pattern): the replica itself takes no GPU, or it would hold all of them
            # and the engine's workers would wait forever; STRICT_PACK keeps the engine on one node.
            opts["ray_actor_options"]["num_gpus"] = 0
            opts["placement_group_bundles"] = [{"CPU": self.replica_cpus}] + [{"GPU": 1}] * self.tensor_parallel_size
            opts["placement_group_strategy"] = "STRICT_PACK"
        return opts


class Captioner:
    """Media batch -> captions. Deterministic: greedy decoding, fixed settings."""

    def __init__(self, cfg: dict):
        self.cfg = CaptionerConfig.model_validate(cfg)
        self._engine = None
        if self.cfg.backend == "transformers":
            import torch

            from leaml.models.builders import load_model

            torch.set_num_threads(max(1, int(self.cfg.replica_cpus)))
            self.model, self.processor = load_model(self.cfg.model, device=self.cfg.device, caps=self.cfg.media)
        elif self.cfg.backend == "vllm":
            self._engine = _VLLMCaptioner(self.cfg)

    def caption(self, media: list[list], reports: list[str] | None = None) -> list[str]:
        if self.cfg.backend == "reports":
            if reports is None or any(r is None for r in reports):
                raise ValueError("the reports backend needs a report text for every media item")
            return [" ".join(str(r).split()) for r in reports]
        if self._engine is not None:
            return self._engine.caption(media)
        from leaml.models.batching import generate
        from leaml.models.limits import check_media, context_length
        from leaml.prompts import caption_prompt

        for frames in media:  # a known processor limit fails here, before any forward pass
            check_media(self.processor, frames, context_length(self.model))

        outs = generate(self.model, self.processor, media, [caption_prompt()] * len(media),
                        max_new_tokens=self.cfg.max_new_tokens)
        return [o[0].strip() for o in outs]


class _VLLMCaptioner:
    """vLLM engine for GPU clusters (e.g. Qwen2.5-VL-72B with tensor parallelism)."""

    def __init__(self, cfg: CaptionerConfig):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as e:  # the CPU install never has it
            raise ImportError("backend 'vllm' needs the GPU image: pip install 'leaml[vllm]'") from e
        self.llm = LLM(**vllm_engine_args(cfg))
        # explicit, like batching.decoding_settings: greedy, no penalty whatever the checkpoint ships
        self.params = SamplingParams(temperature=0.0, repetition_penalty=1.0, max_tokens=cfg.max_new_tokens)

    def caption(self, media: list[list]) -> list[str]:
        from leaml.prompts import caption_prompt

        tok = self.llm.get_tokenizer()
        reqs = [vllm_request(tok, frames, caption_prompt()) for frames in media]
        return [o.outputs[0].text.strip() for o in self.llm.generate(reqs, self.params)]


def vllm_engine_args(cfg: CaptionerConfig) -> dict:
    """``vllm.LLM(**args)`` of a captioner config: memory bounds, pixel caps, one video or image per prompt."""
    backend = cfg.distributed_executor_backend or ("ray" if cfg.tensor_parallel_size > 1 else None)
    pixels = {k: v for k, v in (("max_pixels", cfg.media.max_pixels), ("min_pixels", cfg.media.min_pixels)) if v}
    args = dict(model=cfg.model, tensor_parallel_size=cfg.tensor_parallel_size, max_model_len=cfg.max_model_len,
                max_num_batched_tokens=cfg.max_num_batched_tokens, gpu_memory_utilization=cfg.gpu_memory_utilization,
                limit_mm_per_prompt={"image": 1, "video": 1}, mm_processor_kwargs=pixels)
    if backend:
        args["distributed_executor_backend"] = backend
    return args


def vllm_request(tokenizer, frames: list, prompt: str) -> dict:
    """One vLLM prompt: an image as an image, several frames as one video (Qwen2.5-VL's native video
    path, which merges frame pairs), so a clip is not read as N unrelated images."""
    kind = "video" if len(frames) > 1 else "image"
    content = [{"type": kind}, {"type": "text", "text": prompt}]
    text = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)
    data = np.stack([np.asarray(f.convert("RGB")) for f in frames]) if kind == "video" else frames[0]
    return {"prompt": text, "multi_modal_data": {kind: data}}


def _uses_ray_executor(cfg: CaptionerConfig) -> bool:
    return cfg.backend == "vllm" and vllm_engine_args(cfg).get("distributed_executor_backend") == "ray"


def build_captioner_app(args: dict):
    """Serve builder (``import_path: leaml.pipeline.captioner:build_captioner_app``); validates args."""
    from ray import serve

    cfg = CaptionerConfig.model_validate(args)
    return serve.deployment(Captioner, name=DEPLOYMENT_NAME, **cfg.deployment_options()).bind(cfg.model_dump())


class CaptionRequester(MediaUDF):
    """Stream UDF: rows ``{item_id, uri, kind, media_root[, report]}`` -> Caption records or errors.

    ``target`` is ``{"serve": {"app": ..., "deployment": ...[, "model", "decoding"]}}`` (the product
    path; ``model`` and ``decoding`` describe the served captioner in every record) or ``{"local":
    <CaptionerConfig dict>}`` (the same model in-process, for tests and small runs).
    """

    def __init__(self, target: dict, num_frames: int = 8, retry: dict | None = None):
        super().__init__(target, num_frames, retry)
        if "local" in target:
            cfg = CaptionerConfig.model_validate(target["local"])
            self.model_name, self.decoding = cfg.model or cfg.backend, cfg.decoding()
        else:
            described = next(iter(target.values()))
            self.model_name = described.get("model", described.get("deployment", "fake"))
            self.decoding = described.get("decoding", {})

    def build_local(self, cfg: dict) -> Captioner:
        return Captioner(cfg)

    def process(self, refs: list, media: list, rows: list[dict]) -> list:
        from leaml.records import Caption

        def caption(idx: list[int]) -> list[str]:
            reports = [rows[j]["report"] for j in idx] if "report" in rows[0] else None
            return self.target.call("caption", [media[j] for j in idx], reports)

        out = []
        for ref, row, text in zip(refs, rows, self.isolating(caption, len(refs))):
            if isinstance(text, ItemFailure):
                out.append(text)
                continue
            cap = Caption(media_id=ref.id, text=text, model=self.model_name,
                          meta={"uri": str(row["uri"]), "kind": str(row["kind"]), "decoding": self.decoding})
            out.append([cap.model_dump()])
        return out
