"""The data's configuration: the ``data`` section of a recipe and its ``augment`` sub-section.

Owned by the data layer (the training datasets and transforms read it); the recipe reads it
from here. Every key is documented in docs/recipes.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import Field, with_config

from gadms_cli.config_checks import RECIPE_CONFIG

__all__ = ["AugmentConfig", "BenchmarkDataRecipe", "DataRecipe", "WebPersonDataRecipe"]


@with_config(RECIPE_CONFIG)
@dataclass
class AugmentConfig:
    """Train-time augmentation: image switches (the paper uses flip, pad-crop and erasing) and caption dropout."""

    flip: bool = True
    pad_crop: int = 10
    random_erasing: float = 0.5
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"  # resize filter (IRRA: bilinear)
    erasing_fill: Literal["mean", "zero"] = "mean"  # IRRA fills erased boxes with value=mean after normalisation
    caption_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0  # drop each caption phrase with this probability (data/caption_dropout.py); 0: off


@with_config(RECIPE_CONFIG)
@dataclass
class BenchmarkDataRecipe:
    """``data.kind: benchmark``: a CUHK-PEDES / ICFG-PEDES / RSTPReid / SketchPedes folder,
    identity-balanced P x K batches."""

    kind: Literal["benchmark"] = "benchmark"
    path: str = "data/CUHK-PEDES"
    train_split: str = "train"
    val_split: str | None = "val"  # null: no validation (keep the last epoch)
    samples_per_id: Annotated[int, Field(ge=1)] = 2  # K of the P x K sampler
    lookalike_group: Annotated[int, Field(ge=1, description="1: random batches")] = 1  # >1: batches of groups of this many look-alike identities (data/lookalike_identities.py)
    skip_missing: bool = False
    clean_annotations: bool = False  # merge repeated image records, drop empty captions (default: as IRRA counts)
    num_workers: Annotated[int, Field(ge=0)] = 2
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@with_config(RECIPE_CONFIG)
@dataclass
class WebPersonDataRecipe:
    """``data.kind: webperson``: parquet shards, a GA-DMS JSON file or an HF dataset id; one identity
    per image, its two captions, streamed; validation on another benchmark's val split."""

    kind: Literal["webperson"] = "webperson"
    path: str = "data/WebPerson"
    train_split: str = "train"
    val_split: str | None = "val"  # of val_bench; null: no validation (keep the last epoch)
    val_bench: str | None = None  # the benchmark folder to validate on (pretraining)
    # "image" puts both captions of an image in one batch under one identity; "caption" (the public
    # script) gives each batch item one caption of a different image, every caption its own identity
    caption_pairing: Literal["image", "caption"] = "image"
    num_workers: Annotated[int, Field(ge=0)] = 2
    augment: AugmentConfig = field(default_factory=AugmentConfig)


# The ``data`` section: one of the two, chosen by its ``kind`` (a benchmark when it is not given).
DataRecipe = Annotated[BenchmarkDataRecipe | WebPersonDataRecipe, Field(discriminator="kind")]
