"""Benchmark: probe throughput against the bare model forward on the same batches.

    .venv/bin/python benchmarks/bench_probe.py [--zoo DIR] [--max-words N] [--max-images N]

For each real zoo checkpoint (built by `hubindex zoo build` if --zoo is not given) it times, side by
side in one run and on the same batches:
  - bare: the model's own input pipeline and forward pass only (tokenizer on the lines as running
    text + model, batches in corpus order; the model's transform + forward_features/forward_head
    for images), weights already loaded;
  - probe: the probe's `features` step (the same forward, batches ordered by length, plus word
    alignment from offsets, truncation and padding-invariance checks), weights already loaded;
  - end to end: `hubindex probe` on a fresh index for that checkpoint (load, features, FAISS write,
    catalog row), and a second run that must reuse the stored features (no forward pass).
It reports items/s (words or images) and the overhead ratio probe/bare.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

TEXT_MEMBERS = ("all-MiniLM-L6-v2", "paraphrase-MiniLM-L3-v2")
IMAGE_MEMBERS = ("tf_efficientnet_lite0.in1k",)


def best_of(repeats: int, fn: Any) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def bare_text(model: Any, tokenizer: Any, lines: list[list[str]], batch_size: int) -> None:
    import torch

    for start in range(0, len(lines), batch_size):
        texts = [" ".join(line) for line in lines[start:start + batch_size]]
        batch = tokenizer(texts, truncation=True, padding=True, return_tensors="pt")
        with torch.inference_mode():
            model(**batch)


def bare_image(model: Any, transform: Any, images: list[Any], batch_size: int) -> None:
    import torch

    for start in range(0, len(images), batch_size):
        batch = torch.stack([transform(image) for image in images[start:start + batch_size]])
        with torch.inference_mode():
            model.forward_head(model.forward_features(batch), pre_logits=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, help="an existing zoo folder (default: build one in a temp folder)")
    parser.add_argument("--max-words", type=int, default=4000)
    parser.add_argument("--max-images", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from hubindex.index import Index
    from hubindex.pipeline import run_crawl
    from hubindex.plugins import corpora, crawlers
    from hubindex.probing import run_probe
    from hubindex.torch_compat import import_timm
    from hubindex_plugins.probe_image import TimmImageProbe
    from hubindex_plugins.probe_text import TransformersTextProbe
    from hubindex_plugins.zoo import build_zoo

    workdir = Path(tempfile.mkdtemp(prefix="hubindex-bench-"))
    zoo = args.zoo or workdir / "zoo"
    if args.zoo is None:
        build_zoo(zoo, names=TEXT_MEMBERS + IMAGE_MEMBERS, progress=False)
    index = Index(workdir / "index")
    run_crawl(index, crawlers()["local"].component(path=zoo), show_progress=False)
    text_corpus = corpora()["bbc-news"].component(max_items=args.max_words).load()
    image_corpus = corpora()["sample-images"].component(max_items=args.max_images).load()
    timm = import_timm()

    print(f"corpora: {text_corpus.name} {text_corpus.size} words in {len(text_corpus.lines)} lines; "
          f"{image_corpus.name} {image_corpus.size} images; best of {args.repeats}; CPU threads: "
          f"{__import__('torch').get_num_threads()}")
    print("| checkpoint | items | bare items/s | probe items/s | overhead probe/bare | end to end s | second run s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with index.open_catalog(read_only=True) as catalog:
        rows = {r["repo_id"]: r for r in catalog.checkpoint_rows([f"hf:hubindex-zoo/{n}" for n in
                                                                  TEXT_MEMBERS + IMAGE_MEMBERS])}
    for name in TEXT_MEMBERS + IMAGE_MEMBERS:
        row = rows[f"hubindex-zoo/{name}"]
        if name in TEXT_MEMBERS:
            probe, corpus = TransformersTextProbe("cpu", 32), text_corpus
            model, tokenizer = probe.load(row)
            bare = best_of(args.repeats, lambda: bare_text(model, tokenizer, corpus.lines, probe.batch_size))
            probed = best_of(args.repeats, lambda: probe.features(model, tokenizer, corpus.lines))
        else:
            probe, corpus = TimmImageProbe("cpu", 32), image_corpus
            model = probe.create_model(row)
            transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model), is_training=False)
            bare = best_of(args.repeats, lambda: bare_image(model, transform, corpus.items, probe.batch_size))
            probed = best_of(args.repeats, lambda: probe.features(model, transform, corpus.items)[0])
        corpus_spec = corpus.name
        started = time.perf_counter()
        first = run_probe(index, [row["checkpoint_id"]], corpus_spec, device="cpu", batch_size=32,
                          max_items=corpus.size, show_progress=False)
        end_to_end = time.perf_counter() - started
        started = time.perf_counter()
        second = run_probe(index, [row["checkpoint_id"]], corpus_spec, device="cpu", batch_size=32,
                           max_items=corpus.size, show_progress=False)
        again = time.perf_counter() - started
        assert first.probed == 1 and second.reused == 1 and second.probed == 0, (first, second)
        print(f"| {name} | {corpus.size} | {corpus.size / bare:.0f} | {corpus.size / probed:.0f} "
              f"| {probed / bare:.2f} | {end_to_end:.1f} | {again:.2f} |")


if __name__ == "__main__":
    main()
