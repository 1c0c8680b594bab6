"""Sweep what the paper leaves open (K, caption weight, pseudo pairs per item, filter, pseudo weight)
on a validation split, one setting at a time around a base config, side by side in one table.

    leaml data carve-validation --src runs/demo/data --out runs/val/data --media 150
    .venv/bin/python benchmarks/sweep.py --config ray_jobs/configs/demo.yaml --data-dir runs/val/data \\
        --out runs/sweep --grid generators.leaml.mask.k=0.1,0.3,0.6 pseudo_weight=0.3,1.0

Every point is a run of the pipeline in one run directory (``--out``) with the point's override:
the stages' fingerprints redo only what the override changes (a K point redoes the masks, the
LEAML generator, its pseudo pairs, its VQA row and their evaluation; the captions, the full
fine-tuning and fully supervised rows are done once). Rows: ``full``, ``leaml``,
``fully_supervised`` (``--also distill``: also the generator without the mask, recorded in the jsonl). Per point it prints LEAML's validation accuracy (mean of categories), LEAML -
full fine-tuning, the gap closure, the pseudo pairs kept and how many of them agree with the train
truth (the unlabeled pool is train media, so each pseudo pair asking an annotated question can be
checked), beside the prior's agreement. Results are appended to ``<out>/sweep.jsonl`` as they come.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROWS = ("full", "leaml", "fully_supervised")


def parse_grid(items: list[str]) -> list[tuple[str, str]]:
    """["a.b=1,2", "c=x"] -> [("a.b", "1"), ("a.b", "2"), ("c", "x")] (one setting at a time)."""
    points = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise SystemExit(f"--grid {item!r}: expected key=value[,value...]")
        points += [(key, v) for v in values.split(",")]
    return points


def pseudo_agreement(run_dir: str, data_dir: str) -> dict:
    """Kept LEAML pseudo pairs, and the share of the checkable ones whose answer is the train truth
    (and the share the question's most common train answer would get on the same pairs)."""
    from collections import Counter, defaultdict

    from leaml.data.world import majority
    from leaml.records import VQAExample, load_records

    train = load_records(f"{data_dir}/train.jsonl", VQAExample)
    truth = {(e.media.id, e.question): e.answer for e in train}
    answers: dict[str, Counter] = defaultdict(Counter)
    for e in train:  # by question text: pseudo pairs carry no template
        answers[e.question][e.answer] += 1
    prior = {q: majority(c) for q, c in answers.items()}
    kept = load_records(f"{run_dir}/pseudo_qa/leaml/pseudo_qa.jsonl", VQAExample)
    checked = [(p.answer == truth[k], prior.get(p.question) == truth[k])
               for p in kept if (k := (p.media.id, p.question)) in truth]
    n = max(1, len(checked))
    return {"kept": len(kept), "checked": len(checked), "agree": sum(a for a, _ in checked) / n,
            "prior_agree": sum(b for _, b in checked) / n}


def run_point(config: str, data_dir: str, out: str, override: list[str], rows: tuple[str, ...] = ROWS) -> dict:
    from leaml.config import load_config
    from leaml.pipeline.config import PipelineConfig
    from leaml.pipeline.graph import Run, run_pipeline
    from leaml.records import EvalRow, load_json

    cfg = load_config(PipelineConfig, config, [f"data_dir={data_dir}", f"run_dir={out}",
                                               f"rows=[{','.join(rows)}]", *override])
    run_pipeline(cfg)
    run = Run(cfg)
    scores = {r: load_json(run.eval_row(r), EvalRow).scores.mean_of_categories for r in rows}
    gap = scores["fully_supervised"] - scores["full"]
    return {"scores": scores, "leaml_minus_full": scores["leaml"] - scores["full"],
            "gap_closure": (scores["leaml"] - scores["full"]) / gap if gap > 1e-9 else None,
            "pseudo": pseudo_agreement(cfg.run_dir, data_dir)}


def table(results: list[dict]) -> str:
    head = f"{'setting':<40}{'LEAML':>8}{'full':>8}{'LEAML-full':>12}{'closure':>9}{'kept':>6}{'agree':>7}{'prior':>7}"
    lines = [head, "-" * len(head)]
    for r in results:
        s, p = r["scores"], r["pseudo"]
        closure = f"{r['gap_closure']:.2f}" if r["gap_closure"] is not None else "n/a"
        lines.append(f"{r['setting']:<40}{100 * s['leaml']:>8.1f}{100 * s['full']:>8.1f}"
                     f"{100 * r['leaml_minus_full']:>+12.1f}{closure:>9}{p['kept']:>6}"
                     f"{100 * p['agree']:>7.1f}{100 * p['prior_agree']:>7.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--data-dir", required=True, help="a validation dataset dir (leaml data carve-validation)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--grid", nargs="*", default=[], help="key=v1,v2 ... (each value alone, the rest at base)")
    ap.add_argument("--also", nargs="*", default=[], help="more rows to run and record (e.g. distill: "
                    "the same generator without the QA-neuron mask)")
    ap.add_argument("overrides", nargs="*", help="dotted overrides applied to every point")
    args = ap.parse_args(argv)
    log = Path(args.out, "sweep.jsonl")
    points = [("base", None), *parse_grid(args.grid)]
    results = []
    for key, value in points:
        setting = "base" if value is None else f"{key}={value}"
        t0 = time.perf_counter()
        point = run_point(args.config, args.data_dir, args.out, [*args.overrides, *([setting] if value else [])],
                          (*ROWS, *args.also))
        results.append({"setting": setting, "seconds": round(time.perf_counter() - t0, 1), **point})
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            f.write(json.dumps(results[-1]) + "\n")
        print(table(results), flush=True)
    print(f"\n(validation split {args.data_dir}; results in {log})")


if __name__ == "__main__":
    main()
