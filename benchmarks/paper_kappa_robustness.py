"""kappa robustness: how kappa changes with the probe set's size and genre (Huang et al. 2021, Figure 2).

    .venv/bin/python benchmarks/paper_kappa_robustness.py [--quick] [--out DIR] [--work DIR] [--seed N]

Huang, Qiu & Church estimate kappa of language-model checkpoints on growing parts of a probe corpus
and compare each estimate with the one on the whole corpus: cos(vec(kappa_m), vec(kappa*)) and
KL(N(0, kappa*) || N(0, kappa_m)) (their LMs/estimate_kappa/convergence.py and
diff_two_gaussians.py); kappa converges quickly, and it barely moves between genres (wiki vs news,
cosine 0.98). The same measurements here, on three zoos:

- text zoo: the five text members of `hubindex zoo build` (all-MiniLM-L6-v2, its first 3 layers,
  its BBC fine-tune, its random-init twin, paraphrase-MiniLM-L3-v2), probed by `hubindex probe`
  (transformers-text probe: last hidden state at each word's last sub-word) on the `bbc-news`
  corpus (the first 10,000 words; quick: 2,000) and on `python-docs` (as many words of the
  Python language reference topics that CPython ships in `pydoc_data.topics`, lines of >= 10
  words; a corpus registered here through the `register_corpora` hook, as a third party would);
- image zoo: the five image members (EfficientNet-Lite0/1/2, the Lite0 digits fine-tune and the
  random-init Lite0), probed (timm-image probe: pre-logits features) on `sample-images` (all 312
  crops; quick: the first 64) and `digits` (the first 312; quick: 64);
- small-CNN zoo: the 40 checkpoints of paper_small_zoo.py with its default settings (each learns
  3 of the seen digit classes; the zoo `classes-3` of paper_unseen_tasks.py for the same seed,
  cached under --work, so it is trained once): penultimate features of the 1,163 digits outside
  the zoo's training pool, and of the 312 sample-image crops made grey and box-downsampled to
  8x8 in [0, 1] (digits are 8x8 in [0, 1] too).

The real zoo is built under `<work>/zoo` (`build_zoo`; members already built are skipped) and
indexed in `<work>/kappa-robustness/index` with `hubindex crawl local` and `hubindex probe`, whose
stored features later runs reuse. Everything after the zoo build runs on one CPU thread (see
paper_small_zoo.one_cpu_thread).

(a) probe size: kappa* is kappa on all of a zoo's first corpus; for sizes m below that, 20
(quick: 10) random subsets of m items (without replacement, seeded) give kappa_m, by
`hubindex.kappa.kappa_matrix` (centred, linear CKA; words a model dropped are left out
pairwise). Reported per m: mean and 10th-90th percentile of cos(vec(kappa_m), vec(kappa*)), of
the same cosine over the off-diagonal entries only (the n unit diagonal entries are the same in
every kappa and lift the full cosine towards 1), and of KL(N(0, kappa*) || N(0, kappa_m)) =
1/2 [tr(kappa_m^-1 kappa*) - n + ln det kappa_m - ln det kappa*], with 1e-6 added to the
diagonal of both matrices (kappa_m of 40 checkpoints on 10 items is nearly singular).
(b) across corpora: kappa of each zoo on its two corpora, compared the same three ways; as
references, two disjoint random halves of the first corpus (sampling noise at half the size,
mean of the repetitions) and the identity matrix (what knowing nothing looks like, the
authors' "isotropic" baseline).

Outputs `<out>/kappa-robustness/`: results.json (settings, every number, wall seconds), table.md,
probe_size.png, corpora.png. Default --out: benchmarks/results (quick: benchmarks/results/quick).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # run as a script or imported by reproduce_papers.py / a test
    sys.path.insert(0, str(HERE))

from paper_common import experiment_arguments, exit_code_of, output_folder  # noqa: E402
from paper_small_zoo import ZooSettings, load_or_train_zoo, log, one_cpu_thread, write_json  # noqa: E402

from hubindex import hookimpl  # noqa: E402
from hubindex.errors import HubindexError, UsageError  # noqa: E402
from hubindex.index import Index  # noqa: E402
from hubindex.kappa import kappa_matrix  # noqa: E402
from hubindex.plugins import corpora, pm  # noqa: E402
from hubindex.store import EmbeddingStore  # noqa: E402
from hubindex.types import TEXT, Corpus, CorpusData  # noqa: E402
from hubindex_plugins.corpora import lines_of_words, text_corpus  # noqa: E402

EXPERIMENT = "kappa-robustness"
ZOO_ORG_PREFIX = "hf:hubindex-zoo/"
TEXT_MEMBERS = ("all-MiniLM-L6-v2", "paraphrase-MiniLM-L3-v2", "all-MiniLM-L6-v2-first3",
                "all-MiniLM-L6-v2-bbc-topics", "all-MiniLM-L6-v2-random-init")
IMAGE_MEMBERS = ("tf_efficientnet_lite0.in1k", "tf_efficientnet_lite1.in1k", "tf_efficientnet_lite2.in1k",
                 "tf_efficientnet_lite0.in1k_ft_digits", "tf_efficientnet_lite0.random_init")
# Added to the diagonal of both matrices in the Gaussian KL (kappa_m can be singular for small m).
KL_JITTER = 1e-6
PERCENTILES = (10, 90)
GREY_SIDE = 8
PLUGIN_NAME = "paper-kappa-robustness"


# ------------------------------------------------------------------------------------ the second text corpus


class PythonDocs(Corpus):
    """The Python language reference topics shipped with CPython (`pydoc_data.topics`), offline.

    The topics (e.g. `assert`, `class`, `numeric-types`) in sorted order; each line of >= 10
    whitespace-separated words is a line of words, as for the other text corpora. The text is the
    Python documentation of the running interpreter's version, so the content hash changes with it.
    """

    name = "python-docs"
    version = "1"
    description = "Python language reference topics from pydoc_data (offline)"
    modality = TEXT
    default_max_items = 10_000

    def load(self) -> CorpusData:
        from pydoc_data.topics import topics

        lines = lines_of_words(topics[key] for key in sorted(topics))
        return text_corpus(
            self.name, lines, self.max_items,
            source=f"pydoc_data.topics of CPython {sys.version.split()[0]}: {len(topics)} topics",
            license="PSF License Agreement (Python documentation)",
        )


class PythonDocsPlugin:
    """Registers the python-docs corpus on the same hook a third-party plugin uses."""

    @hookimpl
    def register_corpora(self, register):  # noqa: ANN001, ANN201 - hook signature
        register(PythonDocs)


def register_python_docs() -> None:
    if pm.get_plugin(PLUGIN_NAME) is None:
        pm.register(PythonDocsPlugin(), name=PLUGIN_NAME)


# ------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class RunSettings:
    quick: bool
    seed: int
    text_words: int
    images: int
    repetitions: int
    text_sizes: tuple[int, ...]
    image_sizes: tuple[int, ...]
    small_zoo_sizes: tuple[int, ...]

    @classmethod
    def for_mode(cls, quick: bool, seed: int) -> RunSettings:
        if quick:
            return cls(quick, seed, text_words=2_000, images=64, repetitions=10,
                       text_sizes=(50, 100, 200, 500, 1_000), image_sizes=(10, 20, 40),
                       small_zoo_sizes=(10, 20, 50, 100, 200, 500))
        return cls(quick, seed, text_words=10_000, images=312, repetitions=20,
                   text_sizes=(50, 100, 200, 500, 1_000, 2_000, 5_000),
                   image_sizes=(10, 20, 50, 100, 200), small_zoo_sizes=(10, 20, 50, 100, 200, 500))


@dataclass
class ZooFeatures:
    """One zoo's features on its two corpora (rows = items, NaN rows = items a checkpoint dropped)."""

    zoo: str
    labels: list[str]
    corpus_a: str
    corpus_b: str
    features_a: list[np.ndarray]
    features_b: list[np.ndarray]
    sizes: tuple[int, ...]  # probe sizes m below the whole corpus A


# ------------------------------------------------------------------------------------ comparisons


def gaussian_kl(reference: np.ndarray, estimate: np.ndarray, jitter: float = KL_JITTER) -> float:
    """KL(N(0, reference) || N(0, estimate)) in nats, both with `jitter` added to the diagonal."""
    from scipy.linalg import cho_factor, cho_solve

    n = reference.shape[0]
    a = reference + jitter * np.eye(n)
    b = estimate + jitter * np.eye(n)
    factor_a, factor_b = cho_factor(a, lower=True), cho_factor(b, lower=True)
    logdet_a = 2.0 * np.log(np.diag(factor_a[0])).sum()
    logdet_b = 2.0 * np.log(np.diag(factor_b[0])).sum()
    value = 0.5 * (np.trace(cho_solve(factor_b, a)) - n + logdet_b - logdet_a)
    return max(float(value), 0.0)  # >= 0 exactly; equal matrices round to about -1e-15


def cosine(a: np.ndarray, b: np.ndarray) -> float | None:
    """Cosine of two arrays as vectors; None when one of them is zero (e.g. the identity's off-diagonal)."""
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    return float(np.dot(a.ravel(), b.ravel()) / norms) if norms > 0 else None


def compare(reference: np.ndarray, estimate: np.ndarray) -> dict[str, float | None]:
    """cos of vec(kappa), cos of the off-diagonal entries, and the Gaussian KL(reference || estimate)."""
    off = ~np.eye(reference.shape[0], dtype=bool)
    return {"cosine": cosine(reference, estimate), "cosine_off_diagonal": cosine(reference[off], estimate[off]),
            "kl": gaussian_kl(reference, estimate)}


def spread(values: list[float]) -> dict[str, float]:
    low, high = np.percentile(values, PERCENTILES)
    return {"mean": float(np.mean(values)), "p10": float(low), "p90": float(high)}


def kappa_of(features: list[np.ndarray], rows: np.ndarray | None = None) -> np.ndarray:
    return kappa_matrix([f if rows is None else f[rows] for f in features]).values


def probe_size_curve(features: list[np.ndarray], sizes: tuple[int, ...], repetitions: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """kappa* on all items, and per size m the spread of each comparison over random m-subsets."""
    total = features[0].shape[0]
    full = kappa_of(features)
    curve = []
    for m in sizes:
        if m >= total:
            raise UsageError(f"probe size {m} is not below the corpus' {total} items")
        scores = [compare(full, kappa_of(features, np.sort(rng.choice(total, m, replace=False))))
                  for _ in range(repetitions)]
        curve.append({"m": m, "repetitions": repetitions,
                      **{key: spread([s[key] for s in scores]) for key in scores[0]}})
    return full, curve


def split_halves(features: list[np.ndarray], repetitions: int, rng: np.random.Generator) -> dict[str, float]:
    """Mean comparison of kappa on two disjoint random halves of the same corpus."""
    total = features[0].shape[0]
    scores = []
    for _ in range(repetitions):
        order = rng.permutation(total)
        first, second = np.sort(order[: total // 2]), np.sort(order[total // 2 :])
        scores.append(compare(kappa_of(features, first), kappa_of(features, second)))
    return {key: float(np.mean([s[key] for s in scores])) for key in scores[0]}


# ------------------------------------------------------------------------------------ features


def quiet_hubindex(index_root: Path, *args: str) -> None:
    """`hubindex --index ROOT ARGS` in this process, its output on stderr; an error if it fails."""
    from hubindex.cli import main as hubindex_main

    with contextlib.redirect_stdout(sys.stderr):
        code = hubindex_main(["--index", str(index_root), *args])
    if code != 0:
        raise HubindexError(f"hubindex {' '.join(args)} failed with exit code {code}")


def prepare_real_zoo(work: Path) -> Path:
    """Build the zoo's ten members under <work>/zoo and index them; the index folder."""
    from hubindex_plugins.zoo import build_zoo

    zoo_folder = work / "zoo"
    started = time.perf_counter()
    results = build_zoo(zoo_folder, TEXT_MEMBERS + IMAGE_MEMBERS, progress=False)
    built = [r.repo_id for r in results if r.status == "built"]
    log(f"kappa robustness: zoo in {zoo_folder} ({len(built)} built) in {time.perf_counter() - started:.0f} s")
    index_root = work / EXPERIMENT / "index"
    quiet_hubindex(index_root, "crawl", "local", str(zoo_folder))
    return index_root


def load_corpus(spec: str, max_items: int | None) -> CorpusData:
    """A registered corpus by name, loaded (the same items `hubindex probe` sees)."""
    registration = corpora().get(spec)
    if registration is None:
        raise UsageError(f"corpus {spec!r} is not registered")
    return registration.component(max_items=max_items).load()


def probed_features(index_root: Path, members: tuple[str, ...], corpus: str, max_items: int) -> list[np.ndarray]:
    """Probe the members on the corpus with `hubindex probe` (stored ones are reused) and read their features."""
    ids = [ZOO_ORG_PREFIX + name for name in members]
    started = time.perf_counter()
    quiet_hubindex(index_root, "probe", *ids, "--corpus", corpus, "--max-items", str(max_items), "--device", "cpu")
    log(f"kappa robustness: probed {len(ids)} checkpoints on {corpus} ({max_items} items) "
        f"in {time.perf_counter() - started:.0f} s")
    content_hash = load_corpus(corpus, max_items).content_hash
    store = EmbeddingStore(index_root)
    with Index(index_root).open_catalog(read_only=True) as catalog:
        rows = catalog.conn.execute(
            "SELECT e.checkpoint_id, e.path, e.n_items, e.file_sha256 FROM embeddings e JOIN checkpoints c "
            "USING (checkpoint_id) WHERE e.corpus_hash = ? AND e.checkpoint_sha = coalesce(c.local_sha, c.sha)",
            [content_hash],
        ).fetchall()
    found = {checkpoint_id: (path, n_items, sha) for checkpoint_id, path, n_items, sha in rows}
    missing = [i for i in ids if i not in found]
    if missing:
        raise HubindexError(f"no stored features on {corpus} for {', '.join(missing)} (see `hubindex sql "
                            f"\"SELECT * FROM open_failures\" --index {index_root}`)")
    return [store.read(found[i][0], found[i][1], found[i][2]) for i in ids]


def grey_crops() -> np.ndarray:
    """The sample-images crops as grey 8x8 images in [0, 1], box-downsampled like a digit scan."""
    from PIL import Image

    views = load_corpus("sample-images", None).items
    return np.stack([np.asarray(v.convert("L").resize((GREY_SIDE, GREY_SIDE), Image.Resampling.BOX),
                                dtype=np.float32) / 255.0 for v in views])


def collect_features(settings: RunSettings, work: Path, index_root: Path) -> list[ZooFeatures]:
    """The three zoos' features on their two corpora each."""
    register_python_docs()
    text = ZooFeatures(
        "text zoo", list(TEXT_MEMBERS), "bbc-news", "python-docs",
        probed_features(index_root, TEXT_MEMBERS, "bbc-news", settings.text_words),
        probed_features(index_root, TEXT_MEMBERS, "python-docs", settings.text_words),
        settings.text_sizes,
    )
    image = ZooFeatures(
        "image zoo", list(IMAGE_MEMBERS), "sample-images", "digits",
        probed_features(index_root, IMAGE_MEMBERS, "sample-images", settings.images),
        probed_features(index_root, IMAGE_MEMBERS, "digits", settings.images),
        settings.image_sizes,
    )
    small = load_or_train_zoo(ZooSettings(seed=settings.seed), work)
    held_out = small.split.held_out
    cnn = ZooFeatures(
        "small-CNN zoo", [s.name for s in small.specs], "digits (held out)", "grey photo crops 8x8",
        small.features(held_out), small.features_of_images(grey_crops()), settings.small_zoo_sizes,
    )
    return [text, image, cnn]


# ------------------------------------------------------------------------------------ report


def fmt_spread(s: dict[str, float], digits: int = 4) -> str:
    return f"{s['mean']:.{digits}f} ({s['p10']:.{digits}f}-{s['p90']:.{digits}f})"


def probe_size_table(results: list[dict]) -> str:
    lines = ["| zoo (corpus, all items) | probe items m | cos vec(kappa) | cos off-diagonal "
             "| KL(kappa* \\|\\| kappa_m) (nats) |",
             "|---|---:|---|---|---|"]
    for zoo in results:
        for point in zoo["probe_size"]:
            lines.append(f"| {zoo['zoo']} ({zoo['corpus_a']}, {zoo['m_a']}) | {point['m']} "
                         f"| {fmt_spread(point['cosine'])} | {fmt_spread(point['cosine_off_diagonal'])} "
                         f"| {fmt_spread(point['kl'], 3)} |")
    return "\n".join(lines)


def corpora_table(results: list[dict]) -> str:
    lines = ["| zoo | corpus A (m) | corpus B (m) | comparison | cos vec(kappa) | cos off-diagonal "
             "| KL(A \\|\\| B) (nats) |",
             "|---|---|---|---|---:|---:|---:|"]
    for zoo in results:
        a, b = f"{zoo['corpus_a']} ({zoo['m_a']})", f"{zoo['corpus_b']} ({zoo['m_b']})"
        rows = (("A vs B", zoo["across_corpora"]),
                ("halves of A (mean)", zoo["halves_of_a"]),
                ("A vs identity", zoo["identity_baseline"]))
        for name, r in rows:
            off = "-" if r["cosine_off_diagonal"] is None else f"{r['cosine_off_diagonal']:.4f}"
            lines.append(f"| {zoo['zoo']} | {a} | {b} | {name} | {r['cosine']:.4f} | {off} | {r['kl']:.3f} |")
    return "\n".join(lines)


def pairs_table(zoo: dict) -> str:
    """Every off-diagonal kappa of a small zoo on both corpora."""
    labels, a, b = zoo["labels"], np.array(zoo["kappa_a"]), np.array(zoo["kappa_b"])
    lines = [f"| {zoo['zoo']}: pair | kappa on {zoo['corpus_a']} | kappa on {zoo['corpus_b']} |", "|---|---:|---:|"]
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            lines.append(f"| {labels[i]} / {labels[j]} | {a[i, j]:.3f} | {b[i, j]:.3f} |")
    return "\n".join(lines)


def plot_probe_size(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for zoo, colour in zip(results, ("tab:blue", "tab:orange", "tab:green")):
        m = np.array([p["m"] for p in zoo["probe_size"]])
        label = f"{zoo['zoo']} ({zoo['corpus_a']}, kappa* on {zoo['m_a']})"
        for key, style, suffix in (("cosine", "o-", "vec(kappa)"), ("cosine_off_diagonal", "s--", "off-diagonal")):
            mean = np.array([p[key]["mean"] for p in zoo["probe_size"]])
            left.fill_between(m, [p[key]["p10"] for p in zoo["probe_size"]], [p[key]["p90"] for p in zoo["probe_size"]],
                              color=colour, alpha=0.15)
            left.plot(m, mean, style, color=colour, ms=4, label=f"{label}, {suffix}")
        kl = np.array([p["kl"]["mean"] for p in zoo["probe_size"]])
        right.fill_between(m, [p["kl"]["p10"] for p in zoo["probe_size"]], [p["kl"]["p90"] for p in zoo["probe_size"]],
                           color=colour, alpha=0.15)
        right.plot(m, kl, "o-", color=colour, ms=4, label=label)
    left.set(xscale="log", xlabel="probe items m", ylabel="cosine with kappa on all items")
    right.set(xscale="log", yscale="log", xlabel="probe items m", ylabel="KL(N(0, kappa*) || N(0, kappa_m)) (nats)")
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_corpora(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(9, 4.2 * len(results)))
    for row, zoo in zip(axes, results):
        for ax, key, corpus in zip(row, ("kappa_a", "kappa_b"), (zoo["corpus_a"], zoo["corpus_b"])):
            image = ax.imshow(np.array(zoo[key]), vmin=0.0, vmax=1.0, cmap="viridis")
            ax.set_title(f"{zoo['zoo']} on {corpus}", fontsize=9)
            if len(zoo["labels"]) <= 8:
                short = [label.replace("all-MiniLM-L6-v2", "MiniLM-L6").replace("tf_efficientnet_", "")
                         for label in zoo["labels"]]
                ax.set_xticks(range(len(short)), short, rotation=60, ha="right", fontsize=7)
                ax.set_yticks(range(len(short)), short, fontsize=7)
            fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------ main


def analyse(zoo: ZooFeatures, settings: RunSettings, index: int) -> dict:
    """Probe-size curve on corpus A, and the across-corpora comparison with its references."""
    rng = np.random.default_rng([settings.seed, 5, index])
    started = time.perf_counter()
    kappa_a, curve = probe_size_curve(zoo.features_a, zoo.sizes, settings.repetitions, rng)
    kappa_b = kappa_of(zoo.features_b)
    result = {
        "zoo": zoo.zoo, "labels": zoo.labels, "corpus_a": zoo.corpus_a, "corpus_b": zoo.corpus_b,
        "m_a": int(zoo.features_a[0].shape[0]), "m_b": int(zoo.features_b[0].shape[0]),
        "kept_a": [int(np.isfinite(f).all(axis=1).sum()) for f in zoo.features_a],
        "kept_b": [int(np.isfinite(f).all(axis=1).sum()) for f in zoo.features_b],
        "kappa_a": kappa_a.round(6).tolist(), "kappa_b": kappa_b.round(6).tolist(),
        "probe_size": curve,
        "across_corpora": compare(kappa_a, kappa_b),
        "halves_of_a": split_halves(zoo.features_a, settings.repetitions, rng),
        "identity_baseline": compare(kappa_a, np.eye(len(zoo.labels))),
    }
    across = result["across_corpora"]
    log(f"kappa robustness: {zoo.zoo} analysed in {time.perf_counter() - started:.0f} s; across corpora "
        f"cos {across['cosine']:.4f}, off-diagonal {across['cosine_off_diagonal']:.4f}")
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = experiment_arguments(
        __doc__.splitlines()[0],
        "smaller corpora and fewer repetitions",
        "seed of the subsets and of the small zoo",
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    """The whole experiment; returns what results.json holds."""
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    started = time.perf_counter()
    folder = output_folder(args.out, args.quick, EXPERIMENT)
    settings = RunSettings.for_mode(args.quick, args.seed)
    work = args.work.resolve()
    index_root = prepare_real_zoo(work)  # as `hubindex zoo build` does it, with torch's own thread count
    with one_cpu_thread():
        zoos = collect_features(settings, work, index_root)
        features_seconds = time.perf_counter() - started
        analysed = [analyse(zoo, settings, k) for k, zoo in enumerate(zoos)]

    table = "\n\n".join([
        "(a) kappa on m random probe items against kappa* on all of them: mean (10th-90th percentile) over "
        f"{settings.repetitions} random subsets per m.\n\n" + probe_size_table(analysed),
        "(b) kappa on two corpora. References: two disjoint random halves of corpus A (mean of "
        f"{settings.repetitions} splits) and the identity matrix.\n\n" + corpora_table(analysed),
        pairs_table(analysed[0]),
        pairs_table(analysed[1]),
    ])
    (folder / "table.md").write_text(table + "\n")
    plot_probe_size(analysed, folder / "probe_size.png")
    plot_corpora(analysed, folder / "corpora.png")
    results = {
        "experiment": EXPERIMENT,
        "paper": "Huang, Qiu & Church 2021, Exploiting a Zoo of Checkpoints for Unseen Tasks, Figure 2",
        "settings": asdict(settings),
        "kl_jitter": KL_JITTER,
        "zoos": analysed,
        "features_seconds": round(features_seconds, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    write_json(folder / "results.json", results)
    print(f"## kappa robustness ({'quick' if args.quick else 'full'} mode, {results['wall_seconds']:.0f} s)\n")
    print(table)
    log(f"kappa robustness: wrote {folder} in {results['wall_seconds']:.0f} s")
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return exit_code_of("paper_kappa_robustness", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
