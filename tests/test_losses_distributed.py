"""SDM, ITC and phrase alignment under data parallel: 2 CPU processes (gloo) against one process on the global batch.

Checks the contract written in gadms_cli/gadms/losses.py: the mean over processes of the
per-process loss equals the single-process loss on the concatenated batch, and each
process's gradient on its local features equals W times the matching slice of the
single-process gradient (DDP's gradient averaging divides by W).
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gadms_cli.gadms.losses import gather_with_grad, itc_loss, phrase_alignment_loss, sdm_loss

WORLD_SIZE = 2
LOCAL_BATCH = 6
DIM = 8


def global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same float64 data in every process; identities shared across the two halves."""
    generator = torch.Generator().manual_seed(0)
    n = WORLD_SIZE * LOCAL_BATCH
    images = torch.randn(n, DIM, generator=generator, dtype=torch.float64)
    texts = images + 0.7 * torch.randn(n, DIM, generator=generator, dtype=torch.float64)
    pids = torch.tensor([0, 1, 2, 0, 3, 4, 1, 2, 5, 3, 6, 0])
    return images, texts, pids


def phrase_keys() -> tuple[torch.Tensor, torch.Tensor]:
    """Query and caption keys (4 keys) for the phrase loss; matches cross the two halves."""
    generator = torch.Generator().manual_seed(1)
    caption_keys = torch.rand(WORLD_SIZE * LOCAL_BATCH, 4, generator=generator) < 0.6
    query_keys = caption_keys & (torch.rand(WORLD_SIZE * LOCAL_BATCH, 4, generator=generator) < 0.5)
    query_keys[3] = False  # a query without keys: only its own image matches
    return query_keys, caption_keys


def compute_loss(loss_name: str, images, texts, pids, rows=slice(None), gather: bool = False):
    if loss_name == "sdm":
        return sdm_loss(images, texts, pids[rows], gather=gather)
    if loss_name == "itc":
        return itc_loss(images, texts, gather=gather)
    query_keys, caption_keys = phrase_keys()
    return phrase_alignment_loss(images, texts, query_keys[rows], caption_keys[rows], logit_scale=10.0, gather=gather)


def single_process(loss_name: str):
    images, texts, pids = (t.clone() for t in global_batch())
    images.requires_grad_()
    texts.requires_grad_()
    loss = compute_loss(loss_name, images, texts, pids)
    loss.backward()
    return loss.detach(), images.grad, texts.grad


def worker(rank: int, store_path: str) -> None:
    torch.set_num_threads(1)  # two processes on a 2-core machine: no oversubscription
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=WORLD_SIZE)
    try:
        local = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        # the gather itself: forward concatenates in rank order, backward sums into the local slice
        x = torch.full((2, 3), float(rank + 1), requires_grad=True)
        gathered = gather_with_grad(x)
        assert torch.equal(gathered, torch.cat([torch.full((2, 3), 1.0), torch.full((2, 3), 2.0)]))
        weights = torch.arange(12, dtype=torch.float32).reshape(4, 3) * (rank + 1)
        (gathered * weights).sum().backward()
        # d/dx of sum over ranks r of (r+1) * weights_slice: (1 + 2) * weights[local rows]
        expected = 3 * torch.arange(12, dtype=torch.float32).reshape(4, 3)[rank * 2 : rank * 2 + 2]
        assert torch.equal(x.grad, expected)

        for loss_name in ("sdm", "itc", "phrase"):
            images, texts, pids = global_batch()
            local_images = images[local].clone().requires_grad_()
            local_texts = texts[local].clone().requires_grad_()
            loss = compute_loss(loss_name, local_images, local_texts, pids, rows=local, gather=True)
            loss.backward()
            mean_loss = loss.detach().clone()
            dist.all_reduce(mean_loss)
            mean_loss /= WORLD_SIZE

            ref_loss, ref_image_grad, ref_text_grad = single_process(loss_name)
            # (torch.testing.assert_close would import torch.distributed.tensor here: seconds)
            assert torch.allclose(mean_loss, ref_loss, rtol=1e-12, atol=1e-12)
            assert torch.allclose(local_images.grad / WORLD_SIZE, ref_image_grad[local], rtol=1e-9, atol=1e-12)
            assert torch.allclose(local_texts.grad / WORLD_SIZE, ref_text_grad[local], rtol=1e-9, atol=1e-12)
            # the local loss alone is not the global one (each process sees different rows)
            assert not torch.isclose(loss.detach(), ref_loss)
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_gathered_losses_equal_single_process_global_batch(tmp_path):
    # fork: the children inherit the imported modules instead of re-importing torch (seconds)
    mp.start_processes(
        worker, args=(str(tmp_path / "store"),), nprocs=WORLD_SIZE, join=True, start_method="fork"
    )
