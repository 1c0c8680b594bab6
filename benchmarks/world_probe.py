"""Is the synthetic endo task really visual? A small CNN trained on every train label says.

world directory (or a fresh default world) -> test accuracy per category of a multi-head CNN
(image -> answer, one head per question template over its options), next to the prior-only floor.

The CNN stands for "what seeing the image allows" (the fully supervised ceiling the paper reports
at ~91%); it must land well above prior-only, else the answers are not in the pixels and the
rendering, not the probe, needs fixing.

    .venv/bin/python benchmarks/world_probe.py                 # builds a default world in a temp dir
    .venv/bin/python benchmarks/world_probe.py --world runs/world --epochs 30
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leaml.data.endo_world import WorldConfig, build_world  # noqa: E402
from leaml.data.world import accuracy_by_category, prior_only_accuracy  # noqa: E402
from leaml.data.synth_common import LOCATIONS  # noqa: E402
from leaml.records import VQAExample, load_records  # noqa: E402


def load_split(world: str, name: str) -> list[VQAExample]:
    return load_records(str(Path(world, f"{name}.jsonl")), VQAExample)


def image_tensor(world: str, examples: list[VQAExample]) -> tuple[torch.Tensor, dict[str, int]]:
    """Every distinct image of ``examples`` as an (N, 3, H, W) float tensor, plus id -> row."""
    ids = list(dict.fromkeys(ex.media.id for ex in examples))
    uri = {ex.media.id: ex.media.uri for ex in examples}
    arrays = [np.asarray(Image.open(Path(world, uri[i])).convert("RGB")) for i in ids]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
    return x, {m: k for k, m in enumerate(ids)}


def label_matrix(examples, rows: dict[str, int], templates: list[str], options: dict[str, list[str]]):
    """(N images, T templates) answer indices, -1 where the image was not asked that template."""
    y = torch.full((len(rows), len(templates)), -1, dtype=torch.long)
    for ex in examples:
        y[rows[ex.media.id], templates.index(ex.template)] = options[ex.template].index(ex.answer)
    return y


class ProbeCNN(nn.Module):
    """Space-to-depth stem (64 -> 32 px, no pixel lost), three conv blocks (32 -> 4 px), a flattened
    spatial map (location answers need it) and one linear head per template.

    About 12M multiply-adds per image: it trains in a minute or two on 2 CPU cores.
    """

    def __init__(self, n_options: list[int], widths: tuple[int, ...] = (32, 64, 128), image_size: int = 64):
        super().__init__()
        layers, cin = [nn.PixelUnshuffle(2)], 12
        for w in widths:
            layers += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2)]
            cin = w
        side = image_size // 2 ** (len(widths) + 1)
        self.trunk = nn.Sequential(*layers, nn.Flatten(), nn.Linear(cin * side * side, 256), nn.ReLU(),
                                   nn.Dropout(0.2))
        self.heads = nn.ModuleList(nn.Linear(256, n) for n in n_options)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.trunk(x)
        return [head(h) for head in self.heads]


def masked_loss(logits: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    losses = [nn.functional.cross_entropy(lg, y[:, t], ignore_index=-1, reduction="sum")
              for t, lg in enumerate(logits)]
    return torch.stack(losses).sum() / (y >= 0).sum().clamp(min=1)


def flip_maps(templates: list[str], options: dict[str, list[str]]) -> dict[str, torch.Tensor]:
    """Answer-index maps for mirrored images: a location answer mirrors (left <-> right, upper <->
    lower), every other answer stays; -1 where the mirrored cell is not an option (label dropped)."""
    swaps = {"h": {"left": "right", "right": "left"}, "v": {"upper": "lower", "lower": "upper"}}
    maps = {}
    for axis, swap in swaps.items():
        rows = []
        for t in templates:
            opts = options[t]
            mirrored = ["-".join(swap.get(w, w) for w in o.split("-")) if o in LOCATIONS else o for o in opts]
            rows.append(torch.tensor([opts.index(m) if m in opts else -1 for m in mirrored] + [-1]))
        width = max(len(r) for r in rows)
        maps[axis] = torch.stack([torch.cat([r, torch.full((width - len(r),), -1)]) for r in rows])
    return maps


def augment(xb, yb, maps, gen):
    """Random mirror per image (labels follow) and brightness jitter. Hue is left alone: it carries
    the procedure and colour answers."""
    xb, yb = xb.clone(), yb.clone()
    t_idx = torch.arange(yb.shape[1])
    for axis, dim in (("h", -1), ("v", -2)):
        flip = torch.rand(len(xb), generator=gen) < 0.5
        xb[flip] = xb[flip].flip(dim)
        yb[flip] = maps[axis][t_idx, yb[flip]]  # index -1 picks the trailing -1 column
    return xb * (0.9 + 0.2 * torch.rand(len(xb), 1, 1, 1, generator=gen)), yb


def train_probe(x, y, n_options, maps, epochs: int, seed: int, batch: int = 128) -> ProbeCNN:
    torch.manual_seed(seed)
    model = ProbeCNN(n_options, image_size=x.shape[-1])
    steps = epochs * ((len(x) + batch - 1) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        total = 0.0
        for idx in torch.randperm(len(x), generator=gen).split(batch):
            xb, yb = augment(x[idx], y[idx], maps, gen)
            loss = masked_loss(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if epoch % 5 == 4 or epoch == epochs - 1:
            print(f"  epoch {epoch + 1:3d}  train loss {total / len(x):.3f}", flush=True)
    return model


@torch.no_grad()
def predict(model: ProbeCNN, x: torch.Tensor) -> list[torch.Tensor]:
    model.eval()
    outs = [model(xb) for xb in x.split(256)]
    return [torch.cat([o[t] for o in outs]).argmax(-1) for t in range(len(outs[0]))]


def table(prior: dict, probe: dict) -> str:
    cats = list(prior["per_category"])
    lines = [f"{'':24s}" + "".join(f"{c:>12s}" for c in cats) + f"{'mean(cat)':>12s}{'all q':>10s}"]
    for name, acc in (("prior-only", prior), ("CNN probe (all labels)", probe)):
        lines.append(f"{name:24s}" + "".join(f"{100 * acc['per_category'][c]:12.1f}" for c in cats)
                     + f"{100 * acc['mean_of_categories']:12.1f}{100 * acc['over_questions']:10.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", help="an existing world directory; default: build one in a temp dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=20)
    # one thread: on a shared 2-core box, two OpenMP threads stall on each other (measured 2x slower)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads; 0 = torch's default")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        world = args.world
        if world is None:
            world = tmp
            summary = build_world(WorldConfig(seed=args.seed), world)
            print(f"built the default world (seed {args.seed}) in {summary.seconds:.1f}s: {summary.sizes}")
        return run_probe(world, args.epochs, args.seed)


def run_probe(world: str, epochs: int, seed: int) -> dict:
    train, test = load_split(world, "train"), load_split(world, "test")
    options = {ex.template: ex.options for ex in [*train, *test]}
    templates = sorted(options)
    x_tr, rows_tr = image_tensor(world, train)
    x_te, rows_te = image_tensor(world, test)
    y_tr = label_matrix(train, rows_tr, templates, options)
    t0 = time.perf_counter()
    maps = flip_maps(templates, options)
    model = train_probe(x_tr, y_tr, [len(options[t]) for t in templates], maps, epochs, seed)
    preds = predict(model, x_te)
    guess = {(ex.media.id, ex.template): options[ex.template][int(preds[templates.index(ex.template)][rows_te[ex.media.id]])]
             for ex in test}
    probe = accuracy_by_category(test, lambda ex: guess[(ex.media.id, ex.template)])
    prior = prior_only_accuracy(train, test)
    per_template = {t: float(np.mean([guess[(ex.media.id, t)] == ex.answer for ex in test if ex.template == t]))
                    for t in templates if any(ex.template == t for ex in test)}
    print(f"\ntrained on {len(train)} QA pairs / {len(x_tr)} images in {time.perf_counter() - t0:.0f}s; "
          f"test: {len(test)} QA pairs / {len(x_te)} images\n")
    print(table(prior, probe))
    print("\nprobe accuracy per template:")
    print("  " + ", ".join(f"{t} {100 * a:.0f}" for t, a in per_template.items()))
    result = {"prior_only": prior, "probe": probe, "probe_per_template": per_template}
    print("\n" + json.dumps({k: v for k, v in result.items() if k != "probe_per_template"}, indent=None))
    return result


if __name__ == "__main__":
    main()
