"""llp-compare-propagation: LLP's propagation against global methods on fixed features (paper Table 5),
then the time and memory each method takes as N grows.

  llp-compare-propagation --features=FEATURES.npz --classes=50 [--output_json=OUT.json]
  llp-compare-propagation --workdir=runs/my_run --classes=10 --sweep_sizes=1000,5000,20000,60000,200000

Input: --features, a .npz with `features` (float [N, D]) and `labels` (int [N], every row's true class),
or --workdir, the memory bank of a trained run's latest checkpoint with the true labels of its training
rows (the run's dataset must still be readable). Rows are L2-normalised.

1. Table 5's protocol: --subsamples times, draw --classes classes and --images_per_class images of each,
   label --labelled_per_class of each class, run every method and score it on the unlabelled rest.
   Prints accuracy (%) mean +- std over the subsamples, and the mean seconds per subsample.
2. Scale sweep (--sweep_sizes; empty skips it): N rows drawn from the features (drawn with replacement
   and jittered where N exceeds them), --sweep_labelled_fraction of each class labelled. Each method
   runs in a fresh process whose address space may grow by --memory_limit_gb beyond its start-up size
   (RLIMIT_AS, so an allocation that does not fit fails at once instead of swamping the machine), and
   is killed after --time_limit seconds. Prints seconds, peak resident memory above start-up and
   accuracy, or why the method stopped; a method that stopped at some N is not run at larger N.
   Linux only (/proc is read for resident memory).

Methods (--methods): llp (density-weighted votes, Eq. 5-8) and knn (weighted kNN) from
llp_tf/propagation.py; label_spreading_{knn,rbf} (Zhou et al. 2004) and label_propagation_{knn,rbf} (Zhu &
Ghahramani 2002) from scikit-learn with its defaults apart from the flags below; diffusion (Iscen et
al. 2019, llp_tf/diffusion.py). Needs scikit-learn and SciPy (pip install "llp_tf[analysis]").
"""
import dataclasses
import importlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
from absl import app, flags, logging

flags.DEFINE_string("features", None, "input .npz with features [N, D] and labels [N] (true classes)")
flags.DEFINE_string("workdir", None, "or: a trained run whose memory bank and true labels are the input")
flags.DEFINE_list("methods", None, "methods to compare; default: all")
flags.DEFINE_integer("classes", 50, "C: classes drawn per subsample (paper: 50)")
flags.DEFINE_integer("images_per_class", 50, "images drawn per class (paper: 50)")
flags.DEFINE_integer("labelled_per_class", 5, "labelled images per class (paper: 5)")
flags.DEFINE_integer("subsamples", 10, "random subsamples (paper: 10)")
flags.DEFINE_integer("seed", 0, "seed of the subsamples and of the sweep's samples")
flags.DEFINE_integer("k", 10, "llp, knn: K labelled neighbours that vote")
flags.DEFINE_integer("t", 25, "llp: T neighbours of the local density")
flags.DEFINE_float("tau", 0.07, "llp, knn: temperature")
flags.DEFINE_integer("sklearn_neighbors", 7, "label_spreading_knn, label_propagation_knn: n_neighbors")
flags.DEFINE_float("rbf_gamma", 20.0,
                   "label_spreading_rbf, label_propagation_rbf: gamma of exp(-gamma |x-y|^2)")
flags.DEFINE_integer("diffusion_k", 50, "diffusion: neighbours of the kNN graph")
flags.DEFINE_float("diffusion_alpha", 0.99, "diffusion: alpha of (I - alpha W) Z = Y")
flags.DEFINE_float("diffusion_gamma", 3.0, "diffusion: power of the similarities")
flags.DEFINE_list("sweep_sizes", [], "N of the scale sweep, e.g. 1000,5000,20000,60000,200000")
flags.DEFINE_float("sweep_labelled_fraction", 0.1, "share of each class labelled in the sweep")
flags.DEFINE_float("sweep_jitter", 0.1, "norm of the noise added to rows drawn with replacement")
flags.DEFINE_float("time_limit", 300.0, "seconds a method may run in the sweep")
flags.DEFINE_float("memory_limit_gb", 8.0, "GiB a method's address space may grow by in the sweep")
flags.DEFINE_string("output_json", None, "also write every result as JSON here")
flags.DEFINE_string("worker_job", None, "internal: run the one sweep measurement this JSON file describes")
FLAGS = flags.FLAGS

SETUP_TIME_LIMIT = 600  # seconds a sweep worker may take to load its data and libraries
POLL_SECONDS = 0.1


# ----------------------------------------------------------------------------------------------
# The methods: (unit features [N, D], labels [N] with -1 where unlabelled, num_classes, Settings)
# -> predicted labels [N]


@dataclasses.dataclass(frozen=True)
class Settings:
    """The methods' parameters (the flags of the same names)."""
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
        from llp_tf import propagation
        return propagation.propagate(features, given >= 0, given, num_classes, k=settings.k, t=settings.t,
                                     tau=settings.tau, use_density=use_density).labels
    return run


def _scikit_learn(model_name, kernel):
    def run(features, given, num_classes, settings):
        from sklearn import exceptions, semi_supervised
        model = getattr(semi_supervised, model_name)(
            kernel=kernel, gamma=settings.rbf_gamma, n_neighbors=settings.sklearn_neighbors)
        with warnings.catch_warnings():  # the iteration caps are part of the methods as shipped
            warnings.simplefilter("ignore", exceptions.ConvergenceWarning)
            return model.fit(features, given).transduction_
    return run


def _diffusion(features, given, num_classes, settings):
    from llp_tf import diffusion
    predicted, _ = diffusion.diffuse(features, given >= 0, given, num_classes, k=settings.diffusion_k,
                                     alpha=settings.diffusion_alpha, gamma=settings.diffusion_gamma)
    return predicted


@dataclasses.dataclass(frozen=True)
class Method:
    run: object
    libraries: tuple  # loaded before a sweep measurement starts, so start-up is not measured


_TENSORFLOW = ("tensorflow", "llp_tf.propagation")
METHODS = {
    "llp": Method(_local_propagation(True), _TENSORFLOW),
    "knn": Method(_local_propagation(False), _TENSORFLOW),
    "label_spreading_knn": Method(_scikit_learn("LabelSpreading", "knn"), ("sklearn.semi_supervised",)),
    "label_spreading_rbf": Method(_scikit_learn("LabelSpreading", "rbf"), ("sklearn.semi_supervised",)),
    "label_propagation_knn": Method(_scikit_learn("LabelPropagation", "knn"), ("sklearn.semi_supervised",)),
    "label_propagation_rbf": Method(_scikit_learn("LabelPropagation", "rbf"), ("sklearn.semi_supervised",)),
    "diffusion": Method(_diffusion, _TENSORFLOW + ("llp_tf.diffusion",)),
}


def load_libraries(method):
    """Imports what `method` runs on, and starts TensorFlow's thread pools and XLA, so that none of
    them is timed or counted against the memory cap."""
    for library in method.libraries:
        importlib.import_module(library)
    if "tensorflow" in method.libraries:
        import tensorflow as tf
        tf.math.top_k(tf.matmul(tf.ones([4, 4]), tf.ones([4, 4])), k=2)
        # The propagation's XLA functions: XLA's CPU runtime reserves about 0.8 GiB of address space
        # when it starts, which is start-up, not the method's memory.
        tf.function(lambda x: x + 1, jit_compile=True)(tf.ones([2]))


def accuracy_on_unlabelled(predicted, truth, is_labelled):
    return float(np.mean(np.asarray(predicted)[~is_labelled] == truth[~is_labelled]))


# ----------------------------------------------------------------------------------------------
# Input


def read_features_file(path):
    """(float32 unit rows [N, D], int64 labels [N]) from a .npz with `features` and `labels`."""
    with np.load(path) as archive:
        missing = {"features", "labels"} - set(archive.files)
        if missing:
            raise ValueError(f"{path} lacks {sorted(missing)} (it has {archive.files})")
        features, labels = archive["features"], archive["labels"]
    if features.ndim != 2 or labels.shape != (len(features),):
        raise ValueError(f"{path}: features must be [N, D] and labels [N]; got {features.shape} and "
                         f"{labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(f"{path}: labels must be non-negative integers (every row's true class)")
    return checked_unit_rows(features, path), labels.astype(np.int64)


def read_workdir(workdir):
    """(bank rows float32 [N, D], true labels [N]) of the run in `workdir`."""
    from llp_tf import analysis
    state = analysis.load_run_state(workdir)
    return checked_unit_rows(state.bank, workdir), state.true_labels


def checked_unit_rows(features, origin):
    from llp_tf.analysis import unit_rows
    if not np.isfinite(features).all():
        raise ValueError(f"{origin}: features hold NaN or Inf")
    zero_rows = int(np.sum(~features.any(axis=1)))
    if zero_rows:
        raise ValueError(f"{origin}: {zero_rows} feature rows are all zero")
    return unit_rows(features).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Table 5: small subsamples


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
    """Every method on the same `subsamples` draws; accuracy on the unlabelled rows and seconds."""
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


# ----------------------------------------------------------------------------------------------
# Scale sweep: one fresh process per (method, N)


def sweep_sample(features, labels, size, labelled_fraction, jitter, rng):
    """(unit rows [size, D], labels [size], is_labelled [size], resampled): `size` rows drawn from the
    features, with replacement and a jitter of norm ~`jitter` when size exceeds them; in each class
    round(labelled_fraction * its count) rows (at least one) are labelled."""
    resampled = size > len(features)
    rows = rng.choice(len(features), size, replace=resampled)
    sample, sample_labels = features[rows], labels[rows]
    if resampled:
        noise = rng.normal(size=sample.shape).astype(np.float32) * (jitter / np.sqrt(sample.shape[1]))
        sample = checked_unit_rows(sample + noise, "jittered rows")
    is_labelled = np.zeros(size, bool)
    for c in np.unique(sample_labels):
        members = rng.permutation(np.flatnonzero(sample_labels == c))
        is_labelled[members[:max(1, round(labelled_fraction * len(members)))]] = True
    return sample, sample_labels, is_labelled, resampled


def resident_mib(pid="self", field="VmRSS"):
    """VmRSS (or VmHWM, the peak) of a process in MiB, 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def run_worker(job_path):
    """Body of a sweep process: load the data and libraries, cap the address space, run one method."""
    with open(job_path) as f:
        job = json.load(f)
    with np.load(job["data"]) as data:
        features, truth, is_labelled = data["features"], data["labels"], data["is_labelled"]
    method = METHODS[job["method"]]
    load_libraries(method)  # before the cap: start-up is not what is measured
    start_mib = resident_mib()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size
    except OSError:
        pass  # the peak then also counts start-up
    with open("/proc/self/statm") as f:
        address_space = os.sysconf("SC_PAGE_SIZE") * int(f.read().split()[0])
    limit = address_space + int(job["memory_limit_gb"] * 2 ** 30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    open(job["ready"], "w").close()
    given = np.where(is_labelled, truth, -1)
    try:
        started = time.perf_counter()
        predicted = method.run(features, given, job["num_classes"], Settings(**job["settings"]))
        result = {"status": "ok", "seconds": time.perf_counter() - started,
                  "accuracy": accuracy_on_unlabelled(predicted, truth, is_labelled),
                  "extra_mib": resident_mib(field="VmHWM") - start_mib}
    except MemoryError:
        result = {"status": "out of memory"}
    except Exception as error:  # TensorFlow's ResourceExhaustedError, without importing TensorFlow here
        if type(error).__name__ != "ResourceExhaustedError":
            raise
        result = {"status": "out of memory"}
    with open(job["result"], "w") as f:
        json.dump(result, f)


def measure_in_subprocess(method, data_path, num_classes, settings, time_limit, memory_limit_gb, scratch):
    """Runs one method on the sweep data in `data_path` in a fresh process; returns its result dict:
    status ("ok", "out of memory", "over time limit" or "failed: ..."), and seconds, extra_mib (peak
    resident memory above start-up) and accuracy when ok, resident_mib when killed."""
    stem = os.path.join(scratch, f"{method}-{os.path.basename(data_path)}")
    job = {"method": method, "data": data_path, "num_classes": num_classes,
           "settings": dataclasses.asdict(settings), "memory_limit_gb": memory_limit_gb,
           "ready": stem + ".ready", "result": stem + ".result.json"}
    with open(stem + ".job.json", "w") as f:
        json.dump(job, f)
    with open(stem + ".log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "llp_tf.tools.compare_propagation", f"--worker_job={stem}.job.json"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    launched, ready_at, resident = time.monotonic(), None, 0.0
    while process.poll() is None:
        resident = max(resident, resident_mib(process.pid))
        if ready_at is None and os.path.exists(job["ready"]):
            ready_at = time.monotonic()
        over_time = ready_at is not None and time.monotonic() - ready_at > time_limit
        if over_time or (ready_at is None and time.monotonic() - launched > SETUP_TIME_LIMIT):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            status = "over time limit" if over_time else "failed: start-up took too long"
            return {"status": status, "resident_mib": resident}
        time.sleep(POLL_SECONDS)
    if os.path.exists(job["result"]):
        with open(job["result"]) as f:
            return json.load(f)
    with open(stem + ".log") as f:
        lines = f.read().strip().splitlines() or ["(no output)"]
    if any(mark in line for line in lines[-20:] for mark in ("bad_alloc", "Cannot allocate memory")):
        return {"status": "out of memory"}
    return {"status": f"failed (exit {process.returncode}): {lines[-1][:200]}"}


def scale_sweep(features, labels, methods, settings, sizes, labelled_fraction, jitter, time_limit,
                memory_limit_gb, seed):
    """{"sizes": [...], "samples": [...], "methods": {name: [result per size]}}; see the docstring."""
    rng = np.random.default_rng(seed)
    num_classes = int(labels.max()) + 1
    results = {name: [] for name in methods}
    samples = []
    with tempfile.TemporaryDirectory(prefix="llp-compare-") as scratch:
        for size in sizes:
            sample, sample_labels, is_labelled, resampled = sweep_sample(
                features, labels, size, labelled_fraction, jitter, rng)
            data_path = os.path.join(scratch, f"n{size}.npz")
            np.savez(data_path, features=sample, labels=sample_labels, is_labelled=is_labelled)
            samples.append({"size": size, "labelled": int(is_labelled.sum()), "resampled": resampled})
            del sample
            for name in methods:
                if results[name] and results[name][-1]["status"] != "ok":  # stopped at a smaller N
                    results[name].append({"status": "not run"})
                    continue
                results[name].append(measure_in_subprocess(name, data_path, num_classes, settings,
                                                           time_limit, memory_limit_gb, scratch))
                logging.info("N=%d %s: %s", size, name, results[name][-1])
            os.remove(data_path)
    return {"sizes": list(sizes), "samples": samples, "methods": results}


def sweep_cell(result, time_limit, memory_limit_gb):
    status = result["status"]
    if status == "ok":
        return f"{result['seconds']:.1f} s, {result['extra_mib']:.0f} MiB, {100 * result['accuracy']:.1f}%"
    if status == "out of memory":
        return f"out of memory (> {memory_limit_gb:g} GiB)"
    if status == "over time limit":
        return f"over {time_limit:g} s ({result['resident_mib']:.0f} MiB resident)"
    return status


def sweep_table(sweep, time_limit, memory_limit_gb):
    header = ["method"] + [
        f"N={s['size']:,} ({s['labelled']:,} labelled{', resampled' if s['resampled'] else ''})"
        for s in sweep["samples"]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, results in sweep["methods"].items():
        cells = [sweep_cell(result, time_limit, memory_limit_gb) for result in results]
        lines.append("| " + " | ".join([name] + cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Command line


def parse_sizes(values):
    try:
        sizes = [int(value) for value in values]
    except ValueError:
        raise ValueError(f"--sweep_sizes takes row counts such as 1000,5000, got {values}") from None
    if any(size < 2 for size in sizes) or sizes != sorted(sizes):
        raise ValueError(f"--sweep_sizes must be increasing counts of at least 2 rows, got {sizes}")
    return sizes


def parse_methods(values):
    methods = list(values) if values else list(METHODS)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise ValueError(f"unknown methods {unknown}: choose among {', '.join(METHODS)}")
    return methods


def main(argv):
    if len(argv) > 1:
        sys.exit(f"llp-compare-propagation: unexpected arguments {argv[1:]}")
    if FLAGS.worker_job:
        return run_worker(FLAGS.worker_job)
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    try:
        if bool(FLAGS.features) == bool(FLAGS.workdir):
            raise ValueError("give exactly one of --features and --workdir")
        methods, sizes = parse_methods(FLAGS.methods), parse_sizes(FLAGS.sweep_sizes)
        features, labels = (read_features_file(FLAGS.features) if FLAGS.features
                            else read_workdir(FLAGS.workdir))
        settings = Settings(FLAGS.k, FLAGS.t, FLAGS.tau, FLAGS.sklearn_neighbors, FLAGS.rbf_gamma,
                            FLAGS.diffusion_k, FLAGS.diffusion_alpha, FLAGS.diffusion_gamma)
        print(f"{FLAGS.features or FLAGS.workdir}: {len(features):,} rows of {features.shape[1]} dimensions, "
              f"{len(np.unique(labels))} classes")
        subsamples = compare_on_subsamples(features, labels, methods, settings, FLAGS.classes,
                                           FLAGS.images_per_class, FLAGS.labelled_per_class,
                                           FLAGS.subsamples, FLAGS.seed)
        print(f"\n{FLAGS.subsamples} subsamples of {FLAGS.classes} classes x {FLAGS.images_per_class} "
              f"images, {FLAGS.labelled_per_class} labelled per class; accuracy on the unlabelled rest:\n")
        print(subsample_table(subsamples))
        report = {"input": FLAGS.features or FLAGS.workdir, "settings": dataclasses.asdict(settings),
                  "subsamples": subsamples}
        if sizes:
            sweep = scale_sweep(features, labels, methods, settings, sizes, FLAGS.sweep_labelled_fraction,
                                FLAGS.sweep_jitter, FLAGS.time_limit, FLAGS.memory_limit_gb, FLAGS.seed)
            print(f"\nScale sweep, {100 * FLAGS.sweep_labelled_fraction:g}% of each class labelled; each "
                  f"cell: seconds, peak resident memory above start-up, accuracy on the unlabelled rows "
                  f"(limits {FLAGS.time_limit:g} s, {FLAGS.memory_limit_gb:g} GiB of address space):\n")
            print(sweep_table(sweep, FLAGS.time_limit, FLAGS.memory_limit_gb))
            report["sweep"] = sweep
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"llp-compare-propagation: {error}")
    except ImportError as error:
        sys.exit(f"llp-compare-propagation: {error.name} is missing: pip install \"llp_tf[analysis]\"")
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"\nwritten to {FLAGS.output_json}")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
