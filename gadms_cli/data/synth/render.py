"""One SketchPedes picture: background, person, mirror, lighting, sensor noise.

Everything random comes from the ``random.Random`` handed in (one stream per
image), except the sensor-noise textures: a few Gaussian noise tiles (one per
noise level and colour cast) are drawn once per process from the generation
seed (numpy), and each image adds a random crop of one of them. Lighting and
noise are then one C-level operation per image (PIL ``ImageChops.add``):

    out = clip((picture + tile - 128) * gain + offset)

where the tile is centred on 128 plus the colour cast. That keeps per-image
cost low and every byte deterministic.

Photometric jitter is kept moderate on purpose (gain 0.9-1.1, offset +-4,
colour casts of up to 5 grey levels per channel, noise sigma 2-7 grey
levels): colour names must stay recognisable, which tests/test_synth.py
checks pixel by pixel.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops

from gadms_cli.data.synth.attributes import Identity
from gadms_cli.data.synth.background import draw_background
from gadms_cli.data.synth.draw import Box, draw_person, sample_pose

NOISE_SIGMAS: tuple[float, ...] = (2.0, 4.0, 7.0)  # grey levels
COLOUR_CASTS: tuple[tuple[int, int, int], ...] = ((0, 0, 0), (5, 2, -4), (-4, 0, 5), (2, 4, -2))  # RGB shifts


@dataclass(frozen=True)
class RenderedImage:
    """A finished picture with its garment boxes (pixels, ``[x0, y0, x1, y1)``) and the jitter used."""

    image: Image.Image
    boxes: dict[str, list[Box]]
    jitter: dict[str, float | int | bool | list[int]]


@lru_cache(maxsize=4)
def noise_tiles(seed: int, width: int, height: int) -> tuple[tuple[Image.Image, ...], ...]:
    """Noise images of 2*width x 2*height: ``tiles[sigma_index][cast_index]``.

    Each is Gaussian noise of that sigma centred on 128 + the colour cast (RGB, uint8).
    """
    rng = np.random.default_rng([seed, width, height])
    tiles = []
    for sigma in NOISE_SIGMAS:
        row = []
        for cast in COLOUR_CASTS:
            values = rng.normal(128.0, sigma, size=(2 * height, 2 * width, 3)) + np.asarray(cast, dtype=np.float64)
            row.append(Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "RGB"))
        tiles.append(tuple(row))
    return tuple(tiles)


def render_image(identity: Identity, width: int, height: int, rng: random.Random, noise_seed: int) -> RenderedImage:
    """Draw ``identity`` on a fresh cluttered background of ``width`` x ``height`` pixels."""
    image = draw_background(width, height, rng)
    pose = sample_pose(identity, width, height, rng)
    boxes = draw_person(image, identity, pose)

    flip = rng.random() < 0.5
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        boxes = {slot: [[width - b[2], b[1], width - b[0], b[3]] for b in slot_boxes] for slot, slot_boxes in boxes.items()}

    gain = rng.uniform(0.9, 1.1)
    offset = round(rng.uniform(-4.0, 4.0))
    level, cast = rng.randrange(len(NOISE_SIGMAS)), rng.randrange(len(COLOUR_CASTS))
    dx, dy = rng.randrange(width), rng.randrange(height)
    tile = noise_tiles(noise_seed, width, height)[level][cast].crop((dx, dy, dx + width, dy + height))
    # ImageChops.add computes (a + b) / scale + offset, clipped to 0..255.
    image = ImageChops.add(image, tile, 1.0 / gain, offset - round(128 * gain))

    jitter = {
        "person_height_px": round(pose.unit * 100.0, 2),
        "centre_x_px": round(pose.centre_x if not flip else width - pose.centre_x, 2),
        "top_px": round(pose.top, 2),
        "squeeze": round(pose.unit_x / pose.unit, 4),
        "flip": flip,
        "gain": round(gain, 4),
        "offset": offset,
        "colour_cast": list(COLOUR_CASTS[cast]),
        "noise_sigma": NOISE_SIGMAS[level],
    }
    return RenderedImage(image, boxes, jitter)
