"""VQA examples + a model checkpoint -> one answer per example, in input order, on the one stream.

The examples run through :func:`leaml.streaming.run_sharded` like captions and pseudo QA do: a
question whose media does not decode, or that the model refuses, is an error row (and answered
``""``, so it counts as wrong) while the rest of its batch is answered; finished shards are kept
in ``stream_dir`` and a re-run resumes after the last one.

- :class:`VQARequester` is the stream's UDF: decoded media + the prompt -> the answer.
- :class:`VQAAnswerer` is the model side: a checkpoint in the UDF's process (a Ray Data actor
  under ``engine="ray"``, each loading the model once; this process under ``"local"``). It answers
  through :func:`leaml.models.answer.answer`, the service's answering core too. Actors ask for a
  *fraction* of a CPU: on a 2-core machine two actors at ``num_cpus=1`` would leave nothing for Ray
  Data's read tasks and the stream would hang.
"""
from __future__ import annotations

import json
import tempfile
from typing import Literal

from pydantic import Field

from leaml.config import StrictModel
from leaml.records import Record, VQAExample
from leaml.streaming import (Engine, ItemFailure, MediaUDF, StreamConfig, StreamItem, read_errors, read_shards,
                             run_sharded)
from leaml.train.config import MediaCaps


class InferenceSettings(StrictModel):
    """How the examples are answered and scheduled (the pipeline's ``evaluation`` section; its
    engine is the pipeline's)."""

    batch_size: int = Field(16, ge=1)
    """Examples per forward pass; larger = faster on CPU until memory runs out."""
    shard_size: int = Field(256, ge=1)
    """Examples per output shard of the stream: the unit of resume."""
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
    media: MediaCaps = MediaCaps()
    """Pixels per frame the processor may make of an item (as training and captioning are capped):
    an uncapped Qwen2.5-VL processor turns one full-size frame into ~1.7k tokens."""


SCHEDULING = {"shard_size", "num_actors", "actor_cpus", "torch_threads", "actor_gpus"}
"""Settings that do not change an answer (so neither a stage's fingerprint nor a stream's key)."""


class InferenceConfig(InferenceSettings):
    """Standalone ``leaml evaluate``'s ``inference`` section: the settings plus where they run."""

    engine: Engine = "ray"
    """``ray``: Ray Data actor pool (the product path); ``local``: one in-process loop."""
    ray_address: str | None = None
    """None = ``ray.init()`` defaults (RAY_ADDRESS or a new local instance); "local" forces a new one."""


class VQAAnswerer:
    """The model side of evaluation: a checkpoint -> answers (greedy generations, or options)."""

    def __init__(self, cfg: dict):
        import torch

        from leaml.models.builders import load_model

        if cfg.get("torch_threads"):
            torch.set_num_threads(cfg["torch_threads"])
        caps = MediaCaps.model_validate(cfg["media"]) if cfg.get("media") else None
        self.model, self.processor = load_model(cfg["model"], device=cfg.get("device", "auto"), caps=caps)
        self.model.eval()

    def answer(self, media: list[list], prompts: list[str], options: list[list[str]], max_new_tokens: int) -> list[str]:
        from leaml.models.answer import answer

        return [a.text for a in answer(self.model, self.processor, media, prompts, options,
                                       max_new_tokens=max_new_tokens)]


class Answer(Record):
    """What the model answered to the ``idx``-th example (a record of the evaluation stream)."""

    idx: int = Field(ge=0)
    generation: str
    """The greedy answer, or under ``scoring="options"`` the most likely option."""


class VQARequester(MediaUDF):
    """Stream UDF: :class:`~leaml.streaming.StreamItem` rows with their ``idx`` and ``example`` ->
    an :class:`Answer` each."""

    def __init__(self, target: dict, num_frames: int = 8, retry: dict | None = None, scoring: str = "generate",
                 max_new_tokens: int = 12):
        super().__init__(target, num_frames, retry)
        self.scoring, self.max_new_tokens = scoring, max_new_tokens

    def build_local(self, cfg: dict) -> VQAAnswerer:
        return VQAAnswerer(cfg)

    def process(self, items: list[StreamItem], media: list[list]) -> list:
        from leaml.prompts import vqa_prompt

        examples = [it.example for it in items]
        prompts = [vqa_prompt(ex.question, ex.options) for ex in examples]
        # scoring="generate": the options are in the prompt but the answer is written, not picked.
        options = [ex.options if self.scoring == "options" else [] for ex in examples]

        def answer(idx: list[int]) -> list[str]:
            return self.target.call("answer", [media[j] for j in idx], [prompts[j] for j in idx],
                                    [options[j] for j in idx], self.max_new_tokens)

        return [got if isinstance(got, ItemFailure) else [Answer(idx=it.idx, generation=got)]
                for it, got in zip(items, self.isolating(answer, len(items)))]


def run_inference(examples: list[VQAExample], model_uri: str, media_root: str, cfg: InferenceSettings | None = None,
                  *, engine: Engine, stream_dir: str | None = None, stage: str = "evaluate") -> list[str]:
    """One answer per example, in the same order: greedy generations, or the most likely options
    (``cfg.scoring``); ``""`` for an example in the errors file. ``stream_dir`` keeps the shards
    (and ``errors/``) for resume; None: a temporary directory."""
    cfg = cfg or InferenceSettings()
    if not examples:
        return []
    if stream_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            return _answer_stream(examples, model_uri, media_root, cfg, engine, tmp, stage, key=None)
    return _answer_stream(examples, model_uri, media_root, cfg, engine, stream_dir, stage,
                          key=_stream_key(examples, model_uri, media_root, cfg))


def _answer_stream(examples: list[VQAExample], model_uri: str, media_root: str, cfg: InferenceSettings,
                   engine: Engine, out: str, stage: str, key: dict | None) -> list[str]:
    # the item id orders the shards as the examples are ordered (ids of examples may repeat)
    items = [StreamItem(item_id=f"{i:09d}", idx=i, media=ex.media, media_root=media_root, example=ex)
             for i, ex in enumerate(examples)]
    target = {"local": {"model": model_uri, "device": cfg.device, "torch_threads": _threads(cfg),
                        "media": cfg.media.model_dump()}}
    stream = StreamConfig(batch_size=cfg.batch_size, shard_size=cfg.shard_size, num_actors=cfg.num_actors,
                          min_actors=cfg.num_actors, actor_cpus=cfg.actor_cpus, actor_gpus=cfg.actor_gpus)
    kwargs = dict(target=target, num_frames=cfg.num_frames, scoring=cfg.scoring, max_new_tokens=cfg.max_new_tokens)
    counts = run_sharded(items, VQARequester, kwargs, out, stage, stream, engine=engine, key=key)
    if counts.errors:
        print(f"[{stage}] WARNING: {counts.errors} of {counts.inputs} questions failed and count as wrong; "
              f"why: {out}/errors/ ({read_errors(out)[0].reason[:200]} ...)", flush=True)
    answers = {a.idx: a.generation for a in map(Answer.model_validate, read_shards(out))}
    return [answers.get(i, "") for i in range(len(examples))]


def _stream_key(examples: list[VQAExample], model_uri: str, media_root: str, cfg: InferenceSettings) -> dict:
    """What the answers depend on: the examples, the model's content, the answering settings."""
    from leaml.fingerprint import canonical_digest, digest_inputs

    settings = cfg.model_dump(mode="json", include=set(InferenceSettings.model_fields) - SCHEDULING)
    return {"examples": canonical_digest([ex.model_dump(mode="json") for ex in examples]), "media_root": media_root,
            "model": digest_inputs({"model": model_uri})["model"], "settings": settings}


def _threads(cfg: InferenceSettings) -> int:
    return cfg.torch_threads or max(1, int(cfg.actor_cpus))


def save_predictions(uri: str, examples: list[VQAExample], generations: list[str]) -> None:
    """One JSON line per example: id, category, answer, generation (for error analysis)."""
    from leaml import storage
    from leaml.evaluate.matching import match_option

    lines = [json.dumps({"id": ex.id, "category": ex.category, "answer": ex.answer, "generation": g,
                         "matched": match_option(g, ex.options) if ex.options else None})
             for ex, g in zip(examples, generations, strict=True)]
    storage.write_text(uri, "\n".join(lines) + "\n")
