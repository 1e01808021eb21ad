"""SketchPedes attribute vocabulary and per-identity sampling.

An identity is a fixed set of visible attributes (gender, hair, hat, top,
bottom, shoes, bag) plus a body that is never captioned (skin tone, build,
height). Every image of an identity draws these same attributes; only the
camera-like conditions (position, scale, pose, lighting, noise, background)
change between images. No two identities of one generation share the full set
of captioned attributes, so a perfect caption always names exactly one person.

Colours are RGB triples in 0..255, chosen far apart from each other so that a
colour word can be checked against the pixels (see tests/test_synth.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from gadms_cli.errors import GadmsError

# Garment colours: name -> RGB (0..255). Eleven names that captions use as-is.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (205, 30, 35),
    "orange": (240, 125, 15),
    "yellow": (245, 220, 30),
    "green": (35, 145, 55),
    "blue": (35, 75, 200),
    "purple": (125, 50, 165),
    "pink": (240, 120, 180),
    "brown": (115, 70, 35),
    "black": (25, 25, 28),
    "white": (240, 240, 236),
    "gray": (130, 130, 130),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)

# Hair colours (a subset of the palette, weighted like street photos: mostly dark).
HAIR_COLOUR_WEIGHTS: dict[str, float] = {"black": 0.42, "brown": 0.26, "yellow": 0.14, "gray": 0.07, "white": 0.05, "red": 0.06}
HAIR_LENGTHS: tuple[str, ...] = ("short", "medium", "long")

TOP_TYPES: tuple[str, ...] = ("t-shirt", "tank top", "shirt", "sweater", "jacket", "coat", "dress")
BOTTOM_TYPES: tuple[str, ...] = ("trousers", "jeans", "shorts", "skirt")
BAG_TYPES: tuple[str, ...] = ("backpack", "handbag", "shoulder bag")
HAT_TYPES: tuple[str, ...] = ("cap", "beanie", "hat")

# Type probabilities per gender (a dress and a skirt are drawn for women only).
_TOP_WEIGHTS = {
    "male": {"t-shirt": 0.25, "tank top": 0.08, "shirt": 0.2, "sweater": 0.15, "jacket": 0.2, "coat": 0.12},
    "female": {"t-shirt": 0.2, "tank top": 0.08, "shirt": 0.13, "sweater": 0.12, "jacket": 0.15, "coat": 0.1, "dress": 0.22},
}
_BOTTOM_WEIGHTS = {
    "male": {"trousers": 0.38, "jeans": 0.37, "shorts": 0.25},
    "female": {"trousers": 0.25, "jeans": 0.3, "shorts": 0.18, "skirt": 0.27},
}
_HAIR_LENGTH_WEIGHTS = {
    "male": {"short": 0.8, "medium": 0.15, "long": 0.05},
    "female": {"short": 0.15, "medium": 0.3, "long": 0.55},
}
_BAG_WEIGHTS = {
    "male": {None: 0.35, "backpack": 0.35, "handbag": 0.05, "shoulder bag": 0.25},
    "female": {None: 0.3, "backpack": 0.25, "handbag": 0.27, "shoulder bag": 0.18},
}
_HAT_WEIGHTS = {None: 0.68, "cap": 0.16, "beanie": 0.08, "hat": 0.08}
# Jeans are mostly blue, black or gray; every other garment takes any palette colour.
_JEANS_COLOUR_WEIGHTS = {"blue": 0.45, "black": 0.2, "gray": 0.12, "white": 0.08, "brown": 0.05, "green": 0.03, "red": 0.03, "pink": 0.02, "purple": 0.02}

# Skin tones (RGB). Never captioned; fixed per identity.
SKIN_TONES: tuple[tuple[int, int, int], ...] = (
    (250, 218, 190),
    (232, 188, 150),
    (198, 146, 108),
    (150, 100, 68),
    (98, 66, 46),
)


@dataclass(frozen=True)
class Garment:
    """One worn or carried item: its type (e.g. ``"jacket"``) and palette colour name."""

    type: str
    colour: str


@dataclass(frozen=True)
class Body:
    """Per-identity body shape, not captioned.

    ``skin``: RGB; ``build``: width multiplier (~0.93-1.07); ``shade``: a small
    per-identity RGB offset (-8..8) added to garment colours so that two
    identities in "red" are not pixel-identical.
    """

    skin: tuple[int, int, int]
    build: float
    shade: tuple[int, int, int]


@dataclass(frozen=True)
class Identity:
    """The captioned attributes of one person, plus the body.

    ``bottom`` is ``None`` when ``top.type == "dress"`` (a dress covers both);
    ``hat`` and ``bag`` are ``None`` when the person has none. ``hair`` uses
    ``type`` for the length (short, medium, long).
    """

    pid: int
    gender: str
    hair: Garment
    top: Garment
    bottom: Garment | None
    shoes: Garment
    hat: Garment | None
    bag: Garment | None
    body: Body

    def signature(self) -> tuple:
        """Everything a caption can say; two identities never share it."""
        return (self.gender, self.hair, self.top, self.bottom, self.shoes, self.hat, self.bag)

    def captioned_dict(self) -> dict:
        """The captioned attributes as plain JSON-ready data (no body)."""
        def item(garment: Garment | None) -> dict | None:
            return None if garment is None else {"type": garment.type, "colour": garment.colour}

        return {
            "gender": self.gender,
            "hair": item(self.hair),
            "top": item(self.top),
            "bottom": item(self.bottom),
            "shoes": item(self.shoes),
            "hat": item(self.hat),
            "bag": item(self.bag),
        }


def _weighted(rng: random.Random, weights: dict):
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys], k=1)[0]


def sample_identity(pid: int, rng: random.Random) -> Identity:
    """Draw the attributes of identity ``pid`` from ``rng``."""
    gender = rng.choice(("male", "female"))
    hair = Garment(_weighted(rng, _HAIR_LENGTH_WEIGHTS[gender]), _weighted(rng, HAIR_COLOUR_WEIGHTS))
    top = Garment(_weighted(rng, _TOP_WEIGHTS[gender]), rng.choice(COLOURS))
    bottom: Garment | None = None
    if top.type != "dress":
        bottom_weights = dict(_BOTTOM_WEIGHTS[gender])
        if top.type == "coat":  # a knee-length coat would hide shorts or a skirt entirely
            bottom_weights.pop("shorts")
            bottom_weights.pop("skirt", None)
        bottom_type = _weighted(rng, bottom_weights)
        colour = _weighted(rng, _JEANS_COLOUR_WEIGHTS) if bottom_type == "jeans" else rng.choice(COLOURS)
        bottom = Garment(bottom_type, colour)
    shoes = Garment("shoes", rng.choice(COLOURS))
    hat_type = _weighted(rng, _HAT_WEIGHTS)
    hat = Garment(hat_type, rng.choice(COLOURS)) if hat_type else None
    bag_type = _weighted(rng, _BAG_WEIGHTS[gender])
    bag = Garment(bag_type, rng.choice(COLOURS)) if bag_type else None
    body = Body(
        skin=rng.choice(SKIN_TONES),
        build=round(rng.uniform(0.93, 1.07), 4),
        shade=(rng.randint(-8, 8), rng.randint(-8, 8), rng.randint(-8, 8)),
    )
    return Identity(pid, gender, hair, top, bottom, shoes, hat, bag, body)


def person_details(identity: Identity) -> tuple:
    """What tells colour twins apart: gender, hair length, hat type and bag type (None: no hat, no bag)."""
    return (identity.gender, identity.hair.type, identity.hat and identity.hat.type, identity.bag and identity.bag.type)


def outfit(identity: Identity) -> tuple:
    """The clothes colour twins share: top, bottom and shoes (types and colours)."""
    return (identity.top, identity.bottom, identity.shoes)


def sample_twin(
    base: Identity, pid: int, rng: random.Random, taken: set[tuple] = frozenset(), wearers: Sequence[Identity] = ()
) -> Identity:
    """A "colour twin" of ``base``: the same clothes (types and colours) and the same colours
    everywhere, other person details.

    Gender (kept female when the outfit has a dress or skirt), hair length, hat and bag are
    drawn again until :func:`person_details` differs from ``base``'s and from every tuple in
    ``taken`` (the details of the others who wear these clothes). The hair keeps ``base``'s
    colour, and a hat or bag takes the colour of the first hat or bag among ``base`` and
    ``wearers`` (the others who wear these clothes), so no colour tells the twins apart: only
    gender, hair length, hat or bag do (a colour difference would let a model tell them apart
    by colour alone, which it already knows).
    """
    hat_colour = next((p.hat.colour for p in (base, *wearers) if p.hat), None)
    bag_colour = next((p.bag.colour for p in (base, *wearers) if p.bag), None)
    needs_female = base.top.type == "dress" or (base.bottom is not None and base.bottom.type == "skirt")
    taken = {person_details(base), *taken}
    for _ in range(1000):
        gender = "female" if needs_female else rng.choice(("male", "female"))
        hair = Garment(_weighted(rng, _HAIR_LENGTH_WEIGHTS[gender]), base.hair.colour)
        hat_type = _weighted(rng, _HAT_WEIGHTS)
        hat = Garment(hat_type, hat_colour or rng.choice(COLOURS)) if hat_type else None
        bag_type = _weighted(rng, _BAG_WEIGHTS[gender])
        bag = Garment(bag_type, bag_colour or rng.choice(COLOURS)) if bag_type else None
        if (gender, hair.type, hat_type, bag_type) not in taken:
            break
    body = Body(
        skin=rng.choice(SKIN_TONES),
        build=round(rng.uniform(0.93, 1.07), 4),
        shade=(rng.randint(-8, 8), rng.randint(-8, 8), rng.randint(-8, 8)),
    )
    return Identity(pid, gender, hair, base.top, base.bottom, base.shoes, hat, bag, body)


# Keys of a requirement (see parse_requirement) and the values each may take.
REQUIREMENT_VALUES: dict[str, tuple[str | None, ...]] = {
    "gender": ("male", "female"),
    "hair.type": HAIR_LENGTHS,
    "hair.colour": tuple(HAIR_COLOUR_WEIGHTS),
    "top.type": TOP_TYPES,
    "top.colour": COLOURS,
    "bottom.type": BOTTOM_TYPES,
    "bottom.colour": COLOURS,
    "shoes.colour": COLOURS,
    "hat.type": HAT_TYPES,
    "hat.colour": COLOURS,
    "bag.type": BAG_TYPES,
    "bag.colour": COLOURS,
}


def parse_requirement(text: str, flag: str = "--test-include") -> dict[str, str]:
    """``"gender=female,top.type=coat,top.colour=red"`` -> a dict; GadmsError naming ``flag`` if bad."""
    requirement: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = (x.strip() for x in part.partition("="))
        if not sep or key not in REQUIREMENT_VALUES:
            raise GadmsError(f"{flag} {text!r}: write KEY=VALUE pairs with KEY one of {', '.join(REQUIREMENT_VALUES)}")
        if value not in REQUIREMENT_VALUES[key]:
            raise GadmsError(f"{flag} {text!r}: {key} cannot be {value!r}; choose one of {', '.join(map(str, REQUIREMENT_VALUES[key]))}")
        requirement[key] = value
    if not requirement:
        raise GadmsError(f"{flag} is empty; write e.g. gender=female,top.type=coat,top.colour=red")
    return requirement


def satisfies(identity: Identity, requirement: dict[str, str]) -> bool:
    """Whether ``identity`` has every attribute ``requirement`` names."""
    for key, value in requirement.items():
        slot, _, field = key.partition(".")
        if not field:
            if getattr(identity, slot) != value:
                return False
            continue
        garment = getattr(identity, slot)
        if garment is None or getattr(garment, field) != value:
            return False
    return True


_MAX_ATTEMPTS = 20_000


def sample_identities(
    seed: int,
    num_ids: int,
    first_pid: int = 1,
    twin_fraction: float = 0.0,
    blocks: tuple[int, ...] | None = None,
    required: dict[int, dict[str, str]] | None = None,
) -> list[Identity]:
    """Identities ``first_pid .. first_pid + num_ids - 1``, all with distinct signatures.

    Identity ``pid`` is drawn from its own RNG stream (seed, pid, attempt); a draw
    whose signature repeats an earlier identity's is redrawn with the next attempt.
    ``blocks`` splits the identities into consecutive groups (the splits); with
    ``twin_fraction`` > 0, that fraction of the identities after the first of a group is
    a colour twin (:func:`sample_twin`) of an earlier identity of the same group, so a
    split holds people that only gender, hair, hat or bag tell apart. ``required`` maps a
    pid to attributes it must have (:func:`satisfies`); such pids are never twins.
    """
    required = required or {}
    blocks = blocks if blocks is not None else (num_ids,)
    if sum(blocks) != num_ids:
        raise ValueError(f"blocks {blocks} do not add up to {num_ids} identities")
    seen: set[tuple] = set()
    identities: list[Identity] = []
    pid = first_pid
    for size in blocks:
        block: list[Identity] = []
        for _ in range(size):
            twin_rng = random.Random(f"sketchpedes:{seed}:twin:{pid}")
            twin_of = block[twin_rng.randrange(len(block))] if block and pid not in required and twin_rng.random() < twin_fraction else None
            wearers = [other for other in block if outfit(other) == outfit(twin_of)] if twin_of else []
            taken = {person_details(other) for other in wearers}
            for attempt in range(_MAX_ATTEMPTS):
                stream = random.Random(f"sketchpedes:{seed}:{'twin' if twin_of else 'identity'}:{pid}:{attempt}")
                if twin_of:
                    identity = sample_twin(twin_of, pid, stream, taken, wearers)
                else:
                    identity = sample_identity(pid, stream)
                if identity.signature() not in seen and satisfies(identity, required.get(pid, {})):
                    break
            else:
                if pid in required:
                    wanted = ",".join(f"{k}={v}" for k, v in required[pid].items())
                    raise GadmsError(f"--test-include {wanted}: no person matched in {_MAX_ATTEMPTS:,} draws; the combination is impossible or too rare (a dress or skirt is drawn for women only, a coat never with shorts or a skirt)")
                raise RuntimeError(f"could not draw a distinct identity {pid}")  # pragma: no cover - needs ~10^7 identities
            seen.add(identity.signature())
            block.append(identity)
            pid += 1
        identities.extend(block)
    return identities


def shaded(colour: str, shade: tuple[int, int, int]) -> tuple[int, int, int]:
    """The palette RGB of ``colour`` moved by a per-identity ``shade`` offset, clipped to 0..255."""
    return tuple(min(255, max(0, c + s)) for c, s in zip(PALETTE[colour], shade))  # type: ignore[return-value]
