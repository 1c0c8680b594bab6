"""GPU check: does the product path work on CUDA, and how fast? One GPU, no network, under 5 minutes.

generated world (small) -> a tiny Qwen2.5-VL scaled up (hidden 768, 12 layers; leaml.models.builders)
with a tokenizer trained on the world -> neuron masks (Eq. 5-6, the library's scoring stage, K = 10%
per row) -> masked training on Ray Train: TorchTrainer, 1 worker, use_gpu, NCCL, DDP-wrapped, bf16
autocast, for the paper's dense masked AdamW and the sparse-state variant -> frozen entries checked
bit for bit, selected entries checked to move -> the Serve VQA app (the builder serve_configs/vqa.yaml
names) on the GPU in bf16 answers one request over HTTP -> step time, tokens/s and achieved TFLOP/s.

    bash benchmarks/gpu_check.sh                    # the wrapper: offline env, time limit, exit code
    python benchmarks/gpu_check.py --json out.json  # the same, figures also as JSON

TFLOP/s = 6 * params * tokens / step time: the dense-transformer convention (forward 2N, backward
4N per token), with every parameter (the vision tower's too) counted against the language model's
real (unpadded) tokens; a masked step does all of that work but the weight gradients it discards.
MFU is printed where the device's peak dense bf16 rate is known.

Why the training step is composed here rather than calling ``leaml.train.ray_trainer.run_training``:
the library loop never moves the model or the batches to CUDA and has no autocast, so today
``scaling.use_gpu`` trains on the CPU while holding a GPU. This script uses the same library pieces
(load_model, setup_method, MediaBatcher, target_loss, MethodSetup.clip_and_step) plus the two missing
steps (``.to(device)``, ``torch.autocast``); switch to run_training once the loop takes a device.

Without a CUDA device it prints "no CUDA device: skipping" and exits 0 (1 with --require-gpu).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
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
KEY = "gpu-check-key"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["masked", "masked_sparse"], choices=["masked", "masked_sparse"])
    p.add_argument("--steps", type=int, default=30, help="timed steps per method (after --warmup)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--k", type=float, default=0.1, help="mask K per row (fraction or count)")
    p.add_argument("--work-dir", help="keep artifacts here (default: a temporary directory)")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--require-gpu", action="store_true", help="exit 1 instead of 0 without CUDA")
    return p.parse_args(argv)


def phase(name: str, t0: float) -> None:
    print(f"[gpu-check] {name} ({time.perf_counter() - t0:.0f}s elapsed)", flush=True)


# ---------------------------------------------------------------------------------------------
# Setup: world, model, masks (driver, CPU)


def build_inputs(work: Path, k: float) -> dict[str, str]:
    from leaml.data.endo_world import WorldConfig, build_world
    from leaml.models.builders import INFO_ATTR, build_tiny_processor, build_tiny_qwen2_5_vl, save_model
    from leaml.models.init import tokenizer_corpus
    from leaml.models.tokenizer import train_tokenizer
    from leaml.train.scoring import ScoringConfig, run_scoring

    world = str(work / "world")
    build_world(WorldConfig(seed=0, n_general=40, n_endo_train=64, n_endo_test=8, n_teacher_pool=0,
                            labeled_fraction=0.25), world)
    tokenizer = train_tokenizer(tokenizer_corpus(world), vocab_size=2048)
    model = build_tiny_qwen2_5_vl(tokenizer, **SIZES)
    setattr(model, INFO_ATTR, {"preset": "gpu-check-768x12"})
    base = str(work / "base")
    save_model(model, build_tiny_processor("qwen2_5_vl", tokenizer, patch_size=8), base)
    masks = str(work / "masks")
    summary = run_scoring(ScoringConfig(init_model=base, labeled=f"{world}/labeled.jsonl", media_root=world,
                                        out=masks, mask={"k": k}))
    print(f"[gpu-check] model: {sum(p.numel() for p in model.parameters()):,} params; masks: "
          f"{summary['density_masked_weights']:.3f} of {summary['masked_weight_params']:,} LM linear weights",
          flush=True)
    return {"world": world, "base": base, "masks": masks}


# ---------------------------------------------------------------------------------------------
# Training worker (runs inside Ray Train; everything it needs is imported inside)


def train_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch
    import torch

    from leaml.models.batching import to_model_inputs
    from leaml.models.builders import load_model
    from leaml.records import VQAExample, load_records
    from leaml.train.config import TrainConfig
    from leaml.train.data import qa_items
    from leaml.train.loop import MediaBatcher, target_loss
    from leaml.train.methods import setup_method

    device = ray.train.torch.get_device()
    model, processor = load_model(config["base"], device=str(device))
    n_params = sum(p.numel() for p in model.parameters())
    cfg = TrainConfig(objective="qa_generator", method=config["method"], lr=1e-4, weight_decay=0.1,
                      warmup_steps=0, max_steps=config["steps"] + config["warmup"])
    method = setup_method(model, cfg, config["masks"])
    ddp = torch.nn.parallel.DistributedDataParallel(method.model, device_ids=[device.index],
                                                    find_unused_parameters=True)
    items = qa_items(load_records(f"{config['world']}/labeled.jsonl", VQAExample), config["world"])
    batcher, bs = MediaBatcher(processor, num_frames=1), config["batch_size"]
    batches = [batcher([items[(i * bs + j) % len(items)] for j in range(bs)]) for i in range(4)]
    torch.cuda.reset_peak_memory_stats(device)
    times, tokens, losses = [], [], []
    for step in range(config["warmup"] + config["steps"]):
        inputs = to_model_inputs(batches[step % len(batches)], method.model)
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = target_loss(ddp, inputs)
        loss.backward()
        method.clip_and_step(cfg.grad_clip)
        method.optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize(device)
        if step >= config["warmup"]:
            times.append(time.perf_counter() - t0)
            tokens.append(int(inputs["attention_mask"].sum()))
        losses.append(loss.item())
    if ray.train.get_context().get_world_rank() == 0:
        method.export(config["out"], processor)
    ray.train.report({
        "backend": torch.distributed.get_backend(), "device": torch.cuda.get_device_name(device),
        "step_time_s": statistics.median(times), "tokens_per_step": statistics.mean(tokens),
        "params": n_params,
        "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30,
        "loss_first": losses[0], "loss_last": losses[-1],
    })


def run_training(inputs: dict[str, str], method: str, args, work: Path) -> dict:
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    out = str(work / f"trained-{method}")
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={**inputs, "method": method, "out": out, "steps": args.steps, "warmup": args.warmup,
                           "batch_size": args.batch_size},
        torch_config=TorchConfig(backend="nccl", timeout_s=120),
        scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=True, resources_per_worker={"CPU": 2}),
        run_config=ray.train.RunConfig(name=f"gpu-check-{method}", storage_path=str(work / "ray_train")),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    m = dict(result.metrics)
    m["tokens_per_s"] = m["tokens_per_step"] / m["step_time_s"]
    m["tflops"] = 6 * m["params"] * m["tokens_per_s"] / 1e12
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in m["device"]), None)
    m["mfu"] = m["tflops"] / peak if peak else None
    return m | {"out": out}


def check_frozen(base: str, trained: str, masks_uri: str) -> dict:
    """Every entry outside the masks bit-identical to the base; the selected entries moved."""
    import torch

    from leaml.models.builders import load_model
    from leaml.train.masks import load_masks

    before, after = (dict(load_model(u)[0].named_parameters()) for u in (base, trained))
    by_weight = {f"{n}.weight": m for n, m in load_masks(masks_uri).items()}
    frozen = moved_frozen = selected = moved_selected = 0
    for name, p0 in before.items():
        m = by_weight.get(name, torch.zeros_like(p0, dtype=torch.bool))
        diff = after[name] != p0
        frozen += int((~m).sum())
        moved_frozen += int((diff & ~m).sum())
        selected += int(m.sum())
        moved_selected += int((diff & m).sum())
    return {"frozen_entries": frozen, "frozen_moved": moved_frozen, "selected_entries": selected,
            "selected_moved": moved_selected}


# ---------------------------------------------------------------------------------------------
# Serving


def serve_one_request(checkpoint: str, world: str, work: Path) -> dict:
    from ray import serve

    from leaml.records import VQAExample, load_records
    from leaml.serve.client import VQAClient
    from leaml.serve.vqa_deployment import ServeArgs, vqa_application

    keys = work / "api-keys"
    keys.write_text(KEY + "\n")
    args = ServeArgs.model_validate({"checkpoint": checkpoint, "device": "cuda", "dtype": "bfloat16",
                                     "max_new_tokens": 8, "api_keys": {"file": str(keys)}})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(vqa_application(args, ray_actor_options={"num_cpus": 1, "num_gpus": 1}), name="vqa",
                  route_prefix="/")  # returns once the replica loaded the model on the GPU and warmed up
        ex = load_records(f"{world}/test.jsonl", VQAExample)[0]
        media = (Path(world) / ex.media.uri).read_bytes()
        with VQAClient(f"http://127.0.0.1:{port}", api_key=KEY) as client:
            t0 = time.perf_counter()
            answer = client.ask(media, ex.question, options=ex.options)
            latency = time.perf_counter() - t0
    finally:
        serve.shutdown()
    assert answer["answer"] in ex.options, answer
    return {"question": ex.question, "answer": answer["answer"], "latency_s": latency}


# ---------------------------------------------------------------------------------------------


def report(train: dict[str, dict], frozen: dict[str, dict], served: dict, seconds: float) -> list[str]:
    failures = []
    print("\nmethod         backend  step (ms)  tokens/step  tokens/s    TFLOP/s  MFU     peak GB  loss first->last")
    for method, m in train.items():
        mfu = f"{100 * m['mfu']:.1f}%" if m["mfu"] is not None else "n/a"
        print(f"{method:<14} {m['backend']:<8} {1000 * m['step_time_s']:>9.1f}  {m['tokens_per_step']:>11.0f}  "
              f"{m['tokens_per_s']:>9.0f}  {m['tflops']:>8.2f}  {mfu:<6}  {m['peak_mem_gb']:>7.2f}  "
              f"{m['loss_first']:.3f}->{m['loss_last']:.3f}")
        f = frozen[method]
        print(f"  frozen entries: {f['frozen_moved']} of {f['frozen_entries']:,} moved; "
              f"selected entries: {f['selected_moved']:,} of {f['selected_entries']:,} moved")
        if m["backend"] != "nccl":
            failures.append(f"{method}: process group backend {m['backend']}, not nccl")
        if f["frozen_moved"]:
            failures.append(f"{method}: {f['frozen_moved']} frozen entries moved")
        if f["selected_moved"] < 0.5 * f["selected_entries"]:
            failures.append(f"{method}: only {f['selected_moved']} of {f['selected_entries']} selected entries moved")
    print(f"device: {next(iter(train.values()))['device']}; params {next(iter(train.values()))['params']:,}")
    print(f"serve on GPU: {served['question']!r} -> {served['answer']!r} in {1000 * served['latency_s']:.0f} ms")
    print(f"total {seconds:.0f}s" + ("  (over the 5-minute budget)" if seconds > 300 else ""))
    return failures


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: skipping (the GPU check needs one NVIDIA GPU)")
        return 1 if args.require_gpu else 0
    import ray

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        inputs = build_inputs(work, args.k)
        phase("world, model and masks ready", t0)
        pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        ray.init(num_cpus=min(8, os.cpu_count() or 1), num_gpus=1, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})  # workers import leaml from here
        try:
            train, frozen = {}, {}
            for method in args.methods:
                train[method] = run_training(inputs, method, args, work)
                frozen[method] = check_frozen(inputs["base"], train[method]["out"], inputs["masks"])
                phase(f"trained and checked {method}", t0)
            served = serve_one_request(train[args.methods[-1]]["out"], inputs["world"], work)
            phase("served one request", t0)
        finally:
            ray.shutdown()
    failures = report(train, frozen, served, time.perf_counter() - t0)
    if args.json:
        Path(args.json).write_text(json.dumps({"train": train, "frozen": frozen, "serve": served,
                                               "seconds": time.perf_counter() - t0, "failures": failures}, indent=2))
    for f in failures:
        print(f"FAIL: {f}")
    print("GPU check: " + ("FAILED" if failures else "PASSED"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
