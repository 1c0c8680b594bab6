"""The sport domain: a procedural stand-in for SPORTU (sports video, easy / medium / hard questions).

(seed, clip id) -> hidden events (:class:`SportScene`) -> ``n_frames`` RGB frames of a top-down
pitch with two teams of coloured players and a ball -> SPORTU-style multiple-choice questions and
a noisy caption (the teacher's "web knowledge").

Every clip holds one *play* on an 8-beat event clock (frames are sampled from the beats):

- ``duel``: the ball carrier A meets a defender D. Each duel belongs to one of four *families*
  (how D comes in: from behind, from the side, into the path, alongside), and within a family it is
  either a foul or its no-foul mirror, with equal odds and the same end state:

  ========= ====================================== ===================================================
  family    foul                                   no-foul mirror (answer "none")
  ========= ====================================== ===================================================
  behind    push: D runs into A, A is shoved away  shield: D closes in, A runs on at his own pace
  side      trip: contact, *then* A falls          dive: A falls, D arrives *after* (no contact first)
  front     block: D still moving at contact       set: D stood still in the path before A ran in
  alongside elbow: A swerves in, D knocked away    shoulder: both lean in, drift apart a little
  ========= ====================================== ===================================================

  So any single frame shows a family at best (who is down, how close, where D stands), never
  whether it was a foul: that lives in the order and speed of the motion (:func:`referee` reads
  it back from the tracks, and :func:`frame_view` is what one frame shows).
- ``pass``: P passes towards teammate R while opponent O runs at the lane. O reaches the lane on
  the same beat either way; whether the ball stopped at O (intercepted) or went past to R
  (completed) is only told by comparing who had the ball before and after: the end frames look the
  same (holder + an opponent closing in) in both cases.

Easy questions are recognition (sport, counting, colours), medium ones need roles and tactics
(possession at the start or end, which way a team attacks: its goalkeeper stands in front of the
goal it defends, the carrier's role by the third of the pitch he is in), hard ones are the rules
above. Positions are in a 64-unit frame; the scene rides along in ``VQAExample.meta``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
from PIL import Image

from leaml.data.synth_common import Canvas, mix, pick, sample_without_replacement, shade, smooth_noise
from leaml.records import MediaRef, VQAExample

BEATS = 8  # the event clock; a clip of n_frames >= BEATS samples it evenly
SPORTS = ("soccer", "basketball", "hockey")
TEAM_RGB = {"red": (214, 38, 38), "blue": (36, 72, 214), "yellow": (246, 214, 30),
            "purple": (128, 44, 170), "cyan": (20, 186, 204)}
FOUL_KINDS = ("push", "trip", "block", "elbow", "none")
FAMILIES = {"behind": ("push", "shield"), "side": ("trip", "dive"), "front": ("block", "set"),
            "alongside": ("elbow", "shoulder")}
PASS_OUTCOMES = ("completed", "intercepted")
VARIANTS = (*(v for vs in FAMILIES.values() for v in vs), *PASS_OUTCOMES)
ROLES = ("defender", "midfielder", "forward")

R_PLAYER = 2.6  # body radius; two players touch when their centres are TOUCH apart
TOUCH = 2 * R_PLAYER
PITCH = (3.0, 8.0, 61.0, 56.0)  # x0, y0, x1, y1 of the touchlines
FIELD_ZONE = (13.0, 13.0, 51.0, 51.0)  # where outfield players stay (out of the goal areas)
THIRDS = (FIELD_ZONE[0] + (FIELD_ZONE[2] - FIELD_ZONE[0]) / 3, FIELD_ZONE[0] + 2 * (FIELD_ZONE[2] - FIELD_ZONE[0]) / 3)
GAP_TOUCH, GAP_NEAR = 0.3, 6.0  # gap buckets (units between bodies): touch <= 0.3 < near <= 6 < far


@dataclass
class SportScene:
    """Hidden events of one clip. Tracks have one entry per beat; team 0/1 index ``colours``."""

    sport: str
    play: str  # "duel" | "pass"
    colours: list[str]
    attack: list[int]  # per team: +1 attacks the right-hand goal, -1 the left-hand one
    players: list[dict] = field(default_factory=list)  # team, keeper, xy [[x, y]] per beat, down [bool], facing
    ball: list[list[float]] = field(default_factory=list)  # x, y per beat
    holder: list[int] = field(default_factory=list)  # player index per beat; -1 = ball in flight
    actors: dict = field(default_factory=dict)  # duel: {"A", "D"}; pass: {"P", "R", "O"} -> player index
    family: str = ""  # duel family (behind / side / front / alongside)
    variant: str = ""  # push, shield, trip, dive, ... ; completed / intercepted for a pass
    contact: int = -1  # beat of the contact (duel) or of the kick (pass)

    @property
    def foul(self) -> str:
        return self.variant if self.variant in FOUL_KINDS else "none"

    def team_of(self, player: int) -> int:
        return self.players[player]["team"]


# ---------------------------------------------------------------------------------------------
# Geometry helpers


def _unit(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle)])


def _rot(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def gap(a, b) -> float:
    """Space between two bodies (negative when they overlap)."""
    return float(math.hypot(a[0] - b[0], a[1] - b[1]) - TOUCH)


def gap_bucket(g: float) -> str:
    return "touch" if g <= GAP_TOUCH else "near" if g <= GAP_NEAR else "far"


def _in_zone(track: np.ndarray, zone=FIELD_ZONE) -> bool:
    return bool((track[:, 0] >= zone[0]).all() and (track[:, 0] <= zone[2]).all()
                and (track[:, 1] >= zone[1]).all() and (track[:, 1] <= zone[3]).all())


def _place(rng, tracks: list[np.ndarray], zone=FIELD_ZONE) -> np.ndarray | None:
    """A random offset that moves every track (built around the origin) inside ``zone``."""
    pts = np.concatenate(tracks)
    lo = np.array(zone[:2]) - pts.min(0)
    hi = np.array(zone[2:]) - pts.max(0)
    if (hi < lo).any():
        return None
    return rng.uniform(lo, hi)


def role_at(x: float, attack: int) -> str:
    """defender / midfielder / forward: the third of the pitch, counted from the player's own goal."""
    third = 0 if x < THIRDS[0] else 1 if x < THIRDS[1] else 2
    return ROLES[third if attack > 0 else 2 - third]


def _clear_of_thirds(x: float, margin: float = 1.2) -> bool:
    return all(abs(x - b) >= margin for b in THIRDS)


# ---------------------------------------------------------------------------------------------
# Sampling: teams, then the play, then everyone else around it


def sample_scene(rng: np.random.Generator, duel_fraction: float = 0.65, variant: str | None = None) -> SportScene:
    """A clip's hidden events. ``variant`` forces the event (push, dive, completed, ...) and draws
    the same random numbers whichever variant it is.

    Both variants of the drawn family (foul and mirror; completed and intercepted) are laid out from
    the same draws, placed with one offset that fits both, and everyone else keeps clear of both:
    so where the clip sits, who else is on the pitch and, for push / shield and trip / dive, every
    frame before the contact are the same for the two answers.
    """
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; one of {VARIANTS}")
    sport = pick(rng, SPORTS)
    colours = sample_without_replacement(rng, tuple(TEAM_RGB), 2)
    if rng.random() < 0.5:
        colours = colours[::-1]
    a0 = pick(rng, (-1, 1))
    play = "duel" if rng.random() < duel_fraction else "pass"
    if variant is not None:
        play = "pass" if variant in PASS_OUTCOMES else "duel"
    scene = SportScene(sport=sport, play=play, colours=list(colours), attack=[a0, -a0])
    ball_team = int(rng.integers(2))  # independent of the directions: possession is not a position
    n_out = [int(rng.integers(1, 4)) for _ in range(2)]
    if play == "duel":  # the answer is drawn once: retrying the geometry must not bias it
        drawn = pick(rng, tuple(FAMILIES))
        drawn = FAMILIES[drawn][int(rng.random() >= 0.5)]
    else:
        drawn = pick(rng, PASS_OUTCOMES)
        n_out[ball_team] = max(2, n_out[ball_team])
    variant = drawn if variant is None else variant
    scene.family = next((f for f, vs in FAMILIES.items() if variant in vs), "")
    lay_out = _duel if play == "duel" else _pass
    for _ in range(200):
        versions = lay_out(rng, scene, ball_team)
        if versions is None:
            continue
        keep_clear = [np.asarray(t) for v in versions.values() for t in [*(p["xy"] for p in v[0]), v[2]]]
        bystanders = _bystanders(rng, scene, n_out, versions[variant][0], keep_clear)
        if bystanders is not None:
            scene.players, scene.holder, scene.ball = versions[variant]
            scene.players = scene.players + bystanders
            scene.variant = variant
            _add_keepers(rng, scene)
            return scene
    # the play fits the 38-unit zone with room to spare; a bug if it never does
    raise RuntimeError("could not place the play and the players on the pitch")


# A version of a play: (players in it, holder per beat, ball per beat).
Version = tuple[list[dict], list[int], list[list[float]]]


def _player(team: int, track: np.ndarray, down=None, facing: float = 0.0, keeper: bool = False) -> dict:
    return {"team": team, "keeper": keeper, "xy": np.round(track, 2).tolist(),
            "down": list(down) if down is not None else [False] * BEATS, "facing": round(float(facing), 3)}


def _ball_at(xy, facing: float) -> list[float]:
    return (np.asarray(xy) + (R_PLAYER + 0.9) * _unit(facing)).round(2).tolist()


# The duel: A (ball team) and D meet at beat c; tracks are built around the contact point, then placed.


def _duel(rng, scene: SportScene, ball_team: int) -> dict[str, Version] | None:
    """Both variants of a family from one set of draws, placed together (None: did not fit)."""
    family = scene.family
    c = int(rng.integers(2, 5))
    va = float(rng.uniform(2.2, 3.0))
    heading = (0.0 if scene.attack[ball_team] > 0 else math.pi) + float(rng.uniform(-0.6, 0.6))
    h = _unit(heading)
    side = pick(rng, (-1, 1))
    state = rng.bit_generator.state
    runs = {}
    for v in FAMILIES[family]:  # each family function draws the same numbers for either variant
        rng.bit_generator.state = state
        runs[v] = _DUEL_MOVES[family](rng, v, c, va, h, side)
    offset = _place(rng, [t for a, d, _ in runs.values() for t in (a, d)])
    d_wins = bool(rng.random() < 0.5)  # D takes the ball after the contact (always when A goes down)
    if offset is None or not all(_clear_of_thirds(a[0, 0] + offset[0]) for a, _, _ in runs.values()):
        return None
    scene.actors, scene.contact = {"A": 0, "D": 1}, c
    d_facing = 0.0 if scene.attack[1 - ball_team] > 0 else math.pi
    return {v: _duel_version(ball_team, a + offset, d + offset, down, heading, d_facing, c, d_wins)
            for v, (a, d, down) in runs.items()}


def _duel_version(ball_team, a, d, a_down, heading, d_facing, c, d_wins) -> Version:
    takes = a_down.index(True) if any(a_down) else c + 1 if d_wins else BEATS
    players = [_player(ball_team, a, a_down, heading), _player(1 - ball_team, d, None, d_facing)]
    holder = [1 if t >= takes else 0 for t in range(BEATS)]
    ball = [_ball_at(a[t], heading) if holder[t] == 0 else _ball_at(d[t], d_facing) for t in range(BEATS)]
    return players, holder, ball


def _approach(c: int, step: np.ndarray) -> np.ndarray:
    """Positions ``(t - c) * step`` for every beat: a straight run through the origin at beat c."""
    return np.array([(t - c) * step for t in range(BEATS)], dtype=float)


def _behind(rng, variant, c, va, h, side):
    """D runs in from behind. push: A is shoved forward-away (his step doubles); shield: A runs on."""
    u = _rot(-h, side * float(rng.uniform(0.15, 0.8)))  # from A towards D at contact
    vd = float(rng.uniform(3.3, 4.2))
    a = _approach(c, va * h)
    d = TOUCH * u + _approach(c, -vd * _rot(u, float(rng.uniform(-0.2, 0.2))))
    for t in range(c + 1, BEATS):
        k = t - c
        d[t] = d[c] + k * 0.35 * va * h  # D eases off after the contact
        if variant == "push":
            a[t] = 0.9 * va * h - 2.8 * u + (k - 1) * 0.6 * va * h
        else:
            a[t] = k * va * h
    return a, d, [False] * BEATS


def _side(rng, variant, c, va, h, side):
    """D comes in from the side. trip: contact, then A falls; dive: A falls short of D, who then arrives."""
    u = _rot(h, side * float(rng.uniform(1.2, 1.9)))
    vd = float(rng.uniform(2.8, 3.6))
    a = _approach(c, va * h)
    d = TOUCH * u + _approach(c, -vd * u)
    short = float(rng.uniform(1.8, 2.6))  # drawn for both, so trip and dive consume the same numbers
    if variant == "dive":  # the same run-in, but D pulls up short on the contact beat
        d[c] += short * u
    fall = c + 1
    for t in range(c + 1, BEATS):
        a[t] = 0.6 * va * h  # a stumble forward, then down where he fell
    d[c + 1] = (TOUCH - 0.2) * u + 0.6 * va * h  # either way D is at the fallen A one beat later
    away = _unit(math.atan2(u[1], u[0]))
    for t in range(c + 2, BEATS):  # D leaves with the ball
        d[t] = d[t - 1] + 0.45 * va * away + 0.35 * va * h
    return a, d, [t >= fall for t in range(BEATS)]


def _front(rng, variant, c, va, h, side):
    """D steps across into A's path, A runs into him and stops. block: D still stepping in at the
    contact; set: D was standing there a beat before."""
    u = _rot(h, side * float(rng.uniform(0.0, 0.5)))
    across = _rot(h, side * math.pi / 2)
    vd = float(rng.uniform(1.5, 2.2))  # slow and square on: the gap closes alike for block and set
    a = _approach(c, va * h)
    a[c + 1:] = 0.0
    stop, vd = (c, vd) if variant == "block" else (c - 1, 1.5 * vd)  # set: there early, so quicker
    d = np.array([TOUCH * u + max(0, stop - t) * vd * across for t in range(BEATS)], dtype=float)
    return a, d, [False] * BEATS


def _alongside(rng, variant, c, va, h, side):
    """D runs beside A. elbow: A swerves into D, who is knocked sideways; shoulder: both lean in
    and drift apart a little. Either way D loses a step afterwards."""
    u = _rot(h, side * math.pi / 2)
    lean = float(rng.uniform(2.0, 3.0))
    a = _approach(c, va * h)
    d = TOUCH * u + _approach(c, va * h)
    share = 1.0 if variant == "elbow" else 0.5
    for t in range(c):
        a[t] -= share * lean * u
        d[t] += (1 - share) * lean * u
    for t in range(c + 1, BEATS):
        k = t - c
        if variant == "elbow":
            d[t] = TOUCH * u + (0.5 + 0.6 * (k - 1)) * va * h + (3.2 + 0.8 * min(k - 1, 1)) * u
        else:
            a[t] = a[t] - 1.3 * u
            d[t] = TOUCH * u + (0.5 + 0.6 * (k - 1)) * va * h + 1.3 * u
    return a, d, [False] * BEATS


_DUEL_MOVES: dict[str, Callable] = {"behind": _behind, "side": _side, "front": _front, "alongside": _alongside}


def _pass(rng, scene: SportScene, ball_team: int) -> dict[str, Version] | None:
    """P dribbles and kicks at beat k; O runs onto the lane and is at lane point M two beats later,
    just as the ball gets there. Intercepted: the ball stops at O. Completed: it runs on to R, a few
    units further down the lane, one beat later. Then the holder jogs on and the other closes in.
    Up to the ball reaching M, both outcomes are the same positions."""
    k = int(rng.integers(2, 4))
    at_m = k + 2
    e = _unit(float(rng.uniform(0, 2 * math.pi)))
    perp = _rot(e, math.pi / 2) * pick(rng, (-1, 1))
    m = float(rng.uniform(12.0, 18.0)) * e
    r_spot = m + float(rng.uniform(6.0, 9.0)) * e
    p = _approach(k, float(rng.uniform(1.0, 1.8)) * _rot(e, float(rng.uniform(-0.4, 0.4))))
    p[k + 1:] = p[k] + 0.3 * e * np.arange(1, BEATS - k)[:, None]
    o_start = m + float(rng.uniform(5.0, 8.0)) * perp
    o = np.array([o_start + min(t, at_m) / at_m * (m - o_start) for t in range(BEATS)])
    r = np.array([r_spot - max(0, at_m - t) * 0.8 * e for t in range(BEATS)])
    runs = {v: _pass_run(v, scene, ball_team, r.copy(), o.copy(), at_m) for v in PASS_OUTCOMES}
    offset = _place(rng, [p, *(t for run in runs.values() for t in run)])
    if offset is None or not _clear_of_thirds(p[0, 0] + offset[0]):
        return None
    scene.actors, scene.contact = {"P": 0, "R": 1, "O": 2}, k
    return {v: _pass_version(v, scene, ball_team, p + offset, r2 + offset, o2 + offset, k, e, perp)
            for v, (r2, o2) in runs.items()}


def _pass_run(outcome: str, scene: SportScene, ball_team: int, r: np.ndarray, o: np.ndarray, at_m: int):
    """R's and O's tracks after the ball reaches M: the holder jogs on, the other closes in."""
    won = at_m if outcome == "intercepted" else at_m + 1
    holder, chaser = (o, r) if outcome == "intercepted" else (r, o)
    team = 1 - ball_team if outcome == "intercepted" else ball_team
    for t in range(won + 1, BEATS):
        holder[t] = holder[t - 1] + 0.5 * np.array([float(scene.attack[team]), 0.0])
    for t in range(at_m + 1, BEATS):
        to = holder[t] - chaser[t - 1]
        dist = float(np.hypot(*to))
        chaser[t] = chaser[t - 1] + to / dist * min(1.5, max(0.0, dist - TOUCH - 1.0))
    return r, o


def _pass_version(outcome, scene, ball_team, p, r, o, k, e, perp) -> Version:
    at_m = k + 2
    won, end = (at_m, 2) if outcome == "intercepted" else (at_m + 1, 1)
    facing = math.atan2(e[1], e[0])
    players = [_player(ball_team, p, facing=facing), _player(ball_team, r, facing=facing),
               _player(1 - ball_team, o, facing=math.atan2(-perp[1], -perp[0]))]
    holder = [0 if t <= k else end if t >= won else -1 for t in range(BEATS)]
    team = ball_team if end == 1 else 1 - ball_team
    hold_angle = 0.0 if scene.attack[team] > 0 else math.pi
    kick = np.asarray(_ball_at(p[k], facing))
    at_o = np.asarray(_ball_at(o[at_m], facing + math.pi))  # at O's feet on beat k + 2 either way
    track = o if end == 2 else r
    ball = []
    for t in range(BEATS):
        if t <= k:
            ball.append(_ball_at(p[t], facing))
        elif t <= at_m:
            ball.append((kick + (t - k) / (at_m - k) * (at_o - kick)).round(2).tolist())
        else:
            ball.append(_ball_at(track[t], hold_angle))
    return players, holder, ball


def _bystanders(rng, scene: SportScene, n_out: list[int], in_play: list[dict], keep_clear: list[np.ndarray]):
    """Outfield players not in the play, drifting slowly, clear of both versions of the play.

    All or nothing (None: draw the play again), so the number of players never depends on the play
    (a crowded pitch must not hint at how far someone was shoved).
    """
    taken = [sum(p["team"] == team for p in in_play) for team in (0, 1)]
    others, extra = list(keep_clear), []
    for team in (0, 1):
        for _ in range(n_out[team] - taken[team]):
            track = _free_track(rng, others)
            if track is None:
                return None
            extra.append(_player(team, track, facing=0.0 if scene.attack[team] > 0 else math.pi))
            others.append(track)
    return extra


def _free_track(rng, others: list[np.ndarray], tries: int = 80) -> np.ndarray | None:
    for _ in range(tries):
        start = rng.uniform(FIELD_ZONE[:2], FIELD_ZONE[2:])
        track = start + np.arange(BEATS)[:, None] * rng.uniform(-0.6, 0.6, 2)
        if _in_zone(track) and all(np.hypot(*(track - o).T).min() >= TOUCH + 3.0 for o in others):
            return track
    return None


def _add_keepers(rng, scene: SportScene) -> None:
    """One goalkeeper per team, in front of the goal it defends, following the ball's height a little."""
    ball_y = np.asarray(scene.ball)[:, 1]
    for team in (0, 1):
        x = 6.8 if scene.attack[team] > 0 else 57.2
        y0 = 32.0 + float(rng.uniform(-3, 3))
        ys = np.clip(y0 + 0.15 * (ball_y - 32.0), 27.0, 37.0)
        track = np.stack([np.full(BEATS, x + float(rng.uniform(-0.8, 0.8))), ys], axis=1)
        scene.players.append(_player(team, track, facing=0.0 if scene.attack[team] > 0 else math.pi, keeper=True))


# ---------------------------------------------------------------------------------------------
# The rules, read back from the motion: what a referee watching every frame decides


def referee(scene: SportScene) -> str:
    """The foul committed in a duel, from A's and D's tracks and poses alone.

    - A goes down: a trip if A and D touched on an earlier beat, else a dive (no foul).
    - Else at the first contact beat c:
      - A stops dead right after (moves < 0.5): a block if D was still moving into him at c
        (moved > 0.5 on that beat), else D had set his position legally (no foul);
      - A's next step is more than 1.5x his step into the contact: he was pushed;
      - D is moved more than 2 units straight away from A on the next beat: an elbow;
      - otherwise a fair challenge.
    """
    a = np.asarray(scene.players[scene.actors["A"]]["xy"])
    d = np.asarray(scene.players[scene.actors["D"]]["xy"])
    down = scene.players[scene.actors["A"]]["down"]
    contacts = [t for t in range(BEATS) if gap(a[t], d[t]) <= GAP_TOUCH]
    if any(down):
        fall = down.index(True)
        return "trip" if any(t < fall for t in contacts) else "none"
    if not contacts or contacts[0] + 1 >= BEATS:
        return "none"
    c = contacts[0]
    step_in, step_out = a[c] - a[c - 1], a[c + 1] - a[c]
    if np.hypot(*step_out) < 0.5:
        return "block" if np.hypot(*(d[c] - d[c - 1])) > 0.5 else "none"
    if np.hypot(*step_out) > 1.5 * np.hypot(*step_in):
        return "push"
    away = (d[c] - a[c]) / np.hypot(*(d[c] - a[c]))
    return "elbow" if float((d[c + 1] - d[c]) @ away) > 2.0 else "none"


def pass_outcome(scene: SportScene) -> str:
    """completed when the team holding the ball at the end is the one that had it at the start."""
    return "completed" if scene.team_of(scene.holder[-1]) == scene.team_of(scene.holder[0]) else "intercepted"


# ---------------------------------------------------------------------------------------------
# What one frame shows


def _angle_bucket(vec, attack: int) -> str:
    ang = abs(math.degrees(math.atan2(vec[1], vec[0] * attack)))
    return "front" if ang < 45 else "behind" if ang > 135 else "side"


def frame_view(scene: SportScene, template: str, beat: int) -> str:
    """What a single frame at ``beat`` shows that bears on ``template``, identities unknown.

    For the recognition templates that is the answer itself. For the others it is what the frame
    offers: the colour / direction / third of whoever holds the ball then, and for the hard ones
    the duel's look (gap bucket, who is down, where the other duelist stands relative to the
    holder's attacking direction) or the pass's (ball in flight, or the holder's gap to the
    nearest opponent). Used for the single-frame baseline and the ambiguity checks.
    """
    holder = scene.holder[beat]
    hteam = scene.team_of(holder) if holder >= 0 else -1
    if template in ("sport", "n_players", "team_colors"):
        return TEMPLATES[template].answer(scene)
    if template in ("possession_start", "possession_end"):
        return scene.colours[hteam] if hteam >= 0 else "flight"
    if template == "attack_direction":
        return ("right" if scene.attack[hteam] > 0 else "left") if hteam >= 0 else "flight"
    if template == "carrier_role":
        return role_at(scene.players[holder]["xy"][beat][0], scene.attack[hteam]) if hteam >= 0 else "flight"
    if scene.play == "pass":
        return _pass_view(scene, beat)
    if scene.play == "duel":
        a, d = (scene.players[scene.actors[r]] for r in ("A", "D"))
        h, o = (a, d) if holder == scene.actors["A"] else (d, a)
        vec = np.subtract(o["xy"][beat], h["xy"][beat])
        downs = sum(p["down"][beat] for p in (a, d))
        return f"{gap_bucket(gap(a['xy'][beat], d['xy'][beat]))}|down{downs}|{_angle_bucket(vec, scene.attack[hteam])}"
    raise ValueError(f"unknown play {scene.play!r}")


def _pass_view(scene: SportScene, beat: int) -> str:
    """The ball at someone's feet (within 1.5 units of a body) and that player's gap to the nearest
    opponent, or the ball on its own: what is drawn, not who is credited with the ball."""
    ball = scene.ball[beat]
    near = min(range(len(scene.players)), key=lambda i: math.dist(ball, scene.players[i]["xy"][beat]))
    if math.dist(ball, scene.players[near]["xy"][beat]) > R_PLAYER + 1.5:
        return "loose"
    me = scene.players[near]
    g = min(gap(me["xy"][beat], p["xy"][beat]) for p in scene.players if p["team"] != me["team"])
    return f"at-feet|{gap_bucket(g)}"


# ---------------------------------------------------------------------------------------------
# Questions: SPORTU-style templates in three difficulty levels


@dataclass(frozen=True)
class Template:
    question: str
    category: str  # easy / medium / hard (SPORTU's difficulty levels)
    applies: Callable[[SportScene], bool]
    answer: Callable[[SportScene], str]


def _carrier(s: SportScene) -> dict:
    return s.players[s.holder[0]]


TEMPLATES: dict[str, Template] = {
    "sport": Template("What sport is being played?", "easy", lambda s: True, lambda s: s.sport),
    "n_players": Template("How many players are on the field?", "easy", lambda s: True,
                          lambda s: str(len(s.players))),
    "team_colors": Template("What colors are the two teams wearing?", "easy", lambda s: True,
                            lambda s: " and ".join(sorted(s.colours))),
    "possession_start": Template("Which team has the ball at the start of the clip?", "medium", lambda s: True,
                                 lambda s: s.colours[s.team_of(s.holder[0])]),
    "possession_end": Template("Which team has the ball at the end of the clip?", "medium", lambda s: True,
                               lambda s: s.colours[s.team_of(s.holder[-1])]),
    "attack_direction": Template("Which way is the team with the ball at the start attacking?", "medium",
                                 lambda s: True,
                                 lambda s: "right" if s.attack[s.team_of(s.holder[0])] > 0 else "left"),
    "carrier_role": Template("What is the role of the player with the ball at the start?", "medium",
                             lambda s: True,
                             lambda s: role_at(_carrier(s)["xy"][0][0], s.attack[_carrier(s)["team"]])),
    "foul": Template("Is there a foul in this clip?", "hard", lambda s: s.play == "duel",
                     lambda s: "no" if s.foul == "none" else "yes"),
    "foul_kind": Template("What kind of foul is committed?", "hard", lambda s: s.play == "duel",
                          lambda s: s.foul),
    "pass_outcome": Template("What is the outcome of the pass?", "hard", lambda s: s.play == "pass",
                             lambda s: s.variant),
}
HARD = tuple(k for k, t in TEMPLATES.items() if t.category == "hard")


def sport_questions(
    scene: SportScene, rng: np.random.Generator, media: MediaRef, n_range: tuple[int, int], split: str
) -> list[VQAExample]:
    """Every hard question that applies, then easy / medium ones up to a count drawn from ``n_range``.

    The hard questions are always asked so that each difficulty level holds about a third of the
    questions, as in SPORTU. Options are filled in over the whole dataset later.
    """
    keys = [k for k, t in TEMPLATES.items() if t.applies(scene)]
    hard = [k for k in keys if k in HARD]
    rest = [k for k in keys if k not in HARD]
    n = min(len(keys), max(len(hard), int(rng.integers(n_range[0], n_range[1] + 1))))
    picked = set(hard) | set(sample_without_replacement(rng, rest, n - len(hard)))
    meta = {"scene": scene_dict(scene)}
    return [VQAExample(id=f"{media.id}-{k}", media=media, question=TEMPLATES[k].question,
                       answer=TEMPLATES[k].answer(scene), category=TEMPLATES[k].category, split=split,
                       template=k, meta=meta)
            for k in keys if k in picked]


def scene_dict(scene: SportScene) -> dict:
    return asdict(scene)


# ---------------------------------------------------------------------------------------------
# Rendering: a static pitch per clip, players and ball per frame


FIELD_RGB = {"soccer": (66, 138, 58), "basketball": (204, 158, 102), "hockey": (226, 236, 242)}
LINE_RGB = {"soccer": (236, 240, 232), "basketball": (70, 44, 30), "hockey": (196, 40, 44)}
BALL = {"soccer": ((246, 246, 240), 1.3), "basketball": ((232, 110, 28), 1.7), "hockey": ((18, 18, 20), 1.0)}


def frame_beats(n_frames: int) -> np.ndarray:
    """The beat time of each frame: evenly spread over the event clock."""
    return np.linspace(0.0, BEATS - 1, n_frames)


def render_clip(scene: SportScene, rng: np.random.Generator, size: int = 64, n_frames: int = BEATS) -> list[np.ndarray]:
    """``n_frames`` uint8 ``size x size x 3`` frames. Positions are interpolated between beats;
    poses and who holds the ball switch at the nearest beat."""
    background = _pitch(scene.sport, rng, 2 * size)
    return [_frame(scene, background, tau, size, rng) for tau in frame_beats(n_frames)]


def _lerp(track, tau: float) -> tuple[float, float]:
    i = min(int(tau), BEATS - 2)
    w = tau - i
    return tuple((1 - w) * np.asarray(track[i]) + w * np.asarray(track[i + 1]))


def _frame(scene: SportScene, background: np.ndarray, tau: float, size: int, rng) -> np.ndarray:
    canvas = Canvas(background, size)
    beat = int(round(tau))
    order = sorted(range(len(scene.players)), key=lambda i: not scene.players[i]["down"][beat])
    for i in order:  # fallen players first: the upright ones stand over them
        _draw_player(canvas, scene.players[i], scene.colours, _lerp(scene.players[i]["xy"], tau),
                     scene.players[i]["down"][beat])
    colour, r = BALL[scene.sport]
    bx, by = _lerp(scene.ball, tau)
    canvas.circle(bx, by, r, fill=colour, outline=shade(colour, 0.45), width=0.5)
    pixels = np.asarray(canvas.finish(), dtype=np.float32) + rng.normal(0.0, 2.0, (size, size, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _draw_player(canvas: Canvas, p: dict, colours: list[str], xy, down: bool) -> None:
    fill = TEAM_RGB[colours[p["team"]]]
    x, y = xy
    if down:  # lying along the way he was running: a long flat body
        f = p["facing"]
        pts = [(x + 4.0 * math.cos(t) * math.cos(f) - 1.7 * math.sin(t) * math.sin(f),
                y + 4.0 * math.cos(t) * math.sin(f) + 1.7 * math.sin(t) * math.cos(f))
               for t in np.linspace(0, 2 * math.pi, 18, endpoint=False)]
        canvas.polygon(pts, fill=shade(fill, 0.8), outline=shade(fill, 0.45))
        return
    canvas.circle(x, y, R_PLAYER, fill=fill, outline=shade(fill, 0.5), width=0.6)
    if p["keeper"]:  # keepers wear gloves: two light dots
        canvas.circle(x - 1.2, y - 1.2, 0.6, fill=(240, 240, 240))
        canvas.circle(x + 1.2, y - 1.2, 0.6, fill=(240, 240, 240))


def _pitch(sport: str, rng, side: int) -> np.ndarray:
    """The pitch at ``side`` pixels (2x the output): surface, markings, goals, dark stands around."""
    base = np.asarray(FIELD_RGB[sport], dtype=np.float32) + rng.uniform(-6, 6, 3)
    texture = 0.95 + 0.08 * smooth_noise(rng, side, 12)
    pixels = base[None, None, :] * texture[..., None]
    if sport == "soccer":  # mowing stripes
        stripes = (np.arange(side) * 64.0 / side // 6) % 2
        pixels *= (1.0 - 0.05 * stripes)[None, :, None]
    elif sport == "basketball":  # floor boards
        boards = (np.arange(side) * 64.0 / side // 2.5) % 3
        pixels *= (1.0 - 0.03 * boards)[:, None, None]
    canvas = Canvas(pixels, side // 2)
    x0, y0, x1, y1 = PITCH
    stands = (46, 46, 54)
    canvas.rect(0, 0, 64, y0 - 0.5, fill=stands)
    canvas.rect(0, y1 + 0.5, 64, 64, fill=stands)
    _MARKINGS[sport](canvas)
    return canvas.array()


def _soccer(canvas: Canvas) -> None:
    line = LINE_RGB["soccer"]
    x0, y0, x1, y1 = PITCH
    canvas.rect(x0, y0, x1, y1, outline=line)
    canvas.line([(32, y0), (32, y1)], fill=line, width=0.6)
    canvas.circle(32, 32, 7.0, outline=line, width=0.6)
    for gx, sgn in ((x0, 1), (x1, -1)):
        canvas.rect(min(gx, gx + sgn * 9), 21, max(gx, gx + sgn * 9), 43, outline=line)
        canvas.rect(min(gx, gx - sgn * 2.2), 27.5, max(gx, gx - sgn * 2.2), 36.5, fill=(250, 250, 250))


def _basketball(canvas: Canvas) -> None:
    line = LINE_RGB["basketball"]
    x0, y0, x1, y1 = PITCH
    canvas.rect(x0, y0, x1, y1, outline=line)
    canvas.line([(32, y0), (32, y1)], fill=line, width=0.6)
    canvas.circle(32, 32, 5.5, outline=line, width=0.6)
    for gx, sgn in ((x0, 1), (x1, -1)):
        canvas.rect(min(gx, gx + sgn * 12), 25, max(gx, gx + sgn * 12), 39, fill=(168, 62, 44), outline=line)
        canvas.line([(gx + sgn * 1.5, 29), (gx + sgn * 1.5, 35)], fill=(250, 250, 250), width=0.8)  # backboard
        canvas.circle(gx + sgn * 3.4, 32, 1.6, outline=(240, 110, 20), width=0.7)  # hoop


def _hockey(canvas: Canvas) -> None:
    red, blue = LINE_RGB["hockey"], (40, 80, 200)
    x0, y0, x1, y1 = PITCH
    canvas.rect(x0, y0, x1, y1, outline=(70, 70, 80))
    canvas.line([(32, y0), (32, y1)], fill=red, width=1.0)
    for bx in (22, 42):
        canvas.line([(bx, y0), (bx, y1)], fill=blue, width=1.0)
    canvas.circle(32, 32, 5.0, outline=blue, width=0.5)
    for gx, sgn in ((x0 + 2.5, 1), (x1 - 2.5, -1)):
        canvas.line([(gx, y0), (gx, y1)], fill=red, width=0.5)  # goal line
        canvas.ellipse(gx, 32, 4.0, 4.0, fill=(150, 190, 236))  # crease
        canvas.rect(min(gx, gx - sgn * 2.0), 29.5, max(gx, gx - sgn * 2.0), 34.5, outline=red)


_MARKINGS = {"soccer": _soccer, "basketball": _basketball, "hockey": _hockey}


# ---------------------------------------------------------------------------------------------
# Teacher captions: what a general model might say about the clip (partial, sometimes wrong)

_EVENT_TEXT = {
    "push": "a {d} defender runs into the {a} player from behind and shoves him off the ball",
    "shield": "the {a} player shields the ball as a {d} defender closes in from behind, no foul",
    "trip": "a {d} defender clips the {a} player's feet and he goes down",
    "dive": "the {a} player goes down before the {d} defender touches him, a dive",
    "block": "a {d} defender steps across into the {a} player's path too late, a blocking foul",
    "set": "the {a} player runs into a {d} defender who had set his position, no foul",
    "elbow": "the {a} player swings an elbow into the {d} defender running beside him",
    "shoulder": "a fair shoulder-to-shoulder challenge between the {a} player and a {d} defender",
    "completed": "the {a} team plays a pass past a {d} player and it reaches a teammate",
    "intercepted": "the {a} team plays a pass that a {d} player cuts out",
}


def _maybe(rng, true: str, choices, mention_p: float, wrong_p: float) -> str | None:
    """None (not mentioned), the true value, or, with ``wrong_p``, another of ``choices``."""
    if rng.random() >= mention_p:
        return None
    others = [c for c in choices if c != true]
    return pick(rng, others) if others and rng.random() < wrong_p else true


def noisy_caption(attrs: dict, rng: np.random.Generator, mention_p: float = 0.7, wrong_p: float = 0.2) -> str:
    """A free-text caption of ``scene_dict(scene)``: each fact is mentioned with ``mention_p`` and,
    when mentioned, replaced by a wrong value with ``wrong_p``."""
    s = SportScene(**attrs)
    mp, wp = mention_p, wrong_p
    sport = _maybe(rng, s.sport, SPORTS, mp, wp)
    parts = [f"{sport} clip" if sport else "sports clip"]
    x = s.team_of(s.holder[0])
    cx, cy = s.colours[x], s.colours[1 - x]
    if rng.random() < mp:
        parts[0] += f", {s.colours[0]} against {s.colours[1]}"
    n = _maybe(rng, str(len(s.players)), tuple(str(i) for i in range(4, 9)), mp, wp)
    if n:
        parts.append(f"{n} players on the field")
    start = _maybe(rng, cx, tuple(TEAM_RGB), mp, wp)
    if start:
        way = _maybe(rng, "right" if s.attack[x] > 0 else "left", ("left", "right"), mp, wp)
        parts.append(f"the {start} team has the ball" + (f", attacking to the {way}" if way else ""))
    choices = tuple(v for v in VARIANTS if v not in PASS_OUTCOMES) if s.play == "duel" else PASS_OUTCOMES
    event = _maybe(rng, s.variant, choices, mp, wp)
    if event:
        parts.append(_EVENT_TEXT[event].format(a=cx, d=cy))
    end = _maybe(rng, s.colours[s.team_of(s.holder[-1])], tuple(TEAM_RGB), mp, wp)
    if end:
        parts.append(f"the {end} team has it at the end")
    return "; ".join(parts) + "."
