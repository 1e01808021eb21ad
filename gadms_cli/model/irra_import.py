"""Import checkpoints of the IRRA family (IRRA, MLLM4Text-ReID, GA-DMS) into a PersonCLIP.

Their ``.pth`` files are a pickled dict whose ``"model"`` entry is the state
dict (often fp16, sometimes with a ``module.`` prefix). We read it with
``torch.load(weights_only=True)`` only. Key mapping:

============================================  =====================================
theirs                                        ours (PersonCLIP)
============================================  =====================================
``base_model.<OpenAI CLIP name>``             ``clip.<same name>`` (open_clip uses OpenAI's names)
``cross_attn.*``, ``cross_modal_transformer.*``,
``ln_pre_t.*``, ``ln_pre_i.*``, ``ln_post.*``,
``mlm_head.dense/ln/fc.*``                    ``mtp.<same name>``
``classifier.*``                              ``classifier.*``
============================================  =====================================

The architecture is read off the tensors (as OpenAI's ``build_model`` does):
widths, depths, heads = width // 64, patch size, context length, embed dim.
The image size comes from ``visual.positional_embedding``: 1 + h*w rows at
the patch stride; 193 rows at stride 16 is the 24x8 grid of 384x128 images.
A non-square patch count is split as height = 3 x width when possible (the
person crops of every IRRA-family recipe), else as close to 3:1 as divisors allow;
pass ``source_image_size`` when a checkpoint was trained otherwise.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import torch

from gadms_cli.errors import GadmsError
from gadms_cli.model.person_clip import PersonCLIP, PersonCLIPConfig
from gadms_cli.model.weights import LoadReport, load_clip_state, load_module_state, read_state_dict, strip_prefix

CLIP_PREFIX = "base_model."
DECODER_PREFIXES = ("cross_attn.", "cross_modal_transformer.", "ln_pre_t.", "ln_pre_i.", "ln_post.", "mlm_head.")
CLASSIFIER_PREFIX = "classifier."


def looks_like_irra(state_dict: dict[str, torch.Tensor]) -> bool:
    """True when the keys use the IRRA layout (a ``base_model.`` CLIP)."""
    return any(k.startswith(CLIP_PREFIX) for k in state_dict)


def _count_blocks(keys: list[str], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for k in keys if (m := pattern.match(k))}
    return max(indices) + 1 if indices else 0


def infer_grid(num_patches: int) -> tuple[int, int]:
    """Split a patch count into (rows, cols): 3:1 if exact, else square, else the divisor pair nearest 3:1."""
    cols = math.isqrt(num_patches // 3)
    if cols > 0 and 3 * cols * cols == num_patches:
        return 3 * cols, cols
    side = math.isqrt(num_patches)
    if side * side == num_patches:
        return side, side
    pairs = [(num_patches // w, w) for w in range(1, side + 1) if num_patches % w == 0]
    return min(pairs, key=lambda hw: abs(math.log(hw[0] / hw[1] / 3.0)))


def infer_clip_config(
    clip_state: dict[str, torch.Tensor], source_image_size: tuple[int, int] | None = None
) -> tuple[dict, tuple[int, int], list[str]]:
    """open_clip model config of an OpenAI-layout ViT CLIP state dict.

    Returns (config, source patch grid, notes). Raises :class:`GadmsError` for
    ResNet image towers or incomplete state dicts.
    """
    keys = list(clip_state)
    if "visual.conv1.weight" not in clip_state or "visual.proj" not in clip_state:
        if any(k.startswith("visual.layer1.") for k in keys):
            raise GadmsError("IRRA checkpoint with a ResNet image tower: only ViT towers are supported")
        raise GadmsError(
            "IRRA checkpoint lacks base_model.visual.conv1.weight / visual.proj: not a CLIP ViT state dict"
        )
    needed_keys = ("token_embedding.weight", "positional_embedding", "ln_final.weight", "text_projection")
    for needed in needed_keys + ("visual.positional_embedding",):
        if needed not in clip_state:
            raise GadmsError(f"IRRA checkpoint lacks base_model.{needed}")
    conv = clip_state["visual.conv1.weight"]
    vision_width, patch = int(conv.shape[0]), int(conv.shape[-1])
    num_patches = int(clip_state["visual.positional_embedding"].shape[0]) - 1
    notes: list[str] = []
    if source_image_size is not None:
        grid = (source_image_size[0] // patch, source_image_size[1] // patch)
        if grid[0] * grid[1] != num_patches:
            raise GadmsError(
                f"source image size {source_image_size[0]}x{source_image_size[1]} gives {grid[0] * grid[1]} patches, "
                f"the checkpoint has {num_patches}"
            )
    else:
        grid = infer_grid(num_patches)
        if grid[0] != 3 * grid[1] and grid[0] != grid[1]:
            raise GadmsError(
                f"the checkpoint's {num_patches} image patches (stride {patch}) do not tell its training image size "
                f"(3:1 and square do not fit; {grid[0] * patch}x{grid[1] * patch} would be a guess): "
                "pass it with --source-image-size HxW (e.g. 384x192)"
            )
        notes.append(
            f"trained image size inferred as {grid[0] * patch}x{grid[1] * patch} "
            f"({num_patches} patches at stride {patch})"
        )
    text_width = int(clip_state["ln_final.weight"].shape[0])
    config = {
        "embed_dim": int(clip_state["text_projection"].shape[1]),
        "quick_gelu": True,  # OpenAI CLIP, which every IRRA-family model starts from
        "vision_cfg": {
            "image_size": [grid[0] * patch, grid[1] * patch],
            "layers": _count_blocks(keys, "visual.transformer.resblocks."),
            "width": vision_width,
            "head_width": 64,
            "patch_size": patch,
        },
        "text_cfg": {
            "context_length": int(clip_state["positional_embedding"].shape[0]),
            "vocab_size": int(clip_state["token_embedding.weight"].shape[0]),
            "width": text_width,
            "heads": max(1, text_width // 64),
            "layers": _count_blocks(keys, "transformer.resblocks."),
        },
    }
    return config, grid, notes


def import_irra_state_dict(
    state_dict: dict[str, torch.Tensor],
    source: str,
    *,
    image_size: tuple[int, int] | None = None,
    context_length: int | None = None,
    source_image_size: tuple[int, int] | None = None,
    with_mtp: bool | None = None,
    num_classes: int | None = None,
) -> tuple[PersonCLIP, LoadReport]:
    """Build a PersonCLIP from an IRRA-layout state dict; see :func:`import_irra_checkpoint`."""
    state_dict = strip_prefix(state_dict, "module.")
    report = LoadReport(source=source, kind="irra checkpoint")
    clip_state = {k[len(CLIP_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(CLIP_PREFIX)}
    decoder_state = {k: v for k, v in state_dict.items() if k.startswith(DECODER_PREFIXES)}
    classifier_state = {
        k[len(CLASSIFIER_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(CLASSIFIER_PREFIX)
    }
    report.unexpected += [
        k for k in state_dict if not k.startswith((CLIP_PREFIX, CLASSIFIER_PREFIX) + DECODER_PREFIXES)
    ]

    clip_config, grid, notes = infer_clip_config(clip_state, source_image_size)
    report.notes += notes
    patch = clip_config["vision_cfg"]["patch_size"]
    if image_size is not None:
        if image_size[0] % patch or image_size[1] % patch:
            raise GadmsError(f"image size {image_size[0]}x{image_size[1]} is not a multiple of the patch size {patch}")
        clip_config["vision_cfg"]["image_size"] = [int(image_size[0]), int(image_size[1])]
    if context_length is not None:
        clip_config["text_cfg"]["context_length"] = int(context_length)

    has_decoder = bool(decoder_state)
    use_mtp = has_decoder if with_mtp is None else with_mtp
    file_ids = int(classifier_state["weight"].shape[0]) if "weight" in classifier_state else 0
    num_ids = file_ids if num_classes is None else int(num_classes)
    embed_dim = clip_config["embed_dim"]
    config = PersonCLIPConfig(
        clip_config=clip_config,
        arch="irra-import",
        mtp=use_mtp,
        decoder_layers=_count_blocks(list(decoder_state), "cross_modal_transformer.resblocks.") or 4,
        decoder_heads=max(1, embed_dim // 64),  # IRRA's rule
        num_ids=num_ids,
        extra={"imported_from": source},
    )
    model = PersonCLIP(config)

    load_clip_state(model.clip, clip_state, report, source_grid=grid, prefix_in_report=CLIP_PREFIX)
    missing_clip = [k for k in report.missing if k != CLIP_PREFIX + "logit_scale"]
    if missing_clip:
        raise GadmsError(
            f"{source}: the CLIP part is incomplete ({len(missing_clip)} tensors missing, e.g. {missing_clip[0]})"
        )
    report.missing = []  # logit_scale is unused (the scale is fixed at 50)

    if model.mtp is not None:
        if has_decoder:
            load_module_state(model.mtp, decoder_state, report, prefix_in_report="")
        else:
            report.notes.append("no MTP decoder in the file: a new one is initialised")
    elif has_decoder:
        report.notes.append(f"MTP decoder weights ({len(decoder_state)} tensors) not used: MTP is off")
    if model.classifier is not None:
        if file_ids == num_ids:
            load_module_state(model.classifier, classifier_state, report, prefix_in_report=CLASSIFIER_PREFIX)
        else:
            report.notes.append(f"identity classifier re-initialised: file has {file_ids} ids, model {num_ids}")
    elif classifier_state:
        report.notes.append(f"identity classifier ({file_ids} ids) not used")
    return model, report


def import_irra_checkpoint(
    path: str | os.PathLike,
    *,
    image_size: tuple[int, int] | None = None,
    context_length: int | None = None,
    source_image_size: tuple[int, int] | None = None,
    with_mtp: bool | None = None,
    num_classes: int | None = None,
) -> tuple[PersonCLIP, LoadReport]:
    """Read an IRRA-family ``.pth`` (weights_only) and return (PersonCLIP in float32, LoadReport).

    ``image_size`` / ``context_length``: the model's, when they should differ
    from the checkpoint's (position embeddings are resized). ``source_image_size``:
    the size it was trained at, when the 3:1 inference would be wrong.
    ``with_mtp`` / ``num_classes``: None keeps what the file has; otherwise a
    decoder or classifier missing from the file (or of another size) is new.
    """
    state_dict = read_state_dict(path)
    if not looks_like_irra(state_dict):
        raise GadmsError(f"{path}: no 'base_model.' keys, so not an IRRA-family checkpoint")
    return import_irra_state_dict(
        state_dict,
        str(Path(path)),
        image_size=image_size,
        context_length=context_length,
        source_image_size=source_image_size,
        with_mtp=with_mtp,
        num_classes=num_classes,
    )
