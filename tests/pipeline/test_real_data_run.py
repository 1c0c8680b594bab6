"""End to end on real-data formats: a fake Kvasir-VQA or SPORTU download -> ``leaml data convert`` ->
``leaml run`` (the quick profile's sizes, tiny untrained models) -> a report titled and averaged
from the dataset's own dataset.json."""
from __future__ import annotations

import json

import pytest

from leaml.cli import main
from tests.data import fakes


def _convert(name: str, root) -> str:
    if name == "kvasir":
        src = fakes.write_kvasir(root / "download")
        args = ["kvasir", "--src", str(src), "train_fraction=0.5", "test_fraction=0.5", "labeled_fraction=0.1"]
    else:
        json_path, videos = fakes.write_sportu(root / "download")
        args = ["sportu", "--src", str(json_path), "--videos", str(videos), "labeled_fraction=0.1"]
    assert main(["data", "convert", *args, "--out", str(root / "data")]) == 0
    return str(root / "data")


@pytest.mark.slow
@pytest.mark.parametrize("name, title, average_over", [
    ("kvasir", "Kvasir-VQA", ["colitis", "esophagitis", "instrument", "polyps"]),
    ("sportu", "SPORTU", ["easy", "medium", "hard"]),
])
def test_converted_data_runs_through_the_whole_graph(tmp_path, capsys, name, title, average_over):
    from leaml.models.init import init_base_model

    data = _convert(name, tmp_path)
    base = init_base_model("tiny-qwen2.5-vl", data, str(tmp_path / "base"))
    run_dir = tmp_path / "run"
    assert main(["run", "--config", "ray_jobs/configs/demo_quick.yaml", f"run_dir={run_dir}", f"data_dir={data}",
                 "engine=local", f"student={{path: {base}}}", f"teacher={{path: {base}}}",
                 "rows=[zero_shot_student, full, leaml, fully_supervised]", "qagen.decoding=free"]) == 0
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    assert report["title"] == f"LEAML on the {title} test split"
    assert report["average_over"] == average_over
    assert [r["row"] for r in report["rows"]] == ["zero_shot_student", "full", "leaml", "fully_supervised"]
    stats = json.loads((run_dir / "pseudo_qa" / "leaml" / "_SUCCESS.json").read_text())
    assert stats["candidates"] == 2 * len((tmp_path / "data" / "unlabeled.jsonl").read_text().splitlines())
    out = capsys.readouterr().out
    assert f"[artifacts] run: {run_dir}" in out and f"[artifacts] report: {run_dir}/eval/report.md" in out
