"""Neuron scoring (paper Eq. 5-6): generator init + labeled set -> masks artifact.

    ray job submit --working-dir . -- python -m ray_jobs.score_masks --config scoring.yaml mask.k=1000 \
        out=s3://bucket/masks/a
"""
import json
import sys

from leaml.train.scoring import ScoringConfig
from ray_jobs._common import main_with_config


def _run(cfg: ScoringConfig) -> None:
    from leaml.train.scoring import run_scoring_task

    summary = run_scoring_task(cfg)  # a Ray task with mask.scoring_gpus GPUs, not this driver
    print(json.dumps({k: v for k, v in summary.items() if k != "modules"}, indent=2))


if __name__ == "__main__":
    sys.exit(main_with_config(ScoringConfig, _run, __doc__))
