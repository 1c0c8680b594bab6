"""Split examples of a real dataset -> the dataset directory every run reads; and, for the report,
what a dataset directory says about itself.

```
<out>/media/<id>.<ext>          each image or clip once (URIs in the records are relative to <out>)
<out>/train.jsonl test.jsonl    VQAExample of each split (no image, or scene, in both)
<out>/labeled.jsonl             the labeled fraction of the train QA pairs (source=labeled)
<out>/unlabeled.jsonl           MediaRef of the train media that carry no labeled pair
<out>/errors.jsonl              ErrorRecord of every input row left out, reason first ("empty_answer: ...")
<out>/dataset.json              domain, the paper's table / categories / gap closure, counts, settings
```

It is the synthetic worlds' contract (docs/CONTRACTS.md) minus their pretraining extras; a
directory without ``dataset.json`` is a synthetic world, described by its ``world.json``.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Sequence

from pydantic import BaseModel

from leaml import storage
from leaml.data.world import DOMAINS, LABELED_SELECTION, domain_spec, labeled_pick_seed, select_labeled, unlabeled_media
from leaml.records import ErrorRecord, VQAExample, save_records

METADATA = "dataset.json"


class DatasetInfo(BaseModel):
    """What the report needs from a dataset directory."""

    domain: str
    """``kvasir`` / ``sportu`` for real data; ``endo`` / ``sport`` for the synthetic worlds."""
    title: str
    """How the report names it (``Kvasir-VQA``, or the synthetic world's domain)."""
    paper: dict | None = None
    """``{benchmark, table, categories, gap_closure}`` of the paper's figure this data is compared with."""
    average_over: list[str] | None = None
    """Categories the report's Average is the mean of (the paper's columns); None = every category."""
    prior_only: dict | None = None


def error_counts(errors: Sequence[ErrorRecord]) -> dict[str, int]:
    """reason code (the text before the first ``:``) -> how many."""
    return dict(sorted(Counter(e.reason.split(":")[0] for e in errors).items()))


def write_dataset_dir(out: str, train: list[VQAExample], test: list[VQAExample], errors: list[ErrorRecord],
                      cfg, rows_in: int, meta: dict) -> dict:
    """Pick the labeled pairs (``cfg.labeled_fraction``, seeded), write every file above; returns the
    counts, which reconcile: ``rows_in == kept + errors`` and ``kept == train + test + unused``."""
    if not train or not test:
        raise ValueError(f"a split is empty ({len(train)} train, {len(test)} test QA pairs): "
                         "the dataset is too small for these fractions")
    labeled = select_labeled(train, cfg.labeled_fraction, labeled_pick_seed(cfg))
    unlabeled = unlabeled_media(train, labeled)
    kept = rows_in - len(errors)
    counts = {"rows_in": rows_in, "kept": kept, "errors": len(errors), "errors_by_reason": error_counts(errors),
              "train_qa": len(train), "test_qa": len(test), "unused_qa": kept - len(train) - len(test),
              "train_media": len({e.media.id for e in train}), "test_media": len({e.media.id for e in test}),
              "labeled_qa": len(labeled), "unlabeled_media": len(unlabeled)}
    for name, records in (("train.jsonl", train), ("test.jsonl", test), ("labeled.jsonl", labeled),
                          ("unlabeled.jsonl", unlabeled), ("errors.jsonl", errors)):
        save_records(storage.join(out, name), records)
    doc = {**meta, "counts": counts, "config": cfg.model_dump(mode="json"), "labeled_selection": LABELED_SELECTION}
    storage.write_text(storage.join(out, METADATA), json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return counts


def describe_counts(counts: dict) -> str:
    """The counts as lines a person checks: rows in = kept + errors, and where the kept ones went."""
    reasons = ", ".join(f"{k} {v}" for k, v in counts["errors_by_reason"].items()) or "none"
    return "\n".join([
        f"rows in {counts['rows_in']} = kept {counts['kept']} + errors {counts['errors']} ({reasons})",
        f"kept {counts['kept']} = train {counts['train_qa']} + test {counts['test_qa']} + unused {counts['unused_qa']}",
        f"media: train {counts['train_media']}, test {counts['test_media']}; labeled QA {counts['labeled_qa']}, "
        f"unlabeled media {counts['unlabeled_media']}",
    ])


def remove_unused_media(out: str, written: dict[str, str], used: Sequence[VQAExample]) -> int:
    """Delete media written under ``out`` that no split uses (the images the paper's sizes leave
    over, or whose every row was bad); ``written`` is media id -> relative uri. Returns how many."""
    keep = {e.media.id for e in used}
    gone = [uri for media_id, uri in written.items() if media_id not in keep]
    for uri in gone:
        storage.remove(storage.join(out, uri))
    return len(gone)


# The paper's figure each synthetic world stands in for (its report keeps every category in the Average).
def load_dataset_info(data_dir: str) -> DatasetInfo:
    """``dataset.json`` of a converted dataset, else the synthetic world's ``world.json``."""
    meta_uri = storage.join(data_dir, METADATA)
    if storage.exists(meta_uri):
        meta = json.loads(storage.read_text(meta_uri))
        paper = meta.get("paper") or {}
        return DatasetInfo(domain=meta["domain"], title=meta.get("title", meta["domain"]), paper=paper or None,
                           average_over=paper.get("categories"), prior_only=meta.get("prior_only"))
    world_uri = storage.join(data_dir, "world.json")
    world = json.loads(storage.read_text(world_uri)) if storage.exists(world_uri) else {}
    domain = world.get("domain", "endo")
    return DatasetInfo(domain=domain, title=domain, paper=stand_in(domain), prior_only=world.get("prior_only"))


def stand_in(domain: str) -> dict | None:
    """The paper's benchmark and gap closure that a synthetic ``domain`` stands in for (its
    average is over every category, so the paper's category list is left out); None: no world."""
    if domain not in DOMAINS:
        return None
    paper = domain_spec(domain).paper
    return {"benchmark": paper["benchmark"], "gap_closure": paper["gap_closure"]}
