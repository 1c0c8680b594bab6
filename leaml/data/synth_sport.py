"""The sport domain: a procedural stand-in for SPORTU (sports video, easy / medium / hard questions).

(seed, clip id) -> hidden events (:class:`SportScene`) -> ``n_frames`` RGB frames of a top-down
pitch with two teams of coloured players and a ball -> SPORTU-style multiple-choice questions and
a noisy caption (the teacher's "web knowledge").

Every clip holds one *play* on an 8-beat event clock (frames are sampled from the beats):

- ``duel``: one player runs into another, who stands still, and one of them goes down. The rule:
  the player who runs into a standing opponent and brings him down commits a foul; a player who
  runs into a standing opponent and goes down himself has only himself to blame. Each duel belongs
  to one of four *families* (where the contact comes from), which names the foul, and is the foul
  or its mirror with equal odds:

  ======== ============================================== =========================================
  family   foul (the other runs in, the victim goes down) mirror, "none" (the victim runs in)
  ======== ============================================== =========================================
  behind   push: D runs into A's back                     stumble: A backs into D
  side     trip: D comes in from A's side                 dive: A moves sideways into D
  front    block: D runs into A from the front            collision: A runs into D in his path
  carrier  elbow: the carrier A runs into D's side        flop: D moves into the carrier's side
  ======== ============================================== =========================================

  Foul and mirror have the same gap and poses beat by beat (one closes in, contact, the victim goes
  down, the other stays on him and leaves with the ball); only *who moved* differs, so no single
  frame tells them apart (:func:`frame_view` is what one frame shows) while the motion does
  (:func:`referee` reads the answer back from the tracks).
- ``pass``: P passes towards teammate R while opponent O runs at the lane. O reaches the lane on
  the same beat either way; whether the ball stopped at O (intercepted) or went past to R
  (completed) is only told by comparing who had the ball before and after: the end frames look the
  same (holder + an opponent closing in) in both cases.

Easy questions are recognition (sport, counting, colours), medium ones need roles and tactics
(possession at the start or end; which way a team attacks: players face the goal they attack, a
light "face" on their disc, and keepers in white rings stand before the goal they defend; the
carrier's role by the third of the pitch he is in), hard ones are the rules above. One honest
limit: the pitch is finite, so in the opening frame a pair near one end can only be starting one of
the two runs; from the second frame on no frame look favours an answer beyond a few points.
Positions are in a 64-unit frame; the scene rides along in ``VQAExample.meta``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from leaml.data.synth_common import Canvas, Template, maybe, pick, sample_without_replacement, shade, smooth_noise
from leaml.records import MediaRef, VQAExample

BEATS = 8  # the event clock; a clip of n_frames >= BEATS samples it evenly
SPORTS = ("soccer", "basketball", "hockey")
TEAM_RGB = {"red": (214, 38, 38), "blue": (36, 72, 214), "yellow": (246, 214, 30),
            "purple": (128, 44, 170), "cyan": (20, 186, 204)}
FOUL_KINDS = ("push", "trip", "block", "elbow", "none")
FAMILIES = {"behind": ("push", "stumble"), "side": ("trip", "dive"), "front": ("block", "collision"),
            "carrier": ("elbow", "flop")}
PASS_OUTCOMES = ("completed", "intercepted")
VARIANTS = (*(v for vs in FAMILIES.values() for v in vs), *PASS_OUTCOMES)
ROLES = ("defender", "midfielder", "forward")

R_PLAYER = 3.0  # body radius; two players touch when their centres are TOUCH apart
TOUCH = 2 * R_PLAYER
PITCH = (3.0, 8.0, 61.0, 56.0)  # x0, y0, x1, y1 of the touchlines
FIELD_ZONE = (10.0, 10.0, 54.0, 54.0)  # where outfield players stay (out of the goal areas)
THIRDS = tuple(FIELD_ZONE[0] + k * (FIELD_ZONE[2] - FIELD_ZONE[0]) / 3 for k in (1, 2))  # role boundaries (x)
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
    family: str = ""  # duel family (behind / side / front / carrier)
    variant: str = ""  # push, stumble, trip, dive, block, ... ; completed / intercepted for a pass
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
                and (track[:, 1] >= zone[1]).all() and (track[:, 1] <= zone[3]).all()) and _clear_of_keepers(track)


KEEPER_BOX = (11.0, 24.0, 53.0, 40.0)  # keepers stay left of x0 / right of x1, between y0 and y1


def _clear_of_keepers(track: np.ndarray) -> bool:
    """No outfield body overlaps a goalkeeper's: near the goal mouths they keep a body's width off."""
    x0, y0, x1, y1 = KEEPER_BOX
    level = (track[:, 1] > y0 - TOUCH / 2 - R_PLAYER) & (track[:, 1] < y1 + TOUCH / 2 + R_PLAYER)
    return bool(((track[level, 0] >= x0 + R_PLAYER) & (track[level, 0] <= x1 - R_PLAYER)).all())


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
    where the play sits and who else is on the pitch never depend on the answer.
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
    return (np.asarray(xy) + (R_PLAYER + 1.5) * _unit(facing)).round(2).tolist()


# The duel. Positions are built around the victim's contact spot, then placed on the pitch.


def _duel(rng, scene: SportScene, ball_team: int) -> dict[str, Version] | None:
    """Both variants of a family from one set of draws, placed together (None: did not fit)."""
    family = scene.family
    c = int(rng.integers(2, 4))  # the contact beat: a short run-in, so where the pair stands says little
    a_facing = (0.0 if scene.attack[ball_team] > 0 else math.pi) + float(rng.uniform(-0.4, 0.4))
    d_facing = (0.0 if scene.attack[1 - ball_team] > 0 else math.pi) + float(rng.uniform(-0.4, 0.4))
    v_facing = d_facing if family == "carrier" else a_facing
    lo, hi = _APPROACH[family]
    u = _rot(_unit(v_facing), pick(rng, (-1, 1)) * float(rng.uniform(lo, hi)))  # victim -> other at contact
    path = _rot(u, float(rng.uniform(-0.25, 0.25))) * float(rng.uniform(2.2, 3.0))  # the mover's step, reversed
    kick = float(rng.uniform(0.8, 1.6))
    hold, speed = int(rng.integers(1, 3)), float(rng.uniform(1.0, 1.5))
    runs = {v: _duel_tracks(family, v in FOUL_KINDS, c, u, path, kick, hold, speed) for v in FAMILIES[family]}
    tracks = [t for a, d, *_ in runs.values() for t in (a, d)]
    offset = _place(rng, tracks)
    if offset is None or not all(_clear_of_thirds(a[0, 0] + offset[0]) for a, *_ in runs.values()):
        return None
    if not all(_clear_of_keepers(t + offset) for t in tracks):  # judged on both variants: no bias
        return None
    scene.actors, scene.contact = {"A": 0, "D": 1}, c
    return {v: _duel_version(ball_team, a + offset, d + offset, a_down, d_down, a_facing, d_facing)
            for v, (a, d, a_down, d_down) in runs.items()}


# Where the other player stands at the contact, as a turn from the way the victim faces (radians,
# either side): behind him, at his side, in front of him; in the carrier family the victim is the
# defender and the ball carrier comes in at his side.
_APPROACH = {"behind": (math.pi - 0.6, math.pi), "side": (1.2, 1.9), "front": (0.0, 0.5), "carrier": (1.2, 1.9)}


def _duel_tracks(family: str, foul: bool, c: int, u, path, kick: float, hold: int, speed: float):
    """A's and D's tracks and poses.

    Up to the contact at beat c one player runs into the other, who stands still: in a foul the
    fouler runs into the victim, in the mirror the victim runs into the other. After it the victim
    goes down (knocked ``kick`` units away), the other stays on him ``hold`` beats and leaves with
    the ball. The gap between the two, and every pose, are the same beat by beat in both variants;
    only who moved differs.
    """
    victim = np.zeros((BEATS, 2))
    other = np.array([TOUCH * u + max(0, c - t) * path for t in range(BEATS)], dtype=float)
    if not foul:  # the same relative positions, but the victim does the running
        victim, other = victim - (other - TOUCH * u), np.tile(TOUCH * u, (BEATS, 1))
    victim[c + 1:] = victim[c] - kick * u
    for t in range(c + 1, min(c + 1 + hold, BEATS)):
        other[t] = victim[t] + 0.97 * TOUCH * u
    for t in range(c + 1 + hold, BEATS):  # then he leaves with the ball, away from the fallen man
        other[t] = other[t - 1] + speed * u
    down = [t > c for t in range(BEATS)]
    up = [False] * BEATS
    return (other, victim, up, down) if family == "carrier" else (victim, other, down, up)


def _duel_version(ball_team, a, d, a_down, d_down, a_facing, d_facing) -> Version:
    """Players, holder and ball: A has it until someone goes down; then whoever is still standing."""
    players = [_player(ball_team, a, a_down, a_facing), _player(1 - ball_team, d, d_down, d_facing)]
    holder = [1 if a_down[t] else 0 for t in range(BEATS)]
    ball = [_ball_at(a[t], a_facing) if holder[t] == 0 else _ball_at(d[t], d_facing) for t in range(BEATS)]
    return players, holder, ball


def _approach(c: int, step: np.ndarray) -> np.ndarray:
    """Positions ``(t - c) * step`` for every beat: a straight run through the origin at beat c."""
    return np.array([(t - c) * step for t in range(BEATS)], dtype=float)


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
    tracks = [p, *(t for run in runs.values() for t in run)]
    offset = _place(rng, tracks)
    if offset is None or not _clear_of_thirds(p[0, 0] + offset[0]):
        return None
    if not all(_clear_of_keepers(t + offset) for t in tracks):
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
    """One goalkeeper per team, in front of the goal it defends, following the ball's height a little
    (inside :data:`KEEPER_BOX`'s goal ends, which outfield players keep clear of)."""
    ball_y = np.asarray(scene.ball)[:, 1]
    for team in (0, 1):
        x = 6.8 if scene.attack[team] > 0 else 57.2
        y0 = 32.0 + float(rng.uniform(-3, 3))
        ys = np.clip(y0 + 0.15 * (ball_y - 32.0), KEEPER_BOX[1] + R_PLAYER, KEEPER_BOX[3] - R_PLAYER)
        track = np.stack([np.full(BEATS, x + float(rng.uniform(-0.8, 0.8))), ys], axis=1)
        scene.players.append(_player(team, track, facing=0.0 if scene.attack[team] > 0 else math.pi, keeper=True))


# ---------------------------------------------------------------------------------------------
# The rules, read back from the motion: what a referee watching every frame decides


def referee(scene: SportScene) -> str:
    """The foul committed in a duel, from A's and D's tracks, poses and facing alone.

    Someone goes down after a contact. Who ran into whom decides: the player who moved further
    before the first contact is the one who made it. If that is the player who went down, he has
    himself to blame (a stumble, a dive, a collision, a flop): no foul. Otherwise the mover
    committed it: an elbow if he is the ball carrier, else it depends on where the defender came
    from, relative to the way the carrier faces: from behind a push, from the front a block, from
    the side a trip.
    """
    a = np.asarray(scene.players[scene.actors["A"]]["xy"])
    d = np.asarray(scene.players[scene.actors["D"]]["xy"])
    a_down, d_down = (scene.players[scene.actors[r]]["down"] for r in ("A", "D"))
    if not any(a_down) and not any(d_down):
        return "none"
    contact = next(t for t in range(BEATS) if gap(a[t], d[t]) <= GAP_TOUCH)
    moved_a, moved_d = (float(np.hypot(*(x[contact] - x[0]))) for x in (a, d))
    mover_fell = any(a_down) if moved_a > moved_d else any(d_down)
    if mover_fell:
        return "none"
    if moved_a > moved_d:
        return "elbow"
    facing = _unit(scene.players[scene.actors["A"]]["facing"])
    to_d = (d[contact] - a[contact]) / np.hypot(*(d[contact] - a[contact]))
    angle = math.degrees(math.acos(max(-1.0, min(1.0, float(facing @ to_d)))))
    return "block" if angle < 60 else "push" if angle > 120 else "trip"


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
    holder's attacking direction, and where on the pitch the pair is) or the pass's (the ball at
    someone's feet and his gap to the nearest opponent, or loose). Used for the single-frame
    baseline and the ambiguity checks.
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
        look = f"{gap_bucket(gap(a['xy'][beat], d['xy'][beat]))}|down{downs}|{_angle_bucket(vec, scene.attack[hteam])}"
        return f"{look}|{_where_along(h['xy'][beat], vec)}"
    raise ValueError(f"unknown play {scene.play!r}")


def _where_along(xy, axis) -> int:
    """Which quarter of the pitch the pair sits in, counted along the pair's own axis (holder ->
    other): in a foul the pair drifts towards the victim, in a mirror towards the other player, so
    this is where a single frame could hint at who moved."""
    axis = np.asarray(axis, dtype=float) / max(1e-9, float(np.hypot(*axis)))
    along = float((np.asarray(xy, dtype=float) - 32.0) @ axis)  # -32 .. 32 from the pitch centre
    return int(np.clip((along + 24.0) // 12.0, 0, 3))


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
BALL = {"soccer": ((250, 250, 246), 1.8), "basketball": ((236, 108, 24), 2.1), "hockey": ((16, 16, 18), 1.5)}


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
    rim = (250, 250, 250) if scene.sport == "hockey" else shade(colour, 0.35)  # a puck needs a light rim
    canvas.circle(bx, by, r, fill=colour, outline=rim, width=0.6)
    pixels = np.asarray(canvas.finish(), dtype=np.float32) + rng.normal(0.0, 2.0, (size, size, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _draw_player(canvas: Canvas, p: dict, colours: list[str], xy, down: bool) -> None:
    """A disc in the team colour with a light "face" towards where he faces (his team's attack);
    keepers wear a white ring; a fallen player is a long flat body along his facing."""
    fill = TEAM_RGB[colours[p["team"]]]
    x, y = xy
    f = p["facing"]
    if down:
        pts = [(x + 4.6 * math.cos(t) * math.cos(f) - 2.0 * math.sin(t) * math.sin(f),
                y + 4.6 * math.cos(t) * math.sin(f) + 2.0 * math.sin(t) * math.cos(f))
               for t in np.linspace(0, 2 * math.pi, 18, endpoint=False)]
        canvas.polygon(pts, fill=shade(fill, 0.75), outline=shade(fill, 0.4))
        return
    ring = (250, 250, 250) if p["keeper"] else shade(fill, 0.5)
    canvas.circle(x, y, R_PLAYER, fill=fill, outline=ring, width=0.9 if p["keeper"] else 0.6)
    canvas.circle(x + 1.6 * math.cos(f), y + 1.6 * math.sin(f), 0.9, fill=(244, 232, 210))


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
    "push": "a {d} defender runs into the {a} player's back and knocks him down, a foul",
    "stumble": "the {a} player backs into a {d} defender and falls over, no foul",
    "trip": "a {d} defender comes in from the side and brings the {a} player down, a foul",
    "dive": "the {a} player moves into a {d} defender standing beside him and goes down, a dive",
    "block": "a {d} defender runs into the {a} player from the front and knocks him down, a foul",
    "collision": "the {a} player runs into a {d} defender standing in his path and falls, no foul",
    "elbow": "the {a} player charges into a {d} defender's side and knocks him down, an elbow",
    "flop": "a {d} defender leans into the {a} player and goes down, a flop",
    "completed": "the {a} team plays a pass past a {d} player and it reaches a teammate",
    "intercepted": "the {a} team plays a pass that a {d} player cuts out",
}


def noisy_caption(attrs: dict, rng: np.random.Generator, mention_p: float = 0.7, wrong_p: float = 0.2) -> str:
    """A free-text caption of ``scene_dict(scene)``: each fact is mentioned with ``mention_p`` and,
    when mentioned, replaced by a wrong value with ``wrong_p``."""
    s = SportScene(**attrs)
    mp, wp = mention_p, wrong_p
    sport = maybe(rng, s.sport, SPORTS, mp, wp)
    parts = [f"{sport} clip" if sport else "sports clip"]
    x = s.team_of(s.holder[0])
    cx, cy = s.colours[x], s.colours[1 - x]
    if rng.random() < mp:
        parts[0] += f", {s.colours[0]} against {s.colours[1]}"
    n = maybe(rng, str(len(s.players)), tuple(str(i) for i in range(4, 9)), mp, wp)
    if n:
        parts.append(f"{n} players on the field")
    start = maybe(rng, cx, tuple(TEAM_RGB), mp, wp)
    if start:
        way = maybe(rng, "right" if s.attack[x] > 0 else "left", ("left", "right"), mp, wp)
        parts.append(f"the {start} team has the ball" + (f", attacking to the {way}" if way else ""))
    choices = tuple(v for v in VARIANTS if v not in PASS_OUTCOMES) if s.play == "duel" else PASS_OUTCOMES
    event = maybe(rng, s.variant, choices, mp, wp)
    if event:
        parts.append(_EVENT_TEXT[event].format(a=cx, d=cy))
    end = maybe(rng, s.colours[s.team_of(s.holder[-1])], tuple(TEAM_RGB), mp, wp)
    if end:
        parts.append(f"the {end} team has it at the end")
    return "; ".join(parts) + "."
