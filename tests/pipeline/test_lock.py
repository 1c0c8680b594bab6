"""One driver per run dir (leaml.pipeline.lock): a second driver is refused with the holder named;
a dead driver's lock (a real SIGKILL) is taken over; the lock goes on any exit of the driver,
exceptions included. The other driver is a real second process; it says when it holds the lock on
its stdout and lets go when its stdin says so, so no test waits on a clock except the s3 expiry."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from leaml import storage
from leaml.pipeline.lock import LOCK_NAME, RunLockedError, RunLockLost, run_lock

REPO = Path(__file__).resolve().parents[2]
DRIVER = textwrap.dedent("""
    import sys
    from leaml.pipeline.lock import run_lock

    with run_lock(sys.argv[1], ttl_s=float(sys.argv[2])):
        print("held", flush=True)
        sys.stdin.readline()  # hold until told to go (or killed)
    print("released", flush=True)
""")


class OtherDriver:
    """A second process holding ``run_lock(run_dir)`` until :meth:`release` or :meth:`kill`."""

    def __init__(self, run_dir: str, ttl_s: float = 120.0):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen([sys.executable, "-c", DRIVER, run_dir, str(ttl_s)], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self.proc.stdout.readline()  # blocks until it holds the lock (or died trying)
        assert line.strip() == "held", self.proc.stderr.read()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def release(self) -> None:
        out, err = self.proc.communicate("go\n", timeout=60)
        assert self.proc.returncode == 0 and out.strip() == "released", err

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=60)


@pytest.fixture
def other_drivers():
    started: list[OtherDriver] = []
    yield lambda run_dir, ttl_s=120.0: started.append(OtherDriver(run_dir, ttl_s)) or started[-1]
    for d in started:
        if d.proc.poll() is None:
            d.kill()


# ---------------------------------------------------------------------------------------------
# Local run dir


def test_a_second_driver_is_refused_naming_the_holder(tmp_path, other_drivers):
    run_dir = str(tmp_path / "run")
    other = other_drivers(run_dir)
    with pytest.raises(RunLockedError) as refused:
        with run_lock(run_dir):
            pytest.fail("two drivers held one run dir")
    assert f"pid {other.pid} on host {socket.gethostname()}" in str(refused.value)
    assert run_dir in str(refused.value)
    other.release()
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # released: gone
    with run_lock(run_dir) as lock:  # and free for the next driver
        assert lock.took_over is None and lock.holder.pid == os.getpid()


def test_the_lock_of_a_killed_driver_is_taken_over(tmp_path, other_drivers):
    run_dir = str(tmp_path / "run")
    other = other_drivers(run_dir)
    other.kill()  # SIGKILL: no cleanup, its lock file stays behind with its pid
    left = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
    assert left["pid"] == other.pid
    with run_lock(run_dir) as lock:
        assert lock.took_over is not None and lock.took_over.pid == other.pid
        assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_the_lock_is_released_when_the_driver_raises(tmp_path, other_drivers):
    run_dir = str(tmp_path / "run")
    with pytest.raises(ZeroDivisionError):
        with run_lock(run_dir):
            1 / 0
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    other_drivers(run_dir).release()  # another process takes it at once


def test_one_process_cannot_hold_it_twice(tmp_path):
    with run_lock(str(tmp_path)):
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            with run_lock(str(tmp_path)):
                pass


# ---------------------------------------------------------------------------------------------
# Through `leaml run`


def _tiny_cfg(run_dir: Path):
    from leaml.pipeline.config import PipelineConfig

    return PipelineConfig(run_dir=str(run_dir), engine="local", rows=["zero_shot_student"])


def test_run_pipeline_refuses_a_second_driver_before_writing_anything(tmp_path, other_drivers, capsys):
    from leaml.cli import main
    from leaml.pipeline.graph import run_pipeline

    run_dir = tmp_path / "run"
    other = other_drivers(str(run_dir))
    with pytest.raises(RunLockedError, match=f"pid {other.pid}"):
        run_pipeline(_tiny_cfg(run_dir))
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]  # not even config.yaml
    config = tmp_path / "c.yaml"
    config.write_text(f"run_dir: {run_dir}\nengine: local\nrows: [zero_shot_student]\n")
    assert main(["run", "--config", str(config)]) == 3
    assert f"run dir in use:\n{run_dir} is in use by another driver: pid {other.pid}" in capsys.readouterr().err


def test_run_pipeline_releases_the_lock_when_a_stage_fails(tmp_path, monkeypatch):
    from leaml.pipeline import graph

    def fail(stage):
        raise RuntimeError(f"stage {stage.name} failed")

    monkeypatch.setattr(graph, "run_stage", fail)
    with pytest.raises(RuntimeError, match="failed"):
        graph.run_pipeline(_tiny_cfg(tmp_path / "run"))
    assert (tmp_path / "run" / "config.yaml").exists() and not (tmp_path / "run" / LOCK_NAME).exists()


# ---------------------------------------------------------------------------------------------
# s3 run dir (a local moto server): conditional writes, heartbeat, expiry


def test_s3_second_driver_refused_then_a_dead_drivers_lock_expires(s3_bucket, other_drivers):
    run_dir = f"{s3_bucket}/runs/a"
    ttl = 1.5  # the holder beats every 0.5 s; the store's clock has 1 s steps
    other = other_drivers(run_dir, ttl)
    time.sleep(2 * ttl)  # longer than the ttl: only the heartbeat keeps the lock fresh
    with pytest.raises(RunLockedError, match=f"pid {other.pid} on host"):
        with run_lock(run_dir, ttl_s=ttl):
            pass
    other.kill()  # its heartbeat stops; the lock object stays
    assert storage.exists(f"{run_dir}/{LOCK_NAME}")
    time.sleep(ttl + 1.5)
    with run_lock(run_dir, ttl_s=ttl) as lock:
        assert lock.took_over is not None and lock.took_over.pid == other.pid
    assert not storage.exists(f"{run_dir}/{LOCK_NAME}")  # released


def test_s3_lock_released_on_exception_and_a_lost_lock_is_reported(s3_bucket):
    run_dir = f"{s3_bucket}/runs/b"
    with pytest.raises(KeyError):
        with run_lock(run_dir):
            raise KeyError("boom")
    assert not storage.exists(f"{run_dir}/{LOCK_NAME}")
    with pytest.raises(RunLockLost, match="taken over"):
        with run_lock(run_dir, ttl_s=0.6):
            # another driver overwrites the lock (as one does after our heartbeats failed for ttl_s)
            storage.write_text(f"{run_dir}/{LOCK_NAME}", json.dumps({"pid": 1, "host": "elsewhere", "started": "x"}))
            time.sleep(1.5)  # the next heartbeat (every 0.2 s) finds the ETag changed
    assert storage.exists(f"{run_dir}/{LOCK_NAME}")  # the new holder's lock is left alone
