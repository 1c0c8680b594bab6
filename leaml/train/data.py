"""Records -> (media, prompt, target) training items, and deterministic per-step batches.

Every objective is a mixture of sources of the same item type:
- ``qa``:      media -> ``<q>Q<q><a>A<a>`` (L_QA, paper Eq. 2: the prompt carries no question)
- ``caption``: media -> teacher caption (L_C, Eq. 4)
- ``vqa``:     media + question with options -> answer (L_VQA, Eq. 3)

``BatchStream.batch_at(step)`` is a pure function of (seed, step, rank): a resumed run continues
with exactly the batches it would have seen, with no sampler state to checkpoint, and a run on
``W`` workers with batch ``b`` sees the same global batches as one worker with batch ``W * b``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from leaml.config import StrictModel
from leaml.prompts import caption_prompt, qagen_prompt, vqa_prompt
from leaml.records import Caption, MediaRef, VQAExample, format_qa_target, load_records

SourceKind = Literal["qa", "caption", "vqa"]


@dataclass(frozen=True)
class TrainItem:
    media: MediaRef
    prompt: str
    target: str
    media_root: str = ""
    more_turns: tuple[tuple[str, str], ...] = ()
    """Further (prompt, target) turns about the same media (a packed item, see ``pack_by_media``)."""

    @property
    def conversation(self) -> list[tuple[str, str]]:
        return [(self.prompt, self.target), *self.more_turns]


class DataSpec(StrictModel):
    """One source of the training mixture."""

    kind: SourceKind
    uri: str
    """Records file: VQAExample for qa/vqa, Caption for caption (JSONL or parquet)."""
    media_root: str = ""
    """Where relative media uris resolve (the dataset directory)."""
    media_index: str | None = None
    """caption only: a MediaRef/VQAExample file resolving caption media ids (default: each
    caption's ``meta.uri``, which the captioning stage writes)."""
    weight: float = Field(1.0, ge=0)
    """Loss weight of this source (L_G = L_QA + w * L_C)."""
    every: int = Field(1, ge=1)
    """Take a batch from this source every N steps."""
    limit: int | None = Field(None, ge=1)
    """Use only the first N records (quick runs)."""


def qa_items(examples: list[VQAExample], media_root: str = "") -> list[TrainItem]:
    return [TrainItem(ex.media, qagen_prompt(), format_qa_target(ex.question, ex.options, ex.answer), media_root)
            for ex in examples]


def vqa_items(examples: list[VQAExample], media_root: str = "") -> list[TrainItem]:
    return [TrainItem(ex.media, vqa_prompt(ex.question, ex.options), ex.answer, media_root) for ex in examples]


def caption_items(captions: list[Caption], media: dict[str, MediaRef], media_root: str = "") -> list[TrainItem]:
    """Captions name their media by id; the ref comes from ``media`` or the caption's ``meta.uri``
    (and ``meta.kind``: a caption of a video clip trains on its frames)."""
    items, missing = [], []
    for c in captions:
        ref = media.get(c.media_id) or (
            MediaRef(id=c.media_id, uri=c.meta["uri"], kind=c.meta.get("kind", "image")) if "uri" in c.meta else None)
        if ref is None:
            missing.append(c.media_id)
        else:
            items.append(TrainItem(ref, caption_prompt(), c.text, media_root))
    if missing:
        raise ValueError(f"{len(missing)} captions name media found neither in the index nor in meta.uri, "
                         f"e.g. {missing[:3]}")
    return items


def load_items(spec: DataSpec, max_turns: int = 1) -> list[TrainItem]:
    """The source's items; ``max_turns`` > 1 packs a vqa source by media (see ``pack_by_media``)."""
    if spec.kind == "caption":
        refs = _load_media_index(spec.media_index) if spec.media_index else {}
        items = caption_items(load_records(spec.uri, Caption), refs, spec.media_root)
    else:
        examples = load_records(spec.uri, VQAExample)
        items = (qa_items if spec.kind == "qa" else vqa_items)(examples, spec.media_root)
    items = items[: spec.limit] if spec.limit else items
    # qa stays one pair per sequence: the generator writes one pair from the media alone (Eq. 2)
    return pack_by_media(items, max_turns) if spec.kind == "vqa" and max_turns > 1 else items


def pack_by_media(items: list[TrainItem], max_turns: int) -> list[TrainItem]:
    """Items about the same media merged into multi-turn items of at most ``max_turns`` pairs, in
    order of first appearance: a step then encodes each image once for all its questions, as VLM
    instruction tuning does. The turns keep the records' order here; :class:`BatchStream` with
    ``shuffle_turns`` reorders them per epoch."""
    groups: dict[tuple[str, str], list[TrainItem]] = {}
    for it in items:
        groups.setdefault((it.media_root, it.media.uri), []).append(it)
    packed = []
    for group in groups.values():
        for i in range(0, len(group), max_turns):
            head, *rest = group[i:i + max_turns]
            packed.append(TrainItem(head.media, head.prompt, head.target, head.media_root,
                                    tuple((r.prompt, r.target) for r in rest)))
    return packed


def _load_media_index(uri: str) -> dict[str, MediaRef]:
    """MediaRef or VQAExample records -> {media id: ref}."""
    import json

    from leaml import storage

    refs: dict[str, MediaRef] = {}
    for line in storage.read_text(uri).splitlines():
        if line.strip():
            row = json.loads(line)
            ref = MediaRef.model_validate(row["media"] if "media" in row else row)
            refs[ref.id] = ref
    return refs


@dataclass
class BatchStream:
    """Endless shuffled batches of one source, sharded by rank; ``batch_at`` is stateless."""

    items: list[TrainItem]
    batch_size: int
    seed: int
    rank: int = 0
    world_size: int = 1
    shuffle_turns: bool = False
    """Packed items come with their turns in a new seeded order each epoch (see ``turn_order``)."""

    def __post_init__(self) -> None:
        if not self.items:
            raise ValueError("a training source has no items")

    def batch_at(self, draw: int) -> list[TrainItem]:
        n = len(self.items)
        global_bs = self.batch_size * self.world_size
        start = draw * global_bs + self.rank * self.batch_size
        return [self._item(i) for i in range(start, start + self.batch_size)]

    def _item(self, position: int) -> TrainItem:
        n = len(self.items)
        epoch, offset = divmod(position, n)
        index = _permutation(n, self.seed, epoch)[offset]
        item = self.items[index]
        if not (self.shuffle_turns and item.more_turns):
            return item
        turns = item.conversation
        random.Random(f"{self.seed}:{epoch}:{index}").shuffle(turns)
        (prompt, target), *rest = turns
        return TrainItem(item.media, prompt, target, item.media_root, tuple(rest))


_PERM_CACHE: dict[tuple[int, int, int], list[int]] = {}


def _permutation(n: int, seed: int, epoch: int) -> list[int]:
    key = (n, seed, epoch)
    if key not in _PERM_CACHE:
        perm = list(range(n))
        random.Random(f"{seed}:{epoch}").shuffle(perm)
        if len(_PERM_CACHE) > 64:
            _PERM_CACHE.clear()
        _PERM_CACHE[key] = perm
    return _PERM_CACHE[key]
