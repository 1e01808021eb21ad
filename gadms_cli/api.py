"""The Python front door, open_clip / timm style; ``import gadms_cli as g`` re-exports it.

    >>> import gadms_cli as g
    >>> model, preprocess, tokenizer = g.create_model_and_transforms("gadms-tiny")
    >>> g.save_model(model, "my-model")            # a folder: config.json + model.safetensors
    >>> same = g.load_model("my-model")            # our folders, IRRA-family .pth, open_clip weight files
    >>> g.list_models()[:3]
    >>> retriever = g.Retriever(same)              # photo-folder search (gadms_cli/retrieve/retriever.py)

Nothing here reads environment variables or looks in the working directory: a model is only
ever what the caller names (the CLI's ``--model`` defaults live in ``gadms_cli/model/resolve.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from gadms_cli.data.transforms import eval_transform
from gadms_cli.model.checkpoint import is_checkpoint_dir, load_checkpoint, save_checkpoint
from gadms_cli.model.factory import create_person_clip, list_architectures
from gadms_cli.model.person_clip import PersonCLIP
from gadms_cli.model.tokenizer import Tokenizer


def create_model(
    name_or_path: str | os.PathLike,
    pretrained: str | None = None,
    *,
    image_size: tuple[int, int] | None = None,
    with_mtp: bool = False,
    device: str | torch.device = "cpu",
) -> PersonCLIP:
    """A :class:`PersonCLIP` in eval mode: ``name_or_path`` is an architecture (``list_models()`` or an
    open_clip-style JSON config file) with optional ``pretrained`` (an open_clip tag such as ``openai``,
    a weights file or a checkpoint folder), or a model folder / weights file (then ``pretrained`` must
    be None)."""
    path = Path(name_or_path)
    if path.exists() and path.suffix != ".json":
        if pretrained is not None:
            raise ValueError(f"{name_or_path} is already a model; pretrained= is for architecture names")
        return load_model(path, device=device)
    model = create_person_clip(arch=str(name_or_path), pretrained=pretrained, image_size=image_size, with_mtp=with_mtp, device=device)
    return model.eval()


def get_tokenizer(model_or_context: PersonCLIP | int = 77) -> Tokenizer:
    """The CLIP BPE tokenizer with IRRA's ids, at the model's context length (or the given one)."""
    context = model_or_context.config.context_length if isinstance(model_or_context, PersonCLIP) else int(model_or_context)
    return Tokenizer(context)


def create_model_and_transforms(
    name_or_path: str | os.PathLike, pretrained: str | None = None, **kwargs
) -> tuple[PersonCLIP, Callable, Tokenizer]:
    """(model, preprocess: PIL image -> normalised tensor [3, H, W] at the model's size, tokenizer)."""
    model = create_model(name_or_path, pretrained, **kwargs)
    return model, eval_transform(tuple(model.config.image_size)), get_tokenizer(model)


def list_models() -> list[str]:
    """Architecture names ``create_model`` accepts: the shipped gadms configs and open_clip's."""
    return list_architectures()


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> PersonCLIP:
    """One loader: a gadms model or run folder, an IRRA-family ``.pth`` or an open_clip weights file
    (ViT-B-16 layout); in eval mode."""
    path = Path(path)
    if path.is_dir() or is_checkpoint_dir(path.parent):
        return load_checkpoint(path, device=device).eval()
    return create_person_clip(arch="ViT-B-16", pretrained=str(path), device=device).eval()


def save_model(model: PersonCLIP, directory: str | os.PathLike) -> Path:
    """Write ``model`` as a gadms model folder (config.json + model.safetensors, written atomically)."""
    save_checkpoint(model, directory)
    return Path(directory)
