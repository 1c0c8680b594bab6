"""The VQA service under load and faults: mixed valid and bad requests, then a model replica SIGKILLed.

checkpoint (or a fresh tiny model) -> the VQA app on a local Ray Serve -> closed-loop HTTP load on
127.0.0.1 from ``--clients`` concurrent clients, each request drawn from a seeded mix -> two phases:

1. steady (``--steady-s``): p50/p99 latency per request kind, 2xx/4xx/5xx counts, requests/s, and
   the RSS of every replica process before and after (growth = a leak);
2. kill (``--kills`` times): the load goes on; ``--kill-after-s`` in, the model replica's process
   gets SIGKILL (no exception, no cleanup). What the requests in flight got, what those sent while
   it was down got, and the time until a valid request sent after the kill is answered 2xx again.

The mix (``MIX``): multiple-choice and free-form questions on valid images (JSON and multipart),
and bad inputs that must be 4xx with their stable code whatever happens to the model: bytes of no
image format, a truncated JPEG, an image the processor refuses (1x300: Qwen2.5-VL takes up to
200:1), a question over the length limit, too many options, and a valid request without a key.

``--topology gateway`` (default; the shipped setup, ``leaml.serve.gateway``): the HTTP app in its
own replica, the model behind a handle; a dead model replica is a 503 ``model_unavailable`` with
Retry-After. ``--topology single`` (the baseline the split replaced, built here: ``single_process_app``):
app and model in one replica; its requests in flight die with it and Serve's proxy answers them
with a plain-text 500.

    .venv/bin/python benchmarks/serve_load.py                           # tiny model, ~1-2 min on 2 CPUs
    .venv/bin/python benchmarks/serve_load.py --clients 32 --steady-s 300 --kills 3 --json load.json
    .venv/bin/python benchmarks/serve_load.py --topology single         # the same kill, one deployment
    .venv/bin/python benchmarks/serve_load.py --checkpoint runs/demo/vqa/leaml --replica-cpus 1
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import random
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from leaml.serve.client import vqa_request_kwargs  # noqa: E402

KEY = "load-test-key-0123456789"
APP = "vqa"
QUESTIONS = ["Is there a polyp in the image?", "What colour is the abnormality?",
             "How many instruments are in the image?"]
OPTIONS = [["yes", "no"], ["red", "pink", "white", "green"], ["0", "1", "2", "3"]]


# ---------------------------------------------------------------------------------------------
# The request mix


@dataclass(frozen=True)
class Kind:
    name: str
    weight: float
    status: int  # the right answer for this kind while the model is up
    codes: frozenset[str]  # and its right codes ("ok" for a 2xx)
    valid: bool  # a request the model should answer (2xx); else a refusal

    def expected(self, status: int, code: str) -> bool:
        return status == self.status and code in self.codes


def _kind(name: str, weight: float, status: int, *codes: str) -> Kind:
    return Kind(name, weight, status, frozenset(codes or ("ok",)), status < 300)


MIX = [
    _kind("mc", 0.30, 200),  # image + question + options, base64 JSON
    _kind("free", 0.15, 200),  # free-form question: greedy generation
    _kind("upload", 0.15, 200),  # multiple choice as a multipart upload
    _kind("undecodable", 0.07, 415, "not_an_image"),  # random bytes
    _kind("truncated", 0.07, 422, "truncated", "corrupt"),  # a JPEG cut short
    _kind("refused", 0.06, 422, "unsupported_aspect_ratio"),  # decodes; the processor refuses 1x300
    _kind("long_question", 0.06, 422, "question_too_long"),
    _kind("many_options", 0.07, 422, "too_many_options"),
    _kind("no_key", 0.07, 401, "unauthorized"),  # a valid request without an API key
]
KINDS = {k.name: k for k in MIX}


def _jpeg(i: int, size=(96, 96)) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 30 + 5 * i).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()


def _png(size) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 40, 60)).save(buf, "PNG")
    return buf.getvalue()


def build_requests(variants: int = 8) -> dict[str, list[dict]]:
    """Per kind, ``variants`` prepared httpx keyword arguments (encoded once, so the clients spend
    their CPU on sending, not on base64)."""
    images = [_jpeg(i) for i in range(variants)]
    rng = random.Random(0)
    out: dict[str, list[dict]] = {k: [] for k in KINDS}
    for i, img in enumerate(images):
        q, opts = QUESTIONS[i % 3], OPTIONS[i % 3]
        out["mc"].append(vqa_request_kwargs(img, q, opts))
        out["free"].append(vqa_request_kwargs(img, q))
        out["upload"].append(vqa_request_kwargs(img, q, opts, multipart=True))
        out["undecodable"].append(vqa_request_kwargs(rng.randbytes(2000 + 100 * i), q, opts))
        out["truncated"].append(vqa_request_kwargs(img[: 150 + 20 * i], q, opts))
        out["refused"].append(vqa_request_kwargs(_png((1, 300 + i)), q, opts))
        out["long_question"].append(vqa_request_kwargs(img, "why? " * 201, opts))
        out["many_options"].append(vqa_request_kwargs(img, q, [f"option {j}" for j in range(27 + i)]))
        out["no_key"].append({**vqa_request_kwargs(img, q, opts), "headers": {"Authorization": ""}})
    return out


def pick_kind(seed: int, client: int, i: int) -> str:
    """The ``i``-th request of ``client``: seeded per request, so a run's mix is reproducible."""
    r = random.Random(f"{seed}:{client}:{i}").random() * sum(k.weight for k in MIX)
    for k in MIX:
        r -= k.weight
        if r < 0:
            return k.name
    return MIX[-1].name


# ---------------------------------------------------------------------------------------------
# Driving load


@dataclass
class Result:
    kind: str
    status: int  # HTTP status; 0 when no response came (timeout or connection error)
    code: str  # the service's error code, "ok", "plain" (a non-JSON error: Serve's own), or the transport error
    t0: float  # seconds since the load started
    t1: float
    retry_after: str | None = None
    batch_size: int | None = None  # of a 2xx: requests that shared its forward pass


async def send(http: httpx.AsyncClient, kind: str, kwargs: dict, t_start: float) -> Result:
    t0 = time.perf_counter() - t_start
    try:
        resp = await http.post("/v1/vqa", **kwargs)
    except httpx.HTTPError as e:  # a timeout is a hang: the service promised an answer
        return Result(kind, 0, type(e).__name__, t0, time.perf_counter() - t_start)
    t1 = time.perf_counter() - t_start
    code, batch = "ok", None
    try:
        body = resp.json()
        code, batch = (body["error"]["code"], None) if resp.status_code >= 400 else ("ok", body["batch_size"])
    except (ValueError, KeyError, TypeError):
        code = "plain" if resp.status_code >= 400 else "ok"  # plain: an error from Serve, not from the app
    return Result(kind, resp.status_code, code, t0, t1, resp.headers.get("retry-after"), batch)


@dataclass
class Load:
    """Closed-loop load: ``clients`` coroutines, each sending its next request when the last returns,
    until ``stop()``; every result is kept in ``results``."""

    url: str
    requests: dict[str, list[dict]]
    clients: int
    seed: int = 0
    timeout_s: float = 60.0
    results: list[Result] = field(default_factory=list)
    t_start: float = 0.0
    _stop: asyncio.Event | None = None

    def now(self) -> float:
        return time.perf_counter() - self.t_start

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        self._stop = asyncio.Event()
        limits = httpx.Limits(max_connections=self.clients, max_keepalive_connections=self.clients)
        async with httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {KEY}"},
                                     timeout=self.timeout_s, limits=limits) as http:
            self.t_start = time.perf_counter()
            await asyncio.gather(*(self._client(http, c) for c in range(self.clients)))

    async def _client(self, http: httpx.AsyncClient, client: int) -> None:
        i = 0
        while not self._stop.is_set():
            kind = pick_kind(self.seed, client, i)
            variants = self.requests[kind]
            self.results.append(await send(http, kind, variants[(client + i) % len(variants)], self.t_start))
            i += 1


# ---------------------------------------------------------------------------------------------
# The service and its processes


def tiny_checkpoint(out: Path) -> str:
    from leaml.models.builders import ModelSpec, build_model, save_model
    from leaml.prompts import vqa_prompt

    texts = [vqa_prompt(q, o) for q, o in zip(QUESTIONS, OPTIONS)] * 20 + QUESTIONS * 10
    model, processor = build_model(ModelSpec(preset="tiny-qwen2.5-vl"), tokenizer_texts=texts)
    save_model(model, processor, str(out))
    return str(out)


def service_args(checkpoint: str, keys_file: Path, max_batch_size: int = 8, batch_wait_s: float = 0.02,
                 max_new_tokens: int = 4, model_timeout_s: float = 60.0) -> dict:
    """Builder args; the key goes in a secret file (an env var would sit in Ray's runtime-env logs)."""
    keys_file.write_text(f"# load test\n{KEY}\n")
    return {
        "checkpoint": checkpoint, "max_new_tokens": max_new_tokens, "api_keys": {"file": str(keys_file)},
        "batching": {"max_batch_size": max_batch_size, "batch_wait_timeout_s": batch_wait_s},
        "gateway": {"model_timeout_s": model_timeout_s},
    }


def start_ray() -> Path:
    """A local Ray whose workers import leaml from this checkout; returns its session dir."""
    import ray

    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    ctx = ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                   runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    return Path(ctx.address_info["session_dir"])


def logs_quoting(session_dir: Path, secrets: list[str]) -> dict[str, list[str]]:
    """Per secret (an API key, a question), the session's log files that contain it (should be none)."""
    logs = [p for p in (session_dir / "logs").rglob("*") if p.is_file()]
    texts = {p: p.read_text(errors="replace") for p in logs}
    return {s: [p.name for p, t in texts.items() if s in t] for s in secrets}


SINGLE_NAME = "VQAService"


def single_process_app(args: dict, replica_cpus: float):
    """The baseline topology: :class:`~leaml.serve.vqa_deployment.VQAModel` with its HTTP app in
    the same replica (as shipped before the gateway split). Defined inside this function so Ray
    pickles the subclass by value: this file is no importable module on the workers."""
    from ray import serve

    from leaml.serve.vqa_deployment import ServeArgs, VQAModel

    class InProcessVQA(VQAModel):
        def __serve_build_asgi_app__(self):
            from leaml.serve.metrics import build_metrics
            from leaml.serve.vqa_app import create_app

            return create_app(self.args.service_settings(), self.answerer, metrics=build_metrics())

    model_args = ServeArgs.model_validate({k: v for k, v in args.items() if k != "gateway"})
    deployment = serve.deployment(serve.ingress()(InProcessVQA), name=SINGLE_NAME,
                                  max_ongoing_requests=max(32, 2 * model_args.batching.max_batch_size),
                                  ray_actor_options={"num_cpus": replica_cpus})
    return deployment.bind(model_args.model_dump(mode="json"))


def start_service(args: dict, topology: str = "gateway", replica_cpus: float = 0.5, gateway_cpus: float = 0.25) -> str:
    """The app on Serve (Ray already up); returns its base URL once every replica is healthy."""
    from ray import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    if topology == "gateway":
        from leaml.serve.gateway import GatewayArgs, vqa_application

        app = vqa_application(GatewayArgs.model_validate(args),
                              model_options={"ray_actor_options": {"num_cpus": replica_cpus}},
                              gateway_options={"ray_actor_options": {"num_cpus": gateway_cpus}})
    else:
        app = single_process_app(args, replica_cpus)
    serve.run(app, name=APP, route_prefix="/")
    return f"http://127.0.0.1:{port}"


def replica_deployments(topology: str) -> list[str]:
    """The app's deployments, the one holding the model (the one to kill) first."""
    from leaml.serve.gateway import GATEWAY_NAME, MODEL_NAME

    return [MODEL_NAME, GATEWAY_NAME] if topology == "gateway" else [SINGLE_NAME]


def replica_pids(deployment: str) -> list[int]:
    """PIDs of the live replicas of ``deployment`` of the app (this machine's Ray)."""
    from ray._private import state  # ray.util.state needs the dashboard, which a load test does not start

    cls = f"ServeReplica:{APP}:{deployment}"
    return sorted(a["Pid"] for a in state.actors().values() if a["ActorClassName"] == cls and a["State"] == "ALIVE")


def rss_mib(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.NoSuchProcess:
        return None


def replica_memory(deployments: list[str]) -> dict[str, float | None]:
    return {f"{d}[{pid}]": rss_mib(pid) for d in deployments for pid in replica_pids(d)}


# ---------------------------------------------------------------------------------------------
# Phases


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 1]) of a non-empty list."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(q * len(s)) - 1))]


def status_class(status: int) -> str:
    return "none" if status == 0 else f"{status // 100}xx"


def summarize(results: list[Result], seconds: float) -> dict:
    """Per kind: n, status classes, codes, p50/p99 ms, unexpected statuses; and the totals."""
    kinds = {}
    for name, kind in KINDS.items():
        rs = [r for r in results if r.kind == name]
        if not rs:
            continue
        lat = [1000 * (r.t1 - r.t0) for r in rs]
        kinds[name] = {
            "n": len(rs), **Counter(status_class(r.status) for r in rs),
            "p50_ms": percentile(lat, 0.5), "p99_ms": percentile(lat, 0.99),
            "codes": dict(Counter(r.code for r in rs)),
            "unexpected": sum(1 for r in rs if not kind.expected(r.status, r.code)),
        }
    classes = Counter(status_class(r.status) for r in results)
    batches = [r.batch_size for r in results if r.batch_size]
    return {"requests": len(results), "seconds": seconds, "rps": len(results) / seconds if seconds else 0.0,
            "classes": dict(classes), "kinds": kinds, "mean_batch": sum(batches) / max(1, len(batches))}


async def steady(load: Load, seconds: float, deployments: list[str], rss_every_s: float) -> list[tuple[float, dict]]:
    """Load for ``seconds``; returns the replicas' RSS sampled every ``rss_every_s`` (start and end included)."""
    task = asyncio.create_task(load.run())
    samples = [(0.0, replica_memory(deployments))]
    t0 = time.perf_counter()
    while (left := seconds - (time.perf_counter() - t0)) > 0:
        await asyncio.sleep(min(rss_every_s, left))
        samples.append((time.perf_counter() - t0, replica_memory(deployments)))
    load.stop()
    await task
    return samples


async def until_busy(pid: int, window_s: float = 0.03, share: float = 0.5, timeout_s: float = 10.0) -> bool:
    """Wait until ``pid`` spends ``share`` of a ``window_s`` window on the CPU: the replica is inside a
    forward pass, so its batch is in flight. A kill at a random moment can fall between batches,
    where no request is at the replica and nothing in flight is hit (seen once in CI)."""
    import psutil

    proc, t_end = psutil.Process(pid), time.perf_counter() + timeout_s
    while time.perf_counter() < t_end:
        c0 = sum(proc.cpu_times()[:2])
        await asyncio.sleep(window_s)
        if sum(proc.cpu_times()[:2]) - c0 >= share * window_s:
            return True
    return False


async def kill_under_load(load: Load, deployment: str, kill_after_s: float, after_s: float,
                          max_outage_s: float) -> dict:
    """Load; ``kill_after_s`` in, SIGKILL the replica of ``deployment``; keep loading until a valid
    request sent after the kill is answered 2xx, then ``after_s`` more (at most ``max_outage_s``)."""
    task = asyncio.create_task(load.run())
    await asyncio.sleep(kill_after_s)
    (victim,) = replica_pids(deployment)[:1]
    await until_busy(victim)
    t_kill = load.now()
    os.kill(victim, signal.SIGKILL)
    recovered, replaced = None, None
    while load.now() - t_kill < max_outage_s:
        await asyncio.sleep(0.1)
        if replaced is None and [p for p in replica_pids(deployment) if p != victim]:
            replaced = load.now() - t_kill
        if recovered is None:
            ok = [r.t1 for r in load.results if r.t0 > t_kill and KINDS[r.kind].valid and 200 <= r.status < 300]
            recovered = min(ok) - t_kill if ok else None
        if recovered is not None and load.now() - t_kill > recovered + after_s:
            break
    load.stop()
    await task
    return outage_report(load.results, t_kill, recovered, replaced, victim)


def outage_report(results: list[Result], t_kill: float, recovered: float | None, replaced: float | None,
                  victim: int) -> dict:
    """What the requests in flight at the kill, and those sent before recovery, were answered."""
    end = t_kill + (recovered if recovered is not None else math.inf)

    def group(rs: list[Result]) -> dict:
        statuses: dict[str, dict] = {}
        for r in rs:
            g = statuses.setdefault(f"{r.status} {r.code}", {"n": 0, "max_s": 0.0})
            g["n"], g["max_s"] = g["n"] + 1, max(g["max_s"], r.t1 - r.t0)
        return {"n": len(rs), "statuses": statuses,
                "503_with_retry_after": sum(1 for r in rs if r.status == 503 and r.retry_after is not None)}

    in_flight = [r for r in results if r.t0 < t_kill < r.t1]
    during = [r for r in results if t_kill <= r.t0 < end]
    return {
        "victim_pid": victim, "t_kill": t_kill, "recovery_s": recovered, "replacement_replica_s": replaced,
        "in_flight_valid": group([r for r in in_flight if KINDS[r.kind].valid]),
        "in_flight_bad": group([r for r in in_flight if not KINDS[r.kind].valid]),
        "during_valid": group([r for r in during if KINDS[r.kind].valid]),
        "during_bad": group([r for r in during if not KINDS[r.kind].valid]),
        # 503: the model died before judging it (a refusal that needs the model's processor)
        "bad_input_500": sum(1 for r in results if not KINDS[r.kind].valid and r.status >= 500 and r.status != 503),
        "hangs": sum(1 for r in results if r.status == 0),
    }


# ---------------------------------------------------------------------------------------------
# Printing


def print_steady(s: dict, rss: list[tuple[float, dict]]) -> None:
    print(f"\nsteady load: {s['requests']} requests in {s['seconds']:.0f} s = {s['rps']:.1f} req/s; "
          f"by class {s['classes']}; mean batch {s['mean_batch']:.1f}")
    print(f"{'kind':>14} {'n':>5} {'2xx':>5} {'4xx':>5} {'5xx':>5} {'none':>5} {'p50 ms':>8} {'p99 ms':>8}  codes")
    for name, k in s["kinds"].items():
        flag = f"  UNEXPECTED x{k['unexpected']}" if k["unexpected"] else ""
        print(f"{name:>14} {k['n']:>5} {k.get('2xx', 0):>5} {k.get('4xx', 0):>5} {k.get('5xx', 0):>5} "
              f"{k.get('none', 0):>5} {k['p50_ms']:>8.0f} {k['p99_ms']:>8.0f}  {k['codes']}{flag}")
    print("replica RSS (MiB) during the steady load, at " + ", ".join(f"{t:.0f}" for t, _ in rss) + " s:")
    for name in rss[0][1]:
        series = [m.get(name) for _, m in rss]
        shown = " -> ".join("gone" if v is None else f"{v:.0f}" for v in series)
        delta = f"  ({series[-1] - series[0]:+.0f})" if series[-1] is not None else ""
        print(f"  {name:>28}: {shown}{delta}")


def print_outage(i: int, o: dict) -> None:
    rec = "never (within --max-outage-s)" if o["recovery_s"] is None else f"{o['recovery_s']:.1f} s"
    rep = "not seen" if o["replacement_replica_s"] is None else f"{o['replacement_replica_s']:.1f} s"
    print(f"\nkill {i + 1}: SIGKILL of pid {o['victim_pid']}; replacement replica up after {rep}; "
          f"first 2xx to a request sent after the kill: {rec}")
    print(f"{'requests':>24} {'n':>4} {'503+RA':>6}  status code x count (slowest)")
    for key, label in (("in_flight_valid", "in flight, valid"), ("in_flight_bad", "in flight, bad input"),
                       ("during_valid", "sent in outage, valid"), ("during_bad", "sent in outage, bad")):
        g = o[key]
        statuses = ", ".join(f"{k} x{v['n']} ({v['max_s']:.1f} s)" for k, v in g["statuses"].items())
        print(f"{label:>24} {g['n']:>4} {g['503_with_retry_after']:>6}  {statuses}")
    print(f"  bad input answered 5xx other than 503: {o['bad_input_500']}; no answer (hangs): {o['hangs']}")


def print_summary(out: dict) -> None:
    st = out["steady"]
    valid = [k for n, k in st["kinds"].items() if KINDS[n].valid]
    bad = {n: k for n, k in st["kinds"].items() if not KINDS[n].valid}
    rows = [
        ("steady requests / req/s", f"{st['requests']} / {st['rps']:.1f}"),
        ("valid: 2xx of n", f"{sum(k.get('2xx', 0) for k in valid)} of {sum(k['n'] for k in valid)}"),
        ("valid: p50 / p99 ms (worst kind)",
         f"{max(k['p50_ms'] for k in valid):.0f} / {max(k['p99_ms'] for k in valid):.0f}"),
        ("bad input: 4xx with its code of n", f"{sum(k['n'] - k['unexpected'] for k in bad.values())} of "
                                              f"{sum(k['n'] for k in bad.values())}"),
        ("5xx (from bad input)", f"{st['classes'].get('5xx', 0)} ({sum(k.get('5xx', 0) for k in bad.values())})"),
        ("requests without a key served", str(bad.get("no_key", {}).get("2xx", 0))),
        ("no answer (hangs)", str(st["classes"].get("none", 0))),
    ]
    rss = out["rss_mib"]
    for name, before in rss[0][1].items():
        mid, after = rss[len(rss) // 2][1].get(name), rss[-1][1].get(name)
        rows.append((f"RSS MiB {name.split('[')[0]}, start/mid/end",
                     " / ".join("gone" if v is None else f"{v:.0f}" for v in (before, mid, after))))
    for i, o in enumerate(out["kills"]):
        inf = o["in_flight_valid"]["statuses"]
        n_503 = sum(v["n"] for k, v in inf.items() if k.startswith("503"))
        n_500 = sum(v["n"] for k, v in inf.items() if k.startswith("500"))
        rec = "none" if o["recovery_s"] is None else f"{o['recovery_s']:.1f} s"
        rows += [(f"kill {i + 1}: in-flight valid 503 / 500 / n", f"{n_503} / {n_500} / {o['in_flight_valid']['n']}"),
                 (f"kill {i + 1}: bad input 5xx but 503, hangs", f"{o['bad_input_500']}, {o['hangs']}"),
                 (f"kill {i + 1}: 2xx again after", rec)]
    rows.append(("logs quoting the key or a question", str(out["logs_quoting"] or "none")))
    width = max(len(r[0]) for r in rows)
    print(f"\nsummary ({out['args']['topology']} topology, {out['args']['clients']} clients)")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="saved model dir or s3:// prefix (default: a fresh tiny model)")
    p.add_argument("--topology", choices=["gateway", "single"], default="gateway")
    p.add_argument("--clients", type=int, default=16, help="concurrent closed-loop clients (16-32)")
    p.add_argument("--steady-s", type=float, default=30.0, help="seconds of steady load")
    p.add_argument("--rss-every-s", type=float, default=10.0, help="replica RSS sampling period")
    p.add_argument("--kills", type=int, default=1, help="kill phases after the steady one (0: none)")
    p.add_argument("--kill-after-s", type=float, default=5.0, help="seconds of load before each kill")
    p.add_argument("--after-s", type=float, default=5.0, help="seconds of load after recovery")
    p.add_argument("--max-outage-s", type=float, default=120.0, help="give up waiting for recovery after this")
    p.add_argument("--request-timeout-s", type=float, default=60.0, help="client timeout: past it, a hang")
    p.add_argument("--model-timeout-s", type=float, default=60.0, help="gateway.model_timeout_s")
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--batch-wait-s", type=float, default=0.02)
    p.add_argument("--max-new-tokens", type=int, default=4)
    p.add_argument("--replica-cpus", type=float, default=0.5, help="num_cpus of the model replica")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results here")
    return p.parse_args(argv)


def run_benchmark(a: argparse.Namespace) -> dict:
    """Service up -> steady phase -> ``a.kills`` kill phases -> everything measured, as a dict."""
    import ray
    from ray import serve

    deployments = replica_deployments(a.topology)
    out: dict = {"args": vars(a), "kills": []}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = a.checkpoint or tiny_checkpoint(Path(tmp) / "tiny")
        args = service_args(ckpt, Path(tmp) / "api-keys", a.max_batch_size, a.batch_wait_s, a.max_new_tokens,
                            a.model_timeout_s)
        t = time.perf_counter()
        session_dir = start_ray()
        try:
            url = start_service(args, a.topology, a.replica_cpus)
            print(f"{a.topology} service up in {time.perf_counter() - t:.0f} s at {url}", flush=True)
            requests = build_requests()
            load = Load(url, requests, a.clients, a.seed, a.request_timeout_s)
            out["rss_mib"] = asyncio.run(steady(load, a.steady_s, deployments, a.rss_every_s))
            out["steady"] = summarize(load.results, a.steady_s)
            print_steady(out["steady"], out["rss_mib"])
            for i in range(a.kills):
                load = Load(url, requests, a.clients, a.seed + 1 + i, a.request_timeout_s)
                o = asyncio.run(kill_under_load(load, deployments[0], a.kill_after_s, a.after_s, a.max_outage_s))
                o["rss_mib_after"] = replica_memory(deployments)
                out["kills"].append(o)
                print_outage(i, o)
            out["logs_quoting"] = {k: v for k, v in logs_quoting(session_dir, [KEY, *QUESTIONS]).items() if v}
        finally:
            serve.shutdown()
            ray.shutdown()
    return out


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    out = run_benchmark(a)
    print_summary(out)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
