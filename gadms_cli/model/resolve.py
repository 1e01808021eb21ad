"""Which model a command means: ``--model``, else ``$GADMS_MODEL``, else the quickstart's model.

``--model`` may be
- one of our checkpoint directories or a run directory (``best/``, else ``last/``);
- a weights file: an IRRA-family ``.pth`` (IRRA, MLLM4Text-ReID, GA-DMS) or open_clip
  weights of ``--arch`` (``.safetensors``, ``.bin``, ``.pt``, ``.pth``);
- an open_clip architecture name with ``--pretrained TAG|FILE`` (e.g. the zero-shot
  CLIP baseline ``--model ViT-B-16 --pretrained openai``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from gadms_cli.errors import GadmsError
from gadms_cli.model.checkpoint import is_checkpoint_dir, load_checkpoint
from gadms_cli.model.factory import create_person_clip

ENV_VAR = "GADMS_MODEL"
QUICKSTART_MODEL = Path("gadms-quickstart") / "model"
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")


def model_spec(model: str | None) -> str:
    """The model a command should use, by the precedence above; a one-line error if there is none."""
    if model:
        return model
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR]
    if QUICKSTART_MODEL.exists():
        return str(QUICKSTART_MODEL)
    raise GadmsError(
        f"no model given: pass --model RUN_DIR|CHECKPOINT|FILE|ARCH, set {ENV_VAR}, or run 'gadms quickstart' "
        f"(it leaves {QUICKSTART_MODEL})"
    )


def load_model(
    model: str | None,
    *,
    pretrained: str | None = None,
    arch: str | None = None,
    image_size: tuple[int, int] | None = None,
    device: str | torch.device = "cpu",
    source_image_size: tuple[int, int] | None = None,
):
    """Build the PersonCLIP that ``model`` names (see the module docstring), in eval mode on ``device``."""
    spec = model_spec(model)
    path = Path(spec)
    if path.is_dir():
        if pretrained:
            raise GadmsError(f"--pretrained is for architecture names; '{spec}' is already a checkpoint or run directory")
        loaded = load_checkpoint(path, device=device)
    elif path.is_file() or spec.endswith(WEIGHT_SUFFIXES):
        if not path.is_file():
            raise GadmsError(f"--model {spec}: file not found")
        loaded = create_person_clip(
            arch=arch or "ViT-B-16", pretrained=str(path), image_size=image_size, device=device, source_image_size=source_image_size
        )
    elif is_checkpoint_dir(path):  # pragma: no cover - a dir is caught above
        loaded = load_checkpoint(path, device=device)
    else:
        loaded = create_person_clip(arch=spec, pretrained=pretrained, image_size=image_size, device=device)
    return loaded.eval()
