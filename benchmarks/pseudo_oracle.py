"""What would better pseudo pairs be worth? The LEAML VQA row of a finished run, re-trained with its
pseudo pairs swapped for pairs built from the train truth of the same unlabeled pool, side by side.

The unlabeled pool is train media, so the world's annotations of those images say what a perfect
generator would have written. Each variant trains the run's own VQA row (its ``vqa`` settings, the
labeled pairs plus one pseudo batch per step at ``pseudo_weight``, from the base student) on one
pseudo set and is evaluated like the run's rows, on its ``test.jsonl``: run this on a validation
split (``leaml data carve-validation``), never on the real test split. Pseudo sets:

- ``none (labeled only)``: no pseudo pairs: full fine-tuning at this budget (the run's own ``full``
  row is at the run's budget, which a ``vqa.max_steps=...`` override changes here).
- ``generator, kept``: the LEAML generator's kept pairs as they are: the run's LEAML row at this budget.
- ``generator, checkable``: the LEAML generator's kept pairs whose (image, question) the train split
  annotates, its own answers; ``truth, checkable``: the same pairs with the true answers. The two
  differ only in answer accuracy.
- ``truth, generator's count``: as many true pairs as the generator kept, drawn over all the pool's
  annotated questions; ``truth, all``: every annotated pair of the pool (coverage and volume).
- ``truth, all, generator's accuracy``: every annotated pair, each answer kept with the probability
  the generator's checkable pairs are right, else replaced by another option at random.

    leaml data carve-validation --src runs/demo/data --out runs/val/data --media 150
    leaml run --config ray_jobs/configs/demo.yaml data_dir=runs/val/data run_dir=runs/val \\
        "rows=[full,leaml,fully_supervised]"
    .venv/bin/python benchmarks/pseudo_oracle.py --run runs/val

Overrides change the budget: ``vqa.max_steps=400`` trains every variant for 400 steps, and
``unlabeled_limit=1000`` builds the truth sets on a larger pool (the generator's sets stay those of
the run's pool). Results go to ``<run>/oracle/<budget>/`` (one directory per variant; a finished
variant is not redone) and ``<run>/oracle/oracle.jsonl``, each row with its budget; the table lists
the run's own rows beside them.
"""
from __future__ import annotations

import argparse
import json
import random
import time

VARIANTS = ("none (labeled only)", "generator, kept", "generator, checkable", "truth, checkable",
            "truth, generator's count", "truth, all", "truth, all, generator's accuracy")


def pool_truth(run) -> list:
    """The train split's pairs on the pool the run pseudo-labeled (its first ``unlabeled_limit`` items)."""
    from leaml.pipeline.graph import unlabeled_items
    from leaml.records import VQAExample, load_records

    pool = {it.item_id for it in unlabeled_items(run)}
    return [e for e in load_records(f"{run.data}/train.jsonl", VQAExample) if e.media.id in pool]


def as_pseudo(e, answer: str | None = None):
    """A truth pair written as the generator would have written it (no category, no template)."""
    return e.model_copy(update={"id": f"oracle/{e.id}", "category": "pseudo", "source": "pseudo",
                                "template": None, "answer": answer or e.answer, "meta": {"oracle": True}})


def pseudo_sets(kept: list, truth: list, seed: int = 0) -> tuple[dict[str, list], float]:
    """Variant -> its pseudo pairs; and the accuracy of the generator's checkable pairs."""
    rng = random.Random(seed)
    by_key = {(e.media.id, e.question): e for e in truth}
    checkable = [p for p in kept if (p.media.id, p.question) in by_key]
    accuracy = sum(p.answer == by_key[(p.media.id, p.question)].answer for p in checkable) / max(1, len(checkable))

    def degrade(e):
        if rng.random() < accuracy or len(e.options) < 2:
            return as_pseudo(e)
        return as_pseudo(e, rng.choice([o for o in e.options if o != e.answer]))

    sets = {"none (labeled only)": [],
            "generator, kept": kept,
            "generator, checkable": checkable,
            "truth, checkable": [as_pseudo(by_key[(p.media.id, p.question)]) for p in checkable],
            "truth, generator's count": [as_pseudo(e) for e in rng.sample(truth, min(len(kept), len(truth)))],
            "truth, all": [as_pseudo(e) for e in truth],
            "truth, all, generator's accuracy": [degrade(e) for e in truth]}
    return sets, accuracy


def slug(variant: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in variant).strip("-").replace("--", "-")


def train_and_score(run, variant: str, pseudo: list, out_root: str) -> dict:
    """One VQA fit on labeled + ``pseudo`` (the run's vqa stage, its data and settings) -> its row."""
    from leaml import storage
    from leaml.evaluate.stage import ModelUnderTest, evaluate_model, load_split
    from leaml.records import save_records
    from leaml.train.data import DataSpec

    out = storage.join(out_root, slug(variant))
    pseudo_uri = storage.join(out, "pseudo_qa.jsonl")
    data = [DataSpec(kind="vqa", uri=storage.join(run.data, "labeled.jsonl"), media_root=run.data)]
    if pseudo:
        save_records(pseudo_uri, pseudo)
        data.append(DataSpec(kind="vqa", uri=pseudo_uri, media_root=run.data, weight=run.cfg.pseudo_weight))
    t0 = time.perf_counter()
    run.train(f"oracle-{slug(variant)}", storage.join(out, "model"), run.cfg.vqa, run.model_uri("student"), data)
    row = evaluate_model(load_split(run.data, "test", run.cfg.eval_limit),
                         ModelUnderTest(name=variant, uri=storage.join(out, "model")), run.data,
                         storage.join(out, "eval"), run.cfg.evaluation, engine=run.cfg.engine)
    return {"variant": variant, "pairs": len(pseudo), "questions": len({p.question for p in pseudo}),
            "accuracy": row.scores.mean_of_categories, "seconds": round(time.perf_counter() - t0, 1)}


def budget(cfg) -> dict:
    """What, besides the variant and seed, sets a result: the VQA fit's length and the truth pool."""
    return {"vqa_steps": cfg.vqa.max_steps, "vqa_batch": cfg.vqa.batch_size, "pool": cfg.unlabeled_limit}


def table(rows: list[dict], own: dict[str, float]) -> str:
    """Each row against full fine-tuning at the same budget (the ``none`` variant) where it was run."""
    ref = next((r["accuracy"] for r in rows if not r["pairs"]), own["full"])
    head = f"{'pseudo set':<36}{'pairs':>7}{'questions':>11}{'accuracy':>10}{'- full':>8}"
    lines = [head, "-" * len(head)]
    for name, key in (("(run) full fine-tuning, no pseudo", "full"), ("(run) LEAML, its kept pairs", "leaml"),
                      ("(run) fully supervised", "fully_supervised")):
        if key in own:
            lines.append(f"{name:<36}{'':>7}{'':>11}{100 * own[key]:>10.1f}{100 * (own[key] - own['full']):>+8.1f}")
    for r in rows:
        lines.append(f"{r['variant']:<36}{r['pairs']:>7}{r['questions']:>11}{100 * r['accuracy']:>10.1f}"
                     f"{100 * (r['accuracy'] - ref):>+8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="a finished run dir (rows full and leaml) on a validation split")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--seed", type=int, default=0, help="the draws of the 'generator's count / accuracy' sets")
    ap.add_argument("overrides", nargs="*", help="dotted overrides of the run's config (e.g. engine=local)")
    args = ap.parse_args(argv)

    from leaml import storage
    from leaml.config import load_config
    from leaml.data.dataset_dir import METADATA
    from leaml.jobs import init_ray
    from leaml.pipeline.config import PipelineConfig
    from leaml.pipeline.graph import Run
    from leaml.records import EvalRow, VQAExample, load_json, load_records

    cfg = load_config(PipelineConfig, storage.join(args.run, "config.yaml"), args.overrides)
    run = Run(cfg)
    meta = next(storage.join(run.data, m) for m in (METADATA, "world.json")
                if storage.exists(storage.join(run.data, m)))
    if "validation" not in json.loads(storage.read_text(meta)):
        raise SystemExit(f"{run.data} is not a carved validation split: this benchmark trains on the "
                         "pool's train truth and reads test.jsonl; carve one with leaml data carve-validation")
    own = {r: load_json(run.eval_row(r), EvalRow).scores.mean_of_categories
           for r in ("full", "leaml", "fully_supervised") if storage.exists(run.eval_row(r))}
    if not {"full", "leaml"} <= own.keys():
        raise SystemExit(f"{args.run}: rows full and leaml must be evaluated first (leaml run ... rows=[full,leaml])")
    kept = load_records(run.path("pseudo_qa", "leaml", "pseudo_qa.jsonl"), VQAExample)
    sets, accuracy = pseudo_sets(kept, pool_truth(run), args.seed)
    print(f"LEAML kept {len(kept)} pairs on {len({p.question for p in kept})} questions; "
          f"{len(sets['generator, checkable'])} checkable, {100 * accuracy:.1f}% right", flush=True)
    if cfg.engine == "ray":
        init_ray(cfg.ray_address)
    key = budget(cfg) | {"seed": args.seed}
    print(f"budget: {key}", flush=True)
    out_root = run.path("oracle", "steps{vqa_steps}-batch{vqa_batch}-pool{pool}".format(**key))
    log = run.path("oracle", "oracle.jsonl")
    done = {}
    if storage.exists(log):
        done = {r["variant"]: r for r in map(json.loads, storage.read_text(log).splitlines())
                if all(r.get(k) == v for k, v in key.items())}
    rows = []
    for variant in args.variants:
        if variant not in done:
            done[variant] = train_and_score(run, variant, sets[variant], out_root) | key
            lines = storage.read_text(log) if storage.exists(log) else ""
            storage.write_text(log, lines + json.dumps(done[variant]) + "\n")
        rows.append(done[variant])
        print(table(rows, own), flush=True)
    print(f"\n(mean of categories on {run.data}/test.jsonl, scoring={cfg.evaluation.scoring}; results in {log})")


if __name__ == "__main__":
    main()
