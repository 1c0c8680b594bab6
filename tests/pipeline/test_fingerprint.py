"""The stage graph as a build system, on the real plan with fake stage bodies (no model trained):
what a changed input, a changed config or nothing changed redoes; digests; artifact names."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from leaml import fingerprint as fp
from leaml.pipeline.config import PipelineConfig
from leaml.pipeline.graph import Run, assess_stages, plan, print_status, run_stage, safe_join


def _write(path: str | Path, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


def _fake_body(run: Run, stage, ran: list[str]):
    """What the stage would write: the same bytes from the same inputs (config left aside, so a
    config change shows the early cutoff)."""
    family, _, arg = stage.name.partition(" ")

    def go():
        ran.append(stage.name)
        if family == "world":
            for f in ("labeled", "unlabeled", "train", "test"):
                _write(Path(run.data) / f"{f}.jsonl", f"{f} rows\n")
        if family == "base":
            model = Path(run.dir).parent / "cache" / arg
            _write(model / "model.safetensors", f"weights of {arg}")
            _write(run.path("models", f"{arg}.json"), json.dumps({"uri": str(model)}))
        if family == "caption":
            _write(run.path("captions", "captions.jsonl"), "a caption\n")
        if family == "pseudo-qa":
            _write(run.path("pseudo_qa", arg, "pseudo_qa.jsonl"), f"pairs of {arg}\n")
        if not Path(stage.done_marker).exists():  # the base stage's record is its marker
            # a function of what it read, as a trained model is
            _write(stage.done_marker, json.dumps({"stage": stage.name, "from": stage.parts()["inputs"]}))

    return go


def _invoke(tmp_path: Path, *overrides: dict) -> tuple[list[str], list[fp.Status]]:
    """One ``leaml run`` with fake bodies: (stages that ran, statuses planned before running)."""
    cfg = PipelineConfig(run_dir=str(tmp_path / "run"), engine="local")
    for o in overrides:
        cfg = cfg.model_copy(update=o)
    run = Run(cfg)
    stages, ran = plan(run), []
    before = assess_stages(stages)
    for stage in stages:
        stage.run = _fake_body(run, stage, ran)
        run_stage(stage)
    return ran, before


def test_nothing_changed_nothing_redone(tmp_path):
    ran, before = _invoke(tmp_path)
    assert {s.state for s in before} == {"pending"} and len(ran) == len(before) == 25
    ran, before = _invoke(tmp_path)
    assert ran == [] and {s.state for s in before} == {"done"}


def test_changed_pseudo_pair_redoes_its_vqa_row_and_evaluation_only(tmp_path):
    _invoke(tmp_path)
    run = tmp_path / "run"
    old = [run / "ray_train" / f"vqa-{r}" / f"vqa-{r}-0123456789abcdef" / "checkpoint_0" / "trainer_state.json"
           for r in ("leaml", "full")] + [run / "vqa" / "leaml.ckpt" / "0123" / "step-0000002" / "trainer_state.json"]
    for f in old:
        _write(f, "{}")
    pairs = run / "pseudo_qa" / "leaml" / "pseudo_qa.jsonl"
    pairs.write_text(pairs.read_text().replace("pairs", "edited pairs"))
    ran, before = _invoke(tmp_path)
    assert ran == ["vqa leaml", "evaluate leaml"]
    # the redone fit's old checkpoints are gone (none could resume it); another row's are kept
    assert [f.exists() for f in old] == [False, True, False]
    why = {s.name: (s.state, s.why) for s in before if s.state != "done"}
    assert why == {"vqa leaml": ("stale", "input changed: pseudo"),
                   "evaluate leaml": ("stale", "input stage vqa leaml is redone (this one too if that output changes)")}
    assert _invoke(tmp_path)[0] == []


def test_changed_config_redoes_that_stage_and_stops_where_outputs_are_the_same(tmp_path, capsys):
    _invoke(tmp_path)
    qagen = PipelineConfig().qagen.model_copy(update={"top_p": 0.5})
    ran, before = _invoke(tmp_path, {"qagen": qagen})
    # the fake generator writes the same pairs again: nothing downstream of them changes
    assert ran == ["pseudo-qa baseline", "pseudo-qa distill", "pseudo-qa leaml"]
    changed = [s for s in before if "config changed" in s.why]
    top_p = PipelineConfig().qagen.top_p
    assert {s.name for s in changed} == set(ran) and all(f"qagen.top_p: {top_p} -> 0.5" in s.why for s in changed)
    # the dry run cannot know that yet: it says what waits on them
    assert {s.name for s in before if s.state == "stale"} - set(ran) == {
        f"{stage} {v}" for v in ("baseline", "distill", "leaml") for stage in ("vqa", "evaluate")}
    # a replica count schedules the work; it does not change the result
    serving = qagen.model_copy(update={"num_replicas": 3})
    cfg = PipelineConfig(run_dir=str(tmp_path / "run"), engine="local", qagen=serving)
    capsys.readouterr()
    assert {s.state for s in print_status(cfg)} == {"done"}
    assert "done    pseudo-qa leaml" in capsys.readouterr().out


def test_a_stage_killed_midway_resumes_only_on_the_same_fingerprint(tmp_path):
    _invoke(tmp_path)
    captions = tmp_path / "run" / "captions"
    (captions / "_SUCCESS.json").unlink()  # killed before the done marker
    (captions / "shard-00000.jsonl").write_text("partial\n")
    ran, before = _invoke(tmp_path)
    assert ran == ["caption"] and (captions / "shard-00000.jsonl").exists()  # same inputs: resumed
    assert {s.name: s.why for s in before}["caption"] == "interrupted; resumes its partial output (same fingerprint)"
    (captions / "_SUCCESS.json").unlink()
    changed = PipelineConfig().captioner.model_copy(update={"max_new_tokens": 7})
    ran, before = _invoke(tmp_path, {"captioner": changed})
    assert "caption" in ran and not (captions / "shard-00000.jsonl").exists()  # other inputs: cleared
    default = PipelineConfig().captioner.max_new_tokens
    assert f"captioner.max_new_tokens: {default} -> 7" in {s.name: s.why for s in before}["caption"]


def test_digests_follow_content_and_ignore_rewrites_of_the_same_bytes(tmp_path):
    d = tmp_path / "model"
    _write(d / "a.json", "1")
    _write(d / "sub" / "b.bin", "2")
    first = fp.digest_artifact(str(d))
    _write(d / "a.json", "1")  # rewritten, same bytes
    assert fp.digest_artifact(str(d)) == first
    _write(d / "sub" / "b.bin", "3")
    assert fp.digest_artifact(str(d)) != first
    assert fp.digest_artifact(str(tmp_path / "absent")) == fp.MISSING
    assert fp.digest_inputs({"m": "Qwen/Qwen2.5-VL-7B-Instruct"}) == {"m": "name:Qwen/Qwen2.5-VL-7B-Instruct"}


def test_digests_of_s3_artifacts_come_from_etags(s3_bucket):
    from leaml import storage

    storage.write_text(f"{s3_bucket}/m/a.json", "1")
    storage.write_text(f"{s3_bucket}/m2/a.json", "1")  # a sibling prefix is not part of m
    first = fp.digest_artifact(f"{s3_bucket}/m")
    assert first.startswith("tree:") and fp.digest_artifact(f"{s3_bucket}/m/a.json").startswith("etag:")
    storage.write_text(f"{s3_bucket}/m/a.json", "2")
    assert fp.digest_artifact(f"{s3_bucket}/m") != first
    assert fp.digest_artifact(f"{s3_bucket}/nothing") == fp.MISSING


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "s3://other/x", "~/x"])
def test_artifact_names_never_leave_the_run_dir(tmp_path, name):
    with pytest.raises(ValueError, match="would leave"):
        safe_join(str(tmp_path), "vqa", name)
    run = Run(PipelineConfig(run_dir=str(tmp_path), engine="local"))
    with pytest.raises(ValueError):
        run.path("pseudo_qa", name)
    assert run.path("vqa", "leaml", "x.json").startswith(str(tmp_path))


def test_leaml_run_dry_run_prints_every_stage_and_runs_nothing(tmp_path, capsys):
    from leaml.cli import main

    _invoke(tmp_path)
    pairs = tmp_path / "run" / "pseudo_qa" / "distill" / "pseudo_qa.jsonl"
    pairs.write_text("other pairs\n")
    config = tmp_path / "job.yaml"
    config.write_text(f"run_dir: {tmp_path / 'run'}\nengine: local\n")
    capsys.readouterr()
    assert main(["run", "--config", str(config), "--dry-run", "--stages", "vqa", "evaluate"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 25 and lines[0].startswith("done    world")
    assert any(line.startswith("stale   vqa distill") and "input changed: pseudo" in line for line in lines)
    assert any(line.startswith("done    generator leaml") and line.endswith("(not selected)") for line in lines)
    assert pairs.read_text() == "other pairs\n" and _invoke(tmp_path)[0] == ["vqa distill", "evaluate distill"]
