"""Transforms (against hand-computed normalisation) and the identity-balanced sampler."""

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from gadms_cli.data.identity_sampler import IdentityBatchSampler
from gadms_cli.data.transforms import AugmentConfig, eval_transform, train_transform


def test_eval_transform_normalises_a_constant_image_by_hand():
    image = Image.new("RGB", (50, 150), (255, 128, 0))
    out = eval_transform((48, 16))(image)
    assert out.shape == (3, 48, 16) and out.dtype == torch.float32
    expected = [
        (255 / 255 - 0.48145466) / 0.26862954,
        (128 / 255 - 0.4578275) / 0.26130258,
        (0 / 255 - 0.40821073) / 0.27577711,
    ]
    for channel, value in enumerate(expected):
        assert torch.allclose(out[channel], torch.full((48, 16), value), atol=1e-5)


def test_eval_transform_converts_grayscale_and_rgba_to_rgb():
    assert eval_transform((32, 16))(Image.new("L", (20, 40), 7)).shape == (3, 32, 16)
    assert eval_transform((32, 16))(Image.new("RGBA", (20, 40))).shape == (3, 32, 16)


def test_train_flip_only_gives_the_image_or_its_mirror():
    array = np.zeros((32, 16, 3), dtype=np.uint8)
    array[:, :4] = 255  # a white stripe on the left edge
    image = Image.fromarray(array)
    plain = eval_transform((32, 16))(image)
    transform = train_transform((32, 16), AugmentConfig(flip=True, pad_crop=0, random_erasing=0))
    seen = set()
    torch.manual_seed(0)
    for _ in range(40):
        out = transform(image)
        if torch.allclose(out, plain):
            seen.add("same")
        elif torch.allclose(out, plain.flip(-1)):
            seen.add("mirror")
        else:
            pytest.fail("flip-only augmentation produced something else than the image or its mirror")
    assert seen == {"same", "mirror"}


def test_train_transform_keeps_size_with_all_augmentations():
    image = Image.new("RGB", (64, 128), (10, 200, 30))
    out = train_transform((64, 32))(image)
    assert out.shape == (3, 64, 32)


def _pids():
    # 6 identities with 1..6 samples each: indices grouped by identity.
    pids = []
    for pid in range(6):
        pids += [pid * 10] * (pid + 1)
    return pids


def test_each_global_batch_has_p_identities_k_times():
    pids = _pids()
    sampler = IdentityBatchSampler(pids, ids_per_batch=3, samples_per_id=2, seed=1)
    batches = list(sampler)
    assert batches, "no batch produced"
    for batch in batches:
        counts = Counter(pids[i] for i in batch)
        assert len(batch) == 6 and len(counts) == 3 and set(counts.values()) == {2}


def test_rank_shares_partition_the_global_batch_and_keep_groups_whole():
    pids = _pids()
    full = IdentityBatchSampler(pids, 3, 2, seed=5)
    ranks = [IdentityBatchSampler(pids, 3, 2, num_replicas=3, rank=r, seed=5) for r in range(3)]
    for epoch in range(3):
        for s in [full, *ranks]:
            s.set_epoch(epoch)
        per_rank = [list(s) for s in ranks]
        for b, global_batch in enumerate(full):
            joined = sum((per_rank[r][b] for r in range(3)), [])
            assert joined == global_batch
            for r in range(3):  # share of 2 = one whole identity group
                assert len({pids[i] for i in per_rank[r][b]}) == 1


def test_order_depends_on_seed_and_epoch_only_and_resume_skips_batches():
    pids = list(range(40)) * 3
    a = IdentityBatchSampler(pids, 4, 3, seed=0)
    b = IdentityBatchSampler(pids, 4, 3, seed=0)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    a.set_epoch(0, start_batch=2)
    assert list(a) == first[2:] and len(a) == len(first) - 2


def test_identity_with_too_few_samples_is_topped_up_from_its_own_samples():
    pids = [0, 1, 1, 1, 2, 2, 2]
    sampler = IdentityBatchSampler(pids, ids_per_batch=3, samples_per_id=3, seed=0)
    batch = next(iter(sampler))
    zero = [i for i in batch if pids[i] == 0]
    assert zero == [0, 0, 0]


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="not divisible"):
        IdentityBatchSampler([0, 1, 2, 3], 2, 1, num_replicas=3)
    with pytest.raises(ValueError, match="identities"):
        IdentityBatchSampler([0, 0, 0], 2, 1)


def test_resize_is_bilinear_like_irra_and_bicubic_on_request():
    """Against PIL's own resize filters (what torchvision calls on a PIL image)."""
    import numpy as np

    from gadms_cli.data.transforms import CLIP_MEAN, CLIP_STD, eval_transform

    image = Image.effect_noise((50, 140), 80).convert("RGB")
    mean, std = np.array(CLIP_MEAN)[:, None, None], np.array(CLIP_STD)[:, None, None]
    for name, pil_filter in (("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC)):
        by_hand = (np.asarray(image.resize((32, 96), pil_filter), dtype=np.float32).transpose(2, 0, 1) / 255 - mean) / std
        ours = eval_transform((96, 32), interpolation=name)(image).numpy()
        assert np.abs(ours - by_hand).max() < 1e-5, name
    assert np.abs(eval_transform((96, 32))(image).numpy() - eval_transform((96, 32), "bilinear")(image).numpy()).max() == 0


def test_random_erasing_fills_with_the_mean_numbers_like_irra_or_zero():
    import torch

    from gadms_cli.data.transforms import CLIP_MEAN, AugmentConfig, train_transform

    image = Image.new("RGB", (32, 96), (255, 255, 255))  # normalised white is far from both fills
    for fill, expected in (("mean", CLIP_MEAN), ("zero", (0.0, 0.0, 0.0))):
        augment = AugmentConfig(flip=False, pad_crop=0, random_erasing=1.0, erasing_fill=fill)
        torch.manual_seed(0)
        out = train_transform((96, 32), augment)(image)
        white = (1 - torch.tensor(CLIP_MEAN)) / torch.tensor([0.26862954, 0.26130258, 0.27577711])
        erased = ~torch.isclose(out, white.view(3, 1, 1).expand_as(out), atol=1e-5).all(dim=0)
        assert erased.any()
        for channel in range(3):
            assert torch.allclose(out[channel][erased], torch.tensor(expected[channel]), atol=1e-6), fill


def test_an_items_augmentation_is_seeded_by_seed_epoch_and_index_and_leaves_the_global_rng_alone(tmp_path):

    from gadms_cli.data.records import TrainSample
    from gadms_cli.data.train_dataset import CaptionedImageDataset
    from gadms_cli.model.tokenizer import Tokenizer

    pixels = (torch.arange(3 * 16 * 8, dtype=torch.uint8).reshape(16, 8, 3) * 7).numpy()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    samples = [TrainSample(0, 0, i, tmp_path / "a.png", "a man") for i in range(3)]
    transform = train_transform((16, 8), AugmentConfig(flip=True, pad_crop=2, random_erasing=0.5))
    dataset = CaptionedImageDataset(samples, transform, Tokenizer(8), seed=3)
    dataset.set_epoch(2)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    item = dataset[1]
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed((3 * 1_000_003 + 2) * 10_000_019 + 1)  # the documented per-item seed
    with Image.open(tmp_path / "a.png") as image:
        expected = transform(image.convert("RGB"))
    assert torch.equal(item["image"], expected)
