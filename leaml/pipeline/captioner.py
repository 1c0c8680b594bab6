"""Captioning stage: unlabeled media -> teacher captions (``captions/shard-*.jsonl`` of Caption).

- :class:`Captioner` is the model side, a plain class: ``transformers`` (any image-text-to-text
  checkpoint, greedy so captioning twice gives the same text), ``vllm`` (GPU clusters: the engine of
  :mod:`leaml.models.vllm_engine`, a clip sent as one video; optional import, not exercised on CPU)
  or ``reports`` (media that already come with free text).
  :func:`build_captioner_app` wraps it in a Ray Serve deployment with autoscaling settings.
- :class:`CaptionRequester` is the stream's side (a :class:`leaml.streaming.MediaUDF`: a corrupt
  file becomes an error row, the stream goes on) and sends each batch to its model target; an item
  the model refuses becomes its error row too (``streaming.call_isolating`` splits the batch).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from leaml.models.vllm_engine import VLLMSettings
from leaml.streaming import ItemFailure, MediaUDF, ReplicaSettings, StreamItem, stream_deployment
from leaml.train.config import MediaCaps

APP_NAME = "leaml-captioner"
DEPLOYMENT_NAME = "Captioner"


class CaptionerConfig(ReplicaSettings, VLLMSettings):
    """The teacher captioner; its replica settings (``num_replicas``, ``autoscaling``, ``replica_*``)
    are :class:`~leaml.streaming.ReplicaSettings`, its vLLM engine's (``tensor_parallel_size``,
    ``max_model_len``, ...) :class:`~leaml.models.vllm_engine.VLLMSettings`."""

    backend: Literal["transformers", "vllm", "reports"] = "transformers"
    model: str = ""
    """Checkpoint (local dir, s3:// or hub id); unused by the reports backend."""
    max_new_tokens: int = Field(40, ge=1)
    num_frames: int = Field(8, ge=1)
    device: str = "auto"
    """transformers backend: where the model runs (``auto``: the replica's GPU if it has one)."""
    media: MediaCaps = MediaCaps()
    """Pixels per frame and text caps (transformers: the processor; vLLM: ``mm_processor_kwargs``)."""

    def decoding(self) -> dict:
        """What makes a caption reproducible; recorded with every caption."""
        return {"backend": self.backend, "model": self.model, "do_sample": False,
                "max_new_tokens": self.max_new_tokens, "num_frames": self.num_frames}

    def deployment_options(self) -> dict:
        """The replica settings' Serve options; a tensor-parallel vLLM engine adds its placement group."""
        opts = super().deployment_options()
        return self.with_engine_placement(opts) if self.backend == "vllm" else opts

    def vllm_engine_args(self) -> dict:
        """``vllm.LLM(**args)`` of this captioner: one image or one video (a clip) per prompt."""
        return self.engine_args(self.model, self.media, {"image": 1, "video": 1})


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
        from leaml.models.vllm_engine import VLLMEngine

        self.engine = VLLMEngine(cfg.vllm_engine_args())
        # explicit, like batching.decoding_settings: greedy, no penalty whatever the checkpoint ships
        self.params = self.engine.SamplingParams(temperature=0.0, repetition_penalty=1.0,
                                                 max_tokens=cfg.max_new_tokens)

    def caption(self, media: list[list]) -> list[str]:
        from leaml.models.vllm_engine import vllm_request
        from leaml.prompts import caption_prompt

        # the teacher is used as it ships: a clip goes as one video, its native video path
        reqs = [vllm_request(self.engine.tokenizer, frames, caption_prompt(), video=True) for frames in media]
        return [o.outputs[0].text.strip() for o in self.engine.generate(reqs, self.params)]


def build_captioner_app(args: dict):
    """Serve builder (``import_path: leaml.pipeline.captioner:build_captioner_app``); validates args."""
    cfg = CaptionerConfig.model_validate(args)
    return stream_deployment(Captioner, DEPLOYMENT_NAME, cfg, ["caption"]).bind(cfg.model_dump())


class CaptionRequester(MediaUDF):
    """Stream UDF: :class:`~leaml.streaming.StreamItem` rows (with a ``report`` for the reports
    backend) -> Caption records or errors.

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

    def process(self, items: list[StreamItem], media: list) -> list:
        from leaml.records import Caption

        # a stream that carries no report sends none: the model backends caption the pixels
        with_reports = any(it.report is not None for it in items)

        def caption(idx: list[int]) -> list[str]:
            reports = [items[j].report for j in idx] if with_reports else None
            return self.target.call("caption", [media[j] for j in idx], reports)

        out = []
        for item, text in zip(items, self.isolating(caption, len(items))):
            if isinstance(text, ItemFailure):
                out.append(text)
                continue
            ref = item.media
            out.append([Caption(media_id=ref.id, text=text, model=self.model_name,
                                meta={"uri": ref.uri, "kind": ref.kind, "decoding": self.decoding})])
        return out
