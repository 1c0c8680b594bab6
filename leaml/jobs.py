"""Where a submitted job writes: a path setting -> the same path, or an error when it would be lost.

``ray job submit --working-dir .`` runs the entry point inside Ray's unpacked copy of the working
dir (``/tmp/ray/session_*/runtime_resources/working_dir_files/_ray_pkg_*``): a relative
``run_dir=runs/a`` lands there, on one node, where nobody looks and Ray deletes it. So inside a Ray
job a relative output path is refused, unless ``LEAML_RUN_ROOT`` names a shared root (a path every
node mounts, or ``s3://...``) to resolve it against, e.g.
``ray job submit --runtime-env-json '{"env_vars": {"LEAML_RUN_ROOT": "s3://bucket/runs"}}' ...``.
"""
from __future__ import annotations

import os

from leaml import storage
from leaml.config import ConfigError

RUN_ROOT_ENV = "LEAML_RUN_ROOT"
# The driver of a submitted job gets its job config in this variable (Ray strips RAY_JOB_ID from the
# driver's environment; tasks and actors have RAY_JOB_ID); the unpacked package dir is the fallback.
_JOB_ENV = ("RAY_JOB_CONFIG_JSON_ENV_VAR",)
_PACKAGE_DIR_MARK = os.path.join("runtime_resources", "working_dir_files")


class JobPathError(ConfigError):
    """An output path that a Ray job would write where nobody can find it (a config error: the
    command line says ``config error:`` and exits 2)."""


def in_ray_job() -> bool:
    """True in the driver of ``ray job submit`` (or anything run from its unpacked working dir)."""
    return any(v in os.environ for v in _JOB_ENV) or _PACKAGE_DIR_MARK in os.getcwd()


def job_path(value: str, key: str) -> str:
    """``value`` unchanged, unless this is a Ray job and ``value`` is relative: then resolved against
    ``$LEAML_RUN_ROOT``, or refused with a message that says what to pass instead."""
    if not value or storage.is_s3(value) or os.path.isabs(value) or not in_ray_job():
        return value
    root = os.environ.get(RUN_ROOT_ENV)
    if root:
        return storage.join(root, value)
    raise JobPathError(
        f"{key}={value!r} is relative, and this is a Ray job: it would be written inside Ray's temporary "
        f"copy of the working dir ({os.getcwd()}), on one node, and deleted with it. Pass {key}=s3://<bucket>/... "
        f"or a path every node shares (e.g. {key}=/mnt/shared/{value}), or set {RUN_ROOT_ENV} to such a root "
        f"in the job's runtime_env env_vars to resolve relative paths against it."
    )


def announce(what: str, uri: str) -> None:
    """One line a person can grep for in the job's log: where the artifacts are."""
    print(f"[artifacts] {what}: {uri}", flush=True)


def init_ray(address: str | None = None) -> None:
    """Connect once: to ``address``, to RAY_ADDRESS when set (``ray job submit``), else start locally.
    Workers' output (training progress lines) reaches the driver; ``LEAML_RAY_LOGS=0`` silences it."""
    import ray

    if ray.is_initialized():
        return
    local = address == "local" or (address is None and not os.environ.get("RAY_ADDRESS"))
    # A local Ray runs without its dashboard (two cores), and so without the State API, which Ray
    # Train's placement-group cleaner asks every second whether the controller lives: a warning a
    # second in every fit's log (~380 in the demo's fully supervised fit). A cluster keeps its own
    # dashboard and its job's runtime_env.
    quiet = {"runtime_env": {"worker_process_setup_hook": "leaml.jobs.quiet_state_api_warnings"}} if local else {}
    ray.init(address=address, log_to_driver=os.environ.get("LEAML_RAY_LOGS", "1") != "0",
             include_dashboard=False if local else None, **quiet)


def quiet_state_api_warnings() -> None:
    """Worker setup hook of a local Ray (see ``init_ray``)."""
    import logging

    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)
