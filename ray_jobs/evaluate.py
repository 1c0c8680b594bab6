"""Multiple-choice evaluation of one or more checkpoints on a split (Ray Data batch inference).

    ray job submit --working-dir . -- python -m ray_jobs.evaluate --config eval.yaml out_dir=s3://bucket/eval/a
"""
import sys

from leaml.evaluate.stage import EvalConfig
from ray_jobs._common import main_with_config


def _run(cfg: EvalConfig) -> None:
    from leaml.evaluate.stage import run_evaluation

    print(run_evaluation(cfg))


if __name__ == "__main__":
    sys.exit(main_with_config(EvalConfig, _run, __doc__))
