"""Shared pieces of the synthetic world: seeded RNG, 9-cell locations, a drawing canvas, options.

(seed, item id, stage) -> ``numpy.random.Generator``; geometry in a fixed 64-unit frame -> an RGB
PIL image of any size; (template, answer) pairs -> the sorted option list per template.

Every item draws from its own RNG, seeded by a stable hash of ``f"{seed}:{item_id}:{stage}"``, so
an item's pixels and questions do not depend on how many items came before it or on the process
that made it (the lerobot annotation pipeline's habit). Python's ``hash`` is salted per process, so
sha256 it is.
"""
from __future__ import annotations

import hashlib
import io
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence, TypeVar

import numpy as np
from PIL import Image, ImageDraw

from leaml.records import VQAExample

T = TypeVar("T")
UNITS = 64.0  # every drawing coordinate is in a 64 x 64 frame, whatever the output size

# The 9 cells, row-major; the spelling follows Kvasir-VQA's location answers.
LOCATIONS: tuple[str, ...] = (
    "upper-left", "upper-center", "upper-right",
    "center-left", "center", "center-right",
    "lower-left", "lower-center", "lower-right",
)
LOCATION_WORDS = {loc: loc.replace("-", " ") for loc in LOCATIONS}  # for free text


def article(word: str) -> str:
    """"an" before a vowel, else "a" (good enough for our vocabulary)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def rng_for(seed: int, item_id: str, stage: str) -> np.random.Generator:
    """A generator that depends only on (seed, item id, stage)."""
    digest = hashlib.sha256(f"{seed}:{item_id}:{stage}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def pick(rng: np.random.Generator, items: Sequence[T], p: Sequence[float] | None = None) -> T:
    """One element as its own Python type (``rng.choice`` is slower and hands back numpy scalars)."""
    if p is None:
        return items[int(rng.integers(len(items)))]
    u, acc = float(rng.random()) * sum(p), 0.0
    for item, w in zip(items, p):
        acc += w
        if u < acc:
            return item
    return items[-1]


def sample_without_replacement(rng: np.random.Generator, items: Sequence[T], k: int) -> list[T]:
    """``k`` distinct elements (all of them if fewer), kept in their original order."""
    k = min(k, len(items))
    idx = sorted(int(i) for i in rng.choice(len(items), size=k, replace=False))
    return [items[i] for i in idx]


# ---------------------------------------------------------------------------------------------
# 9-cell geometry


def cell_of(x: float, y: float) -> str:
    col = min(2, max(0, int(x // (UNITS / 3))))
    row = min(2, max(0, int(y // (UNITS / 3))))
    return LOCATIONS[3 * row + col]


def cell_bounds(cell: str) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of a cell in the 64-unit frame."""
    i = LOCATIONS.index(cell)
    w = UNITS / 3
    return (i % 3) * w, (i // 3) * w, (i % 3 + 1) * w, (i // 3 + 1) * w


def point_in_cell(
    rng: np.random.Generator, cell: str, margin: float, max_dist: float | None = None, tries: int = 60
) -> tuple[float, float] | None:
    """A point at least ``margin`` inside ``cell`` and within ``max_dist`` of the frame centre.

    Returns None when the cell cannot hold it (a big object in a corner of a round endoscope view):
    callers pick another cell, so the location answer always names the cell the object is drawn in.
    """
    x0, y0, x1, y1 = cell_bounds(cell)
    if x1 - x0 <= 2 * margin:
        return None
    c = UNITS / 2
    for _ in range(tries):
        x, y = rng.uniform(x0 + margin, x1 - margin), rng.uniform(y0 + margin, y1 - margin)
        if max_dist is None or np.hypot(x - c, y - c) <= max_dist:
            return float(x), float(y)
    return None


def far_enough(p: tuple[float, float], others: Iterable[tuple[float, float, float]], gap: float) -> bool:
    """True when ``p`` is at least ``gap`` away from every (x, y, radius) in ``others``."""
    return all(np.hypot(p[0] - x, p[1] - y) >= r + gap for x, y, r in others)


# ---------------------------------------------------------------------------------------------
# Drawing


class Canvas:
    """PIL drawing in 64-unit coordinates on a 2x supersampled image, box-filtered down at the end.

    Supersampling gives soft edges (closer to a camera than hard pixel art) without any per-shape
    antialiasing code.
    """

    def __init__(self, pixels: np.ndarray, out_size: int):
        self.out_size = out_size
        self.scale = 2 * out_size / UNITS
        side = int(round(UNITS * self.scale))
        img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
        self.image = img.resize((side, side), Image.BILINEAR) if img.size[0] != side else img
        self.draw = ImageDraw.Draw(self.image)

    def _p(self, *xy: float) -> list[float]:
        return [v * self.scale for v in xy]

    def circle(self, x, y, r, fill=None, outline=None, width: float = 1.0) -> None:
        self.ellipse(x, y, r, r, fill, outline, width)

    def ellipse(self, x, y, rx, ry, fill=None, outline=None, width: float = 1.0) -> None:
        w = max(1, int(round(width * self.scale)))
        self.draw.ellipse(self._p(x - rx, y - ry, x + rx, y + ry), fill=fill, outline=outline, width=w)

    def line(self, points: Sequence[tuple[float, float]], fill, width: float = 1.0) -> None:
        pts = [tuple(self._p(*pt)) for pt in points]
        self.draw.line(pts, fill=fill, width=max(1, int(round(width * self.scale))), joint="curve")

    def polygon(self, points: Sequence[tuple[float, float]], fill=None, outline=None) -> None:
        self.draw.polygon([tuple(self._p(*pt)) for pt in points], fill=fill, outline=outline)

    def rect(self, x0, y0, x1, y1, fill=None, outline=None) -> None:
        self.draw.rectangle(self._p(x0, y0, x1, y1), fill=fill, outline=outline)

    def array(self) -> np.ndarray:
        return np.asarray(self.image, dtype=np.float32)

    def set_array(self, pixels: np.ndarray) -> None:
        self.image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
        self.draw = ImageDraw.Draw(self.image)

    def finish(self) -> Image.Image:
        return self.image.resize((self.out_size, self.out_size), Image.BOX)


def smooth_noise(rng: np.random.Generator, side: int, grid: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a random ``grid`` x ``grid`` field upsampled bicubically."""
    field = Image.fromarray(rng.random((grid, grid)).astype(np.float32), "F")
    out = np.asarray(field.resize((side, side), Image.BICUBIC), dtype=np.float32)
    return np.clip(out, 0.0, 1.0)


def gradient(side: int, top: Sequence[float], bottom: Sequence[float]) -> np.ndarray:
    """A vertical two-colour gradient, (side, side, 3) float."""
    t = np.linspace(0.0, 1.0, side, dtype=np.float32)[:, None, None]
    return np.broadcast_to((1 - t) * np.asarray(top) + t * np.asarray(bottom), (side, side, 3)).copy()


def _byte(v: float) -> int:
    return int(min(255.0, max(0.0, v)))  # plain Python: np.clip on 3 numbers costs more than drawing


def shade(colour: Sequence[float], factor: float) -> tuple[int, int, int]:
    """A colour scaled by ``factor`` (darker < 1 < lighter), clipped to bytes."""
    return tuple(_byte(c * factor) for c in colour)  # type: ignore[return-value]


def mix(a: Sequence[float], b: Sequence[float], t: float) -> tuple[int, int, int]:
    """``(1 - t) * a + t * b`` as a byte colour."""
    return tuple(_byte((1 - t) * x + t * y) for x, y in zip(a, b))  # type: ignore[return-value]


# 3 x 5 pixel glyphs, enough to look like an on-screen overlay (patient id, time) without a font file.
_GLYPHS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "7": "111001010010010", "8": "111101111101111",
    "A": "010101111101101", "E": "111100111100111", "H": "101101111101101", "P": "111101111100100",
    "T": "111010010010010", ":": "000010000010000",
}
GLYPH_CHARS = "".join(sorted(_GLYPHS))


def draw_glyphs(canvas: Canvas, text: str, x: float, y: float, fill) -> None:
    """Draw ``text`` with the 3 x 5 pixel font, one unit per glyph pixel, top-left at (x, y)."""
    for k, ch in enumerate(text):
        bits = _GLYPHS.get(ch)
        if bits is None:
            continue
        for i, bit in enumerate(bits):
            if bit == "1":
                gx, gy = x + 4 * k + i % 3, y + i // 3
                canvas.rect(gx, gy, gx + 1, gy + 1, fill=fill)


COMPRESS_LEVEL = 1  # zlib level: PIL's default 6 takes 2.7x the time for files ~3% smaller



def png_bytes(image: Image.Image) -> bytes:
    """PNG bytes; PIL's zlib output is deterministic, so the same pixels give the same file."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=COMPRESS_LEVEL)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Options: all answers seen for a template, as the paper defines the multiple-choice set


def _option_key(answer: str) -> tuple:
    # numbers sort as numbers ("2" before "10"), everything else alphabetically after them
    return (0, int(answer), "") if answer.isdigit() else (1, 0, answer)


def options_by_template(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """(template, answer) pairs -> template -> sorted distinct answers."""
    seen: dict[str, set[str]] = defaultdict(set)
    for template, answer in pairs:
        seen[template].add(answer)
    return {t: sorted(a, key=_option_key) for t, a in sorted(seen.items())}


def with_options(examples: Sequence[VQAExample], options: dict[str, list[str]]) -> list[VQAExample]:
    """Each example with its template's option list filled in."""
    return [ex.model_copy(update={"options": list(options[ex.template])}) for ex in examples]


@dataclass(frozen=True)
class Template:
    """A question template: where it applies to a scene and how the scene answers it."""

    question: str
    category: str | None
    """The question's own category (sport: its difficulty level); None: the scene's (endo: the finding)."""
    applies: Callable[[Any], bool]
    answer: Callable[[Any], str]


def maybe(rng, true: str, choices, mention_p: float, wrong_p: float) -> str | None:
    """A noisy caption's word for a fact: None (not mentioned), the true value, or, with ``wrong_p``,
    another of ``choices``."""
    if rng.random() >= mention_p:
        return None
    others = [c for c in choices if c != true]
    return pick(rng, others) if others and rng.random() < wrong_p else true


@dataclass(frozen=True)
class LabelHead:
    """One dense label of a scene: ``classes`` values, ``read(scene) -> index`` (-1: not labeled)."""

    name: str
    classes: int
    read: Callable[[dict], int]
