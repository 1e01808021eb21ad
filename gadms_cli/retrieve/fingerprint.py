"""The fingerprint of a model: which gallery index belongs to it.

Two models share an index only when they would produce the same embeddings, so
the fingerprint hashes (SHA-256) everything that decides an image embedding:

- the open_clip model config (architecture, image size, context length ...);
- the preprocessing (:func:`gadms_cli.data.transforms.eval_transform` at the
  model's image size, with CLIP's pixel statistics);
- every tensor of the CLIP part (name, dtype, shape and raw bytes).

The MTP decoder and the identity classifier never touch an embedding and are
left out: fine-tuning only the classifier keeps the index. Hashing reads the
weights once (about 0.5 s for ViT-B/16's 600 MB on one core).
"""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

from gadms_cli.data.transforms import CLIP_MEAN, CLIP_STD, DEFAULT_INTERPOLATION

# Bump when what an index stores for the same model changes (preprocessing, normalisation ...).
FINGERPRINT_VERSION = 2  # 2: bilinear resize (was bicubic)


def _embedding_module(model: nn.Module) -> nn.Module:
    """The open_clip CLIP inside a PersonCLIP, or the module itself."""
    return getattr(model, "clip", model)


def model_fingerprint(model: nn.Module) -> str:
    """Hex SHA-256 (64 characters) of the model's embedding-relevant config, preprocessing and weights."""
    config = getattr(model, "config", None)
    header = {
        "fingerprint_version": FINGERPRINT_VERSION,
        "clip_config": getattr(config, "clip_config", None),
        "preprocess": {
            "transform": "eval_transform",
            "image_size": list(config.image_size) if config is not None else None,
            "interpolation": DEFAULT_INTERPOLATION,
            "mean": list(CLIP_MEAN),
            "std": list(CLIP_STD),
        },
    }
    digest = hashlib.sha256(json.dumps(header, sort_keys=True, default=str).encode("utf-8"))
    for name, tensor in sorted(_embedding_module(model).state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode("utf-8"))
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()
