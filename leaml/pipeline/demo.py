"""``make demo``: the embedded default end to end -> ``<run_dir>/eval/report.{json,md,png}``.

The profiles are shipped YAML files (``ray_jobs/configs/demo.yaml`` and ``demo_quick.yaml``), so
the demo is the same job a platform team submits with ``ray job submit``.
"""
from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[2] / "ray_jobs" / "configs"


def demo_config_path(quick: bool) -> Path:
    return CONFIG_DIR / ("demo_quick.yaml" if quick else "demo.yaml")


def run_demo(run_dir: str, quick: bool = False, overrides: list[str] | None = None) -> dict[str, str]:
    from leaml.config import load_config
    from leaml.pipeline.config import PipelineConfig
    from leaml.pipeline.graph import run_pipeline

    cfg = load_config(PipelineConfig, str(demo_config_path(quick)), [f"run_dir={run_dir}", *(overrides or [])])
    return run_pipeline(cfg)
