"""GPU check: the library's own path, end to end on CUDA (or as a CPU smoke), and how fast.

One machine, no network, within 15 minutes on one GPU:

generated world -> base model (a tiny Qwen2.5-VL scaled to hidden 768 x 12 layers; ``--tiny``: the
tiny preset) -> neuron masks by the scoring stage as a Ray task (on the GPU) -> per method,
``leaml.train.ray_trainer.run_training``: Ray Train, 2 DDP workers on NCCL where 2 GPUs exist (else
1), 2 gloo workers on the CPU, bf16 autocast on the GPU, a mid-run checkpoint and the last one
(holding only what the method trains), the final export -> the export reloaded through
``load_model`` on the device; masked methods: frozen entries bit-identical to the base, selected
entries moved; the last checkpoint rebuilt from the base (``export_checkpoint``) equals the export
-> the Serve VQA app (``leaml.serve.gateway.vqa_application``: gateway + model replica) answers one
request over HTTP -> one vLLM caption by the exported model (the captioner's vLLM backend) when vLLM
is importable on a GPU, else skipped with the reason -> step time, tokens/s, achieved TFLOP/s.

    bash benchmarks/gpu_check.sh                               # offline env, time limit, exit code
    bash benchmarks/gpu_check.sh --device cpu --tiny           # the CPU smoke (a few minutes)
    python benchmarks/gpu_check.py --json out.json --methods masked_sparse full lora

Figures: the training loop's own (``metrics``: mean step time and real, unpadded tokens/s of rank 0
over the steps after its first; data preparation included, checkpoints not). Training TFLOP/s =
6 x params x tokens/s (forward 2N + backward 4N per token, every parameter counted, the vision
tower's too; masked methods do that work minus the weight gradients they discard); vLLM TFLOP/s =
2 x params x tokens/s (forward only). Both per GPU (rank 0's tokens); MFU where the device's peak
dense bf16 rate is known.

Without CUDA and without ``--device cpu`` it prints "no CUDA device: skipping" and exits 0 (1 with
--require-gpu). Exit 1: a check failed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Peak dense bf16 tensor-core TFLOP/s by device name (SXM parts); MFU is left out for others.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0}
SIZES = dict(hidden_size=768, layers=12, heads=12, intermediate_size=2048, vision_hidden=256, vision_layers=4,
             vision_heads=4)
TINY_WORLD = dict(seed=0, n_general=20, n_endo_train=40, n_endo_test=4, n_teacher_pool=0, labeled_fraction=0.1)
WORLD = dict(seed=0, n_general=40, n_endo_train=64, n_endo_test=8, n_teacher_pool=0, labeled_fraction=0.25)
KEY = "gpu-check-key"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: the smoke, on gloo")
    p.add_argument("--tiny", action="store_true", help="the tiny preset, a few steps (the CPU smoke's size)")
    p.add_argument("--methods", nargs="+", choices=["full", "lora", "masked", "masked_sparse"],
                   help="default: masked_sparse full (--tiny: masked_sparse)")
    p.add_argument("--steps", type=int, help="training steps per method (default 40; --tiny 4)")
    p.add_argument("--batch-size", type=int, help="examples per worker per step (default 16; --tiny 2)")
    p.add_argument("--workers", type=int, help="DDP workers (default: 2 where 2 GPUs exist, else 1; cpu: 2)")
    p.add_argument("--k", type=float, default=0.1, help="mask K per row (fraction or count)")
    p.add_argument("--work-dir", help="keep artifacts here (default: a temporary directory)")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--verbose", action="store_true", help="show the Ray workers' output")
    p.add_argument("--require-gpu", action="store_true", help="exit 1 instead of 0 without CUDA")
    args = p.parse_args(argv)
    args.methods = args.methods or (["masked_sparse"] if args.tiny else ["masked_sparse", "full"])
    args.steps = args.steps or (4 if args.tiny else 40)
    args.batch_size = args.batch_size or (2 if args.tiny else 16)
    return args


def phase(name: str, t0: float) -> None:
    print(f"[gpu-check] {name} ({time.perf_counter() - t0:.0f}s elapsed)", flush=True)


def gpu_count(device: str) -> int:
    import torch

    return torch.cuda.device_count() if device == "cuda" else 0


# ---------------------------------------------------------------------------------------------
# Setup: world, base model (driver), masks (a Ray task, on the GPU)


def build_base(work: Path, tiny: bool) -> dict[str, str]:
    from leaml.data.endo_world import WorldConfig, build_world

    world, base = str(work / "world"), str(work / "base")
    build_world(WorldConfig(**(TINY_WORLD if tiny else WORLD)), world)
    if tiny:
        from leaml.models.init import init_base_model

        init_base_model("tiny-qwen2.5-vl", world, base)
    else:
        from leaml.models.builders import INFO_ATTR, build_tiny_processor, build_tiny_qwen2_5_vl, save_model
        from leaml.models.init import tokenizer_corpus
        from leaml.models.tokenizer import train_tokenizer

        tokenizer = train_tokenizer(tokenizer_corpus(world), vocab_size=2048)
        model = build_tiny_qwen2_5_vl(tokenizer, **SIZES)
        setattr(model, INFO_ATTR, {"preset": "gpu-check-768x12"})
        save_model(model, build_tiny_processor("qwen2_5_vl", tokenizer, patch_size=8), base)
    return {"world": world, "base": base}


def build_masks(inputs: dict, work: Path, args) -> dict:
    from leaml.train.scoring import ScoringConfig, run_scoring_task

    gpu = args.device == "cuda"
    cfg = ScoringConfig(init_model=inputs["base"], labeled=f"{inputs['world']}/labeled.jsonl",
                        media_root=inputs["world"], out=str(work / "masks"), num_frames=1,
                        mask={"k": args.k, "scoring_gpus": 1 if gpu else 0, "scoring_cpus": 1 if gpu else 0.5})
    # on the GPU a Ray task holding the GPU (the library's path); the CPU smoke scores in this process
    summary = run_scoring_task(cfg, engine="ray" if gpu else "local")
    inputs["masks"] = cfg.out
    return summary


# ---------------------------------------------------------------------------------------------
# Training through the library: run_training, then what it left on disk


def train_job(inputs: dict, method: str, args, work: Path, workers: int):
    from leaml.train.loop import TrainJob

    gpu = args.device == "cuda"
    return TrainJob.model_validate({
        "name": f"gpu-check-{method}", "init_model": inputs["base"], "out_dir": str(work / f"trained-{method}"),
        "masks": inputs["masks"] if method.startswith("masked") else None,
        "train": {"objective": "qa_generator", "method": method, "max_steps": args.steps, "warmup_steps": 0,
                  "batch_size": args.batch_size, "lr": 1e-4 if not args.tiny else 1e-2, "weight_decay": 0.1,
                  "report_every": args.steps, "checkpoint_every": max(1, args.steps // 2), "num_frames": 1,
                  "precision": "bf16" if gpu else "fp32", "mask": {"k": args.k},
                  "scaling": {"num_workers": workers, "use_gpu": gpu, "cpus_per_worker": 2 if gpu else 0.5,
                              "max_failures": 0}},
        "data": [{"kind": "qa", "uri": f"{inputs['world']}/labeled.jsonl", "media_root": inputs["world"]}],
    })


def train(inputs: dict, method: str, args, work: Path, workers: int, n_params: int, peak: float | None) -> dict:
    from leaml.fingerprint import job_fingerprint
    from leaml.train.ray_trainer import run_training

    job = train_job(inputs, method, args, work, workers)
    job = job.model_copy(update={"fingerprint": job_fingerprint(job)})  # as run_training sets it
    storage = work / "ray_train"
    t0 = time.perf_counter()
    m = run_training(job, engine="ray", storage_path=str(storage))
    fit_s = time.perf_counter() - t0
    tflops = 6 * n_params * m["tokens_per_s"] / 1e12
    ckpt = newest_checkpoint(storage, job)
    return {"job": job, "out": job.out_dir, "checkpoint": str(ckpt), "workers": workers,
            "backend": "nccl" if job.train.scaling.use_gpu else "gloo", "fit_s": fit_s,
            "step_time_s": m["mean_step_time_s"], "tokens_per_step": m["tokens"], "tokens_per_s": m["tokens_per_s"],
            "tflops": tflops, "mfu": tflops / peak if peak else None, "loss_last": m["loss"], "steps": m["step"],
            "checkpoint_bytes": dir_bytes(ckpt), "export_bytes": dir_bytes(Path(job.out_dir))}


def newest_checkpoint(storage: Path, job) -> Path:
    from leaml.train.loop import STATE_JSON
    from leaml.train.ray_trainer import run_name

    steps = [(json.loads(f.read_text())["step"], f.parent) for f in (storage / run_name(job)).rglob(STATE_JSON)]
    if not steps:
        raise RuntimeError(f"run_training left no checkpoint under {storage}")
    return max(steps)[1]


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def check_export(inputs: dict, run: dict, method: str, device: str, work: Path) -> dict:
    """Reload the export on the device; frozen / moved entries; the checkpoint rebuilt == the export."""
    import torch

    from leaml.models.builders import load_model
    from leaml.train.loop import export_checkpoint

    on_device, _ = load_model(run["out"], device=device)
    reload = {"device": str(next(on_device.parameters()).device), "dtype": str(next(on_device.parameters()).dtype)}
    del on_device
    after = dict(load_model(run["out"])[0].named_parameters())
    before = dict(load_model(inputs["base"])[0].named_parameters())
    rebuilt_dir = str(work / f"rebuilt-{method}")
    step = export_checkpoint(run["job"], run["checkpoint"], rebuilt_dir)
    rebuilt = dict(load_model(rebuilt_dir)[0].named_parameters())
    worst = max((rebuilt[n].float() - after[n].float()).abs().max().item() for n in after)
    out = reload | {"checkpoint_step": step, "rebuilt_max_diff": worst,
                    "moved": sum(not torch.equal(after[n], before[n].to(after[n].dtype)) for n in after)}
    if method.startswith("masked"):
        out |= frozen_entries(before, after, inputs["masks"])
    return out


def frozen_entries(before: dict, after: dict, masks_uri: str) -> dict:
    import torch

    from leaml.train.masks import load_masks

    by_weight = {f"{n}.weight": m for n, m in load_masks(masks_uri).items()}
    frozen = moved_frozen = selected = moved_selected = 0
    for name, p0 in before.items():
        m = by_weight.get(name, torch.zeros_like(p0, dtype=torch.bool))
        diff = after[name] != p0.to(after[name].dtype)  # bf16 runs keep the frozen weights in bf16
        frozen, moved_frozen = frozen + int((~m).sum()), moved_frozen + int((diff & ~m).sum())
        selected, moved_selected = selected + int(m.sum()), moved_selected + int((diff & m).sum())
    return {"frozen_entries": frozen, "frozen_moved": moved_frozen, "selected_entries": selected,
            "selected_moved": moved_selected}


# ---------------------------------------------------------------------------------------------
# Serving: the VQA app, one request; a vLLM caption


def serve_one_request(checkpoint: str, world: str, work: Path, device: str) -> dict:
    from ray import serve

    from leaml.records import VQAExample, load_records
    from leaml.serve.client import VQAClient
    from leaml.serve.gateway import GatewayArgs, vqa_application

    keys = work / "api-keys"
    keys.write_text(KEY + "\n")
    gpu = device == "cuda"
    args = GatewayArgs.model_validate({"checkpoint": checkpoint, "device": device,
                                       "dtype": "bfloat16" if gpu else "float32", "max_new_tokens": 8,
                                       "api_keys": {"file": str(keys)}})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        app = vqa_application(args, model_options={"ray_actor_options": {"num_cpus": 1 if gpu else 0.5,
                                                                          "num_gpus": 1 if gpu else 0}},
                              gateway_options={"ray_actor_options": {"num_cpus": 0.25}})
        t0 = time.perf_counter()
        serve.run(app, name="vqa", route_prefix="/")  # returns once the model replica loaded and warmed up
        start_s = time.perf_counter() - t0
        ex = load_records(f"{world}/test.jsonl", VQAExample)[0]
        media = (Path(world) / ex.media.uri).read_bytes()
        with VQAClient(f"http://127.0.0.1:{port}", api_key=KEY) as client:
            t0 = time.perf_counter()
            answer = client.ask(media, ex.question, options=ex.options)
            latency = time.perf_counter() - t0
    finally:
        serve.shutdown()
    if answer["answer"] not in ex.options:
        raise AssertionError(f"the app answered {answer['answer']!r}, not one of {ex.options}")
    return {"question": ex.question, "answer": answer["answer"], "latency_s": latency, "start_s": start_s}


def vllm_caption(checkpoint: str, world: str, device: str, n_params: int, peak: float | None) -> dict:
    """One caption through the captioner's vLLM backend, or the reason it was skipped."""
    if device != "cuda":
        return {"skipped": "vLLM needs a CUDA device (--device cpu)"}
    if importlib.util.find_spec("vllm") is None:
        return {"skipped": "vllm is not installed here (the GPU image has it: pip install 'leaml[vllm]')"}
    from transformers import AutoTokenizer

    from leaml.media import load_media
    from leaml.pipeline.captioner import Captioner
    from leaml.records import VQAExample, load_records

    ex = load_records(f"{world}/test.jsonl", VQAExample)[0]
    frames = load_media(ex.media, num_frames=1, root=world)
    t0 = time.perf_counter()
    captioner = Captioner({"backend": "vllm", "model": checkpoint, "max_new_tokens": 32, "num_frames": 1,
                           "max_model_len": 2048, "max_num_batched_tokens": 2048, "gpu_memory_utilization": 0.3})
    start_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    (text,) = captioner.caption([frames])
    seconds = time.perf_counter() - t0
    tokens = len(AutoTokenizer.from_pretrained(checkpoint)(text, add_special_tokens=False)["input_ids"])
    tflops = 2 * n_params * tokens / seconds / 1e12
    return {"caption": text, "start_s": start_s, "latency_s": seconds, "tokens": tokens,
            "tokens_per_s": tokens / seconds, "tflops": tflops, "mfu": tflops / peak if peak else None}


# ---------------------------------------------------------------------------------------------


def report(runs: dict[str, dict], checks: dict[str, dict], served: dict | None, caption: dict,
           device_name: str, n_params: int, seconds: float) -> list[str]:
    failures = []
    print(f"\ndevice: {device_name}; model {n_params:,} params")
    print("method         workers backend  step (ms)  tokens/step  tokens/s  TFLOP/s  MFU     ckpt MiB  export MiB")
    for method, r in runs.items():
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(f"{method:<14} {r['workers']:>7} {r['backend']:<8} {1000 * r['step_time_s']:>9.1f}  "
              f"{r['tokens_per_step']:>11}  {r['tokens_per_s']:>8.0f}  {r['tflops']:>7.3f}  {mfu:<6}  "
              f"{r['checkpoint_bytes'] / 2**20:>8.2f}  {r['export_bytes'] / 2**20:>10.2f}")
        failures += check_run(method, r, checks[method])
    if served is not None:
        print(f"serve ({next(iter(checks.values()))['device']}): {served['question']!r} -> {served['answer']!r} "
              f"in {1000 * served['latency_s']:.0f} ms (app up in {served['start_s']:.0f}s)")
    if "skipped" in caption:
        print(f"vLLM caption: skipped: {caption['skipped']}")
    elif "caption" in caption:
        print(f"vLLM caption: {caption['caption']!r}: {caption['tokens']} tokens in {1000 * caption['latency_s']:.0f} ms, "
              f"{caption['tokens_per_s']:.0f} tokens/s, {caption['tflops']:.3f} TFLOP/s (engine up in {caption['start_s']:.0f}s)")
    print(f"total {seconds:.0f}s" + ("  (over the 15-minute budget)" if seconds > 900 else ""))
    return failures


def check_run(method: str, r: dict, c: dict) -> list[str]:
    failures = []
    line = (f"  {method}: {r['steps']} steps in {r['fit_s']:.0f}s (fit); export reloaded on {c['device']} "
            f"({c['dtype']}); {c['moved']} tensors moved; checkpoint of step {c['checkpoint_step']} rebuilt "
            f"from the base: max |diff| to the export {c['rebuilt_max_diff']:.2g}")
    print(line)
    if "frozen_entries" in c:
        print(f"  {method}: frozen entries: {c['frozen_moved']} of {c['frozen_entries']:,} moved; selected entries: "
              f"{c['selected_moved']:,} of {c['selected_entries']:,} moved")
        if c["frozen_moved"]:
            failures.append(f"{method}: {c['frozen_moved']} frozen entries moved")
        if c["selected_moved"] < 0.5 * c["selected_entries"]:
            failures.append(f"{method}: only {c['selected_moved']} of {c['selected_entries']} selected entries moved")
    if not c["moved"]:
        failures.append(f"{method}: training moved no parameter")
    # lora merges B @ A into the weights: on another device the matmul may round differently
    if c["rebuilt_max_diff"] > (1e-2 if method == "lora" else 0.0):
        failures.append(f"{method}: the checkpoint rebuilt from the base differs from the export by {c['rebuilt_max_diff']:.2g}")
    if r["checkpoint_bytes"] >= r["export_bytes"] and method != "full":
        failures.append(f"{method}: a checkpoint ({r['checkpoint_bytes']:,} B) is not smaller than the model")
    return failures


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: skipping (the GPU check needs one NVIDIA GPU; --device cpu runs the smoke)")
        return 1 if args.require_gpu else 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        figures, failures = run_check(args, work, t0)
    if args.json:
        Path(args.json).write_text(json.dumps(figures | {"failures": failures}, indent=2, default=str))
    for f in failures:
        print(f"FAIL: {f}")
    print("GPU check: " + ("FAILED" if failures else "PASSED") + (" (CPU smoke)" if args.device == "cpu" else ""))
    return 1 if failures else 0


def run_check(args, work: Path, t0: float) -> tuple[dict, list[str]]:
    import ray
    import torch

    from leaml.models.builders import load_model

    gpus = gpu_count(args.device)
    workers = args.workers or (2 if gpus >= 2 or args.device == "cpu" else 1)
    device_name = torch.cuda.get_device_name(0) if gpus else "cpu"
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), None)
    inputs = build_base(work, args.tiny)
    n_params = sum(p.numel() for p in load_model(inputs["base"])[0].parameters())
    phase(f"world and base model ready ({n_params:,} params); {workers} worker(s) on {device_name}", t0)
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    cpus = min(16, os.cpu_count() or 1) if gpus else max(2, min(4, os.cpu_count() or 1))
    env = {"PYTHONPATH": pythonpath} | ({} if gpus else {"OMP_NUM_THREADS": "1"})  # workers import leaml from here
    ray.init(address="local", num_cpus=cpus, num_gpus=gpus, include_dashboard=False, log_to_driver=args.verbose,
             runtime_env={"env_vars": env})
    runs, checks, served, failures = {}, {}, None, []
    try:
        if any(m.startswith("masked") for m in args.methods):
            s = build_masks(inputs, work, args)
            where = f"a Ray task on GPU {s['worker']['gpus']}" if "worker" in s else "in this process"
            phase(f"masks ({where}): {s['density_masked_weights']:.3f} of "
                  f"{s['masked_weight_params']:,} LM linear weights", t0)
        for method in args.methods:
            runs[method] = train(inputs, method, args, work, workers, n_params, peak)
            checks[method] = check_export(inputs, runs[method], method, args.device, work)
            phase(f"trained, exported, reloaded and checked {method}", t0)
        try:
            served = serve_one_request(runs[args.methods[-1]]["out"], inputs["world"], work, args.device)
            phase("served one request", t0)
        except Exception as e:  # noqa: BLE001 - reported, the rest still runs
            failures.append(f"serve: {type(e).__name__}: {e}")
    finally:
        ray.shutdown()
    try:  # after Ray: the GPU is free again for vLLM's engine
        caption = vllm_caption(runs[args.methods[-1]]["out"], inputs["world"], args.device, n_params, peak)
    except Exception as e:  # noqa: BLE001
        caption = {"error": f"{type(e).__name__}: {e}"}
        failures.append(f"vLLM caption: {caption['error']}")
    failures = report(runs, checks, served, caption, device_name, n_params, time.perf_counter() - t0) + failures
    figures = {"device": device_name, "params": n_params, "workers": workers, "checks": checks, "serve": served,
               "vllm": caption, "seconds": time.perf_counter() - t0,
               "train": {m: {k: v for k, v in r.items() if k != "job"} for m, r in runs.items()}}
    return figures, failures


if __name__ == "__main__":
    sys.exit(main())
