"""Training recipes: YAML files mapped onto typed dataclasses.

A recipe fully describes a run (model, data, method, optimiser, schedule).
``load_recipe(path, overrides)`` reads the YAML, applies ``--set a.b=c``
overrides and validates every key and type; an unknown key or a wrong type is
a one-line :class:`GadmsError` naming the key and the closest valid one. The
resolved recipe is saved in the run directory (``recipe.yaml``) so a run can
always be repeated.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from gadms_cli.errors import GadmsError
from gadms_cli.gadms.method_config import MethodRecipe
from gadms_cli.gadms.ga_score import resolve_score_layers


@dataclass
class ModelRecipe:
    """Which CLIP to build and from which weights (see docs/model.md)."""

    arch: str = "ViT-B-16"  # open_clip architecture name or a JSON config file
    pretrained: str | None = "openai"  # open_clip tag, a weights file, a run/checkpoint dir, or null
    image_size: tuple[int, int] = (384, 128)  # (height, width) in pixels
    context_length: int | None = None  # text tokens; null keeps the architecture's
    decoder_layers: int = 4  # cross-modal MTP decoder depth (IRRA: 4)
    decoder_heads: int | None = None  # null: the text tower's head count


@dataclass
class AugmentRecipe:
    flip: bool = True
    pad_crop: int = 10
    random_erasing: float = 0.5
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"  # resize filter (IRRA: bilinear)
    erasing_fill: Literal["mean", "zero"] = "mean"  # IRRA fills erased boxes with value=mean after normalisation
    caption_dropout: float = 0.0  # drop each caption phrase with this probability (data/caption_dropout.py); 0: off


@dataclass
class DataRecipe:
    """Training and validation data.

    ``kind`` is ``benchmark`` (a CUHK-PEDES / ICFG-PEDES / RSTPReid / SketchPedes
    folder: identity-balanced P x K batches) or ``webperson`` (parquet shards, a
    GA-DMS JSON file or an HF dataset id: one identity per image, its two
    captions, streamed).
    """

    kind: Literal["benchmark", "webperson"] = "benchmark"
    path: str = "data/CUHK-PEDES"
    train_split: str = "train"
    val_split: str | None = "val"  # null: no validation (keep the last epoch)
    val_bench: str | None = None  # validate on another benchmark folder (pretraining)
    samples_per_id: int = 2  # K of the P x K sampler (benchmark kind)
    lookalike_group: int = 1  # >1: batches of groups of this many look-alike identities (data/lookalike_identities.py)
    skip_missing: bool = False
    clean_annotations: bool = False  # merge repeated image records, drop empty captions (default: as IRRA counts)
    # webperson: "image" puts both captions of an image in one batch under one identity; "caption" (the public
    # script) gives each batch item one caption of a different image, every caption its own identity
    caption_pairing: Literal["image", "caption"] = "image"
    num_workers: int = 2
    augment: AugmentRecipe = field(default_factory=AugmentRecipe)


@dataclass
class OptimRecipe:
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-4
    weight_decay: float = 4e-5
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    groups: Literal["irra", "uniform"] = "irra"  # irra: IRRA's per-name rules; uniform: one lr and decay (public GA-DMS pretraining)
    new_module_lr_mult: float = 5.0  # decoder and classifier (IRRA)
    bias_lr_mult: float = 2.0
    bias_weight_decay: float = 0.0
    warmup_epochs: float = 5.0
    warmup_start_factor: float = 0.1
    min_lr: float = 0.0
    grad_clip: float | None = None


@dataclass
class TrainRecipe:
    epochs: int = 30
    batch_size: int = 512  # global, over all processes and accumulation steps
    grad_accumulation: int = 1
    max_steps: int | None = None  # stop early (optimiser steps); null: all epochs
    max_minutes: float | None = None  # stop after this much training time
    mixed_precision: Literal["no", "bf16", "fp16"] = "bf16"
    seed: int = 0
    eval_every: int = 0  # optimiser steps; 0: at the end of each epoch
    checkpoint_every: int = 1000  # optimiser steps between full-state checkpoints
    log_every: int = 10
    output_dir: str = "runs"
    run_name: str = "run"


@dataclass
class Recipe:
    """A whole run. The YAML file has the same five sections."""

    model: ModelRecipe = field(default_factory=ModelRecipe)
    data: DataRecipe = field(default_factory=DataRecipe)
    method: MethodRecipe = field(default_factory=MethodRecipe)
    optim: OptimRecipe = field(default_factory=OptimRecipe)
    train: TrainRecipe = field(default_factory=TrainRecipe)


# --- building dataclasses from plain data, with type checks ------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "[" + ", ".join(_type_name(a) for a in typing.get_args(tp)) + "]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it converted (lists -> tuples, int -> float)."""
    origin = typing.get_origin(tp)
    bad = GadmsError(f"{source}: '{key}' must be {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise GadmsError(f"{source}: '{key}' must be a mapping of {tp.__name__} keys, got {value!r}")
        return _build(tp, value, f"{key}.", source)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise bad
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key, source)
            except GadmsError:
                continue
        raise bad
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise bad
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise bad
        return tuple(_convert(v, a, key, source) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    raise TypeError(f"unsupported recipe type {tp!r} for {key}")


def _build(cls: type, data: dict, prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"did you mean '{prefix}{close[0]}'?" if close else f"valid keys: {', '.join(valid)}"
            raise GadmsError(f"{source}: unknown key '{prefix}{key}'; {hint}")
        kwargs[key] = _convert(value, hints[key], prefix + key, source)
    return cls(**kwargs)


def recipe_from_dict(data: dict, source: str = "recipe") -> Recipe:
    """Build and validate a :class:`Recipe` from nested plain data (as read from YAML)."""
    if not isinstance(data, dict):
        raise GadmsError(f"{source}: a recipe must be a mapping with sections model, data, method, optim, train")
    recipe = _build(Recipe, data, "", source)
    validate(recipe, source)
    return recipe


def _set_path(data: dict, dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise GadmsError(f"{source}: cannot set '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to the nested dict ``data``."""
    for item in overrides:
        if "=" not in item:
            raise GadmsError(f"--set '{item}': expected key=value, e.g. --set train.epochs=10")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_path(data, key.strip(), value, f"--set {key.strip()}")
    return data


SHIPPED_RECIPES = Path(__file__).resolve().parent / "recipes"


def shipped_recipes() -> list[str]:
    """Names of the recipes that come with the package (``quickstart``, ``webperson``, ...)."""
    return sorted(p.stem for p in SHIPPED_RECIPES.glob("*.yaml"))


def resolve_recipe_path(path: str | Path) -> Path:
    """A recipe file: ``path`` itself, else the shipped recipe of that name (``webperson``,
    ``recipes/webperson.yaml`` and ``webperson.yaml`` all find the packaged one)."""
    path = Path(path)
    if path.is_file():
        return path
    shipped = SHIPPED_RECIPES / (path.stem + ".yaml")
    if path.suffix in ("", ".yaml") and shipped.is_file():
        return shipped
    raise GadmsError(
        f"recipe file '{path}' not found; pass a YAML file or a shipped recipe name ({', '.join(shipped_recipes())})"
    )


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise GadmsError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None


def merge_recipe_data(base: dict, child: dict) -> dict:
    """``child`` over ``base``: sections merge key by key (nested mappings too); any other value replaces."""
    merged = dict(base)
    for key, value in child.items():
        merged[key] = merge_recipe_data(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def read_recipe_data(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """A recipe file's data with its ``base:`` recipes merged under it (``base`` is a file relative to
    this one, or a shipped recipe name; bases may have bases)."""
    if path.resolve() in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise GadmsError(f"{path}: 'base' recipes form a cycle ({cycle}); remove one 'base' key")
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise GadmsError(f"{path}: a recipe must be a mapping with sections model, data, method, optim, train")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base.strip():
        raise GadmsError(f"{path}: 'base' must be a recipe file or shipped recipe name, e.g. base: finetune-common.yaml")
    beside = path.parent / base
    try:
        base_path = beside if beside.is_file() else resolve_recipe_path(base)
    except GadmsError:
        raise GadmsError(f"{path}: 'base: {base}' not found beside it nor among the shipped recipes ({', '.join(shipped_recipes())})") from None
    return merge_recipe_data(read_recipe_data(base_path, (*chain, path.resolve())), data)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe YAML file (or a shipped recipe by name) and its ``base:`` recipes, apply ``--set``
    overrides, validate."""
    path = resolve_recipe_path(path)
    data = read_recipe_data(path)
    if not data and not overrides:
        raise GadmsError(f"{path}: the recipe is empty; start from a shipped one ({', '.join(shipped_recipes())}) or write the sections model, data, method, optim, train")
    apply_overrides(data, overrides or [])
    return recipe_from_dict(data, source=str(path))


# Ranges that types alone cannot express: (dotted key, lowest allowed, whether the lowest is allowed,
# what to say). A value of null (for the optional keys) is always allowed.
_RANGES: tuple[tuple[str, float, bool, str], ...] = (
    ("model.decoder_layers", 1, True, ">= 1"),
    ("data.samples_per_id", 1, True, ">= 1"),
    ("data.num_workers", 0, True, ">= 0"),
    ("data.lookalike_group", 1, True, ">= 1 (1: random batches)"),
    ("data.augment.caption_dropout", 0, True, "in [0, 1)"),
    ("method.logit_scale", 0, False, "> 0"),
    ("method.mtp_weight", 0, True, ">= 0"),
    ("method.noise_lambda", 0, True, ">= 0"),
    ("method.informative_lambda", 0, True, ">= 0"),
    ("optim.lr", 0, False, "> 0"),
    ("optim.weight_decay", 0, True, ">= 0"),
    ("optim.bias_weight_decay", 0, True, ">= 0"),
    ("optim.eps", 0, False, "> 0"),
    ("optim.new_module_lr_mult", 0, True, ">= 0"),
    ("optim.bias_lr_mult", 0, True, ">= 0"),
    ("optim.warmup_epochs", 0, True, ">= 0"),
    ("optim.warmup_start_factor", 0, True, ">= 0"),
    ("optim.min_lr", 0, True, ">= 0"),
    ("optim.grad_clip", 0, False, "> 0 (or null: no clipping)"),
    ("train.epochs", 1, True, ">= 1"),
    ("train.batch_size", 1, True, ">= 1"),
    ("train.max_steps", 1, True, ">= 1 (or null: all epochs)"),
    ("train.max_minutes", 0, False, "> 0 (or null: no time limit)"),
    ("train.eval_every", 0, True, ">= 0 (0: each epoch)"),
    ("train.checkpoint_every", 0, True, ">= 0 (0: only at the end)"),
    ("train.log_every", 1, True, ">= 1"),
)


def _check_ranges(recipe: Recipe, source: str) -> None:
    for key, low, inclusive, wanted in _RANGES:
        *sections, name = key.split(".")
        owner = recipe
        for section in sections:
            owner = getattr(owner, section)
        value = getattr(owner, name)
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise GadmsError(f"{source}: '{key}' must be a finite number {wanted}, got {value}")
        if value < low or (value == low and not inclusive):
            raise GadmsError(f"{source}: '{key}' must be {wanted}, got {value}")
    for section in (recipe.method, recipe.optim):
        for item in dataclasses.fields(section):
            value = getattr(section, item.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise GadmsError(f"{source}: '{type(section).__name__.removesuffix('Recipe').lower()}.{item.name}' must be a finite number, got {value}")


def validate(recipe: Recipe, source: str = "recipe") -> None:
    """Cross-field checks that types alone cannot express."""
    _check_ranges(recipe, source)
    h, w = recipe.model.image_size
    if h <= 0 or w <= 0:
        raise GadmsError(f"{source}: 'model.image_size' must be two positive pixel counts, got {recipe.model.image_size}")
    if recipe.train.batch_size < 1 or recipe.train.epochs < 1:
        raise GadmsError(f"{source}: 'train.batch_size' and 'train.epochs' must be >= 1")
    if recipe.train.grad_accumulation < 1 or recipe.train.batch_size % recipe.train.grad_accumulation:
        raise GadmsError(
            f"{source}: 'train.batch_size' ({recipe.train.batch_size}) must be a multiple of "
            f"'train.grad_accumulation' ({recipe.train.grad_accumulation})"
        )
    if recipe.data.kind == "benchmark" and recipe.train.batch_size % recipe.data.samples_per_id:
        raise GadmsError(
            f"{source}: 'train.batch_size' ({recipe.train.batch_size}) must be a multiple of "
            f"'data.samples_per_id' ({recipe.data.samples_per_id})"
        )
    try:
        resolve_score_layers(recipe.method.score_layers, 12)
    except ValueError as error:
        raise GadmsError(f"{source}: 'method.score_layers': {error} (e.g. 8, 0.67 or all)") from None
    for name in ("noise_alpha", "informative_alpha", "mlm_probability", "initial_score"):
        value = getattr(recipe.method, name)
        if not 0.0 <= value <= 1.0:
            raise GadmsError(f"{source}: 'method.{name}' must lie in [0, 1], got {value}")
    dropout = recipe.data.augment.caption_dropout
    if dropout >= 1.0:
        raise GadmsError(f"{source}: 'data.augment.caption_dropout' must be in [0, 1), got {dropout}")
    if dropout > 0 and recipe.method.score_timing == "cached":
        raise GadmsError(
            f"{source}: 'data.augment.caption_dropout' changes the captions, but 'method.score_timing: cached' "
            "scores each caption once; set caption_dropout to 0 or score_timing to online"
        )


def recipe_to_dict(recipe: Recipe) -> dict:
    """Plain nested data (tuples as lists) for YAML/JSON output."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(recipe))


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML text (sections in declaration order)."""
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False)
