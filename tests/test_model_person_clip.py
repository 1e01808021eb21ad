"""PersonCLIP and the MTP decoder: IRRA's parameter names, token features, heads, the fixed scale."""

import pytest
import torch
import torch.nn.functional as F

from gadms_cli.errors import GadmsError
from gadms_cli.model.factory import create_person_clip, resolve_arch
from gadms_cli.model.mtp_decoder import MTPDecoder, identity_classifier
from gadms_cli.model.person_clip import PersonCLIP, PersonCLIPConfig
from gadms_cli.model.tokenizer import Tokenizer

TOKENS = Tokenizer(12)(["a man in a red coat", "a woman with a bag"])


@pytest.fixture(scope="module")
def model() -> PersonCLIP:
    torch.manual_seed(0)
    return create_person_clip(arch="gadms-tiny", with_mtp=True, num_classes=4, decoder_layers=2).eval()


def irra_decoder_keys(layers: int) -> set[str]:
    """IRRA's decoder state-dict keys, written out from its model definition."""
    keys = {f"cross_attn.{n}" for n in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")}
    for i in range(layers):
        block = f"cross_modal_transformer.resblocks.{i}."
        attention = ("attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias")
        keys |= {block + n for n in attention}
        keys |= {block + f"{m}.{p}" for m in ("ln_1", "ln_2", "mlp.c_fc", "mlp.c_proj") for p in ("weight", "bias")}
    for module in ("ln_pre_t", "ln_pre_i", "ln_post", "mlm_head.dense", "mlm_head.ln", "mlm_head.fc"):
        keys |= {f"{module}.weight", f"{module}.bias"}
    return keys


def test_decoder_uses_irra_names_and_shapes():
    decoder = MTPDecoder(width=512, layers=4, heads=8)
    state = decoder.state_dict()
    assert set(state) == irra_decoder_keys(4)
    assert state["mlm_head.fc.weight"].shape == (49408, 512)
    assert state["cross_attn.in_proj_weight"].shape == (3 * 512, 512)
    assert decoder.cross_attn.num_heads == 8
    assert decoder.cross_modal_transformer.resblocks[0].mlp.gelu.__class__.__name__ == "QuickGELU"


def test_person_clip_state_dict_layout(model):
    keys = set(model.state_dict())
    assert {k[len("mtp."):] for k in keys if k.startswith("mtp.")} == irra_decoder_keys(2)
    assert {"classifier.weight", "classifier.bias", "clip.visual.proj", "clip.text_projection"} <= keys
    assert model.new_module_prefixes() == ("mtp.", "classifier.")


def test_mlm_head_is_dense_quickgelu_layernorm_fc(model):
    fused = torch.randn(2, 5, 64)
    head = model.mtp.mlm_head
    hidden = fused @ head.dense.weight.T + head.dense.bias
    hidden = hidden * torch.sigmoid(1.702 * hidden)  # QuickGELU
    hidden = F.layer_norm(hidden, (64,), head.ln.weight, head.ln.bias, eps=1e-5)
    expected = hidden @ head.fc.weight.T + head.fc.bias
    assert torch.allclose(head(fused), expected, atol=1e-5)


def test_token_features_and_embeddings(model):
    images = torch.randn(2, 3, 96, 32)
    with torch.no_grad():
        embedding, image_tokens = model.encode_image_with_tokens(images)
        assert image_tokens.shape == (2, 1 + 6 * 2, 64)
        assert torch.allclose(embedding, model.clip.encode_image(images), atol=1e-5)
        assert torch.equal(image_tokens[:, 0], embedding)
        text_embedding, text_tokens = model.encode_text_with_tokens(TOKENS)
        assert text_tokens.shape == (2, 12, 64)
        eos = TOKENS.argmax(-1)
        assert torch.allclose(text_tokens[torch.arange(2), eos], text_embedding, atol=1e-6)
        full_context = Tokenizer(77)(["a man in a red coat", "a woman with a bag"])
        assert torch.allclose(text_embedding, model.clip.encode_text(full_context), atol=1e-5)
        logits = model.mtp_logits(text_tokens, image_tokens)
        assert logits.shape == (2, 12, 49408)
        other = model.mtp_logits(text_tokens, torch.randn_like(image_tokens))
        assert not torch.allclose(logits, other)  # the image tokens matter
        assert torch.equal(model("encode_text", TOKENS), model.encode_text(TOKENS))
    with pytest.raises(ValueError, match="unknown PersonCLIP method"):
        model("state_dict")


def test_classifier_init_and_fixed_logit_scale(model):
    torch.manual_seed(0)
    classifier = identity_classifier(64, 3000)
    assert abs(classifier.weight.std().item() - 0.001) < 0.0001 and torch.all(classifier.bias == 0)
    assert model.identity_logits(torch.randn(3, 64)).shape == (3, 4)
    assert model.logit_scale == 50.0 and not model.clip.logit_scale.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "clip.logit_scale")


def test_missing_heads_and_unsupported_configs_are_clear():
    plain = create_person_clip(arch="gadms-tiny")
    with pytest.raises(GadmsError, match="no MTP decoder"):
        plain.mtp_logits(torch.zeros(1, 2, 64), torch.zeros(1, 3, 64))
    with pytest.raises(GadmsError, match="no identity classifier"):
        plain.identity_logits(torch.zeros(1, 64))
    _, config = resolve_arch("gadms-tiny")
    config["text_cfg"]["vocab_size"] = 32000
    with pytest.raises(GadmsError, match="vocab_size"):
        PersonCLIP(PersonCLIPConfig(clip_config=config))
