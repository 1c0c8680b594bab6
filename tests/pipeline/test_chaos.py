"""Chaos in a streaming stage (local Ray, slow): the Serve captioner replica, or separately a Ray
Data actor, is SIGKILLed mid-stage (no exception, no cleanup). Serve replaces the replica and the
batch in flight is retried with backoff; Ray Data restarts its actor and resubmits the batch. Either
way the stage finishes in place with inputs = outputs + errors, no duplicate, no lost item, and the
same captions as an undisturbed run (greedy decoding)."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from leaml.pipeline import captioner
from leaml.streaming import StreamConfig, StreamItem, read_errors, read_shards, run_sharded
from leaml.records import MediaRef, StreamCounts, load_records
from leaml.train.loop import kill_self_once

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


class KillOnceCaptioner(captioner.Captioner):
    """The captioner, whose replica SIGKILLs itself on its ``at``-th request unless ``marker``
    exists (created exclusively first, so exactly one replica dies, once)."""

    def __init__(self, cfg: dict, marker: str, at: int):
        super().__init__(cfg)
        self.marker, self.at, self.calls = marker, at, 0

    def caption(self, media, reports=None):
        self.calls += 1
        _kill_once(self.calls == self.at, self.marker)
        return super().caption(media, reports)


class KillOnceRequester(captioner.CaptionRequester):
    """The Ray Data side, whose actor SIGKILLs itself on its ``at``-th batch unless ``marker`` exists."""

    def __init__(self, target: dict, num_frames: int, retry: dict, marker: str, at: int):
        super().__init__(target, num_frames, retry)
        self.marker, self.at, self.calls = marker, at, 0

    def __call__(self, batch):
        self.calls += 1
        _kill_once(self.calls == self.at, self.marker)
        return super().__call__(batch)


def _kill_once(due: bool, marker: str) -> None:
    if due:
        kill_self_once(marker)


@pytest.fixture(scope="module")
def ray_serve():
    import ray
    from ray import serve

    # replicas unpickle KillOnceCaptioner from this test module: they import it from the checkout
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield serve
    serve.shutdown()
    ray.shutdown()


def _items(tiny_world, root: Path, n: int) -> list[StreamItem]:
    shutil.copytree(f"{tiny_world}/media", root / "media")
    refs = load_records(f"{tiny_world}/unlabeled.jsonl", MediaRef)[:n]
    (root / "media" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    rows = [StreamItem(item_id=r.id, media=r, media_root=str(root)) for r in refs]
    broken = MediaRef(id="broken", uri="media/broken.png")
    return rows + [StreamItem(item_id="broken", media=broken, media_root=str(root))]


def _stage(serve, cfg, items, out: Path, replica_marker: Path, actor_marker: Path) -> tuple[StreamCounts, float]:
    """One caption stage; the replica dies on its 3rd request unless ``replica_marker`` exists, the
    Ray Data actor on its 2nd batch unless ``actor_marker`` exists."""
    app = serve.deployment(KillOnceCaptioner, name=captioner.DEPLOYMENT_NAME,
                           **cfg.deployment_options()).bind(cfg.model_dump(), str(replica_marker), 3)
    serve.run(app, name=captioner.APP_NAME, route_prefix=None)
    target = {"serve": {"app": captioner.APP_NAME, "deployment": captioner.DEPLOYMENT_NAME}}
    stream = StreamConfig(batch_size=4, shard_size=4, actor_cpus=0.25,
                          retry={"attempts": 10, "backoff_s": 1.0, "max_backoff_s": 10.0})
    kwargs = {"target": target, "num_frames": 1, "retry": stream.retry.model_dump(),
              "marker": str(actor_marker), "at": 2}
    t0 = time.perf_counter()
    try:
        counts = run_sharded(items, KillOnceRequester, kwargs, str(out), "caption", stream, engine="ray")
    finally:
        serve.delete(captioner.APP_NAME)
    return counts, time.perf_counter() - t0


@pytest.fixture(scope="module")
def undisturbed(ray_serve, tiny_world, tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("calm")
    items = _items(tiny_world, root, 15)
    cfg = captioner.CaptionerConfig(model=tiny_base, max_new_tokens=6, replica_cpus=0.5, device="cpu")
    calm = root / "disarmed"
    calm.write_text("")  # the markers exist: nothing kills itself
    counts, _ = _stage(ray_serve, cfg, items, root / "out", calm, calm)
    return items, cfg, counts, {c["media_id"]: c["text"] for c in read_shards(str(root / "out"))}


def _assert_same_as_undisturbed(out: Path, undisturbed, counts: StreamCounts) -> None:
    _, _, calm_counts, calm_captions = undisturbed
    assert counts == calm_counts == StreamCounts(inputs=16, errors=1, records=15)
    captions = read_shards(str(out))
    ids = [c["media_id"] for c in captions]
    assert len(ids) == len(set(ids)) == 15  # no duplicate, no lost item
    assert {c["media_id"]: c["text"] for c in captions} == calm_captions
    assert [e.media_id for e in read_errors(str(out))] == ["broken"]


def _kill_one_and_finish(victim: str, ray_serve, undisturbed, tmp_path) -> float:
    """Run the stage with ``victim`` ("replica" or "actor") armed to die and the other spared;
    the stage must finish in place, equal to the undisturbed run. Returns its seconds."""
    items, cfg, _, _ = undisturbed
    killed, spared = tmp_path / "killed", tmp_path / "spared"
    spared.write_text("")
    markers = (killed, spared) if victim == "replica" else (spared, killed)
    counts, seconds = _stage(ray_serve, cfg, items, tmp_path / "out", *markers)
    assert killed.exists(), f"the {victim} was not killed"
    _assert_same_as_undisturbed(tmp_path / "out", undisturbed, counts)
    return seconds


@pytest.mark.timeout(900)
def test_killed_serve_replica_is_replaced_and_the_stage_finishes_in_place(ray_serve, undisturbed, tmp_path, capsys):
    seconds = _kill_one_and_finish("replica", ray_serve, undisturbed, tmp_path)
    with capsys.disabled():
        print(f"\n[chaos] Serve replica SIGKILLed on its 3rd batch of 4: 16-item stage took {seconds:.0f}s")


@pytest.mark.timeout(900)
def test_killed_ray_data_actor_is_restarted_and_the_stage_finishes_in_place(ray_serve, undisturbed, tmp_path,
                                                                           capsys):
    seconds = _kill_one_and_finish("actor", ray_serve, undisturbed, tmp_path)
    with capsys.disabled():
        print(f"\n[chaos] Ray Data actor SIGKILLed on its 2nd batch of 4: 16-item stage took {seconds:.0f}s")
