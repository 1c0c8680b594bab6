"""``make demo``: the embedded default end to end -> ``<run_dir>/eval/report.{json,md,png}``.

The profiles are shipped YAML files (``ray_jobs/configs/demo.yaml`` and ``demo_quick.yaml``; with
``video``, the sport world's ``sport_demo.yaml`` and ``sport_quick.yaml``), so the demo is the same
job a platform team submits with ``ray job submit``.
"""
from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[2] / "ray_jobs" / "configs"


PROFILES = {(False, False): "demo.yaml", (True, False): "demo_quick.yaml",
            (False, True): "sport_demo.yaml", (True, True): "sport_quick.yaml"}  # (quick, video)


def demo_config_path(quick: bool, video: bool = False) -> Path:
    return CONFIG_DIR / PROFILES[(quick, video)]


def run_demo(run_dir: str | None = None, quick: bool = False, overrides: list[str] | None = None, video: bool = False) -> dict[str, str]:
    from leaml.config import load_config
    from leaml.pipeline.config import PipelineConfig
    from leaml.pipeline.graph import run_pipeline

    cfg = load_config(PipelineConfig, str(demo_config_path(quick, video)), [*([f"run_dir={run_dir}"] if run_dir else []), *(overrides or [])])
    return run_pipeline(cfg)
