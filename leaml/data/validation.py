"""A validation split carved from a dataset directory's train split, for tuning without the test split.

``carve_validation(src, out)``: the train media are split (seeded, by media item, so no image is
on both sides); the held-out items' QA pairs become ``out``'s ``test.jsonl``, the rest its
``train.jsonl``, and the labeled pick and unlabeled pool are drawn again from that new train split
with the source's ``labeled_fraction``. The source's test split is never read. ``world.json`` /
``dataset.json`` are carried over with the new sizes, the prior-only floor of the new split and a
``validation`` entry saying where it came from; media stay where they are (a local source's
``media/`` and ``general/`` are linked, an ``s3://`` source's used files are copied).

    leaml data carve-validation --src runs/demo/data --out runs/val/data --media 150
    leaml run --config ray_jobs/configs/demo.yaml data_dir=runs/val/data run_dir=runs/val
"""
from __future__ import annotations

import json
import os
import random

from leaml import storage
from leaml.data.dataset_dir import METADATA
from leaml.data.world import domain_spec, prior_only_accuracy, select_labeled, unlabeled_media
from leaml.records import Caption, VQAExample, load_records, save_records

LINKED = ("media", "general")  # directories a local carve links instead of copying


def carve_validation(src: str, out: str, n_media: int = 150, seed: int = 0) -> dict:
    """Write the carved dataset directory under ``out``; returns its sizes."""
    meta_name = METADATA if storage.exists(storage.join(src, METADATA)) else "world.json"
    if not storage.exists(storage.join(src, meta_name)):
        raise FileNotFoundError(f"{src} is not a dataset directory (no {METADATA} or world.json)")
    meta = json.loads(storage.read_text(storage.join(src, meta_name)))
    examples = load_records(storage.join(src, "train.jsonl"), VQAExample)
    media = sorted({e.media.id for e in examples})
    if not 0 < n_media < len(media):
        raise ValueError(f"--media {n_media}: the train split has {len(media)} media items; "
                         "hold out at least one and leave at least one")
    held_out = set(random.Random(seed).sample(media, n_media))
    train = [e for e in examples if e.media.id not in held_out]
    val = [e.model_copy(update={"split": "test"}) for e in examples if e.media.id in held_out]
    fraction = meta.get("config", {}).get("labeled_fraction", 0.01)
    labeled = select_labeled(train, fraction, seed)
    unlabeled = unlabeled_media(train, labeled)
    for name, records in (("train.jsonl", train), ("test.jsonl", val), ("labeled.jsonl", labeled),
                          ("unlabeled.jsonl", unlabeled)):
        save_records(storage.join(out, name), records)
    _carry_media(src, out, [*train, *val])
    if storage.exists(storage.join(src, "teacher_corpus.jsonl")):
        save_records(storage.join(out, "teacher_corpus.jsonl"), load_records(storage.join(src, "teacher_corpus.jsonl"), Caption))
    sizes = {"train_qa": len(train), "test_qa": len(val), "labeled_qa": len(labeled),
             "unlabeled_media": len(unlabeled), "train_media": len(media) - n_media, "test_media": n_media}
    paper = domain_spec(meta["domain"]).paper_categories if meta_name == "world.json" else meta.get("paper", {}).get("categories", ())
    meta |= {"prior_only": prior_only_accuracy(train, val, paper or ()),
             "validation": {"source": src, "held_out_media": n_media, "seed": seed, "sizes": sizes,
                            "note": "test.jsonl is a validation split carved from the source's train split; "
                                    "the source's test split was not read"}}
    meta.setdefault("sizes", {}).update(sizes)
    storage.write_text(storage.join(out, meta_name), json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return sizes


def _carry_media(src: str, out: str, used: list[VQAExample]) -> None:
    if not storage.is_s3(src) and not storage.is_s3(out):
        os.makedirs(out, exist_ok=True)
        for name in LINKED:
            target, link = os.path.abspath(os.path.join(src, name)), os.path.join(out, name)
            if os.path.isdir(target) and not os.path.lexists(link):
                os.symlink(target, link)
        return
    for uri in sorted({e.media.uri for e in used}):
        storage.write_bytes(storage.join(out, uri), storage.read_bytes(storage.join(src, uri)))
