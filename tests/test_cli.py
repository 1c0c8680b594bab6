"""The command line end to end at tiny sizes: synth a world, init a model, evaluate it."""
from __future__ import annotations

import json

from leaml.cli import main


def test_synth_init_evaluate_write_a_report(tmp_path, capsys):
    world, model, out = tmp_path / "world", tmp_path / "model", tmp_path / "eval"
    assert main(["data", "synth", "--out", str(world), "n_general=20", "n_endo_train=30", "n_endo_test=10",
                 "n_teacher_pool=5"]) == 0
    assert "prior-only (most common train answer per question), test split" in capsys.readouterr().out
    assert main(["model", "init", "--preset", "tiny-qwen2.5-vl", "--data", str(world), "--out", str(model)]) == 0
    assert main(["evaluate", f"data_dir={world}", f"out_dir={out}", f"models=[{{name: base, uri: {model}}}]",
                 "inference.engine=local", "limit=12"]) == 0
    doc = json.loads((out / "report.json").read_text())
    assert doc["rows"][0]["method"] == "base" and doc["rows"][0]["scores"]["n"] == 12
    assert (out / "report.png").stat().st_size > 5000 and "| base |" in (out / "report.md").read_text()


def test_config_typo_exits_2_naming_the_key(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path), "n_endo_trian=3"]) == 2
    assert "n_endo_trian: unknown key" in capsys.readouterr().err


def test_synth_sport_writes_clips_and_prints_the_baselines(tmp_path, capsys):
    out = tmp_path / "sport"
    assert main(["data", "synth-sport", "--out", str(out), "--workers", "1", "n_train=12", "n_test=4",
                 "n_teacher_pool=2", "n_general=8"]) == 0
    text = capsys.readouterr().out
    assert "prior-only" in text and "single middle frame" in text and "hard" in text
    meta = json.loads((out / "world.json").read_text())
    assert meta["domain"] == "sport" and meta["sizes"]["train_clips"] == 12 and meta["sizes"]["test_clips"] == 4
    assert set(meta["middle_frame"]["per_category"]) == {"easy", "medium", "hard"}
    assert len(list((out / "media").glob("sport-*.mp4"))) == 12 + 4 + 2


def test_synth_builds_the_world_its_domain_names(tmp_path, capsys):
    """One command for both worlds: ``domain=sport`` picks the sport config (its keys in errors);
    ``synth-sport`` is the same command and refuses a config that names another world."""
    out = tmp_path / "sport"
    assert main(["data", "synth", "--out", str(out), "--workers", "1", "domain=sport", "n_train=4", "n_test=2",
                 "n_teacher_pool=1", "n_general=4"]) == 0
    assert "sport world written" in capsys.readouterr().out
    assert json.loads((out / "world.json").read_text())["sizes"]["train_clips"] == 4
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "domain=sport", "n_endo_train=3"]) == 2
    assert "n_endo_train: unknown key (allowed here:" in capsys.readouterr().err
    assert main(["data", "synth-sport", "--out", str(tmp_path / "y"), "domain=endo"]) == 2
    assert "builds the sport world, got 'endo'" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def test_demo_profiles_name_shipped_configs_of_the_right_world():
    from leaml.config import load_config
    from leaml.pipeline.config import PipelineConfig
    from leaml.pipeline.demo import demo_config_path

    for quick in (False, True):
        for video in (False, True):
            cfg = load_config(PipelineConfig, str(demo_config_path(quick, video)), [])
            assert cfg.world.domain == ("sport" if video else "endo")
