"""Training recipes: YAML files mapped onto typed dataclasses, validated by pydantic.

A recipe fully describes a run (model, data, method, optimiser, schedule).
``load_recipe(path, overrides)`` reads the YAML (and its ``base:`` recipes), applies
``--set a.b=c`` overrides and validates every key, type and range with pydantic v2
(the sections are plain dataclasses with ``Annotated`` constraints; pydantic's
``TypeAdapter`` checks them): an unknown key, a wrong type or a value out of range is a
one-line :class:`GadmsError` naming the key (and for a misspelt key the closest valid
one). :func:`recipe_json_schema` is the JSON schema of a recipe (docs/recipe-schema.json).
The resolved recipe is saved in the run directory (``recipe.yaml``) so a run can always
be repeated.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, TypeAdapter, ValidationError, with_config

from gadms_cli.config_checks import RECIPE_CONFIG
from gadms_cli.data.data_config import AugmentConfig, BenchmarkDataRecipe, DataRecipe, WebPersonDataRecipe
from gadms_cli.errors import GadmsError
from gadms_cli.gadms.ga_score import resolve_score_layers
from gadms_cli.gadms.method_config import MethodRecipe
from gadms_cli.model.model_config import ModelRecipe
from gadms_cli.optim import OptimRecipe

# Each section's config is owned by its layer; the recipe re-exports them.
__all__ = [
    "AugmentConfig", "BenchmarkDataRecipe", "DataRecipe", "WebPersonDataRecipe", "MethodRecipe", "ModelRecipe", "OptimRecipe", "Recipe", "TrainRecipe",
    "load_recipe", "recipe_from_dict", "recipe_json_schema", "dump_recipe", "recipe_to_dict",
]  # fmt: skip


@with_config(RECIPE_CONFIG)
@dataclass
class TrainRecipe:
    epochs: Annotated[int, Field(ge=1)] = 30
    batch_size: Annotated[int, Field(ge=1)] = 512  # global, over all processes and accumulation steps
    grad_accumulation: Annotated[int, Field(ge=1)] = 1
    max_steps: Annotated[int, Field(ge=1, description="or null: all epochs")] | None = None  # stop early (optimiser steps)
    max_minutes: Annotated[float, Field(gt=0, description="or null: no time limit")] | None = None  # stop after this much training time
    # With max_minutes: the warm-up and cosine advance by the share of steps or of time used, whichever
    # is larger, so that the learning rate has decayed when time runs out (not cut off mid-cosine).
    time_schedule: bool = False
    mixed_precision: Literal["no", "bf16", "fp16"] = "bf16"
    seed: int = 0
    eval_every: Annotated[int, Field(ge=0, description="0: each epoch")] = 0  # optimiser steps
    checkpoint_every: Annotated[int, Field(ge=0, description="0: only at the end")] = 1000  # optimiser steps between full-state checkpoints
    log_every: Annotated[int, Field(ge=1)] = 10
    output_dir: str = "runs"
    run_name: str = "run"


@with_config(RECIPE_CONFIG)
@dataclass
class Recipe:
    """A whole run. The YAML file has the same five sections."""

    model: ModelRecipe = field(default_factory=ModelRecipe)
    data: DataRecipe = field(default_factory=BenchmarkDataRecipe)
    method: MethodRecipe = field(default_factory=MethodRecipe)
    optim: OptimRecipe = field(default_factory=OptimRecipe)
    train: TrainRecipe = field(default_factory=TrainRecipe)


# --- validation: pydantic over the dataclasses, errors as one line naming the key ----------


_ADAPTER: TypeAdapter[Recipe] | None = None


def _adapter() -> TypeAdapter[Recipe]:
    global _ADAPTER
    if _ADAPTER is None:
        _ADAPTER = TypeAdapter(Recipe)
    return _ADAPTER


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _type_name(typing.get_args(tp)[0])
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "[" + ", ".join(_type_name(a) for a in typing.get_args(tp)) + "]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _members(hint: Any) -> dict[str, type]:
    """The dataclasses of a union keyed on ``kind`` (``data``: benchmark or webperson), by tag; {} otherwise."""
    inner = typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint
    if typing.get_origin(inner) not in (typing.Union, types.UnionType):
        return {}
    return {arg.kind: arg for arg in typing.get_args(inner) if dataclasses.is_dataclass(arg) and hasattr(arg, "kind")}


def _walk(loc: tuple) -> tuple[list[str], Any, Any]:
    """pydantic's error location -> (the dotted key the user wrote, the dataclass holding its last part,
    that part's annotation); a union's tag (``data.benchmark.x``) is resolved, not shown."""
    owner: Any = Recipe
    hint: Any = None
    shown: list[str] = []
    parts = [str(part) for part in loc if not isinstance(part, int)]
    i = 0
    while i < len(parts):
        name = parts[i]
        members = _members(owner) if not dataclasses.is_dataclass(owner) else {}
        if members and name in members:  # the union's tag: continue inside that member
            owner, i = members[name], i + 1
            continue
        if not dataclasses.is_dataclass(owner):
            return shown + parts[i:], None, None
        shown.append(name)
        hints = typing.get_type_hints(owner, include_extras=True)
        if name not in hints:
            return shown + parts[i + 1 :], owner, None
        hint = hints[name]
        if i < len(parts) - 1:
            owner = hint
        i += 1
    return shown, owner, hint


def _constraints(hint: Any) -> tuple[dict[str, float], str | None]:
    """The ge/gt/le/lt bounds and the description of an ``Annotated`` field (inside an optional too)."""
    for candidate in (hint, *typing.get_args(hint)):
        if typing.get_origin(candidate) is Annotated:
            bounds: dict[str, float] = {}
            description = None
            for meta in typing.get_args(candidate)[1:]:
                description = getattr(meta, "description", None) or description
                for inner in getattr(meta, "metadata", [meta]):
                    for name in ("ge", "gt", "le", "lt"):
                        if getattr(inner, name, None) is not None:
                            bounds[name] = getattr(inner, name)
            return bounds, description
    return {}, None


def _wanted(hint: Any) -> str:
    """'>= 1', '> 0', 'in [0, 1)' ..., with the field's note: '> 0 (or null: no clipping)'."""
    bounds, note = _constraints(hint)
    number = lambda value: f"{value:g}" if isinstance(value, float) else str(value)  # noqa: E731
    low = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    high = ("]", bounds["le"]) if "le" in bounds else (")", bounds["lt"]) if "lt" in bounds else None
    if low and high:
        text = f"in {low[0]}{number(low[1])}, {number(high[1])}{high[0]}"
    elif low:
        text = (">= " if low[0] == "[" else "> ") + number(low[1])
    elif high:
        text = ("<= " if high[0] == "]" else "< ") + number(high[1])
    else:
        text = "a number"
    return f"{text} ({note})" if note else text


def _one_line(error: ValidationError, source: str) -> GadmsError:
    """The first problem pydantic found, as one line naming the dotted key."""
    first = error.errors()[0]
    path, owner, hint = _walk(first["loc"])
    key = ".".join(path)
    kind, value = first["type"], first.get("input")
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        valid = [f.name for f in dataclasses.fields(owner)] if dataclasses.is_dataclass(owner) else [f.name for f in dataclasses.fields(Recipe)]
        prefix = ".".join(path[:-1]) + "." if len(path) > 1 else ""
        close = difflib.get_close_matches(path[-1], valid, n=1)
        hint_text = f"did you mean '{prefix}{close[0]}'?" if close else f"valid keys: {', '.join(valid)}"
        for_kind = f" for data.kind {owner.kind}" if path[:1] == ["data"] and hasattr(owner, "kind") else ""
        return GadmsError(f"{source}: unknown key '{key}'{for_kind}; {hint_text}")
    if kind == "union_tag_invalid":
        tags = " | ".join(repr(t) for t in _members(hint))
        return GadmsError(f"{source}: '{key}.kind' must be {tags}, got {first.get('ctx', {}).get('tag', value)!r}")
    if kind in ("dataclass_type", "dataclass_args_type", "dict_type", "model_type", "model_attributes_type") and (dataclasses.is_dataclass(hint) or _members(hint)):
        name = hint.__name__ if dataclasses.is_dataclass(hint) else "DataRecipe"
        return GadmsError(f"{source}: '{key}' must be a mapping of {name} keys, got {value!r}")
    shown = value if isinstance(value, str) and value.strip().lower().lstrip("+-") in ("nan", "inf", "infinity") else repr(value)
    if kind in ("greater_than_equal", "greater_than", "less_than", "less_than_equal"):
        return GadmsError(f"{source}: '{key}' must be {_wanted(hint)}, got {shown}")
    if kind == "finite_number":
        return GadmsError(f"{source}: '{key}' must be a finite number {_wanted(hint)}, got {shown}")
    if hint is None:
        return GadmsError(f"{source}: '{key}': {first['msg']}")
    return GadmsError(f"{source}: '{key}' must be {_type_name(hint)}, got {value!r}")


def recipe_json_schema() -> dict:
    """The JSON schema of a recipe file (every section, key, type, default and range)."""
    return _adapter().json_schema()


def recipe_from_dict(data: dict, source: str = "recipe") -> Recipe:
    """Build and validate a :class:`Recipe` from nested plain data (as read from YAML)."""
    if not isinstance(data, dict):
        raise GadmsError(f"{source}: a recipe must be a mapping with sections model, data, method, optim, train")
    if isinstance(data.get("data"), dict) and "kind" not in data["data"]:
        data = {**data, "data": {"kind": "benchmark", **data["data"]}}  # a benchmark unless it says otherwise
    try:
        recipe = _adapter().validate_python(data)  # lax mode: YAML 1.1's "1e-4" strings become floats
    except ValidationError as error:
        raise _one_line(error, source) from None
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
    _switch_data_kind(data, overrides or [])
    apply_overrides(data, overrides or [])
    return recipe_from_dict(data, source=str(path))


def _switch_data_kind(data: dict, overrides: list[str]) -> None:
    """``--set data.kind=K`` on a recipe written for the other kind drops the file's keys that kind
    does not have (``samples_per_id`` of a benchmark recipe run on WebPerson shards); such keys given
    with ``--set`` stay errors."""
    wanted = [item.split("=", 1)[1].strip() for item in overrides if item.split("=", 1)[0].strip() == "data.kind" and "=" in item]
    section = data.get("data")
    kinds = _members(DataRecipe)
    if not wanted or not isinstance(section, dict) or wanted[-1] not in kinds:
        return
    keep = {f.name for f in dataclasses.fields(kinds[wanted[-1]])}
    for key in [k for k in section if k not in keep and any(k in {f.name for f in dataclasses.fields(c)} for c in kinds.values())]:
        del section[key]


def validate(recipe: Recipe, source: str = "recipe") -> None:
    """Cross-field checks that types and ranges alone cannot express."""
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
    if recipe.method.score_normalize == "centered" and recipe.method.score_relu:
        raise GadmsError(
            f"{source}: 'method.score_normalize: centered' keeps the score's sign around 0.5, but "
            "'method.score_relu: true' drops the sign; set method.score_relu: false"
        )
    if recipe.train.time_schedule and recipe.train.max_minutes is None:
        raise GadmsError(f"{source}: 'train.time_schedule' fits the schedule into 'train.max_minutes', which is null; set train.max_minutes")
    dropout = recipe.data.augment.caption_dropout
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
