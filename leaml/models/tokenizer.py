"""A byte-level BPE tokenizer trained locally, and the chat template of each architecture.

texts -> ``PreTrainedTokenizerFast`` (no hub download: the tiny models get their vocabulary from the
run's own text). Byte-level BPE round-trips any text exactly (``decode(encode(s)) == s``), so the
QA generator's output parses the same way its training target was written.

Vocabulary layout: the special tokens first (pad, eos, chat roles, every architecture's image
tokens, so one tokenizer serves both tiny architectures), then the 256 byte symbols and the learned
merges, then the generator's tags ``<q>`` and ``<a>`` as added tokens that are *not* special:
they are single tokens, but ``decode(..., skip_special_tokens=True)`` keeps them.
"""
from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from leaml.records import A_TAG, Q_TAG

PAD, EOS = "<|pad|>", "<|end|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
QWEN_IMAGE_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
LLAVA_IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = (PAD, EOS, *ROLE_TOKENS, *QWEN_IMAGE_TOKENS, LLAVA_IMAGE_TOKEN)
TAG_TOKENS = (Q_TAG, A_TAG)

# One short template per architecture: "<|user|>{media}{text}<|assistant|>{answer}<|end|>".
# Role words cost one token each instead of Qwen's "<|im_start|>user\n" (3 tokens): the tiny models
# have few positions to spare. Only the media placeholder differs between architectures; the
# processor expands it to one token per visual embedding.
_TEMPLATE = (
    "{%- for m in messages -%}"
    "{{ '<|' + m['role'] + '|>' }}"
    "{%- if m['content'] is string -%}{{ m['content'] }}"
    "{%- else -%}{%- for c in m['content'] -%}"
    "{%- if c['type'] == 'image' -%}__IMAGE__"
    "{%- elif c['type'] == 'video' -%}__VIDEO__"
    "{%- elif c['type'] == 'text' -%}{{ c['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- if m['role'] == 'assistant' -%}" + EOS + "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)
CHAT_TEMPLATES = {
    "qwen2_5_vl": _TEMPLATE.replace("__IMAGE__", "<|vision_start|><|image_pad|><|vision_end|>").replace(
        "__VIDEO__", "<|vision_start|><|video_pad|><|vision_end|>"
    ),
    # LLaVA has no video token: a video is sent as several images (see leaml.models.batching).
    "llava": _TEMPLATE.replace("__IMAGE__", LLAVA_IMAGE_TOKEN).replace("__VIDEO__", LLAVA_IMAGE_TOKEN),
}


def chat_template(arch: str) -> str:
    """The jinja chat template for ``arch`` (``qwen2_5_vl`` or ``llava``)."""
    if arch not in CHAT_TEMPLATES:
        raise ValueError(f"no chat template for architecture {arch!r}; known: {sorted(CHAT_TEMPLATES)}")
    return CHAT_TEMPLATES[arch]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts``; ``vocab_size`` counts specials and bytes, not the tags."""
    n_fixed = len(SPECIAL_TOKENS) + len(pre_tokenizers.ByteLevel.alphabet())
    if vocab_size <= n_fixed:
        raise ValueError(f"vocab_size={vocab_size} leaves no room for merges (needs > {n_fixed})")
    backend = Tokenizer(models.BPE())
    # add_prefix_space=False: a leading space would break the exact round trip of a target string.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        eos_token=EOS,
        clean_up_tokenization_spaces=False,  # the default "cleanup" would rewrite " ?" as "?"
        model_max_length=4096,
    )
    tok.add_tokens(list(TAG_TOKENS), special_tokens=False)
    return tok
