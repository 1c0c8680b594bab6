"""The whole LEAML graph as one job (or some of its stages).

    ray job submit --working-dir . -- python -m ray_jobs.pipeline --config ray_jobs/configs/demo.yaml \
        run_dir=s3://bucket/runs/a
    python -m ray_jobs.pipeline --config ray_jobs/configs/demo.yaml run_dir=/mnt/shared/runs/a
    python -m ray_jobs.pipeline --config ... --stages caption run_dir=...   # one stage alone

Inside a Ray job ``run_dir`` must be s3:// or a shared absolute path (or $LEAML_RUN_ROOT set): a
relative one would land in Ray's temporary copy of the working dir.
"""
import sys

from leaml.pipeline.config import PipelineConfig
from ray_jobs._common import main_with_config


def _extra(parser):
    parser.add_argument("--stages", nargs="*", help="run only stages whose name starts with these (e.g. caption); "
                        "key=value overrides may follow")


def _run(cfg: PipelineConfig, args) -> None:
    from leaml.pipeline.graph import run_pipeline

    run_pipeline(cfg, only=args.stages)


if __name__ == "__main__":
    sys.exit(main_with_config(PipelineConfig, _run, __doc__, _extra))
