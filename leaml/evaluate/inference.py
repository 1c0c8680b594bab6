"""VQA examples + a model checkpoint -> greedy generations, in input order.

Two engines, one predictor class:
- ``ray``: Ray Data streams the examples through an actor pool of :class:`VQAPredictor` (each actor
  loads the model once). Actors ask for a *fraction* of a CPU: on a 2-core machine two actors at
  ``num_cpus=1`` would leave nothing for Ray Data's read tasks and the stream would hang.
- ``local``: the same predictor in this process, with a progress bar (unit tests, debugging).

The predictor is a plain class, so it is importable and testable without a cluster. It answers
through :func:`leaml.models.answer.answer`, the service's answering core too.
"""
from __future__ import annotations

import json
from typing import Literal

import numpy as np
from pydantic import Field

from leaml.config import StrictModel
from leaml.records import VQAExample


class InferenceConfig(StrictModel):
    engine: Literal["ray", "local"] = "ray"
    """``ray``: Ray Data actor pool (the product path); ``local``: one in-process loop."""
    batch_size: int = Field(16, ge=1)
    """Examples per forward pass; larger = faster on CPU until memory runs out."""
    num_actors: int = Field(2, ge=1)
    """Model replicas in the Ray Data actor pool."""
    actor_cpus: float = Field(0.5, gt=0)
    """CPUs each actor reserves; keep < 1 on small machines so read tasks can still run."""
    torch_threads: int | None = Field(None, ge=1)
    """Intra-op threads per actor; None = floor(actor_cpus), at least 1. A reservation is not a
    thread count: one actor on an otherwise idle 2-core machine reserves 1 CPU and can use 2."""
    actor_gpus: float = Field(0.0, ge=0)
    """GPUs each actor reserves (the model then runs there: ``device: auto``)."""
    device: str = "auto"
    """Where the model runs: ``auto`` (a GPU if this process has one), ``cpu``, ``cuda``."""
    scoring: Literal["generate", "options"] = "generate"
    """``generate``: the greedy answer, matched to an option (the paper's protocol; an answer that
    matches no option is wrong). ``options``: the option the model finds most likely (mean token
    log-likelihood), the log-likelihood multiple-choice protocol: it never fails on format, so beside
    ``generate`` it tells what a model knows from whether it writes an option. Questions without
    options are generated either way."""
    max_new_tokens: int = Field(12, ge=1)
    """Answers are short options; generation stops at EOS anyway."""
    num_frames: int = Field(8, ge=1)
    """Frames sampled per video (images are one frame)."""
    ray_address: str | None = None
    """None = ``ray.init()`` defaults (RAY_ADDRESS or a new local instance); "local" forces a new one."""


class VQAPredictor:
    """Ray Data batch UDF: ``{"idx", "example"}`` rows -> adds ``"generation"``: the greedy answer,
    or under ``scoring="options"`` the most likely option."""

    def __init__(self, model_uri: str, media_root: str, max_new_tokens: int = 12, num_frames: int = 8,
                 torch_threads: int | None = None, device: str = "auto", scoring: str = "generate"):
        import torch

        from leaml.models.builders import load_model

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.model, self.processor = load_model(model_uri, device=device)
        self.model.eval()
        self.media_root = media_root
        self.max_new_tokens = max_new_tokens
        self.num_frames = num_frames
        self.scoring = scoring

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from leaml.media import load_media
        from leaml.models.answer import answer
        from leaml.prompts import vqa_prompt

        examples = [VQAExample.model_validate_json(s) for s in batch["example"]]
        media = [load_media(ex.media, num_frames=self.num_frames, root=self.media_root) for ex in examples]
        prompts = [vqa_prompt(ex.question, ex.options) for ex in examples]
        # scoring="generate": the options are in the prompt but the answer is written, not picked.
        options = [ex.options if self.scoring == "options" else [] for ex in examples]
        answers = answer(self.model, self.processor, media, prompts, options, max_new_tokens=self.max_new_tokens)
        return {**batch, "generation": np.array([a.text for a in answers], dtype=object)}


def run_inference(examples: list[VQAExample], model_uri: str, media_root: str,
                  cfg: InferenceConfig | None = None, desc: str = "evaluate") -> list[str]:
    """One answer per example, in the same order: greedy generations, or the most likely options
    (``cfg.scoring``)."""
    cfg = cfg or InferenceConfig()
    rows = [{"idx": i, "example": ex.model_dump_json()} for i, ex in enumerate(examples)]
    if not rows:
        return []
    if cfg.engine == "local":
        return _run_local(rows, model_uri, media_root, cfg, desc)
    return _run_ray(rows, model_uri, media_root, cfg)


def _run_local(rows: list[dict], model_uri: str, media_root: str, cfg: InferenceConfig, desc: str) -> list[str]:
    from tqdm.auto import tqdm

    predictor = VQAPredictor(model_uri, media_root, cfg.max_new_tokens, cfg.num_frames, _threads(cfg), cfg.device,
                             cfg.scoring)
    out: list[str] = []
    for start in tqdm(range(0, len(rows), cfg.batch_size), desc=desc, unit="batch"):
        chunk = rows[start:start + cfg.batch_size]
        batch = {"idx": np.array([r["idx"] for r in chunk]), "example": np.array([r["example"] for r in chunk], dtype=object)}
        out += list(predictor(batch)["generation"])
    return out


def _threads(cfg: InferenceConfig) -> int:
    return cfg.torch_threads or max(1, int(cfg.actor_cpus))


def _run_ray(rows: list[dict], model_uri: str, media_root: str, cfg: InferenceConfig) -> list[str]:
    import ray

    from leaml.jobs import init_ray

    init_ray(cfg.ray_address)
    threads = _threads(cfg)
    ds = ray.data.from_items(rows).map_batches(
        VQAPredictor,
        fn_constructor_kwargs=dict(model_uri=model_uri, media_root=media_root, max_new_tokens=cfg.max_new_tokens,
                                   num_frames=cfg.num_frames, torch_threads=threads, device=cfg.device,
                                   scoring=cfg.scoring),
        batch_size=cfg.batch_size,
        compute=ray.data.ActorPoolStrategy(size=cfg.num_actors),
        num_cpus=cfg.actor_cpus,
        num_gpus=cfg.actor_gpus,
    )
    results = sorted(ds.take_all(), key=lambda r: r["idx"])
    return [r["generation"] for r in results]


def save_predictions(uri: str, examples: list[VQAExample], generations: list[str]) -> None:
    """One JSON line per example: id, category, answer, generation (for error analysis)."""
    from leaml import storage
    from leaml.evaluate.matching import match_option

    lines = [json.dumps({"id": ex.id, "category": ex.category, "answer": ex.answer, "generation": g,
                         "matched": match_option(g, ex.options) if ex.options else None})
             for ex, g in zip(examples, generations, strict=True)]
    storage.write_text(uri, "\n".join(lines) + "\n")
