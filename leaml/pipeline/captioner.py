"""Captioning stage: unlabeled media -> teacher captions (``captions/shard-*.jsonl`` of Caption).

- :class:`Captioner` is the model side, a plain class: ``transformers`` (any image-text-to-text
  checkpoint, greedy so captioning twice gives the same text), ``vllm`` (GPU clusters; optional
  import, not exercised on CPU) or ``reports`` (media that already come with free text).
  :func:`build_captioner_app` wraps it in a Ray Serve deployment with autoscaling settings.
- :class:`CaptionRequester` is the Ray Data side: decodes media (a corrupt file becomes an error
  row, the stream goes on) and sends each batch to the deployment through its handle.
"""
from __future__ import annotations

import json
from typing import Literal

import numpy as np
from pydantic import Field

from leaml.config import StrictModel

APP_NAME = "leaml-captioner"
DEPLOYMENT_NAME = "Captioner"


class CaptionerConfig(StrictModel):
    backend: Literal["transformers", "vllm", "reports"] = "transformers"
    model: str = ""
    """Checkpoint (local dir, s3:// or hub id); unused by the reports backend."""
    max_new_tokens: int = Field(40, ge=1)
    num_frames: int = Field(8, ge=1)
    num_replicas: int | Literal["auto"] = 1
    """Fixed replica count, or "auto" to use ``autoscaling``."""
    autoscaling: dict = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2}
    replica_cpus: float = Field(1.0, gt=0)
    """CPUs per replica (fractional on small machines)."""
    replica_gpus: float = Field(0.0, ge=0)
    device: str = "auto"
    """transformers backend: where the model runs (``auto``: the replica's GPU if it has one)."""
    tensor_parallel_size: int = Field(1, ge=1)
    """vLLM only: GPUs per engine (the 72B teacher wants 4-8)."""

    def decoding(self) -> dict:
        """What makes a caption reproducible; recorded with every caption."""
        return {"backend": self.backend, "model": self.model, "do_sample": False,
                "max_new_tokens": self.max_new_tokens, "num_frames": self.num_frames}


class Captioner:
    """Media batch -> captions. Deterministic: greedy decoding, fixed settings."""

    def __init__(self, cfg: dict):
        self.cfg = CaptionerConfig.model_validate(cfg)
        self._engine = None
        if self.cfg.backend == "transformers":
            import torch

            from leaml.models.builders import load_model

            torch.set_num_threads(max(1, int(self.cfg.replica_cpus)))
            self.model, self.processor = load_model(self.cfg.model, device=self.cfg.device)
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
        from leaml.prompts import caption_prompt

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
        self.llm = LLM(model=cfg.model, tensor_parallel_size=cfg.tensor_parallel_size,
                       limit_mm_per_prompt={"image": cfg.num_frames})
        self.params = SamplingParams(temperature=0.0, max_tokens=cfg.max_new_tokens)

    def caption(self, media: list[list]) -> list[str]:
        from leaml.prompts import caption_prompt

        tok = self.llm.get_tokenizer()
        reqs = []
        for frames in media:
            content = [{"type": "image"} for _ in frames] + [{"type": "text", "text": caption_prompt()}]
            prompt = tok.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)
            reqs.append({"prompt": prompt, "multi_modal_data": {"image": frames if len(frames) > 1 else frames[0]}})
        return [o.outputs[0].text.strip() for o in self.llm.generate(reqs, self.params)]


def deployment_options(cfg: "CaptionerConfig | StrictModel") -> dict:
    """Serve options from a config's replica settings (num_replicas or autoscaling, CPUs, GPUs)."""
    opts: dict = {"ray_actor_options": {"num_cpus": cfg.replica_cpus, "num_gpus": cfg.replica_gpus},
                  "max_ongoing_requests": 4}
    if cfg.num_replicas == "auto":
        opts["autoscaling_config"] = cfg.autoscaling
    else:
        opts["num_replicas"] = cfg.num_replicas
    return opts


def build_captioner_app(args: dict):
    """Serve builder (``import_path: leaml.pipeline.captioner:build_captioner_app``); validates args."""
    from ray import serve

    cfg = CaptionerConfig.model_validate(args)
    return serve.deployment(Captioner, name=DEPLOYMENT_NAME, **deployment_options(cfg)).bind(cfg.model_dump())


class CaptionRequester:
    """Ray Data UDF: rows ``{item_id, uri, kind, media_root[, report]}`` -> Caption records or errors.

    ``target`` is ``{"serve": {"app": ..., "deployment": ...}}`` (the product path) or
    ``{"local": <CaptionerConfig dict>}`` (the same model in-process, for tests and small runs).
    """

    def __init__(self, target: dict, num_frames: int = 8):
        self.num_frames = num_frames
        self.cfg = None
        if "serve" in target:
            from ray import serve

            t = target["serve"]
            self.handle = serve.get_deployment_handle(t["deployment"], app_name=t["app"])
            self.local = None
            self.model_name = t.get("model", t["deployment"])
            self.decoding = t.get("decoding", {})
        else:
            self.local = Captioner(target["local"])
            self.model_name = self.local.cfg.model or self.local.cfg.backend
            self.decoding = self.local.cfg.decoding()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from leaml.media import load_media
        from leaml.records import Caption, MediaRef

        n = len(batch["item_id"])
        records, errors = [""] * n, [""] * n
        ok, media = [], []
        for i in range(n):
            ref = MediaRef(id=str(batch["item_id"][i]), uri=str(batch["uri"][i]), kind=str(batch["kind"][i]))
            try:
                media.append(load_media(ref, num_frames=self.num_frames, root=str(batch["media_root"][i]) or None))
                ok.append(i)
            except Exception as e:  # noqa: BLE001 - any unreadable item goes to the errors file
                errors[i] = f"{type(e).__name__}: {e}"
        reports = [batch["report"][i] for i in ok] if "report" in batch else None
        texts = self._caption(media, reports) if ok else []
        for i, text in zip(ok, texts):
            cap = Caption(media_id=str(batch["item_id"][i]), text=text, model=self.model_name,
                          meta={"uri": str(batch["uri"][i]), "kind": str(batch["kind"][i]),
                                "decoding": self.decoding})
            records[i] = json.dumps([cap.model_dump()])
        return {**batch, "records": np.array(records, dtype=object), "error": np.array(errors, dtype=object)}

    def _caption(self, media, reports):
        if self.local is not None:
            return self.local.caption(media, reports)
        return self.handle.caption.remote(media, reports).result()
