"""The vLLM engine of the GPU stages (the teacher captioner, the QA generator): settings -> engine
arguments and Serve placement; media + prompt -> a request; requests -> generations or option scores.

- :class:`VLLMSettings`: memory and parallelism of one engine, flat keys of a stage's config section
  (``captioner``, ``qagen``). :meth:`~VLLMSettings.engine_args` gives ``vllm.LLM(**args)``: weights
  in bf16 (what ``leaml plan`` sizes) and ``generation_config="vllm"``, so nothing of the
  checkpoint's ``generation_config.json`` (Qwen2.5-VL-Instruct: top_k 1, top_p 0.001,
  repetition_penalty 1.05) reaches a request; every request passes its sampling settings anyway.
  :meth:`~VLLMSettings.with_engine_placement`: the Serve options of a replica whose engine spans
  several GPUs (the Ray Serve LLM pattern: a placement group, vLLM's ``ray`` executor).
- :func:`vllm_request`: one prompt of an item: a clip as one video (the teacher) or as one image per
  frame (the layout :mod:`leaml.models.batching` trains and scores with), plus an optional fixed
  continuation to score.
- :class:`VLLMEngine`: one ``vllm.LLM`` (imported when built: the CPU install has no vLLM; an
  ``s3://`` checkpoint is fetched to the local cache first, as ``load_model`` does). Its calls are
  serialised: ``LLM`` is not thread-safe and a Serve replica may run sync calls in a thread pool.
  :meth:`~VLLMEngine.score_options` is :func:`leaml.models.answer.score_options` on vLLM: each
  option's tokens scored from ``prompt_logprobs`` of prompt + option, then :func:`option_probs`.

Importing this module imports neither vLLM nor torch: the stages' configs subclass
:class:`VLLMSettings`, and a driver without a GPU imports them.
"""
from __future__ import annotations

import threading
from typing import Literal, Protocol, Sequence

import numpy as np
from pydantic import Field

from leaml.config import StrictModel

DTYPE = "bfloat16"
"""Weights and activations of every engine: the memory plan sizes vLLM stages at 2 B a parameter, and a
generator exported in fp32 (full fine-tuning keeps fp32 master weights) is served in bf16 as it trained
(autocast), not in vLLM's fp16 fallback for fp32 checkpoints."""

INSTALL_HINT = "backend 'vllm' needs the GPU image: pip install 'leaml[vllm]'"


class PixelCaps(Protocol):
    """What the engine takes of a stage's ``media`` caps (:class:`leaml.train.config.MediaCaps`)."""

    max_pixels: int | None
    min_pixels: int | None


class VLLMSettings(StrictModel):
    """One vLLM engine's memory and parallelism; used when the stage's ``backend`` is ``vllm``."""

    tensor_parallel_size: int = Field(1, ge=1)
    """GPUs per engine (the 72B teacher wants 4-8; a 3B student fits one)."""
    max_model_len: int = Field(8192, ge=256)
    """The longest prompt + output (for scoring: prompt + the scored option); the KV cache must hold
    one such sequence (the memory plan checks it, and that an item at the media caps fits in it)."""
    max_num_batched_tokens: int = Field(8192, ge=256)
    """Tokens one engine step prefills: bounds its activation memory, and the full-vocabulary logits
    of the prompt tokens a scoring step returns log-probabilities for."""
    gpu_memory_utilization: float = Field(0.90, gt=0, le=0.98)
    """The fraction of each GPU the engine claims (weights + activations + KV cache)."""
    distributed_executor_backend: Literal["ray", "mp"] | None = None
    """How an engine spans its tensor-parallel GPUs. None: ``ray`` when tensor_parallel_size > 1,
    since a Serve replica is a Ray actor and ``mp`` would fork workers outside Ray's placement."""

    def executor(self) -> Literal["ray", "mp"] | None:
        """The executor the engine gets (None: vLLM's in-process default, one GPU)."""
        return self.distributed_executor_backend or ("ray" if self.tensor_parallel_size > 1 else None)

    def engine_args(self, model: str, caps: PixelCaps, limit_mm_per_prompt: dict[str, int]) -> dict:
        """``vllm.LLM(**args)``: memory bounds, the pixel caps (Qwen2.5-VL's processor takes them as
        ``mm_processor_kwargs``), the most images / videos a prompt may carry."""
        pixels = {k: v for k, v in (("max_pixels", caps.max_pixels), ("min_pixels", caps.min_pixels)) if v}
        args = dict(model=model, tensor_parallel_size=self.tensor_parallel_size, max_model_len=self.max_model_len,
                    max_num_batched_tokens=self.max_num_batched_tokens,
                    gpu_memory_utilization=self.gpu_memory_utilization, limit_mm_per_prompt=limit_mm_per_prompt,
                    mm_processor_kwargs=pixels, dtype=DTYPE, generation_config="vllm")
        if self.executor():
            args["distributed_executor_backend"] = self.executor()
        return args

    def with_engine_placement(self, opts: dict) -> dict:
        """Serve deployment options (``ReplicaSettings.deployment_options``) of a replica running this
        engine. With the ``ray`` executor, vLLM starts one Ray worker per GPU inside the replica's
        placement group: the replica itself takes no GPU, or it would hold all of them and the
        engine's workers would wait forever; STRICT_PACK keeps the engine on one node."""
        if self.executor() != "ray":
            return opts
        actor = opts["ray_actor_options"]
        return {**opts, "ray_actor_options": {**actor, "num_gpus": 0},
                "placement_group_bundles": [{"CPU": actor["num_cpus"]}] + [{"GPU": 1}] * self.tensor_parallel_size,
                "placement_group_strategy": "STRICT_PACK"}


def vllm_request(tokenizer, frames: Sequence, prompt: str, video: bool = True, continuation: str = "") -> dict:
    """One vLLM prompt: ``frames`` and the user ``prompt``, chat-templated by ``tokenizer``, then
    ``continuation`` (fixed text after the assistant turn starts, to score).

    ``video=True``: several frames go as one video (Qwen2.5-VL's native video path, which merges
    frame pairs), so a clip is not read as N unrelated images: for a model used as it ships (the
    teacher). ``video=False``: one image placeholder per frame, the layout of
    :mod:`leaml.models.batching`, for a model fine-tuned on it (the QA generator). One frame is an
    image either way."""
    from leaml.models.batching import _messages

    if video and len(frames) > 1:
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
        data = {"video": np.stack([np.asarray(f.convert("RGB")) for f in frames])}
    else:
        messages = _messages(len(frames), prompt)
        data = {"image": frames[0] if len(frames) == 1 else list(frames)}
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return {"prompt": text + continuation, "multi_modal_data": data}


def continuation_logprobs(outputs: Sequence, continuations: Sequence[Sequence[int]]) -> list[list[float]]:
    """vLLM outputs of prompts that end with the given token ids -> the log-probability of each of
    those tokens given everything before it. ``RequestOutput.prompt_logprobs`` has one entry per
    prompt position (None at position 0), a dict token id -> ``Logprob`` that always holds the prompt's
    own token. The continuation is tokenized alone, as the transformers path tokenizes its options,
    and must be the prompt's last tokens: a tokenizer merging across the boundary is an error here."""
    out = []
    for k, (o, ids) in enumerate(zip(outputs, continuations, strict=True)):
        prompt = list(o.prompt_token_ids)
        start = len(prompt) - len(ids)
        if start < 1 or prompt[start:] != list(ids):
            raise ValueError(f"request {k}: the scored text does not tokenize the same after the prompt as "
                             "alone; the chat template should end the prompt on a token boundary")
        out.append([o.prompt_logprobs[start + j][t].logprob for j, t in enumerate(ids)])
    return out


def option_probs(logprobs: Sequence[Sequence[float]], options: Sequence[Sequence[str]],
                 reduce: Literal["mean", "sum"] = "mean") -> list[list[float]]:
    """Token log-probabilities per (prompt, option) row, prompts in order -> per prompt, the softmax
    over its options of each option's mean token log-likelihood (``reduce="sum"``: the total; an
    option of no tokens scores 0): the reduction :func:`leaml.models.answer.score_options` applies
    to its tensors, then its own softmax."""
    from leaml.models.answer import softmax_by_prompt  # torch: on the GPU image, which has it

    scores = [sum(lp) if reduce == "sum" else sum(lp) / max(1, len(lp)) for lp in logprobs]
    return softmax_by_prompt(scores, options)


class VLLMEngine:
    """One ``vllm.LLM`` for a stage replica."""

    def __init__(self, args: dict):
        try:
            import vllm
        except ImportError as e:  # the CPU install never has it
            raise ImportError(INSTALL_HINT) from e
        from leaml import storage

        if storage.is_s3(args["model"]):  # vLLM reads a hub id or a local directory
            args = {**args, "model": str(storage.local_path(args["model"]))}
        self.llm = vllm.LLM(**args)
        self.SamplingParams = vllm.SamplingParams
        self.tokenizer = self.llm.get_tokenizer()
        self._lock = threading.Lock()

    def generate(self, requests: list[dict], params) -> list:
        """``LLM.generate``: one output per request, in order; ``params`` one or one per request."""
        with self._lock:
            return self.llm.generate(requests, params, use_tqdm=False)

    def score_options(self, requests: Sequence[dict], options: Sequence[Sequence[str]], eos: bool = True,
                      reduce: Literal["mean", "sum"] = "mean") -> list[list[float]]:
        """Per request (media + prompt), a probability per option, as
        :func:`leaml.models.answer.score_options` defines it: softmax over the options of each
        ``option (+ eos)``'s mean (or total) token log-likelihood after the prompt. One request per
        (prompt, option): vLLM skips the prefix cache for a request that asks for prompt
        log-probabilities, so each option costs a prefill of media + prompt + option (the
        transformers path encodes a prompt once for all its options)."""
        suffix = self.tokenizer.eos_token if eos else ""
        rows = [(req, o + suffix) for req, opts in zip(requests, options, strict=True) for o in opts]
        if not rows:
            return [[] for _ in options]
        ids = self.tokenizer([text for _, text in rows], add_special_tokens=False)["input_ids"]
        # prompt_logprobs=0: the prompt token's own log-probability only (raw: before any temperature,
        # vLLM's default logprobs_mode, as log_softmax of the logits on the transformers path);
        # the one generated token is greedy and unused
        params = self.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outs = self.generate([{**req, "prompt": req["prompt"] + text} for req, text in rows], params)
        return option_probs(continuation_logprobs(outs, ids), options, reduce)
