"""Where a submitted job writes (leaml.jobs) and how the entry points read their command line."""
from __future__ import annotations

import pytest

import leaml.pipeline.graph as graph
from leaml import cli
from leaml.config import ConfigError, load_config
from leaml.jobs import JobPathError, job_path
from leaml.pipeline.config import PipelineConfig
from ray_jobs import pipeline as pipeline_job

QUICK = "ray_jobs/configs/demo_quick.yaml"  # its run_dir is relative: runs/demo-quick


@pytest.fixture
def in_job(monkeypatch, tmp_path):
    """This process as the driver of ``ray job submit`` (Ray sets this variable for it)."""
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    monkeypatch.delenv("LEAML_RUN_ROOT", raising=False)


@pytest.fixture
def spy_run(monkeypatch):
    """Replace run_pipeline: record the config and stages it would have run."""
    calls = []
    monkeypatch.setattr(graph, "run_pipeline", lambda cfg, only=None, report=True: calls.append((cfg, only)))
    return calls


def test_outside_a_job_paths_are_left_alone(monkeypatch):
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert job_path("runs/a", "run_dir") == "runs/a"


def test_inside_a_job_a_relative_path_is_refused_with_what_to_pass(in_job):
    with pytest.raises(JobPathError, match=r"run_dir='runs/a' is relative, and this is a Ray job.*s3://"):
        job_path("runs/a", "run_dir")
    assert job_path("s3://b/runs/a", "run_dir") == "s3://b/runs/a"
    assert job_path("/mnt/shared/runs/a", "run_dir") == "/mnt/shared/runs/a"


def test_inside_a_job_a_shared_root_resolves_relative_paths(in_job, monkeypatch):
    monkeypatch.setenv("LEAML_RUN_ROOT", "s3://bucket/runs")
    assert job_path("a", "run_dir") == "s3://bucket/runs/a"
    assert load_config(PipelineConfig, QUICK).run_dir == "s3://bucket/runs/runs/demo-quick"


def test_the_package_dir_of_a_job_is_recognised_without_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    pkg = tmp_path / "runtime_resources" / "working_dir_files" / "_ray_pkg_abc"
    pkg.mkdir(parents=True)
    monkeypatch.chdir(pkg)
    with pytest.raises(JobPathError):
        job_path("runs/a", "run_dir")


def test_pipeline_config_with_a_relative_run_dir_is_a_config_error_in_a_job(in_job):
    with pytest.raises(ConfigError, match="is relative, and this is a Ray job"):
        load_config(PipelineConfig, QUICK)
    assert load_config(PipelineConfig, QUICK, ["run_dir=/shared/r"]).run_dir == "/shared/r"


def test_the_pipeline_job_refuses_to_start_and_says_why(in_job, spy_run, capsys):
    assert pipeline_job.main_with_config(PipelineConfig, pipeline_job._run, "", pipeline_job._extra,
                                         ["--config", QUICK]) == 2
    assert "is relative, and this is a Ray job" in capsys.readouterr().err and not spy_run


@pytest.mark.parametrize("argv", [
    ["--config", QUICK, "--stages", "caption", "run_dir=/some/dir", "unlabeled_limit=1100"],  # the line
    ["run_dir=/some/dir", "--config", QUICK, "--stages", "caption", "unlabeled_limit=1100"],
    ["--stages", "caption", "--config", QUICK, "run_dir=/some/dir", "unlabeled_limit=1100"],
])
def test_overrides_parse_wherever_they_stand(argv, spy_run, capsys):
    assert pipeline_job.main_with_config(PipelineConfig, pipeline_job._run, "", pipeline_job._extra, argv) == 0
    ((cfg, only),) = spy_run
    assert (cfg.run_dir, cfg.unlabeled_limit, only) == ("/some/dir", 1100, ["caption"])
    assert "[artifacts] run_dir: /some/dir" in capsys.readouterr().out


def test_leaml_run_parses_the_same_way(spy_run):
    assert cli.main(["run", "run_dir=/a", "--config", QUICK, "--stages", "caption", "vqa", "unlabeled_limit=7"]) == 0
    ((cfg, only),) = spy_run
    assert (cfg.run_dir, cfg.unlabeled_limit, only) == ("/a", 7, ["caption", "vqa"])
    with pytest.raises(SystemExit):
        cli.main(["run", "--config", QUICK, "--bogus"])


def test_an_unknown_stage_is_an_error_listing_the_stages(tmp_path, capsys):
    argv = ["--config", QUICK, "--stages", "captoin", f"run_dir={tmp_path}/r"]
    assert pipeline_job.main_with_config(PipelineConfig, pipeline_job._run, "", pipeline_job._extra, argv) == 2
    err = capsys.readouterr().err
    assert "--stages captoin: no stage of this config starts with that" in err
    assert "'caption'" in err and "'pseudo-qa leaml'" in err and "'evaluate fully_supervised'" in err
    assert not (tmp_path / "r").exists()  # refused before anything was written or Ray started


def test_a_stage_family_this_config_leaves_out_selects_nothing(tmp_path):
    cfg = load_config(PipelineConfig, QUICK, [f"run_dir={tmp_path}", f"data_dir={tmp_path}"])
    stages = graph.plan(graph.Run(cfg))
    assert graph.select_stages(stages, ["world", "base"]) == [s for s in stages if s.name.startswith("base")]


def test_every_entry_point_checks_its_output_path_in_a_job(in_job, monkeypatch, capsys):
    from leaml.train.scoring import ScoringConfig
    from ray_jobs._common import main_with_config

    ran = []
    argv = ["init_model=/m", "labeled=/l.jsonl", "media_root=/d", "out=masks"]
    assert main_with_config(ScoringConfig, ran.append, "", argv=argv) == 2 and not ran
    assert "out='masks' is relative" in capsys.readouterr().err
    monkeypatch.setenv("LEAML_RUN_ROOT", "/mnt/shared")
    assert main_with_config(ScoringConfig, ran.append, "", argv=argv) == 0
    assert ran[0].out == "/mnt/shared/masks" and "[artifacts] out: /mnt/shared/masks" in capsys.readouterr().out


def test_convert_refuses_a_relative_out_in_a_job(in_job, capsys):
    assert cli.main(["data", "convert", "kvasir", "--src", "/nowhere", "--out", "rel/dir"]) == 2
    assert "--out='rel/dir' is relative, and this is a Ray job" in capsys.readouterr().err


@pytest.mark.parametrize("address, ray_address, quieted", [
    ("local", "", True), (None, "", True), (None, "ray://head:10001", False), ("auto", "", False)])
def test_only_a_ray_this_process_starts_gets_the_state_api_warning_quieted(monkeypatch, address, ray_address, quieted):
    import ray

    from leaml import jobs

    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if ray_address:
        monkeypatch.setenv("RAY_ADDRESS", ray_address)
    jobs.init_ray(address)
    hook = seen.get("runtime_env", {}).get("worker_process_setup_hook")
    assert (hook == "leaml.jobs.quiet_state_api_warnings") is quieted
    assert ("runtime_env" in seen) is quieted  # a cluster's job keeps its own runtime_env untouched


def test_the_setup_hook_silences_the_placement_group_cleaners_warnings():
    import logging

    from leaml.jobs import quiet_state_api_warnings

    logger = logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner")
    before = logger.level
    try:
        quiet_state_api_warnings()
        assert not logger.isEnabledFor(logging.WARNING) and logger.isEnabledFor(logging.ERROR)
    finally:
        logger.setLevel(before)
