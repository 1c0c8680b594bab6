"""Does dynamic batching pay? Throughput and p50/p99 latency of the VQA service, batching on vs off;
and what does a multiple-choice request cost with 2 vs 8 options, scored per option vs from a shared prefix.

checkpoint (or a fresh tiny model) -> two Serve apps (gateway + model replica, as shipped) on one
local Ray instance, identical but for ``batching.enabled`` -> closed-loop HTTP load on 127.0.0.1 at
1 and 16 concurrent clients -> a table and the batched/unbatched ratios, from one run (so machine
load affects both sides alike).

Two request kinds: image + question + options (the clinical multiple-choice path, scored with
``score_options``) and a free-form question (greedy ``generate``); ``--kind`` picks one.

First, in this process (no HTTP, no Serve, seconds): the model-side cost of one multiple-choice
request, alone and in a batch of 16, with 2 and 8 options, under the old path (one full forward per
option: media and prompt encoded once per option) and the shared-prefix path the service uses
(``leaml.models.answer``: encoded once, options run from its KV cache); goal: 8 options cost within
1.3x of 2. ``--kind scoring`` prints only this table.

At 16 clients each line is followed by the CPU milliseconds per request of the busiest processes
(the HTTP proxy, the gateway and model replicas, the clients): what the framework costs beside the
forward pass.

The batch wait is the lever: a request waits up to ``--batch-wait-s`` for company, which is pure
latency at 1 client and what lets batches fill at 16 (here requests reach the replica spread out by
HTTP and decode overhead). The YAML default (10 ms) favours latency; this benchmark's default
(50 ms) shows the throughput side.

    .venv/bin/python benchmarks/serving.py                      # tiny model, ~3-5 minutes on 2 CPUs
    .venv/bin/python benchmarks/serving.py --kind generate --batch-wait-s 0.1
    .venv/bin/python benchmarks/serving.py --kind scoring                         # ~1 minute
    .venv/bin/python benchmarks/serving.py --checkpoint runs/demo/vqa_model --requests 200 --json out.json
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from leaml.serve.client import AsyncVQAClient  # noqa: E402

KEY = "benchmark-key"
QUESTION = "What colour is the abnormality?"
OPTIONS = ["red", "pink", "white", "green"]
OPTIONS_8 = OPTIONS + ["yellow", "blue", "black", "brown"]


def tiny_checkpoint(out: Path) -> str:
    from leaml.models.builders import ModelSpec, build_model, save_model
    from leaml.prompts import vqa_prompt

    texts = [vqa_prompt(QUESTION, OPTIONS_8), vqa_prompt("Is there a polyp in the image?", ["yes", "no"])] * 30
    model, processor = build_model(ModelSpec(preset="tiny-qwen2.5-vl"), tokenizer_texts=texts)
    save_model(model, processor, str(out))
    return str(out)


def images(n: int = 32) -> list[bytes]:
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.effect_noise((96, 96), 40 + i).convert("RGB").save(buf, "JPEG")
        out.append(buf.getvalue())
    return out


def scoring_cost(checkpoint: str, repeats: int, threads: int, sizes=(1, 16), n_options=(2, 8)) -> dict:
    """Median ms per request of ``score_options`` on ``size`` multiple-choice requests in one call,
    per scoring path and option count."""
    import torch

    from leaml.models.answer import score_options
    from leaml.models.builders import load_model
    from leaml.prompts import vqa_prompt

    torch.set_num_threads(threads)
    model, processor = load_model(checkpoint)
    model.eval()
    frames = [[Image.open(io.BytesIO(b)).convert("RGB")] for b in images(max(sizes))]
    cells = {}
    for size in sizes:
        for n in n_options:
            opts = OPTIONS_8[:n]
            for path in ("per_option", "shared_prefix"):
                cells[f"{path}/{n}@{size}"] = (size, path, (model, processor, frames[:size],
                                                            [vqa_prompt(QUESTION, opts)] * size, [opts] * size))
    times: dict[str, list[float]] = {key: [] for key in cells}
    for r in range(repeats + 1):  # round-robin, so a busy moment on a shared machine hits every cell alike
        for key, (size, path, args) in cells.items():
            t = time.perf_counter()
            score_options(*args, batch_size=64, path=path)  # the service's score_rows_per_forward
            if r:  # the first round warms up
                times[key].append((time.perf_counter() - t) / size)
    return {key: 1000 * statistics.median(ts) for key, ts in times.items()}


def print_scoring_cost(cost: dict, sizes=(1, 16)) -> None:
    print("multiple-choice cost per request, in-process (median ms):")
    print(f"{'':>14}" + "".join(f"  {f'{s} request' + ('s' if s > 1 else '') + ' per batch':>27}" for s in sizes))
    print(f"{'path':>14}" + "".join(f"  {'2 opts':>8} {'8 opts':>8} {'8/2':>8}" for _ in sizes))
    for path in ("per_option", "shared_prefix"):
        cells = [(cost[f"{path}/2@{s}"], cost[f"{path}/8@{s}"]) for s in sizes]
        print(f"{path:>14}" + "".join(f"  {a:8.1f} {b:8.1f} {f'x{b / a:.2f}':>8}" for a, b in cells))
    speed = "  ".join(f"{s}/batch: 2 opts x{cost[f'per_option/2@{s}'] / cost[f'shared_prefix/2@{s}']:.2f}, "
                      f"8 opts x{cost[f'per_option/8@{s}'] / cost[f'shared_prefix/8@{s}']:.2f}" for s in sizes)
    print(f"per_option / shared_prefix: {speed}")
    worst = max(cost[f"shared_prefix/8@{s}"] / cost[f"shared_prefix/2@{s}"] for s in sizes)
    print(f"goal: 8 options within 1.3x of 2 (shared prefix): {'met' if worst <= 1.3 else 'missed'} (x{worst:.2f})\n",
          flush=True)


def start_service(checkpoint: str, max_batch_size: int, wait_s: float, max_new_tokens: int, cpus: float) -> int:
    import ray
    from ray import serve

    from leaml.serve.gateway import GatewayArgs, vqa_application

    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    ray.init(address="local", include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": pythonpath, "BENCH_KEYS": KEY}})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    for name, enabled in (("batched", True), ("unbatched", False)):
        args = GatewayArgs.model_validate({
            "checkpoint": checkpoint, "max_new_tokens": max_new_tokens, "api_keys": {"env": "BENCH_KEYS"},
            "batching": {"enabled": enabled, "max_batch_size": max_batch_size, "batch_wait_timeout_s": wait_s},
        })
        app = vqa_application(args, model_options={"ray_actor_options": {"num_cpus": cpus},
                                                   "max_ongoing_requests": 4 * max_batch_size},
                              # 0: two apps of --replica-cpus 1 still fit 2 CPUs (it decodes on the same cores)
                              gateway_options={"ray_actor_options": {"num_cpus": 0}})
        serve.run(app, name=name, route_prefix=f"/{name}")
    return port


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """pid -> (process, CPU seconds so far) for every process on the machine (this one: the clients)."""
    import psutil

    out = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        name = "benchmark (the clients)" if p.pid == os.getpid() else " ".join(" ".join(p.info["cmdline"] or []).split())[:60]
        out[p.pid] = (name, t.user + t.system)
    return out


def print_cpu_per_request(before: dict, after: dict, requests: int, label: str, top: int = 5) -> None:
    """Where the cores went: CPU milliseconds per request of the busiest processes."""
    spent = sorted(((after[k][1] - before[k][1], after[k][0]) for k in after if k in before), reverse=True)
    print(f"  CPU per request, {label}: " + ", ".join(f"{name.removeprefix('ray::')} {1000 * s / requests:.1f} ms"
                                                     for s, name in spent[:top]), flush=True)


async def load(url: str, concurrency: int, n_requests: int, kind: str, media: list[bytes]) -> dict:
    """Closed loop: ``concurrency`` clients, each sending its next request when the last returns."""
    latencies: list[float] = []
    batch_sizes: list[int] = []
    counter = iter(range(n_requests))
    options = OPTIONS if kind == "options" else None

    async def client_loop(c: AsyncVQAClient) -> None:
        for i in counter:
            t = time.perf_counter()
            out = await c.ask(media[i % len(media)], QUESTION, options=options)
            latencies.append(time.perf_counter() - t)
            batch_sizes.append(out["batch_size"])

    async with AsyncVQAClient(url, api_key=KEY, max_connections=concurrency) as c:
        for i in range(min(concurrency, 4)):  # warm the connections and the replica
            await c.ask(media[i], QUESTION, options=options)
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(c) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    latencies.sort()
    return {
        "requests": len(latencies),
        "throughput_rps": len(latencies) / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "mean_batch": statistics.fmean(batch_sizes),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="saved model dir or s3:// prefix (default: a fresh tiny model)")
    p.add_argument("--kind", choices=["options", "generate", "both", "scoring"], default="both",
                   help="scoring: only the in-process 2-vs-8-options, per-option-vs-shared-prefix table")
    p.add_argument("--scoring-repeats", type=int, default=5, help="timed calls per cell of the scoring table")
    p.add_argument("--requests", type=int, default=96, help="requests per measurement at 16 clients")
    p.add_argument("--requests-single", type=int, default=24, help="requests per measurement at 1 client")
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--batch-wait-s", type=float, default=0.05)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--replica-cpus", type=float, default=1.0, help="num_cpus per replica (also its torch threads)")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args()

    from ray import serve

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = a.checkpoint or tiny_checkpoint(Path(tmp) / "tiny")
        scoring = {}
        if a.kind in ("options", "both", "scoring"):
            scoring = scoring_cost(ckpt, a.scoring_repeats, max(1, int(a.replica_cpus)))
            print_scoring_cost(scoring)
        if a.kind == "scoring":
            if a.json:
                Path(a.json).write_text(json.dumps({"args": vars(a), "scoring_ms": scoring}, indent=2) + "\n")
            return 0
        t = time.perf_counter()
        port = start_service(ckpt, a.max_batch_size, a.batch_wait_s, a.max_new_tokens, a.replica_cpus)
        print(f"service up in {time.perf_counter() - t:.0f} s on 127.0.0.1:{port}", flush=True)
        media = images()
        kinds = ["options", "generate"] if a.kind == "both" else [a.kind]
        results: dict[str, dict] = {}
        try:
            for kind in kinds:
                for conc, n in ((1, a.requests_single), (16, a.requests)):
                    for name in ("unbatched", "batched"):
                        before = cpu_seconds()
                        r = asyncio.run(load(f"http://127.0.0.1:{port}/{name}", conc, n, kind, media))
                        cpu = (before, cpu_seconds())
                        results[f"{kind}/{name}@{conc}"] = r
                        print(f"{kind:>8} {name:>9} @ {conc:>2} clients: {r['throughput_rps']:6.2f} req/s"
                              f"  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms"
                              f"  mean batch {r['mean_batch']:4.1f}  (n={r['requests']})", flush=True)
                        if conc > 1:  # the HTTP proxy, the gateway, the model replica, the clients
                            print_cpu_per_request(*cpu, r["requests"], f"{kind} {name}")
        finally:
            serve.shutdown()
    ratios = {}
    for kind in kinds:
        for c in (1, 16):
            on, off = results[f"{kind}/batched@{c}"], results[f"{kind}/unbatched@{c}"]
            ratios[f"{kind}@{c}"] = {
                "throughput_x": on["throughput_rps"] / off["throughput_rps"],
                "p50_x": on["p50_ms"] / off["p50_ms"], "p99_x": on["p99_ms"] / off["p99_ms"],
            }
    print(f"\nbatched / unbatched (max_batch_size={a.max_batch_size}, batch_wait_s={a.batch_wait_s}):")
    for key, r in ratios.items():
        print(f"  {key:>12} clients: throughput x{r['throughput_x']:.2f}, p50 x{r['p50_x']:.2f}, p99 x{r['p99_x']:.2f}")
    for kind in kinds:
        x = ratios[f"{kind}@16"]["throughput_x"]
        print(f"goal, {kind}: batching >= 3x throughput at 16 clients: {'met' if x >= 3 else 'missed'} (x{x:.2f})")
    if a.json:
        out = {"args": vars(a), "scoring_ms": scoring, "results": results, "ratios": ratios}
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
