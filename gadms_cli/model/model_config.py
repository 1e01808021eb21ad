"""The model's configuration: the ``model`` section of a recipe (which CLIP, from which weights).

Owned by the model layer (``model/factory.py`` builds from it); the recipe reads it from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, with_config

from gadms_cli.config_checks import RECIPE_CONFIG

DECODER_LAYERS = 4  # the MTP decoder's depth (IRRA's cross-modal transformer: 4 layers)

__all__ = ["DECODER_LAYERS", "ModelRecipe"]


@with_config(RECIPE_CONFIG)
@dataclass
class ModelRecipe:
    """Which CLIP to build and from which weights (see docs/model.md)."""

    arch: str = "ViT-B-16"  # open_clip architecture name or a JSON config file
    pretrained: str | None = "openai"  # open_clip tag, a weights file, a run/checkpoint dir, or null
    image_size: tuple[int, int] = (384, 128)  # (height, width) in pixels
    context_length: int | None = None  # text tokens; null keeps the architecture's
    decoder_layers: Annotated[int, Field(ge=1)] = DECODER_LAYERS  # cross-modal MTP decoder depth (IRRA: 4)
    decoder_heads: int | None = None  # null: the text tower's head count
