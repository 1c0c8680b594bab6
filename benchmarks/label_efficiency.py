"""Label efficiency of training: one QA pair per sequence (before) vs all pairs of an image packed
into one multi-turn sequence (after), side by side in one run, from the same base model.

world directory + base checkpoint -> for each way, fine-tune on the train split's QA pairs of all but
``--val-images`` images (a validation split carved from train; test is never read), and print QA
pairs per second of training, held-out accuracy (option likelihood, mean of categories) at each
evaluation, and accuracy gained per training minute.

    .venv/bin/python benchmarks/label_efficiency.py --world runs/demo/data \\
        --init ~/.cache/leaml/base/<student> --steps 300 --eval-every 100
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from student_probe import learning_curve, prior_only, split_by_image  # noqa: E402

from leaml.records import VQAExample, load_records  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", required=True)
    ap.add_argument("--init", required=True, help="the base checkpoint both ways start from")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=16, help="sequences per step (either way)")
    ap.add_argument("--val-images", type=int, default=150)
    ap.add_argument("--threads", type=int, default=max(1, torch.get_num_threads()))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    examples = load_records(str(Path(args.world, "train.jsonl")), VQAExample)
    train, val = split_by_image(examples, args.val_images, seed=0)
    floor = prior_only(train, val)
    print(f"{len(train)} train / {len(val)} held-out QA pairs; prior-only {100 * floor:.1f}%", flush=True)
    curves = {}
    for name, pack in (("one pair per sequence", False), ("packed per image", True)):
        print(f"--- {name}", flush=True)
        curves[name] = learning_curve(args.init, args.world, train, val, args.steps, args.eval_every,
                                      args.lr, args.batch_size, pack, log=lambda m: print(m, flush=True))
    print(f"\n{'way':24s} {'QA pairs/s':>11s} {'steps/s':>8s} " +
          " ".join(f"{'acc@' + str(r['step']):>9s}" for r in curves["packed per image"]) +
          f" {'points/min':>11s}")
    for name, rows in curves.items():
        last = rows[-1]
        gain = 100 * (last["accuracy"] - floor) / (last["seconds"] / 60)
        print(f"{name:24s} {last['labels'] / last['seconds']:11.1f} {last['step'] / last['seconds']:8.2f} " +
              " ".join(f"{100 * r['accuracy']:9.1f}" for r in rows) + f" {gain:11.1f}")
    before, after = (curves[k][-1] for k in curves)
    print(f"\npacked / unpacked: {(after['labels'] / after['seconds']) / (before['labels'] / before['seconds']):.2f}x "
          f"QA pairs per second; accuracy at the last step {100 * before['accuracy']:.1f} -> {100 * after['accuracy']:.1f}")


if __name__ == "__main__":
    main()
