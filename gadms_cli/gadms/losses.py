"""Training losses: SDM, ITC, phrase alignment, ID and MTP (docs/method.md, "Losses").

Shapes: ``B`` pairs in the local batch, ``D`` embedding width, ``C`` identity classes,
``T`` text positions, ``V`` vocabulary size. Features need not be normalised: SDM and
ITC L2-normalise them inside. Losses are scalar tensors (nats).

Data parallel (SDM and ITC with ``gather=True``). Every process holds ``B`` local
pairs, the same ``B`` on every process; the global batch is the concatenation of the
processes' batches in rank order (what :class:`gadms_cli.data.identity_sampler.IdentityBatchSampler`
produces). Each process computes the loss rows of its OWN queries against ALL keys of
the global batch (t2i: local texts vs. all images; i2t: local images vs. all texts) and
averages them over its ``B`` rows. Because every process has the same ``B``, the mean of
the processes' values is exactly the single-process loss over the global batch.

Gradients: :func:`gather_with_grad` sums, in its backward, the gradient that every
process's loss sends to each slice, so after ``backward`` the local features of process
``r`` hold ``d(sum over processes of L_p) / d(local features) = W * dL_global / d(local
features)`` with ``W`` the world size. DDP (and Accelerate) then AVERAGE parameter
gradients over processes, which divides by ``W``: the parameter gradients equal those of
one process training on the global batch. (With a plain sum of gradients instead of
DDP's average, divide the loss by ``W``.)
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100


# ---------------------------------------------------------------------------
# Data-parallel gathering
# ---------------------------------------------------------------------------


def distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward returns the summed gradient of the local slice.

    Forward: every process contributes its ``[B, ...]`` tensor; all get ``[W*B, ...]``.
    Backward: process ``p`` receives the gradient of its own loss w.r.t. the whole
    gathered tensor; an all-reduce (sum) adds up every process's gradient, and each
    process keeps the rows of its own slice. One collective, on every backend (gloo
    supports neither reduce-scatter nor what torch.distributed.nn uses to emulate it
    cheaply), and no deprecation warning.
    """

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # type: ignore[override]
        world_size = dist.get_world_size()
        ctx.rank = dist.get_rank()
        ctx.local_size = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.local_size
        return grad[start : start + ctx.local_size]


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` ``[B, ...]`` from all processes into ``[W*B, ...]`` (rank order).

    Differentiable: the gradient flows back to this process's slice (summed over all
    processes' losses, see the module docstring). Every process must pass the same shape.
    Without an initialised process group (or with one process) returns ``tensor`` itself.
    """
    if not distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


def gather_no_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` ``[B, ...]`` from all processes (no gradient; for labels)."""
    if not distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def _at_least_float32(tensor: Tensor) -> Tensor:
    """Half-precision similarities go to float32 before softmax (a few KB; float64 stays)."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def _local_offset(local_size: int) -> int:
    """Index of this process's first row in the global batch."""
    return dist.get_rank() * local_size if distributed() else 0


# ---------------------------------------------------------------------------
# SDM
# ---------------------------------------------------------------------------


def _sdm_rows(
    queries: Tensor,
    keys: Tensor,
    query_pids: Tensor,
    key_pids: Tensor,
    logit_scale: float,
    epsilon: float,
) -> Tensor:
    """Mean over query rows of ``sum_b P_ab (log P_ab - log(Q_ab + eps))``.

    Args:
        queries: ``[N, D]`` normalised; keys: ``[M, D]`` normalised.
        query_pids: ``[N]``; key_pids: ``[M]``.
    """
    logits = logit_scale * _at_least_float32(queries @ keys.t())  # [N, M]
    log_p = F.log_softmax(logits, dim=1)
    same_id = (query_pids[:, None] == key_pids[None, :]).to(logits.dtype)
    # Each query's identity is among the keys (its own pair), so every row sum is >= 1.
    q = same_id / same_id.sum(dim=1, keepdim=True)
    kl_rows = (log_p.exp() * (log_p - torch.log(q + epsilon))).sum(dim=1)
    return kl_rows.mean()


def sdm_loss(
    image_feats: Tensor,
    text_feats: Tensor,
    pids: Tensor,
    logit_scale: float = 50.0,
    epsilon: float = 1e-8,
    gather: bool = False,
) -> Tensor:
    """IRRA's similarity distribution matching loss.

    With L2-normalised image features I and text features T,
    ``P_t2i = softmax_rows(scale * T I^T)``, ``P_i2t = softmax_rows(scale * I T^T)`` and
    ``Q = [y_a == y_b]`` normalised to sum 1 per row, the loss is
    ``mean_rows KL(P_t2i || Q) + mean_rows KL(P_i2t || Q)``.

    KL with zero entries of Q: like IRRA, each term is ``P (log P - log(Q + eps))``. Where
    Q is 0 (a different identity) the true KL would be infinite; this form instead charges
    ``P (log P - log eps)``, a large finite penalty (``-log 1e-8 = 18.4``) that pushes that
    probability mass towards the matching identities. The value is therefore not a true
    KL; it is IRRA's and GA-DMS's loss.

    Args:
        image_feats: ``[B, D]`` image embeddings (local batch).
        text_feats: ``[B, D]`` text embeddings of the same pairs.
        pids: ``[B]`` integer identity of each pair.
        logit_scale: temperature inverse (docs/method.md: fixed 50).
        epsilon: added to Q inside the log.
        gather: under data parallel, rows are this process's pairs and keys are the
            global batch (see the module docstring); a no-op with one process.
    Returns:
        Scalar loss.
    """
    image_feats = F.normalize(image_feats, dim=-1)
    text_feats = F.normalize(text_feats, dim=-1)
    if gather:
        all_images = gather_with_grad(image_feats)
        all_texts = gather_with_grad(text_feats)
        all_pids = gather_no_grad(pids)
    else:
        all_images, all_texts, all_pids = image_feats, text_feats, pids
    t2i = _sdm_rows(text_feats, all_images, pids, all_pids, logit_scale, epsilon)
    i2t = _sdm_rows(image_feats, all_texts, pids, all_pids, logit_scale, epsilon)
    return t2i + i2t


# ---------------------------------------------------------------------------
# ITC, ID, MTP
# ---------------------------------------------------------------------------


def itc_loss(
    image_feats: Tensor,
    text_feats: Tensor,
    logit_scale: float = 50.0,
    gather: bool = False,
) -> Tensor:
    """Symmetric InfoNCE: pair ``b``'s image and text are each other's only positive.

    ``(CE(scale * I T^T, diag) + CE(scale * T I^T, diag)) / 2`` over normalised features.
    With ``gather``, each process's rows are its own pairs against the global batch, as
    in :func:`sdm_loss` (the positive of local row ``i`` is global column ``rank*B + i``).

    Args:
        image_feats, text_feats: ``[B, D]`` embeddings of the same pairs.
    Returns:
        Scalar loss.
    """
    image_feats = F.normalize(image_feats, dim=-1)
    text_feats = F.normalize(text_feats, dim=-1)
    if gather:
        all_images, all_texts = gather_with_grad(image_feats), gather_with_grad(text_feats)
    else:
        all_images, all_texts = image_feats, text_feats
    local = image_feats.shape[0]
    targets = torch.arange(local, device=image_feats.device) + (_local_offset(local) if gather else 0)
    i2t = F.cross_entropy(logit_scale * _at_least_float32(image_feats @ all_texts.t()), targets)
    t2i = F.cross_entropy(logit_scale * _at_least_float32(text_feats @ all_images.t()), targets)
    return (i2t + t2i) / 2


def phrase_alignment_loss(
    image_feats: Tensor,
    query_feats: Tensor,
    query_keys: Tensor,
    caption_keys: Tensor,
    logit_scale: float = 50.0,
    gather: bool = False,
) -> Tensor:
    """Contrastive loss of short attribute queries with every image they are true of.

    Query ``i`` (e.g. "a woman carrying a backpack", written from caption ``i`` by
    :func:`gadms_cli.data.attribute_phrases.sample_query`) asserts the keys ``query_keys[i]``;
    image ``j`` matches it when its caption states all of them:
    ``M_ij = [query_keys_i subset of caption_keys_j]``, and always ``M_ii = 1``. With
    normalised features, ``P_q2i = softmax_rows(scale * Q I^T)`` and
    ``P_i2q = softmax_rows(scale * I Q^T)``, the loss is the cross-entropy against the
    matches spread evenly over each row:
    ``(mean_i CE(M_i / |M_i|, P_q2i,i) + mean_j CE(M^T_j / |M^T_j|, P_i2q,j)) / 2``.
    Unlike ITC, the other women of the batch are not negatives of "a woman".

    Args:
        image_feats: ``[B, D]`` image embeddings.
        query_feats: ``[B, D]`` text embeddings of the queries (query ``b`` written from pair ``b``).
        query_keys: ``[B, K]`` bool, the keys each query asserts (all False: only its own image matches).
        caption_keys: ``[B, K]`` bool, the keys each pair's caption states.
        logit_scale: temperature inverse.
        gather: under data parallel, local rows against the global batch (as :func:`itc_loss`).
    Returns:
        Scalar loss (nats).
    """
    image_feats = F.normalize(image_feats, dim=-1)
    query_feats = F.normalize(query_feats, dim=-1)
    if gather:
        all_images, all_queries = gather_with_grad(image_feats), gather_with_grad(query_feats)
        all_query_keys, all_caption_keys = gather_no_grad(query_keys), gather_no_grad(caption_keys)
    else:
        all_images, all_queries, all_query_keys, all_caption_keys = image_feats, query_feats, query_keys, caption_keys
    local = image_feats.shape[0]
    offset = _local_offset(local) if gather else 0
    own = torch.zeros(local, all_images.shape[0], dtype=torch.bool, device=image_feats.device)
    own[torch.arange(local), torch.arange(local) + offset] = True

    def matches(keys: Tensor, stated: Tensor) -> Tensor:
        """[N, M]: row n asserts a key and all its keys are among column m's stated keys."""
        missing = keys.to(torch.float32) @ (~stated).to(torch.float32).t()
        return (missing == 0) & keys.any(dim=1, keepdim=True)

    q2i = matches(query_keys, all_caption_keys) | own  # local queries x all images
    i2q = matches(all_query_keys, caption_keys).t() | own  # local images x all queries

    def soft_ce(logits: Tensor, positives: Tensor) -> Tensor:
        target = positives.to(logits.dtype)
        target = target / target.sum(dim=1, keepdim=True)
        return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()

    q2i_loss = soft_ce(logit_scale * _at_least_float32(query_feats @ all_images.t()), q2i)
    i2q_loss = soft_ce(logit_scale * _at_least_float32(image_feats @ all_queries.t()), i2q)
    return (q2i_loss + i2q_loss) / 2


def attribute_loss(logits: Tensor, targets: Tensor, known: Tensor, balance: bool = False) -> Tensor:
    """Multi-label binary cross-entropy of an attribute head, over the known entries only.

    Unbalanced (the default): the mean BCE over all known entries. Balanced: per attribute
    (column) ``a``, the mean BCE of its known present entries and that of its known absent
    entries weigh 1/2 each (the whole weight when only one side occurs in the batch); the loss
    is the mean over the attributes with a known entry. A head then gains as much from the 20 %
    of people carrying a backpack as from the 80 % who do not, the balanced accuracy's view.

    Args:
        logits: ``[B, A]`` attribute logits of the image embeddings.
        targets: ``[B, A]`` bool, the attributes the captions state.
        known: ``[B, A]`` bool, which entries the captions decide (see
            :func:`gadms_cli.data.attribute_phrases.head_targets`).
        balance: weigh present and absent entries equally per attribute (see above); under data
            parallel the counts are those of the global batch.
    Returns:
        The loss (nats; 0, attached to ``logits``, when no entry is known).
    """
    logits = _at_least_float32(logits)
    per_entry = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    if not balance:
        weights = known.to(logits.dtype)
        return (per_entry * weights).sum() / weights.sum().clamp(min=1.0)
    present = (known & targets).to(logits.dtype)
    absent = (known & ~targets).to(logits.dtype)
    counts = torch.stack([present.sum(0), absent.sum(0)])  # [2, A], from bools: no gradient
    world = 1
    if distributed():
        # The counts of the GLOBAL batch: each process's loss is then its share of the global
        # balanced loss (times the world size, which DDP's gradient averaging divides out).
        dist.all_reduce(counts)
        world = dist.get_world_size()
    n_present, n_absent = counts
    sides = (n_present > 0).to(logits.dtype) + (n_absent > 0).to(logits.dtype)  # 0, 1 or 2 per attribute
    per_attribute = ((per_entry * present).sum(0) / n_present.clamp(min=1.0)
                     + (per_entry * absent).sum(0) / n_absent.clamp(min=1.0)) / sides.clamp(min=1.0)
    return world * per_attribute.sum() / (sides > 0).sum().clamp(min=1).to(logits.dtype)


def id_loss(logits_img: Tensor, logits_txt: Tensor, pids: Tensor) -> Tensor:
    """Identity classification loss, averaged over the two modalities.

    Args:
        logits_img: ``[B, C]`` classifier logits of the image embeddings.
        logits_txt: ``[B, C]`` classifier logits of the text embeddings.
        pids: ``[B]`` int64 train identity index in ``[0, C)``.
    Returns:
        ``(CE(logits_img, pids) + CE(logits_txt, pids)) / 2``, each CE a mean over the batch.
    """
    image_term = F.cross_entropy(_at_least_float32(logits_img), pids)
    text_term = F.cross_entropy(_at_least_float32(logits_txt), pids)
    return (image_term + text_term) / 2


def mtp_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Masked token prediction: cross-entropy at the masked positions only.

    Args:
        logits: ``[B, T, V]`` (or any ``[..., V]``) decoder logits.
        labels: ``[B, T]`` (matching the leading dims): the original token id at masked
            positions, ``-100`` elsewhere (see :func:`gadms_cli.gadms.masking.apply_bert_replacement`).
    Returns:
        Mean cross-entropy over the masked tokens of the whole batch (each masked token
        weighs the same). With no masked token: 0, still attached to ``logits`` so that
        ``backward`` works (and gives zero gradients).
    """
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_labels = labels.reshape(-1)
    keep = flat_labels != IGNORE_INDEX
    if not bool(keep.any()):
        return flat_logits.sum() * 0.0
    # Select before up-casting so an fp16 [B, T, V] tensor is never copied whole to fp32.
    return F.cross_entropy(_at_least_float32(flat_logits[keep]), flat_labels[keep])
