from typing import Literal

import pytest
from pydantic import Field

from leaml.config import ConfigError, StrictModel, dump_config, load_config, parse_overrides


class Train(StrictModel):
    lr: float = 1e-4
    batch_size: int = Field(8, ge=1)
    objective: Literal["vqa", "qa_generator"] = "vqa"


class Run(StrictModel):
    name: str = "run"
    train: Train = Train()


def write(tmp_path, text):
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return str(p)


def test_yaml_and_overrides_merge(tmp_path):
    path = write(tmp_path, "name: a\ntrain:\n  lr: 0.5\n  batch_size: 4\n")
    cfg = load_config(Run, path, ["train.batch_size=32", "train.objective=qa_generator"])
    assert cfg.name == "a"
    assert cfg.train.lr == 0.5
    assert cfg.train.batch_size == 32
    assert cfg.train.objective == "qa_generator"


def test_typo_names_file_key_and_allowed_keys(tmp_path):
    path = write(tmp_path, "train:\n  lrr: 0.5\n")
    with pytest.raises(ConfigError) as e:
        load_config(Run, path)
    msg = str(e.value)
    assert path in msg and "train.lrr" in msg and "unknown key" in msg
    assert "batch_size" in msg and "lr" in msg  # the keys that are allowed there


def test_bad_value_names_key_and_expectation(tmp_path):
    path = write(tmp_path, "train:\n  batch_size: 0\n")
    with pytest.raises(ConfigError, match=r"train\.batch_size: Input should be greater than or equal to 1 \(got 0\)"):
        load_config(Run, path)
    with pytest.raises(ConfigError, match=r"overrides: train\.objective: .*'vqa' or 'qa_generator'"):
        load_config(Run, path=None, overrides=["train.objective=captions"])


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["train.lr"])
    assert parse_overrides(["a.b=1", "a.c=[1, 2]", "d=x"]) == {"a": {"b": 1, "c": [1, 2]}, "d": "x"}


def test_non_mapping_yaml_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(Run, write(tmp_path, "- 1\n- 2\n"))


def test_dump_round_trips(tmp_path):
    cfg = load_config(Run, overrides=["train.lr=0.25"])
    again = load_config(Run, write(tmp_path, dump_config(cfg)))
    assert again == cfg


def test_pipeline_paths_are_absolute_so_ray_workers_find_them(tmp_path, monkeypatch):
    # Ray Train workers run in another working directory: a relative run dir broke `make demo`.
    import os

    from leaml.pipeline.config import PipelineConfig

    monkeypatch.chdir(tmp_path)
    cfg = PipelineConfig(run_dir="runs/demo", data_dir="data", cache_dir="s3://bucket/cache")
    assert cfg.run_dir == os.path.join(str(tmp_path), "runs/demo")
    assert cfg.data_dir == os.path.join(str(tmp_path), "data")
    assert cfg.cache_dir == "s3://bucket/cache"
    assert PipelineConfig(run_dir="s3://bucket/run").run_dir == "s3://bucket/run"


def test_unlabeled_limit_takes_the_first_items(tiny_world, tmp_path):
    from leaml.pipeline.config import PipelineConfig
    from leaml.pipeline.graph import Run, unlabeled_items

    everything = unlabeled_items(Run(PipelineConfig(run_dir=str(tmp_path), data_dir=tiny_world)))
    some = unlabeled_items(Run(PipelineConfig(run_dir=str(tmp_path), data_dir=tiny_world, unlabeled_limit=3)))
    assert len(everything) > 3 and some == everything[:3]
