"""LLP's propagation against global label-propagation methods on fixed features: the method registry
and the paper's Table 5 protocol (small subsamples of C classes x I images, a few labelled per class).

    methods = ["llp", "knn", "diffusion"]
    result = compare_on_subsamples(features, labels, methods, Settings(...), num_classes=50,
                                   images_per_class=50, labelled_per_class=5, subsamples=10, seed=0)
    print(subsample_table(result))

A method maps (unit features float32 [N, D], given labels int [N] with -1 where unlabelled, number of
classes, Settings) to predicted labels [N]. llp (density-weighted votes, Eq. 5-8) and knn (weighted
kNN) are llp_tf/propagation.py; label_spreading_{knn,rbf} (Zhou et al. 2004) and
label_propagation_{knn,rbf} (Zhu & Ghahramani 2002) are scikit-learn's with its defaults apart from
Settings; diffusion (Iscen et al. 2019) is llp_tf/diffusion.py. The time and memory sweep as N grows is
llp_tf/propagation_sweep.py; the command line is tools/compare_propagation.py (llp-compare-propagation).

`Method.libraries` names the third-party libraries a method runs on: a sweep process
(propagation_sweep) loads and starts exactly those before it is measured, so start-up is never timed
or counted, and a TensorFlow method's process never loads scikit-learn (imported inside the method
that uses it: it is optional, the `analysis` extra). Every process imports TensorFlow with this
module, but starts its thread pools and XLA only for a method that runs on it.
"""
import dataclasses
import importlib
import time
import warnings

import numpy as np

from llp_tf import diffusion, propagation


@dataclasses.dataclass(frozen=True)
class Settings:
    """The methods' parameters (llp-compare-propagation's flags of the same names)."""
    k: int
    t: int
    tau: float
    sklearn_neighbors: int
    rbf_gamma: float
    diffusion_k: int
    diffusion_alpha: float
    diffusion_gamma: float


def _local_propagation(use_density):
    def run(features, given, num_classes, settings):
        return propagation.propagate(features, given >= 0, given, num_classes, k=settings.k, t=settings.t,
                                     tau=settings.tau, use_density=use_density).labels
    return run


def _scikit_learn(model_name, kernel):
    def run(features, given, num_classes, settings):
        from sklearn import exceptions, semi_supervised  # optional dependency (the analysis extra)
        model = getattr(semi_supervised, model_name)(
            kernel=kernel, gamma=settings.rbf_gamma, n_neighbors=settings.sklearn_neighbors)
        with warnings.catch_warnings():  # the iteration caps are part of the methods as shipped
            warnings.simplefilter("ignore", exceptions.ConvergenceWarning)
            return model.fit(features, given).transduction_
    return run


def _diffusion(features, given, num_classes, settings):
    predicted, _ = diffusion.diffuse(features, given >= 0, given, num_classes, k=settings.diffusion_k,
                                     alpha=settings.diffusion_alpha, gamma=settings.diffusion_gamma)
    return predicted


@dataclasses.dataclass(frozen=True)
class Method:
    run: object
    libraries: tuple  # third-party, loaded before a sweep measurement starts (not measured)


_TENSORFLOW = ("tensorflow",)
METHODS = {
    "llp": Method(_local_propagation(True), _TENSORFLOW),
    "knn": Method(_local_propagation(False), _TENSORFLOW),
    "label_spreading_knn": Method(_scikit_learn("LabelSpreading", "knn"), ("sklearn.semi_supervised",)),
    "label_spreading_rbf": Method(_scikit_learn("LabelSpreading", "rbf"), ("sklearn.semi_supervised",)),
    "label_propagation_knn": Method(_scikit_learn("LabelPropagation", "knn"), ("sklearn.semi_supervised",)),
    "label_propagation_rbf": Method(_scikit_learn("LabelPropagation", "rbf"), ("sklearn.semi_supervised",)),
    "diffusion": Method(_diffusion, _TENSORFLOW + ("scipy.sparse.linalg",)),
}


def load_libraries(method):
    """Imports what `method` runs on, and starts TensorFlow's thread pools and XLA, so that none of
    them is timed or counted against the memory cap."""
    for library in method.libraries:
        importlib.import_module(library)
    if "tensorflow" in method.libraries:
        import tensorflow as tf
        tf.math.top_k(tf.matmul(tf.ones([4, 4]), tf.ones([4, 4])), k=2)
        # The propagation's XLA functions: XLA's CPU runtime reserves a large block of address space
        # when it starts (BUILD.md), which is start-up, not the method's memory.
        tf.function(lambda x: x + 1, jit_compile=True)(tf.ones([2]))


def accuracy_on_unlabelled(predicted, truth, is_labelled):
    return float(np.mean(np.asarray(predicted)[~is_labelled] == truth[~is_labelled]))


def check_methods(names):
    """The method names (every method when `names` is empty); ValueError naming unknown ones."""
    methods = list(names) if names else list(METHODS)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise ValueError(f"unknown methods {unknown}: choose among {', '.join(METHODS)}")
    return methods


# ----------------------------------------------------------------------------------------------
# Table 5: small subsamples


PAPER_CLASSES = 50  # Table 5 draws 50 of ImageNet's classes


def default_class_count(labels, images_per_class: int) -> int:
    """C when none is given: the paper's 50, or, on data with fewer classes of at least
    `images_per_class` rows (e.g. Fashion-MNIST's 10), all of those."""
    eligible = int(np.sum(np.bincount(np.asarray(labels)) >= images_per_class))
    if eligible < 2:
        raise ValueError(f"fewer than 2 classes have --images_per_class={images_per_class} rows: "
                         "lower --images_per_class")
    return min(PAPER_CLASSES, eligible)


def draw_subsample(labels, num_classes, images_per_class, labelled_per_class, rng):
    """(rows [C * I] into labels, the C classes drawn (sorted), is_labelled [C * I]): C random classes
    with at least I rows, I random rows of each, the first `labelled_per_class` of each labelled."""
    counts = np.bincount(labels)
    eligible = np.flatnonzero(counts >= images_per_class)
    if len(eligible) < num_classes:
        raise ValueError(f"--classes={num_classes} but only {len(eligible)} classes have "
                         f"--images_per_class={images_per_class} rows")
    classes = np.sort(rng.choice(eligible, num_classes, replace=False))
    rows = np.concatenate([rng.choice(np.flatnonzero(labels == c), images_per_class, replace=False)
                           for c in classes])
    is_labelled = np.tile(np.arange(images_per_class) < labelled_per_class, num_classes)
    return rows, classes, is_labelled


def compare_on_subsamples(features, labels, methods, settings, num_classes, images_per_class,
                          labelled_per_class, subsamples, seed):
    """Every method on the same `subsamples` draws; accuracy on the unlabelled rows and seconds.
    labels: every row's true class."""
    if not 1 <= labelled_per_class < images_per_class:
        raise ValueError(f"--labelled_per_class={labelled_per_class} must lie in [1, "
                         f"--images_per_class={images_per_class})")
    for name in methods:
        load_libraries(METHODS[name])
    rng = np.random.default_rng(seed)
    scores = {name: {"accuracy": [], "seconds": []} for name in methods}
    draws = []
    for _ in range(subsamples):
        rows, classes, is_labelled = draw_subsample(labels, num_classes, images_per_class,
                                                    labelled_per_class, rng)
        truth = np.searchsorted(classes, labels[rows])  # classes renumbered 0..C-1
        given = np.where(is_labelled, truth, -1)
        for name in methods:
            started = time.perf_counter()
            predicted = METHODS[name].run(features[rows], given, num_classes, settings)
            scores[name]["seconds"].append(time.perf_counter() - started)
            scores[name]["accuracy"].append(accuracy_on_unlabelled(predicted, truth, is_labelled))
        draws.append({"rows": rows.tolist(), "classes": classes.tolist(),
                      "is_labelled": is_labelled.tolist()})
    return {"methods": scores, "subsamples": draws}


def subsample_table(result):
    lines = ["| method | accuracy (%) mean ± std | median seconds per subsample |", "|---|---|---|"]
    for name, score in result["methods"].items():
        accuracy = 100 * np.asarray(score["accuracy"])
        lines.append(f"| {name} | {accuracy.mean():.1f} ± {accuracy.std():.1f} | "
                     f"{np.median(score['seconds']):.3f} |")
    return "\n".join(lines)
