"""A downloaded Kvasir-VQA or SPORTU -> a dataset directory (``leaml data convert``), as a job.

    ray job submit --working-dir . -- python -m ray_jobs.convert kvasir \
        --src /mnt/shared/Kvasir-VQA --out s3://bucket/data/kvasir-vqa
    python -m ray_jobs.convert sportu --src /data/sportu/SportU_Video_mc.json --videos /data/sportu/videos \
        --out /mnt/shared/data/sportu test_fraction=0.5

Inside a Ray job ``--out`` must be s3:// or a shared absolute path (or $LEAML_RUN_ROOT set).
"""
import sys

from leaml.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "convert", *sys.argv[1:]]))
