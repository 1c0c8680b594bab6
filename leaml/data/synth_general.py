"""The general domain: the tiny base models' "pretraining" world.

(seed, item id) -> a 64x64 scene of 1-4 coloured shapes on a plain or gradient background ->
a generic caption (several phrasings) and generic multiple-choice QA pairs.

It teaches the concepts the endo domain needs (naming colours, counting blobs, 9-cell locations,
yes/no presence) with another vocabulary and look (flat shapes and no findings, instruments or
artefacts), so the endo domain is out of distribution for the base models while what they learned
still transfers. Like the web images a real general VLM has seen, some pictures share low-level
primitives with endoscopy (a round view with black corners, soft textured backgrounds in tissue-like
colours, irregular blobs) without its semantics: a general model has seen round photos and pink
textures, not polyps.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from leaml.data.synth_common import (
    LOCATIONS, LOCATION_WORDS, Canvas, article, gradient, pick, point_in_cell, sample_without_replacement, shade,
    smooth_noise,
)
from leaml.records import Caption, MediaRef, VQAExample

SHAPES = ("circle", "square", "triangle", "star", "diamond", "blob")
COLOURS = {"red": (214, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 210), "yellow": (240, 210, 40),
           "white": (245, 245, 245), "black": (20, 20, 20), "pink": (245, 150, 190),
           "orange": (245, 140, 30), "purple": (130, 50, 170)}
BACKGROUNDS = {"gray": (128, 128, 128), "beige": (220, 205, 175), "light blue": (170, 200, 235),
               "dark green": (40, 80, 50), "salmon": (200, 104, 100), "tan": (216, 146, 92)}
ROUND_VIEW_P, TEXTURED_P = 0.4, 0.4  # shares of pictures with a round view / a textured background
NUMBER_WORDS = ("no", "one", "two", "three", "four")


@dataclass
class GeneralScene:
    background: str
    gradient: bool
    objects: list[dict] = field(default_factory=list)  # shape, colour, cell, x, y, r
    round_view: bool = False
    textured: bool = False


def sample_scene(rng: np.random.Generator) -> GeneralScene:
    """1-4 objects in distinct cells; no two share both shape and colour, so each can be named."""
    scene = GeneralScene(background=pick(rng, tuple(BACKGROUNDS)), gradient=bool(rng.random() < 0.5),
                         round_view=bool(rng.random() < ROUND_VIEW_P), textured=bool(rng.random() < TEXTURED_P))
    n = int(rng.integers(1, 5))
    shape_pool = sample_without_replacement(rng, SHAPES, int(rng.integers(1, 4)))  # repeats -> counting
    used: set[tuple[str, str]] = set()
    for cell in sample_without_replacement(rng, LOCATIONS, n):
        shape, colour = pick(rng, shape_pool), pick(rng, tuple(COLOURS))
        if (shape, colour) in used:
            continue
        used.add((shape, colour))
        r = float(rng.uniform(5.0, 8.0))
        # inside the round view when there is one (its radius is 30 units, as the endoscope's)
        p = point_in_cell(rng, cell, margin=r * 0.8, max_dist=29.0 - r if scene.round_view else None)
        if p is None:  # a big shape in a corner of the round view: leave the cell empty
            continue
        x, y = p
        scene.objects.append({"shape": shape, "colour": colour, "cell": cell, "x": x, "y": y, "r": r})
    if not scene.objects:  # every drawn cell was a corner that the round view cuts off
        scene.objects.append({"shape": pick(rng, shape_pool), "colour": pick(rng, tuple(COLOURS)),
                              "cell": "center", "x": 32.0, "y": 32.0, "r": 6.0})
    return scene


def render_scene(scene: GeneralScene, rng: np.random.Generator, size: int = 64) -> Image.Image:
    side = 2 * size
    base = np.asarray(BACKGROUNDS[scene.background], dtype=np.float32)
    pixels = gradient(side, base * 1.15, base * 0.8) if scene.gradient else np.broadcast_to(base, (side, side, 3))
    if scene.textured:  # soft grain and uneven light, as on mucosa
        pixels = pixels * (0.8 + 0.35 * smooth_noise(rng, side, 6) * (0.9 + 0.2 * smooth_noise(rng, side, 24)))[..., None]
    canvas = Canvas(pixels + 3.0 * rng.standard_normal((side, side, 3), dtype=np.float32), size)
    for obj in scene.objects:
        _draw_shape(canvas, obj, rng)
    if scene.round_view:
        canvas.set_array(canvas.array() * _round_mask(canvas.image.size[0])[..., None])
    return canvas.finish()


def _round_mask(side: int) -> np.ndarray:
    c = (side - 1) / 2
    yy, xx = np.mgrid[0:side, 0:side]
    dist = np.hypot(xx - c, yy - c) / (side / 2) * 32.0  # in 64-unit frame units
    return np.clip(30.5 - dist, 0.0, 1.0).astype(np.float32)


def _draw_shape(canvas: Canvas, obj: dict, rng: np.random.Generator) -> None:
    x, y, r, kind = obj["x"], obj["y"], obj["r"], obj["shape"]
    fill = COLOURS[obj["colour"]]
    outline = shade(fill, 0.55) if obj["colour"] != "black" else (90, 90, 90)
    if kind == "circle":
        canvas.circle(x, y, r, fill=fill, outline=outline, width=0.8)
        return
    if kind == "blob":  # an irregular round lump: radius wobbles around the outline
        angles = np.linspace(0, 2 * np.pi, 14, endpoint=False)
        radii = r * (0.75 + 0.25 * rng.random(14))
        canvas.polygon([(x + q * np.cos(a), y + q * np.sin(a)) for a, q in zip(angles, radii)],
                       fill=fill, outline=outline)
        return
    if kind == "square":
        pts = [(x - r * 0.85, y - r * 0.85), (x + r * 0.85, y - r * 0.85), (x + r * 0.85, y + r * 0.85),
               (x - r * 0.85, y + r * 0.85)]
    elif kind == "diamond":
        pts = [(x, y - r), (x + r * 0.8, y), (x, y + r), (x - r * 0.8, y)]
    elif kind == "triangle":
        pts = [(x + r * np.cos(a), y + r * np.sin(a)) for a in (-np.pi / 2, np.pi / 6, 5 * np.pi / 6)]
    else:  # five-pointed star
        pts = [(x + (r if k % 2 == 0 else 0.45 * r) * np.cos(-np.pi / 2 + k * np.pi / 5),
                y + (r if k % 2 == 0 else 0.45 * r) * np.sin(-np.pi / 2 + k * np.pi / 5)) for k in range(10)]
    canvas.polygon(pts, fill=fill, outline=outline)


# ---------------------------------------------------------------------------------------------
# Captions


def _object_phrase(obj: dict) -> str:
    return f"{article(obj['colour'])} {obj['colour']} {obj['shape']} in the {LOCATION_WORDS[obj['cell']]}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def caption(scene: GeneralScene, rng: np.random.Generator) -> str:
    """One of several phrasings, chosen per item."""
    objs = _join([_object_phrase(o) for o in scene.objects])
    bg = f"{'textured ' if scene.textured else ''}{scene.background}{' gradient' if scene.gradient else ''} background"
    n = len(scene.objects)
    forms = (
        f"{objs[0].upper() + objs[1:]} on a {bg}.",
        f"A {bg} with {objs}.",
        f"There {'is' if n == 1 else 'are'} {NUMBER_WORDS[n]} shape{'s' if n > 1 else ''}: {objs}.",
        f"A picture showing {objs}, on a {bg}.",
    )
    return pick(rng, forms) + (" Seen through a round view." if scene.round_view else "")


# ---------------------------------------------------------------------------------------------
# QA pairs: (template key, question, answer); options = all answers seen for the template


def _qa_candidates(scene: GeneralScene, rng: np.random.Generator) -> dict[str, tuple[str, str]]:
    objs = scene.objects
    shapes = [o["shape"] for o in objs]
    colours = [o["colour"] for o in objs]
    out: dict[str, tuple[str, str]] = {}
    unique_shapes = [s for s in SHAPES if shapes.count(s) == 1]
    if unique_shapes:
        s = pick(rng, unique_shapes)
        out["shape_color"] = (f"What color is the {s}?", colours[shapes.index(s)])
    unique_colours = [c for c in COLOURS if colours.count(c) == 1]
    if unique_colours:
        c = pick(rng, unique_colours)
        out["color_shape"] = (f"What shape is the {c} object?", shapes[colours.index(c)])
    s = pick(rng, SHAPES)
    out["count_shape"] = (f"How many {s}s are there?", str(shapes.count(s)))
    out["count_all"] = ("How many objects are there?", str(len(objs)))
    o = pick(rng, objs)
    out["location"] = (f"Where is the {o['colour']} {o['shape']}?", o["cell"])
    s = pick(rng, SHAPES)
    out["exists_shape"] = (f"Is there a {s}?", "yes" if s in shapes else "no")
    c = pick(rng, tuple(COLOURS))
    out["exists_color"] = (f"Is there anything {c}?", "yes" if c in colours else "no")
    out["background"] = ("What color is the background?", scene.background)
    return out


def general_item(
    scene: GeneralScene, rng: np.random.Generator, media: MediaRef, n_questions: int
) -> tuple[Caption, list[VQAExample]]:
    """The caption and ``n_questions`` QA pairs (options filled in later, over the whole set)."""
    meta = {"scene": asdict(scene)}
    cap = Caption(media_id=media.id, text=caption(scene, rng), model="synthetic", meta=meta)
    cands = _qa_candidates(scene, rng)
    keys = sample_without_replacement(rng, sorted(cands), n_questions)
    qa = [VQAExample(id=f"{media.id}-{k}", media=media, question=cands[k][0], answer=cands[k][1],
                     category="general", split="train", template=k, meta=meta) for k in keys]
    return cap, qa


# ---------------------------------------------------------------------------------------------
# Dense labels: what the vision tower learns to read before any language (leaml.pretrain.tower)

NO_OBJECT = "none"


def dense_labels() -> list:
    """Per picture: background, gradient, texture, round view, number of objects, and the shape and
    colour in each of the 9 cells (``none`` when empty), as ``LabelHead`` s of the scene dict."""
    from leaml.data.synth_common import LabelHead

    backgrounds, shapes, colours = list(BACKGROUNDS), [NO_OBJECT, *SHAPES], [NO_OBJECT, *COLOURS]

    def in_cell(cell: str, key: str, values: list[str]):
        def read(scene: dict) -> int:
            hit = [o[key] for o in scene["objects"] if o["cell"] == cell]
            return values.index(hit[0] if hit else NO_OBJECT)
        return read

    heads = [LabelHead("background", len(backgrounds), lambda s: backgrounds.index(s["background"])),
             LabelHead("gradient", 2, lambda s: int(s["gradient"])),
             LabelHead("textured", 2, lambda s: int(s.get("textured", False))),
             LabelHead("round_view", 2, lambda s: int(s.get("round_view", False))),
             LabelHead("count", 5, lambda s: len(s["objects"]))]
    for cell in LOCATIONS:
        heads += [LabelHead(f"{cell}/shape", len(shapes), in_cell(cell, "shape", shapes)),
                  LabelHead(f"{cell}/colour", len(colours), in_cell(cell, "colour", colours))]
    return heads
