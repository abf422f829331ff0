"""Coverage: which probe gives which family features, over the type zoo (tests/type_zoo.py).

    .venv/bin/python benchmarks/probe_coverage.py [--out DIR] [--markdown FILE]

Builds the type zoo (tiny random-initialised checkpoints of 30+ transformers text types over the
four tokenizer kinds, 15 transformers vision types incl. CLIP and SigLIP, a timm sample, an audio
model and a custom-code repo), crawls it with `hubindex crawl local`, probes every checkpoint on a
text corpus (`text:PATH`, four lines of news with digits, punctuation and apostrophes) and on real
photos (`sample-images`, 8 views), and prints one row per checkpoint: what the probes made of it
(probe, feature dimension, items with features) or why it has none (the `failures` row).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

TEXT_LINES = (
    "Shares in the bank rose 76% in 2004, and he couldn't stop the sale of its U.S. unit today.",
    'The naïve café owner said: "We\'ll open again on 12 March" - after £5.2bn of losses at the group.',
    "Mr Smith's firm, which employs 1,200 people, expects profits of about $3.4m (€2.9m) this year.",
    "Analysts in London and New York expect the central bank to hold interest rates in the spring.",
)
N_IMAGES = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="work folder (default: a new temporary folder)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()

    from type_zoo import MEMBERS, build_type_zoo

    from hubindex.index import Index
    from hubindex.pipeline import run_crawl
    from hubindex.plugins import crawlers
    from hubindex.probing import run_probe

    work = args.out or Path(tempfile.mkdtemp(prefix="hubindex-coverage-"))
    started = time.perf_counter()
    build_type_zoo(work / "zoo")
    built = time.perf_counter() - started
    (work / "text").mkdir(parents=True, exist_ok=True)
    (work / "text" / "news.txt").write_text("\n".join(TEXT_LINES) + "\n", encoding="utf-8")
    index = Index(work / "index")
    run_crawl(index, crawlers()["local"].component(path=work / "zoo"), show_progress=False)
    with index.open_catalog(read_only=True) as catalog:
        ids = [row[0] for row in catalog.conn.execute("SELECT checkpoint_id FROM checkpoints ORDER BY 1").fetchall()]
    started = time.perf_counter()
    summaries = [run_probe(index, ids, f"text:{work / 'text'}", device="cpu", show_progress=False),
                 run_probe(index, ids, "sample-images", device="cpu", max_items=N_IMAGES, show_progress=False)]
    probed = time.perf_counter() - started

    with index.open_catalog(read_only=True) as catalog:
        features = {(cid, corpus): (probe, dim, kept, items) for cid, corpus, probe, dim, kept, items in
                    catalog.conn.execute("SELECT checkpoint_id, corpus, probe, dim, n_kept, n_items FROM embeddings")
                    .fetchall()}
        failures = dict(catalog.conn.execute(
            "SELECT subject, kind || ': ' || message FROM failures WHERE resolved_at IS NULL").fetchall())
    lines = ["| checkpoint | library | type | tokenizer | card | text features | image features | failure |",
             "|---|---|---|---|---|---|---|---|"]
    complete = 0
    for member in MEMBERS:
        cid = f"local:{(work / 'zoo' / member.name).resolve()}"
        cells = {}
        for modality, corpus in (("text", "text"), ("image", "sample-images")):
            found = features.get((cid, corpus))
            cells[modality] = f"{found[0]}: {found[1]}-d, {found[2]}/{found[3]}" if found else "-"
        failure = failures.get(cid, "").split("; probes:")[0]
        got = {modality for modality, text in cells.items() if text != "-"}
        complete += got == set(member.modalities) and (bool(member.modalities) or failure.startswith("unsupported"))
        tokenizer = f"{member.tokenizer_kind} ({member.tokenizer_style})" if member.tokenizer_kind else "-"
        lines.append("| " + " | ".join([member.name, member.library, member.family, tokenizer, member.card,
                                         cells["text"], cells["image"], failure or "-"]) + " |")
    lines.append("")
    lines.append(f"{complete} of {len(MEMBERS)} checkpoints got features in exactly the modalities they take, "
                 f"and those that take none a recorded `unsupported` failure. Zoo built in {built:.1f} s; "
                 f"probing took {probed:.1f} s on {summaries[0].corpora[0]} and {summaries[1].corpora[0]}.")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
