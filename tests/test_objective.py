"""RetrievalObjective: the alignment loss it logs is the one the recipe names, with the right value."""

import pytest
import torch
import torch.nn.functional as F

from gadms_cli.gadms.objective import RetrievalObjective
from gadms_cli.model.factory import create_person_clip
from gadms_cli.model.tokenizer import Tokenizer
from gadms_cli.recipe import MethodRecipe

CAPTIONS = ["a woman in a red coat", "a man with a black backpack", "a girl in blue jeans", "an old man in grey"]


@pytest.fixture(scope="module")
def model_and_batch():
    torch.manual_seed(0)
    model = create_person_clip(arch="gadms-tiny", with_mtp=True).eval()
    height, width = model.config.image_size
    batch = {
        "image": torch.randn(4, 3, height, width),
        "tokens": Tokenizer(model.config.context_length)(CAPTIONS),
        "pid": torch.arange(4),
        "caption": torch.arange(4),
    }
    return model, batch


@pytest.mark.parametrize("name", ["clip", "gadms"])
def test_itc_alignment_is_logged_as_itc_with_the_infonce_value(model_and_batch, name):
    model, batch = model_and_batch
    # gadms without noise masking and MTP aligns the clean captions, like clip
    method = MethodRecipe(name=name, alignment="itc", logit_scale=10.0, noise_masking=False, mtp=False)
    out = RetrievalObjective(model, method, num_captions=4).eval()(batch)
    assert "itc" in out and "sdm" not in out
    with torch.no_grad():
        image = F.normalize(model.encode_image(batch["image"]), dim=-1)
        text = F.normalize(model.encode_text(batch["tokens"]), dim=-1)
    logits = 10.0 * image @ text.T
    target = torch.arange(4)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    torch.testing.assert_close(out["itc"], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["loss"].detach(), expected, rtol=1e-4, atol=1e-5)


def test_sdm_alignment_is_logged_as_sdm(model_and_batch):
    model, batch = model_and_batch
    out = RetrievalObjective(model, MethodRecipe(name="gadms", alignment="sdm"), num_captions=4).eval()(batch)
    assert "sdm" in out and "itc" not in out and "mtp" in out
