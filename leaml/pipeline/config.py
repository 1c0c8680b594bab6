"""The run config of the whole LEAML graph (one YAML file: ``configs/*.yaml``)."""
from __future__ import annotations

import os
from typing import Annotated, Literal, Union

import yaml

from pydantic import Discriminator, Field, Tag, model_validator

from leaml import storage
from leaml.config import StrictModel
from leaml.data.sport_world import SportWorldConfig
from leaml.data.endo_world import WorldConfig
from leaml.evaluate.inference import InferenceSettings
from leaml.pipeline.base_models import BaseModelSource
from leaml.pipeline.captioner import CaptionerConfig
from leaml.pipeline.qa_generator import QAGenConfig
from leaml.plan import Resources
from leaml.streaming import Engine, StreamConfig
from leaml.train.config import TrainConfig

Row = Literal["zero_shot_student", "zero_shot_teacher", "lora", "full", "baseline", "distill", "leaml",
              "fully_supervised"]
ALL_ROWS: list[str] = ["zero_shot_student", "zero_shot_teacher", "lora", "full", "baseline", "distill", "leaml",
                       "fully_supervised"]
ROW_TITLES = {
    "zero_shot_student": "Zero-shot (student)", "zero_shot_teacher": "Zero-shot (teacher)",
    "lora": "LoRA (1%)", "full": "Full fine-tuning (1%)",
    "baseline": "Baseline: pseudo-QA only", "distill": "Baseline + distill.",
    "leaml": "LEAML (+ distill. + QA neurons)", "fully_supervised": "Fully supervised (100%)",
}


def _world_domain(value) -> str:
    # `domain` may be left out: the image world is the default
    return value.get("domain", "endo") if isinstance(value, dict) else getattr(value, "domain", "endo")


AnyWorld = Annotated[
    Union[Annotated[WorldConfig, Tag("endo")], Annotated[SportWorldConfig, Tag("sport")]],
    Discriminator(_world_domain),
]
"""The synthetic world to build: ``domain: endo`` (images, the default) or ``domain: sport`` (video)."""


def world_config_class(path: str | None, overrides: list[str], domain: str | None = None) -> type:
    """The world config class a YAML file plus dotted overrides ask for (by ``domain``), so that a
    loader validates against the right one and its errors name that world's keys. ``domain``: the
    world the caller builds; a file or override naming another is an error."""
    from leaml.config import ConfigError, deep_merge, parse_overrides

    try:
        data = yaml.safe_load(storage.read_text(path)) if path else {}
    except yaml.YAMLError:
        data = {}  # the loader reports it, with its place in the file
    data = deep_merge(data if isinstance(data, dict) else {}, parse_overrides(overrides))
    asked = data.get("domain", domain) or _world_domain(data)
    if domain and asked != domain:
        raise ConfigError(f"{path or '<defaults>'}: domain: this command builds the {domain} world, got {asked!r}")
    return SportWorldConfig if asked == "sport" else WorldConfig


class GeneratorVariants(StrictModel):
    """The Table 3 ablation: what distinguishes the three QA generators."""

    baseline: TrainConfig = TrainConfig(objective="qa_generator", method="full", caption_weight=0.0)
    distill: TrainConfig = TrainConfig(objective="qa_generator", method="full")
    leaml: TrainConfig = TrainConfig(objective="qa_generator", method="masked_sparse")
    """Its ``mask`` settings drive neuron scoring (K, eligible modules)."""


class PipelineConfig(StrictModel):
    run_dir: str = "runs/demo"
    """Every artifact of the run lives here (local path or s3://), one directory per stage. Inside a
    Ray job it must be s3:// or an absolute shared path (or $LEAML_RUN_ROOT set): see leaml.jobs."""
    data_dir: str | None = None
    """An existing dataset directory (real data converted by a loader); None = synthesise the world."""
    world: AnyWorld = WorldConfig()
    student: BaseModelSource = BaseModelSource(preset="tiny-qwen2.5-vl")
    teacher: BaseModelSource = BaseModelSource(preset="tiny-qwen2.5-vl-teacher")
    cache_dir: str | None = None
    """Base-model cache (default ~/.cache/leaml or $LEAML_CACHE)."""
    engine: Engine = "ray"
    """ray: Ray Data + Serve + Ray Train (the product path); local: the same stages in-process. The
    one engine setting of a run: every stage gets it as an argument (streams, evaluation, training)."""
    ray_address: str | None = None
    captioner: CaptionerConfig = CaptionerConfig()
    stream: StreamConfig = StreamConfig()
    generators: GeneratorVariants = GeneratorVariants()
    qagen: QAGenConfig = QAGenConfig()
    vqa: TrainConfig = TrainConfig(objective="vqa", method="full")
    """VQA fine-tuning on labeled (+ pseudo) pairs; also the full fine-tuning baseline."""
    lora: TrainConfig = TrainConfig(objective="vqa", method="lora", lr=3e-3)
    fully_supervised: TrainConfig = TrainConfig(objective="vqa", method="full")
    unlabeled_limit: int | None = Field(None, ge=1)
    """Caption and pseudo-label only the first N unlabeled items (small profiles: the generators
    and the VQA rows draw a bounded number of caption and pseudo batches, so a larger pool only
    costs time). None: all of them."""
    pseudo_weight: float = Field(1.0, ge=0)
    """VQA fine-tuning draws a labeled and a pseudo batch each step; weight of the pseudo loss."""
    rows: list[Row] = Field(default_factory=lambda: list(ALL_ROWS))
    evaluation: InferenceSettings = InferenceSettings()
    resources: Resources = Resources()
    """GPU memory and count of the cluster: ``leaml run`` refuses a run whose memory plan does not
    fit them (``leaml plan`` prints the plan); unset on CPU runs, where nothing is checked."""
    eval_limit: int | None = Field(None, ge=1)
    """Evaluate only the first N test questions (quick profiles)."""
    seed: int = 0

    @model_validator(mode="after")
    def _absolute_local_paths(self) -> "PipelineConfig":
        # Ray Train workers and Ray Data actors do not run in the driver's working directory, so a
        # relative "runs/demo" would name another place there: resolve local paths once, here.
        # Inside a Ray job the driver's own cwd is Ray's temporary package dir: no place for results.
        from leaml.jobs import job_path

        self.__dict__["run_dir"] = job_path(self.run_dir, "run_dir")
        for key in ("run_dir", "data_dir", "cache_dir"):
            value = getattr(self, key)
            if value and not storage.is_s3(value) and not os.path.isabs(value):
                self.__dict__[key] = os.path.abspath(value)
        return self
