"""Cluttered street-like backgrounds for SketchPedes images.

A background is a wall and a ground plane in muted colours with a random mix
of clutter drawn on them: building blocks with windows, poles, bushes, parked
car shapes, pavement stripes and random blobs, some in strong colours (so that
colour alone does not separate the person from the scene). Drawing uses
PIL ImageDraw primitives only (no per-pixel Python).
"""

from __future__ import annotations

import colorsys
import random

from PIL import Image, ImageDraw


def _muted(rng: random.Random, value: tuple[float, float] = (0.3, 0.85)) -> tuple[int, int, int]:
    """A low-saturation RGB colour (walls, ground, buildings)."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.05, 0.35), rng.uniform(*value))
    return int(r * 255), int(g * 255), int(b * 255)


def _any_colour(rng: random.Random) -> tuple[int, int, int]:
    """Muted most of the time, a strong colour sometimes."""
    if rng.random() < 0.3:
        r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.4, 1.0))
        return int(r * 255), int(g * 255), int(b * 255)
    return _muted(rng, (0.15, 0.95))


def _draw_windows(
    draw: ImageDraw.ImageDraw, block: tuple[float, float, float, float], size: tuple[int, int], wall: tuple[int, int, int], rng: random.Random
) -> None:
    """A grid of windows on a building ``block`` (x0, y0, x1, y1 in pixels) of an image of ``size`` (w, h).

    Drawn as one window-coloured rectangle cut by wall-coloured bars between
    rows and columns: rows + columns rectangles instead of rows x columns.
    """
    x0, y0, x1, y1 = block
    width, height = size
    colour = _any_colour(rng) if rng.random() < 0.3 else _muted(rng, (0.1, 0.5))
    step_x, step_y = rng.uniform(0.1, 0.2) * width, rng.uniform(0.05, 0.09) * height
    win_w, win_h = step_x * rng.uniform(0.35, 0.7), step_y * rng.uniform(0.35, 0.7)
    columns = int((x1 - x0 - step_x * 0.3 - win_w) // step_x) + 1
    rows = int((y1 - y0 - step_y * 0.5 - win_h) // step_y) + 1
    if columns < 1 or rows < 1:
        return
    left, first_top = x0 + step_x * 0.3, y0 + step_y * 0.5
    right, bottom = left + (columns - 1) * step_x + win_w, first_top + (rows - 1) * step_y + win_h
    draw.rectangle((left, first_top, right, bottom), fill=colour)
    for column in range(columns - 1):
        gap = left + column * step_x + win_w
        draw.rectangle((gap, first_top, gap + step_x - win_w, bottom), fill=wall)
    for row in range(rows - 1):
        gap = first_top + row * step_y + win_h
        draw.rectangle((left, gap, right, gap + step_y - win_h), fill=wall)


def draw_background(width: int, height: int, rng: random.Random) -> Image.Image:
    """A new RGB image of ``width`` x ``height`` pixels holding a random cluttered scene."""
    horizon = int(height * rng.uniform(0.45, 0.8))
    image = Image.new("RGB", (width, height), _muted(rng))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, horizon, width, height), fill=_muted(rng, (0.25, 0.7)))

    # Buildings with window grids along the horizon.
    x = -rng.uniform(0, width * 0.3)
    while x < width:
        block_w = rng.uniform(0.3, 0.9) * width
        top = rng.uniform(0.0, 0.5) * horizon
        wall = _muted(rng)
        draw.rectangle((x, top, x + block_w, horizon), fill=wall)
        if rng.random() < 0.7:
            _draw_windows(draw, (x, top, x + block_w, horizon), (width, height), wall, rng)
        x += block_w + rng.uniform(0, width * 0.2)

    # Pavement stripes on the ground.
    for _ in range(rng.randint(0, 3)):
        y = rng.uniform(horizon, height)
        draw.line((0, y, width, y + rng.uniform(-0.05, 0.05) * height), fill=_muted(rng), width=max(1, int(height * 0.006)))

    # Random clutter: poles, bushes, car-like boxes and blobs.
    for _ in range(rng.randint(4, 10)):
        kind = rng.random()
        cx, cy = rng.uniform(0, width), rng.uniform(0.2 * height, height)
        size = rng.uniform(0.05, 0.25) * height
        colour = _any_colour(rng)
        if kind < 0.25:  # pole
            pole_w = max(1.0, rng.uniform(0.01, 0.035) * height)
            draw.rectangle((cx, cy - size * 2, cx + pole_w, min(cy + size, height)), fill=colour)
        elif kind < 0.5:  # bush or tree crown
            draw.ellipse((cx - size * 0.6, cy - size * 0.5, cx + size * 0.6, cy + size * 0.5), fill=colour)
        elif kind < 0.7:  # car-like box sitting on the ground
            base = rng.uniform(horizon, height)
            draw.rounded_rectangle((cx - size, base - size * 0.45, cx + size, base), radius=size * 0.12, fill=colour)
        else:  # blob
            points = [(cx + rng.uniform(-size, size) * 0.5, cy + rng.uniform(-size, size) * 0.5) for _ in range(4)]
            draw.polygon(points, fill=colour)
    return image
