"""``leaml`` command line: one subcommand per stage; each reads a typed config (YAML) plus dotted
``key=value`` overrides, so ``leaml evaluate --config c.yaml inference.engine=local`` works.

    leaml data synth   [--config world.yaml] --out DIR [overrides]    a synthetic world (domain=endo|sport)
    leaml data synth-sport [--config sport.yaml] --out DIR [overrides]  the same with domain=sport
    leaml data convert kvasir|sportu --src PATH --out DIR [overrides]  a downloaded real dataset
    leaml data carve-validation --src DIR --out DIR [--media N]      a validation split from train
    leaml model init   --preset tiny-qwen2.5-vl --data DIR --out DIR   a tiny base model (untrained)
    leaml model pretrain --config ray_jobs/configs/demo.yaml [--release]  the staged base models
    leaml evaluate     --config eval.yaml [overrides]                 accuracy report
    leaml train        --config job.yaml [overrides]                  one training job
    leaml run          --config pipeline.yaml [--stages ...] [--dry-run] [overrides]  the whole LEAML graph
    leaml demo         [--run-dir DIR] [--quick] [--video]            the embedded default, end to end
    leaml plan         --config pipeline.yaml [--json] [overrides]    memory per GPU of every stage
"""
from __future__ import annotations

import argparse
import sys


def _add_config_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--config", required=required, help="YAML file (local or s3://)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-4")


def cmd_data_synth(args, domain: str | None = None) -> None:
    """Either synthetic world, by the config's ``domain`` (endo, the default, or sport)."""
    from leaml.config import load_config
    from leaml.data.world import build
    from leaml.pipeline.config import world_config_class

    cfg = load_config(world_config_class(args.config, args.overrides, domain), args.config, args.overrides)
    summary = build(cfg, args.out, workers=args.workers)
    print(f"{cfg.domain} world written to {args.out} in {summary.seconds:.1f}s")
    for name, n in summary.sizes.items():
        print(f"  {name:<20}{n:>8}")
    floors = {"prior-only (most common train answer per question)": summary.prior_only}
    if "middle_frame" in summary.baselines:
        floors["single middle frame (what that one frame shows, read perfectly)"] = summary.baselines["middle_frame"]
    for label, acc in floors.items():
        cats = ", ".join(f"{c} {100 * a:.1f}" for c, a in acc["per_category"].items())
        print(f"{label}, test split: {100 * acc['mean_of_categories']:.1f}% mean of categories ({cats})")


def cmd_data_carve_validation(args) -> None:
    from leaml.data.validation import carve_validation

    sizes = carve_validation(args.src, args.out, n_media=args.media, seed=args.seed)
    print(f"validation split written to {args.out}: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    print(f"tune with: leaml run --config <pipeline.yaml> data_dir={args.out} run_dir=<dir>")


def cmd_data_convert(args) -> None:
    from leaml.config import load_config
    from leaml.data.convert import KvasirConvertConfig, SportuConvertConfig, convert_kvasir, convert_sportu
    from leaml.data.dataset_dir import describe_counts
    from leaml.jobs import announce, job_path

    out = job_path(args.out, "--out")
    if args.dataset == "kvasir":
        summary = convert_kvasir(load_config(KvasirConvertConfig, args.config, args.overrides), args.src, out)
    else:
        cfg = load_config(SportuConvertConfig, args.config, args.overrides)
        summary = convert_sportu(cfg, args.src, out, video_dir=args.videos)
    print(f"{args.dataset} converted in {summary.seconds:.1f}s\n{describe_counts(summary.counts)}")
    announce("dataset", out)


def cmd_model_init(args) -> None:
    from leaml.models.init import init_base_model

    uri = init_base_model(args.preset, args.data, args.out, seed=args.seed)
    print(f"initial {args.preset} written to {uri}")


def cmd_model_pretrain(args) -> None:
    from leaml.config import load_config
    from leaml.pipeline.base_models import pretrain_base_models
    from leaml.pipeline.config import PipelineConfig

    cfg = load_config(PipelineConfig, args.config, args.overrides)
    roles = ["student", "teacher"] if args.role == "both" else [args.role]
    for role, uri in pretrain_base_models(cfg, roles, release=args.release).items():
        print(f"{role}: {uri}")


def cmd_evaluate(args) -> None:
    from leaml.config import load_config
    from leaml.evaluate.stage import EvalConfig, run_evaluation

    cfg = load_config(EvalConfig, args.config, args.overrides)
    paths = run_evaluation(cfg)
    print(open(paths["md"]).read() if not paths["md"].startswith("s3://") else "")
    print("report:", ", ".join(paths.values()))


def cmd_train(args) -> None:
    from leaml.config import load_config
    from leaml.train.loop import TrainJob
    from leaml.train.ray_trainer import run_training

    job = load_config(TrainJob, args.config, args.overrides)
    metrics = run_training(job, engine=args.engine)
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})


def cmd_demo(args) -> None:
    from leaml.pipeline.demo import run_demo

    run_demo(args.run_dir, quick=args.quick, overrides=args.overrides, video=args.video)


def cmd_run(args) -> None:
    from leaml.config import load_config, split_overrides
    from leaml.pipeline.config import PipelineConfig
    from leaml.pipeline.graph import print_status, run_pipeline

    stages, overrides = split_overrides(args.stages, args.overrides)
    cfg = load_config(PipelineConfig, args.config, overrides)
    if args.dry_run:
        print_status(cfg, only=stages)
        return
    run_pipeline(cfg, only=stages)


def cmd_plan(args) -> None:
    from leaml.config import load_config
    from leaml.pipeline.config import PipelineConfig
    from leaml.plan import build_plan, format_plan, plan_json

    cfg = load_config(PipelineConfig, args.config, args.overrides)
    plans = build_plan(cfg)
    print(plan_json(plans) if args.json else format_plan(plans, cfg.resources))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leaml", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    for name, helptext, domain in (
            ("synth", "generate a synthetic world: endo images (default) or, with domain=sport, video clips", None),
            ("synth-sport", "generate the sport world (video clips, easy / medium / hard): synth domain=sport", "sport")):
        synth = data.add_parser(name, help=helptext)
        synth.add_argument("--out", required=True)
        synth.add_argument("--workers", type=int, default=None, help="processes rendering media (default: CPU count)")
        _add_config_args(synth)
        synth.set_defaults(func=lambda a, d=domain: cmd_data_synth(a, d))
    convert = data.add_parser("convert", help="a downloaded Kvasir-VQA or SPORTU -> a dataset directory")
    convert.add_argument("dataset", choices=["kvasir", "sportu"])
    convert.add_argument("--src", required=True, help="kvasir: the hub download (parquet / arrow files, a dir); "
                         "sportu: SportU_Video_mc.json or a dir holding it")
    convert.add_argument("--videos", help="sportu: the clips' directory (default: beside the json)")
    convert.add_argument("--out", required=True, help="the dataset directory to write (local or s3://)")
    _add_config_args(convert)
    convert.set_defaults(func=cmd_data_convert)
    carve = data.add_parser("carve-validation", help="a validation split carved from a dataset directory's "
                            "train split (its test.jsonl), for tuning without the test split")
    carve.add_argument("--src", required=True, help="a dataset directory (synthetic world or converted data)")
    carve.add_argument("--out", required=True)
    carve.add_argument("--media", type=int, default=150, help="train media items to hold out")
    carve.add_argument("--seed", type=int, default=0)
    carve.set_defaults(func=cmd_data_carve_validation)

    model = sub.add_parser("model", help="models").add_subparsers(dest="model_command", required=True)
    init = model.add_parser("init", help="build an untrained tiny preset (tokenizer trained on the data)")
    init.add_argument("--preset", default="tiny-qwen2.5-vl")
    init.add_argument("--data", required=True, help="dataset directory (tokenizer corpus)")
    init.add_argument("--out", required=True)
    init.add_argument("--seed", type=int, default=0)
    init.set_defaults(func=cmd_model_init)
    pre = model.add_parser("pretrain", help="the staged base-model recipe (tower, align, instruct) of a config's "
                                            "student and teacher; --release writes them to assets/base_models")
    _add_config_args(pre, required=True)
    pre.add_argument("--role", choices=["student", "teacher", "both"], default="both")
    pre.add_argument("--release", action="store_true", help="measure on held-out media and ship as release assets")
    pre.set_defaults(func=cmd_model_pretrain)

    ev = sub.add_parser("evaluate", help="multiple-choice accuracy per category")
    _add_config_args(ev)
    ev.set_defaults(func=cmd_evaluate)

    tr = sub.add_parser("train", help="one training job (any objective / method)")
    tr.add_argument("--engine", choices=["ray", "local"], default="ray")
    _add_config_args(tr, required=True)
    tr.set_defaults(func=cmd_train)

    demo = sub.add_parser("demo", help="run the embedded default end to end")
    demo.add_argument("--run-dir", help="default: the profile's run_dir (runs/demo, runs/sport-demo, ...)")
    demo.add_argument("--quick", action="store_true", help="smaller sizes (tests, smoke runs)")
    demo.add_argument("--video", action="store_true", help="the sport (video) world instead of the endo images")
    demo.add_argument("overrides", nargs="*", help="dotted overrides of the demo config")
    demo.set_defaults(func=cmd_demo)

    run = sub.add_parser("run", help="the whole LEAML graph from a pipeline config")
    run.add_argument("--stages", nargs="*", help="only stages whose name starts with these")
    run.add_argument("--dry-run", action="store_true",
                     help="run nothing: print each stage as done / stale / pending, and why")
    _add_config_args(run, required=True)
    run.set_defaults(func=cmd_run)

    pl = sub.add_parser("plan", help="memory per GPU of every stage (models built on the meta device)")
    pl.add_argument("--json", action="store_true", help="bytes per stage as JSON instead of the table")
    _add_config_args(pl, required=True)
    pl.set_defaults(func=cmd_plan)
    return parser


def main(argv: list[str] | None = None) -> int:
    from leaml.config import ConfigError
    from leaml.pipeline.lock import RunLockedError

    parser = build_parser()
    # key=value overrides may stand anywhere (also after an option's values): argparse leaves the
    # ones it cannot place to parse_known_args, and they join the command's overrides in order
    args, unknown = parser.parse_known_args(argv)
    stray = [t for t in unknown if t.startswith("-") or "=" not in t]
    if stray or (unknown and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or unknown)}")
    if unknown:
        args.overrides = [*args.overrides, *unknown]
    try:
        args.func(args)
    except ConfigError as e:
        print(f"config error:\n{e}", file=sys.stderr)
        return 2
    except RunLockedError as e:  # another `leaml run` drives this run dir
        print(f"run dir in use:\n{e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
