"""The endo domain: a procedural stand-in for Kvasir-VQA.

(seed, item id) -> hidden scene attributes -> a 64x64 endoscopy-like RGB image, Kvasir-style
multiple-choice questions about it, and a noisy free-text caption (the teacher's "web knowledge").

Every answer is a function of what is drawn: the location of an object is the 9-cell its centre
is drawn in, sizes are radii, "easy to detect" is a fixed rule on drawn size and contrast, and
nothing is hidden under anything else (objects are placed apart, instruments never cross them).
The scene attributes ride along in ``VQAExample.meta`` for probes and debugging.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from leaml.data.synth_common import (
    GLYPH_CHARS, LOCATIONS, LOCATION_WORDS, UNITS, Canvas, Template, article, cell_of, draw_glyphs, far_enough,
    maybe, mix, pick, point_in_cell, shade, smooth_noise,
)
from leaml.records import MediaRef, VQAExample

PROCEDURES = ("colonoscopy", "gastroscopy", "capsule endoscopy")
FINDINGS = ("normal", "polyp", "esophagitis", "ulcerative colitis", "instrument")
# Mix of image kinds; together with the per-kind answer distributions below it sets how much the
# answer prior alone gets right (calibrated on the train split; see world.prior_only_accuracy).
FINDING_WEIGHTS = (0.20, 0.25, 0.155, 0.155, 0.24)
CATEGORY = {"normal": "normal", "polyp": "polyps", "esophagitis": "esophagitis",
            "ulcerative colitis": "colitis", "instrument": "instrument"}
ABNORMALITY_ANSWER = {"polyp": "polyp", "esophagitis": "oesophagitis", "ulcerative colitis": "ulcerative colitis"}

# Version of what this module draws and answers: part of the teacher's base-model key (its tower and
# captions learn from endo pictures), so a change here retrains the teacher instead of reusing a stale
# one. Bump it with any change to the pictures, the scenes or the answers.
RENDER_VERSION = 1

SIZE_RADIUS = {"<5mm": 2.5, "5-10mm": 4.5, "11-20mm": 7.5, ">20mm": 11.0}  # ~1.5x steps: tellable apart
SIZES = tuple(SIZE_RADIUS)
PARIS = ("paris ip", "paris is", "paris iia")  # pedunculated (stalk) / sessile (dome) / flat plaque
POLYP_RGB = {"pink": (246, 168, 180), "red": (176, 28, 40), "white": (240, 234, 222)}
LESION_RGB = {"red": (212, 22, 34), "white": (244, 240, 228), "yellow": (232, 208, 92)}
LANDMARK_RGB = {"pink": (248, 180, 190), "red": (150, 30, 38), "white": (240, 236, 226)}
INSTRUMENTS = ("biopsy forceps", "polyp snare", "injection needle", "tube")
LANDMARKS = ("z-line", "pylorus", "cecum")
TISSUE_RGB = {"colonoscopy": (200, 104, 100), "gastroscopy": (216, 146, 92),
              "capsule endoscopy": (172, 136, 64)}
VIEW_RADIUS = 30.0  # the round endoscope view; corners outside it are black


@dataclass
class EndoScene:
    """Hidden attributes of one image; positions are in the 64-unit frame."""

    procedure: str
    finding: str
    polyps: list[dict] = field(default_factory=list)  # main (largest) first: x, y, r, size, paris, colour, angle
    resection: list[float] | None = None  # x, y of a dyed resection site (the polyp is gone)
    lesion: dict | None = None  # esophagitis / colitis: x, y, grade, colour, angle
    instrument: str = "none"
    n_instruments: int = 0
    tip: list[float] | None = None  # x, y the location answer refers to (between the heads)
    heads: list[list[float]] = field(default_factory=list)  # x, y of each instrument's head
    entry_angles: list[float] = field(default_factory=list)
    landmark: str = "none"
    landmark_colour: str = "none"
    landmark_xy: list[float] | None = None
    green_box: bool = False
    text: str = ""

    @property
    def category(self) -> str:
        return CATEGORY[self.finding]


# ---------------------------------------------------------------------------------------------
# Sampling the hidden attributes


def sample_scene(rng: np.random.Generator) -> EndoScene:
    finding = pick(rng, FINDINGS, FINDING_WEIGHTS)
    landmark = _sample_landmark(rng, finding)
    scene = EndoScene(procedure=_sample_procedure(rng, finding, landmark), finding=finding)
    occupied: list[tuple[float, float, float]] = []
    _place_finding(rng, scene, occupied)
    if landmark != "none":
        _place_landmark(rng, scene, landmark, occupied)
    if finding == "instrument":
        _place_instruments(rng, scene, occupied)
    _place_extra_polyps(rng, scene, occupied)
    scene.green_box = bool(rng.random() < 0.5)
    scene.text = "".join(pick(rng, GLYPH_CHARS) for _ in range(3)) if rng.random() < 0.5 else ""
    return scene


def _sample_landmark(rng, finding: str) -> str:
    """Kvasir's normal images are the anatomical-landmark classes; a finding only sometimes shows
    one, and only one of its own organ (oesophagus/stomach for oesophagitis, colon for colitis)."""
    weights = {"normal": (0.2, 0.15, 0.45, 0.2), "esophagitis": (0.1, 0.05, 0.0, 0.85),
               "ulcerative colitis": (0.0, 0.0, 0.15, 0.85), "polyp": (0.03, 0.03, 0.09, 0.85)}
    return pick(rng, (*LANDMARKS, "none"), weights[finding]) if finding in weights else "none"


def _sample_procedure(rng, finding: str, landmark: str) -> str:
    # landmarks and findings fix the organ, hence the procedure; the rest is a draw
    if landmark in ("z-line", "pylorus") or finding == "esophagitis":
        return "gastroscopy"
    if landmark == "cecum":
        return "colonoscopy"
    weights = {"polyp": (0.75, 0.0, 0.25), "ulcerative colitis": (0.7, 0.0, 0.3),
               "instrument": (0.8, 0.2, 0.0), "normal": (0.5, 0.2, 0.3)}[finding]
    return pick(rng, PROCEDURES, weights)


def _free_spot(rng, radius: float, occupied, gap: float = 3.0, tries: int = 200) -> tuple[float, float] | None:
    """Centre for an object of ``radius`` in a random cell, inside the view and clear of others."""
    for _ in range(tries):
        cell = pick(rng, LOCATIONS)
        p = point_in_cell(rng, cell, margin=2.0, max_dist=VIEW_RADIUS - radius - 1.5, tries=8)
        if p is not None and far_enough(p, occupied, radius + gap):
            return p
    return None


def _need_spot(rng, radius: float, occupied) -> tuple[float, float]:
    p = _free_spot(rng, radius, occupied)
    if p is None:  # cannot happen for the first few objects of a scene; a bug if it does
        raise RuntimeError("no free spot for an object; the scene is too crowded")
    return p


def _place_finding(rng, scene: EndoScene, occupied) -> None:
    if scene.finding == "polyp" or (scene.finding == "instrument" and rng.random() < 0.4):
        _place_main_polyp(rng, scene, occupied)
    elif scene.finding == "instrument" and rng.random() < 0.5:  # polyp already removed
        x, y = _need_spot(rng, 6.0, occupied)
        scene.resection = [x, y]
        occupied.append((x, y, 6.0))
    elif scene.finding in ("esophagitis", "ulcerative colitis"):
        x, y = _need_spot(rng, 8.0, occupied)
        # erosions are red, or white where fibrin covers them; colitis ulcers white or yellowish
        colour = pick(rng, ("red", "white") if scene.finding == "esophagitis" else ("white", "yellow"))
        scene.lesion = {"x": x, "y": y, "grade": pick(rng, ("mild", "severe")), "colour": colour,
                        "angle": float(rng.uniform(0, np.pi))}
        occupied.append((x, y, 8.0))


def _place_main_polyp(rng, scene: EndoScene, occupied) -> None:
    size = pick(rng, SIZES)
    paris = pick(rng, PARIS[1:] if size == "<5mm" else PARIS)  # a 3 mm stalk would not show
    r = SIZE_RADIUS[size]
    x, y = _need_spot(rng, r + 1.0, occupied)
    c = UNITS / 2
    # a stalk leans towards the middle of the view, so it is never cut off by the rim
    angle = float(np.arctan2(c - y, c - x) + rng.uniform(-1.2, 1.2)) if (x, y) != (c, c) else 0.0
    scene.polyps = [{"x": x, "y": y, "r": r, "size": size, "paris": paris,
                     "colour": pick(rng, tuple(POLYP_RGB)), "angle": angle}]
    occupied.append((x, y, r + 1.0))
    if paris == "paris ip":
        occupied.append((x + (r + 3) * np.cos(angle), y + (r + 3) * np.sin(angle), 3.0))


def _place_extra_polyps(rng, scene: EndoScene, occupied) -> None:
    """1-2 more polyps, strictly smaller than the main one so 'the polyp' stays unambiguous."""
    if not scene.polyps or scene.polyps[0]["size"] == "<5mm":
        return
    main = scene.polyps[0]
    extra = pick(rng, (0, 1, 2), (0.5, 0.3, 0.2))
    smaller = SIZES[: SIZES.index(main["size"])]
    for _ in range(extra):
        size = pick(rng, smaller)
        r = SIZE_RADIUS[size]
        spot = _free_spot(rng, r, occupied, tries=40)
        if spot is None:  # no room left: the count is what is drawn
            return
        x, y = spot
        scene.polyps.append({**main, "x": x, "y": y, "r": r, "size": size, "paris": "paris is"})
        occupied.append((x, y, r))


def _place_landmark(rng, scene: EndoScene, landmark: str, occupied) -> None:
    spot = _free_spot(rng, 9.0, occupied, tries=60)
    if spot is None:  # a large finding fills the view: no landmark is drawn, so none is asked about
        return
    x, y = spot
    scene.landmark, scene.landmark_xy = landmark, [x, y]
    scene.landmark_colour = pick(rng, tuple(LANDMARK_RGB))
    occupied.append((x, y, 9.0))


def _place_instruments(rng, scene: EndoScene, occupied) -> None:
    """1-2 instruments of one kind, heads side by side in one cell, shafts clear of everything else."""
    scene.instrument = pick(rng, INSTRUMENTS)
    scene.n_instruments = pick(rng, (1, 2), (0.7, 0.3))
    for attempt in range(100):
        if attempt == 50:  # a large polyp leaves no room for two: draw (and count) one
            scene.n_instruments = 1
        reach = 6.0 if scene.n_instruments == 1 else 10.0
        tip = _free_spot(rng, reach, occupied, tries=20)
        if tip is None:
            continue
        heads = _heads(rng, tip, scene.n_instruments)
        angles = _entry_angles(rng, heads, occupied) if heads else None
        if angles:
            scene.tip, scene.heads, scene.entry_angles = list(tip), [list(h) for h in heads], angles
            occupied.append((tip[0], tip[1], reach))
            occupied.extend(_shaft_discs(heads, angles))
            return
    raise RuntimeError("could not place the instruments")


def _heads(rng, tip, n: int) -> list[tuple[float, float]] | None:
    """Two heads sit 8 units apart (so both can be counted), both in the cell the answer names."""
    if n == 1:
        return [tuple(tip)]
    a = rng.uniform(0, 2 * np.pi)
    dx, dy = 4.0 * np.cos(a), 4.0 * np.sin(a)
    heads = [(tip[0] + dx, tip[1] + dy), (tip[0] - dx, tip[1] - dy)]
    return heads if all(cell_of(*h) == cell_of(*tip) for h in heads) else None


def _entry_angles(rng, heads, occupied) -> list[float] | None:
    c = UNITS / 2
    for _ in range(30):
        # enter from the near side of the view, like a scope; a second tool from another channel
        first = np.arctan2(heads[0][1] - c, heads[0][0] - c) + rng.uniform(-1.0, 1.0)
        angles = [first] + [first + pick(rng, (-1, 1)) * rng.uniform(0.9, 1.5) for _ in heads[1:]]
        if all(far_enough(p[:2], occupied, p[2] + 2.0) for p in _shaft_discs(heads, angles)):
            return [float(a) for a in angles]
    return None


def _rim_point(angle: float) -> tuple[float, float]:
    c = UNITS / 2
    return c + (VIEW_RADIUS + 2) * np.cos(angle), c + (VIEW_RADIUS + 2) * np.sin(angle)


def _shaft_discs(heads, angles) -> list[tuple[float, float, float]]:
    """Discs covering each shaft (rim -> head), for keeping other objects out of its way."""
    discs = []
    for (hx, hy), a in zip(heads, angles):
        rx, ry = _rim_point(a)
        for t in np.linspace(0.0, 0.8, 10):  # the head's own disc is the caller's
            discs.append((rx + t * (hx - rx), ry + t * (hy - ry), 4.0))
    return discs


# ---------------------------------------------------------------------------------------------
# Questions: 18 Kvasir-style templates, each with where it applies and how it is answered


def _has_abnormality(s: EndoScene) -> bool:
    return bool(s.polyps) or s.lesion is not None


def _polyp_family(s: EndoScene) -> bool:
    return s.finding in ("polyp", "instrument")


def _abnormality(s: EndoScene) -> str:
    return "polyp" if s.polyps else ABNORMALITY_ANSWER[s.finding] if s.lesion else "none"


def _abnormality_xy(s: EndoScene) -> tuple[float, float]:
    obj = s.polyps[0] if s.polyps else s.lesion
    return obj["x"], obj["y"]


def is_easy(s: EndoScene) -> bool:
    """The visible-salience rule behind 'Is this finding easy to detect?'."""
    if s.polyps:
        p = s.polyps[0]
        return p["size"] in ("11-20mm", ">20mm") or (p["size"] == "5-10mm" and p["colour"] != "pink")
    return s.lesion is not None and s.lesion["grade"] == "severe"


def _removed(s: EndoScene) -> str:
    return "no" if s.polyps else "yes" if s.resection else "not relevant"


def _n_findings(s: EndoScene) -> str:
    return str(len(s.polyps) if s.polyps else int(s.lesion is not None))


TEMPLATES: dict[str, Template] = {
    "abnormality": Template("Are there any abnormalities in the image?", None, lambda s: True, _abnormality),
    "landmark": Template("Are there any anatomical landmarks in the image?", None, lambda s: True,
                         lambda s: s.landmark),
    "instrument": Template("Are there any instruments in the image?", None, _polyp_family,
                           lambda s: s.instrument),
    "polyps_removed": Template("Have all polyps been removed?", None, _polyp_family, _removed),
    "n_findings": Template("How many findings are present?", None, lambda s: True, _n_findings),
    # sic: Kvasir-VQA spells it this way, and models are evaluated on the data's text
    "n_instruments": Template("How many instrumnets are in the image?", None, _polyp_family,
                              lambda s: str(s.n_instruments)),
    "n_polyps": Template("How many polyps are in the image?", None, _polyp_family, lambda s: str(len(s.polyps))),
    "box_artefact": Template("Is there a green/black box artefact?", None, lambda s: True,
                             lambda s: "yes" if s.green_box else "no"),
    "text": Template("Is there text?", None, lambda s: True, lambda s: "yes" if s.text else "no"),
    "easy": Template("Is this finding easy to detect?", None, _has_abnormality, lambda s: "yes" if is_easy(s) else "no"),
    "abnormality_color": Template("What color is the abnormality?", None, _has_abnormality,
                                  lambda s: s.polyps[0]["colour"] if s.polyps else s.lesion["colour"]),
    "landmark_color": Template("What color is the anatomical landmark?", None, lambda s: s.landmark != "none",
                               lambda s: s.landmark_colour),
    "polyp_size": Template("What is the size of the polyp?", None, _polyp_family,
                           lambda s: s.polyps[0]["size"] if s.polyps else "none"),
    "polyp_type": Template("What type of polyp is present?", None, _polyp_family,
                           lambda s: s.polyps[0]["paris"] if s.polyps else "none"),
    "procedure": Template("What type of procedure is the image taken from?", None, lambda s: True,
                          lambda s: s.procedure),
    "abnormality_location": Template("Where in the image is the abnormality?", None, _has_abnormality,
                                     lambda s: cell_of(*_abnormality_xy(s))),
    "landmark_location": Template("Where in the image is the anatomical landmark?", None,
                                  lambda s: s.landmark != "none", lambda s: cell_of(*s.landmark_xy)),
    "instrument_location": Template("Where in the image is the instrument?", None, lambda s: s.n_instruments > 0,
                                    lambda s: cell_of(*s.tip)),
}


# Templates about the finding itself are asked more often than the ones every image gets (is there
# text, which procedure): annotators ask about what is in the image. This also sets how much the
# answer prior alone gets right (calibrated on the train split, see world.prior_only_accuracy).
SPECIFIC = frozenset(k for k, t in TEMPLATES.items() if not t.applies(EndoScene("colonoscopy", "normal")))
SPECIFIC_WEIGHT = 4.0


def endo_questions(
    scene: EndoScene, rng: np.random.Generator, media: MediaRef, n_range: tuple[int, int], split: str
) -> list[VQAExample]:
    """A few questions (``n_range`` inclusive) drawn from the templates that apply to the scene.

    Options are left empty here: they are all answers seen for the template across the dataset,
    which :func:`leaml.data.synth_common.with_options` fills in once every item exists.
    """
    keys = [k for k, t in TEMPLATES.items() if t.applies(scene)]
    n = min(len(keys), int(rng.integers(n_range[0], n_range[1] + 1)))
    weights = np.array([SPECIFIC_WEIGHT if k in SPECIFIC else 1.0 for k in keys])
    picked = sorted(int(i) for i in rng.choice(len(keys), size=n, replace=False, p=weights / weights.sum()))
    meta = {"scene": asdict(scene), "easy": is_easy(scene)}
    return [
        VQAExample(id=f"{media.id}-{keys[i]}", media=media, question=TEMPLATES[keys[i]].question,
                   answer=TEMPLATES[keys[i]].answer(scene), category=scene.category, split=split,
                   template=keys[i], meta=meta)
        for i in picked
    ]


# ---------------------------------------------------------------------------------------------
# Rendering


def render_scene(scene: EndoScene, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """Tissue, vessels, landmark, lesion, instruments, polyps, then the scope's vignette and overlays."""
    tissue = np.asarray(TISSUE_RGB[scene.procedure], dtype=np.float32) + rng.uniform(-8, 8, 3)
    canvas = Canvas(_tissue(rng, tissue, 2 * size, colitis=scene.finding == "ulcerative colitis"), size)
    if scene.finding != "ulcerative colitis":  # colitis: the vessel pattern is lost
        _draw_vessels(canvas, rng, tissue)
    _draw_highlights(canvas, rng)
    if scene.landmark != "none":
        _draw_landmark(canvas, rng, scene, tissue)
    if scene.lesion is not None:
        _draw_lesion(canvas, rng, scene.finding, scene.lesion)
    if scene.resection is not None:
        _draw_resection(canvas, rng, *scene.resection)
    for head, angle in zip(scene.heads, scene.entry_angles):
        _draw_instrument(canvas, scene.instrument, head, angle)
    for p in reversed(scene.polyps):
        _draw_polyp(canvas, p, tissue)
    canvas.set_array(canvas.array() * _vignette(canvas.image.size[0])[..., None])
    if scene.green_box:  # the scope-position box Kvasir shows in the lower-left corner
        canvas.rect(0.5, 53.0, 11.0, 63.5, fill=(36, 150, 60))
        canvas.rect(2.5, 55.0, 9.0, 61.5, outline=(18, 90, 34))
    if scene.text:
        draw_glyphs(canvas, scene.text, 2.0, 2.0, fill=(220, 220, 220))
    return canvas.finish()


def _tissue(rng, tissue: np.ndarray, side: int, colitis: bool) -> np.ndarray:
    light = 0.72 + 0.42 * smooth_noise(rng, side, 5)  # uneven illumination
    grain = smooth_noise(rng, side, 28 if not colitis else 40)
    colour = tissue * (np.array([1.06, 0.86, 0.86]) if colitis else 1.0)
    texture = 0.93 + (0.14 if not colitis else 0.3) * grain  # colitis: granular, friable mucosa
    return colour[None, None, :] * (light * texture)[..., None]


def _draw_vessels(canvas: Canvas, rng, tissue) -> None:
    colour = mix(shade(tissue, 0.62), (120, 10, 20), 0.35)
    for _ in range(int(rng.integers(4, 8))):
        x, y = rng.uniform(6, 58, 2)
        heading = rng.uniform(0, 2 * np.pi)
        pts = [(x, y)]
        for _ in range(6):
            heading += rng.normal(0, 0.6)
            x, y = x + 3.5 * np.cos(heading), y + 3.5 * np.sin(heading)
            pts.append((x, y))
        canvas.line(pts, fill=colour, width=float(rng.uniform(0.5, 0.9)))


def _draw_highlights(canvas: Canvas, rng) -> None:
    for _ in range(int(rng.integers(1, 4))):  # specular glints of the light source on wet mucosa
        x, y = rng.uniform(12, 52, 2)
        canvas.ellipse(x, y, 0.9, 0.5, fill=(250, 248, 240))


@functools.lru_cache(maxsize=4)
def _vignette(side: int) -> np.ndarray:
    c = (side - 1) / 2
    yy, xx = np.mgrid[0:side, 0:side]
    d = np.hypot(xx - c, yy - c) / side * UNITS
    edge = np.clip((VIEW_RADIUS - d) / 1.5, 0.0, 1.0)  # soft rim of the circular view
    return (edge * (1.0 - 0.35 * (d / VIEW_RADIUS) ** 2)).astype(np.float32)


def _draw_landmark(canvas: Canvas, rng, scene: EndoScene, tissue) -> None:
    x, y = scene.landmark_xy
    colour = LANDMARK_RGB[scene.landmark_colour]
    lumen = (40, 14, 14)
    if scene.landmark == "z-line":  # jagged squamo-columnar ring around the dark lumen
        k = 16
        pts = [(x + (8.5 + rng.uniform(-1.6, 1.6)) * np.cos(2 * np.pi * i / k),
                y + (8.5 + rng.uniform(-1.6, 1.6)) * np.sin(2 * np.pi * i / k)) for i in range(k)]
        canvas.polygon(pts, fill=colour, outline=shade(colour, 0.7))
        canvas.circle(x, y, 4.5, fill=shade(tissue, 0.5))
        canvas.circle(x, y, 2.5, fill=lumen)
    elif scene.landmark == "pylorus":  # smooth round sphincter with a dark opening
        canvas.circle(x, y, 8.0, fill=colour, outline=shade(colour, 0.65), width=1.2)
        canvas.circle(x, y, 3.5, fill=lumen)
    else:  # cecum: three converging folds (the "crow's foot") with the appendiceal orifice
        a0 = rng.uniform(0, 2 * np.pi)
        for k in range(3):
            a = a0 + 2 * np.pi * k / 3
            canvas.line([(x, y), (x + 8.5 * np.cos(a), y + 8.5 * np.sin(a))], fill=colour, width=2.6)
        canvas.circle(x, y, 2.0, fill=lumen)


def _draw_lesion(canvas: Canvas, rng, finding: str, lesion: dict) -> None:
    x, y, severe = lesion["x"], lesion["y"], lesion["grade"] == "severe"
    colour = LESION_RGB[lesion["colour"]]
    if finding == "esophagitis":  # red linear erosions (streaks), more, longer, wider when severe
        a = lesion["angle"]
        d, n = np.array([np.cos(a), np.sin(a)]), 4 if severe else 2
        perp, half = np.array([-d[1], d[0]]), (7.0 if severe else 4.0)
        for k in range(n):
            c = np.array([x, y]) + perp * (k - (n - 1) / 2) * 3.2
            canvas.line([tuple(c - d * half), tuple(c + d * half)], fill=colour, width=1.8 if severe else 1.1)
        return
    n, r = (6, 2.6) if severe else (3, 1.7)  # colitis: mottled fibrin-covered ulcer patches
    for k in range(n):
        a, dist = 2 * np.pi * k / n + rng.uniform(-0.3, 0.3), (rng.uniform(2.0, 6.0) if n > 1 else 0)
        px, py = x + dist * np.cos(a), y + dist * np.sin(a)
        canvas.ellipse(px, py, r * rng.uniform(0.8, 1.2), r * rng.uniform(0.6, 1.0), fill=colour)


def _draw_resection(canvas: Canvas, rng, x: float, y: float) -> None:
    """Blue-dyed resection site: where a polyp was removed."""
    canvas.ellipse(x, y, 5.5, 4.5, fill=(60, 88, 186))
    canvas.ellipse(x + rng.uniform(-1, 1), y, 2.2, 1.8, fill=(226, 214, 210))


def _draw_instrument(canvas: Canvas, kind: str, tip, angle: float) -> None:
    rim = np.array(_rim_point(angle))
    head = np.array(tip, dtype=float)
    d = (head - rim) / np.linalg.norm(head - rim)
    perp = np.array([-d[1], d[0]])
    if kind == "tube":  # wide dark plastic tube, its open end ringed in grey
        canvas.line([tuple(rim), tuple(head)], fill=(48, 52, 58), width=7.0)
        canvas.circle(*head, 3.5, fill=(48, 52, 58), outline=(150, 156, 164), width=1.0)
        canvas.line([tuple(rim + perp * 1.5), tuple(head - d * 3.0 + perp * 1.5)], fill=(110, 116, 124), width=1.0)
    elif kind == "biopsy forceps":  # metal shaft, two open jaws with cups
        neck = head - d * 3.0
        canvas.line([tuple(rim), tuple(neck)], fill=(168, 170, 176), width=3.6)
        canvas.line([tuple(rim), tuple(neck)], fill=(222, 224, 228), width=1.0)
        for side in (-1, 1):
            jaw = neck + 7.0 * (d * np.cos(0.55) + side * perp * np.sin(0.55))
            canvas.line([tuple(neck), tuple(jaw)], fill=(130, 132, 138), width=2.4)
            canvas.circle(*jaw, 2.0, fill=(150, 152, 158))
    elif kind == "polyp snare":  # thin white sheath ending in a wire loop around the head point
        base = head - d * 5.5
        canvas.line([tuple(rim), tuple(base)], fill=(214, 214, 206), width=2.6)
        loop = [tuple(head + 5.5 * np.cos(t) * d + 4.0 * np.sin(t) * perp) for t in np.linspace(0, 2 * np.pi, 25)]
        canvas.line(loop, fill=(240, 240, 240), width=1.1)
    else:  # injection needle: blue catheter, a white collar, a bright needle
        base = head - d * 2.5
        canvas.line([tuple(rim), tuple(base)], fill=(70, 110, 214), width=3.2)
        canvas.line([tuple(base - d * 1.0), tuple(base)], fill=(236, 236, 240), width=3.4)
        canvas.line([tuple(base), tuple(head + d * 2.5)], fill=(246, 246, 250), width=1.1)


def _draw_polyp(canvas: Canvas, p: dict, tissue) -> None:
    x, y, r = p["x"], p["y"], p["r"]
    colour = POLYP_RGB[p["colour"]]
    if p["paris"] == "paris iia":  # flat plaque: wide and low, a pale rim, no shadow or glint
        body = mix(colour, tissue, 0.25)
        canvas.ellipse(x, y, r, 0.5 * r, fill=body, outline=shade(body, 1.25), width=0.8)
        return
    if p["paris"] == "paris ip":  # pedunculated: a darker stalk out to one side under the head
        end = (x + (r + 5.0) * np.cos(p["angle"]), y + (r + 5.0) * np.sin(p["angle"]))
        stalk = shade(mix(colour, tissue, 0.4), 0.8)
        width = max(2.0, 0.6 * r)
        canvas.line([(x, y), end], fill=shade(stalk, 0.65), width=width + 1.0)
        canvas.line([(x, y), end], fill=stalk, width=width)
    canvas.circle(x + 0.6, y + 0.8, r, fill=shade(tissue, 0.55))  # shadow: a dome stands out
    canvas.circle(x, y, r, fill=colour, outline=shade(colour, 0.75), width=0.6)
    canvas.circle(x - 0.35 * r, y - 0.35 * r, max(0.6, 0.2 * r), fill=(252, 250, 246))


# ---------------------------------------------------------------------------------------------
# Teacher captions: what a big general model might say about the image (partial, sometimes wrong)

_SIZE_WORDS = {"<5mm": "diminutive", "5-10mm": "small", "11-20mm": "medium-sized", ">20mm": "large"}
_PARIS_WORDS = {"paris ip": "pedunculated", "paris is": "sessile", "paris iia": "flat"}
_COUNT_WORDS = {2: "two", 3: "three"}


def _polyp_phrase(rng, s: EndoScene, mp: float, wp: float) -> str:
    p = s.polyps[0]
    size = maybe(rng, p["size"], SIZES, mp, wp)
    paris = maybe(rng, p["paris"], PARIS, mp, wp)
    words = [maybe(rng, p["colour"], tuple(POLYP_RGB), mp, wp)]
    if size:  # sometimes in millimetres (as the labels write it), sometimes in words
        words.insert(0, size if rng.random() < 0.5 else _SIZE_WORDS[size])
    if paris:
        words.append(_PARIS_WORDS[paris] if rng.random() < 0.5 else f"{_PARIS_WORDS[paris]} ({paris})")
    n = int(maybe(rng, str(len(s.polyps)), ("1", "2", "3"), mp, wp) or 1)
    head = " ".join(w for w in words if w)
    count = article(head or "polyp") if n == 1 else _COUNT_WORDS[n]
    return f"{count} {head} polyp{'s' if n > 1 else ''}".replace("  ", " ")


def _finding_phrase(rng, s: EndoScene, mp: float, wp: float) -> str | None:
    kinds = ("polyp", "oesophagitis", "ulcerative colitis", "none")
    kind = maybe(rng, _abnormality(s), kinds, mp, wp)
    if kind is None:
        return None
    if kind == "polyp":
        return _polyp_phrase(rng, s, mp, wp) if s.polyps else "a polyp"
    if kind == "none":
        return "normal-looking mucosa"
    colour = maybe(rng, s.lesion["colour"] if s.lesion else "red", tuple(LESION_RGB), mp, wp)
    grade = maybe(rng, s.lesion["grade"] if s.lesion else "mild", ("mild", "severe"), mp, wp)
    what = "linear erosions" if kind == "oesophagitis" else "ulcerated patches"
    desc = " ".join(w for w in (grade, colour, what) if w)
    return f"{desc} consistent with {kind}"


def _where(rng, xy, mp: float, wp: float) -> str:
    cell = maybe(rng, cell_of(*xy), LOCATIONS, mp, wp) if xy is not None else None
    return f" in the {LOCATION_WORDS[cell]}" if cell else ""


def noisy_caption(attrs: dict, rng: np.random.Generator, mention_p: float = 0.7, wrong_p: float = 0.2) -> str:
    """A free-text caption of a scene (``asdict(EndoScene)``): each fact is mentioned with
    ``mention_p`` and, when mentioned, replaced by a wrong value with ``wrong_p``."""
    s = EndoScene(**attrs)
    mp, wp = mention_p, wrong_p
    procedure = maybe(rng, s.procedure, PROCEDURES, mp, wp)
    parts = [f"{procedure} view" if procedure else "endoscopic view"]
    finding = _finding_phrase(rng, s, mp, wp)
    if finding:
        xy = _abnormality_xy(s) if _has_abnormality(s) else None
        parts[0] += f" of {finding}{_where(rng, xy, mp, wp) if 'normal' not in finding else ''}"
    parts += [p for p in (_landmark_phrase(rng, s, mp, wp), _instrument_phrase(rng, s, mp, wp)) if p]
    parts += _artefact_phrases(rng, s, mp, wp)
    return "; ".join(parts) + "."


def _landmark_phrase(rng, s: EndoScene, mp: float, wp: float) -> str | None:
    name = maybe(rng, s.landmark, (*LANDMARKS, "none"), mp, wp)
    if not name or name == "none":
        return None
    colour = maybe(rng, s.landmark_colour, tuple(LANDMARK_RGB), mp, wp) if s.landmark != "none" else None
    return f"the {colour + ' ' if colour else ''}{name} is visible{_where(rng, s.landmark_xy, mp, wp)}"


def _instrument_phrase(rng, s: EndoScene, mp: float, wp: float) -> str | None:
    kind = maybe(rng, s.instrument, (*INSTRUMENTS, "none"), mp, wp)
    if not kind or kind == "none":
        return None
    n = int(maybe(rng, str(max(1, s.n_instruments)), ("1", "2"), mp, wp) or 1)
    name = f"{'two' if n == 2 else article(kind)} {kind}{'s' if n == 2 and not kind.endswith('s') else ''}"
    return f"{name}{_where(rng, s.tip, mp, wp)}"


def _artefact_phrases(rng, s: EndoScene, mp: float, wp: float) -> list[str]:
    out = []
    box = maybe(rng, "yes" if s.green_box else "no", ("yes", "no"), mp, wp)
    if box == "yes":
        out.append("green box artefact")
    text = maybe(rng, "yes" if s.text else "no", ("yes", "no"), mp, wp)
    if text == "yes":
        out.append("text overlay")
    return out


# ---------------------------------------------------------------------------------------------
# Dense labels of a scene: what the teacher's tower learns from its noisy endo corpus
# (leaml.pretrain.tower); the student never sees these.


def dense_labels() -> list:
    """Finding, procedure, landmark, instrument, counts, main polyp's size / type / colour,
    abnormality cell, artefacts, as ``LabelHead`` s of the scene dict (``asdict(EndoScene)``)."""
    from leaml.data.synth_common import LOCATIONS
    from leaml.data.synth_common import LabelHead

    def of(values, get):
        values = list(values)
        return len(values), lambda d: values.index(get(d))

    def main_polyp(key, values):
        return of(("none", *values), lambda d: d["polyps"][0][key] if d["polyps"] else "none")

    def abnormality_cell(d):
        obj = d["polyps"][0] if d["polyps"] else d["lesion"]
        return cell_of(obj["x"], obj["y"]) if obj else "none"

    specs = {
        "finding": of(FINDINGS, lambda d: d["finding"]),
        "procedure": of(PROCEDURES, lambda d: d["procedure"]),
        "landmark": of(("none", *LANDMARKS), lambda d: d["landmark"]),
        "instrument": of(("none", *INSTRUMENTS), lambda d: d["instrument"]),
        "n_instruments": of(range(4), lambda d: min(3, d["n_instruments"])),
        "n_polyps": of(range(5), lambda d: min(4, len(d["polyps"]))),
        "polyp_size": main_polyp("size", SIZES),
        "polyp_type": main_polyp("paris", PARIS),
        "polyp_colour": main_polyp("colour", tuple(POLYP_RGB)),
        "abnormality_cell": of(("none", *LOCATIONS), abnormality_cell),
        "green_box": of((False, True), lambda d: d["green_box"]),
        "text": of((False, True), lambda d: bool(d["text"])),
    }
    return [LabelHead(name, n, read) for name, (n, read) in specs.items()]
