"""Export a gadms model for other tools: an open_clip folder, or the same as a Hugging Face Hub repo.

``format="open_clip"`` writes what ``open_clip.create_model_and_transforms("local-dir:DIR")`` loads:

- ``open_clip_config.json``: ``{"model_cfg": <the open_clip model config>, "preprocess_cfg":
  {"size": [H, W], "mean", "std", "interpolation": "bilinear", "resize_mode": "squash"}}``
  (squash: resize to exactly H x W, as gadms does);
- ``open_clip_model.safetensors``: the CLIP tensors (the MTP decoder and classifier stay out:
  they never touch an embedding).

``format="hf"`` writes the same files plus ``README.md``, a model card with the training recipe
and the validation metrics stored in the checkpoint, i.e. a folder to upload as a Hub repo
(open_clip then loads it as ``hf-hub:org/name``). Both are written to a temporary folder and
renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import yaml

from gadms_cli.data.transforms import CLIP_MEAN, CLIP_STD, DEFAULT_INTERPOLATION
from gadms_cli.errors import GadmsError
from gadms_cli.model.person_clip import PersonCLIP

FORMATS = ("open_clip", "hf")
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"


def open_clip_config(model: PersonCLIP) -> dict:
    """The ``open_clip_config.json`` content for ``model``."""
    height, width = model.config.image_size
    return {
        "model_cfg": model.config.clip_config,
        "preprocess_cfg": {
            "size": [int(height), int(width)],
            "mean": list(CLIP_MEAN),
            "std": list(CLIP_STD),
            "interpolation": DEFAULT_INTERPOLATION,
            "resize_mode": "squash",
        },
    }


def model_card(model: PersonCLIP, name: str) -> str:
    """A Hub model card (YAML front matter + markdown) from what the checkpoint records."""
    extra = model.config.extra or {}
    lines = [
        "---", "library_name: open_clip", "tags: [clip, person-retrieval, gadms]", "---", "",
        f"# {name}", "",
        "A CLIP dual encoder for text-based person retrieval trained with gadms (GA-DMS, EMNLP 2025).",
        f"Architecture `{model.config.arch}`, images {model.config.image_size[0]}x{model.config.image_size[1]}, "
        f"embedding dim {model.config.embed_dim}, text context {model.config.context_length}.", "",
        "```python", "import open_clip",
        f'model, _, preprocess = open_clip.create_model_and_transforms("hf-hub:ORG/{name}")', "```", "",
    ]
    if extra.get("metrics"):
        metrics = extra["metrics"]
        lines += ["## Validation metrics (as stored in the checkpoint)", "", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {value:.2f} |" for key, value in metrics.items() if isinstance(value, (int, float))]
        lines.append("")
    if extra.get("recipe"):
        lines += ["## Training recipe", "", "```yaml", yaml.safe_dump(extra["recipe"], sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines) + "\n"


def export_model(model: PersonCLIP, out_dir: str | os.PathLike, fmt: str = "open_clip", overwrite: bool = False) -> Path:
    """Write ``model`` as ``fmt`` into ``out_dir`` (see the module docstring); returns the folder."""
    from safetensors.torch import save_file

    if fmt not in FORMATS:
        raise GadmsError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    if "conv_stem" in model.config.clip_config.get("vision_cfg", {}):
        raise GadmsError(
            f"{model.config.arch} has a convolutional stem (vision_cfg.conv_stem) that open_clip cannot build, so it has no "
            "open_clip or Hub form; share the gadms model folder itself (gadms_cli.load_model reads it)"
        )
    target = Path(out_dir)
    if target.exists() and not overwrite:
        raise GadmsError(f"{target} exists; pass --overwrite to replace it or choose another folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.clip.state_dict().items()}
        save_file(tensors, str(staging / WEIGHTS_NAME))
        (staging / CONFIG_NAME).write_text(json.dumps(open_clip_config(model), indent=1) + "\n", encoding="utf-8")
        if fmt == "hf":
            (staging / "README.md").write_text(model_card(model, target.name), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
