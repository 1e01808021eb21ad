"""Drawing one SketchPedes pedestrian with PIL ImageDraw.

The figure is laid out in *units*: one unit is 1/100 of the person's height,
from the top of the head (y = 0) to the soles (y = 100); x = 0 is the body's
centre line, negative x is the figure's left side of the picture. Widths are
additionally multiplied by the identity's build and a per-image horizontal
squeeze (a crude change of viewing angle). Landmarks (units): head 0-13,
shoulders 16.5, waist 44, crotch 50, knees 72, ankles 95.

How gender is visible (documented in docs/sketchpedes.md): men have broader
shoulders (11 vs 9.3 units half-width), narrower hips (8.8 vs 9.8), a wider
head and a thin dark mouth line; women have narrow shoulders, wide hips and
red lips. Hair length, dresses and skirts correlate with gender as in street
photos but are separate attributes.

Besides the picture, :func:`draw_person` returns *garment boxes*: pixel
rectangles ``[x0, y0, x1, y1)`` placed inside each drawn garment where that
garment's colour covers (almost) every pixel. Tests sample them to check that
caption colour words match the pixels.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from gadms_cli.data.synth.attributes import Identity, shaded

RGB = tuple[int, int, int]
Box = list[int]  # [x0, y0, x1, y1) in pixels

# Body proportions per gender (units, see module docstring).
_PROPORTIONS = {
    "male": {"shoulder": 11.0, "waist": 8.5, "hip": 8.8, "head_w": 10.2, "head_h": 13.0, "neck": 2.3, "arm": 3.7},
    "female": {"shoulder": 9.3, "waist": 7.0, "hip": 9.8, "head_w": 9.4, "head_h": 12.5, "neck": 1.9, "arm": 3.2},
}
_HEM = {"t-shirt": 50.0, "tank top": 49.0, "shirt": 50.0, "sweater": 50.0, "jacket": 52.0, "coat": 72.0, "dress": 68.0}
_LONG_SLEEVES = {"shirt", "sweater", "jacket", "coat"}
_HAIR_END = {"short": 0.0, "medium": 17.0, "long": 31.0}  # lowest y of the hair strands
_EYE = (30, 24, 22)
_LIPS = (190, 55, 70)


def _scale(colour: RGB, factor: float) -> RGB:
    return tuple(min(255, int(c * factor)) for c in colour)  # type: ignore[return-value]


@dataclass(frozen=True)
class Pose:
    """Per-image figure placement and pose.

    ``centre_x``/``top``: pixel position of the head top centre; ``unit``:
    pixels per unit vertically; ``unit_x``: pixels per unit horizontally (unit x
    build x squeeze); ``arm_spread``: (left, right) extra hand offset in units;
    ``leg_spread``: extra ankle offset in units.
    """

    centre_x: float
    top: float
    unit: float
    unit_x: float
    arm_spread: tuple[float, float]
    leg_spread: float


def half_extent(identity: Identity, arm_spread: float) -> float:
    """Half of the widest horizontal extent of the figure, in (unscaled) units."""
    shape = _PROPORTIONS[identity.gender]
    extent = shape["shoulder"] + arm_spread + 2.2
    if identity.bag is not None and identity.bag.type == "handbag":
        extent = shape["shoulder"] + arm_spread + 3.4
    if identity.bag is not None and identity.bag.type == "shoulder bag":
        extent = max(extent, shape["hip"] + 3.7)
    if identity.hat is not None and identity.hat.type == "hat":
        extent = max(extent, shape["head_w"] / 2 + 3.7)
    return extent


def sample_pose(identity: Identity, width: int, height: int, rng: random.Random) -> Pose:
    """Random scale, position, squeeze and limb spread that keep the whole figure inside the image."""
    arm_spread = (rng.uniform(0.0, 2.5), rng.uniform(0.0, 2.5))
    squeeze = rng.uniform(0.9, 1.06) * identity.body.build
    person_h = height * rng.uniform(0.8, 0.94)
    extent = half_extent(identity, max(arm_spread))
    person_h = min(person_h, 0.98 * width * 100.0 / (2.0 * extent * squeeze))
    unit = person_h / 100.0
    unit_x = unit * squeeze
    slack_x = max(0.0, width / 2.0 - extent * unit_x)
    centre_x = width / 2.0 + rng.uniform(-0.85, 0.85) * slack_x
    top = rng.uniform(0.1, 0.9) * (height - person_h)
    return Pose(centre_x, top, unit, unit_x, arm_spread, rng.uniform(0.0, 2.0))


@dataclass
class _Figure:
    """A pen in figure units over one ImageDraw, collecting garment boxes."""

    draw: ImageDraw.ImageDraw
    pose: Pose
    boxes: dict[str, list[Box]] = field(default_factory=dict)

    def xy(self, x: float, y: float) -> tuple[float, float]:
        return (self.pose.centre_x + x * self.pose.unit_x, self.pose.top + y * self.pose.unit)

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        (a, b), (c, d) = self.xy(x0, y0), self.xy(x1, y1)
        return (a, b, c, d)

    def polygon(self, points: list[tuple[float, float]], fill: RGB) -> None:
        self.draw.polygon([self.xy(x, y) for x, y in points], fill=fill)

    def ellipse(self, x0: float, y0: float, x1: float, y1: float, fill: RGB) -> None:
        self.draw.ellipse(self.rect(x0, y0, x1, y1), fill=fill)

    def box(self, x0: float, y0: float, x1: float, y1: float, fill: RGB) -> None:
        self.draw.rectangle(self.rect(x0, y0, x1, y1), fill=fill)

    def chord_top(self, x0: float, y0: float, x1: float, y1: float, fill: RGB) -> None:
        """Upper half of the ellipse in the unit box (a dome)."""
        self.draw.chord(self.rect(x0, y0, x1, y1), 180, 360, fill=fill)

    def band(self, start: tuple[float, float], end: tuple[float, float], width: float, fill: RGB) -> None:
        """A straight strap of ``width`` units (measured across) from ``start`` to ``end``."""
        (sx, sy), (ex, ey) = self.xy(*start), self.xy(*end)
        length = math.hypot(ex - sx, ey - sy) or 1.0
        half = width * self.pose.unit_x / 2.0
        nx, ny = -(ey - sy) / length * half, (ex - sx) / length * half
        self.draw.polygon([(sx + nx, sy + ny), (ex + nx, ey + ny), (ex - nx, ey - ny), (sx - nx, sy - ny)], fill=fill)

    def mark(self, slot: str, x0: float, y0: float, x1: float, y1: float) -> None:
        """Record a garment box, shrunk to whole pixels that lie fully inside the unit rectangle."""
        (a, b), (c, d) = self.xy(x0, y0), self.xy(x1, y1)
        box = [math.ceil(min(a, c)), math.ceil(min(b, d)), math.floor(max(a, c)), math.floor(max(b, d))]
        if box[2] > box[0] and box[3] > box[1]:
            self.boxes.setdefault(slot, []).append(box)


def _leg_line(side: int, spread: float, hip: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """Leg centre at the crotch line (y=50) and at the ankle (y=95) for ``side`` -1 (left) or +1."""
    return (side * hip * 0.5, 50.0), (side * (3.6 + spread), 95.0)


def _leg_at(side: int, spread: float, hip: float, y: float) -> float:
    (x0, y0), (x1, y1) = _leg_line(side, spread, hip)
    return x0 + (x1 - x0) * (y - y0) / (y1 - y0)


def _draw_leg(fig: _Figure, side: int, spread: float, hip: float, top_w: float, ankle_w: float, y_end: float, fill: RGB) -> None:
    """One leg (skin or garment) from the crotch line down to ``y_end``, tapering to ``ankle_w``."""
    (tx, ty), (bx, by) = _leg_line(side, spread, hip)
    t = (y_end - ty) / (by - ty)
    ex, ew = tx + (bx - tx) * t, top_w + (ankle_w - top_w) * t
    fig.polygon([(tx - top_w / 2, ty - 3.0), (tx + top_w / 2, ty - 3.0), (ex + ew / 2, y_end), (ex - ew / 2, y_end)], fill)


def _mark_leg(fig: _Figure, slot: str, side: int, spread: float, hip: float, y0: float, y1: float, half: float) -> None:
    """Box of ``half`` units either side of the leg centre line, valid over ``y0..y1`` (legs slant)."""
    a, b = _leg_at(side, spread, hip, y0), _leg_at(side, spread, hip, y1)
    fig.mark(slot, max(a, b) - half, y0, min(a, b) + half, y1)


def _draw_bottom(fig: _Figure, identity: Identity, shape: dict, spread: float, skin: RGB, covered_to: float) -> None:
    """Legs and the bottom garment; ``covered_to`` is the lowest y a coat hides (0 without a coat)."""
    hip = shape["hip"]
    bottom = identity.bottom
    long_legs = bottom is not None and bottom.type in ("trousers", "jeans")
    if not long_legs:  # bare legs under shorts, skirt or dress
        for side in (-1, 1):
            _draw_leg(fig, side, spread, hip, hip * 0.75, 3.3, 96.0, skin)
    if bottom is None:
        return
    colour = shaded(bottom.colour, identity.body.shade)
    if long_legs:
        ankle_w = 3.9 if bottom.type == "jeans" else 4.9
        top_w = hip * (0.98 if bottom.type == "jeans" else 1.05)
        fig.box(-hip, 46.0, hip, 51.0, colour)
        for side in (-1, 1):
            _draw_leg(fig, side, spread, hip, top_w, ankle_w, 96.0, colour)
            (tx, ty), (bx, by) = _leg_line(side, spread, hip)
            if bottom.type == "jeans":  # a light outer seam
                outer_t, outer_b = tx + side * top_w * 0.42, bx + side * ankle_w * 0.38
                fig.band((outer_t, ty), (outer_b, by), 0.35, _scale(colour, 1.35))
            y0 = max(56.0, covered_to + 3.0)
            _mark_leg(fig, "bottom", side, spread, hip, y0, 90.0, 1.0)
    elif bottom.type == "shorts":
        fig.box(-hip, 46.0, hip, 51.0, colour)
        for side in (-1, 1):
            _draw_leg(fig, side, spread, hip, hip * 1.08, 5.6, 63.0, colour)
            _mark_leg(fig, "bottom", side, spread, hip, 52.0, 60.0, 1.3)
    else:  # skirt
        fig.polygon([(-shape["waist"], 45.0), (shape["waist"], 45.0), (hip + 3.0, 67.0), (-hip - 3.0, 67.0)], colour)
        fig.mark("bottom", -3.5, 50.0, 3.5, 64.0)


def _draw_shoes(fig: _Figure, identity: Identity, spread: float, hip: float) -> None:
    colour = shaded(identity.shoes.colour, identity.body.shade)
    for side in (-1, 1):
        cx = _leg_at(side, spread, hip, 95.0) + side * 0.8
        fig.ellipse(cx - 3.0, 94.5, cx + 3.0, 100.0, colour)
        fig.mark("shoes", cx - 1.8, 95.8, cx + 1.8, 99.0)


def _draw_top(fig: _Figure, identity: Identity, shape: dict, skin: RGB) -> None:
    top = identity.top
    colour = shaded(top.colour, identity.body.shade)
    detail = _scale(colour, 0.62) if sum(colour) > 120 else (80, 80, 80)  # collars, buttons: darker, or grey on black
    sw, waist, hip = shape["shoulder"], shape["waist"], shape["hip"]
    hem = _HEM[top.type]
    bulk = 0.6 if top.type in ("jacket", "coat") else 0.0
    if top.type == "tank top":  # bare shoulders, then a narrow top with straps
        fig.polygon([(-sw + 1.2, 15.8), (sw - 1.2, 15.8), (sw, 18.0), (waist, 30.0), (-waist, 30.0), (-sw, 18.0)], skin)
        fig.polygon([(-sw + 2.6, 20.0), (sw - 2.6, 20.0), (waist, 42.0), (hip, hem), (-hip, hem), (-waist, 42.0)], colour)
        for side in (-1, 1):
            fig.band((side * (sw - 4.0), 15.8), (side * (sw - 3.3), 21.0), 1.6, colour)
    else:
        lower = hip + bulk
        points = [(-sw + 1.5, 15.8), (sw - 1.5, 15.8), (sw + bulk, 17.6), (waist + bulk, 42.0)]
        if top.type == "coat":
            points += [(hip + 2.6, hem), (-hip - 2.6, hem)]
        elif top.type == "dress":
            points += [(waist, 45.0), (hip + 3.6, hem), (-hip - 3.6, hem), (-waist, 45.0)]
        else:
            points += [(lower, hem), (-lower, hem)]
        points += [(-waist - bulk, 42.0), (-sw - bulk, 17.6)]
        fig.polygon(points, colour)
    # Necklines and fastenings: what tells a shirt, a jacket and a coat apart.
    if top.type in ("t-shirt", "sweater", "dress"):
        fig.ellipse(-2.2, 14.6, 2.2, 18.4, skin)
    if top.type == "sweater":
        fig.box(-hip, hem - 2.5, hip, hem, _scale(colour, 0.8))
    if top.type == "shirt":
        fig.polygon([(-2.0, 15.8), (2.0, 15.8), (0.0, 20.0)], skin)
        fig.polygon([(-2.8, 15.6), (-0.2, 20.2), (-1.2, 15.6)], detail)
        fig.polygon([(2.8, 15.6), (0.2, 20.2), (1.2, 15.6)], detail)
        fig.box(-0.25, 20.0, 0.25, hem, detail)
    if top.type == "jacket":
        fig.polygon([(-2.6, 15.8), (2.6, 15.8), (0.0, 22.0)], (235, 235, 232))
        fig.box(-0.3, 21.5, 0.3, hem, (60, 60, 64))
        fig.box(-hip - bulk, hem - 1.8, hip + bulk, hem, detail)
    if top.type == "coat":
        fig.polygon([(-3.0, 15.8), (3.0, 15.8), (0.0, 23.0)], (40, 40, 44))
        for y in (26.0, 33.0, 40.0, 47.0, 54.0):
            for x in (-1.6, 1.6):
                fig.ellipse(x - 0.45, y - 0.45, x + 0.45, y + 0.45, detail)
    if top.type in ("shirt", "jacket", "coat"):  # keep the placket, zip or buttons out of the boxes
        fig.mark("top", -2.6, 23.0, -1.0, 40.0)
        fig.mark("top", 1.0, 23.0, 2.6, 40.0)
    else:
        fig.mark("top", -2.4, 23.0, 2.4, 40.0)
    if top.type == "dress":
        fig.mark("top", -3.0, 50.0, 3.0, 64.0)
    if top.type == "coat":
        fig.mark("top", -hip * 0.35, 57.0, -0.9, 68.0)
        fig.mark("top", 0.9, 57.0, hip * 0.35, 68.0)


def _draw_arms(fig: _Figure, identity: Identity, shape: dict, pose: Pose, skin: RGB) -> list[tuple[float, float]]:
    """Both arms with sleeves and hands; returns the hand centres (units)."""
    top = identity.top
    colour = shaded(top.colour, identity.body.shade)
    sw, arm_w = shape["shoulder"], shape["arm"]
    sleeve_end = {"t-shirt": 27.0, "dress": 26.0, "tank top": 0.0}.get(top.type, 49.0)
    sleeve_w = arm_w + (0.8 if top.type in ("jacket", "coat") else 0.3)
    hands = []
    for side, spread in zip((-1, 1), pose.arm_spread):
        shoulder = (side * (sw - 1.6), 17.6)
        hand = (side * (sw + spread), 51.0)
        fig.band(shoulder, hand, arm_w, skin)
        if sleeve_end > 0:
            t = (sleeve_end - shoulder[1]) / (hand[1] - shoulder[1])
            cuff = (shoulder[0] + (hand[0] - shoulder[0]) * t, sleeve_end)
            fig.band((shoulder[0], shoulder[1] - 0.8), cuff, sleeve_w, colour)
        fig.ellipse(hand[0] - 1.7, hand[1] - 1.2, hand[0] + 1.7, hand[1] + 2.2, skin)
        hands.append(hand)
    return hands


def _draw_head(fig: _Figure, identity: Identity, shape: dict, skin: RGB) -> None:
    hw, hh = shape["head_w"] / 2.0, shape["head_h"]
    hair = shaded(identity.hair.colour, identity.body.shade)
    hat = identity.hat
    fig.ellipse(-hw - 0.4, -0.4, hw + 0.4, 7.2, hair)  # hair cap, the face covers its lower part
    fig.ellipse(-hw, 2.8, hw, hh, skin)
    for side in (-1, 1):
        fig.ellipse(side * hw * 0.38 - 0.5, 6.0, side * hw * 0.38 + 0.5, 6.9, _EYE)
    if identity.gender == "female":
        fig.ellipse(-1.1, 9.6, 1.1, 10.6, _LIPS)
    else:
        fig.box(-1.2, 9.9, 1.2, 10.3, (95, 55, 50))
    if hat is None:
        fig.mark("hair", -hw * 0.45, 0.4, hw * 0.45, 2.3)
    if identity.hair.type != "short" or hat is not None:  # strands framing the face
        end = max(_HAIR_END[identity.hair.type], 9.0)
        for side in (-1, 1):
            inner, outer = side * (hw - 1.4), side * (hw + 1.3)
            fig.box(min(inner, outer), 3.5, max(inner, outer), end, hair)
            core = (side * (hw - 0.9), side * (hw + 0.8))
            if end > hh + 1.5:
                fig.mark("hair", min(core), hh + 0.5, max(core), end - 0.5)
            else:
                fig.mark("hair", min(core), 5.6, max(core), end - 0.5)
    if hat is None:
        return
    hat_colour = shaded(hat.colour, identity.body.shade)
    if hat.type == "cap":
        fig.chord_top(-hw - 0.5, -1.2, hw + 0.5, 8.0, hat_colour)
        fig.polygon([(-hw - 0.3, 3.0), (hw + 3.0, 3.0), (hw + 3.0, 4.6), (-hw - 0.3, 4.4)], _scale(hat_colour, 0.8))
        fig.mark("hat", -hw * 0.5, 0.0, hw * 0.5, 2.4)
    elif hat.type == "beanie":
        fig.chord_top(-hw - 0.7, -1.8, hw + 0.7, 10.0, hat_colour)
        fig.box(-hw - 0.7, 3.2, hw + 0.7, 5.2, _scale(hat_colour, 0.85))
        fig.mark("hat", -hw * 0.5, -0.6, hw * 0.5, 2.8)
    else:  # brimmed hat
        fig.box(-hw + 0.4, -3.0, hw - 0.4, 3.4, hat_colour)
        fig.ellipse(-hw - 3.5, 2.2, hw + 3.5, 4.6, _scale(hat_colour, 0.9))
        fig.mark("hat", -hw + 1.2, -2.3, hw - 1.2, 1.8)


def _draw_backpack_body(fig: _Figure, identity: Identity, shape: dict) -> None:
    """The pack behind the torso: seen beside the neck and past the shoulders."""
    colour = shaded(identity.bag.colour, identity.body.shade)  # type: ignore[union-attr]
    sw = shape["shoulder"]
    fig.draw.rounded_rectangle(fig.rect(-sw - 1.2, 13.5, sw + 1.2, 42.0), radius=2.0 * fig.pose.unit, fill=colour)


def _draw_bag_front(fig: _Figure, identity: Identity, shape: dict, hands: list[tuple[float, float]]) -> None:
    bag = identity.bag
    if bag is None:
        return
    colour = shaded(bag.colour, identity.body.shade)
    sw, hip = shape["shoulder"], shape["hip"]
    hair_end = _HAIR_END[identity.hair.type]
    if bag.type == "backpack":
        for side in (-1, 1):
            x = side * (sw * 0.5 + 0.6)
            fig.band((x, 15.5), (x, 38.0), 2.2, colour)
            fig.mark("bag", x - 0.6, max(hair_end + 1.5, 21.0), x + 0.6, 37.0)
    elif bag.type == "shoulder bag":
        fig.band((sw * 0.55, 16.0), (-hip - 0.8, 45.0), 1.6, colour)
        fig.box(-hip - 3.5, 43.0, -hip + 3.0, 51.0, colour)
        fig.box(-hip - 3.5, 43.0, -hip + 3.0, 44.2, _scale(colour, 0.75))
        fig.mark("bag", -hip - 2.5, 45.0, -hip + 2.0, 50.0)
    else:  # handbag, held in the right hand
        hx, hy = hands[1]
        fig.band((hx - 1.6, hy + 2.5), (hx, hy - 0.5), 0.5, _scale(colour, 0.8))
        fig.band((hx + 1.6, hy + 2.5), (hx, hy - 0.5), 0.5, _scale(colour, 0.8))
        fig.box(hx - 3.2, hy + 1.5, hx + 3.2, hy + 8.0, colour)
        fig.mark("bag", hx - 2.2, hy + 2.5, hx + 2.2, hy + 7.0)


def draw_person(image: Image.Image, identity: Identity, pose: Pose) -> dict[str, list[Box]]:
    """Draw ``identity`` in ``pose`` onto ``image`` (in place); return its garment boxes.

    Boxes are keyed by slot (``hair``, ``hat``, ``top``, ``bottom``, ``shoes``,
    ``bag``); a dress is recorded under ``top`` (bodice and skirt boxes).
    """
    shape = dict(_PROPORTIONS[identity.gender])
    fig = _Figure(ImageDraw.Draw(image), pose)
    skin = identity.body.skin
    hem = _HEM[identity.top.type]
    if identity.bag is not None and identity.bag.type == "backpack":
        _draw_backpack_body(fig, identity, shape)
    if identity.hair.type != "short":  # hair falling behind the head and neck
        hw = shape["head_w"] / 2.0
        fig.box(-hw - 1.0, 2.0, hw + 1.0, _HAIR_END[identity.hair.type], shaded(identity.hair.colour, identity.body.shade))
    _draw_bottom(fig, identity, shape, pose.leg_spread, skin, hem if identity.top.type == "coat" else 0.0)
    _draw_shoes(fig, identity, pose.leg_spread, shape["hip"])
    fig.box(-shape["neck"], 12.0, shape["neck"], 17.0, skin)
    _draw_top(fig, identity, shape, skin)
    hands = _draw_arms(fig, identity, shape, pose, skin)
    _draw_bag_front(fig, identity, shape, hands)
    _draw_head(fig, identity, shape, skin)
    return fig.boxes
