import json

from leaml.evaluate.report import write_report
from leaml.records import EvalRow


def row(method, a, b, no_match=0.0) -> EvalRow:
    cats = {"polyps": {"accuracy": a, "n": 10}, "colitis": {"accuracy": b, "n": 10}}
    return EvalRow.model_validate({"method": method, "model": f"ckpt/{method}", "scores": {
        "categories": cats, "mean_of_categories": (a + b) / 2, "overall": (a + b) / 2, "n": 20,
        "no_match_rate": no_match}})


def test_report_files(tmp_path):
    rows = [row("zero-shot", 0.25, 0.5, no_match=0.4), row("LEAML", 0.75, 1.0)]
    paths = write_report(str(tmp_path), rows, "endo test", preferred_categories=["colitis", "polyps"])
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["categories"] == ["colitis", "polyps"]
    assert doc["rows"] == [r.model_dump(mode="json") for r in rows] and "row" not in doc["rows"][0]
    md = (tmp_path / "report.md").read_text()
    assert "| zero-shot | 50.0 | 25.0 | 37.5 | 37.5 | 40.0 | 20 |" in md
    assert "| LEAML | 100.0 | 75.0 | 87.5 | 87.5 | 0.0 | 20 |" in md
    png = (tmp_path / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert set(paths) == {"json", "md", "png"}
