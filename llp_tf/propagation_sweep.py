"""The scale sweep of llp-compare-propagation: each propagation method on N rows as N grows, each run in
a fresh process with a capped address space and a time limit, to show where each method stops.

    sweep = scale_sweep(features, labels, ["llp", "label_spreading_rbf"], settings,
                        sizes=[1000, 5000, 20000], labelled_fraction=0.1, jitter=0.1, time_limit=300,
                        memory_limit_gb=8, seed=0)
    print(sweep_table(sweep, 300, 8))

N rows are drawn from the features (with replacement and jittered where N exceeds them), a share of
each class labelled. Each (method, N) runs in `python -m llp_tf.propagation_sweep JOB.json`, whose
address space may grow by memory_limit_gb beyond its start-up size (RLIMIT_AS, so an allocation that
does not fit fails at once instead of swamping the machine) and which is killed after time_limit
seconds. The result of a run: seconds, peak resident memory above start-up and accuracy, or why the
method stopped; a method that stopped at some N is not run at larger N. Linux only (/proc is read for
resident memory). The methods are llp_tf/propagation_comparison.py's.
"""
import dataclasses
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import logging

from llp_tf import features as features_lib
from llp_tf import propagation_comparison as comparison

SETUP_TIME_LIMIT = 600  # seconds a sweep worker may take to load its data and libraries
POLL_SECONDS = 0.1


def sweep_sample(features, labels, size, labelled_fraction, jitter, rng):
    """(unit rows [size, D], labels [size], is_labelled [size], resampled): `size` rows drawn from the
    features, with replacement and a jitter of norm ~`jitter` when size exceeds them; in each class
    round(labelled_fraction * its count) rows (at least one) are labelled."""
    resampled = size > len(features)
    rows = rng.choice(len(features), size, replace=resampled)
    sample, sample_labels = features[rows], labels[rows]
    if resampled:
        noise = rng.normal(size=sample.shape).astype(np.float32) * (jitter / np.sqrt(sample.shape[1]))
        sample = features_lib.checked_unit_rows(sample + noise, "jittered rows")
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
    method = comparison.METHODS[job["method"]]
    comparison.load_libraries(method)  # before the cap: start-up is not what is measured
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
    settings = comparison.Settings(**job["settings"])
    try:
        started = time.perf_counter()
        predicted = method.run(features, given, job["num_classes"], settings)
        result = {"status": "ok", "seconds": time.perf_counter() - started,
                  "accuracy": comparison.accuracy_on_unlabelled(predicted, truth, is_labelled),
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
            [sys.executable, "-m", "llp_tf.propagation_sweep", f"{stem}.job.json"],
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


def parse_sizes(values):
    """Increasing row counts of at least 2 from strings such as ["1000", "5000"]; ValueError if not."""
    try:
        sizes = [int(value) for value in values]
    except ValueError:
        raise ValueError(f"--sweep_sizes takes row counts such as 1000,5000, got {values}") from None
    if any(size < 2 for size in sizes) or sizes != sorted(sizes):
        raise ValueError(f"--sweep_sizes must be increasing counts of at least 2 rows, got {sizes}")
    return sizes


if __name__ == "__main__":  # one sweep measurement: python -m llp_tf.propagation_sweep JOB.json
    run_worker(sys.argv[1])
