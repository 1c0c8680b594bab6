"""Do the sport world's hard questions need time? Small CNNs on one frame vs. all frames say.

sport world directory (or a fresh one) -> test accuracy per difficulty (easy / medium / hard) of:

- prior-only: each template's most common train answer;
- middle frame: a multi-head CNN (one head per template) that sees frame ``n_frames // 2`` only;
- all frames: the same CNN on every frame stacked as channels (early fusion: its first layer sees
  the motion).

If the world does what it claims, easy questions are answered from one frame as well as from all,
and the hard ones (fouls, pass outcomes) stay near the prior from one frame but not from all.
The CNNs learn from every answer the train clips' hidden events give (``--labels all``, default:
this probes what the pixels allow, not how few labels suffice) or only from the asked questions
(``--labels asked``); both are scored on the test questions as asked.

    .venv/bin/python benchmarks/sport_probe.py                      # builds a 1500-clip world in a temp dir
    .venv/bin/python benchmarks/sport_probe.py --world runs/sport --epochs 80
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leaml.data.sport_world import SportWorldConfig, build_sport_world, category_scores, prior_answers  # noqa: E402
from leaml.data.synth_sport import TEMPLATES, SportScene  # noqa: E402
from leaml.records import VQAExample, load_records  # noqa: E402


def load_split(world: str, name: str) -> list[VQAExample]:
    return load_records(str(Path(world, f"{name}.jsonl")), VQAExample)


def clip_frames(world: str, examples: list[VQAExample], n_frames: int) -> tuple[np.ndarray, dict[str, int]]:
    """Every distinct clip as uint8 (N, n_frames, H, W, 3), decoded with decord, plus id -> row."""
    import decord

    refs = {ex.media.id: ex.media for ex in examples}
    ids = list(refs)
    clips = []
    for media_id in ids:
        reader = decord.VideoReader(str(Path(world, refs[media_id].uri)), ctx=decord.cpu(0), num_threads=1)
        idx = np.linspace(0, len(reader) - 1, n_frames).round().astype(int).tolist()
        clips.append(reader.get_batch(idx).asnumpy())
    return np.stack(clips), {m: k for k, m in enumerate(ids)}


def label_matrix(examples, rows, templates, options, every_answer: bool) -> torch.Tensor:
    """(clips, templates) answer indices, -1 where unknown. ``every_answer``: from the clip's hidden
    events for every template that applies; else only the questions asked."""
    y = torch.full((len(rows), len(templates)), -1, dtype=torch.long)
    for ex in examples:
        row = rows[ex.media.id]
        if every_answer:
            scene = SportScene(**ex.meta["scene"])
            for j, t in enumerate(templates):
                if TEMPLATES[t].applies(scene) and TEMPLATES[t].answer(scene) in options[t]:
                    y[row, j] = options[t].index(TEMPLATES[t].answer(scene))
        else:
            y[row, templates.index(ex.template)] = options[ex.template].index(ex.answer)
    return y


class ProbeCNN(nn.Module):
    """Space-to-depth stem (64 -> 32 px) and a 1x1 conv over every frame's channels at once (where
    frame-to-frame differences are computed), three conv blocks (32 -> 4 px), then two summaries:
    the flattened spatial map (roles need where things are) and a global max over space (a pattern
    anywhere, e.g. a ball in front of a player, learnt once rather than per place); one linear
    head per template. The same network for one frame or eight: only the stem's input changes."""

    def __init__(self, in_frames: int, n_options: list[int], widths=(48, 64, 128), size: int = 64):
        super().__init__()
        layers = [nn.PixelUnshuffle(2), nn.Conv2d(12 * in_frames, 48, 1), nn.BatchNorm2d(48), nn.ReLU()]
        cin = 48
        for w in widths:
            layers += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2)]
            cin = w
        side = size // 2 ** (len(widths) + 1)
        self.convs = nn.Sequential(*layers)
        self.mix = nn.Sequential(nn.Linear(cin * side * side + cin, 256), nn.ReLU(), nn.Dropout(0.2))
        self.heads = nn.ModuleList(nn.Linear(256, n) for n in n_options)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = self.convs(x)
        h = self.mix(torch.cat([maps.flatten(1), maps.amax(dim=(2, 3))], dim=1))
        return [head(h) for head in self.heads]


def to_input(clips: np.ndarray) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> float (B, 3T, H, W) in [-0.5, 0.5]."""
    x = torch.from_numpy(clips).float().div_(255.0).sub_(0.5)
    b, t, h, w, c = x.shape
    return x.permute(0, 1, 4, 2, 3).reshape(b, t * c, h, w)


def mirror_map(templates: list[str], options: dict[str, list[str]]) -> torch.Tensor:
    """Answer-index map for a left-right mirrored clip: "left" <-> "right", everything else stays
    (a role is counted from the team's own goal, so it survives the mirror)."""
    swap = {"left": "right", "right": "left"}
    width = max(len(options[t]) for t in templates) + 1
    rows = []
    for t in templates:
        idx = [options[t].index(swap.get(o, o)) if swap.get(o, o) in options[t] else -1 for o in options[t]]
        rows.append(torch.tensor(idx + [-1] * (width - len(idx))))
    return torch.stack(rows)


def masked_loss(logits: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    losses = [nn.functional.cross_entropy(lg, y[:, t], ignore_index=-1, reduction="sum") for t, lg in enumerate(logits)]
    return torch.stack(losses).sum() / (y >= 0).sum().clamp(min=1)


def train_probe(clips: np.ndarray, y: torch.Tensor, n_options, mirror: torch.Tensor, epochs: int, seed: int,
                batch: int = 32) -> ProbeCNN:
    """AdamW at 1e-3, cosine-decayed to 1e-4. The relational heads (who moved, which way the carrier
    faces) sit on a plateau for ~20 epochs before they break out, hence the long default run."""
    torch.manual_seed(seed)
    model = ProbeCNN(clips.shape[1], n_options, size=clips.shape[2])
    steps = epochs * ((len(clips) + batch - 1) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=1e-4)
    gen = torch.Generator().manual_seed(seed)
    t_idx = torch.arange(y.shape[1])
    for epoch in range(epochs):
        model.train()
        total = 0.0
        for idx in torch.randperm(len(clips), generator=gen).split(batch):
            xb, yb = to_input(clips[idx.numpy()]), y[idx].clone()
            flip = torch.rand(len(xb), generator=gen) < 0.5  # mirror left-right, labels follow
            xb[flip], yb[flip] = xb[flip].flip(-1), mirror[t_idx, yb[flip]]
            vflip = torch.rand(len(xb), generator=gen) < 0.5  # top-bottom: no answer changes
            xb[vflip] = xb[vflip].flip(-2)
            loss = masked_loss(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if epoch % 10 == 9 or epoch == epochs - 1:
            print(f"    epoch {epoch + 1:3d}  train loss {total / len(clips):.3f}", flush=True)
    return model


@torch.no_grad()
def predict(model: ProbeCNN, clips: np.ndarray) -> torch.Tensor:
    """(clips, templates) predicted option indices."""
    model.eval()
    outs = [model(to_input(clips[i:i + 128])) for i in range(0, len(clips), 128)]
    return torch.stack([torch.cat([o[t] for o in outs]).argmax(-1) for t in range(len(outs[0]))], dim=1)


def scores_of(pred: torch.Tensor, rows, templates, options, test) -> dict:
    answer = lambda ex: options[ex.template][int(pred[rows[ex.media.id], templates.index(ex.template)])]  # noqa: E731
    out = category_scores(test, answer)
    hits = defaultdict(list)
    for ex in test:
        hits[ex.template].append(answer(ex) == ex.answer)
    out["per_template"] = {t: sum(h) / len(h) for t, h in sorted(hits.items())}
    return out


def table(results: dict[str, dict]) -> str:
    cats = ["easy", "medium", "hard"]
    hard = [t for t, tt in TEMPLATES.items() if tt.category == "hard"]
    head = f"{'':22s}" + "".join(f"{c:>9s}" for c in cats) + f"{'mean(cat)':>11s}{'all q':>8s}" + "".join(
        f"{t:>14s}" for t in hard)
    lines = [head]
    for name, acc in results.items():
        per_t = acc.get("per_template", {})
        lines.append(f"{name:22s}" + "".join(f"{100 * acc['per_category'].get(c, 0):9.1f}" for c in cats)
                     + f"{100 * acc['mean_of_categories']:11.1f}{100 * acc['over_questions']:8.1f}"
                     + "".join(f"{100 * per_t[t]:14.1f}" if t in per_t else f"{'':14s}" for t in hard))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", help="an existing sport world directory (default: build one in a temp dir)")
    ap.add_argument("--n-train", type=int, default=1500)
    ap.add_argument("--n-test", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--labels", choices=["all", "asked"], default="all")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="sport-probe-") as tmp:
        world = args.world
        if world is None:
            world = tmp
            cfg = SportWorldConfig(seed=args.seed, n_train=args.n_train, n_test=args.n_test, n_teacher_pool=0,
                                   n_general=1)
            t0 = time.perf_counter()
            build_sport_world(cfg, world)
            print(f"built a {args.n_train}/{args.n_test}-clip world in {time.perf_counter() - t0:.1f}s", flush=True)
        meta = json.loads(Path(world, "world.json").read_text())
        n_frames = meta["config"]["n_frames"]
        options = {t: v["options"] for t, v in meta["templates"].items()}
        templates = sorted(options)
        train, test = load_split(world, "train"), load_split(world, "test")
        t0 = time.perf_counter()
        x_train, rows_train = clip_frames(world, train, n_frames)
        x_test, rows_test = clip_frames(world, test, n_frames)
        print(f"decoded {len(x_train) + len(x_test)} clips in {time.perf_counter() - t0:.1f}s", flush=True)

    y = label_matrix(train, rows_train, templates, options, args.labels == "all")
    n_options = [len(options[t]) for t in templates]
    mirror = mirror_map(templates, options)
    mid = n_frames // 2
    results = {"prior-only": category_scores(test, prior_answers(train)),
               "middle frame (oracle)": meta["middle_frame"]}
    for name, sl in ((f"middle frame CNN (#{mid})", slice(mid, mid + 1)), ("all frames CNN", slice(None))):
        t0 = time.perf_counter()
        print(f"training: {name}", flush=True)
        model = train_probe(np.ascontiguousarray(x_train[:, sl]), y, n_options, mirror, args.epochs, args.seed)
        results[name] = scores_of(predict(model, np.ascontiguousarray(x_test[:, sl])), rows_test, templates,
                                  options, test)
        results[name]["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"\nsport world: {len(train)} train / {len(test)} test questions, {len(x_train)} / {len(x_test)} clips, "
          f"labels: {args.labels}\n" + table(results), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
