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


def test_gadms_objective_against_a_hand_computation(model_and_batch, monkeypatch):
    """GA-DMS with both masking rates at 0 and the public code's forcing: each caption then loses
    exactly its first word to [MASK] in both maskings, so every input is known in advance. The SDM
    input must be the noise-masked caption and the loss SDM + beta * MTP, written out here."""
    from gadms_cli.model.tokenizer import MASK_ID

    model, batch = model_and_batch
    method = MethodRecipe(name="gadms", alignment="sdm", logit_scale=50.0, token_score="random", forced_token="first",
                          noise_alpha=0.0, informative_alpha=0.0, mtp_weight=0.4)
    fed = []
    original = type(model).encode_text_with_tokens
    monkeypatch.setattr(type(model), "encode_text_with_tokens", lambda self, t: fed.append(t.clone()) or original(self, t))
    out = RetrievalObjective(model, method, num_captions=4).eval()(batch)

    tokens = batch["tokens"][:, : int(batch["tokens"].argmax(-1).max()) + 1]
    masked = tokens.clone()
    masked[:, 1] = MASK_ID
    assert len(fed) == 1 and torch.equal(fed[0], torch.cat([masked, masked]))  # noise-masked | informative-masked
    with torch.no_grad():
        image_emb, image_tokens = model.encode_image_with_tokens(batch["image"])
        text_emb, text_tokens = model.encode_text_with_tokens(masked)
        image, text = F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1)
        q = torch.eye(4)  # four identities
        sdm = 0.0
        for logits in (50.0 * text @ image.T, 50.0 * image @ text.T):
            p = torch.softmax(logits, dim=1)
            sdm = sdm + (p * (torch.log(p) - torch.log(q + 1e-8))).sum(1).mean()
        fused = model.mtp.fuse(text_tokens, image_tokens)  # [4, T, E]
        logits = model.mtp.mlm_head(fused[:, 1])  # the masked position of each caption
        mtp = F.cross_entropy(logits, tokens[:, 1])
    assert out["sdm"].item() == pytest.approx(sdm.item(), rel=1e-5)
    assert out["mtp"].item() == pytest.approx(mtp.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(sdm.item() + 0.4 * mtp.item(), rel=1e-5)
    assert out["noise_masked"].item() == 1.0 and out["mtp_masked"].item() == 1.0


def test_irra_objective_against_a_hand_computation(model_and_batch):
    """IRRA fine-tuning with a 0 masking rate and IRRA's forcing: SDM on the CLEAN caption + ID +
    beta * MLM on the first word, written out here."""
    from gadms_cli.model.tokenizer import MASK_ID

    _, batch = model_and_batch
    torch.manual_seed(1)
    model = create_person_clip(arch="gadms-tiny", with_mtp=True, num_classes=4).eval()
    method = MethodRecipe(name="irra", alignment="sdm", logit_scale=50.0, mlm_probability=0.0, forced_token="first",
                          mtp_weight=1.0, id_loss=True)
    out = RetrievalObjective(model, method, num_captions=4).eval()(batch)
    tokens = batch["tokens"][:, : int(batch["tokens"].argmax(-1).max()) + 1]
    masked = tokens.clone()
    masked[:, 1] = MASK_ID
    pids = batch["pid"]
    with torch.no_grad():
        image_emb, image_tokens = model.encode_image_with_tokens(batch["image"])
        text_emb = model.encode_text(tokens)
        _, masked_tokens = model.encode_text_with_tokens(masked)
        image, text = F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1)
        sdm = 0.0
        for logits in (50.0 * text @ image.T, 50.0 * image @ text.T):
            p = torch.softmax(logits, dim=1)
            sdm = sdm + (p * (torch.log(p) - torch.log(torch.eye(4) + 1e-8))).sum(1).mean()
        ident = (F.cross_entropy(model.classifier(image_emb), pids) + F.cross_entropy(model.classifier(text_emb), pids)) / 2
        mlm = F.cross_entropy(model.mtp.mlm_head(model.mtp.fuse(masked_tokens, image_tokens)[:, 1]), tokens[:, 1])
    assert out["sdm"].item() == pytest.approx(sdm.item(), rel=1e-5)
    assert out["id"].item() == pytest.approx(ident.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(sdm.item() + ident.item() + mlm.item(), rel=1e-5)


def test_score_table_lookup_and_update_by_hand():
    from gadms_cli.gadms.score_table import ScoreTable

    table = ScoreTable(num_captions=3, context_length=4, initial=0.85)
    assert torch.allclose(table.lookup(torch.tensor([1])), torch.full((1, 4), 217 / 255))  # round(0.85 * 255) = 217
    table.update(torch.tensor([2, 0]), torch.tensor([[0.0, 0.5, 1.2, -0.1], [0.1, 0.2, 0.3, 0.4]]))
    got = table.lookup(torch.tensor([0, 1, 2]))
    want = torch.tensor([
        [26, 51, 76, 102],  # round(255 * 0.1, 0.2, 0.3, 0.4)
        [217, 217, 217, 217],  # untouched
        [0, 128, 255, 0],  # 0, round(127.5) = 128, clamped to 1 and to 0
    ]) / 255
    assert torch.allclose(got, want)
    with pytest.raises(ValueError, match="score table shape"):
        table.load_state_dict({"scores": torch.zeros(2, 4, dtype=torch.uint8)})


def test_cached_timing_masks_with_the_stored_scores_and_stores_the_fresh_ones(model_and_batch):
    """First draw: the masks see the table's 0.85 (no fresh score yet); afterwards the table holds the
    step's fresh GA scores of the clean captions, quantised."""
    from gadms_cli.gadms.ga_score import ga_token_scores
    from gadms_cli.gadms.masking import maskable_positions

    model, batch = model_and_batch
    method = MethodRecipe(name="gadms", alignment="itc", logit_scale=10.0, score_timing="cached", score_layers=2)
    objective = RetrievalObjective(model, method, num_captions=6)
    objective.train()  # the table is refreshed in training mode only
    out = objective(batch)
    objective.eval()
    assert out["score_mean"].item() == pytest.approx(217 / 255, abs=1e-6)
    tokens = batch["tokens"][:, : int(batch["tokens"].argmax(-1).max()) + 1]
    with torch.no_grad():
        fresh = ga_token_scores(model, model.encode_image(batch["image"]), tokens, 2, "batch")
    stored = objective.table.lookup(batch["caption"])[:, : tokens.shape[1]]
    assert torch.allclose(stored * maskable_positions(tokens), torch.round(fresh * 255) / 255, atol=1e-6)
    assert torch.allclose(objective.table.lookup(torch.tensor([4, 5])), torch.full((2, model.config.context_length), 217 / 255))  # never drawn


def test_phrase_alignment_adds_its_weighted_loss_with_queries_true_of_several_images(model_and_batch):
    model, batch = model_and_batch
    queries = ["a woman", "a man", "a woman", "a man"]  # query b written from caption b
    # keys: [female, male]; captions 0 and 2 state female, 1 and 3 male
    keys = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=torch.bool)
    with_queries = dict(batch, query_tokens=Tokenizer(model.config.context_length)(queries), query_keys=keys, caption_keys=keys)
    method = MethodRecipe(name="clip", alignment="itc", logit_scale=10.0, phrase_weight=0.5)
    out = RetrievalObjective(model, method, num_captions=4).eval()(with_queries)
    with torch.no_grad():
        image = F.normalize(model.encode_image(batch["image"]), dim=-1)
        query = F.normalize(model.encode_text(with_queries["query_tokens"]), dim=-1)
    logits = 10.0 * query @ image.T
    # each query is true of two images (itself and the other person of that gender), each half the target
    target = torch.tensor([[0.5, 0, 0.5, 0], [0, 0.5, 0, 0.5], [0.5, 0, 0.5, 0], [0, 0.5, 0, 0.5]])
    expected = (-(target * F.log_softmax(logits, 1)).sum(1).mean() - (target * F.log_softmax(logits.T, 1)).sum(1).mean()) / 2
    torch.testing.assert_close(out["phrase"], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["loss"].detach(), out["itc"] + 0.5 * expected, rtol=1e-4, atol=1e-5)
