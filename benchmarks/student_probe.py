"""How fast does a tiny VLM learn the endo domain from labels? A learning curve on held-out images.

world directory -> a tiny preset (untrained, or a given checkpoint) fine-tuned on the train split's
QA pairs of all but ``--val-images`` images -> multiple-choice accuracy (mean of categories, by
option likelihood) on the held-out images every ``--eval-every`` steps, next to the prior-only floor
of those questions. It answers "how many steps before the pixels matter?", which bounds what any
row of the demo table can show: the method's rows cannot beat a fully supervised model that has
not yet learned to look.

    .venv/bin/python benchmarks/student_probe.py --world runs/demo/data --steps 1000
    .venv/bin/python benchmarks/student_probe.py --world runs/demo/data --init BASE --pack --steps 600
    .venv/bin/python benchmarks/student_probe.py --world runs/demo/data --preset tiny-llava \\
        --templates procedure box_artefact --steps 200 --lr 1e-3
"""
from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from leaml.media import load_media  # noqa: E402
from leaml.models.answer import score_options  # noqa: E402
from leaml.models.builders import load_model  # noqa: E402
from leaml.models.init import init_base_model  # noqa: E402
from leaml.prompts import vqa_prompt  # noqa: E402
from leaml.records import VQAExample, load_records  # noqa: E402
from leaml.train.config import MediaCaps, TrainConfig  # noqa: E402
from leaml.train.data import BatchStream, pack_by_media, vqa_items  # noqa: E402
from leaml.train.loop import MediaBatcher, target_loss  # noqa: E402
from leaml.train.methods import setup_method  # noqa: E402


def split_by_image(examples: list[VQAExample], n_val_images: int, seed: int):
    images = sorted({e.media.id for e in examples})
    random.Random(seed).shuffle(images)
    val = set(images[:n_val_images])
    return [e for e in examples if e.media.id not in val], [e for e in examples if e.media.id in val]


def mean_of_categories(hits: dict[str, list[bool]]) -> float:
    return sum(sum(v) / len(v) for v in hits.values()) / len(hits)


def prior_only(train: list[VQAExample], val: list[VQAExample]) -> float:
    majority = {t: Counter(e.answer for e in train if e.template == t).most_common(1)[0][0]
                for t in {e.template for e in train}}
    hits = defaultdict(list)
    for e in val:
        hits[e.category].append(majority.get(e.template) == e.answer)
    return mean_of_categories(hits)


def template_prior(train: list[VQAExample], val: list[VQAExample]) -> dict[str, float]:
    """Per template: how often the most common train answer is right on ``val``."""
    majority = {t: Counter(e.answer for e in train if e.template == t).most_common(1)[0][0]
                for t in {e.template for e in train}}
    hits = defaultdict(list)
    for e in val:
        hits[e.template].append(majority.get(e.template) == e.answer)
    return {t: sum(v) / len(v) for t, v in hits.items()}


@torch.no_grad()
def accuracy(model, processor, world: str, val: list[VQAExample]) -> tuple[float, dict[str, float]]:
    model.eval()
    media = [load_media(e.media, root=world) for e in val]
    probs = score_options(model, processor, media, [vqa_prompt(e.question, e.options) for e in val],
                          [e.options for e in val], batch_size=64)
    model.train()
    hits, by_template = defaultdict(list), defaultdict(list)
    for e, p in zip(val, probs):
        ok = e.options[max(range(len(p)), key=p.__getitem__)] == e.answer
        hits[e.category].append(ok)
        by_template[e.template].append(ok)
    return mean_of_categories(hits), {t: sum(v) / len(v) for t, v in sorted(by_template.items())}


def learning_curve(init: str, world: str, train: list[VQAExample], val: list[VQAExample], steps: int,
                   eval_every: int, lr: float, batch_size: int, pack: bool, max_turns: int = 8,
                   caps: MediaCaps | None = None, log=print) -> list[dict]:
    """Fine-tune ``init`` on ``train`` (packed per image or not) and measure ``val`` every
    ``eval_every`` steps: rows of step, training seconds (evaluation excluded), QA pairs seen, accuracy.
    ``caps``: the processor's pixels per frame (e.g. frames scaled up: more visual tokens per object)."""
    model, processor = load_model(init, caps=caps)
    cfg = TrainConfig(objective="vqa", method="full", lr=lr, max_steps=steps,
                      batch_size=batch_size, warmup_steps=min(20, steps - 1), weight_decay=0.01)
    method = setup_method(model, cfg)
    warm = cfg.warmup_steps + 1
    schedule = torch.optim.lr_scheduler.LambdaLR(
        method.optimizer, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    items = vqa_items(train, world)
    items = pack_by_media(items, max_turns) if pack else items
    stream, batcher = BatchStream(items, batch_size, seed=0, shuffle_turns=pack), MediaBatcher(processor, 8)
    rows, seconds, labels = [], 0.0, 0
    for step in range(steps):
        t0 = time.perf_counter()
        batch = stream.batch_at(step)
        loss = target_loss(model, batcher(batch))
        loss.backward()
        method.clip_and_step(cfg.grad_clip)
        schedule.step()
        method.optimizer.zero_grad(set_to_none=True)
        seconds += time.perf_counter() - t0
        labels += sum(len(it.conversation) for it in batch)
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            acc, per_template = accuracy(model, processor, world, val)
            rows.append({"step": step + 1, "seconds": seconds, "labels": labels, "accuracy": acc})
            worst = ", ".join(f"{t} {100 * a:.0f}" for t, a in sorted(per_template.items(), key=lambda x: x[1])[:3])
            log(f"step {step + 1:5d}  loss {loss.item():.3f}  held-out {100 * acc:5.1f}%  "
                f"({seconds:.0f}s training, {labels} QA pairs; lowest templates: {worst})")
    log("per template at the last step (held-out accuracy / prior-only):")
    floor = template_prior(train, val)
    for t, a in sorted(per_template.items(), key=lambda x: x[1]):
        log(f"  {t:28s} {100 * a:5.1f}  {100 * floor[t]:5.1f}")
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", required=True, help="a world directory (leaml data synth)")
    ap.add_argument("--init", help="checkpoint to start from (default: an untrained --preset)")
    ap.add_argument("--preset", default="tiny-qwen2.5-vl")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--val-images", type=int, default=150)
    ap.add_argument("--pack", action="store_true", help="all QA pairs of an image in one sequence")
    ap.add_argument("--templates", nargs="*", help="train and evaluate on these templates only")
    ap.add_argument("--threads", type=int, default=max(1, torch.get_num_threads()))
    ap.add_argument("--pixels", type=int, help="scale every frame to this many pixels (min = max pixels): "
                    "4x the 64x64 frames' 4096 gives 4x the visual tokens")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    examples = load_records(str(Path(args.world, "train.jsonl")), VQAExample)
    if args.templates:
        examples = [e for e in examples if e.template in args.templates]
    train, val = split_by_image(examples, args.val_images, seed=0)
    print(f"{len(train)} train / {len(val)} held-out questions; prior-only on the held-out: "
          f"{100 * prior_only(train, val):.1f}% (mean of categories)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        init = args.init or init_base_model(args.preset, args.world, str(Path(tmp, "init")))
        learning_curve(init, args.world, train, val, args.steps, args.eval_every, args.lr, args.batch_size,
                       args.pack, caps=MediaCaps(min_pixels=args.pixels, max_pixels=args.pixels) if args.pixels else None,
                       log=lambda m: print(m, flush=True))


if __name__ == "__main__":
    main()
