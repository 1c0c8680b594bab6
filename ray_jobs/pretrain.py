"""Base models of the embedded world: pretrain (or reuse from cache) the tiny student and teacher.

    python -m ray_jobs.pretrain --config ray_jobs/configs/demo.yaml
"""
import sys

from leaml.pipeline.config import PipelineConfig
from ray_jobs._common import main_with_config


def _run(cfg: PipelineConfig) -> None:
    from leaml.pipeline.graph import run_pipeline

    run_pipeline(cfg, only=["world", "base"], report=False)


if __name__ == "__main__":
    sys.exit(main_with_config(PipelineConfig, _run, __doc__))
