"""Per-class statistics of memory-bank rows for llp-analyze (pure NumPy; scikit-learn for the MDS).

Multi-modality of a class (the paper picks its "Labrador" by eye; this is a reproducible stand-in):
spherical 2-means (seeded k-means++ start, best of RESTARTS, at most ITERATIONS steps) on a random half
of the class's bank rows gives an axis, the difference of its two centroids; the other half's rows are
projected on that axis, and R2, the share of the projections' variance explained by their best split
into two groups, is rescaled as (R2 - 2/pi) / (1 - 2/pi), 2/pi being R2 of a Gaussian; the halves
then swap roles and the two values are averaged. About 0: one Gaussian-like mode, a diffuse cloud or
a class elongated along one direction; 0.38: a uniform segment; about 1: two separated sub-clusters.
Projecting on one axis keeps a merely elongated class from scoring high (a silhouette of the 2-means
split does not: it rates an elongated Gaussian above two true clusters), and judging the axis on
held-out rows keeps 2-means from scoring a split of pure noise (in 128-D, on the rows it is fitted
to, it finds a sizeable one). A ratio of within-cluster to within-class cosine would grow without
bound for the most diffuse class.

scikit-learn is imported inside mds_embedding only: it is an optional dependency (the `analysis` extra).
"""
import inspect
import math

import numpy as np

from llp_tf.features import unit_rows

ITERATIONS = 20  # spherical 2-means Lloyd steps (it usually settles in fewer)
RESTARTS = 4
GAUSSIAN_R2 = 2 / math.pi  # best_split_r2 of a large Gaussian sample
MULTIMODALITY_DEFINITION = (
    "multi-modality: spherical 2-means (seeded) on a random half of the class's bank rows gives an "
    "axis (the difference of its two centroids); the other half is projected on it, and the share R2 "
    "of the projections' variance explained by their best split into 2 groups is rescaled as "
    "(R2 - 2/pi) / (1 - 2/pi); the halves then swap roles and the two values are averaged. "
    "~0: one Gaussian-like mode (also a diffuse or an elongated class); ~1: two separated sub-clusters")


def two_means(rows, seed: int = 0, iterations: int = ITERATIONS, restarts: int = RESTARTS):
    """Spherical 2-means: (assignment int [n] in {0, 1}, unit centroids [2, D]). Seeded k-means++
    start (second centre drawn with probability proportional to 1 - cosine to the first); of the
    restarts, the split with the highest total cosine to its own centroid is kept."""
    x = unit_rows(rows)
    n = len(x)
    if n < 2:
        raise ValueError(f"2-means needs at least 2 rows, got {n}")
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(restarts):
        first = int(rng.integers(n))
        distance = np.clip(1.0 - x @ x[first], 0.0, None)
        if distance.sum() <= 0:  # every row is the same direction: nothing to split
            return np.zeros(n, np.int64), np.stack([x[first], x[first]])
        second = int(rng.choice(n, p=distance / distance.sum()))
        centres = x[[first, second]]
        for _ in range(iterations):
            assignment = np.argmax(x @ centres.T, axis=1)
            sums = np.stack([x[assignment == k].sum(axis=0) for k in (0, 1)])
            if (np.bincount(assignment, minlength=2) == 0).any():
                break
            new = unit_rows(sums)
            if np.allclose(new, centres, atol=1e-10):
                break
            centres = new
        assignment = np.argmax(x @ centres.T, axis=1)
        objective = float(np.sum(np.max(x @ centres.T, axis=1)))
        if best is None or objective > best[0]:
            best = (objective, assignment, centres)
    return best[1], best[2]


def best_split_r2(values) -> float:
    """Share of the variance of 1-D `values` explained by their best split into two groups at a
    threshold (the exact 1-D 2-means optimum): about 2/pi for a large Gaussian sample, -> 1 for two
    point-like modes."""
    values = np.sort(np.asarray(values, np.float64))
    n = len(values)
    total = float(np.sum((values - values.mean()) ** 2))
    if n < 2 or total <= 0:
        return GAUSSIAN_R2
    sums = np.cumsum(values)
    left = np.arange(1, n)
    means_left, means_right = sums[:-1] / left, (sums[-1] - sums[:-1]) / (n - left)
    between = left * (n - left) / n * (means_left - means_right) ** 2
    return float(between.max() / total)


def multimodality(bank_rows, seed: int = 0) -> float:
    """How clearly one class's bank rows form two modes (see the module docstring): about 0 for a
    single Gaussian-like mode, a diffuse cloud or an elongated unimodal class, about 1 for two
    separated sub-clusters (0.38 for a uniform segment). NaN for fewer than 8 rows."""
    x = unit_rows(bank_rows)
    n = len(x)
    if n < 8:
        return math.nan
    order = np.random.default_rng(seed).permutation(n)
    halves = (order[: n // 2], order[n // 2:])
    scores = []
    for fit, held_out in (halves, halves[::-1]):
        _, centres = two_means(x[fit], seed)
        axis = centres[0] - centres[1]
        length = np.linalg.norm(axis)
        r2 = best_split_r2(x[held_out] @ (axis / length)) if length > 1e-12 else GAUSSIAN_R2
        scores.append((r2 - GAUSSIAN_R2) / (1.0 - GAUSSIAN_R2))
    return float(np.mean(scores))


def class_multimodality(bank, labels, num_classes, seed: int = 0) -> np.ndarray:
    """[Q] multimodality of each class's rows (NaN for a class with fewer than 4)."""
    bank, labels = np.asarray(bank), np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(num_classes + 1))
    return np.array([multimodality(bank[order[bounds[c]:bounds[c + 1]]], seed)
                     for c in range(num_classes)])


def per_class_pseudo_label_accuracy(current_labels, true_labels, is_labelled, num_classes):
    """[Q] share of each true class's unlabelled rows whose pseudo-label is that class (NaN: none)."""
    current, true = np.asarray(current_labels), np.asarray(true_labels)
    unlabelled = ~np.asarray(is_labelled, bool)
    accuracy = np.full(num_classes, math.nan)
    for c in range(num_classes):
        rows = unlabelled & (true == c)
        if rows.any():
            accuracy[c] = float(np.mean(current[rows] == c))
    return accuracy


def sample_class_rows(labels, classes, max_points_per_class: int, seed: int = 0) -> np.ndarray:
    """Row indices: at most max_points_per_class rows of each class in `classes`, drawn at random
    without replacement (seeded), each class's rows in ascending order, classes in the given order."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picked = []
    for c in classes:
        rows = np.flatnonzero(labels == c)
        if len(rows) > max_points_per_class:
            rows = np.sort(rng.choice(rows, max_points_per_class, replace=False))
        picked.append(rows)
    return np.concatenate(picked) if picked else np.zeros([0], np.int64)


def choose_classes(norms, multimodality_scores) -> dict:
    """{"easiest": highest norm, "hardest": lowest norm, "multimodal": highest multimodality among the
    other classes (among all when fewer than 3)}; NaN scores are never chosen."""
    norms = np.asarray(norms, np.float64)
    scores = np.asarray(multimodality_scores, np.float64)
    if np.isnan(norms).all():
        raise ValueError("no class has a bank row")
    easiest, hardest = int(np.nanargmax(norms)), int(np.nanargmin(norms))
    candidates = scores.copy()
    if np.isfinite(candidates).sum() > 2:
        candidates[[easiest, hardest]] = np.nan
    multimodal = int(np.nanargmax(candidates)) if np.isfinite(candidates).any() else easiest
    return {"easiest": easiest, "hardest": hardest, "multimodal": multimodal}


def cosine_distances(rows) -> np.ndarray:
    """[n, n] 1 - cosine similarity, symmetric, zero diagonal, in [0, 2]."""
    x = unit_rows(rows)
    distances = np.clip(1.0 - x @ x.T, 0.0, 2.0)
    distances = (distances + distances.T) / 2
    np.fill_diagonal(distances, 0.0)
    return distances


def mds_embedding(rows, seed: int = 0) -> np.ndarray:
    """[n, 2] metric MDS (SMACOF, 4 random starts, seeded) of 1 - cosine similarity between rows."""
    from sklearn.manifold import MDS  # optional dependency (the analysis extra)

    rows = np.asarray(rows)
    if len(rows) < 2:
        raise ValueError(f"MDS needs at least 2 rows, got {len(rows)}")
    options = dict(n_components=2, n_init=4, random_state=seed)
    if "metric_mds" in inspect.signature(MDS).parameters:  # scikit-learn >= 1.8 renamed the options
        options.update(metric="precomputed", metric_mds=True, init="random")
    else:
        options.update(dissimilarity="precomputed", metric=True)
    return np.asarray(MDS(**options).fit_transform(cosine_distances(rows)))
