"""How right are a run's pseudo QA pairs? Each generator of a finished run writes pairs for the first
unlabeled items under several decoding and filter settings; a pair is checked against the world's
truth when its (image, question) is annotated in the train split (the unlabeled pool is train
images), beside the answer prior (the labeled set's most common answer to that question) on the
same pairs. Train split only: nothing here looks at the test split.

    .venv/bin/python benchmarks/pseudo_quality.py --run runs/demo --items 128
    .venv/bin/python benchmarks/pseudo_quality.py --run runs/demo --variants leaml --threads 2
    .venv/bin/python benchmarks/pseudo_quality.py --run runs/sport-demo --settings "constrained, consistent" qT

A pseudo pair helps the VQA model only where it beats the prior: "acc" above "prior" is the margin.
"""
from __future__ import annotations

import argparse
import collections
import tempfile
import time

import numpy as np

# (label, QAGenConfig overrides): the paper's free sampling, then constrained choices
SETTINGS = [
    ("free, no filter", {"decoding": "free", "filter": "none"}),
    ("constrained, no filter", {"decoding": "constrained", "filter": "none"}),
    ("constrained, consistent", {"decoding": "constrained", "filter": "consistent"}),
    ("constrained, p>=0.5", {"decoding": "constrained", "filter": "threshold", "min_prob": 0.5}),
    ("constrained, top_p 0.5", {"decoding": "constrained", "filter": "none", "top_p": 0.5}),
    ("constrained, T 0.5", {"decoding": "constrained", "filter": "none", "temperature": 0.5}),
    ("constrained, cons., qT 3", {"decoding": "constrained", "filter": "consistent", "question_temperature": 3.0}),
    ("constrained, cons., qT 10", {"decoding": "constrained", "filter": "consistent", "question_temperature": 10.0}),
]


def truth_and_prior(data: str):
    from leaml.records import VQAExample, load_records

    labeled = load_records(f"{data}/labeled.jsonl", VQAExample)
    known = {e.question: e.options for e in labeled}
    answers = collections.defaultdict(collections.Counter)
    for e in labeled:
        answers[e.question][e.answer] += 1
    prior = {q: c.most_common(1)[0][0] for q, c in answers.items()}
    truth = {(e.media.id, e.question): e.answer for e in load_records(f"{data}/train.jsonl", VQAExample)}
    return known, prior, truth


def judge_setting(run: str, variant: str, overrides: dict, items: list, known: dict, threads: int) -> list:
    """The judged candidates of ``items`` under one setting: the pseudo-QA stage's stream, in this
    process, in batches of 16."""
    from leaml.pipeline.qa_generator import QAGenConfig, QARequester
    from leaml.records import PseudoCandidate
    from leaml.streaming import StreamConfig, read_shards, run_sharded

    base = {"model": f"{run}/generators/{variant}", "n": 2, "replica_cpus": threads, "max_new_tokens": 40}
    kwargs = {"target": {"local": {}}, "cfg": QAGenConfig(**(base | overrides)).model_dump(), "known_templates": known}
    with tempfile.TemporaryDirectory() as out:
        run_sharded(items, QARequester, kwargs, out, f"pseudo-qa {variant}",
                    StreamConfig(batch_size=16, shard_size=max(1, len(items))), engine="local")
        return [PseudoCandidate.model_validate(r) for r in read_shards(out)]


def summarise(rows: list, prior: dict, truth: dict) -> dict:
    kept = [r.example for r in rows if r.kept]
    checked = [(e.answer == truth[k], prior[e.question] == truth[k])
               for e in kept if (k := (e.media.id, e.question)) in truth]
    valid = sum(r.kept or r.reason.startswith("filter") for r in rows)
    return {"candidates": len(rows), "valid": valid, "kept": len(kept), "checked": len(checked),
            "acc": float(np.mean([c[0] for c in checked])) if checked else float("nan"),
            "prior": float(np.mean([c[1] for c in checked])) if checked else float("nan"),
            "questions": len({e.question for e in kept})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/demo", help="a run dir whose generators are trained")
    ap.add_argument("--items", type=int, default=128, help="first N unlabeled items")
    ap.add_argument("--variants", nargs="+", default=["baseline", "distill", "leaml"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--settings", nargs="+", default=None,
                    help="only the settings whose label contains one of these strings, e.g. 'qT' consistent")
    args = ap.parse_args()
    settings = [s for s in SETTINGS if not args.settings or any(k in s[0] for k in args.settings)]
    if not settings:
        ap.error(f"no setting matches {args.settings}; labels: {[s[0] for s in SETTINGS]}")

    from leaml.records import MediaRef, load_records
    from leaml.streaming import StreamItem

    data = f"{args.run}/data"
    known, prior, truth = truth_and_prior(data)
    items = [StreamItem(item_id=r.id, media=r, media_root=data)
             for r in load_records(f"{data}/unlabeled.jsonl", MediaRef)[:args.items]]
    head = f"{'generator':<10}{'setting':<26}{'valid':>8}{'kept':>8}{'checked':>9}{'acc %':>8}{'prior %':>9}{'questions':>11}{'s':>6}"
    lines = [head, "-" * len(head)]
    for variant in args.variants:
        for label, overrides in settings:
            t0 = time.perf_counter()
            s = summarise(judge_setting(args.run, variant, overrides, items, known, args.threads), prior, truth)
            lines.append(f"{variant:<10}{label:<26}{s['valid']:>8}{s['kept']:>8}{s['checked']:>9}{100 * s['acc']:>8.1f}"
                         f"{100 * s['prior']:>9.1f}{s['questions']:>11}{time.perf_counter() - t0:>6.0f}")
            print(lines[-1], flush=True)
    print(f"\n{args.run}: pseudo pairs for the first {len(items)} unlabeled items, n=2 candidates each; "
          "'checked' = kept pairs whose (image, question) the train split annotates")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
