"""The cross-modal decoder for masked token prediction (MTP), in IRRA's exact layout.

Data flow (E = the CLIP embedding dim, 512 for ViT-B/16)::

    text token features [B, T, E]  --ln_pre_t-->  queries  \
                                                             cross_attn (H heads) -> [B, T, E]
    image token features [B, N, E] --ln_pre_i-->  keys/values /
    -> cross_modal_transformer (L residual blocks, width E, H heads, QuickGELU MLP)
    -> ln_post -> mlm_head: dense Linear(E, E) -> QuickGELU -> ln LayerNorm -> fc Linear(E, vocab)
    -> logits [B, T, vocab]

The inputs are the PROJECTED token features of both towers (``ln_final`` +
``text_projection`` for every text token; ``ln_post`` + ``proj`` for every
image token, class token included), exactly as IRRA feeds its decoder. So the
decoder width is the embedding dim E whatever the tower widths are (ViT-B/16:
visual width 768, text width 512, E 512; our tiny configs: all equal).
IRRA uses E // 64 heads (8 for E = 512); ``heads`` is configurable because
tiny models have E < 64.

Parameter names equal IRRA's state-dict keys (``cross_attn.*``,
``cross_modal_transformer.resblocks.N.*``, ``ln_pre_t.*``, ``ln_pre_i.*``,
``ln_post.*``, ``mlm_head.dense/ln/fc.*``), so importing their checkpoints is
prefix handling. Initialisation follows IRRA (normal, std from the width).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from open_clip.transformer import LayerNorm, QuickGELU, Transformer
from torch import nn

from gadms_cli.model.tokenizer import VOCAB_SIZE


class MTPDecoder(nn.Module):
    """Cross-attention + transformer + MLM head: (text tokens, image tokens) -> vocabulary logits."""

    def __init__(self, width: int, vocab_size: int = VOCAB_SIZE, layers: int = 4, heads: int = 8) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"decoder width {width} is not divisible by {heads} heads")
        self.width = width
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.cross_modal_transformer = Transformer(width=width, layers=layers, heads=heads, act_layer=QuickGELU)
        self.ln_pre_t = LayerNorm(width)
        self.ln_pre_i = LayerNorm(width)
        self.ln_post = LayerNorm(width)
        self.mlm_head = nn.Sequential(
            OrderedDict(
                [
                    ("dense", nn.Linear(width, width)),
                    ("gelu", QuickGELU()),
                    ("ln", LayerNorm(width)),
                    ("fc", nn.Linear(width, vocab_size)),
                ]
            )
        )
        self._init_like_irra(layers)

    def _init_like_irra(self, layers: int) -> None:
        attn_std = self.width**-0.5
        proj_std = attn_std * (2 * layers) ** -0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.cross_modal_transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.cross_attn.in_proj_weight, std=attn_std)
        nn.init.normal_(self.cross_attn.out_proj.weight, std=proj_std)
        nn.init.normal_(self.mlm_head.dense.weight, std=fc_std)
        nn.init.normal_(self.mlm_head.fc.weight, std=proj_std)

    def fuse(self, text_tokens: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """Decoder features before the head: [B, T, E] text x [B, N, E] image -> [B, T, E]."""
        image = self.ln_pre_i(image_tokens)
        x = self.cross_attn(self.ln_pre_t(text_tokens), image, image, need_weights=False)[0]
        x = self.cross_modal_transformer(x)
        return self.ln_post(x)

    def forward(self, text_tokens: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits [B, T, vocab] for every text position (the loss keeps the masked ones)."""
        return self.mlm_head(self.fuse(text_tokens, image_tokens))


def identity_classifier(embed_dim: int, num_ids: int) -> nn.Linear:
    """IRRA's identity head: Linear(E, num_ids), weights ~ N(0, 0.001^2), zero bias."""
    classifier = nn.Linear(embed_dim, num_ids)
    nn.init.normal_(classifier.weight, std=0.001)
    nn.init.zeros_(classifier.bias)
    return classifier
