"""Is ``--explain`` faithful? GA-score explanations against exact leave-one-out, over attribute queries.

For each of ``QUERIES`` (20 short attribute queries of SketchPedes' vocabulary), the gallery
is searched and the top hit explained three ways (``gadms_cli/retrieve/explain.py``):
leave-one-out (the reference: the change of cosine when the word is replaced by [MASK]),
the GA score as the paper computes it (ReLU, min-max), and the GA score without the ReLU.
Per GA variant it reports:

- ``top_agree``: the fraction of queries whose highest-scoring word is LOO's;
- ``spearman``: the mean Spearman rank correlation of the word scores with LOO's;
- ``content_top``: the fraction of queries whose top word is a content word (not "a",
  "the", "in", "with", "wearing", ... : ``FUNCTION_WORDS``, nor punctuation); also for LOO.

    python benchmarks/explain_agreement.py --model gadms-quickstart/model --gallery gadms-quickstart/sketchpedes/imgs/test \\
        [--out docs/results/explain-agreement]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does: see cli.py

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from dataclasses import replace  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

from gadms_cli.fileio import atomic_write  # noqa: E402
from gadms_cli.gadms.ga_score import ga_score_terms  # noqa: E402
from gadms_cli.retrieve.retriever import Retriever  # noqa: E402

QUERIES: tuple[str, ...] = (
    "a woman wearing a red coat", "a man with a black backpack", "a woman in a pink dress", "a man in blue jeans",
    "a person in an orange t-shirt", "a woman with long hair", "a man wearing a green jacket",
    "a person carrying a yellow handbag", "a woman in a white skirt", "a man in gray shorts",
    "a person wearing a black cap", "a woman with a purple shoulder bag", "a man in a brown sweater",
    "a woman wearing blue trousers", "a person in a red shirt", "a man with short black hair",
    "a woman in a yellow tank top", "a man wearing a white beanie", "a person in green shorts",
    "a woman wearing a black coat",
)
FUNCTION_WORDS = frozenset({"a", "an", "the", "in", "with", "wearing", "carrying", "person", "of", "and", "is", "on"})


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); 0 when either side is constant."""

    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=lambda i: values[i])
        out = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / (vx * vy) ** 0.5 if vx > 0 and vy > 0 else 0.0


def word_raw(explanation) -> list[tuple[str, float]]:
    """Words with the largest RAW attribution of their pieces (signed, unscaled)."""
    words, text, best = [], "", None
    for token in explanation.tokens:
        if token.special:
            continue
        text, best = text + token.text, token.raw if best is None else max(best, token.raw)
        if token.ends_word:
            words.append((text, best))
            text, best = "", None
    return words


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a gadms model folder")
    parser.add_argument("--gallery", type=Path, required=True, help="an image folder (e.g. a SketchPedes test split)")
    parser.add_argument("--out", type=Path, default=None, help="write OUT.md and OUT.json")
    args = parser.parse_args(argv)

    retriever = Retriever(args.model, num_workers=0)
    retriever.index(args.gallery, index_dir=args.gallery.parent / f".explain-index-{args.gallery.name}")
    variants = {"GA (paper: ReLU)": "ga", "LOO": "loo"}
    rows = []
    for query in QUERIES:
        hit = retriever.search(query, top_k=1).hits[0]
        row = {"query": query, "top_hit": str(hit.path)}
        for name, attribution in variants.items():
            explanation = retriever.explain(query, hit.path, num_layers="all", attribution=attribution)
            row[name] = word_raw(explanation)
        # GA without the ReLU: the signed layer sum over all layers, in place of the explanation's raw values
        explanation = retriever.explain(query, hit.path, num_layers="all", attribution="ga")
        tokens = retriever.tokenizer([query])[:, : len(explanation.tokens)]
        embedding = retriever.gallery.embeddings[retriever.gallery.row_of(hit.path)].reshape(1, -1).float()
        signed = ga_score_terms(retriever.model, embedding, tokens, "all").signed[0]
        explanation.tokens = [replace(t, raw=float(signed[i])) for i, t in enumerate(explanation.tokens)]
        row["GA (signed)"] = word_raw(explanation)
        rows.append(row)

    names = ["GA (paper: ReLU)", "GA (signed)", "LOO"]
    summary = {}
    for name in names:
        agree, rhos, content = [], [], []
        for row in rows:
            words = [w for w, _ in row["LOO"]]
            mine, ref = [s for _, s in row[name]], [s for _, s in row["LOO"]]
            top = words[max(range(len(mine)), key=lambda i: mine[i])]
            agree.append(top == words[max(range(len(ref)), key=lambda i: ref[i])])
            rhos.append(spearman(mine, ref))
            content.append(top.isalpha() and top not in FUNCTION_WORDS)
            row.setdefault("top_word", {})[name] = top
        summary[name] = {"top_agree": round(statistics.fmean(agree), 3), "spearman": round(statistics.fmean(rhos), 3),
                         "content_top": round(statistics.fmean(content), 3)}
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "python benchmarks/explain_agreement.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [
        "# Is `--explain` faithful? GA score against leave-one-out", "",
        f"Made by `{command}` on {date}; {len(rows)} attribute queries, each explained against its top hit.", "",
        "| attribution | top word = LOO's | Spearman with LOO (words) | top word is a content word |", "|---|---|---|---|",
        *[f"| {n} | {summary[n]['top_agree']:.2f} | {summary[n]['spearman']:.2f} | {summary[n]['content_top']:.2f} |" for n in names],
        "", "| query | top word: GA (paper) | GA (signed) | LOO |", "|---|---|---|---|",
        *[f"| {r['query']} | {r['top_word'][names[0]]} | {r['top_word'][names[1]]} | {r['top_word'][names[2]]} |" for r in rows],
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        with atomic_write(args.out.with_suffix(".json")) as handle:
            json.dump({"command": command, "date": date, "summary": summary, "queries": rows}, handle, indent=1)
        with atomic_write(args.out.with_suffix(".md")) as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
