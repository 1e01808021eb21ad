"""Build a PersonCLIP from an architecture name or config file and a source of weights.

Architectures come from open_clip: any built-in name (``ViT-B-16`` is the
paper's), the configs shipped in ``gadms_cli/model_configs/`` (registered with
open_clip on import: ``gadms-tiny`` for tests, ``gadms-small`` for the
quickstart), or a path to an open_clip model-config JSON file.

``pretrained`` may be

- None: random initialisation;
- an open_clip tag of the architecture (``openai``, ``laion2b_s34b_b88k`` ...):
  downloaded on first use (Hugging Face hub or the release URL) and cached;
  offline, a one-line error says to pass a local file instead. A tag that was
  trained with QuickGELU (``openai``) switches the model to QuickGELU;
- a weights file (``.safetensors``, or ``.bin``/``.pt``/``.pth`` read with
  ``torch.load(weights_only=True)``) in open_clip/OpenAI naming; an
  IRRA-family ``.pth`` is recognised by its keys and imported;
- one of our checkpoints (a directory, or a run directory: ``best/`` then ``last/``).

The requested image size and context length are applied to the architecture;
weights trained at another size are adapted (bilinear grid resize, see
pos_embed.py). The returned model carries ``load_report`` (a :class:`LoadReport`).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import open_clip
import torch

from gadms_cli.errors import GadmsError
from gadms_cli.model.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    is_checkpoint_dir,
    load_checkpoint,
    resolve_checkpoint_dir,
)
from gadms_cli.model.irra_import import import_irra_state_dict, looks_like_irra
from gadms_cli.model.person_clip import DECODER_LAYERS, PersonCLIP, PersonCLIPConfig, default_decoder_heads
from gadms_cli.model.weights import LoadReport, load_clip_state, load_module_state, read_state_dict

CONFIG_DIR = Path(__file__).resolve().parent.parent / "model_configs"
PRETRAINED_HINT = (
    "pass a local weights file instead (recipe key model.pretrained, "
    "e.g. --pretrained /path/to/open_clip_pytorch_model.bin)"
)

_UNSET: Any = object()
_registered = False


def register_model_configs() -> None:
    """Make the shipped configs (gadms-tiny, gadms-small ...) known to open_clip (idempotent)."""
    global _registered
    if not _registered:
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


def list_architectures() -> list[str]:
    """Every architecture name :func:`resolve_arch` accepts (open_clip's and ours)."""
    register_model_configs()
    return list(open_clip.list_models())


def resolve_arch(arch: str) -> tuple[str, dict[str, Any]]:
    """(name, open_clip model config dict) for an architecture name or a JSON config path."""
    register_model_configs()
    path = Path(arch)
    if arch.endswith(".json") or path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise GadmsError(
                f"model config {arch}: unreadable ({type(error).__name__}); pass an open_clip model-config JSON"
            ) from None
        data = data.get("model_cfg", data)  # open_clip_config.json wraps the model config
        if not all(k in data for k in ("embed_dim", "vision_cfg", "text_cfg")):
            raise GadmsError(
                f"model config {arch}: needs the keys embed_dim, vision_cfg and text_cfg (open_clip format)"
            )
        return path.stem, data
    config = open_clip.get_model_config(arch)
    if config is None:
        close = difflib.get_close_matches(arch, open_clip.list_models(), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see open_clip.list_models() or pass a JSON config file"
        raise GadmsError(f"unknown architecture '{arch}' (model.arch): {hint}")
    return arch, config


def apply_sizes(
    clip_config: dict[str, Any], image_size: tuple[int, int] | None, context_length: int | None
) -> dict[str, Any]:
    """A copy of ``clip_config`` with the image size (height, width) and text context applied."""
    config = copy.deepcopy(clip_config)
    if image_size is not None:
        height, width = int(image_size[0]), int(image_size[1])
        patch = config["vision_cfg"].get("patch_size", 16)
        ph, pw = (patch, patch) if isinstance(patch, int) else patch
        if "timm_model_name" not in config["vision_cfg"] and (height % ph or width % pw):
            raise GadmsError(f"model.image_size {height}x{width} is not a multiple of the patch size {ph}x{pw}")
        config["vision_cfg"]["image_size"] = [height, width]
    if context_length is not None:
        config["text_cfg"]["context_length"] = int(context_length)
    return config


# --- open_clip pretrained tags ------------------------------------------------------


def _cached_tag_file(tag_cfg: dict[str, Any], cache_dir: str | None) -> str | None:
    """Path of an already downloaded weights file for an open_clip tag, or None."""
    if tag_cfg.get("file"):
        return tag_cfg["file"]
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            repo_id, filename = os.path.split(hub)  # "org/repo/" -> ("org/repo", ""), as open_clip splits it
            filename = filename or open_clip.constants.HF_WEIGHTS_NAME
            candidates = [filename]
            stem = filename.rsplit(".", 1)[0]
            if filename == open_clip.constants.HF_WEIGHTS_NAME:
                candidates.insert(0, open_clip.constants.HF_SAFE_WEIGHTS_NAME)
            elif not filename.endswith(".safetensors"):
                candidates.insert(0, stem + ".safetensors")
            for name in candidates:
                found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
                if isinstance(found, str) and os.path.isfile(found):
                    return found
    url = tag_cfg.get("url", "")
    if url:
        local = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(urlparse(url).path)
        if local.is_file():
            return str(local)
    return None


def _download_host(tag_cfg: dict[str, Any]) -> str:
    if tag_cfg.get("hf_hub"):
        return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    return urlparse(tag_cfg.get("url", "")).hostname or ""


def _reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether ``host``:443 accepts a connection (True when a proxy is configured: we cannot tell)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def fetch_open_clip_weights(arch: str, tag: str, cache_dir: str | None = None) -> str:
    """Local path of the weights of open_clip tag ``tag`` for ``arch`` (cache first, then download)."""
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg

    tag_cfg = get_pretrained_cfg(arch, tag)
    cached = _cached_tag_file(tag_cfg, cache_dir)
    if cached:
        return cached
    host = _download_host(tag_cfg)
    if not host or not _reachable(host):
        raise GadmsError(
            f"cannot download open_clip weights '{tag}' for {arch}: {host or 'the server'} is unreachable (offline?); "
            + PRETRAINED_HINT
        )
    try:
        path = download_pretrained(tag_cfg, cache_dir=cache_dir)
    except Exception as error:  # hub and urllib raise many types; all mean "no file"
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise GadmsError(
            f"downloading open_clip weights '{tag}' for {arch} failed ({reason}); {PRETRAINED_HINT}"
        ) from None
    if not path:
        raise GadmsError(f"open_clip has no download for '{tag}' of {arch}; {PRETRAINED_HINT}")
    return path


# --- building ----------------------------------------------------------------------


@dataclass
class BuildOptions:
    """What the run asks of the model besides its weights."""

    image_size: tuple[int, int] | None = None  # (height, width); None keeps the source's
    context_length: int | None = None  # None keeps the source's
    with_mtp: bool = False
    num_classes: int = 0  # identity classifier size; 0 = none
    decoder_layers: int = DECODER_LAYERS
    decoder_heads: int | None = None  # None = default_decoder_heads(...)
    source_image_size: tuple[int, int] | None = None  # an IRRA-family file's training size, when its grid is ambiguous


def _person_config(name: str, clip_config: dict[str, Any], options: BuildOptions) -> PersonCLIPConfig:
    embed_dim = int(clip_config["embed_dim"])
    heads = options.decoder_heads or default_decoder_heads(embed_dim, int(clip_config["text_cfg"].get("heads", 8)))
    if embed_dim % heads:
        raise GadmsError(f"model.decoder_heads {heads} does not divide the embedding dim {embed_dim}")
    return PersonCLIPConfig(
        clip_config=clip_config,
        arch=name,
        mtp=options.with_mtp,
        decoder_layers=options.decoder_layers,
        decoder_heads=heads,
        num_ids=options.num_classes,
    )


def _grid_of(clip_config: dict[str, Any]) -> tuple[int, int]:
    """Patch grid (rows, cols) of a ViT config at its configured image size."""
    vision = clip_config["vision_cfg"]
    size, patch = vision.get("image_size", 224), vision.get("patch_size", 16)
    height, width = (size, size) if isinstance(size, int) else size
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    return (int(height) // ph, int(width) // pw)


def _require_complete_clip(report: LoadReport) -> None:
    missing = [k for k in report.missing if not k.endswith(("logit_scale", "logit_bias"))]
    if missing:
        raise GadmsError(
            f"{report.source}: weights do not match this architecture ({len(missing)} tensors missing, "
            f"e.g. {missing[0]}); pick the architecture they were trained with (model.arch)"
        )
    report.missing = []


def create_person_clip(
    model_recipe: Any = None,
    *,
    with_mtp: bool = False,
    num_classes: int | None = None,
    arch: str | None = None,
    pretrained: Any = _UNSET,
    image_size: tuple[int, int] | None = None,
    context_length: int | None = None,
    decoder_layers: int | None = None,
    decoder_heads: int | None = None,
    cache_dir: str | None = None,
    device: str | torch.device = "cpu",
    source_image_size: tuple[int, int] | None = None,
) -> PersonCLIP:
    """Build the model a run asks for (float32, on ``device``, train mode).

    ``model_recipe`` is a :class:`gadms_cli.recipe.ModelRecipe` (arch,
    pretrained, image_size, context_length, decoder_layers, decoder_heads), or an
    architecture name or JSON config path (the same as ``arch=``);
    keyword arguments override its fields. Without a recipe the defaults are
    ``arch="ViT-B-16"``, ``pretrained=None``, the architecture's own image size
    and context, 4 decoder layers. ``with_mtp`` adds the MTP decoder and
    ``num_classes`` (None or 0: none) the identity classifier. ``model.load_report``
    says where the weights came from. ``source_image_size`` (height, width): the size an
    IRRA-family ``.pth`` was trained at, needed when its patch grid does not tell.
    """
    if isinstance(model_recipe, (str, os.PathLike)):
        # create_person_clip("gadms-tiny"), as timm's create_model(name): the name is the arch.
        # (Read as a recipe it has no fields, and every default, ViT-B-16 included, would apply.)
        arch, model_recipe = arch or str(model_recipe), None
    arch = arch or getattr(model_recipe, "arch", None) or "ViT-B-16"
    if pretrained is _UNSET:
        pretrained = getattr(model_recipe, "pretrained", None)
    if isinstance(pretrained, str) and pretrained.strip().lower() in ("", "none", "null"):
        pretrained = None
    if image_size is None and getattr(model_recipe, "image_size", None) is not None:
        image_size = tuple(model_recipe.image_size)  # type: ignore[union-attr]
    options = BuildOptions(
        image_size=image_size,
        context_length=context_length if context_length is not None else getattr(model_recipe, "context_length", None),
        with_mtp=with_mtp,
        num_classes=int(num_classes or 0),
        decoder_layers=decoder_layers or getattr(model_recipe, "decoder_layers", None) or 4,
        decoder_heads=decoder_heads or getattr(model_recipe, "decoder_heads", None),
        source_image_size=source_image_size,
    )
    return _build(arch, pretrained, options, cache_dir).to(device)


def _build(arch: str, pretrained: str | os.PathLike | None, options: BuildOptions, cache_dir: str | None) -> PersonCLIP:
    """Dispatch on the kind of ``pretrained`` (see the module docstring)."""
    if pretrained is not None:
        path = Path(pretrained)
        if path.is_dir() and (path / "open_clip_config.json").is_file():
            return _from_open_clip_dir(path, options)
        if path.is_dir():
            return _from_checkpoint(resolve_checkpoint_dir(path), options)
        if path.is_file() and path.name in (WEIGHTS_FILE, CONFIG_FILE) and is_checkpoint_dir(path.parent):
            return _from_checkpoint(path.parent, options)
        if path.is_file():
            return _from_weights_file(arch, path, options)

    name, base_config = resolve_arch(arch)
    if pretrained is None:
        sized = apply_sizes(base_config, options.image_size, options.context_length)
        model = PersonCLIP(_person_config(name, sized, options))
        model.load_report = LoadReport(source="random init", kind="random init")
        return model

    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    tag = str(pretrained)
    tag_cfg = get_pretrained_cfg(name, tag)
    if not tag_cfg:
        tags = list_pretrained_tags_by_model(name)
        known = f"its open_clip tags: {', '.join(tags)}" if tags else f"open_clip has no tags for {name}"
        raise GadmsError(
            f"model.pretrained '{tag}' is not a file, a checkpoint directory or an open_clip tag of {name} ({known})"
        )
    state = read_state_dict(fetch_open_clip_weights(name, tag, cache_dir))
    quick_gelu = bool(tag_cfg.get("quick_gelu"))
    return _from_state_dict(name, base_config, state, f"{name}/{tag}", "open_clip tag", options, quick_gelu)


def _from_weights_file(arch: str, path: Path, options: BuildOptions) -> PersonCLIP:
    """A single weights file: IRRA-family layout (imported) or open_clip/OpenAI naming for ``arch``."""
    state = read_state_dict(path)
    if looks_like_irra(state):
        model, report = import_irra_state_dict(
            state,
            str(path),
            image_size=options.image_size,
            context_length=options.context_length,
            source_image_size=options.source_image_size,
            with_mtp=options.with_mtp,
            num_classes=options.num_classes,
        )
        model.load_report = report
        return model
    name, base_config = resolve_arch(arch)
    model = _from_state_dict(name, base_config, state, str(path), "weights file", options, quick_gelu=False)
    if OPENAI_ONLY_KEYS & set(state) and not base_config.get("quick_gelu"):
        model.load_report.warnings.append(
            f"{path} looks like an OpenAI CLIP state dict (it has {', '.join(sorted(OPENAI_ONLY_KEYS & set(state)))}), "
            f"which was trained with QuickGELU, but {name} uses GELU: pass --arch {name}-quickgelu (or an architecture with quick_gelu)"
        )
    return model


# Scalars that OpenAI's own CLIP files carry beside the tensors (open_clip's files do not).
OPENAI_ONLY_KEYS = frozenset({"input_resolution", "context_length", "vocab_size"})


def _from_state_dict(
    name: str,
    base_config: dict[str, Any],
    state: dict[str, torch.Tensor],
    source: str,
    kind: str,
    options: BuildOptions,
    quick_gelu: bool,
) -> PersonCLIP:
    """A model of architecture ``base_config`` with an open_clip/OpenAI-named CLIP state dict loaded."""
    native_grid = _grid_of(base_config)  # the weights are taken to be trained at the architecture's own size
    config_dict = apply_sizes(base_config, options.image_size, options.context_length)
    report = LoadReport(source=source, kind=kind)
    if quick_gelu and not config_dict.get("quick_gelu"):
        config_dict["quick_gelu"] = True
        report.notes.append("QuickGELU activations (the weights were trained with them)")
    model = PersonCLIP(_person_config(name, config_dict, options))
    load_clip_state(model.clip, state, report, source_grid=native_grid)
    _require_complete_clip(report)
    model.config.extra = {"initialised_from": source}
    model.load_report = report
    return model


def _from_open_clip_dir(directory: Path, options: BuildOptions) -> PersonCLIP:
    """An open_clip export folder (open_clip_config.json + weights, as on the HF hub)."""
    _, config_dict = resolve_arch(str(directory / "open_clip_config.json"))
    names = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "model.safetensors", "pytorch_model.bin")
    for weights_name in names:
        if (directory / weights_name).is_file():
            state = read_state_dict(directory / weights_name)
            source = str(directory / weights_name)
            return _from_state_dict(directory.name, config_dict, state, source, "weights file", options, quick_gelu=False)
    raise GadmsError(f"{directory}: has open_clip_config.json but no weights file ({' / '.join(names)})")


def _from_checkpoint(directory: Path, options: BuildOptions) -> PersonCLIP:
    """One of our checkpoints as the starting point of a new model (sizes, decoder, classifier may change)."""
    source = load_checkpoint(directory)
    old = source.config
    if source.mtp is not None:  # keep the trained decoder's shape
        options = dataclasses.replace(options, decoder_layers=old.decoder_layers, decoder_heads=old.decoder_heads)
    config = _person_config(old.arch, apply_sizes(old.clip_config, options.image_size, options.context_length), options)
    config.extra = {"initialised_from": str(directory)}
    model = PersonCLIP(config)
    report = LoadReport(source=str(directory), kind="gadms checkpoint")
    old_grid = _grid_of(old.clip_config)
    load_clip_state(model.clip, source.clip.state_dict(), report, source_grid=old_grid, prefix_in_report="clip.")
    _require_complete_clip(report)
    if model.mtp is not None and source.mtp is not None:
        load_module_state(model.mtp, source.mtp.state_dict(), report, prefix_in_report="mtp.")
    elif model.mtp is not None:
        report.notes.append("the checkpoint has no MTP decoder: a new one is initialised")
    if model.classifier is not None:
        if source.classifier is not None and source.classifier.out_features == model.classifier.out_features:
            load_module_state(model.classifier, source.classifier.state_dict(), report, prefix_in_report="classifier.")
        else:
            report.notes.append("identity classifier initialised anew")
    if source.attribute_head is not None:  # the attribute head travels with the embedding it reads
        model.add_attribute_head(source.attribute_head.out_features)
        load_module_state(model.attribute_head, source.attribute_head.state_dict(), report, prefix_in_report="attribute_head.")
    model.load_report = report
    return model
