"""PersonCLIP: the open_clip CLIP plus the optional MTP decoder and identity classifier.

One module holds everything a run trains and a checkpoint stores:

- ``.clip``: an ``open_clip.model.CLIP`` (any open_clip architecture with the
  built-in text transformer; ViT-B-16 in the paper);
- ``.mtp``: the cross-modal :class:`MTPDecoder` (None when MTP is off);
- ``.classifier``: the identity head Linear(E, num_ids) (None when num_ids = 0);
- ``.attribute_head``: Linear(E, num_attributes), attribute logits of an image embedding
  (``method.attribute_weight``; None when num_attributes = 0);
- ``.config``: the :class:`PersonCLIPConfig` that rebuilds the module;
- ``.logit_scale``: the fixed temperature 50 (a float, never learned; open_clip's
  own ``clip.logit_scale`` parameter is kept for weight compatibility but frozen
  and unused).

All embeddings returned are NOT normalised; callers normalise where the method
says so. Under DistributedDataParallel call the module itself,
``model("encode_text", tokens)``, so DDP sees a forward call (see :meth:`forward`).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from open_clip.model import CLIP
from open_clip.transformer import VisionTransformer
from torch import nn

from gadms_cli.errors import GadmsError
from gadms_cli.model.conv_stem import ConvStem, check_conv_stem
from gadms_cli.model.mtp_decoder import MTPDecoder, identity_classifier
from gadms_cli.model.text_taps import TextTowerOutput, check_text_tower, run_text_tower
from gadms_cli.model.model_config import DECODER_LAYERS
from gadms_cli.model.tokenizer import EOT_ID, MASK_ID, SOT_ID, VOCAB_SIZE

LOGIT_SCALE = 50.0  # 1 / 0.02, fixed (docs/method.md)


@dataclass
class PersonCLIPConfig:
    """Everything needed to rebuild a :class:`PersonCLIP` (saved as config.json in checkpoints).

    ``clip_config`` is the full open_clip model config (``embed_dim``,
    ``vision_cfg``, ``text_cfg``, ``quick_gelu`` ...) with the image size and
    context length already applied; ``arch`` is only the name it came from.
    """

    clip_config: dict[str, Any]
    arch: str = "custom"
    mtp: bool = False
    decoder_layers: int = DECODER_LAYERS
    decoder_heads: int = 8
    num_ids: int = 0
    num_attributes: int = 0
    logit_scale: float = LOGIT_SCALE
    vocab_size: int = VOCAB_SIZE
    mask_id: int = MASK_ID
    sot_id: int = SOT_ID
    eot_id: int = EOT_ID
    extra: dict[str, Any] = field(default_factory=dict)  # free-form: recipe, provenance ...

    @property
    def embed_dim(self) -> int:
        return int(self.clip_config["embed_dim"])

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        size = self.clip_config["vision_cfg"].get("image_size", 224)
        return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))

    @property
    def context_length(self) -> int:
        return int(self.clip_config["text_cfg"].get("context_length", 77))

    @property
    def text_heads(self) -> int:
        return int(self.clip_config["text_cfg"].get("heads", 8))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PersonCLIPConfig":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: copy.deepcopy(v) for k, v in data.items() if k in known})


def default_decoder_heads(embed_dim: int, text_heads: int) -> int:
    """Decoder heads when not given: the text tower's head count (8 for ViT-B-16, = IRRA's E // 64)
    if it divides E, else E // 64, else 1."""
    if text_heads > 0 and embed_dim % text_heads == 0:
        return text_heads
    if embed_dim >= 64 and embed_dim % 64 == 0:
        return embed_dim // 64
    return 1


class PersonCLIP(nn.Module):
    """CLIP dual encoder with the GA-DMS extras (see the module docstring)."""

    def __init__(self, config: PersonCLIPConfig) -> None:
        super().__init__()
        self.config = config
        clip_kwargs = copy.deepcopy(config.clip_config)
        for key in ("custom_text", "multimodal_cfg"):
            if clip_kwargs.get(key):
                raise GadmsError(f"open_clip config with '{key}' is not supported: gadms needs the plain CLIP class")
            clip_kwargs.pop(key, None)
        text_cfg = clip_kwargs.get("text_cfg", {})
        if text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name"):
            raise GadmsError("open_clip architectures with a Hugging Face text tower are not supported: use a CLIP-BPE one")
        if int(text_cfg.get("vocab_size", VOCAB_SIZE)) != config.vocab_size:
            raise GadmsError(
                f"text vocab_size {text_cfg.get('vocab_size')} differs from the CLIP BPE tokenizer's {config.vocab_size}"
            )
        vision_cfg = dict(clip_kwargs.get("vision_cfg", {}))
        conv_stem = vision_cfg.pop("conv_stem", None)  # ours, not open_clip's (model/conv_stem.py)
        clip_kwargs["vision_cfg"] = vision_cfg
        self.clip = CLIP(**clip_kwargs)
        if conv_stem is not None:
            try:
                channels = check_conv_stem(conv_stem, int(vision_cfg.get("patch_size", 16)))
            except ValueError as error:
                raise GadmsError(f"architecture {config.arch}: {error}") from None
            self.clip.visual.conv1 = ConvStem(channels, self.clip.visual.conv1.out_channels)
        self.clip.logit_scale.requires_grad_(False)
        check_text_tower(self.clip)
        self.logit_scale = float(config.logit_scale)
        self.mtp = (
            MTPDecoder(config.embed_dim, config.vocab_size, config.decoder_layers, config.decoder_heads)
            if config.mtp
            else None
        )
        self.classifier = identity_classifier(config.embed_dim, config.num_ids) if config.num_ids > 0 else None
        self.attribute_head = nn.Linear(config.embed_dim, config.num_attributes) if config.num_attributes > 0 else None
        self.load_report = None  # set by the factory: where the weights came from (a weights.LoadReport)

    def add_classifier(self, num_ids: int) -> None:
        """Attach a new identity classifier for ``num_ids`` identities (kept if it already has that size)."""
        if self.classifier is not None and self.classifier.out_features == num_ids:
            return
        device = next(self.parameters()).device
        self.classifier = identity_classifier(self.config.embed_dim, num_ids).to(device)
        self.config = dataclasses.replace(self.config, num_ids=int(num_ids))

    def add_attribute_head(self, num_attributes: int) -> None:
        """Attach a new attribute head with ``num_attributes`` outputs (kept if it already has that size)."""
        if self.attribute_head is not None and self.attribute_head.out_features == num_attributes:
            return
        device = next(self.parameters()).device
        self.attribute_head = nn.Linear(self.config.embed_dim, num_attributes).to(device)
        self.config = dataclasses.replace(self.config, num_attributes=int(num_attributes))

    # --- images ---------------------------------------------------------------------

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] (normalised) -> image embeddings [B, E], NOT normalised."""
        return self.clip.encode_image(images)

    def encode_image_with_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass of the image tower -> (embedding [B, E], token features [B, 1 + N, E]).

        Token features are every output token (class token first, then the N
        patches in row-major order) through ``ln_post`` and ``proj``, as IRRA
        feeds its decoder; the embedding is the class token's row.
        """
        visual = self.clip.visual
        if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None or visual.final_ln_after_pool:
            raise GadmsError("image token features need a plain open_clip ViT image tower (class-token pooling)")
        if visual.pool_type != "tok":
            raise GadmsError(f"image tower pools with '{visual.pool_type}': gadms needs class-token pooling")
        x = visual.conv1(images)  # [B, width, gh, gw]
        x = x.flatten(2).transpose(1, 2)  # [B, N, width]
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        x = visual.patch_dropout(x)
        x = visual.ln_pre(x)
        x = visual.transformer(x)
        x = visual.ln_post(x)
        tokens = x @ visual.proj if visual.proj is not None else x
        return tokens[:, 0], tokens

    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] -> projected token features [B, 1 + N, E] for the decoder."""
        return self.encode_image_with_tokens(images)[1]

    # --- text -----------------------------------------------------------------------

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids [B, T] (T <= context) -> text embeddings [B, E] at EOS, NOT normalised."""
        return run_text_tower(self.clip, tokens).embedding

    def encode_text_with_tokens(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass of the text tower -> (embedding [B, E], token features [B, T, E])."""
        out = run_text_tower(self.clip, tokens, token_features=True)
        return out.embedding, out.token_features

    def text_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids [B, T] -> projected token features [B, T, E] (ln_final + text_projection)."""
        return self.encode_text_with_tokens(tokens)[1]

    def text_with_taps(self, tokens: torch.Tensor, tap_layers: int, grad_before_taps: bool = True) -> TextTowerOutput:
        """The text tower with attention taps on its last ``tap_layers`` layers (see text_taps.py)."""
        return run_text_tower(self.clip, tokens, tap_layers=tap_layers, grad_before_taps=grad_before_taps)

    # --- heads ----------------------------------------------------------------------

    def mtp_logits(self, text_token_features: torch.Tensor, image_token_features: torch.Tensor) -> torch.Tensor:
        """Masked-caption token features [B, T, E] + image token features [B, N, E] -> logits [B, T, vocab]."""
        if self.mtp is None:
            raise GadmsError("this model has no MTP decoder: build it with mtp enabled")
        return self.mtp(text_token_features, image_token_features)

    def identity_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Image or text embeddings [B, E] -> identity logits [B, num_ids]."""
        if self.classifier is None:
            raise GadmsError("this model has no identity classifier: build it with num_ids > 0")
        return self.classifier(embeddings)

    def attribute_logits(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        """Image embeddings [B, E] -> attribute logits [B, num_attributes]."""
        if self.attribute_head is None:
            raise GadmsError("this model has no attribute head: build it with num_attributes > 0")
        return self.attribute_head(image_embeddings)

    def forward(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call one of the methods above by name, e.g. ``model("encode_image", images)``.

        Training code wrapped in DistributedDataParallel must go through
        ``__call__`` (this forward) rather than ``model.module.encode_image``.
        """
        allowed = {
            "encode_image",
            "encode_image_with_tokens",
            "image_tokens",
            "encode_text",
            "encode_text_with_tokens",
            "text_tokens",
            "text_with_taps",
            "mtp_logits",
            "identity_logits",
        }
        if method not in allowed:
            raise ValueError(f"unknown PersonCLIP method {method!r}; one of {sorted(allowed)}")
        return getattr(self, method)(*args, **kwargs)

    # --- bookkeeping ----------------------------------------------------------------

    def new_module_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes of the parts not in CLIP (IRRA trains them at 5x the learning rate)."""
        parts = (("mtp.", self.mtp), ("classifier.", self.classifier), ("attribute_head.", self.attribute_head))
        return tuple(p for p, m in parts if m is not None)
