"""Image transforms: resize to the person aspect ratio, CLIP normalisation, train augmentation.

Built from torchvision (the library open_clip itself uses) rather than by hand.
The train pipeline follows IRRA and the GA-DMS recipes:
resize -> horizontal flip -> pad 10 + random crop back to size -> to tensor ->
normalise -> random erasing. Output tensors are float32 [3, H, W], normalised.

As in IRRA's and the public GA-DMS code's transforms, the resize is BILINEAR (torchvision's
default) and random erasing fills its box with the CLIP mean numbers AFTER normalisation
(their ``value=mean``). Both are switchable: ``interpolation="bicubic"`` (CLIP's own
preprocessing) and ``erasing_fill="zero"`` (the normalised dataset mean, i.e. a grey box).
"""

from __future__ import annotations

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from gadms_cli.data.data_config import AugmentConfig

# OpenAI CLIP pixel statistics (RGB, values in [0, 1]); open_clip uses the same numbers.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


INTERPOLATIONS = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}
DEFAULT_INTERPOLATION = "bilinear"


def _to_rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def eval_transform(image_size: tuple[int, int] = (384, 128), interpolation: str = DEFAULT_INTERPOLATION) -> T.Compose:
    """PIL image -> normalised float tensor [3, H, W] at ``image_size`` = (height, width)."""
    return T.Compose(
        [
            T.Lambda(_to_rgb),
            T.Resize(image_size, interpolation=INTERPOLATIONS[interpolation]),
            T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )


def train_transform(image_size: tuple[int, int] = (384, 128), augment: AugmentConfig | None = None) -> T.Compose:
    """Training pipeline: eval resize plus flip, pad + random crop and random erasing (each switchable;
    ``augment`` None: the paper's, :class:`AugmentConfig`'s defaults). Its ``caption_dropout`` is the datasets'."""
    augment = augment or AugmentConfig()
    steps: list = [T.Lambda(_to_rgb), T.Resize(image_size, interpolation=INTERPOLATIONS[augment.interpolation])]
    if augment.flip:
        steps.append(T.RandomHorizontalFlip(0.5))
    if augment.pad_crop > 0:
        steps += [T.Pad(augment.pad_crop), T.RandomCrop(image_size)]
    steps += [T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)]
    if augment.random_erasing > 0:
        value = list(CLIP_MEAN) if augment.erasing_fill == "mean" else 0
        steps.append(T.RandomErasing(p=augment.random_erasing, scale=(0.02, 0.4), value=value))
    return T.Compose(steps)


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Undo :func:`eval_transform`'s normalisation: [..., 3, H, W] -> values in [0, 1]."""
    mean = torch.tensor(CLIP_MEAN, dtype=images.dtype, device=images.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return images * std + mean
