"""Search against brute force, GA-score explanations, and the HTML/JSON reports."""

import html.parser
import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gadms_cli.errors import GadmsError
from gadms_cli.gadms.ga_score import ga_token_scores
from gadms_cli.model.factory import create_person_clip
from gadms_cli.model.tokenizer import EOT_ID, MASK_ID, SOT_ID, Tokenizer
from gadms_cli.retrieve import search as search_module
from gadms_cli.retrieve.explain import Explanation, TokenScore, explain_match
from gadms_cli.retrieve.report import render_html, results_payload, write_json
from gadms_cli.retrieve.retriever import Hit, QueryResult, Retriever
from gadms_cli.retrieve.search import ExactSearch, make_searcher


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def brute_force(gallery, query, k):
    """Independent reference: float64 dot products in Python order, Python's stable sort (ties -> lower row)."""
    scores = [sum(float(a) * float(b) for a, b in zip(row, query)) for row in gallery.tolist()]
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
    return order, [scores[i] for i in order]


def exact_grid_vectors(n, dim, seed):
    """Vectors of multiples of 1/8 in [-1, 1]: every dot product is exact in float16/32/64, so ties are
    real ties whatever the summation order, and duplicated rows make many of them."""
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randint(-8, 9, (n, dim), generator=generator).float() / 8
    vectors[n // 2 :: 7] = vectors[1].clone()  # duplicates of row 1 all over the gallery
    return vectors


@pytest.mark.parametrize("coarse_min_rows", [0, 10**9], ids=["float16-then-exact", "float32"])
@pytest.mark.parametrize("k", [1, 5, 40])
def test_exact_search_equals_brute_force_including_ties(coarse_min_rows, k):
    gallery = exact_grid_vectors(300, 6, seed=k)
    queries = torch.cat([gallery[1:2], exact_grid_vectors(3, 6, seed=100 + k)])  # row 1 has many exact twins
    searcher = ExactSearch(gallery, coarse_min_rows=coarse_min_rows)
    assert (searcher.coarse is not None) == (coarse_min_rows == 0)
    scores, rows = searcher.search(queries, k)
    assert tuple(rows.shape) == (4, k)
    for q, query in enumerate(queries):
        order, expected = brute_force(gallery, query, k)
        assert rows[q].tolist() == order
        assert scores[q].tolist() == pytest.approx(expected, abs=1e-6)


def test_float16_pass_stays_exact_on_a_large_normalised_gallery():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(50, 32, generator=generator)
    gallery = F.normalize(centres[torch.arange(60_000) % 50] + 0.7 * torch.randn(60_000, 32, generator=generator), dim=1)
    queries = F.normalize(centres[:3] + 0.3 * torch.randn(3, 32, generator=generator), dim=1)
    searcher = ExactSearch(gallery)
    assert searcher.coarse is not None  # 60k rows: the float16 pass is used
    scores, rows = searcher.search(queries, 10)
    reference = (gallery.double() @ queries.double().T).T  # [3, N]
    for q in range(3):
        expected = torch.sort(reference[q], descending=True, stable=True).indices[:10]
        assert rows[q].tolist() == expected.tolist()
        assert torch.allclose(scores[q].double(), reference[q, expected], atol=1e-6)


def test_k_larger_than_the_gallery_and_an_empty_gallery():
    gallery = exact_grid_vectors(3, 4, seed=1)
    scores, rows = ExactSearch(gallery).search(gallery[:1], 10)
    assert sorted(rows[0].tolist()) == [0, 1, 2]
    scores, rows = ExactSearch(torch.zeros(0, 4)).search(gallery[:1], 10)
    assert tuple(rows.shape) == (1, 0)


def test_faiss_backend_is_refused_with_a_one_line_hint_when_missing(monkeypatch):
    monkeypatch.setattr(search_module, "faiss_available", lambda: False)
    with pytest.raises(GadmsError, match="pip install faiss-cpu"):
        make_searcher(torch.zeros(5, 4), backend="faiss")
    assert isinstance(make_searcher(torch.zeros(5, 4), backend="auto", faiss_min_rows=1), ExactSearch)


def test_faiss_search_finds_the_brute_force_neighbours_and_caches_its_graph(tmp_path):
    pytest.importorskip("faiss")
    generator = torch.Generator().manual_seed(3)
    gallery = F.normalize(torch.randn(2000, 16, generator=generator), dim=1)
    queries = F.normalize(torch.randn(5, 16, generator=generator), dim=1)
    cache = tmp_path / "faiss-x.index"
    searcher = make_searcher(gallery, backend="faiss", cache_file=cache)
    assert isinstance(searcher, search_module.FaissSearch) and cache.is_file()
    scores, rows = searcher.search(queries, 10)
    exact = gallery @ queries.T
    found = 0
    for q in range(5):
        truth = set(torch.topk(exact[:, q], 10).indices.tolist())
        found += len(truth & set(rows[q].tolist()))
        assert torch.allclose(scores[q], exact[rows[q], q], atol=1e-5)  # scores of what it returns are exact
    assert found / 50 >= 0.95
    written = cache.stat().st_mtime_ns
    again = search_module.FaissSearch(gallery, cache_file=cache)
    assert cache.stat().st_mtime_ns == written and again.index.ntotal == 2000


# --- explanations -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_person_clip(arch="gadms-tiny").eval()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    for name, rgb in {"red.png": (220, 30, 30), "blue.png": (30, 60, 220), "green.png": (30, 180, 60)}.items():
        image = Image.new("RGB", (32, 96), rgb)
        image.paste((240, 240, 240), (8, 10, 24, 30))
        image.save(root / name)
    return root


def test_explain_gives_one_ga_score_per_query_token_zero_on_start_and_end(model, photos):
    retriever = Retriever(model, num_workers=0)
    retriever.index(photos, index_dir=photos.parent / "idx")
    query = "a woman wearing a red coat"
    result = retriever.search(query, top_k=3, explain=True, attribution="ga")
    explanation = result.explanation
    assert explanation is not None and explanation.path == result.hits[0].path
    assert [t.text for t in explanation.tokens] == ["<start_of_text>", "a", "woman", "wearing", "a", "red", "coat", "<end_of_text>"]
    assert [t.special for t in explanation.tokens] == [True] + [False] * 6 + [True]
    assert explanation.tokens[0].score == 0 and explanation.tokens[-1].score == 0

    # Reference: the GA score of the same tokens against the top hit's image, encoded by hand.
    from gadms_cli.data.transforms import eval_transform

    with torch.no_grad():
        image = eval_transform((96, 32))(Image.open(result.hits[0].path)).unsqueeze(0)
        image_feature = model.encode_image(image)
    tokens = Tokenizer(77)([query])
    expected = ga_token_scores(model, image_feature, tokens, normalize="sample")[0, :8]
    assert [t.score for t in explanation.tokens] == pytest.approx(expected.tolist(), abs=1e-5)
    assert max(t.score for t in explanation.tokens) == pytest.approx(1.0)
    cosine = F.cosine_similarity(model.encode_text(tokens), image_feature).item()
    assert explanation.similarity == pytest.approx(cosine, abs=1e-5)
    assert explanation.similarity == pytest.approx(result.hits[0].score, abs=1e-4)


def test_explain_by_default_shows_leave_one_out_against_one_forward_per_masked_query(model, photos):
    retriever = Retriever(model, num_workers=0)
    retriever.index(photos, index_dir=photos.parent / "idx-loo")
    query = "a woman wearing a red coat"
    result = retriever.search(query, top_k=1, explain=True)
    explanation = result.explanation
    assert explanation.attribution == "loo"
    from gadms_cli.data.transforms import eval_transform

    with torch.no_grad():
        image = eval_transform((96, 32))(Image.open(result.hits[0].path)).unsqueeze(0)
        feature = model.encode_image(image)
        tokens = Tokenizer(77)([query])
        full = F.cosine_similarity(model.clip.encode_text(tokens), feature).item()
        changes = []
        for position in range(1, 7):  # the six words; 0 is the start token, 7 the end token
            variant = tokens.clone()
            variant[0, position] = MASK_ID
            changes.append(full - F.cosine_similarity(model.clip.encode_text(variant), feature).item())
    assert [t.raw for t in explanation.tokens[1:7]] == pytest.approx(changes, abs=1e-5)
    top = max(changes)
    if top > 0:
        assert [t.score for t in explanation.tokens[1:7]] == pytest.approx([max(c, 0) / top for c in changes], abs=1e-5)
    words = ["a", "woman", "wearing", "a", "red", "coat"]
    assert explanation.top_word() == words[changes.index(top)]
    assert explanation.similarity == pytest.approx(full, abs=1e-5)


def test_explain_splits_words_into_bpe_pieces_and_joins_them_back(model, photos):
    tokenizer = Tokenizer(77)
    explanation = explain_match(model, tokenizer, "jekyll hyde", torch.randn(64), photos / "red.png")
    ids = [SOT_ID] + tokenizer.encode("jekyll hyde") + [EOT_ID]
    assert len(explanation.tokens) == len(ids)
    assert [word for word, _ in explanation.words()] == ["jekyll", "hyde"]


# --- reports ----------------------------------------------------------------------------


class TagCollector(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def hostile_results(photos):
    query = '<script>alert("x")</script> & a woman\'s "red" coat'
    token = TokenScore("<img src=x onerror=alert(1)>", 0.7, False, True)
    explanation = Explanation(query, photos / "red.png", 0.25, [TokenScore("<start_of_text>", 0.0, True, True), token])
    hits = [Hit(1, 0.25, photos / "red.png", "red.png"), Hit(2, 0.2, photos / "<b>missing</b>.png", "<b>missing</b>.png")]
    return [QueryResult(query, "text", hits, explanation, {"encode": 1.0, "search": 0.5})]


def test_html_escapes_every_user_string_and_embeds_thumbnails(photos):
    results = hostile_results(photos)
    payload = results_payload(
        results, gallery=photos, model="<i>model</i>", fingerprint="f" * 64, index_report=None, backend="torch-exact", top_k=2
    )
    page = render_html(payload)
    parser = TagCollector()
    parser.feed(page)
    assert "script" not in parser.tags and "b" not in parser.tags and "i" not in parser.tags
    assert parser.tags.count("img") == 1  # our one thumbnail; the token's <img ...> is text
    text = "".join(parser.text)
    assert results[0].query in text and "<img src=x onerror=alert(1)>" in text and "<b>missing</b>.png" in text
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert 'src="data:image/jpeg;base64,' in page and "image unavailable" in page  # second hit's file is missing
    assert "default-src 'none'" in page  # and a CSP that would block scripts anyway


def test_json_report_keeps_queries_and_tokens_verbatim(photos, tmp_path):
    results = hostile_results(photos)
    payload = results_payload(results, gallery=photos, model="m", fingerprint="f" * 64, index_report=None, backend="b", top_k=2)
    write_json(tmp_path / "out.json", payload)
    data = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    query = data["queries"][0]
    assert query["query"] == results[0].query
    assert [r["rank"] for r in query["results"]] == [1, 2] and query["results"][1]["relative_path"] == "<b>missing</b>.png"
    assert query["explanation"]["tokens"][1] == {"token": "<img src=x onerror=alert(1)>", "score": 0.7, "raw": 0.0, "special": False, "ends_word": True}
