"""Captioning throughput: Ray Data -> Serve deployment vs an in-process loop, 1 vs 2 replicas, an
actor waiting on one batch at a time vs keeping two in flight (``stream.calls_per_actor``); then an
autoscaling run: replica counts over time while a stream loads the captioner.

    .venv/bin/python benchmarks/streaming.py --items 512   # ~5 min on 2 idle cores
    .venv/bin/python benchmarks/streaming.py --items 64 --quick
    .venv/bin/python benchmarks/streaming.py --no-autoscale

Same model (an untrained tiny teacher: throughput does not depend on the weights, only on shapes,
and every caption runs to max_new_tokens), same media, same batch size, measured in one run.
Prints items/s per setting and the ratios, over the whole stage and at the margin (from a stage of
n/4 items to one of n: the local loop's model load, Ray Data's start-up and its actors' imports
left out, which is what a long stage runs at). On a 2-core
machine two replicas compete for the same cores, so the 2-replica figure says what the deployment
overhead costs there, not what it gains on a cluster.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time


SETTINGS = ((1, 1, 1), (1, 1, 2), (1, 2, 1), (2, 1, 1))
"""(replicas, actors per replica, batches each actor keeps in flight): the default, two batches in
flight (``stream.calls_per_actor: 2``), a second actor, a second replica."""


def build_inputs(tmp: str, n_items: int) -> tuple[str, list]:
    from leaml.data.endo_world import WorldConfig, build_world
    from leaml.models.init import init_base_model
    from leaml.records import MediaRef, load_records
    from leaml.streaming import StreamItem

    world = f"{tmp}/world"
    build_world(WorldConfig(n_general=40, n_endo_train=max(n_items, 40), n_endo_test=10, n_teacher_pool=10), world)
    model = init_base_model("tiny-qwen2.5-vl-teacher", world, f"{tmp}/teacher")
    refs = load_records(f"{world}/unlabeled.jsonl", MediaRef)[:n_items]
    return model, [StreamItem(item_id=r.id, media=r, media_root=world) for r in refs]


def time_stage(items: list, target: dict, stream, engine: str) -> float:
    """Seconds of one caption stage over ``items`` (the pipeline's own ``run_sharded``)."""
    from leaml.pipeline.captioner import CaptionRequester
    from leaml.streaming import run_sharded

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        run_sharded(items, CaptionRequester, {"target": target, "num_frames": 1}, out, f"caption-{engine}", stream,
                    engine=engine)
        return time.perf_counter() - t0


def time_local(model: str, items: list, batch: int, tokens: int) -> float:
    """Seconds of an in-process stage over ``items``, model load included."""
    from leaml.pipeline.captioner import CaptionerConfig
    from leaml.streaming import StreamConfig

    target = {"local": CaptionerConfig(model=model, max_new_tokens=tokens).model_dump()}
    return time_stage(items, target, StreamConfig(batch_size=batch, shard_size=batch * 4), "local")


def rates(time_n, n: int) -> tuple[float, float]:
    """(items/s of a stage of ``n`` items, start-up included; the marginal items/s between a stage of
    n/4 and one of n items: what each further item costs once the stage runs, start-up excluded).
    Ray Data hands rows on in bursts, so a rate read off the arrival times would be noise."""
    small = max(n // 4, 1)
    t_small, t_all = time_n(small), time_n(n)
    # nan when the larger stage was not slower: start-up noise swamped the work (too few items)
    return n / t_all, (n - small) / (t_all - t_small) if t_all > t_small else float("nan")


def time_serve(model: str, items: list, batch: int, tokens: int, replicas: int,
               actors_per_replica: int, calls: int) -> tuple[float, float]:
    """:func:`rates` of Ray Data -> a Serve captioner of ``replicas`` (deployed once for both sizes)."""
    from ray import serve

    from leaml.pipeline.captioner import APP_NAME, CaptionerConfig, build_captioner_app

    cfg = CaptionerConfig(model=model, max_new_tokens=tokens, num_replicas=replicas, replica_cpus=0.5)
    serve.run(build_captioner_app(cfg.model_dump()), name=APP_NAME, route_prefix=None)
    try:
        return rates(lambda n: _stream_through_serve(items[:n], batch, replicas * actors_per_replica, calls),
                     len(items))
    finally:
        serve.delete(APP_NAME)


def _stream_through_serve(items: list, batch: int, actors: int, calls: int) -> float:
    from leaml.pipeline.captioner import APP_NAME, DEPLOYMENT_NAME
    from leaml.streaming import StreamConfig

    target = {"serve": {"app": APP_NAME, "deployment": DEPLOYMENT_NAME}}
    # calls=1: the actor waits on each request, and the replica idles while the actor decodes and
    # hands back; calls=2: the next batch is already queued on the replica when one finishes (on 2
    # cores it loses: the actor's second thread competes with the replica for the cores)
    stream = StreamConfig(batch_size=batch, shard_size=batch * 4, num_actors=actors, min_actors=actors,
                          actor_cpus=0.25, calls_per_actor=calls)
    return time_stage(items, target, stream, "ray")


def autoscaling_run(model: str, items: list, batch: int, tokens: int, actors: int, settle_s: float) -> list:
    """A stream against a captioner that starts at 1 replica and may grow to 2 (fractional CPUs);
    returns (seconds, running replicas, event) samples from before the stream to ``settle_s`` after."""
    import threading

    from ray import serve

    from leaml.pipeline.captioner import APP_NAME, DEPLOYMENT_NAME, CaptionerConfig, build_captioner_app

    scaling = {"min_replicas": 1, "initial_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1,
               "upscale_delay_s": 2, "downscale_delay_s": 6, "metrics_interval_s": 0.5, "look_back_period_s": 2}
    cfg = CaptionerConfig(model=model, max_new_tokens=tokens, num_replicas="auto", autoscaling=scaling,
                          replica_cpus=0.5)
    serve.run(build_captioner_app(cfg.model_dump()), name=APP_NAME, route_prefix=None)
    samples, stop, t0 = [], threading.Event(), time.perf_counter()

    def watch():
        while not stop.is_set():
            states = serve.status().applications[APP_NAME].deployments[DEPLOYMENT_NAME].replica_states
            samples.append((time.perf_counter() - t0, states.get("RUNNING", 0), ""))
            stop.wait(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        time.sleep(2)
        samples.append((time.perf_counter() - t0, None, "stream starts"))
        _stream_through_serve(items, batch, actors, calls=1)
        samples.append((time.perf_counter() - t0, None, "stream ends"))
        time.sleep(settle_s)
    finally:
        stop.set()
        watcher.join()
        serve.delete(APP_NAME)
    return sorted(samples, key=lambda s: s[0])


def print_replica_timeline(samples: list) -> None:
    """One line per change of the running replica count, and the stream's start and end."""
    print("\nautoscaling (min 1, max 2, target 1 ongoing request per replica): running replicas over time")
    last = None
    for t, n, event in samples:
        if event:
            print(f"  {t:6.1f} s  -- {event}")
        elif n != last:
            print(f"  {t:6.1f} s  {n} running")
            last = n
    counts = [n for _, n, e in samples if not e]
    print(f"  peak {max(counts)} running, {counts[-1]} at the end")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--quick", action="store_true", help="32 items, 8 tokens")
    ap.add_argument("--no-autoscale", dest="autoscale", action="store_false", help="skip the autoscaling run")
    ap.add_argument("--autoscale-items", type=int, default=768,
                    help="long enough that a second replica can start (a process loading torch) while it runs")
    args = ap.parse_args()
    if args.quick:
        args.items, args.tokens, args.autoscale_items = 32, 8, 64
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        model, items = build_inputs(tmp, max(args.items, args.autoscale_items if args.autoscale else 0))
        local = rates(lambda n: time_local(model, items[:n], args.batch, args.tokens), args.items)
        # Serve's handles and replicas push load metrics every 10 s by default: 1 s lets a
        # benchmark-sized stream see the autoscaler act (workers inherit this environment)
        for var in ("RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S",
                    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S"):
            os.environ.setdefault(var, "1")
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        served = {(r, a, c): time_serve(model, items[:args.items], args.batch, args.tokens, r, a, c)
                  for r, a, c in SETTINGS}
        timeline = autoscaling_run(model, items[:args.autoscale_items], args.batch, args.tokens, actors=2,
                                   settle_s=15) if args.autoscale else None
        ray.shutdown()
    print(f"\ncaptioning {args.items} images, batch {args.batch}, {args.tokens} new tokens each")
    print(f"{'setting':<52}{'items/s':>9}{'ratio':>8}{'marginal':>15}{'ratio':>8}")
    for name, (whole, steady) in [("in-process loop", local)] + [
            (f"Ray Data -> Serve, {r} replica{'s' * (r > 1)}, {a * r} actor{'s' * (a * r > 1)}, {c} in flight", v)
            for (r, a, c), v in served.items()]:
        print(f"{name:<52}{whole:>9.2f}{whole / local[0]:>7.2f}x{steady:>15.2f}{steady / local[1]:>7.2f}x")
    print(f"2 batches in flight / 1 (1 replica, 1 actor): {served[1, 1, 2][1] / served[1, 1, 1][1]:.2f}x marginal")
    print(f"2 replicas / 1 replica (1 actor each): {served[2, 1, 1][0] / served[1, 1, 1][0]:.2f}x")
    if timeline:
        print_replica_timeline(timeline)


if __name__ == "__main__":
    main()
