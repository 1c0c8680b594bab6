"""The one answering core: (media, prompt, options) -> an answer, for evaluation and the service.

- :func:`answer`: items with options -> the most likely option and every option's probability;
  items without -> the greedy generation (:func:`leaml.models.batching.generate`). It raises on
  failure; callers that must keep one bad item from failing its neighbours retry it alone (the
  service: ``VQAPredictor.predict_many``).
- :func:`score_options`: per prompt, softmax over its options of each option's mean (or total)
  token log-likelihood as the answer. Each media + prompt is encoded ONCE: the prompts are prefilled
  left-padded into a KV cache, then all options of a prompt (tokens + eos) run as ONE continuation
  row of that cache, packed side by side under a block-diagonal causal mask (a token sees the prompt
  and its own option only), each option's positions counted from the prompt's end. The vision
  tower and the prompt cost the same for 2 options as for 8, and the cache is never copied per
  option; the probabilities equal one full forward per (prompt, option) row, which stays as the
  fallback (:func:`shared_prefix_supported`).

Continuation positions are given explicitly (:data:`CONTINUATION_POSITIONS`, per architecture):
every packed option restarts at the prompt's end. Qwen2.5-VL's mrope numbers text after an image
from ``max position + 1``, not from the token count (the gap is ``rope_deltas``); its own cached
path numbers new tokens consecutively from a ``rope_deltas`` it keeps on the model, so here the
prompt's positions come from ``get_rope_index`` and are passed in, and that state is never touched.
An architecture without a rule here, or an attention without custom masks, is scored per option.
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from leaml.models.batching import (
    IGNORE_INDEX, Media, _process, encode_for_training, generate, prompt_texts, to_model_inputs,
)

log = logging.getLogger("leaml.models.answer")
ScorePath = Literal["auto", "shared_prefix", "per_option"]


@dataclass(frozen=True)
class Answer:
    text: str
    """The chosen option, or the generation (new tokens only, not stripped)."""
    scores: list[float] | None = None
    """One probability per option, summing to 1; None when the answer was generated."""


def answer(model, processor, media: Media, prompts: Sequence[str], options: Sequence[Sequence[str]],
           max_new_tokens: int = 16, rows_per_forward: int = 16) -> list[Answer]:
    """One :class:`Answer` per item, in order: one ``score_options`` call for the items with options
    (``rows_per_forward``: its ``batch_size``), one greedy ``generate`` for the rest."""
    if not len(media) == len(prompts) == len(options):
        raise ValueError(f"{len(media)} media items, {len(prompts)} prompts, {len(options)} option lists")
    out: list[Answer | None] = [None] * len(prompts)
    mc = [i for i, opts in enumerate(options) if opts]
    free = [i for i, opts in enumerate(options) if not opts]
    if mc:
        probs = score_options(model, processor, [media[i] for i in mc], [prompts[i] for i in mc],
                              [list(options[i]) for i in mc], batch_size=rows_per_forward)
        for i, p in zip(mc, probs, strict=True):
            best = max(range(len(p)), key=p.__getitem__)
            out[i] = Answer(options[i][best], [float(x) for x in p])
    if free:
        texts = generate(model, processor, [media[i] for i in free], [prompts[i] for i in free],
                         max_new_tokens=max_new_tokens)
        for i, t in zip(free, texts, strict=True):
            out[i] = Answer(t[0])
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Option scoring


@torch.no_grad()
def score_options(
    model,
    processor,
    media: Media,
    prompts: Sequence[str],
    options: Sequence[Sequence[str]],
    batch_size: int = 16,
    eos: bool = True,
    reduce: Literal["mean", "sum"] = "mean",
    path: ScorePath = "auto",
) -> list[list[float]]:
    """Per prompt, a probability per option: softmax over options of the mean token log-likelihood
    of ``option + eos`` as the answer (eos included, so an option that is a prefix of another is
    not favoured; ``eos=False`` scores options that are prefixes of a longer answer, such as the
    question part of a QA pair; ``reduce="sum"`` ranks by total log-likelihood, the options'
    probabilities as whole sequences). ``batch_size`` bounds the sequences per forward pass:
    prompts (each continued by all its options in one row) on the shared-prefix path, (prompt,
    option) rows on the per-option path; a shared-prefix row is shorter than any per-option row as
    long as a prompt's options together are shorter than the prompt. ``path``: ``auto`` = shared
    prefix where :func:`shared_prefix_supported`, else one full forward per (prompt, option) row."""
    if not len(media) == len(prompts) == len(options):
        raise ValueError(f"{len(media)} media items, {len(prompts)} prompts, {len(options)} option lists")
    if path == "auto":
        path = "shared_prefix" if shared_prefix_supported(model) else "per_option"
        if path == "per_option":
            log.info("%s: no shared-prefix scoring; one forward per option", model.config.model_type)
    elif path == "shared_prefix" and not shared_prefix_supported(model):
        raise ValueError(f"shared-prefix scoring is not available for {model.config.model_type!r} in this state")
    rows = _shared_prefix_scores if path == "shared_prefix" else _per_option_scores
    return softmax_by_prompt(rows(model, processor, media, prompts, options, batch_size, eos, reduce), options)


def softmax_by_prompt(scores: Sequence[float], options: Sequence[Sequence[str]]) -> list[list[float]]:
    """One score per (prompt, option), prompts in order -> per prompt, the softmax over its options
    (every scoring backend ends here, so they agree on what a probability is)."""
    out, k = [], 0
    for opts in options:
        out.append(torch.softmax(torch.tensor(scores[k:k + len(opts)]), dim=0).tolist() if opts else [])
        k += len(opts)
    return out


def shared_prefix_supported(model) -> bool:
    """Whether :func:`score_options` can encode each prompt once for ``model``: a continuation
    position rule for its architecture, an attention that takes a custom 4-D mask (``sdpa``,
    ``eager``; not flash-attention's varlen kernels) and plain dynamic KV-cache layers (no sliding
    window). A model training with activation checkpointing qualifies: it keeps its cache when no
    gradient is taken."""
    if model.config.model_type not in CONTINUATION_POSITIONS:
        return False
    if model.config.get_text_config()._attn_implementation not in _BLOCK_MASKS:
        return False
    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)


def _per_option_scores(model, processor, media, prompts, options, batch_size, eos, reduce) -> list[float]:
    # One full forward per (media, prompt, option) row: the reference, and the fallback.
    rows = [(m, p, o) for m, p, opts in zip(media, prompts, options, strict=True) for o in opts]
    scores: list[float] = []
    for i in range(0, len(rows), batch_size):
        batch = encode_for_training(processor, *map(list, zip(*rows[i:i + batch_size])), eos=eos)
        labels = batch.pop("labels").to(model.device)
        batch.pop("label_turns")
        logits = model(**to_model_inputs(batch, model)).logits
        scores += _logprob(logits, labels, reduce).tolist()
    return scores


def _shared_prefix_scores(model, processor, media, prompts, options, batch_size, eos, reduce) -> list[float]:
    # Options tokenized alone, as encode_for_training's labels are (which checks that they tokenize
    # the same after the prompt: the chat template ends the prompt on a token boundary).
    tok = processor.tokenizer
    unique = list(dict.fromkeys(o for opts in options for o in opts))
    suffix = tok.eos_token if eos else ""
    ids = dict(zip(unique, tok([o + suffix for o in unique], add_special_tokens=False)["input_ids"])) if unique else {}
    scores: list[float] = []  # per (prompt, option) row, prompts in order: as _per_option_scores
    todo = [i for i, opts in enumerate(options) if opts]
    for chunk in (todo[k:k + batch_size] for k in range(0, len(todo), batch_size)):
        prefix = _prefill(model, processor, [media[i] for i in chunk], [prompts[i] for i in chunk])
        scores += _score_continuations(model, prefix, [[ids[o] for o in options[i]] for i in chunk],
                                       tok.pad_token_id, reduce)
    return scores


@dataclass
class _Prefix:
    cache: DynamicCache
    last_logits: torch.Tensor  # (B, V): the prediction of each option's first token
    mask: torch.Tensor  # (B, P), left-padded
    next_position: torch.Tensor  # (B,): the position of each row's first continuation token


def _prefill(model, processor, media: Media, prompts: Sequence[str]) -> _Prefix:
    texts = prompt_texts(processor, media, prompts)
    batch = to_model_inputs(dict(_process(processor, media, texts, padding_side="left")), model)
    positions, next_position = CONTINUATION_POSITIONS[model.config.model_type](model, batch)
    out = model(**batch, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    if not isinstance(cache, DynamicCache) or any(type(layer) is not DynamicLayer for layer in cache.layers):
        raise RuntimeError(f"{model.config.model_type}: the prefill returned no plain dynamic KV cache")
    return _Prefix(cache, out.logits[:, -1], batch["attention_mask"], next_position)


def _score_continuations(model, prefix: _Prefix, option_ids: list[list[list[int]]], pad_id: int,
                         reduce: str) -> list[float]:
    """Every option of prefix row b packed into continuation row b: a token sees its prompt and the
    earlier tokens of its own option (block-diagonal causal mask), at positions counted from the
    prompt's end, so each option is scored as if it alone followed the prompt. The cache is never
    copied per option. -> each option's mean / total log-likelihood, rows and options in order."""
    dev, n_rows = prefix.mask.device, prefix.mask.shape[0]
    width = max(1, max(sum(map(len, opts)) for opts in option_ids))
    ids = torch.full((n_rows, width), pad_id, dtype=torch.long)
    option = torch.full((n_rows, width), -1, dtype=torch.long)  # index of the token's option; -1: padding
    offset = torch.zeros((n_rows, width), dtype=torch.long)  # the token's index within its option
    k = 0
    for b, opts in enumerate(option_ids):
        t = 0
        for o in opts:
            ids[b, t:t + len(o)] = torch.tensor(o, dtype=torch.long)
            option[b, t:t + len(o)], offset[b, t:t + len(o)] = k, torch.arange(len(o))
            t, k = t + len(o), k + 1
    ids, option, offset = ids.to(dev), option.to(dev), offset.to(dev)
    own = (option[:, :, None] == option[:, None, :]) & (option[:, None, :] >= 0)
    own &= torch.ones(width, width, dtype=torch.bool, device=dev).tril()
    allowed = torch.cat([prefix.mask.bool()[:, None, :].expand(-1, width, -1), own], dim=-1)[:, None]
    mask = _BLOCK_MASKS[model.config.get_text_config()._attn_implementation](allowed, model.dtype)
    out = model(input_ids=ids, attention_mask=mask, position_ids=prefix.next_position[:, None] + offset,
                use_cache=True, **{_cache_kwarg(model): prefix.cache})
    # The first token of an option is predicted by the prompt's last position, the others by the
    # token before them in the row (their own option's, by the mask).
    first = torch.log_softmax(prefix.last_logits.float(), dim=-1).gather(-1, ids)
    after = torch.log_softmax(out.logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    logp = torch.where(offset == 0, first, torch.cat([first[:, :1], after], dim=1))
    real = option >= 0
    total = torch.zeros(k, device=dev).index_add_(0, option[real], logp[real])
    count = torch.zeros(k, device=dev).index_add_(0, option[real], torch.ones_like(logp[real]))
    return (total if reduce == "sum" else total / count.clamp(min=1)).tolist()


def _bool_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return allowed


def _additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


_BLOCK_MASKS = {"sdpa": _bool_mask, "eager": _additive_mask}
"""Attention implementation -> the 4-D mask it takes as is (True / 0.0: attend)."""


def _cache_kwarg(model) -> str:
    # transformers 5.x renamed forward's ``past_key_values`` to ``cache`` (the old name warns, then goes).
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _logprob(logits: torch.Tensor, labels: torch.Tensor, reduce: str = "mean") -> torch.Tensor:
    # Position t predicts token t+1.
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    mask = labels != IGNORE_INDEX
    logp = torch.log_softmax(logits, dim=-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    total = (logp * mask).sum(-1)
    return total if reduce == "sum" else total / mask.sum(-1).clamp(min=1)


# ---------------------------------------------------------------------------------------------
# Continuation positions, per architecture: batch -> (prefill position_ids, next position per row)


def _text_positions(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    # 1-D RoPE over the real tokens of a left-padded row (pads at 0, masked anyway): the positions a
    # right-padded full sequence gets, so the numbers match the per-option path.
    mask = batch["attention_mask"]
    return (mask.long().cumsum(-1) - 1).clamp(min=0), mask.long().sum(-1)


def _mrope_positions(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    # Qwen2-VL family: 3-D positions; text after the media continues from max position + 1, i.e.
    # the token count + rope_delta. Continuation tokens are text: one position for all three axes
    # (the model expands 2-D position_ids to 3-D).
    if batch.get("image_grid_thw") is None and batch.get("video_grid_thw") is None:
        return _text_positions(model, batch)
    positions, deltas = model.model.get_rope_index(
        batch["input_ids"], batch["mm_token_type_ids"], image_grid_thw=batch.get("image_grid_thw"),
        video_grid_thw=batch.get("video_grid_thw"), second_per_grid_ts=batch.get("second_per_grid_ts"),
        attention_mask=batch["attention_mask"],
    )
    return positions, batch["attention_mask"].long().sum(-1) + deltas.view(-1).to(positions.device)


CONTINUATION_POSITIONS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
    "qwen2_5_vl": _mrope_positions,
    "llava": _text_positions,
}
"""``model.config.model_type`` -> its position rule; another architecture is scored per option."""
