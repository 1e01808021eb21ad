"""Our checkpoint format: one directory with ``model.safetensors`` and ``config.json``.

``config.json`` rebuilds the model exactly: the full open_clip model config
(architecture, image size and context length applied), the tokenizer ids,
whether the MTP decoder is there and its shape, the number of identities, the
fixed logit scale, and a free-form ``extra`` dict (the training recipe, metrics,
step ...). Example::

    {"format": "gadms-checkpoint", "format_version": 1, "arch": "ViT-B-16",
     "image_size": [384, 128], "context_length": 77,
     "tokenizer": {"name": "clip-bpe-irra", "vocab_size": 49408, "mask_id": 49405, "sot_id": 49406, "eot_id": 49407},
     "model": {"clip_config": {...}, "mtp": true, "decoder_layers": 4, "decoder_heads": 8, "num_ids": 0, ...},
     "extra": {"recipe": {...}, "step": 1200, "metrics": {...}}}

Saving is atomic for the directory as a whole: both files are written into a
hidden sibling directory which is then renamed onto the target (an existing
target is first renamed aside and removed afterwards), so a reader never sees
new weights with an old config.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from gadms_cli.errors import GadmsError
from gadms_cli.model.person_clip import PersonCLIP, PersonCLIPConfig
from gadms_cli.model.tokenizer import EOT_ID, MASK_ID, SOT_ID, VOCAB_SIZE

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "gadms-checkpoint"
FORMAT_VERSION = 1
TOKENIZER_NAME = "clip-bpe-irra"


def _plain(value: Any) -> Any:
    """JSON-ready copy: dataclasses -> dicts, tuples -> lists, paths -> strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))  # a recipe too: the same nested dicts recipe_to_dict gives
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value


def checkpoint_config(model: PersonCLIP, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config.json content for ``model`` (``extra`` is merged into the model's own extra)."""
    config = model.config
    merged_extra = {**config.extra, **(extra or {})}
    model_part = _plain({**config.to_dict(), "extra": {}})
    model_part.pop("extra")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": config.arch,
        "image_size": list(config.image_size),
        "context_length": config.context_length,
        "tokenizer": {
            "name": TOKENIZER_NAME,
            "vocab_size": config.vocab_size,
            "mask_id": config.mask_id,
            "sot_id": config.sot_id,
            "eot_id": config.eot_id,
        },
        "model": model_part,
        "extra": _plain(merged_extra),
    }


def save_checkpoint(
    model: PersonCLIP,
    directory: str | os.PathLike,
    *,
    recipe: Any = None,
    metrics: dict | None = None,
    step: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` to ``directory`` (model.safetensors + config.json), atomically. Returns the directory.

    ``recipe`` (a Recipe or a dict), ``metrics`` and ``step`` are stored under
    ``extra`` in config.json, next to anything in ``extra``.
    """
    from safetensors.torch import save_file

    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    more = dict(extra or {})
    if recipe is not None:
        more["recipe"] = recipe
    if metrics is not None:
        more["metrics"] = metrics
    if step is not None:
        more["step"] = step
    config = checkpoint_config(model, more)
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}

    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": FORMAT})
        with open(staging / CONFIG_FILE, "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, retired / target.name)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def is_checkpoint_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a directory holding our config.json and model.safetensors."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def resolve_checkpoint_dir(path: str | os.PathLike) -> Path:
    """Find the checkpoint a user means by ``path``.

    Accepts a checkpoint directory, a file inside one (model.safetensors or
    config.json), or a run directory (uses ``best/``, else ``last/``, also under
    ``checkpoints/``). Raises :class:`GadmsError` naming what was looked for.
    """
    path = Path(path)
    if path.is_file() and path.name in (CONFIG_FILE, WEIGHTS_FILE):
        path = path.parent
    if is_checkpoint_dir(path):
        return path
    for candidate in ("best", "last", "checkpoints/best", "checkpoints/last"):
        if is_checkpoint_dir(path / candidate):
            return path / candidate
    if not path.exists():
        raise GadmsError(f"checkpoint not found: {path}")
    for candidate in ("best", "last", "checkpoints/best", "checkpoints/last"):
        folder = path / candidate
        if folder.is_dir():
            missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
            raise GadmsError(
                f"{folder}: incomplete checkpoint (no {' and no '.join(missing)}); the run was stopped while saving "
                "it or the files were moved; pass another checkpoint folder"
            )
    raise GadmsError(
        f"{path}: not a gadms checkpoint (no {CONFIG_FILE} + {WEIGHTS_FILE}, nor a run directory with best/ or last/)"
    )


def read_checkpoint_config(directory: str | os.PathLike) -> PersonCLIPConfig:
    """The :class:`PersonCLIPConfig` stored in a checkpoint directory (validated)."""
    directory = Path(directory)
    try:
        data = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        reason = type(error).__name__
        raise GadmsError(f"{directory / CONFIG_FILE}: unreadable ({reason}); the checkpoint is damaged") from None
    if data.get("format") != FORMAT or "model" not in data:
        raise GadmsError(f"{directory / CONFIG_FILE}: not a gadms checkpoint config (format is {data.get('format')!r})")
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise GadmsError(
            f"{directory / CONFIG_FILE}: format version {data['format_version']} is newer than this gadms "
            f"reads ({FORMAT_VERSION}); upgrade gadms"
        )
    tokenizer = data.get("tokenizer", {})
    expected = {"vocab_size": VOCAB_SIZE, "mask_id": MASK_ID, "sot_id": SOT_ID, "eot_id": EOT_ID}
    for key, value in expected.items():
        if key in tokenizer and int(tokenizer[key]) != value:
            raise GadmsError(f"{directory / CONFIG_FILE}: tokenizer {key} is {tokenizer[key]}, gadms uses {value}")
    config = PersonCLIPConfig.from_dict(data["model"])
    config.extra = data.get("extra", {}) or {}
    return config


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> PersonCLIP:
    """Rebuild the :class:`PersonCLIP` saved by :func:`save_checkpoint` (strict: every tensor must fit)."""
    from safetensors.torch import load_file

    directory = resolve_checkpoint_dir(path)
    config = read_checkpoint_config(directory)
    model = PersonCLIP(config)
    try:
        state = load_file(str(directory / WEIGHTS_FILE), device="cpu")
    except Exception as error:  # safetensors raises its own error types
        reason = type(error).__name__
        raise GadmsError(f"{directory / WEIGHTS_FILE}: unreadable ({reason}); the checkpoint is damaged") from None
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError:
        raise GadmsError(f"{directory}: tensor shapes do not match config.json; the checkpoint is damaged") from None
    if result.missing_keys or result.unexpected_keys:
        keys = (result.missing_keys + result.unexpected_keys)[:3]
        raise GadmsError(
            f"{directory}: weights do not match config.json ({len(result.missing_keys)} missing, "
            f"{len(result.unexpected_keys)} unexpected, e.g. {', '.join(keys)}); the checkpoint is damaged"
        )
    return model.to(device)
