"""Pseudo-QA stage: unlabeled media + QA generator -> pseudo VQA pairs with provenance.

- :class:`QAGenerator` (model side, a Serve deployment via :func:`build_qa_generator_app`): nucleus
  sampling, ``n`` candidates per item, seeded so a re-run writes the same candidates; and option
  scores for the optional filter. ``decoding: constrained`` samples among valid pairs only (a
  question of the labeled data, then one of its options), by the generator's own likelihoods.
- :func:`judge_candidates` (pure): parse ``<q>Q<q><a>A<a>``, validate (the question lists its
  options, the answer is one of them, the options are the known option set of a template seen in
  the labeled data when ``known_templates`` is given), dedupe per item, filter. Every candidate is
  kept in the artifact with ``kept`` and, when dropped, ``reason``.
- :class:`QARequester`: the stream's side (a :class:`leaml.streaming.MediaUDF`: decode media, call
  the model target, judge).
"""
from __future__ import annotations

import hashlib
from functools import partial
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from leaml.records import (CandidateScores, MediaRef, PseudoCandidate, QAParseError, VQAExample, format_qa_target,
                           parse_qa_target)
from leaml.models.vllm_engine import VLLMSettings
from leaml.streaming import ItemFailure, MediaUDF, ReplicaSettings, StreamItem, call_isolating, stream_deployment
from leaml.train.config import MediaCaps

APP_NAME = "leaml-qa-generator"
DEPLOYMENT_NAME = "QAGenerator"


class QAGenConfig(ReplicaSettings, VLLMSettings):
    """The QA generator's sampling and filter; its replica settings are
    :class:`~leaml.streaming.ReplicaSettings`, its vLLM engine's (``backend: vllm``)
    :class:`~leaml.models.vllm_engine.VLLMSettings`."""

    backend: Literal["transformers", "vllm"] = "transformers"
    """transformers: any checkpoint, on the replica's GPU or the CPU (every CPU run and test).
    vllm: GPU image only; the same three calls with the same outputs (:class:`_VLLMQAGenerator`)."""
    model: str = ""
    """The trained QA generator checkpoint (a Hugging Face directory: what the training loop exports)."""
    n: int = Field(4, ge=1)
    """Candidates sampled per media item."""
    top_p: float = Field(0.9, gt=0, le=1)
    temperature: float = Field(1.0, gt=0)
    top_k: int = Field(0, ge=0)
    """Sample among the k most likely tokens only; 0 = off. Always passed to ``generate``, so the
    checkpoint's generation_config (Qwen2.5-VL-Instruct: top_k 1) cannot turn sampling greedy."""
    repetition_penalty: float = Field(1.0, gt=0)
    """1.0 = none (Qwen2.5-VL-Instruct's generation_config would apply 1.05)."""
    max_new_tokens: int = Field(48, ge=1)
    """Free decoding: the least tokens a candidate may take. With the labeled questions known, the
    limit grows to the longest valid target (:func:`generation_limit`), so a question with 40
    options (Kvasir-VQA's multi-answer templates: ~380 tokens) is never cut off mid-list."""
    decoding: Literal["free", "constrained"] = "free"
    """free: sample text token by token and parse it (the paper). constrained: sample a question
    among those of the labeled data by the generator's likelihood of writing it, then its answer
    among that question's options (guided decoding over a choice set, as vLLM's guided_choice), both
    with ``temperature`` and ``top_p``: every candidate is a valid pair. Needs the known questions."""
    question_temperature: float | None = Field(None, gt=0)
    """Constrained decoding: the temperature of the question choice alone (None = ``temperature``).
    A generator trained on a few labeled pairs puts nearly all its mass on one question (sport demo:
    88-100% of the kept pairs ask one of the 10 questions), so its pseudo pairs teach one answer to
    every question; above 1 this spreads the questions while answers keep ``temperature``."""
    num_frames: int = Field(8, ge=1)
    media: MediaCaps = MediaCaps()
    """Pixels per frame the generator's processor may make of an item (as in its training; vLLM:
    ``mm_processor_kwargs``)."""
    seed: int = 0
    filter: Literal["none", "consistent", "threshold"] = "consistent"
    """none: keep every valid pair; consistent: keep a pair only when its answer is the
    generator's most likely option for its question; threshold: when that option's probability
    is at least ``min_prob``."""
    min_prob: float = Field(0.5, ge=0, le=1)
    device: str = "auto"
    """transformers backend: where the model runs (``auto``: the replica's GPU if it has one)."""

    @model_validator(mode="after")
    def _vllm_sampling_range(self) -> "QAGenConfig":
        if self.backend == "vllm" and self.temperature > 2:
            raise ValueError(f"qagen.temperature={self.temperature}: vLLM's SamplingParams accepts 0-2 "
                             "(constrained decoding's question_temperature has no such bound)")
        return self

    def deployment_options(self) -> dict:
        """The replica settings' Serve options; a tensor-parallel vLLM engine adds its placement group."""
        opts = super().deployment_options()
        return self.with_engine_placement(opts) if self.backend == "vllm" else opts

    def vllm_engine_args(self) -> dict:
        """``vllm.LLM(**args)`` of this generator: up to ``num_frames`` images per prompt, no video (a
        clip goes as its frames, the layout the generator was trained on)."""
        return self.engine_args(self.model, self.media, {"image": self.num_frames, "video": 0})


def item_seed(seed: int, media_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{media_id}:qagen".encode()).digest()[:4], "big")


LIMIT_MARGIN = 8
"""Tokens over the longest target: a generator may write an option list a little differently."""


def generation_limit(tokenizer, known: dict[str, list[str]] | None, floor: int) -> int:
    """max(``floor``, the token count of the longest valid ``<q>Q<q><a>A<a>`` target + a margin):
    each known question with its options and its longest option as the answer, eos included."""
    if not known:
        return floor
    longest = max(len(tokenizer(format_qa_target(q, opts, max(opts, key=len)) + tokenizer.eos_token,
                                add_special_tokens=False)["input_ids"])
                  for q, opts in known.items() if opts)
    return max(floor, longest + LIMIT_MARGIN)


def nucleus(probs: list[float], top_p: float, temperature: float) -> np.ndarray:
    """A distribution over choices -> its nucleus: tempered, cut to the smallest most likely set
    whose mass reaches ``top_p``, renormalised."""
    p = np.asarray(probs, dtype=np.float64) ** (1.0 / temperature)
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    cut = int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1
    out = np.zeros_like(p)
    out[order[:cut]] = p[order[:cut]]
    return out / out.sum()


class QAGenerator:
    """Media batch -> ``n`` sampled ``<q>Q<q><a>A<a>`` strings per item, and option scores; on
    transformers (the model in this process) or vLLM (:class:`_VLLMQAGenerator`), chosen by
    ``backend``: the same calls, the same outputs."""

    def __init__(self, cfg: dict):
        self.cfg = QAGenConfig.model_validate(cfg)
        self._vllm = None
        if self.cfg.backend == "vllm":
            self._vllm = _VLLMQAGenerator(self.cfg)
            self._tokenizer = self._vllm.engine.tokenizer
            return
        import torch

        from leaml.models.builders import load_model

        torch.set_num_threads(max(1, int(self.cfg.replica_cpus)))
        self.model, self.processor = load_model(self.cfg.model, device=self.cfg.device, caps=self.cfg.media)
        self._tokenizer = self.processor.tokenizer

    def sample(self, media: list[list], media_ids: list[str],
               known: dict[str, list[str]] | None = None) -> list[list[str]]:
        """``n`` candidates per item, all items in one generate call, up to :func:`generation_limit`
        tokens (``known``: the labeled questions and their options). Seeded by the batch's item ids:
        the same batch gives the same candidates (batched sampling cannot seed each row alone; the
        vLLM backend seeds each item by its own id)."""
        if self._vllm is not None:
            return self._vllm.sample(media, media_ids, self._limit(known))
        from leaml.models.batching import generate
        from leaml.prompts import qagen_prompt

        self._check(media)
        c = self.cfg
        return generate(self.model, self.processor, media, [qagen_prompt()] * len(media), do_sample=True,
                        top_p=c.top_p, temperature=c.temperature, top_k=c.top_k,
                        repetition_penalty=c.repetition_penalty, num_return_sequences=c.n,
                        max_new_tokens=self._limit(known), seed=item_seed(c.seed, "|".join(media_ids)))

    def _check(self, media: list[list]) -> None:
        """A known processor limit (:mod:`leaml.models.limits`) fails the batch before the model runs;
        the requester's bisection then isolates the item. (vLLM checks its own: an item over
        ``max_model_len`` or over the images a prompt may carry fails its batch the same way.)"""
        if self._vllm is not None:
            return
        from leaml.models.limits import check_media, context_length

        for frames in media:
            check_media(self.processor, frames, context_length(self.model))

    def _limit(self, known: dict[str, list[str]] | None) -> int:
        # the same known set arrives with every batch of a stage: count its tokens once
        key = hash(tuple(sorted((q, tuple(o)) for q, o in (known or {}).items())))
        if getattr(self, "_limit_key", None) != key:
            self._limit_key = key
            self._limit_value = generation_limit(self._tokenizer, known, self.cfg.max_new_tokens)
        return self._limit_value

    def sample_constrained(self, media: list[list], media_ids: list[str],
                           known: dict[str, list[str]]) -> list[dict]:
        """Per item: ``n`` valid ``<q>Q<q><a>A<a>`` texts, and the option probabilities of each
        question drawn (so the filter needs no second pass). Seeded per item."""
        from leaml.records import Q_TAG

        self._check(media)
        questions = sorted(known)
        # P(the text starts "<q>Question"): the total log-likelihood of that prefix (a sequence's
        # probability, which a per-token mean is not); the option list that follows is fixed per
        # question, so it adds nothing to the choice and is not scored.
        heads = [f"{Q_TAG}{q}" for q in questions]
        q_probs = self._scores(media, [heads] * len(media), eos=False, reduce="sum")
        rngs = [np.random.default_rng(item_seed(self.cfg.seed, mid)) for mid in media_ids]
        q_temperature = self.cfg.question_temperature or self.cfg.temperature
        drawn = [[questions[i] for i in rng.choice(len(questions), size=self.cfg.n,
                                                   p=nucleus(p, self.cfg.top_p, q_temperature))]
                 for rng, p in zip(rngs, q_probs)]
        flat = [(i, q) for i, qs in enumerate(drawn) for q in dict.fromkeys(qs)]
        probs = self.option_probs([media[i] for i, _ in flat], [q for _, q in flat], [known[q] for _, q in flat])
        per_item = [{} for _ in media]
        for (i, q), p in zip(flat, probs):
            per_item[i][q] = p
        out = []
        for rng, qs, opt_probs in zip(rngs, drawn, per_item):
            answers = [known[q][rng.choice(len(known[q]), p=nucleus(opt_probs[q], self.cfg.top_p, self.cfg.temperature))]
                       for q in qs]
            out.append({"texts": [format_qa_target(q, known[q], a) for q, a in zip(qs, answers)],
                        "option_probs": opt_probs})
        return out

    def option_probs(self, media: list[list], questions: list[str], options: list[list[str]]) -> list[list[float]]:
        """P(option | media, question) under the generator, over full ``<q>..<a>o<a>`` targets."""
        targets = [[format_qa_target(q, opts, o) for o in opts] for q, opts in zip(questions, options)]
        return self._scores(media, targets)

    def _scores(self, media: list[list], targets: list[list[str]], eos: bool = True,
                reduce: Literal["mean", "sum"] = "mean") -> list[list[float]]:
        """Per item, softmax over its ``targets`` of their mean (or total) token log-likelihood after
        the QA prompt (:func:`leaml.models.answer.score_options`)."""
        if self._vllm is not None:
            return self._vllm.score_options(media, targets, eos, reduce)
        from leaml.models.answer import score_options
        from leaml.prompts import qagen_prompt

        return score_options(self.model, self.processor, media, [qagen_prompt()] * len(media), targets,
                             eos=eos, reduce=reduce)


class _VLLMQAGenerator:
    """The QA generator on a vLLM engine (GPU image). A clip goes as its frames, one image each,
    not as one video: the generator was fine-tuned on that layout (``leaml.models.batching``), so
    its samples and likelihoods mean what they mean on the transformers path, and an item costs the
    tokens the memory plan counts for its training."""

    def __init__(self, cfg: QAGenConfig):
        from leaml.models.vllm_engine import VLLMEngine

        self.cfg = cfg
        self.engine = VLLMEngine(cfg.vllm_engine_args())

    def _requests(self, media: list[list]) -> list[dict]:
        from leaml.models.vllm_engine import vllm_request
        from leaml.prompts import qagen_prompt

        return [vllm_request(self.engine.tokenizer, frames, qagen_prompt(), video=False) for frames in media]

    def sample(self, media: list[list], media_ids: list[str], max_tokens: int) -> list[list[str]]:
        c = self.cfg
        # One SamplingParams per item, seeded by its own id: vLLM seeds each request alone (its n
        # samples draw with seed, seed + 1, ...), so an item's candidates do not depend on the batch it
        # came in, which batched HF generate cannot offer. Every setting is passed, and the engine
        # loads no generation_config (engine_args), so the checkpoint's (Qwen2.5-VL-Instruct: top_k 1,
        # top_p 0.001, repetition_penalty 1.05) never applies. top_k 0 is off in vLLM as in HF.
        params = [self.engine.SamplingParams(n=c.n, temperature=c.temperature, top_p=c.top_p, top_k=c.top_k,
                                             min_p=0.0, repetition_penalty=c.repetition_penalty,
                                             max_tokens=max_tokens, seed=item_seed(c.seed, mid))
                  for mid in media_ids]
        return [[o.text for o in out.outputs] for out in self.engine.generate(self._requests(media), params)]

    def score_options(self, media: list[list], targets: list[list[str]], eos: bool,
                      reduce: Literal["mean", "sum"]) -> list[list[float]]:
        return self.engine.score_options(self._requests(media), targets, eos=eos, reduce=reduce)


def judge_candidates(media: MediaRef, texts: list[str], known_templates: dict[str, list[str]] | None = None,
                     source_model: str = "") -> list[PseudoCandidate]:
    """Parse, validate and dedupe one item's candidates -> one judged candidate per text.

    With ``known_templates`` (question -> option set of the labeled data), a question must be a
    known one; its option list is then taken from the labeled data (a generator that garbles a
    long option list but asks a known question with a valid answer still yields a usable pair;
    ``meta.options_repaired`` records it) and the answer must be one of those options.
    """
    rows, seen = [], set()
    for k, text in enumerate(texts):
        candidate = partial(PseudoCandidate, media_id=media.id, sample=k, text=text)
        try:
            qa = parse_qa_target(text, require_options=known_templates is None)
        except QAParseError as e:
            rows.append(candidate(reason=f"unparsable: {e}"))
            continue
        options, repaired = qa.options, False
        if known_templates is not None:
            known = known_templates.get(qa.question)
            if known is None:
                rows.append(candidate(reason="unknown question"))
                continue
            options, repaired = known, qa.options != known
        key = (qa.question.lower(), qa.answer.lower())
        if qa.answer not in options:
            rows.append(candidate(reason=f"answer {qa.answer!r} is not one of the options"))
        elif key in seen:
            rows.append(candidate(reason="duplicate"))
        else:
            seen.add(key)
            ex = VQAExample(id=f"pseudo/{media.id}/{k}", media=media, question=qa.question, options=options,
                            answer=qa.answer, category="pseudo", source="pseudo", split="train",
                            meta={"sample": k, "generator": source_model, "options_repaired": repaired})
            rows.append(candidate(kept=True, example=ex))
    return rows


def apply_filter(rows: list[PseudoCandidate], probs: list[list[float]], cfg: QAGenConfig) -> list[PseudoCandidate]:
    """``rows`` with the filter's scores on each kept one, those it rejects dropped (new records;
    ``rows`` stay as they were). ``probs``: option probabilities, one list per kept row."""
    out = list(rows)
    for i, p in zip([i for i, r in enumerate(rows) if r.kept], probs, strict=True):
        out[i] = _filtered(rows[i], p, cfg)
    return out


def _filtered(row: PseudoCandidate, p: list[float], cfg: QAGenConfig) -> PseudoCandidate:
    ex = row.example
    best = ex.options[int(np.argmax(p))]
    p_answer = p[ex.options.index(ex.answer)]
    scores = CandidateScores(p_answer=round(float(p_answer), 4), argmax=best)
    if cfg.filter == "consistent" and best != ex.answer:
        reason = f"filter: generator prefers {best!r}"
    elif cfg.filter == "threshold" and p_answer < cfg.min_prob:
        reason = f"filter: p(answer)={p_answer:.2f} < {cfg.min_prob}"
    else:
        return row.model_copy(update={"scores": scores})
    return row.model_copy(update={"scores": scores, "kept": False, "reason": reason})


def build_qa_generator_app(args: dict):
    """Serve builder (``import_path: leaml.pipeline.qa_generator:build_qa_generator_app``)."""
    cfg = QAGenConfig.model_validate(args)
    return stream_deployment(QAGenerator, DEPLOYMENT_NAME, cfg, ["sample", "sample_constrained", "option_probs"]
                             ).bind(cfg.model_dump())


class QARequester(MediaUDF):
    """Stream UDF: media rows -> judged candidate rows, or an error per item that does not decode
    or that the model refuses (isolated by ``streaming.call_isolating``; the rest are kept).
    ``target``: ``{"serve": {"app", "deployment"}}``, or ``{"local": {}}`` for :class:`QAGenerator`
    of ``cfg`` in this process."""

    def __init__(self, target: dict, cfg: dict, known_templates: dict[str, list[str]] | None = None,
                 retry: dict | None = None):
        self.cfg = QAGenConfig.model_validate(cfg)
        self.known = known_templates
        if self.cfg.decoding == "constrained" and not known_templates:
            raise ValueError("qagen.decoding=constrained samples among the labeled data's questions: "
                             "known_templates is required (use decoding=free without them)")
        super().__init__(target, self.cfg.num_frames, retry)

    def build_local(self, cfg: dict) -> QAGenerator:
        return QAGenerator(self.cfg.model_dump())

    def process(self, items: list[StreamItem], media: list[list]) -> list:
        refs = [it.media for it in items]
        sampled = self.isolating(lambda idx: self._sample([media[j] for j in idx], [refs[j] for j in idx]),
                                 len(refs))
        return [self._judge(ref, frames, got) for ref, frames, got in zip(refs, media, sampled)]

    def _judge(self, ref: MediaRef, frames: list, sampled) -> list[PseudoCandidate] | ItemFailure:
        """One item's judged candidates, or why the model refused it."""
        if isinstance(sampled, ItemFailure):
            return sampled
        cands, probs = sampled
        rows = judge_candidates(ref, cands, self.known, self.cfg.model)
        # the filter's option scores are one more model call on this item alone
        (filtered,) = call_isolating(lambda _: [self._filter(rows, frames, probs)], [ref], self.retry)
        return filtered

    def _sample(self, media: list[list], refs: list[MediaRef]) -> list[tuple[list[str], dict | None]]:
        """(candidate texts, option probabilities per question when the sampler already has them)."""
        ids = [r.id for r in refs]
        if self.cfg.decoding == "free":
            return [(texts, None) for texts in self.target.call("sample", media, ids, self.known)]
        out = self.target.call("sample_constrained", media, ids, self.known)
        return [(o["texts"], o["option_probs"]) for o in out]

    def _filter(self, rows: list[PseudoCandidate], frames: list,
                known_probs: dict[str, list[float]] | None) -> list[PseudoCandidate]:
        kept = [r.example for r in rows if r.kept]
        if self.cfg.filter == "none" or not kept:
            return rows
        if known_probs is not None:
            probs = [known_probs[e.question] for e in kept]
        else:
            probs = self.target.call("option_probs", [frames] * len(kept), [e.question for e in kept],
                                     [e.options for e in kept])
        return apply_filter(rows, probs, self.cfg)
