"""The training objectives as one module: ``gadms``, ``irra`` and ``clip`` (docs/method.md "Losses").

``RetrievalObjective(model, method)`` takes a batch and returns the loss and
monitoring numbers. Per step, for ``gadms``:

1. image tower once: embedding [B, E] (for SDM) and token features [B, 1+N, E] (for MTP);
2. token scores s [B, T] of the CLEAN captions (``method.token_score``: the GA score,
   a plain similarity score, or random), detached. ``online``: scored now and used
   now; ``cached``: the masks use the scores stored the last time each caption was
   drawn (0.85 at first), and the fresh scores replace them;
3. noise masking (low-s tokens) -> caption for SDM; informative masking (high-s
   tokens) -> caption for MTP; both masked captions go through the text tower in
   ONE batched forward;
4. L = SDM(image, noise-masked caption) + beta * MTP.

``irra``: L = SDM(image, clean caption) + ID + MLM on a uniformly 15%-masked caption
(the clean and masked captions share one text forward). ``clip``: SDM (or ITC) only.

Any method, with ``method.phrase_weight > 0``: + phrase_weight * the phrase alignment loss of
the batch's short attribute queries (``query_tokens``, ``query_keys``, ``caption_keys``; written
by the dataset, see gadms_cli/data/attribute_phrases.py) against its images; with
``method.attribute_weight > 0``: + attribute_weight * the BCE of the model's attribute head
on the image embeddings against the attributes the captions state.

The returned dict holds 0-d tensors: ``loss`` (what to backpropagate) and detached
numbers for logging (``sdm`` or ``itc``: the alignment loss, named by ``method.alignment``;
``mtp``, ``id``, ``phrase``, ``attribute``, ``noise_masked``, ``mtp_masked``, ``score_mean``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gadms_cli.gadms import masking
from gadms_cli.gadms.ga_score import ga_token_scores, similarity_token_scores
from gadms_cli.gadms.ga_score_public import public_ga_token_scores
from gadms_cli.data.attribute_phrases import head_targets
from gadms_cli.gadms.losses import attribute_loss, distributed, id_loss, itc_loss, mtp_loss, phrase_alignment_loss, sdm_loss
from gadms_cli.gadms.score_table import ScoreTable
from gadms_cli.model.text_taps import trim_to_longest
from gadms_cli.gadms.method_config import MethodRecipe

IGNORE_INDEX = masking.IGNORE_INDEX


class RetrievalObjective(nn.Module):
    """Wraps a ``PersonCLIP`` and computes the recipe's loss for a batch.

    Args:
        model: a ``PersonCLIP`` (with an MTP decoder for ``gadms`` with MTP and for ``irra``,
            with a classifier when ``method.id_loss``).
        method: the recipe's ``method`` section.
        num_captions: size of the caption index space (for the ``cached`` score table).
    """

    def __init__(self, model: nn.Module, method: MethodRecipe, num_captions: int = 0) -> None:
        super().__init__()
        self.model = model
        self.method = method
        self.table: ScoreTable | None = None
        if method.name == "gadms" and method.score_timing == "cached" and method.token_score != "oracle":
            self.table = ScoreTable(num_captions, model.config.context_length, method.initial_score)
        if self._uses_mtp and model.mtp is None:
            raise ValueError("the method needs an MTP decoder but the model has none")
        if method.id_loss and model.classifier is None:
            raise ValueError("method.id_loss needs a model with an identity classifier")
        if method.attribute_weight > 0 and model.attribute_head is None:
            raise ValueError("method.attribute_weight needs a model with an attribute head")

    @property
    def _uses_mtp(self) -> bool:
        return self.method.name == "irra" or (self.method.name == "gadms" and self.method.mtp)

    # --- pieces ---------------------------------------------------------------------

    def _alignment(self, image_emb: Tensor, text_emb: Tensor, pids: Tensor) -> Tensor:
        gather = distributed()
        if self.method.alignment == "itc":
            return itc_loss(image_emb, text_emb, self.method.logit_scale, gather=gather)
        return sdm_loss(image_emb, text_emb, pids, self.method.logit_scale, gather=gather)

    def token_scores(self, image_emb: Tensor, tokens: Tensor, noise_tokens: Tensor | None = None) -> Tensor:
        """Detached scores [B, T] in [0, 1] of the clean captions, by ``method.token_score``.

        ``oracle`` needs ``noise_tokens`` (bool [B, >=T], the batch's written-wrong tokens): score 0
        there and 1 on every other content token.
        """
        kind = self.method.token_score
        if kind == "oracle":
            if noise_tokens is None:
                raise ValueError("method.token_score 'oracle' needs batch['noise_tokens'] (SketchPedes training data)")
            return (~noise_tokens[:, : tokens.shape[1]]).float() * masking.maskable_positions(tokens)
        if kind == "ga" and self.method.score_variant == "public":
            return public_ga_token_scores(self.model, image_emb.detach(), tokens, self.method.score_layers)
        if kind == "ga":
            return ga_token_scores(
                self.model, image_emb.detach(), tokens, self.method.score_layers, self.method.score_normalize,
                relu=self.method.score_relu,
            )
        if kind == "similarity":
            return similarity_token_scores(self.model, image_emb.detach(), tokens, self.method.score_normalize)
        scores = torch.rand(tokens.shape, device=tokens.device)
        return scores * masking.maskable_positions(tokens)

    def _mtp(self, text_token_feats: Tensor, image_tokens: Tensor, labels: Tensor) -> Tensor:
        """MTP/MLM loss; the vocabulary head runs on the masked positions only."""
        fused = self.model.mtp.fuse(text_token_feats, image_tokens)  # [B, T, E]
        keep = labels != IGNORE_INDEX
        logits = self.model.mtp.mlm_head(fused[keep])  # [M, vocab]
        return mtp_loss(logits, labels[keep])

    # --- forward --------------------------------------------------------------------

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``batch``: image [B,3,H,W], tokens [B,T] (clean), pid [B], caption [B] (caption index)."""
        images, pids = batch["image"], batch["pid"]
        tokens = trim_to_longest(batch["tokens"])
        name = self.method.name
        out: dict[str, Tensor] = {}

        needs_image_tokens = self._uses_mtp
        if needs_image_tokens:
            image_emb, image_tokens = self.model.encode_image_with_tokens(images)
        else:
            image_emb, image_tokens = self.model.encode_image(images), None

        if name == "clip":
            text_emb = self.model.encode_text(tokens)
            loss = self._alignment(image_emb, text_emb, pids)
            out[self.method.alignment] = loss.detach()

        elif name == "irra":
            forced = self.method.forced_token
            masked = masking.random_mask(
                tokens, p=self.method.mlm_probability, at_least_one=forced != "none", force_first=forced == "first"
            )
            both = torch.cat([tokens, masked.tokens])
            text_emb_both, text_tok_both = self.model.encode_text_with_tokens(both)
            text_emb = text_emb_both[: len(tokens)]
            align = self._alignment(image_emb, text_emb, pids)
            mlm = self._mtp(text_tok_both[len(tokens) :], image_tokens, masked.labels)
            loss = align + self.method.mtp_weight * mlm
            out.update({self.method.alignment: align.detach()}, mtp=mlm.detach(), mtp_masked=masked.selected.float().sum(1).mean())

        else:  # gadms
            fresh = None
            if self.method.token_score == "oracle":
                # The truth does not go stale: no table, whatever method.score_timing says.
                scores = self.token_scores(image_emb, tokens, batch.get("noise_tokens"))
            elif self.table is not None:
                stored = self.table.lookup(batch["caption"])[:, : tokens.shape[1]]
                scores = stored * masking.maskable_positions(tokens)
                if self.training:
                    fresh = self.token_scores(image_emb, tokens)
            else:
                scores = self.token_scores(image_emb, tokens)
            m = self.method
            first = m.forced_token == "first"
            if m.noise_masking:
                noisy = masking.noise_mask(
                    tokens, scores, m.noise_alpha, m.noise_lambda, m.noise_gamma, at_least_one=first, force_first=first
                )
                align_tokens = noisy.tokens
                out["noise_masked"] = noisy.selected.float().sum(1).mean()
            else:
                align_tokens = tokens
            if m.mtp:
                informative = masking.informative_mask(
                    tokens, scores, m.informative_alpha, m.informative_lambda, m.informative_gamma,
                    at_least_one=m.forced_token != "none", force_first=first,
                )
                both = torch.cat([align_tokens, informative.tokens])
                text_emb_both, text_tok_both = self.model.encode_text_with_tokens(both)
                text_emb = text_emb_both[: len(tokens)]
                mtp = self._mtp(text_tok_both[len(tokens) :], image_tokens, informative.labels)
                out.update(mtp=mtp.detach(), mtp_masked=informative.selected.float().sum(1).mean())
            else:
                text_emb, mtp = self.model.encode_text(align_tokens), None
            align = self._alignment(image_emb, text_emb, pids)
            loss = align if mtp is None else align + m.mtp_weight * mtp
            out[m.alignment] = align.detach()
            out["score_mean"] = (scores.sum() / masking.maskable_positions(tokens).sum().clamp(min=1)).detach()
            if fresh is not None:
                padded = torch.zeros(fresh.shape[0], self.table.scores.shape[1], device=fresh.device)
                padded[:, : fresh.shape[1]] = fresh
                self.table.update(batch["caption"], padded)

        if self.method.phrase_weight > 0:
            query_emb = self.model.encode_text(trim_to_longest(batch["query_tokens"]))
            scale = self.method.phrase_logit_scale or self.method.logit_scale
            phrase = phrase_alignment_loss(image_emb, query_emb, batch["query_keys"], batch["caption_keys"], scale, gather=distributed())
            loss = loss + self.method.phrase_weight * phrase
            out["phrase"] = phrase.detach()
        if self.method.attribute_weight > 0:
            keys = batch["identity_keys"] if self.method.attribute_targets == "identity" else batch["caption_keys"]
            targets, known = head_targets(keys)
            attribute = attribute_loss(self.model.attribute_logits(image_emb), targets, known, balance=self.method.attribute_balance)
            loss = loss + self.method.attribute_weight * attribute
            out["attribute"] = attribute.detach()
        if self.method.id_loss:
            ident = id_loss(self.model.identity_logits(image_emb), self.model.identity_logits(text_emb), pids)
            loss = loss + ident
            out["id"] = ident.detach()
        out["loss"] = loss
        return out

    # --- checkpointing of the score table ----------------------------------------------

    def table_state(self) -> dict[str, Tensor]:
        return self.table.state_dict() if self.table is not None else {}

    def load_table(self, state: dict[str, Tensor]) -> None:
        if self.table is not None and state:
            self.table.load_state_dict(state)
