"""Benchmark: one propagation (density pass + label pass, called as the training callback calls it)
against a float32 matrix multiply of the same total shape, in the same process, as N x M grows.

  python scripts/bench_propagation.py --sizes=50000x5000,100000x10000,200000x20000

For each N x M (N bank rows of D dimensions, M of them labelled; synthetic unit rows around Gaussian
class centres) it prints seconds, GFLOP/s and their ratio for
- the propagation: propagation.propagate on a bank variable, default BlockSizes;
- the matmul baseline: the faster of TensorFlow's float32 matmul in the propagation's own blocks and
  NumPy's in the same blocks, over the same pairs: M x N (density) plus (N - M) x M (labels).
FLOPs are 2 D (M N + (N - M) M) for both. Each is run --repeats times, interleaved, best kept (the
first propagation includes tracing). With --memory, each size's propagation also runs in a fresh
subprocess that reports its peak resident memory (VmHWM, the ru_maxrss of its own image) against
TensorFlow's own footprint, the bank's bytes and one score block. The machine, TensorFlow version and TF_ENABLE_ONEDNN_OPTS setting head the output.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from llp_tf import neighbours, propagation
import bench_common  # scripts/bench_common.py: these scripts run as files, not installed

flags.DEFINE_list("sizes", ["50000x5000", "100000x10000", "200000x20000"], "N x M sizes to measure")
flags.DEFINE_integer("dim", 128, "D: embedding dimensions")
flags.DEFINE_integer("classes", 100, "classes of the synthetic features")
flags.DEFINE_integer("k", 10, "K: labelled neighbours that vote")
flags.DEFINE_integer("t", 25, "T: neighbours of the density")
flags.DEFINE_integer("query_rows", propagation.BlockSizes().query_rows, "query rows per block")
flags.DEFINE_integer("key_rows", propagation.BlockSizes().key_rows, "key rows per block")
flags.DEFINE_integer("repeats", 3, "timed runs of each method (interleaved); the best is reported")
flags.DEFINE_bool("memory", True, "measure the peak memory of each size in a fresh subprocess")
flags.DEFINE_bool("block_parts", False, "instead: time the parts of one block's search (multiply, group "
                  "maxima, the two top-k stages) at K and at T, each alone")
flags.DEFINE_string("memory_child", None, "internal: run one propagation of this NxM and print memory")
FLAGS = flags.FLAGS

FILL_ROWS = 16384  # bank rows written per step while building it, so building peaks below propagating
MIB = 2 ** 20


def parse_size(text):
    num_rows, num_labelled = (int(part) for part in text.lower().split("x"))
    if not 0 < num_labelled < num_rows:
        raise ValueError(f"size {text!r}: need 0 < M < N")
    return num_rows, num_labelled


def synthetic_bank(num_rows, num_labelled, seed=0):
    """(bank tf.Variable [N, D] of unit rows around class centres, labels [N], is_labelled [N]).

    Filled by scatter in pieces: the process never holds more than the bank and one piece."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(FLAGS.classes, FLAGS.dim)).astype(np.float32)
    labels = rng.integers(0, FLAGS.classes, num_rows)
    bank = tf.Variable(tf.zeros([num_rows, FLAGS.dim]), trainable=False)
    for start in range(0, num_rows, FILL_ROWS):
        stop = min(start + FILL_ROWS, num_rows)
        rows = centres[labels[start:stop]] + 1.5 * rng.normal(size=(stop - start, FLAGS.dim)).astype(np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        bank.scatter_update(tf.IndexedSlices(rows, tf.range(start, stop)))
    is_labelled = np.zeros(num_rows, bool)
    is_labelled[rng.permutation(num_rows)[:num_labelled]] = True
    return bank, labels, is_labelled


def block_sizes():
    return propagation.BlockSizes(FLAGS.query_rows, FLAGS.key_rows)


def run_propagation(bank, labels, is_labelled):
    return propagation.propagate(bank, is_labelled, np.where(is_labelled, labels, -1), FLAGS.classes,
                                 k=FLAGS.k, t=FLAGS.t, block_sizes=block_sizes())


# ----------------------------------------------------------------------------- matmul baselines

@tf.function
def _tf_matmul_in_blocks(bank, query_rows, key_rows, query_block, key_block):
    """queries . keys over all pairs in the propagation's blocks and key layout (the bank itself when
    key_rows is None, else a copy in transposed blocks); a checksum keeps every block."""
    if key_rows is None:
        keys, num_blocks = bank, (tf.shape(bank)[0] + key_block - 1) // key_block
    else:
        keys = tf.transpose(tf.reshape(tf.gather(bank, key_rows), [-1, key_block, FLAGS.dim]), [0, 2, 1])
        num_blocks = tf.shape(keys)[0]
    checksum = tf.zeros([], bank.dtype)
    for start in tf.range(0, tf.shape(query_rows)[0], query_block):
        tf.autograph.experimental.set_loop_options(parallel_iterations=1)
        queries = tf.gather(bank, query_rows[start:start + query_block])
        for index in tf.range(num_blocks):
            tf.autograph.experimental.set_loop_options(parallel_iterations=2)  # as the propagation
            if key_rows is None:
                scores = tf.matmul(queries, keys[index * key_block:(index + 1) * key_block], transpose_b=True)
            else:
                scores = tf.matmul(queries, keys[index])
            checksum += scores[0, 0]
    return checksum


def passes(is_labelled):
    """(query rows, key rows or None for all rows, BlockLayout) of the two passes as propagate runs
    them: labelled x all rows (T + 1 best, self dropped), unlabelled x labelled (K best); the key rows
    padded to whole blocks."""
    labelled, unlabelled = np.flatnonzero(is_labelled), np.flatnonzero(~is_labelled)
    density = neighbours.block_layout(len(is_labelled), FLAGS.t + 1, block_sizes(), all_rows=True)
    labels = neighbours.block_layout(len(labelled), FLAGS.k, block_sizes(), all_rows=False)
    padded = np.resize(labelled, labels.num_blocks * labels.key_block)
    return [(labelled, None, density), (unlabelled, padded, labels)]


def tf_matmul(bank, is_labelled):
    # A tensor: slicing a variable reads all of it, which after a scatter update is a copy.
    bank = tf.convert_to_tensor(bank)
    for query_rows, key_rows, blocks in passes(is_labelled):
        float(_tf_matmul_in_blocks(bank, tf.constant(query_rows, tf.int32),
                                   None if key_rows is None else tf.constant(key_rows, tf.int32),
                                   blocks.query_block, blocks.key_block))


def numpy_matmul(bank_array, is_labelled):
    for query_rows, key_rows, blocks in passes(is_labelled):
        if key_rows is None:
            key_blocks = [bank_array[start:start + blocks.key_block].T
                          for start in range(0, len(bank_array), blocks.key_block)]
        else:
            key_blocks = list(np.ascontiguousarray(
                bank_array[key_rows].reshape(-1, blocks.key_block, FLAGS.dim).transpose(0, 2, 1)))
        out = np.empty([blocks.query_block, blocks.key_block], np.float32)
        for start in range(0, len(query_rows), blocks.query_block):
            queries = bank_array[query_rows[start:start + blocks.query_block]]
            for keys in key_blocks:
                np.matmul(queries, keys, out=out[:len(queries), :keys.shape[1]])


# ----------------------------------------------------------------------------- memory

def resident_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


def peak_mib():
    """Peak resident memory of this process image: VmHWM. (ru_maxrss would do, but Linux carries the
    parent's peak into a child across exec, and the child here is started by a big parent.)"""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024  # KiB


def memory_child(size):
    """One propagation in this fresh process; prints its memory figures as one JSON line."""
    tf.constant(1.0) + 1.0  # TensorFlow's own runtime, for reference
    runtime = resident_mib()
    bank, labels, is_labelled = synthetic_bank(*size)
    before = resident_mib()
    peak_before = peak_mib()
    run_propagation(bank, labels, is_labelled)
    print(json.dumps(dict(runtime_mib=runtime, with_bank_mib=before, peak_before_mib=peak_before,
                          peak_mib=peak_mib())))


def measure_memory(size_text):
    argv = [sys.executable, os.path.abspath(__file__), f"--memory_child={size_text}"] + [
        f"--{name}={getattr(FLAGS, name)}" for name in ("dim", "classes", "k", "t", "query_rows", "key_rows")]
    result = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def available_mib():
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) / 1024


# ----------------------------------------------------------------------------- report

def best_seconds(functions, repeats):
    """{name: best wall seconds of `repeats` runs}, the methods interleaved run by run."""
    best = {name: float("inf") for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def block_parts():
    """Milliseconds of each part of one query block x key block search, each part alone (best of 5
    rounds of 10 calls), on random scores: what the propagation adds to the multiply."""
    rows, keys, dim = FLAGS.query_rows, FLAGS.key_rows, FLAGS.dim
    rng = np.random.default_rng(0)
    queries = tf.constant(rng.normal(size=(rows, dim)).astype(np.float32))
    key_block = tf.constant(rng.normal(size=(dim, keys)).astype(np.float32))
    scores = tf.matmul(queries, key_block)
    print(f"one block of {rows} x {keys} scores, D={dim}; milliseconds per call")
    parts = {"multiply": lambda: tf.matmul(queries, key_block)[:, :1]}
    for k in (FLAGS.k, FLAGS.t):
        group = neighbours.group_size(keys, k)
        grouped = tf.reshape(scores, [rows, keys // group, group])
        maxima = tf.reduce_max(grouped, axis=2)
        best_groups = tf.sort(tf.math.top_k(maxima, k)[1], axis=1)
        candidates = tf.reshape(tf.gather(grouped, best_groups, batch_dims=1), [rows, -1])
        parts.update({
            f"k={k}: max over groups of {group}": lambda g=grouped: tf.reduce_max(g, axis=2)[:, :1],
            f"k={k}: top_k of {keys // group} group maxima": lambda m=maxima, k=k: tf.math.top_k(m, k)[0][:, :1],
            f"k={k}: top_k of {k * group} candidates": lambda c=candidates, k=k: tf.math.top_k(c, k)[0][:, :1],
            f"k={k}: whole two-stage top-k": lambda k=k, g=group: neighbours._top_k_of_block(  # pylint: disable=protected-access
                scores, k, g)[0][:, :1],
        })
    for name, part in parts.items():
        part = tf.function(part)
        part()
        times = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(10):
                result = part()
            np.asarray(result)
            times.append((time.perf_counter() - started) * 100)
        print(f"{name}: {min(times):.2f}")


def time_methods(num_rows, num_labelled):
    """Best seconds of propagation, TF matmul and NumPy matmul on one synthetic bank."""
    bank, labels, is_labelled = synthetic_bank(num_rows, num_labelled)
    bank_array = bank.numpy()
    return best_seconds({
        "propagation": lambda: run_propagation(bank, labels, is_labelled),
        "tf": lambda: tf_matmul(bank, is_labelled),
        "numpy": lambda: numpy_matmul(bank_array, is_labelled),
    }, FLAGS.repeats)


def main(argv):
    del argv
    if FLAGS.memory_child:
        memory_child(parse_size(FLAGS.memory_child))
        return
    print(bench_common.describe())
    if FLAGS.block_parts:
        block_parts()
        return
    print(f"D={FLAGS.dim}, K={FLAGS.k}, T={FLAGS.t}, {block_sizes()}, best of {FLAGS.repeats} interleaved runs")
    print("| N | M | N*M | GFLOP | propagation s | GFLOP/s | TF matmul s | NumPy matmul s | matmul GFLOP/s "
          "| propagation / matmul rate | bank MiB | labelled copy MiB | block MiB | TF alone MiB | peak MiB "
          "| peak - TF - bank MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    block_mib = 4 * FLAGS.query_rows * FLAGS.key_rows / MIB
    curve = []  # (N * M, propagation seconds)
    for size_text in FLAGS.sizes:
        num_rows, num_labelled = parse_size(size_text)
        bank_mib = 4 * num_rows * FLAGS.dim / MIB
        # The bank, its NumPy copy for the NumPy baseline, and a score block per method.
        needed = 2 * bank_mib + 3 * block_mib + 1024
        if needed > available_mib():
            print(f"| {num_rows:,} | {num_labelled:,} | skipped: needs ~{needed:,.0f} MiB, "
                  f"{available_mib():,.0f} available |")
            continue
        gflop = 2 * FLAGS.dim * (num_labelled * num_rows + (num_rows - num_labelled) * num_labelled) / 1e9
        seconds = time_methods(num_rows, num_labelled)  # the bank is freed on return
        matmul = min(seconds["tf"], seconds["numpy"])
        memory = measure_memory(size_text) if FLAGS.memory else None
        memory_cells = ("| - | - | - |" if memory is None else
                        f"| {memory['runtime_mib']:,.0f} | {memory['peak_mib']:,.0f} | "
                        f"{memory['peak_mib'] - memory['runtime_mib'] - bank_mib:,.0f} |")
        if memory and memory["peak_mib"] <= memory["peak_before_mib"]:
            memory_cells += " (peak reached while building the bank)"
        curve.append((num_rows * num_labelled, seconds["propagation"]))
        print(f"| {num_rows:,} | {num_labelled:,} | {num_rows * num_labelled:.2e} | {gflop:,.0f} "
              f"| {seconds['propagation']:.2f} | {gflop / seconds['propagation']:.0f} | {seconds['tf']:.2f} "
              f"| {seconds['numpy']:.2f} | {gflop / matmul:.0f} | {matmul / seconds['propagation']:.2f} "
              f"| {bank_mib:,.0f} | {bank_mib * num_labelled / num_rows:,.0f} | {block_mib:,.0f} {memory_cells}",
              flush=True)
    if len(curve) > 1:
        slope = np.polyfit(*np.log(np.array(curve)).T, 1)[0]
        print(f"propagation seconds ~ (N*M)^{slope:.2f} over these sizes (1 = linear in N*M)")


if __name__ == "__main__":
    app.run(main)
