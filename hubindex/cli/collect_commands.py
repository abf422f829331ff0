"""Commands that fill the index: crawl, probe, features import."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hubindex.cli.common import (
    HubindexGroup,
    executor_options,
    print_failures,
)
from hubindex.cli.root import cli
from hubindex.errors import NothingDone, UsageError
from hubindex.index import Index
from hubindex.options import ParameterCount
from hubindex.output import SUMMARY_FORMAT, emit_summary, output_format
from hubindex.plugins import crawlers, known_names

# ------------------------------------------------------------------------------------ crawl


class CrawlGroup(HubindexGroup):
    """One subcommand per registered crawler, built from the crawler's own CLI parameters."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(crawlers())

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        registration = crawlers().get(name)
        if registration is None:
            return None
        crawler_cls = registration.component

        @click.pass_obj
        def run(index: Index, fmt: str, **options: Any) -> None:
            from hubindex.pipeline import run_crawl

            crawler = crawler_cls(**options)
            crawler.validate()  # bad options must not leave a new, empty index behind
            if index.create():
                click.echo(f"hubindex: started a new index in {index.root}", err=True)
            summary = run_crawl(index, crawler)
            emit_summary(summary, summary.line(), fmt)
            print_failures(summary.failures)

        return click.Command(
            name,
            callback=run,
            params=[*crawler_cls.cli_params(), SUMMARY_FORMAT],
            help=crawler_cls.__doc__,
            short_help=crawler_cls.description,
        )

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        name = args[0] if args else ""
        if not name.startswith("-") and self.get_command(ctx, name) is None:
            known = known_names(crawlers())
            raise UsageError(f"unknown crawl source {name!r}; available sources: {known}")
        return super().resolve_command(ctx, args)


@cli.group("crawl", cls=CrawlGroup)
def crawl_group() -> None:
    """Pull checkpoint metadata from a source into the catalog (incremental, resumable)."""


@cli.command("probe")
@click.argument("checkpoint_ids", nargs=-1, metavar="[CHECKPOINT_ID]...")
@click.option("--corpus", "corpus_spec", metavar="NAME[:ARG]",
              help="Probing corpus, e.g. bbc-news, sample-images, images:/path [default: each probe's "
                   "default corpus: bbc-news for text, sample-images for images].")
@click.option("--where", metavar="SQL-CONDITION",
              help="Probe the checkpoints matching this condition on the checkpoints table (read-only).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where models run; auto = cuda when available.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=None,
              help="Lines (text) or images per forward pass [default: the probe's, 32].")
@click.option("--max-items", type=click.IntRange(1, None), default=None,
              help="Corpus size: words for text, images for image corpora [default: the corpus's].")
@click.option("--max-params", type=ParameterCount(), default=None,
              help="Skip checkpoints with more parameters (e.g. 7B), recorded as too-large [default: those "
                   "whose weights would take over 60% of the memory at hand].")
@executor_options
@output_format
@click.pass_obj
def probe_command(index: Index, checkpoint_ids: tuple[str, ...], corpus_spec: str | None, where: str | None,
                  device: str, batch_size: int | None, max_items: int | None, max_params: int | None,
                  executor_kind: str, address: str | None, workers: int | None, fmt: str) -> None:
    """Run checkpoints on a probing corpus and store their features (one row per item).

    \b
    Text (transformers, incl. CLIP/SigLIP text towers): last hidden state at each word's last
      sub-word token, the line tokenized as running text.
    Images (timm): pre-logits features, with the model's own preprocessing.
    Images (transformers, incl. CLIP/SigLIP vision towers): the family's pooled features, with
      the checkpoint's own image processor.
    Checkpoints are routed by their config (model_type, architectures), library and pipeline tag;
    one no probe takes is recorded in `failures` as unsupported, with the reason. Features
    already stored for the same checkpoint sha, corpus content and precision are reused without
    loading the model; checkpoints that fail are recorded in `failures` and the run goes on.
    Ctrl-C stops the run (exit 130); finished checkpoints are kept. Exit 4 when no checkpoint
    was probed (every one failed or had no probe for the corpus).

    \b
    Examples:
      hubindex probe --where "library_name = 'timm'" --corpus sample-images --max-items 64
      hubindex probe local:/models/bert-tiny --corpus text:notes/ --max-items 5000
      hubindex probe --where true --executor ray --workers 2
    """
    from hubindex.executors import make_executor
    from hubindex.probing import nothing_selected, run_probe, select_checkpoints

    with make_executor(executor_kind, address, workers) as executor:
        ids = select_checkpoints(index, where, checkpoint_ids)
        summary = run_probe(index, ids, corpus_spec, device=device, batch_size=batch_size, max_items=max_items,
                            executor=executor, max_params=max_params)
    emit_summary(summary, summary.line(), fmt)
    print_failures(summary.failures)
    if not summary.selected:
        raise nothing_selected(where)
    if not summary.probed and not summary.reused:
        raise NothingDone(f"no checkpoint was probed: {summary.failed} failed, {summary.no_probe} without a "
                          "matching probe (see the failures table, or give a corpus of their modality)")


# ------------------------------------------------------------------------------------ features


@cli.group("features")
def features_group() -> None:
    """Feature matrices computed elsewhere (a GPU cluster, a benchmark)."""


@features_group.command("import")
@click.argument("pairs", nargs=-1, metavar="[CHECKPOINT_ID=FILE.npy]...")
@click.option("--from", "folders", multiple=True, type=click.Path(path_type=Path, file_okay=False),
              help="A folder with features.csv (columns checkpoint_id, file[, sha]) and the .npy files it names "
                   "(repeatable).")
@click.option("--corpus", "corpus_spec", required=True, metavar="NAME[:ARG]",
              help="The corpus the rows are aligned with, e.g. bbc-news, images:/path.")
@click.option("--max-items", type=click.IntRange(1, None), default=None,
              help="Corpus size, as given to `hubindex probe` [default: the corpus's].")
@click.option("--layer", default="last", show_default=True, help="What layer the features are from.")
@click.option("--pooling", default="imported", show_default=True, help="How they were pooled (part of the key).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True,
              help="The precision the model ran in (part of the key).")
@click.option("--register-new", is_flag=True,
              help="Add catalog rows (source 'import') for ids the catalog lacks, keyed by the manifest's sha or "
                   "else the file's sha256.")
@output_format
@click.pass_obj
def features_import_command(index: Index, pairs: tuple[str, ...], folders: tuple[Path, ...], corpus_spec: str,
                            max_items: int | None, layer: str, pooling: str, dtype: str, register_new: bool,
                            fmt: str) -> None:
    """Register feature matrices computed elsewhere, keyed and stored as probed ones are.

    \b
    Each .npy matrix has one row per corpus item, in the corpus' order (a row of NaN: a dropped
    item). It is written to the embedding store and registered in `embeddings` (probe 'import')
    under (checkpoint sha, corpus content hash, layer, pooling, dtype); kappa, neighbours, MMI and
    scores use it like probed features. Matrices already registered unchanged are skipped.

    \b
    Examples:
      hubindex features import hf:org/model=feats.npy --corpus bbc-news
      hubindex features import --from cluster-run/ --corpus sample-images --pooling pre-logits
    """
    from hubindex.feature_import import import_features, read_sources
    from hubindex.probing import make_corpus

    files = read_sources(list(pairs), list(folders))
    corpus = make_corpus(corpus_spec, max_items).load()
    summary = import_features(index, corpus, files, layer=layer, pooling=pooling, dtype=dtype,
                              register_new=register_new)
    emit_summary(summary, summary.line(corpus), fmt)


