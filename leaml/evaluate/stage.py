"""Evaluation stage: a dataset split + one or more checkpoints -> predictions and a report.

Reads ``<data_dir>/<split>.jsonl`` (VQAExample), runs greedy inference per model, scores
multiple-choice accuracy per category, writes ``predictions-<name>.jsonl`` and the report
(json / md / png) into ``out_dir``.
"""
from __future__ import annotations

from pydantic import Field

from leaml import storage
from leaml.config import StrictModel
from leaml.evaluate.inference import InferenceConfig, run_inference, save_predictions
from leaml.evaluate.matching import score_predictions
from leaml.evaluate.report import write_report
from leaml.records import VQAExample, load_records

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


def load_split(data_dir: str, split: str, limit: int | None = None) -> list[VQAExample]:
    examples = load_records(storage.join(data_dir, f"{split}.jsonl"), VQAExample)
    return examples[:limit] if limit else examples


def evaluate_model(examples: list[VQAExample], model: ModelUnderTest, cfg: EvalConfig) -> dict:
    gens = run_inference(examples, model.uri, cfg.data_dir, cfg.inference, desc=f"evaluate {model.name}")
    save_predictions(storage.join(cfg.out_dir, f"predictions-{_slug(model.name)}.jsonl"), examples, gens)
    return {"method": model.name, "model": model.uri, "scores": score_predictions(examples, gens)}


def run_evaluation(cfg: EvalConfig) -> dict[str, str]:
    """Evaluate every model; returns the report paths."""
    from leaml.data.dataset_dir import load_dataset_info

    examples = load_split(cfg.data_dir, cfg.split, cfg.limit)
    rows = [evaluate_model(examples, m, cfg) for m in cfg.models]
    info = load_dataset_info(cfg.data_dir)
    return write_report(cfg.out_dir, rows, cfg.title, REPORT_CATEGORIES,
                        meta={"split": cfg.split, "n_examples": len(examples), "dataset": info.title},
                        average_over=info.average_over)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
