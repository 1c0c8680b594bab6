"""Evaluation stage: a dataset split + one or more checkpoints -> predictions and a report.

Reads ``<data_dir>/<split>.jsonl`` (VQAExample), runs greedy inference per model on the stream,
scores multiple-choice accuracy per category, writes ``predictions-<name>.jsonl`` and the report
(json / md / png) into ``out_dir``; each model's stream shards and errors file are kept in
``stream/<name>/`` there, so a re-run resumes.
"""
from __future__ import annotations

from pydantic import Field

from leaml import storage
from leaml.config import StrictModel
from leaml.evaluate.inference import InferenceConfig, InferenceSettings, run_inference, save_predictions
from leaml.evaluate.matching import score_predictions
from leaml.evaluate.report import write_report
from leaml.records import EvalRow, EvalScores, VQAExample, load_records
from leaml.streaming import Engine

REPORT_CATEGORIES = ["colitis", "esophagitis", "instrument", "polyps", "normal", "easy", "medium", "hard"]


class ModelUnderTest(StrictModel):
    name: str
    """Row label in the report (e.g. "zero-shot (student)")."""
    uri: str
    """Hugging Face checkpoint directory or s3:// prefix."""


class EvalConfig(StrictModel):
    data_dir: str
    """Dataset directory holding ``<split>.jsonl`` and the media it refers to."""
    split: str = "test"
    models: list[ModelUnderTest] = Field(min_length=1)
    out_dir: str
    title: str = "VQA accuracy"
    limit: int | None = Field(None, ge=1)
    """Evaluate only the first N examples (quick runs)."""
    inference: InferenceConfig = InferenceConfig()
    """Answering settings, and the engine that runs them (this command's own)."""


def load_split(data_dir: str, split: str, limit: int | None = None) -> list[VQAExample]:
    examples = load_records(storage.join(data_dir, f"{split}.jsonl"), VQAExample)
    return examples[:limit] if limit else examples


def stream_dir(out_dir: str, name: str) -> str:
    """Where the answers of the model named ``name`` stream to (shards + ``errors/``), beside its
    predictions file."""
    return storage.join(out_dir, "stream", _slug(name))


def evaluate_model(examples: list[VQAExample], model: ModelUnderTest, data_dir: str, out_dir: str,
                   settings: InferenceSettings, *, engine: Engine) -> EvalRow:
    """Answer ``examples`` with ``model`` -> ``predictions-<name>.jsonl`` in ``out_dir``; its row of scores."""
    gens = run_inference(examples, model.uri, data_dir, settings, engine=engine,
                         stream_dir=stream_dir(out_dir, model.name), stage=f"evaluate {model.name}")
    save_predictions(storage.join(out_dir, f"predictions-{_slug(model.name)}.jsonl"), examples, gens)
    scores = EvalScores.model_validate(score_predictions(examples, gens))
    return EvalRow(method=model.name, model=model.uri, scores=scores)


def run_evaluation(cfg: EvalConfig) -> dict[str, str]:
    """Evaluate every model; returns the report paths."""
    from leaml.data.dataset_dir import load_dataset_info
    from leaml.jobs import init_ray

    examples = load_split(cfg.data_dir, cfg.split, cfg.limit)
    if cfg.inference.engine == "ray":
        init_ray(cfg.inference.ray_address)
    rows = [evaluate_model(examples, m, cfg.data_dir, cfg.out_dir, cfg.inference, engine=cfg.inference.engine)
            for m in cfg.models]
    info = load_dataset_info(cfg.data_dir)
    return write_report(cfg.out_dir, rows, cfg.title, REPORT_CATEGORIES,
                        meta={"split": cfg.split, "n_examples": len(examples), "dataset": info.title},
                        average_over=info.average_over)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
