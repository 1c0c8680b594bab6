"""Captioning throughput: Ray Data -> Serve deployment vs an in-process loop, 1 vs 2 replicas.

    .venv/bin/python benchmarks/streaming.py            # ~3-5 min on 2 cores
    .venv/bin/python benchmarks/streaming.py --items 64 --quick

Same model (an untrained tiny teacher: throughput does not depend on the weights, only on shapes,
and every caption runs to max_new_tokens), same media, same batch size, measured in one run.
Prints items/s per setting and the ratios. On a 2-core machine two replicas compete for the same
cores, so the 2-replica figure says what the deployment overhead costs there, not what it gains
on a cluster.
"""
from __future__ import annotations

import argparse
import tempfile
import time


def build_inputs(tmp: str, n_items: int) -> tuple[str, list[dict]]:
    from leaml.data.endo_world import WorldConfig, build_world
    from leaml.models.init import init_base_model
    from leaml.records import MediaRef, load_records

    world = f"{tmp}/world"
    build_world(WorldConfig(n_general=40, n_endo_train=max(n_items, 40), n_endo_test=10, n_teacher_pool=10), world)
    model = init_base_model("tiny-qwen2.5-vl-teacher", world, f"{tmp}/teacher")
    refs = load_records(f"{world}/unlabeled.jsonl", MediaRef)[:n_items]
    return model, [{"item_id": r.id, "uri": r.uri, "kind": r.kind, "media_root": world} for r in refs]


def time_local(model: str, items: list[dict], batch: int, tokens: int) -> float:
    from leaml.pipeline.captioner import CaptionerConfig, CaptionRequester
    from leaml.streaming import StreamConfig, run_sharded

    cfg = CaptionerConfig(model=model, max_new_tokens=tokens)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        run_sharded(items, CaptionRequester, {"target": {"local": cfg.model_dump()}, "num_frames": 1}, out,
                    "caption-local", StreamConfig(batch_size=batch, shard_size=batch * 4), engine="local")
        return len(items) / (time.perf_counter() - t0)


def time_serve(model: str, items: list[dict], batch: int, tokens: int, replicas: int) -> float:
    from ray import serve

    from leaml.pipeline.captioner import APP_NAME, DEPLOYMENT_NAME, CaptionerConfig, CaptionRequester, build_captioner_app
    from leaml.streaming import StreamConfig, run_sharded

    cfg = CaptionerConfig(model=model, max_new_tokens=tokens, num_replicas=replicas, replica_cpus=0.5)
    serve.run(build_captioner_app(cfg.model_dump()), name=APP_NAME, route_prefix=None)
    target = {"serve": {"app": APP_NAME, "deployment": DEPLOYMENT_NAME}}
    stream = StreamConfig(batch_size=batch, shard_size=batch * 4, num_actors=replicas, actor_cpus=0.25)
    try:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            run_sharded(items, CaptionRequester, {"target": target, "num_frames": 1}, out, "caption-serve", stream,
                        engine="ray")
            return len(items) / (time.perf_counter() - t0)
    finally:
        serve.delete(APP_NAME)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--quick", action="store_true", help="32 items, 8 tokens")
    args = ap.parse_args()
    if args.quick:
        args.items, args.tokens = 32, 8
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        model, items = build_inputs(tmp, args.items)
        local = time_local(model, items, args.batch, args.tokens)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        one = time_serve(model, items, args.batch, args.tokens, 1)
        two = time_serve(model, items, args.batch, args.tokens, 2)
        ray.shutdown()
    print(f"\ncaptioning {args.items} images, batch {args.batch}, {args.tokens} new tokens each")
    print(f"{'setting':<34}{'items/s':>10}{'ratio':>9}")
    for name, v in (("in-process loop", local), ("Ray Data -> Serve, 1 replica", one), ("Ray Data -> Serve, 2 replicas", two)):
        print(f"{name:<34}{v:>10.2f}{v / local:>8.2f}x")
    print(f"2 replicas / 1 replica: {two / one:.2f}x")


if __name__ == "__main__":
    main()
