"""Backbone-agnostic batching: (media, prompt[, target]) -> model inputs, generations, option scores.

Everything goes through ``processor.apply_chat_template`` and ``processor(...)``, so the same code
serves any ``AutoProcessor`` (tiny Qwen2.5-VL / LLaVA, production Qwen2.5-VL).

- ``encode_for_training``: prompt + target + eos, right-padded; ``labels`` are -100 except on the
  target tokens and the final eos, so the loss is on the answer only. ``encode_conversations``:
  the same for several QA turns about one media item (packed training, media encoded once).
- ``generate``: left-padded prompts, decodes only the new tokens; ``<q>``/``<a>`` survive because
  they are not special tokens.
Option scoring lives in :mod:`leaml.models.answer` (one encoding of media + prompt shared by all options).

Media: each item is a list of frames. A frame is one ``{"type": "image"}`` placeholder in the user
turn and one entry of the flat image list, in order, so an image is ``[img]`` and a short video is
``[f0, f1, ...]`` (several images) with no further change here. A native video path (Qwen's
``{"type": "video"}`` + ``videos=[frames]``, which merges frame pairs) needs the torchvision video
processor; it would replace the per-frame placeholders in ``_messages`` and pass ``videos=``.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from PIL import Image

IGNORE_INDEX = -100
Media = Sequence[Sequence[Image.Image]]


def _messages(n_frames: int, prompt: str) -> list[dict]:
    content = [{"type": "image"} for _ in range(n_frames)] + [{"type": "text", "text": prompt}]
    return [{"role": "user", "content": content}]


def prompt_texts(processor, media: Media, prompts: Sequence[str]) -> list[str]:
    """The chat-templated prompt of each example, ending where the answer starts."""
    if len(media) != len(prompts):
        raise ValueError(f"{len(media)} media items but {len(prompts)} prompts")
    controls = _control_tokens(processor.tokenizer)
    template = processor.apply_chat_template
    return [
        template(_messages(len(m), _strip(p, controls)), add_generation_prompt=True, tokenize=False)
        for m, p in zip(media, prompts)
    ]


def _control_tokens(tok) -> list[str]:
    return [t.content for t in tok.added_tokens_decoder.values() if t.special]


def _strip(text: str, controls: list[str]) -> str:
    # Prompt text comes from users (REST): a literal "<image>" or "<|im_end|>" in it would add an
    # image placeholder without an image (a processor error) or forge a turn boundary.
    for c in controls:
        text = text.replace(c, "")
    return text


def _process(processor, media: Media, texts: list[str], padding_side: str):
    images = [frame for item in media for frame in item]
    return processor(
        text=texts, images=images or None, padding=True, padding_side=padding_side, return_tensors="pt"
    )


def to_model_inputs(batch: dict, model) -> dict:
    """Move a batch to the model's device; floating tensors (pixels) take the model's dtype."""
    dev, dt = model.device, model.dtype
    return {k: v.to(dev, dt) if v.is_floating_point() else v.to(dev) for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------
# Training


def encode_for_training(
    processor, media: Media, prompts: Sequence[str], targets: Sequence[str], eos: bool = True
) -> dict[str, torch.Tensor]:
    """Right-padded prompt + target + eos with loss ``labels`` on the target and eos only
    (``eos=False``: a target that is the prefix of a longer text, labels on the target alone)."""
    if len(targets) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    if len(media) != len(prompts):
        raise ValueError(f"{len(media)} media items but {len(prompts)} prompts")
    return encode_conversations(processor, media, [[(p, t)] for p, t in zip(prompts, targets)], eos=eos)


def encode_conversations(
    processor, media: Media, conversations: Sequence[Sequence[tuple[str, str]]], eos: bool = True
) -> dict[str, torch.Tensor]:
    """Each row one multi-turn sequence: the media, then (prompt, answer) turns; ``labels`` on every
    answer (+ eos) only, and ``label_turns`` numbering the answers over the batch (-1 elsewhere),
    so a loss can weigh every QA pair as one example, packed or not. One turn per row is exactly
    :func:`encode_for_training`."""
    if len(media) != len(conversations):
        raise ValueError(f"{len(media)} media items but {len(conversations)} conversations")
    if any(not c for c in conversations):
        raise ValueError("a conversation has no turns")
    tok = processor.tokenizer
    controls = _control_tokens(tok)
    texts, answers = [], []
    for m, turns in zip(media, conversations):
        messages = _messages(len(m), _strip(turns[0][0], controls))
        for (_, answer), (prompt, _) in zip(turns[:-1], turns[1:]):
            messages += [{"role": "assistant", "content": answer},
                         {"role": "user", "content": [{"type": "text", "text": _strip(prompt, controls)}]}]
        last = turns[-1][1] + (tok.eos_token if eos else "")
        texts.append(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + last)
        answers.append([a + tok.eos_token for _, a in turns[:-1]] + [last])
    batch = dict(_process(processor, media, texts, padding_side="right"))
    answer_ids = [[tok(a, add_special_tokens=False)["input_ids"] for a in row] for row in answers]
    batch["labels"], batch["label_turns"] = _answer_labels(batch["input_ids"], batch["attention_mask"], answer_ids)
    return batch


def _answer_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor, answer_ids: list[list[list[int]]]):
    # The last answer is the last len(answer) real tokens of each right-padded row; earlier ones end
    # with eos, which only closes answers, so each is found searching forward from the previous.
    # Answers are tokenized on their own (not located by tokenizing the prompt) and checked, so a
    # tokenizer that merges across a prompt/answer boundary is an error here, not a shifted mask.
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    turns = torch.full_like(input_ids, -1)
    k = 0
    for row, row_answers in enumerate(answer_ids):
        seq, end, cursor = input_ids[row].tolist(), int(attention_mask[row].sum()), 0
        for j, ids in enumerate(row_answers):
            start = end - len(ids) if j == len(row_answers) - 1 else _find(seq, ids, cursor, end)
            if start < cursor or seq[start:start + len(ids)] != ids:
                raise ValueError(
                    f"row {row}: answer {j} does not tokenize the same inside the sequence as alone; "
                    "the chat template should end the prompt on a token boundary"
                )
            labels[row, start:start + len(ids)] = input_ids[row, start:start + len(ids)]
            turns[row, start:start + len(ids)] = k
            cursor, k = start + len(ids), k + 1
    return labels, turns


def _find(seq: list[int], ids: list[int], start: int, end: int) -> int:
    for i in range(start, end - len(ids) + 1):
        if seq[i:i + len(ids)] == ids:
            return i
    return -1


# ---------------------------------------------------------------------------------------------
# Inference


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device):
    # Sampling draws from the global RNG of the model's device; fork it so a seeded call is
    # reproducible without changing the caller's random stream.
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def generate(
    model,
    processor,
    media: Media,
    prompts: Sequence[str],
    max_new_tokens: int = 48,
    do_sample: bool = False,
    top_p: float = 1.0,
    temperature: float = 1.0,
    num_return_sequences: int = 1,
    seed: int | None = None,
    top_k: int = 0,
    repetition_penalty: float = 1.0,
) -> list[list[str]]:
    """``num_return_sequences`` continuations per prompt, new tokens only, special tokens removed.
    Every decoding setting is passed to ``model.generate`` (:func:`decoding_settings`), so the
    checkpoint's ``generation_config.json`` never changes what the caller asked for."""
    tok = processor.tokenizer
    texts = prompt_texts(processor, media, prompts)
    batch = to_model_inputs(dict(_process(processor, media, texts, padding_side="left")), model)
    # Greedy decoding gives n identical sequences, and transformers refuses n > 1 without sampling.
    n_gen = num_return_sequences if do_sample else 1
    settings = decoding_settings(do_sample, temperature, top_p, top_k, repetition_penalty)
    with _seeded(seed, model.device):
        out = model.generate(
            **batch, max_new_tokens=max_new_tokens, num_return_sequences=n_gen,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **settings,
        )
    texts = tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    groups = [texts[i * n_gen:(i + 1) * n_gen] for i in range(len(prompts))]
    return [g * (num_return_sequences // n_gen) for g in groups]


def decoding_settings(do_sample: bool, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                      repetition_penalty: float = 1.0) -> dict:
    """Every setting ``model.generate`` would otherwise take from the checkpoint's generation_config
    (Qwen2.5-VL-Instruct ships ``top_k: 1, top_p: 0.001, repetition_penalty: 1.05``: n samples
    collapse to one, and greedy answers are penalised for repeating the question's words).
    ``top_k=0`` is off. Greedy gets neutral values (``top_k=None``: transformers' validator
    flags any other value as a sampling flag)."""
    if not do_sample:
        return dict(do_sample=False, temperature=1.0, top_p=1.0, top_k=None, min_p=None, typical_p=1.0,
                    repetition_penalty=1.0)
    return dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k, min_p=None, typical_p=1.0,
                repetition_penalty=repetition_penalty)
