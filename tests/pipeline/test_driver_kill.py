"""The whole job under a real kill (local Ray, slow): ``python -m ray_jobs.pipeline`` on the quick
demo profile, its driver SIGKILLed twice (no exception, no cleanup, no lock release), resubmitted
each time with the same command.

- Kill 1 lands in the caption stage once its first shard is written. The resubmission must skip
  every stage finished before, keep the shards already written (same bytes, same mtime) and caption
  only the shards left.
- Kill 2 lands in the fully supervised fit once it has a checkpoint. The resubmission must skip
  every stage finished before, resume that fit from its checkpoint (not from step 0) and finish the
  run, redoing nothing else.

The run-dir lock of a killed driver is the kernel's (released with the process), so each
resubmission starts at once.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
STAGE_LINE = re.compile(r"^\[stage\] (.+?): (starting|finished in|done already, skipping)", re.MULTILINE)
FIT_STEPS, FIT_CHECKPOINT_EVERY = 24, 4  # the fully supervised fit: long enough to be caught mid-way
# caption shards of 8 items (the profile's 32 makes 3): one stream batch can finish the last two at
# once, so with 3 the kill sometimes found every shard written and nothing left to resume
SHARD_SIZE = 8


def _command(run_dir: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "ray_jobs.pipeline", "--config", "ray_jobs/configs/demo_quick.yaml",
            f"run_dir={run_dir}", f"cache_dir={cache}", f"fully_supervised.max_steps={FIT_STEPS}",
            f"fully_supervised.checkpoint_every={FIT_CHECKPOINT_EVERY}", f"stream.shard_size={SHARD_SIZE}"]


def _submit(cmd: list[str], log: Path) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    # its own session: the Ray processes it starts can be found (and, at the end, reaped) as a group
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _kill_when(proc: subprocess.Popen, due, timeout_s: float) -> float:
    """SIGKILL the driver alone the moment ``due()`` holds; returns when that was (s after start)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        assert proc.poll() is None, f"the driver exited (rc {proc.returncode}) before the kill point"
        if due():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"the kill point was not reached in {timeout_s:.0f} s")


def _reap(proc: subprocess.Popen) -> None:
    """The Ray processes the killed driver started go with it; after a grace period, make sure."""
    for _ in range(150):
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _stages(log: Path) -> tuple[set[str], set[str], set[str]]:
    """(started, finished, skipped) stage names of one driver's log."""
    found = STAGE_LINE.findall(log.read_text())
    return tuple({s for s, what in found if what == kind} for kind in ("starting", "finished in", "done already, skipping"))


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def _fit_checkpoints(run_dir: Path) -> list[Path]:
    return list((run_dir / "ray_train" / "vqa-fully_supervised").glob("*/checkpoint_*/trainer_state.json"))


@pytest.mark.timeout(3000)
def test_a_killed_driver_resubmitted_redoes_only_the_interrupted_shard_then_fit(tmp_path, capsys):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    cmd = _command(run_dir, cache)
    captions = run_dir / "captions"

    # --- run 1: killed once the caption stage has written its first shard -----------------------
    log1 = tmp_path / "driver-1.log"
    p1 = _submit(cmd, log1)
    t1 = _kill_when(p1, lambda: any(captions.glob("shard-*.jsonl")) and not (captions / "_SUCCESS.json").exists(),
                    timeout_s=1200)
    _reap(p1)
    started1, finished1, _ = _stages(log1)
    assert "caption" in started1 - finished1, log1.read_text()[-3000:]
    shards_before = {k: v for k, v in _files(captions).items() if re.fullmatch(r"shard-\d+\.jsonl", k)}
    assert shards_before

    # --- run 2: resumes the caption stage; killed in the fully supervised fit after a checkpoint ---
    log2 = tmp_path / "driver-2.log"
    p2 = _submit(cmd, log2)
    t2 = _kill_when(p2, lambda: bool(_fit_checkpoints(run_dir)), timeout_s=1800)
    _reap(p2)
    started2, finished2, skipped2 = _stages(log2)
    text2 = log2.read_text()
    assert skipped2 == finished1, text2[-3000:]  # everything finished before the kill, and nothing else
    assert "caption" in finished2
    left = re.search(r"\[caption\] \d+ items in (\d+) shards to do \((\d+) already written\)", text2)
    assert left and int(left.group(2)) == len(shards_before), text2[-3000:]
    assert int(left.group(1)) >= 1, "every shard was written before the kill: nothing was resumed"
    after = _files(captions)
    assert {k: after[k] for k in shards_before} == shards_before, "a shard written before the kill was rewritten"
    assert "vqa fully_supervised" in started2 - finished2, text2[-3000:]
    files_before_resume = _files(run_dir)

    # --- run 3: resumes the fit from its checkpoint and finishes the run --------------------------
    log3 = tmp_path / "driver-3.log"
    p3 = _submit(cmd, log3)
    assert p3.wait(timeout=1800) == 0, log3.read_text()[-3000:]
    started3, finished3, skipped3 = _stages(log3)
    text3 = log3.read_text()
    assert skipped3 == finished1 | finished2, text3[-3000:]
    assert "vqa fully_supervised" in started3 and started3 == finished3
    resumed = re.search(r"\[train\] resumed at step (\d+)", text3)
    assert resumed and FIT_CHECKPOINT_EVERY <= int(resumed.group(1)) < FIT_STEPS, text3[-3000:]
    final = _files(run_dir)
    done_before = {k: v for k, v in files_before_resume.items() if k.endswith("_SUCCESS.json") or k.endswith("leaml_model.json")}
    assert {k: final[k] for k in done_before} == done_before, "a finished stage's output was rewritten"
    assert (run_dir / "eval" / "report.json").exists()
    with capsys.disabled():
        print(f"\n[chaos] driver SIGKILLed {t1:.0f} s into run 1 ({len(shards_before)} caption shard written) and "
              f"{t2:.0f} s into run 2 (a fit checkpoint written); the resubmissions captioned the "
              f"{left.group(1)} shard(s) left and resumed the fit at step {resumed.group(1)} of {FIT_STEPS}")
