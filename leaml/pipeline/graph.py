"""The whole LEAML graph: a PipelineConfig -> every artifact in ``run_dir`` and the paper's table.

    data/                 the dataset (synthesised, or given by data_dir)
    models/{student,teacher}.json     where the base checkpoints are (cached across runs)
    captions/             teacher captions of the unlabeled media (sharded, resumable)
    masks/                neuron masks from the labeled QA loss (Eq. 5-6)
    generators/<variant>/ QA generators: baseline (L_QA), distill (L_QA + L_C), leaml (+ masks)
    pseudo_qa/<variant>/  generated pairs with provenance (sharded) + pseudo_qa.jsonl (kept)
    vqa/<row>/            VQA models (LoRA, full, fully supervised, one per generator variant)
    eval/                 predictions per row, rows/<row>.json, report.{json,md,png}
    ray_train/<job>/      Ray Train runs, one per job fingerprint (``<job>-<fingerprint>``)
    stages/               one fingerprint record per stage (what its output is made from)

Like a build system: each stage names the config that determines it, the artifacts it reads and
the stages that make them. Before it runs, its fingerprint (config + output format version +
content digests of those artifacts, :mod:`leaml.fingerprint`) is recorded; a stage is
done when its done marker exists and its recorded fingerprint equals the current one. A changed
config section or input makes it stale: its outputs are removed and it is redone, and so is
whatever then reads a changed output (an upstream that re-ran but wrote the same bytes changes
nothing downstream). A stage killed mid-way resumes its partial output (the first unwritten
shard; the training checkpoint of the same job fingerprint) only when the fingerprint is the same.
``leaml run --dry-run`` prints every stage as done / stale / pending and why.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

from leaml import storage
from leaml.config import dump_config
from leaml import fingerprint as fp
from leaml.pipeline.config import ROW_TITLES, PipelineConfig
from leaml.records import (CaptionStats, EvalRow, MediaRef, PseudoCandidate, PseudoQAStats, StreamCounts, VQAExample,
                           load_json, load_records, save_json, save_records)
from leaml.streaming import SERVING_KNOBS, StreamItem
from leaml.train.config import TrainConfig
from leaml.train.data import DataSpec
from leaml.train.loop import TrainJob

GENERATOR_ROWS = ("baseline", "distill", "leaml")
STAGE_FAMILIES = ("world", "base", "caption", "neuron masks", "generator", "pseudo-qa", "vqa", "evaluate")
"""First words of every stage name :func:`plan` can make."""


# Output format version per kind of stage: bump one when what that stage writes changes meaning,
# and every run redoes it (and what reads it) instead of mixing old and new artifacts.
FORMATS = {"world": 1, "base": 1, "caption": 2, "masks": 1, "generator": 1, "pseudo-qa": 1, "vqa": 1,
           "evaluate": 1}


@dataclass
class Stage:
    name: str
    done_marker: str
    """A URI that exists only once the stage finished (written last)."""
    run: Callable[[], object]
    config: dict = field(default_factory=dict)
    """The settings that determine its output (scheduling knobs such as replica counts left out)."""
    inputs: Callable[[], dict[str, str]] = dict
    """label -> URI of every artifact it reads; called once the stages of ``after`` are done."""
    after: tuple[str, ...] = ()
    """Names of the stages whose outputs it reads."""
    outputs: tuple[str, ...] = ()
    """What a redo removes first (else sharded output and checkpoints of the old inputs resume)."""
    format: int = 1
    record: str = ""
    """Where its fingerprint record lives (set by :func:`plan`)."""

    def parts(self) -> dict:
        try:
            inputs = self.inputs()
        except FileNotFoundError as e:  # an upstream record (models/<role>.json) not written yet
            inputs = {"unresolved": str(e)}
        return fp.stage_parts(self.format, self.config, inputs)


def assess_stages(stages: list[Stage]) -> list[fp.Status]:
    """Each stage's status as of now, in order, without running anything (``--dry-run``): a stage
    after one that is not done is stale (its input will change) or pending."""
    redo: set[str] = set()
    statuses = []
    for stage in stages:
        upstream = [a for a in stage.after if a in redo]
        status, _ = fp.assess(stage.name, stage.done_marker, stage.record, stage.parts, upstream)
        if status.state != "done":
            redo.add(stage.name)
        statuses.append(status)
    return statuses


def run_stage(stage: Stage) -> bool:
    """Run ``stage`` unless it is done with the current fingerprint; returns whether it ran."""
    status, parts = fp.assess(stage.name, stage.done_marker, stage.record, stage.parts, [])
    print(f"[stage] {stage.name}: {status.state}: {status.why}", flush=True)
    if status.state == "done":
        print(f"[stage] {stage.name}: done already, skipping", flush=True)
        return False
    record = fp.make_record(stage.name, parts or stage.parts())
    started = fp.load_record(stage.record)
    if status.state == "stale" or (started is not None and started.fingerprint != record.fingerprint):
        # stale, or a run killed half-way on other inputs: nothing of the old output may resume
        for out in stage.outputs:
            storage.remove(out)
    fp.save_record(stage.record, record)  # before running: what the (partial) output is made from
    t0 = time.perf_counter()
    print(f"[stage] {stage.name}: starting", flush=True)
    stage.run()
    print(f"[stage] {stage.name}: finished in {time.perf_counter() - t0:.1f}s", flush=True)
    return True


class Run:
    """Paths and shared helpers of one run directory."""

    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        self.dir = cfg.run_dir
        self.data = cfg.data_dir or storage.join(self.dir, "data")

    def path(self, *parts: str) -> str:
        return safe_join(self.dir, *parts)

    def record_uri(self, stage: Stage) -> str:
        """``stages/<done marker's path in the run>.fp.json``: keyed by the marker, so the same
        row under two scoring protocols (eval/, eval-options/) keeps two records."""
        marker = stage.done_marker
        base = self.dir.rstrip("/") + "/"
        rel = marker[len(base):] if marker.startswith(base) else "external/" + marker.lstrip("/").replace(":", "")
        return self.path("stages", rel + ".fp.json")

    @property
    def eval_dir(self) -> str:
        # Each scoring protocol has its own rows and report, so re-scoring a finished run with
        # ``evaluation.scoring=options`` re-runs only the evaluation and keeps the paper's table.
        scoring = self.cfg.evaluation.scoring
        return self.path("eval" if scoring == "generate" else f"eval-{scoring}")

    def eval_row(self, row: str) -> str:
        return storage.join(self.eval_dir, "rows", f"{row}.json")

    def model_uri(self, role: str) -> str:
        return json.loads(storage.read_text(self.path("models", f"{role}.json")))["uri"]

    def train(self, name: str, out: str, cfg: TrainConfig, init: str, data: list[DataSpec], masks: str | None = None) -> None:
        from leaml.train.ray_trainer import run_training

        job = TrainJob(name=name, train=cfg, init_model=init, out_dir=out, data=data, masks=masks)
        run_training(job, engine=self.cfg.engine, storage_path=self.ray_train_dir(name),
                     ray_address=self.cfg.ray_address)

    def ray_train_dir(self, name: str) -> str:
        """One folder per training stage, holding a Ray Train run per job fingerprint
        (``<name>-<fingerprint>``): a redo removes it whole, old fingerprints' checkpoints with it."""
        return self.path("ray_train", name)


# ---------------------------------------------------------------------------------------------
# Stages, in the order the data flows


def safe_join(base: str, *parts: str) -> str:
    """``storage.join`` for artifact names: each part is a relative path that stays below ``base``
    (no ``..``, no absolute path), so no artifact or checkpoint is ever written outside its run."""
    for part in parts:
        pieces = str(part).replace("\\", "/").split("/")
        if str(part).startswith(("/", "~")) or "://" in str(part) or ".." in pieces:
            raise ValueError(f"artifact name {part!r} would leave {base}")
    return storage.join(base, *parts)


def _scheduling_free(cfg, *drop: str) -> dict:
    """A config section as JSON without the keys that only schedule the work (not its result)."""
    return cfg.model_dump(mode="json", exclude=set(drop))


def _train_settings(tcfg: TrainConfig) -> dict:
    # CPUs, threads and failures tolerated do not change the result (the worker count does)
    return tcfg.model_dump(mode="json", exclude={"scaling": fp.SCHEDULING_ONLY})


def _data_file(run: Run, name: str) -> str:
    return storage.join(run.data, name)


def _world_after(run: Run) -> tuple[str, ...]:
    return () if run.cfg.data_dir else ("world",)


def stage_world(run: Run) -> Stage:
    from leaml.data.world import build

    return Stage("world", storage.join(run.data, "world.json"), lambda: build(run.cfg.world, run.data),
                 config={"world": run.cfg.world.model_dump(mode="json")}, outputs=(run.data,),
                 format=FORMATS["world"])


def stage_base(run: Run, role: str) -> Stage:
    from leaml.pipeline.base_models import ensure_base_model

    def go():
        src = getattr(run.cfg, role)
        uri = ensure_base_model(run.data, role, src, run.cfg.cache_dir, domain=run.cfg.world.domain)
        storage.write_text(run.path("models", f"{role}.json"), json.dumps({"uri": uri}))

    src = getattr(run.cfg, role)
    return Stage(f"base {role}", run.path("models", f"{role}.json"), go,
                 config={role: src.model_dump(mode="json", exclude={"pretrain": {"torch_threads"}})},
                 inputs=lambda: {"world": _data_file(run, "world.json")} if not run.cfg.data_dir else {},
                 after=_world_after(run), format=FORMATS["base"])


def unlabeled_items(run: Run) -> list[StreamItem]:
    refs = load_records(storage.join(run.data, "unlabeled.jsonl"), MediaRef)[:run.cfg.unlabeled_limit]
    return [StreamItem(item_id=r.id, media=r, media_root=run.data) for r in refs]


def stage_captions(run: Run) -> Stage:
    from leaml.pipeline.captioner import APP_NAME, DEPLOYMENT_NAME, CaptionRequester, build_captioner_app
    from leaml.streaming import run_sharded

    out = run.path("captions")

    def go():
        ccfg = run.cfg.captioner.model_copy(update={"model": run.cfg.captioner.model or run.model_uri("teacher")})
        with _serve_app(run, build_captioner_app, ccfg.model_dump(), APP_NAME) as serving:
            target = ({"serve": {"app": APP_NAME, "deployment": DEPLOYMENT_NAME, "model": ccfg.model,
                                 "decoding": ccfg.decoding()}} if serving else {"local": ccfg.model_dump()})
            counts = run_sharded(unlabeled_items(run), CaptionRequester,
                                 {"target": target, "num_frames": ccfg.num_frames,
                                  "retry": run.cfg.stream.retry.model_dump()}, out, "caption", run.cfg.stream,
                                 engine=run.cfg.engine)
        _merge_captions(run)  # here, not in a generator: what the generators read is this stage's output
        save_json(storage.join(out, "_SUCCESS.json"), CaptionStats(**counts.model_dump(), decoding=ccfg.decoding()))

    own_model = run.cfg.captioner.model
    return Stage("caption", storage.join(out, "_SUCCESS.json"), go,
                 config={"captioner": _scheduling_free(run.cfg.captioner, *SERVING_KNOBS),
                         "unlabeled_limit": run.cfg.unlabeled_limit, "batch_size": run.cfg.stream.batch_size},
                 inputs=lambda: {"teacher": own_model or run.model_uri("teacher"),
                                 "unlabeled": _data_file(run, "unlabeled.jsonl")},
                 after=_world_after(run) + (() if own_model else ("base teacher",)), outputs=(out,),
                 format=FORMATS["caption"])


def stage_masks(run: Run) -> Stage:
    from leaml.train.scoring import ScoringConfig, run_scoring_task

    out = run.path("masks")
    cfg = ScoringConfig(init_model="", labeled=storage.join(run.data, "labeled.jsonl"), media_root=run.data,
                        out=out, mask=run.cfg.generators.leaml.mask, media=run.cfg.generators.leaml.media)

    def go():  # a Ray task on a worker (GPUs from mask.scoring_gpus), never in the driver
        summary = run_scoring_task(cfg.model_copy(update={"init_model": run.model_uri("student")}),
                                   engine=run.cfg.engine, ray_address=run.cfg.ray_address)
        print(f"[masks] density over eligible linears {summary['density_masked_weights']:.3f}, "
              f"over all params {summary['density_all_params']:.3f}", flush=True)

    return Stage("neuron masks", storage.join(out, "summary.json"), go,
                 config={"scoring": cfg.model_dump(mode="json", exclude={"init_model", "out", "labeled",
                                                                        "media_root"})},
                 inputs=lambda: {"student": run.model_uri("student"), "labeled": cfg.labeled},
                 after=_world_after(run) + ("base student",), outputs=(out,), format=FORMATS["masks"])


def stage_generator(run: Run, variant: str) -> Stage:
    out = run.path("generators", variant)
    tcfg: TrainConfig = getattr(run.cfg.generators, variant)
    data = [DataSpec(kind="qa", uri=storage.join(run.data, "labeled.jsonl"), media_root=run.data)]
    if tcfg.caption_weight > 0:
        data.append(DataSpec(kind="caption", uri=run.path("captions", "captions.jsonl"), media_root=run.data,
                             weight=tcfg.caption_weight, every=tcfg.caption_every))
    masks = run.path("masks") if tcfg.method.startswith("masked") else None
    job_name = f"generator-{variant}"

    def go():
        run.train(job_name, out, tcfg, run.model_uri("student"), data, masks)

    def inputs() -> dict[str, str]:
        found = {"student": run.model_uri("student"), **{f"data{i}": d.uri for i, d in enumerate(data)}}
        return found | ({"masks": masks} if masks else {})

    after = _world_after(run) + ("base student",) + (("caption",) if tcfg.caption_weight > 0 else ()) \
        + (("neuron masks",) if masks else ())
    return Stage(f"generator {variant}", storage.join(out, "leaml_model.json"), go,
                 config={"train": _train_settings(tcfg)}, inputs=inputs, after=after,
                 outputs=(out, out + ".ckpt", run.ray_train_dir(job_name)), format=FORMATS["generator"])


def _merge_captions(run: Run) -> None:
    from leaml.records import Caption
    from leaml.streaming import read_shards

    # rewritten each time: a resumed stage has new shards; the same shards give the same bytes
    save_records(run.path("captions", "captions.jsonl"),
                 [Caption.model_validate(r) for r in read_shards(run.path("captions"))])


def known_templates(run: Run) -> dict[str, list[str]]:
    """Questions (with their option sets) seen in the labeled data: a pseudo pair must use one."""
    return {ex.question: ex.options for ex in load_records(storage.join(run.data, "labeled.jsonl"), VQAExample)}


def stage_pseudo_qa(run: Run, variant: str) -> Stage:
    from leaml.pipeline.qa_generator import APP_NAME, DEPLOYMENT_NAME, QARequester, build_qa_generator_app
    from leaml.streaming import read_shards, run_sharded

    out = run.path("pseudo_qa", variant)

    def go():
        qcfg = run.cfg.qagen.model_copy(update={"model": run.path("generators", variant)})
        app = f"{APP_NAME}-{variant}"
        with _serve_app(run, build_qa_generator_app, qcfg.model_dump(), app) as serving:
            target = {"serve": {"app": app, "deployment": DEPLOYMENT_NAME}} if serving else {"local": {}}
            counts = run_sharded(unlabeled_items(run), QARequester,
                                 {"target": target, "cfg": qcfg.model_dump(), "known_templates": known_templates(run),
                                  "retry": run.cfg.stream.retry.model_dump()},
                                 out, f"pseudo-qa {variant}", run.cfg.stream, engine=run.cfg.engine)
        rows = [PseudoCandidate.model_validate(r) for r in read_shards(out)]
        save_records(storage.join(out, "pseudo_qa.jsonl"), [r.example for r in rows if r.kept])
        stats = pseudo_stats(rows, counts)
        save_json(storage.join(out, "_SUCCESS.json"), stats, indent=2)
        print(f"[pseudo-qa {variant}] kept {stats.kept}/{stats.candidates} candidates; "
              f"dropped by reason: {stats.dropped}", flush=True)

    return Stage(f"pseudo-qa {variant}", storage.join(out, "_SUCCESS.json"), go,
                 config={"qagen": _scheduling_free(run.cfg.qagen, "model", *SERVING_KNOBS),
                         "unlabeled_limit": run.cfg.unlabeled_limit, "batch_size": run.cfg.stream.batch_size},
                 inputs=lambda: {"generator": run.path("generators", variant),
                                 "unlabeled": _data_file(run, "unlabeled.jsonl"),
                                 "labeled": _data_file(run, "labeled.jsonl")},
                 after=_world_after(run) + (f"generator {variant}",), outputs=(out,), format=FORMATS["pseudo-qa"])


def pseudo_stats(rows: list[PseudoCandidate], counts: StreamCounts) -> PseudoQAStats:
    from collections import Counter

    reasons = Counter(r.reason.split(":")[0] for r in rows if not r.kept)
    return PseudoQAStats(**counts.model_dump(), candidates=len(rows), kept=sum(r.kept for r in rows),
                         dropped=dict(reasons))


def stage_vqa(run: Run, row: str) -> Stage:
    out = run.path("vqa", row)
    labeled = DataSpec(kind="vqa", uri=storage.join(run.data, "labeled.jsonl"), media_root=run.data)
    if row == "fully_supervised":
        tcfg, data = run.cfg.fully_supervised, [labeled.model_copy(update={"uri": storage.join(run.data, "train.jsonl")})]
    elif row == "lora":
        tcfg, data = run.cfg.lora, [labeled]
    else:  # full fine-tuning on the labeled pairs, plus, for a generator variant, its pseudo pairs
        tcfg, data = run.cfg.vqa, [labeled]

    pseudo = run.path("pseudo_qa", row, "pseudo_qa.jsonl")

    def go():
        if row in GENERATOR_ROWS:  # one labeled and one pseudo batch per step
            if load_records(pseudo, VQAExample):
                data.append(DataSpec(kind="vqa", uri=pseudo, media_root=run.data, weight=run.cfg.pseudo_weight))
            else:
                print(f"[vqa {row}] WARNING: the generator kept no pseudo pair; training on labeled pairs only",
                      flush=True)
        run.train(f"vqa-{row}", out, tcfg, run.model_uri("student"), data)

    def inputs() -> dict[str, str]:
        found = {"student": run.model_uri("student"), "labeled": data[0].uri}
        return found | ({"pseudo": pseudo} if row in GENERATOR_ROWS else {})

    config = {"train": _train_settings(tcfg)}
    if row in GENERATOR_ROWS:
        config["pseudo_weight"] = run.cfg.pseudo_weight
    after = _world_after(run) + ("base student",) + ((f"pseudo-qa {row}",) if row in GENERATOR_ROWS else ())
    return Stage(f"vqa {row}", storage.join(out, "leaml_model.json"), go, config=config, inputs=inputs,
                 after=after, outputs=(out, out + ".ckpt", run.ray_train_dir(f"vqa-{row}")),
                 format=FORMATS["vqa"])


def row_model(run: Run, row: str) -> str:
    if row == "zero_shot_student":
        return run.model_uri("student")
    if row == "zero_shot_teacher":
        return run.model_uri("teacher")
    return run.path("vqa", row)


def stage_eval_row(run: Run, row: str) -> Stage:
    from leaml.evaluate.inference import SCHEDULING
    from leaml.evaluate.stage import ModelUnderTest, evaluate_model, load_split, stream_dir

    out = run.eval_row(row)

    def go():
        model = ModelUnderTest(name=ROW_TITLES[row], uri=row_model(run, row))
        result = evaluate_model(load_split(run.data, "test", run.cfg.eval_limit), model, run.data, run.eval_dir,
                                run.cfg.evaluation, engine=run.cfg.engine)
        save_json(out, result.model_copy(update={"row": row}), indent=2)
        print(f"[eval] {ROW_TITLES[row]}: average {100 * result.scores.mean_of_categories:.1f}%", flush=True)

    model_stage = {"zero_shot_student": "base student", "zero_shot_teacher": "base teacher"}.get(row, f"vqa {row}")
    # the section held a ray_address (which the pipeline's own always overrode) until #16; kept as
    # it was so that rows evaluated before stay done
    settings = _scheduling_free(run.cfg.evaluation, *SCHEDULING) | {"ray_address": None}
    config = {"evaluation": settings, "eval_limit": run.cfg.eval_limit}
    return Stage(f"evaluate {row}", out, go, config=config,
                 inputs=lambda: {"model": row_model(run, row), "test": _data_file(run, "test.jsonl")},
                 after=_world_after(run) + (model_stage,),
                 outputs=(out, stream_dir(run.eval_dir, ROW_TITLES[row])), format=FORMATS["evaluate"])


def plan(run: Run) -> list[Stage]:
    rows = run.cfg.rows
    stages = [] if run.cfg.data_dir else [stage_world(run)]
    stages.append(stage_base(run, "student"))
    if "zero_shot_teacher" in rows or any(v in rows for v in ("distill", "leaml")):
        stages.append(stage_base(run, "teacher"))
    variants = [v for v in GENERATOR_ROWS if v in rows]
    if any(getattr(run.cfg.generators, v).caption_weight > 0 for v in variants):
        stages.append(stage_captions(run))
    if any(getattr(run.cfg.generators, v).method.startswith("masked") for v in variants):
        stages.append(stage_masks(run))
    for v in variants:
        stages += [stage_generator(run, v), stage_pseudo_qa(run, v)]
    stages += [stage_vqa(run, r) for r in rows if not r.startswith("zero_shot")]
    stages += [stage_eval_row(run, r) for r in rows]
    for s in stages:
        s.record = run.record_uri(s)
    return stages


def run_pipeline(cfg: PipelineConfig, only: list[str] | None = None, report: bool = True) -> dict[str, str]:
    """Run every stage not yet done (or only those whose name starts with one of ``only``);
    write the report when every row is evaluated; returns the report paths (empty if none)."""
    from leaml.jobs import init_ray
    from leaml.jobs import announce
    from leaml.pipeline.lock import run_lock
    from leaml.plan import check_fits

    run = Run(cfg)
    stages = select_stages(plan(run), only)  # before Ray starts: a typo fails in a second
    check_fits(cfg)  # with resources.gpu_memory_gb set: a stage that cannot fit stops the run here
    with run_lock(run.dir):  # one driver per run dir: a second one is refused, naming this one
        announce("run", run.dir)
        storage.write_text(run.path("config.yaml"), dump_config(cfg))
        if cfg.engine == "ray":
            init_ray(cfg.ray_address)
        t0 = time.perf_counter()
        for stage in stages:
            run_stage(stage)
        if not report or not all(storage.exists(run.eval_row(r)) for r in cfg.rows):
            return {}
        paths = write_run_report(run, time.perf_counter() - t0)
        print(storage.read_text(paths["md"]), flush=True)
        announce("report", paths["md"])
        return paths


def select_stages(stages: list[Stage], only: list[str] | None) -> list[Stage]:
    """The stages whose name starts with one of ``only`` (all when None). A prefix that names no
    stage is an error listing them; one of a stage this config leaves out (``world`` when
    ``data_dir`` is given) selects nothing."""
    from leaml.config import ConfigError

    if not only:
        return stages
    names = [s.name for s in stages] + list(STAGE_FAMILIES)
    unknown = [o for o in only if not any(n.startswith(o) for n in names)]
    if unknown:
        raise ConfigError(f"--stages {' '.join(unknown)}: no stage of this config starts with that; "
                          f"the stages are: {', '.join(repr(s.name) for s in stages)}")
    return [s for s in stages if any(s.name.startswith(o) for o in only)]


def print_status(cfg: PipelineConfig, only: list[str] | None = None) -> list[fp.Status]:
    """``leaml run --dry-run``: every stage as done / stale / pending and why; runs nothing."""
    stages = plan(Run(cfg))
    chosen = {s.name for s in select_stages(stages, only)}
    statuses = assess_stages(stages)
    for status in statuses:
        print(status.line() + ("" if status.name in chosen else "   (not selected)"), flush=True)
    return statuses


def write_run_report(run: Run, seconds: float) -> dict[str, str]:
    from leaml.data.dataset_dir import load_dataset_info
    from leaml.evaluate.report import restrict_average, write_report
    from leaml.evaluate.stage import REPORT_CATEGORIES

    rows = [load_json(run.eval_row(r), EvalRow) for r in run.cfg.rows]
    pseudo = {v: load_json(run.path("pseudo_qa", v, "_SUCCESS.json"), PseudoQAStats).model_dump(mode="json")
              for v in GENERATOR_ROWS if storage.exists(run.path("pseudo_qa", v, "_SUCCESS.json"))}
    info = load_dataset_info(run.data)  # dataset.json of converted data, else the world's world.json
    meta = {"seconds_this_invocation": round(seconds, 1), "pseudo_qa": pseudo, "prior_only": info.prior_only,
            "dataset": info.title, "paper": info.paper}
    title = f"LEAML on the {info.title} test split"
    if run.cfg.evaluation.scoring == "options":
        title += " (scored by the most likely option)"
    averaged = restrict_average(rows, info.average_over) if info.average_over else rows  # the note's numbers
    note = gap_note(averaged, info.domain, info.paper)
    return write_report(run.eval_dir, rows, title, REPORT_CATEGORIES, meta, note, average_over=info.average_over)


def gap_note(rows: list[EvalRow], domain: str = "endo", paper: dict | None = None) -> str:
    """LEAML's gain over full fine-tuning and its gap closure, beside the paper's figure (``paper``:
    the dataset's own ``{benchmark, gap_closure}``, else the stand-in of a synthetic ``domain``)."""
    from leaml.data.dataset_dir import stand_in

    by = {r.row: r.scores.mean_of_categories for r in rows}
    if not {"leaml", "full", "fully_supervised"} <= by.keys():
        return ""
    denom = by["fully_supervised"] - by["full"]
    # a ratio over a gap of ~0 or below is noise or flips sign: say so instead of printing it
    closure = (f"{(by['leaml'] - by['full']) / denom:.2f}" if denom > 1e-9
               else "n/a (fully supervised does not beat full fine-tuning)")
    paper = paper or stand_in(domain)
    cited = f" (paper: {paper['gap_closure']:.2f} on {paper['benchmark']})" if paper else ""
    return (f"LEAML - full fine-tuning: {100 * (by['leaml'] - by['full']):+.1f} points; gap closure "
            f"(LEAML - full) / (fully supervised - full) = {closure}{cited}.")


@contextmanager
def _serve_app(run: Run, builder, args: dict, name: str):
    """Serve a deployment for the duration of a stage (ray engine); yields whether it is served."""
    if run.cfg.engine != "ray":
        yield False
        return
    from ray import serve

    serve.run(builder(args), name=name, route_prefix=None)
    try:
        yield True
    finally:
        serve.delete(name)
