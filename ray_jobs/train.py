"""One training job (QA generator, VQA model, a baseline or base pretraining) on Ray Train.

    ray job submit --working-dir . -- python -m ray_jobs.train --config job.yaml train.scaling.num_workers=2 \
        out_dir=s3://bucket/models/vqa-a
"""
import sys

from leaml.train.loop import TrainJob
from ray_jobs._common import main_with_config


def _run(job: TrainJob) -> None:
    from leaml.train.ray_trainer import run_training

    print(run_training(job, engine="ray"))


if __name__ == "__main__":
    sys.exit(main_with_config(TrainJob, _run, __doc__))
