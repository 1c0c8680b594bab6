"""What does each update method cost? Step time, peak RSS and trainable-state bytes of full fine-tuning,
LoRA, dense masked AdamW (the paper's GPS-style way) and sparse-state masked AdamW, at several densities.

tiny world + one tiny base checkpoint (``--preset``, default the larger teacher so weights dominate)
-> Eq. 5 importance scores from the QA loss over the labeled batches trained on here (real scores,
not random) -> top-K-per-row masks at K = 1%, 2%, 10%, 50% of each row and the paper's K=1000 scaled
to our widths -> every method trains the same batches from the same weights -> one table, ratios to
full fine-tuning, PASS/FAIL per goal.

Memory is measured with each method alone in a fresh forked process (one method's freed memory
cannot hide in the next one's RSS); time with all methods in one process taking one step each per
round, so load from other jobs that comes and goes hits every method alike.

Measured per method:
- step: median wall time of forward + backward + clip + optimizer step after ``--warmup`` steps, and
  the median process CPU time of the same span; the step-time goal is judged on CPU time, because on
  cores shared with other jobs the wall time mostly measures the neighbours (both are printed);
- RSS+: peak RSS during training (VmHWM, reset after setup) minus RSS of the loaded model before the
  method was set up (freed heap trimmed first): optimizer state, gradients, activations,
  masks/indices/adapters all count. On these tiny models activations are a large, method-independent
  part of it; the state column is the exact count;
- state: gradients + optimizer state + selection (masks or indices), read by
  ``sparse.trainable_state_bytes`` after a step (before ``zero_grad``); it is method-agnostic, so
  the same count serves every method. ``weights+`` is trainable weight memory the method adds on top
  of the model: LoRA's adapters, the sparse path's flat copy of the selected values.

    .venv/bin/python benchmarks/masked_training.py                  # ~3.5 min on 2 busy CPU cores
    .venv/bin/python benchmarks/masked_training.py --quick          # student preset, few steps, ~30 s
    .venv/bin/python benchmarks/masked_training.py --steps 40 --fractions 0.01 0.5 --json out.json
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leaml.data.endo_world import WorldConfig, build_world  # noqa: E402
from leaml.models.builders import load_model  # noqa: E402
from leaml.models.init import init_base_model  # noqa: E402
from leaml.records import VQAExample, load_records  # noqa: E402
from leaml.train.config import TrainConfig  # noqa: E402
from leaml.train.data import qa_items  # noqa: E402
from leaml.train.loop import MediaBatcher, target_loss  # noqa: E402
from leaml.train.masks import (accumulate_importance, compute_masks, eligible_linears, mask_summary,  # noqa: E402
                               save_masks, topk_per_row)
from leaml.train.methods import setup_method  # noqa: E402
from leaml.train.sparse import SparseLinear, trainable_state_bytes  # noqa: E402

MiB = 2**20
PAPER_K = 1000
# NVILA-Lite-2B's LM (Qwen2-1.5B): rows of down_proj are 8960 wide, every other linear's 1536 wide.
NVILA_ROW = {"down_proj": 8960, "default": 1536}
PAPER_NOTE = (f"paper K={PAPER_K}/row on NVILA = {PAPER_K / 1536:.0%} of its 1536-wide rows and "
              f"{PAPER_K / 8960:.0%} of its 8960-wide down_proj rows (~half the LM's linear weights). "
              f"On our narrow rows K={PAPER_K} is capped at the row (100% density), so 'paper' keeps the "
              "same fraction per kind of row: K = round(1000 * width / NVILA width).")


@dataclass
class Fixture:
    """What every method shares: the base checkpoint, the encoded batches, the masks on disk."""

    base: str
    batches: list[dict[str, torch.Tensor]]
    masks: dict[str, str] = field(default_factory=dict)  # label -> mask artifact uri
    summaries: dict[str, dict] = field(default_factory=dict)


@dataclass
class Result:
    method: str
    label: str  # density label ("1%", "paper", ...) or "" for full / LoRA
    density: float | None
    step_ms: float
    cpu_ms: float
    phase_ms: dict[str, float]
    rss_mib: float
    state: dict[str, int]
    extra_weights: int
    selection: str

    @property
    def state_bytes(self) -> int:
        return self.state["grads"] + self.state["optimizer_state"] + self.state["selection"]


# ---------------------------------------------------------------------------------------------
# Shared inputs


def build_fixture(args, tmp: Path) -> Fixture:
    world = str(tmp / "world")
    build_world(WorldConfig(seed=args.seed, n_general=40, n_endo_train=args.batch_size * args.batches,
                            n_endo_test=4, n_teacher_pool=0, labeled_fraction=0.5), world)
    base = init_base_model(args.preset, world, str(tmp / "base"), seed=args.seed)
    model, processor = load_model(base)
    items = qa_items(load_records(f"{world}/labeled.jsonl", VQAExample), world)
    batcher = MediaBatcher(processor, num_frames=8)
    bs = args.batch_size
    batches = [batcher(items[i:i + bs]) for i in range(0, len(items) - bs + 1, bs)][:args.batches]
    fixture = Fixture(base, batches)
    add_masks(fixture, model, args, tmp)
    return fixture


def importance_scores(model, batches) -> dict[str, torch.Tensor]:
    """Eq. 5 on the QA loss of the benchmark's own batches (= the labeled set used here)."""
    weights = {n: m.weight for n, m in eligible_linears(model).items()}
    return accumulate_importance(model, batches, lambda m, b: (target_loss(m, b), len(b["labels"])), weights)


def paper_k_masks(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """K=1000/row rescaled to our widths, keeping NVILA's fraction for each kind of row."""
    def k_for(name: str, width: int) -> int:
        nvila = NVILA_ROW["down_proj" if name.endswith("down_proj") else "default"]
        return max(1, round(PAPER_K * width / nvila))

    return {n: topk_per_row(s, k_for(n, s.shape[1])) for n, s in scores.items()}


def add_masks(fixture: Fixture, model, args, tmp: Path) -> None:
    scores = importance_scores(model, fixture.batches)
    sets = {f"{100 * k:g}%": (compute_masks(scores, k), k) for k in args.fractions}
    if not args.no_paper:
        sets["paper"] = (paper_k_masks(scores), None)
    for label, (masks, k) in sets.items():
        uri = str(tmp / f"masks-{label.strip('%')}")
        summary = mask_summary(masks, model, k)
        save_masks(masks, uri, summary)
        fixture.masks[label], fixture.summaries[label] = uri, summary


# ---------------------------------------------------------------------------------------------
# One measurement, in a forked child


def rss_kib(field_name: str = "VmRSS") -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field_name + ":"))


def release_free_heap() -> None:
    """Hand memory freed so far (model loading's temporaries) back to the OS, so that what training
    allocates later shows up as RSS growth instead of quietly reusing it (glibc only; else a no-op)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # Linux >= 4.0: VmHWM := VmRSS
        f.write("5")


Key = tuple[str, str]  # (method, density label); label "" for full and LoRA


def start_method(fixture: Fixture, key: Key, seed: int, model=None):
    """The base model (loaded fresh unless given) set up for ``key``'s method and masks."""
    torch.manual_seed(seed)
    model = model if model is not None else load_model(fixture.base)[0]
    cfg = TrainConfig(method=key[0], lr=1e-4, weight_decay=0.01, warmup_steps=0, max_steps=10_000)
    setup = setup_method(model, cfg, fixture.masks.get(key[1]))
    setup.model.train()
    return setup


def train_step(setup, batch: dict[str, torch.Tensor], clip: float = 1.0) -> dict[str, float]:
    """One step; wall and CPU seconds of fwd+bwd+clip+step, CPU seconds per phase. Grads are kept."""
    setup.optimizer.zero_grad(set_to_none=True)
    t0, c0 = time.perf_counter(), time.process_time()
    loss = target_loss(setup.model, batch)
    c1 = time.process_time()
    loss.backward()
    c2 = time.process_time()
    setup.clip_and_step(clip)
    t3, c3 = time.perf_counter(), time.process_time()
    return {"wall": t3 - t0, "cpu": c3 - c0, "fwd": c1 - c0, "bwd": c2 - c1, "clip+step": c3 - c2}


def measure_memory(fixture: Fixture, key: Key, args) -> dict:
    """Alone in a fresh process: peak RSS growth over the loaded model, and trainable-state bytes."""
    torch.set_num_threads(1)
    model, _ = load_model(fixture.base)
    release_free_heap()
    rss0 = rss_kib()
    setup = start_method(fixture, key, args.seed, model)
    reset_peak_rss()  # peak from here on; setup's lasting allocations (masks, indices, adapters) count
    for i in range(args.memory_steps):
        train_step(setup, fixture.batches[i % len(fixture.batches)])
    return {"rss_mib": (rss_kib("VmHWM") - rss0) / 1024,
            "state": trainable_state_bytes(setup.model, setup.optimizer),  # grads still alive here
            "extra_weights": extra_weight_bytes(setup), "selection": selection_kind(setup)}


def measure_times(fixture: Fixture, keys: list[Key], args) -> dict[Key, dict[str, float]]:
    """Every method in one process, one step each per round (order reversed every other round), so
    machine load that comes and goes hits all of them alike; medians over the rounds after warm-up."""
    torch.set_num_threads(1)
    setups = {k: start_method(fixture, k, args.seed) for k in keys}
    times: dict[Key, list[dict]] = {k: [] for k in keys}
    for i in range(args.warmup + args.steps):
        for k in (keys if i % 2 == 0 else keys[::-1]):
            t = train_step(setups[k], fixture.batches[i % len(fixture.batches)])
            if i >= args.warmup:
                times[k].append(t)
        print(f"  timing round {i + 1}/{args.warmup + args.steps}", end="\r", flush=True)
    print()
    return {k: {f: 1e3 * statistics.median(t[f] for t in ts) for f in ts[0]} for k, ts in times.items()}


def extra_weight_bytes(setup) -> int:
    """Trainable weights the method adds: LoRA adapters or the sparse path's value copies."""
    return sum(p.numel() * p.element_size() for n, p in setup.model.named_parameters()
               if p.requires_grad and ("lora_" in n or n.endswith("sparse_values")))


def selection_kind(setup) -> str:
    kinds = sorted({str(m.sparse_index.dtype).removeprefix("torch.")
                    for m in setup.model.modules() if isinstance(m, SparseLinear)})
    if kinds:
        return "/".join(kinds)
    return "bool" if getattr(setup.optimizer, "masks", None) else "-"


def run_isolated(fn, *args):
    """``fn(*args)`` in a forked child: fresh peak RSS, nothing left in this process's allocator."""
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def child():
        try:
            send.send(("ok", fn(*args)))
        except BaseException:  # noqa: BLE001 - report any failure to the parent
            send.send(("error", traceback.format_exc()))

    proc = ctx.Process(target=child)
    proc.start()
    send.close()  # the child holds the only write end: a crash shows up as EOF, not a hang
    try:
        status, value = recv.recv()
    except EOFError:
        status, value = "error", "no result"
    proc.join()
    if status != "ok":
        raise RuntimeError(f"benchmark child failed (exit code {proc.exitcode}): {value}")
    return value


# ---------------------------------------------------------------------------------------------
# Report


def mib(n: float) -> str:
    return f"{n / MiB:8.2f}"


def format_table(results: list[Result]) -> str:
    full = next(r for r in results if r.method == "full")
    head = (f"{'method':<14}{'K':>6}{'density':>8}{'sel':>11}{'wall ms':>9}{'cpu ms':>8}{'x full':>7}"
            f"{'RSS+ MiB':>9}{'x full':>7}{'grads':>9}{'optim':>9}{'select':>8}{'state MiB':>10}{'x full':>7}"
            f"{'weights+':>9}")
    lines = [head, "-" * len(head)]
    for r in results:
        dens = f"{r.density:.1%}" if r.density is not None else "-"
        lines.append(
            f"{r.method:<14}{r.label or '-':>6}{dens:>8}{r.selection:>11}{r.step_ms:9.1f}{r.cpu_ms:8.1f}"
            f"{r.cpu_ms / full.cpu_ms:7.2f}{r.rss_mib:9.1f}{r.rss_mib / max(full.rss_mib, 1e-9):7.2f}"
            f"{mib(r.state['grads'])} {mib(r.state['optimizer_state'])}{r.state['selection'] / MiB:8.2f}"
            f"{r.state_bytes / MiB:10.2f}{r.state_bytes / full.state_bytes:7.3f}{mib(r.extra_weights)}")
    return "\n".join(lines)


def format_phases(results: list[Result]) -> str:
    lines = [f"{'method':<14}{'K':>6}" + "".join(f"{k + ' ms':>14}" for k in ("fwd", "bwd", "clip+step"))]
    for r in results:
        lines.append(f"{r.method:<14}{r.label or '-':>6}" + "".join(f"{v:14.1f}" for v in r.phase_ms.values()))
    return "\n".join(lines)


def format_densities(fixture: Fixture) -> str:
    lines = []
    for label, s in fixture.summaries.items():
        per_width: dict[int, set[int]] = {}
        for m in s["modules"].values():
            per_width.setdefault(m["shape"][1], set()).update({m["k_row_min"], m["k_row_max"]})
        rows = ", ".join(f"{'/'.join(map(str, sorted(ks)))} of {w}" for w, ks in sorted(per_width.items()))
        lines.append(f"  K={label:<6} kept per row: {rows}; density {s['density_masked_weights']:.2%} of the "
                     f"{s['masked_weight_params']:,} masked LM weights, {s['density_all_params']:.2%} of all "
                     f"{s['model_params']:,} params")
    return "\n".join(lines)


def pairs(results: list[Result]) -> list[tuple[Result, Result]]:
    dense = {r.label: r for r in results if r.method == "masked"}
    return [(dense[r.label], r) for r in results if r.method == "masked_sparse" and r.label in dense]


Goal = tuple[bool, str]


def check_goals(results: list[Result], fixture: Fixture) -> list[Goal]:
    """The issue's goals for the sparse path, each with its measured numbers."""
    full = next(r for r in results if r.method == "full")
    lora = next((r for r in results if r.method == "lora"), None)
    sparse = [s for _, s in pairs(results)]
    goals = goal_proportional(sparse, fixture) if sparse else []
    goals += [goal_vs_full(s, full) for s in sparse if s.label in ("50%", "paper")]
    if lora is not None:
        goals += [goal_vs_lora(s, lora) for s in sparse if s.density is not None and s.density <= 0.025]
    return goals + [goal_step_time(d, s) for d, s in pairs(results)]


def goal_proportional(sparse: list[Result], fixture: Fixture) -> list[Goal]:
    per_entry = [(s.state["grads"] + s.state["optimizer_state"]) / fixture.summaries[s.label]["selected"]
                 for s in sparse]
    spread = max(per_entry) / min(per_entry) - 1
    figures = ", ".join(f"{s.label} {b:.2f} B" for s, b in zip(sparse, per_entry))
    return [(spread <= 0.05, "sparse grads+optimizer bytes per selected entry constant across densities "
             f"(proportional to density): {figures}; spread {spread:.1%} <= 5%")]


def goal_vs_full(s: Result, full: Result) -> Goal:
    ratio = s.state_bytes / full.state_bytes
    return ratio <= 0.6, f"sparse state at K={s.label} (density {s.density:.1%}) = {ratio:.3f}x full <= 0.6x"


def goal_vs_lora(s: Result, lora: Result) -> Goal:
    return (s.state_bytes <= lora.state_bytes,
            f"sparse state at K={s.label} ({s.density:.1%}) {s.state_bytes / MiB:.2f} MiB <= LoRA's "
            f"{lora.state_bytes / MiB:.2f} MiB (with added weights: {(s.state_bytes + s.extra_weights) / MiB:.2f} "
            f"vs {(lora.state_bytes + lora.extra_weights) / MiB:.2f} MiB)")


def goal_step_time(d: Result, s: Result) -> Goal:
    # judged on CPU time: wall time on shared cores also measures the neighbours
    cpu, wall = s.cpu_ms / d.cpu_ms, s.step_ms / d.step_ms
    note = "" if (cpu <= 1.05) == (wall <= 1.05) else " - wall time disagrees: cores were contended"
    return (cpu <= 1.05, f"sparse step CPU time at K={s.label} {s.cpu_ms:.1f} ms = {cpu:.3f}x dense masked "
            f"{d.cpu_ms:.1f} ms <= 1.05x (wall {s.step_ms:.1f} vs {d.step_ms:.1f} ms = {wall:.3f}x){note}")


# ---------------------------------------------------------------------------------------------
# Main


def run_benchmark(args) -> tuple[Fixture, list[Result]]:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per child drowns the progress lines
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="leaml-bench-") as tmp:
        fixture = build_fixture(args, Path(tmp))
        plan: list[Key] = [("full", ""), *([("lora", "")] if not args.no_lora else [])]
        plan += [(m, label) for label in fixture.masks for m in ("masked", "masked_sparse")]
        memory = {}
        for key in plan:
            memory[key] = run_isolated(measure_memory, fixture, key, args)
            print(f"  memory {key[0]:<14} {key[1]:>6}: RSS +{memory[key]['rss_mib']:.1f} MiB", flush=True)
        times = run_isolated(measure_times, fixture, plan, args)
    return fixture, [to_result(fixture, k, memory[k], times[k]) for k in plan]


def to_result(fixture: Fixture, key: Key, memory: dict, times: dict[str, float]) -> Result:
    summary = fixture.summaries.get(key[1])
    return Result(key[0], key[1], summary["density_masked_weights"] if summary else None, times["wall"],
                  times["cpu"], {k: times[k] for k in ("fwd", "bwd", "clip+step")}, **memory)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny-qwen2.5-vl-teacher", help="tiny model preset (teacher: weights dominate)")
    p.add_argument("--steps", type=int, default=15, help="timed steps per method (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocator, lazy optimizer state)")
    p.add_argument("--memory-steps", type=int, default=2, help="steps per method in its own process for peak RSS")
    p.add_argument("--batch-size", type=int, default=8, help="QA examples per step")
    p.add_argument("--batches", type=int, default=4, help="distinct batches, cycled")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.02, 0.1, 0.5], help="K as row fractions")
    p.add_argument("--no-paper", action="store_true", help="skip the paper's K=1000 (rescaled) masks")
    p.add_argument("--no-lora", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="student preset, 1+4 steps of batch 4, K in {2%%, 50%%}")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.preset, args.steps, args.warmup, args.batch_size, args.batches = "tiny-qwen2.5-vl", 4, 1, 4, 2
        args.fractions = [0.02, 0.5]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    print(f"masked-training benchmark: preset {args.preset}, {args.steps} timed steps after {args.warmup} warm-up, "
          f"batch {args.batch_size}, torch threads 1, seed {args.seed}", flush=True)
    fixture, results = run_benchmark(args)
    print("\nmasks: Eq. 5 importance (|mean QA-loss gradient| over the benchmark's labeled batches), top-K per row")
    print(format_densities(fixture))
    print(f"  {PAPER_NOTE}")
    print("\n" + format_table(results))
    print("\nwall/cpu ms: median fwd+bwd+clip+step; step 'x full' and the step-time goal use CPU time. "
          "RSS+: peak growth over the loaded model.\nstate = grads + optim (AdamW moments + step counters) + "
          "select (bool masks or int indices); weights+ = LoRA adapters / sparse value copies (not in state); "
          "MiB = 2^20 bytes")
    print("\nmedian CPU time per phase\n" + format_phases(results))
    goals = check_goals(results, fixture)
    print("\ngoals")
    for ok, text in goals:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": [asdict(r) for r in results],
                                               "goals": [{"pass": ok, "goal": t} for ok, t in goals]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
