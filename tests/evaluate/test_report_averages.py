"""The report on real data: Average over the paper's columns (Kvasir-VQA: Table 1's four findings;
SPORTU: the three levels), title and paper figure from the dataset's own dataset.json."""
from __future__ import annotations

import json

import pytest

from leaml.evaluate.report import restrict_average, write_report
from leaml.pipeline.config import PipelineConfig
from leaml.pipeline.graph import Run, write_run_report
from leaml.records import EvalRow, save_json
from tests.data import fakes

KVASIR_ACC = {"colitis": 0.2, "esophagitis": 0.4, "instrument": 0.6, "polyps": 0.8, "normal": 1.0, "other": 1.0}


def _row(row: str, acc: dict[str, float]) -> EvalRow:
    cats = {c: {"accuracy": a, "n": 10} for c, a in acc.items()}
    scores = {"categories": cats, "mean_of_categories": sum(acc.values()) / len(acc), "overall": 0.5,
              "n": 10 * len(acc), "no_match_rate": 0.0}
    return EvalRow.model_validate({"row": row, "method": row, "model": f"vqa/{row}", "scores": scores})


def test_restricted_average_is_the_mean_of_the_papers_columns_only():
    (row,) = restrict_average([_row("full", KVASIR_ACC)], ["colitis", "esophagitis", "instrument", "polyps"])
    assert row.scores.mean_of_categories == pytest.approx(0.5)  # not 0.667 with normal / other
    assert row.scores.mean_of_all_categories == pytest.approx(4.0 / 6)
    twice = restrict_average([row], ["colitis"])[0].scores
    assert twice.mean_of_all_categories == pytest.approx(4.0 / 6)  # the original survives a second pass


def test_markdown_average_column_and_note(tmp_path):
    paths = write_report(str(tmp_path), [_row("full", KVASIR_ACC)], "t", ["normal"],
                         average_over=["colitis", "esophagitis", "instrument", "polyps"])
    md = open(paths["md"]).read()
    assert "| Method | Colitis | Esophagitis | Instrument | Polyps | Normal | Other | Average |" in md
    assert "| full | 20.0 | 40.0 | 60.0 | 80.0 | 100.0 | 100.0 | 50.0 |" in md
    assert "Average = mean of colitis, esophagitis, instrument, polyps (the paper's columns" in md
    assert json.load(open(paths["json"]))["average_over"] == ["colitis", "esophagitis", "instrument", "polyps"]


def test_run_report_on_converted_kvasir_names_it_and_cites_table_1(tmp_path):
    data = fakes.converted_kvasir(tmp_path)
    run = Run(PipelineConfig(run_dir=str(tmp_path / "run"), data_dir=str(data), engine="local",
                             rows=["full", "leaml", "fully_supervised"]))
    accs = {"full": 0.4, "leaml": 0.5, "fully_supervised": 0.6}
    for name, a in accs.items():  # paper columns at a; normal always right, which must not lift the Average
        acc = {c: a for c in ("colitis", "esophagitis", "instrument", "polyps")} | {"normal": 1.0}
        save_json(run.eval_row(name), _row(name, acc), indent=2)
    md = open(write_run_report(run, 1.0)["md"]).read()
    assert md.startswith("# LEAML on the Kvasir-VQA test split")
    assert "| Full fine-tuning (1%) |" not in md  # rows keep their own method names
    assert "| full | 40.0 | 40.0 | 40.0 | 40.0 | 100.0 | 40.0 |" in md
    assert "gap closure (LEAML - full) / (fully supervised - full) = 0.50 (paper: 0.49 on Kvasir-VQA)" in md
    report = json.loads((tmp_path / "run" / "eval" / "report.json").read_text())
    assert report["meta"]["dataset"] == "Kvasir-VQA" and report["meta"]["paper"]["table"] == "Table 1"


def test_synthetic_world_keeps_every_category_in_its_average(tiny_world, tmp_path):
    run = Run(PipelineConfig(run_dir=str(tmp_path / "run"), data_dir=tiny_world, engine="local", rows=["full"]))
    save_json(run.eval_row("full"), _row("full", KVASIR_ACC))
    md = open(write_run_report(run, 1.0)["md"]).read()
    assert md.startswith("# LEAML on the endo test split") and "| 66.7 |" in md
