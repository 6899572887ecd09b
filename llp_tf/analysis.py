"""The paper's analysis of the learned embedding (Sec. 5, Fig. 2), for a finished (or running) workdir.

    curve = aggregation_curve("runs/my_run")          # (epochs, norm_mean, norm_mean_labelled)
    result = analyze("runs/my_run", "analysis/my_run", compare_workdir="runs/baseline")
    print(result["text"])

writes into the output directory
  aggregation_curve.png     aggregation/norm_mean (solid) and .._labelled (dashed) per epoch, read back
                            from WORKDIR/tensorboard (Fig. 2b); one colour per workdir
  class_norm_histogram.png  histogram of the per-class norms of the final bank, true labels (Fig. 2c)
  class_norm_scatter.png    with a compare workdir only: per-class norm of run 1 against run 2 (Fig. 2d)
  mds_classes.png           2-D metric MDS (1 - cosine) of a few classes' bank rows (Fig. 2a, e-g)
  summary.txt, summary.json per-class norms, multi-modality, pseudo-label accuracy, the chosen classes

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

The bank is read from the workdir's latest checkpoint through export.restore_model (the training data
must still be readable: it gives the true labels and class names). TensorFlow, matplotlib (the
figures) and scikit-learn (mds_embedding) are imported inside the functions that use them (the last
two: pip install ".[analysis]"); the NumPy functions need none of them. No flags here:
tools/analyze.py is the command line.
"""
from __future__ import annotations

import dataclasses
import glob
import inspect
import json
import math
import os
import textwrap

import numpy as np

AGGREGATION_TAGS = ("aggregation/norm_mean", "aggregation/norm_mean_labelled")
EPOCH_TAG = "epoch"
ITERATIONS = 20  # spherical 2-means Lloyd steps (it usually settles in fewer)
RESTARTS = 4
GAUSSIAN_R2 = 2 / math.pi  # best_split_r2 of a large Gaussian sample
SUPERVISED_NOTE = (
    "a supervised run trains on the labelled examples only: the bank rows of the unlabelled "
    "examples keep their initial entries (bank_init) and the embedding head is trained by no loss (weight "
    "decay only scales it), so its norms over all rows mostly measure the untrained network; its "
    "labelled-only norms are of the trained backbone through a fixed random head")
MULTIMODALITY_DEFINITION = (
    "multi-modality: spherical 2-means (seeded) on a random half of the class's bank rows gives an "
    "axis (the difference of its two centroids); the other half is projected on it, and the share R2 "
    "of the projections' variance explained by their best split into 2 groups is rescaled as "
    "(R2 - 2/pi) / (1 - 2/pi); the halves then swap roles and the two values are averaged. "
    "~0: one Gaussian-like mode (also a diffuse or an elongated class); ~1: two separated sub-clusters")


# ----------------------------------------------------------------------------------------------
# The aggregation trajectory from TensorBoard


def _event_file_order(path):
    parts = os.path.basename(path).split(".")  # events.out.tfevents.<unix time>.<host>.<pid>.<n>.v2
    stamp = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else 0
    return stamp, path


def read_scalars(logdir: str, tags) -> dict:
    """{tag: {step: value}} of the scalar summaries `tags` in logdir's event files (not its
    subdirectories), oldest file first, so a step written again after a resume keeps its last value."""
    import tensorflow as tf

    wanted = set(tags)
    found = {tag: {} for tag in tags}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*")), key=_event_file_order):
        try:
            for record in tf.data.TFRecordDataset(path):
                event = tf.compat.v1.Event.FromString(record.numpy())
                for value in event.summary.value:
                    if value.tag not in wanted:
                        continue
                    if value.HasField("tensor"):
                        number = float(tf.make_ndarray(value.tensor))
                    else:
                        number = float(value.simple_value)
                    found[value.tag][int(event.step)] = number
        except tf.errors.DataLossError:  # the last record of a killed writer may be cut short
            continue
    return found


def aggregation_curve(workdir: str):
    """(epochs int [E], norm_mean [E], norm_mean_labelled [E]) from workdir/tensorboard: the
    aggregation scalars of each completed epoch (steps mapped to epochs with the `epoch` scalar written
    at the same step), in epoch order; NaN where the labelled-only value is missing."""
    logdir = os.path.join(workdir, "tensorboard")
    if not os.path.isdir(logdir):
        raise FileNotFoundError(f"{logdir} not found: is {workdir} the --workdir of an llp-train run?")
    scalars = read_scalars(logdir, (EPOCH_TAG,) + AGGREGATION_TAGS)
    epoch_of_step = {step: int(round(value)) for step, value in scalars[EPOCH_TAG].items()}
    by_epoch = {}
    for step in sorted(scalars[AGGREGATION_TAGS[0]]):
        if step not in epoch_of_step:
            continue
        by_epoch[epoch_of_step[step]] = (scalars[AGGREGATION_TAGS[0]][step],
                                         scalars[AGGREGATION_TAGS[1]].get(step, math.nan))
    if not by_epoch:
        raise ValueError(f"no {AGGREGATION_TAGS[0]} scalars with an epoch in {logdir}: has the run "
                         "finished an epoch?")
    epochs = np.array(sorted(by_epoch), np.int64)
    values = np.array([by_epoch[e] for e in epochs], np.float64)
    return epochs, values[:, 0], values[:, 1]


# ----------------------------------------------------------------------------------------------
# Per-class statistics of bank rows (pure NumPy)


def unit_rows(rows) -> np.ndarray:
    rows = np.asarray(rows, np.float64)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


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
    from sklearn.manifold import MDS

    rows = np.asarray(rows)
    if len(rows) < 2:
        raise ValueError(f"MDS needs at least 2 rows, got {len(rows)}")
    options = dict(n_components=2, n_init=4, random_state=seed)
    if "metric_mds" in inspect.signature(MDS).parameters:  # scikit-learn >= 1.8 renamed the options
        options.update(metric="precomputed", metric_mds=True, init="random")
    else:
        options.update(dissimilarity="precomputed", metric=True)
    return np.asarray(MDS(**options).fit_transform(cosine_distances(rows)))


# ----------------------------------------------------------------------------------------------
# A run's final state


@dataclasses.dataclass
class RunState:
    """What the analysis reads from a workdir: its config, split and final memory bank."""
    workdir: str
    method: str
    dataset: str
    backbone: str
    instance_epochs: int
    class_names: list
    rows: np.ndarray  # int64 [N] source rows of the bank
    true_labels: np.ndarray  # int64 [N]
    is_labelled: np.ndarray  # bool [N]
    current_labels: np.ndarray  # int64 [N] the state's labels (pseudo-labels for unlabelled rows)
    bank: np.ndarray  # float32 [N, D]
    epochs: int  # completed epochs of the restored checkpoint
    checkpoint: str

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def name(self):
        return f"{os.path.basename(os.path.normpath(self.workdir))} ({self.method}, {self.backbone})"


def load_run_state(workdir: str, checkpoint: str | None = None) -> RunState:
    """The final bank and split of the run in `workdir` (its latest checkpoint, or `checkpoint`)."""
    from llp_tf import export

    workdir = str(workdir)
    checkpoint = export.checkpoint_path(workdir, checkpoint)  # resolved (and read through) once
    model, run = export.restore_model(workdir, checkpoint)
    state = model.state
    config = run.config
    return RunState(
        workdir=workdir, method=config.method, dataset=config.dataset, backbone=config.backbone,
        instance_epochs=config.instance_epochs if config.method == "llp" else 0,
        class_names=[str(name) for name in run.source.class_names],
        rows=np.asarray(run.selection.rows), true_labels=np.asarray(run.selection.labels, np.int64),
        is_labelled=np.asarray(run.selection.is_labelled, bool),
        current_labels=state.labels.numpy().astype(np.int64), bank=state.bank.numpy(),
        epochs=int(state.completed_epochs.numpy()),
        checkpoint=checkpoint)


def check_comparable(first: RunState, second: RunState):
    """Refuses a comparison of runs on different training examples or classes (ValueError)."""
    hint = "the per-class comparison needs the same dataset and training split"
    if len(first.rows) != len(second.rows):
        raise ValueError(f"{second.workdir} has {len(second.rows)} training examples and "
                         f"{first.workdir} has {len(first.rows)}: {hint}")
    if first.num_classes != second.num_classes:
        raise ValueError(f"{second.workdir} has {second.num_classes} classes and {first.workdir} "
                         f"has {first.num_classes}: {hint}")
    if not (np.array_equal(first.rows, second.rows)
            and np.array_equal(first.true_labels, second.true_labels)):
        raise ValueError(f"{second.workdir} and {first.workdir} hold other training examples or "
                         f"labels (another dataset, --kept_fraction or --split_seed): {hint}")


def check_split_files(workdir, compare_workdir):
    """The same check as check_comparable from the workdirs' split.npz alone, before any restore."""
    splits = []
    for directory in (workdir, compare_workdir):
        path = os.path.join(directory, "split.npz")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: is {directory} the --workdir of an llp-train run?")
        with np.load(path) as split:
            splits.append(np.asarray(split["rows"]))
    if len(splits[0]) != len(splits[1]):
        raise ValueError(f"{compare_workdir} has {len(splits[1])} training examples and {workdir} has "
                         f"{len(splits[0])}: the per-class comparison needs the same dataset and "
                         "training split")


def check_classes(classes, num_classes):
    classes = [int(c) for c in classes]
    if not classes:
        raise ValueError("no class given")
    for c in classes:
        if not 0 <= c < num_classes:
            raise ValueError(f"class index {c} is out of range: the run has {num_classes} classes "
                             f"(0..{num_classes - 1})")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes {classes} repeat an index")
    return classes


# ----------------------------------------------------------------------------------------------
# Figures (matplotlib's object API with the Agg canvas: the global pyplot backend is left alone)


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=150)
    FigureCanvasAgg(figure)
    return figure


def _colours(count):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def plot_aggregation_curve(curves, path, switch_epochs=()):
    """curves: [(label, epochs, norm_mean, norm_mean_labelled)]; switch_epochs: [(label, epoch)]
    instance-recognition -> LLP switches drawn as dotted vertical lines."""
    figure = _figure(7, 4.5)
    axes = figure.subplots()
    colours = _colours(len(curves))
    for colour, (label, epochs, norm_mean, labelled) in zip(colours, curves):
        axes.plot(epochs, norm_mean, "-o", color=colour, markersize=3, label=f"{label}: all rows")
        if np.isfinite(labelled).any():
            axes.plot(epochs, labelled, "--", color=colour, label=f"{label}: labelled rows")
    for (label, epoch), colour in zip(switch_epochs, colours):
        if epoch:
            axes.axvline(epoch, color=colour, linestyle=":", linewidth=1)
            axes.annotate("instance recognition -> LLP", (epoch, axes.get_ylim()[0]), rotation=90, fontsize=7,
                          color=colour, xytext=(3, 3), textcoords="offset points")
    axes.set_xlabel("epoch")
    axes.set_ylabel("mean over classes of |class mean embedding|")
    axes.set_title("Aggregation along training (cf. paper Fig. 2b)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_norm_histogram(norm_sets, path):
    """norm_sets: [(label, per-class norms [Q])] overlaid on shared bins."""
    figure = _figure(7, 4.5)
    axes = figure.subplots()
    finite = np.concatenate([np.asarray(n)[np.isfinite(n)] for _, n in norm_sets])
    count = max(len(np.asarray(n)) for _, n in norm_sets)
    low, high = float(finite.min()), float(finite.max())
    if high - low < 1e-3:
        low, high = low - 0.01, high + 0.01
    bins = np.linspace(low, high, int(np.clip(np.sqrt(count) * 2, 5, 40)) + 1)
    for colour, (label, norms) in zip(_colours(len(norm_sets)), norm_sets):
        norms = np.asarray(norms)[np.isfinite(norms)]
        axes.hist(norms, bins=bins, alpha=0.55, color=colour, edgecolor="black", linewidth=0.5,
                  label=f"{label}: mean {norms.mean():.3f}")
        axes.axvline(norms.mean(), color=colour, linestyle="--")
    from matplotlib.ticker import MaxNLocator

    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("|class mean embedding| (per class, true labels of every bank row)")
    axes.set_ylabel("classes")
    axes.set_title("Per-class aggregation of the final bank (cf. paper Fig. 2c)")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_norm_scatter(first_norms, second_norms, class_names, first_label, second_label, path):
    """One point per class: its norm in the first run (x) and the second (y), with the diagonal."""
    figure = _figure(5.5, 5.5)
    axes = figure.subplots()
    x, y = np.asarray(first_norms), np.asarray(second_norms)
    keep = np.isfinite(x) & np.isfinite(y)
    axes.scatter(x[keep], y[keep], s=25, color="tab:blue", edgecolor="black", linewidth=0.5, zorder=3)
    values = np.concatenate([x[keep], y[keep]])
    low, high = float(values.min()), float(values.max())
    margin = max(0.05 * (high - low), 0.01)
    low, high = max(low - margin, 0.0), min(high + margin, 1.0)
    axes.plot([low, high], [low, high], color="gray", linestyle="--", linewidth=1, zorder=1)
    axes.set_xlim(low, high)
    axes.set_ylim(low, high)
    axes.set_aspect("equal")
    if len(class_names) <= 20:
        for c in np.flatnonzero(keep):
            axes.annotate(class_names[c], (x[c], y[c]), fontsize=7, xytext=(3, 3),
                          textcoords="offset points")
    above, below = int(np.sum(y[keep] > x[keep])), int(np.sum(y[keep] < x[keep]))
    axes.set_xlabel(f"{first_label}: per-class norm")
    axes.set_ylabel(f"{second_label}: per-class norm")
    axes.set_title(f"Per-class aggregation (cf. Fig. 2d), {int(keep.sum())} classes:\n"
                   f"y > x in {above}, y < x in {below}", fontsize=9)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_mds(panels, title, path):
    """panels: [dict(title, points [n, 2], groups int [n], group_names, labelled bool [n])]; each
    panel colours its points by group; labelled rows are larger with a black edge."""
    columns = min(len(panels), 2)
    rows = math.ceil(len(panels) / columns)
    figure = _figure(5.2 * columns, 4.8 * rows)
    grid = np.atleast_1d(figure.subplots(rows, columns, squeeze=False).ravel())
    for axes, panel in zip(grid, panels):
        points, groups, labelled = panel["points"], panel["groups"], panel["labelled"]
        colours = panel.get("colours") or _colours(len(panel["group_names"]))
        for g, (name, colour) in enumerate(zip(panel["group_names"], colours)):
            plain, known = (groups == g) & ~labelled, (groups == g) & labelled
            axes.scatter(points[plain, 0], points[plain, 1], s=7, color=colour, alpha=0.6,
                         linewidth=0, label=f"{name}: {int(np.sum(groups == g))} shown")
            axes.scatter(points[known, 0], points[known, 1], s=45, color=colour, edgecolor="black",
                         linewidth=1.0, zorder=3)
        axes.set_title(panel["title"], fontsize=9)
        axes.set_aspect("equal", adjustable="datalim")
        axes.set_xticks([])
        axes.set_yticks([])
        axes.legend(fontsize=7, markerscale=2, loc="best")
    for axes in grid[len(panels):]:
        axes.set_visible(False)
    figure.suptitle(title + "\nlarge points with a black edge: labelled rows", fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    return path


# ----------------------------------------------------------------------------------------------
# The whole analysis


def _nan_to_none(value):
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, np.ndarray):
        return _nan_to_none(value.tolist())
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _propagated(state: RunState) -> bool:
    return state.method == "llp" and bool((state.current_labels[~state.is_labelled] >= 0).all())


def run_summary(state: RunState, seed: int = 0) -> dict:
    """Per-class statistics of one run's final bank, its TensorBoard curve and its chosen classes."""
    from llp_tf import aggregation  # imports TensorFlow

    q = state.num_classes
    norms = aggregation.class_mean_norms(state.bank, state.true_labels, q)
    norms_labelled = aggregation.class_mean_norms(
        state.bank, np.where(state.is_labelled, state.true_labels, -1), q)
    modality = class_multimodality(state.bank, state.true_labels, q, seed)
    epochs, curve, curve_labelled = aggregation_curve(state.workdir)
    summary = {
        "workdir": state.workdir, "checkpoint": state.checkpoint, "method": state.method,
        "dataset": state.dataset, "backbone": state.backbone, "epochs": state.epochs,
        "instance_epochs": state.instance_epochs,
        "num_examples": int(len(state.rows)), "num_labelled": int(state.is_labelled.sum()),
        "class_names": state.class_names,
        "class_counts": np.bincount(state.true_labels, minlength=q).tolist(),
        "norm_mean": float(np.nanmean(norms)), "norm_mean_labelled": float(np.nanmean(norms_labelled)),
        "class_norms": norms, "class_norms_labelled": norms_labelled,
        "class_multimodality": modality,
        "aggregation_curve": {"epochs": epochs.tolist(), "norm_mean": curve,
                              "norm_mean_labelled": curve_labelled},
        "pseudo_label_accuracy": None, "class_pseudo_label_accuracy": None,
    }
    if _propagated(state):
        unlabelled = ~state.is_labelled
        summary["pseudo_label_accuracy"] = float(
            np.mean(state.current_labels[unlabelled] == state.true_labels[unlabelled]))
        summary["class_pseudo_label_accuracy"] = per_class_pseudo_label_accuracy(
            state.current_labels, state.true_labels, state.is_labelled, q)
    order = np.argsort(-np.where(np.isfinite(norms), norms, -np.inf), kind="stable")
    finite = [int(c) for c in order if np.isfinite(norms[c])]
    by_modality = [int(c) for c in np.argsort(-np.where(np.isfinite(modality), modality, -np.inf),
                                              kind="stable") if np.isfinite(modality[c])]
    summary["ranking"] = {"easiest": finite[:3], "hardest": finite[::-1][:3],
                          "multimodal": by_modality[:3]}
    summary["chosen"] = choose_classes(norms, modality)
    return summary


def _fmt(value, digits=3):
    return "-" if value is None or not math.isfinite(float(value)) else f"{float(value):.{digits}f}"


def summary_text(summary: dict) -> str:
    names = summary["class_names"]
    label = lambda c: f"{c} ({names[c]})" if names[c] != str(c) else str(c)  # noqa: E731
    lines = [f"llp-analyze: {summary['workdir']}",
             f"  {summary['method']}, {summary['backbone']}, {summary['dataset']}: {summary['epochs']} "
             f"epochs, {summary['num_examples']} training examples, {summary['num_labelled']} labelled, "
             f"{len(names)} classes",
             f"  checkpoint {summary['checkpoint']}",
             f"aggregation norm_mean of the final bank (true labels of every row): "
             f"{_fmt(summary['norm_mean'])}; labelled rows only: {_fmt(summary['norm_mean_labelled'])}"]
    curve = summary["aggregation_curve"]
    lines.append("  per epoch (TensorBoard aggregation/norm_mean): " + ", ".join(
        f"{e}: {_fmt(v)}" for e, v in zip(curve["epochs"], curve["norm_mean"])))
    if summary["pseudo_label_accuracy"] is not None:
        accuracy = _fmt(summary["pseudo_label_accuracy"])
        lines.append(f"pseudo-label accuracy on the unlabelled rows: {accuracy}")
    if summary["method"] == "supervised":
        lines.append(textwrap.fill("note: " + SUPERVISED_NOTE, 100, initial_indent="  ",
                                   subsequent_indent="  "))
    compare = summary.get("compare")
    header = f"{'class':>24} {'rows':>6} {'norm':>6} {'labelled':>8} {'multimodal':>10} {'pseudo-acc':>10}"
    if compare:
        header += f" {'compare norm':>12} {'labelled':>8}"
    lines += ["per class (norm: |mean bank row| with true labels; labelled: of its labelled rows only):",
              header]
    for c, name in enumerate(names):
        pseudo = summary["class_pseudo_label_accuracy"]
        line = (f"{(str(c) + ' ' + name if name != str(c) else name)[:24]:>24} "
                f"{summary['class_counts'][c]:>6} {_fmt(summary['class_norms'][c]):>6} "
                f"{_fmt(summary['class_norms_labelled'][c]):>8} "
                f"{_fmt(summary['class_multimodality'][c]):>10} "
                f"{_fmt(pseudo[c] if pseudo is not None else None):>10}")
        if compare:
            line += f" {_fmt(compare['class_norms'][c]):>12} {_fmt(compare['class_norms_labelled'][c]):>8}"
        lines.append(line)
    ranking = summary["ranking"]
    norms, modality = summary["class_norms"], summary["class_multimodality"]
    lines += [
        "easiest (highest norm): " + ", ".join(f"{label(c)} {_fmt(norms[c])}" for c in ranking["easiest"]),
        "hardest (lowest norm): " + ", ".join(f"{label(c)} {_fmt(norms[c])}" for c in ranking["hardest"]),
        "most multi-modal: " + ", ".join(f"{label(c)} {_fmt(modality[c])}" for c in ranking["multimodal"]),
        textwrap.fill(MULTIMODALITY_DEFINITION, 100, initial_indent="  ", subsequent_indent="  "),
        "MDS classes: " + ", ".join(f"{label(c)} [{role}]" for c, role in
                                    zip(summary["mds_classes"], summary["mds_roles"])),
    ]
    if compare:
        norms2 = np.asarray(compare["class_norms"], np.float64)
        mine = np.asarray(summary["class_norms"], np.float64)
        keep = np.isfinite(mine) & np.isfinite(norms2)
        lines += [f"compare: {compare['workdir']} ({compare['method']}, {compare['backbone']}, "
                  f"{compare['epochs']} epochs): norm_mean {_fmt(compare['norm_mean'])}, labelled rows "
                  f"only {_fmt(compare['norm_mean_labelled'])}",
                  f"  this run's class norm is higher in {int(np.sum(mine[keep] > norms2[keep]))} and lower "
                  f"in {int(np.sum(mine[keep] < norms2[keep]))} of {int(keep.sum())} classes"]
        if not compare["same_labelled_split"]:
            lines.append("  note: the two runs label different examples (another --labelled_fraction "
                         "or split)")
        if compare["method"] == "supervised":
            lines.append(textwrap.fill("note on the compare run: " + SUPERVISED_NOTE, 100,
                                       initial_indent="  ", subsequent_indent="  "))
    lines.append("figures: " + ", ".join(summary["figures"].values()))
    return "\n".join(lines)


def analyze(workdir, output_dir, compare_workdir=None, classes=None, max_points_per_class: int = 300,
            seed: int = 0) -> dict:
    """Writes the figures and summary.txt / summary.json of the run in `workdir` into output_dir.
    Returns {"figures": {name: path}, "summary_txt", "summary_json": paths, "summary": dict,
    "text": str}. classes: the class indices of the MDS figure (default: the easiest, the hardest and
    the most multi-modal class); compare_workdir: a second run on the same training examples."""
    if max_points_per_class < 2:
        raise ValueError(f"max_points_per_class must be at least 2, got {max_points_per_class}")
    if compare_workdir is not None:
        check_split_files(workdir, compare_workdir)  # fails fast, before the slow restores
    state = load_run_state(workdir)
    if classes is not None:
        classes = check_classes(classes, state.num_classes)
    other = None
    if compare_workdir is not None:
        other = load_run_state(compare_workdir)
        check_comparable(state, other)
    summary = run_summary(state, seed)
    os.makedirs(output_dir, exist_ok=True)
    figures = {}
    path = lambda name: os.path.join(output_dir, name + ".png")  # noqa: E731

    other_summary = run_summary(other, seed) if other is not None else None
    runs = [(state, summary)] + ([(other, other_summary)] if other is not None else [])
    curves = [(s.name, np.array(m["aggregation_curve"]["epochs"]),
               np.array(m["aggregation_curve"]["norm_mean"], np.float64),
               np.array(m["aggregation_curve"]["norm_mean_labelled"], np.float64)) for s, m in runs]
    figures["aggregation_curve"] = plot_aggregation_curve(
        curves, path("aggregation_curve"), [(s.name, s.instance_epochs) for s, _ in runs])
    figures["class_norm_histogram"] = plot_norm_histogram(
        [(s.name, m["class_norms"]) for s, m in runs], path("class_norm_histogram"))
    if other is not None:
        figures["class_norm_scatter"] = plot_norm_scatter(
            summary["class_norms"], other_summary["class_norms"], state.class_names, state.name,
            other.name, path("class_norm_scatter"))
        summary["compare"] = {key: other_summary[key] for key in (
            "workdir", "checkpoint", "method", "backbone", "epochs", "norm_mean", "norm_mean_labelled",
            "class_norms", "class_norms_labelled", "class_multimodality", "aggregation_curve",
            "pseudo_label_accuracy")}
        summary["compare"]["same_labelled_split"] = bool(np.array_equal(state.is_labelled,
                                                                        other.is_labelled))

    chosen = summary["chosen"]
    if classes is None:
        roles = {}
        for role in ("easiest", "hardest", "multimodal"):
            roles.setdefault(chosen[role], []).append(role)
        classes = list(roles)
        role_names = ["/".join(roles[c]) for c in classes]
    else:
        role_names = ["chosen" for _ in classes]
    summary["mds_classes"], summary["mds_roles"] = classes, role_names
    figures["mds_classes"] = _mds_figure(state, summary, classes, role_names, max_points_per_class,
                                         seed, path("mds_classes"))
    summary["figures"] = figures

    text = summary_text(summary)
    summary["multimodality_definition"] = MULTIMODALITY_DEFINITION
    summary_txt = os.path.join(output_dir, "summary.txt")
    summary_json = os.path.join(output_dir, "summary.json")
    with open(summary_txt, "w") as f:
        f.write(text + "\n")
    with open(summary_json, "w") as f:
        json.dump(_nan_to_none(summary), f, indent=2)
    return {"figures": figures, "summary_txt": summary_txt, "summary_json": summary_json,
            "summary": summary, "text": text}


def _mds_figure(state: RunState, summary, classes, role_names, max_points_per_class, seed, path):
    """Panel 1: every chosen class together, coloured by true class (Fig. 2a); then one panel per
    class, coloured by its 2-means sub-cluster (Fig. 2e-g), each from its own MDS."""
    names = state.class_names
    picked = sample_class_rows(state.true_labels, classes, max_points_per_class, seed)
    position = {c: i for i, c in enumerate(classes)}
    groups = np.array([position[int(c)] for c in state.true_labels[picked]], np.int64)
    panels = [{"title": "chosen classes together, coloured by true class",
               "points": mds_embedding(state.bank[picked], seed), "groups": groups,
               "group_names": [f"{names[c]} [{role}]" for c, role in zip(classes, role_names)],
               "labelled": state.is_labelled[picked]}]
    if len(classes) > 1:
        for c, role in zip(classes, role_names):
            rows = picked[state.true_labels[picked] == c]
            if len(rows) < 2:
                continue
            members = state.bank[state.true_labels == c]
            assignment, centres = (two_means(members, seed) if len(members) >= 2
                                   else (np.zeros(len(members), np.int64), None))
            sub = (np.argmax(unit_rows(state.bank[rows]) @ centres.T, axis=1) if centres is not None
                   else np.zeros(len(rows), np.int64))
            share = np.bincount(assignment, minlength=2) / max(len(assignment), 1)
            panels.append({
                "title": f"{names[c]} [{role}]: norm {_fmt(summary['class_norms'][c])}, "
                         f"multimodality {_fmt(summary['class_multimodality'][c])}",
                "points": mds_embedding(state.bank[rows], seed), "groups": sub,
                "group_names": [f"2-means cluster {k + 1}, {share[k]:.0%} of the class" for k in (0, 1)],
                "colours": ["tab:orange", "tab:purple"], "labelled": state.is_labelled[rows]})
    title = ("MDS (1 - cosine) of bank rows, at most %d per class: " % max_points_per_class
             + ", ".join(f"{names[c]} [{role}]" for c, role in zip(classes, role_names)))
    return plot_mds(panels, title, path)
