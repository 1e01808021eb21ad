"""Batched, gradient-free encoding of images and captions into L2-normalised embeddings.

Shared by evaluation, validation during training and photo search. Works on
any module with ``encode_image(images [B,3,H,W]) -> [B,D]`` and
``encode_text(tokens [B,T]) -> [B,D]`` (our ``PersonCLIP``).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from gadms_cli.data.train_dataset import load_rgb
from gadms_cli.progress import track


# What a damaged or hostile image file raises while it is opened, decoded and transformed:
# OSError (unknown format, truncated data), SyntaxError and ValueError (malformed headers in
# some PIL plugins), DecompressionBombError (over twice PIL's pixel limit).
_UNDECODABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class _ImageFiles(Dataset):
    def __init__(self, paths: Sequence[Path], transform: Callable) -> None:
        self.paths = paths
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            return index, self.transform(load_rgb(self.paths[index]))
        except Image.DecompressionBombError as error:  # say why: it is not damaged, only too large
            print(f"warning: {self.paths[index]}: image too large, skipped ({error})", file=sys.stderr, flush=True)
            return index, None
        except _UNDECODABLE:
            return index, None


def _collate(items):
    ok = [(i, x) for i, x in items if x is not None]
    bad = [i for i, x in items if x is None]
    if not ok:
        return torch.empty(0, dtype=torch.long), None, bad
    return torch.tensor([i for i, _ in ok]), torch.stack([x for _, x in ok]), bad


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return contextlib.nullcontext()


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def embed_pixels(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Preprocessed images float32 [B, 3, H, W] -> L2-normalised embeddings float32 [B, D] on CPU."""
    device = model_device(model)
    with _autocast(device):
        feats = model.encode_image(images.to(device, non_blocking=True))
    return F.normalize(feats.float(), dim=-1).cpu()


@torch.no_grad()
def encode_images(
    model: torch.nn.Module,
    paths: Sequence[Path],
    transform: Callable,
    batch_size: int = 128,
    num_workers: int = 0,
    description: str = "encoding images",
) -> tuple[torch.Tensor, list[int]]:
    """Embed image files.

    Returns ``(embeddings, unreadable)``: float32 [N, D] L2-normalised on CPU (rows of
    unreadable files are zero) and the indices of files that could not be read.
    """
    loader = DataLoader(
        _ImageFiles(paths, transform), batch_size=batch_size, num_workers=num_workers, collate_fn=_collate
    )
    out: torch.Tensor | None = None
    unreadable: list[int] = []
    for index, images, bad in track(loader, description, total=len(loader)):
        unreadable += bad
        if images is None:
            continue
        feats = embed_pixels(model, images)
        if out is None:
            out = torch.zeros(len(paths), feats.shape[1])
        out[index] = feats
    if out is None:
        raise ValueError("no image could be read")
    return out, unreadable


@torch.no_grad()
def encode_texts(
    model: torch.nn.Module,
    tokenize: Callable[[list[str]], torch.Tensor],
    texts: Sequence[str],
    batch_size: int = 512,
    description: str = "encoding captions",
) -> torch.Tensor:
    """Embed captions: float32 [N, D] L2-normalised on CPU."""
    device = model_device(model)
    chunks = []
    starts = range(0, len(texts), batch_size)
    for start in track(starts, description, total=len(starts)):
        tokens = tokenize(list(texts[start : start + batch_size])).to(device)
        with _autocast(device):
            feats = model.encode_text(tokens)
        chunks.append(F.normalize(feats.float(), dim=-1).cpu())
    return torch.cat(chunks) if chunks else torch.empty(0, 0)
