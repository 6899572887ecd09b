"""Specification tests of llp_tf.propagation against the float64 references of tests/reference.py.

METHOD.md "Label propagation" (paper Eq. 5-8): density rho of each labelled row over its T nearest bank
rows, locally weighted scores s(l) = bank[l].v/tau - log rho(l), the K best labelled rows vote with
exp(s); the plain weighted kNN uses s(l) = bank[l].v/tau and the K nearest. The implementation runs in
blocks (BlockSizes); its answer must not depend on them, in float64 or float32.
"""
import functools

import numpy as np
import pytest
import tensorflow as tf

from llp_tf import neighbours
from llp_tf import propagation as prop
from tests import reference as ref

SEED = 3
NUM_ROWS, DIM, NUM_CLASSES = 1500, 16, 6
SPREADS = (0.5, 0.7, 0.9, 1.1, 1.3, 1.5)   # class spreads: neighbourhoods overlap, densities differ
K, T, TAU = 10, 25, 0.07
SMALL_ROWS = 290                             # a second, small bank (D = 8, Q = 4) for the slow block sizes

METHODS = {"llp": True, "knn": False}       # name -> use_density
ONE_BLOCK = prop.BlockSizes(4096, 65536)
# Block sizes that divide neither N (1500) nor M (153) nor N - M (1347). (97, 110) runs the two-stage
# top-k with groups of 2 over several key blocks, the last labelled block 43 keys (not whole groups);
# (13, 7) has fewer key rows than K and T, so every top-k has to be assembled across blocks.
BLOCK_SIZES = [ONE_BLOCK, prop.BlockSizes(97, 110), prop.BlockSizes(13, 7)]
# One query row at a time and one key row per block: too slow for the large bank, run on a small one.
TINY_BLOCK_SIZES = [prop.BlockSizes(1, 7), prop.BlockSizes(3, 1)]
DTYPES = ["float64", "float32"]

# Tolerances against the float64 reference. The outputs are float32 whatever the bank's dtype.
CONFIDENCE_ATOL = {"float64": 2e-7, "float32": 1e-5}
LOG_DENSITY_RTOL = {"float64": 2e-7, "float32": 1e-5}
# A float32 run may legitimately pick other voters or another winner when the reference's margins are
# below float32 resolution (scores ~ 1/tau = 14 carry errors ~1e-6); the test data must stay clear.
MIN_MARGIN = 1e-5


# ----------------------------------------------------------------------------- data, cached runs

@functools.lru_cache(maxsize=None)
def dataset(name):
    """(bank float64 [N, D], true labels [N], is_labelled [N], labels as given: -1 where unlabelled)."""
    if name == "large":
        bank, truth, is_labelled = ref.clustered_bank(SEED, NUM_ROWS, DIM, NUM_CLASSES, 0.1, SPREADS)
    else:
        bank, truth, is_labelled = ref.clustered_bank(SEED, SMALL_ROWS, 8, 4, 0.1, SPREADS[:4])
    # Unlabelled rows carry -1: the propagation must never read their label.
    given = np.where(is_labelled, truth, -1)
    return bank, truth, is_labelled, given


@functools.lru_cache(maxsize=None)
def reference_run(name, method, include_self):
    bank, _, is_labelled, given = dataset(name)
    return ref.propagate(bank, is_labelled, given, int(given.max()) + 1, K, T, TAU,
                         use_density=METHODS[method], include_self=include_self)


@functools.lru_cache(maxsize=None)
def implementation_run(name, method, include_self, block_sizes, dtype):
    bank, _, is_labelled, given = dataset(name)
    return prop.propagate(bank.astype(dtype), is_labelled, given, int(given.max()) + 1, k=K, t=T,
                          tau=TAU, use_density=METHODS[method], include_self=include_self,
                          block_sizes=block_sizes)


def assert_matches_reference(result, expected, is_labelled, given, dtype, method):
    assert result.labels.dtype == np.int64 and result.labels.shape == given.shape
    assert result.confidences.dtype == np.float32 and result.confidences.shape == given.shape
    np.testing.assert_array_equal(result.labels[is_labelled], given[is_labelled],
                                  err_msg="labelled rows must keep their true label")
    np.testing.assert_array_equal(result.confidences[is_labelled], 1.0,
                                  err_msg="labelled rows must have confidence exactly 1")
    mismatched = np.flatnonzero(result.labels != expected["labels"])
    assert mismatched.size == 0, f"pseudo-labels differ from the reference at rows {mismatched[:20]}"
    np.testing.assert_allclose(result.confidences, expected["confidences"], rtol=0,
                               atol=CONFIDENCE_ATOL[dtype], err_msg="confidences (Eq. 6)")
    assert np.all((result.confidences > 0) & (result.confidences <= 1))
    assert result.log_density.shape == (is_labelled.sum(),)
    if METHODS[method]:
        np.testing.assert_allclose(result.log_density, expected["log_density"],
                                   rtol=LOG_DENSITY_RTOL[dtype], err_msg="log rho (Eq. 7)")


# ----------------------------------------------------------------------------- the test data itself

def test_test_data_is_clustered_and_exercises_the_method():
    """Preconditions that give the comparisons their power: about 10% labelled in every class, block
    sizes that divide nothing, density weighting and include_self both change answers."""
    bank, truth, is_labelled, _ = dataset("large")
    np.testing.assert_allclose(np.linalg.norm(bank, axis=1), 1.0, atol=1e-6)
    assert 0.07 < is_labelled.mean() < 0.13
    assert np.all(np.bincount(truth[is_labelled], minlength=NUM_CLASSES) >= K)
    sizes = [NUM_ROWS, is_labelled.sum(), (~is_labelled).sum()]
    for block_sizes in BLOCK_SIZES[1:]:
        assert all(size % block_sizes.query_rows and size % block_sizes.key_rows
                   for size in sizes), block_sizes
    llp, knn = reference_run("large", "llp", False), reference_run("large", "knn", False)
    accuracy = (llp["labels"] == truth)[~is_labelled].mean()
    assert 0.8 < accuracy < 0.995, "clusters should overlap: some pseudo-labels wrong, most right"
    assert (llp["labels"] != knn["labels"]).sum() >= 20, "density weighting should change answers"
    with_self = reference_run("large", "llp", True)
    assert (with_self["labels"] != llp["labels"]).sum() >= 5, "include_self should change answers"


@pytest.mark.parametrize("name", ["large", "small"])
@pytest.mark.parametrize("include_self", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_test_data_has_no_near_ties(method, include_self, name):
    """A float32 run can only be held to identical labels where the float64 reference is not within
    float32 noise of a tie: neither between the K-th and (K+1)-th voter nor between the top two p."""
    _, _, is_labelled, _ = dataset(name)
    expected = reference_run(name, method, include_self)
    assert expected["voter_gap"][~is_labelled].min() > MIN_MARGIN, "near tie in voters: change SEED"
    assert expected["vote_margin"][~is_labelled].min() > MIN_MARGIN, "near tie in p: change SEED"


# ----------------------------------------------------------------------------- against the reference

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block_sizes", BLOCK_SIZES, ids=str)
@pytest.mark.parametrize("include_self", [False, True], ids=["exclude_self", "include_self"])
@pytest.mark.parametrize("method", METHODS)
def test_propagation_matches_reference(method, include_self, block_sizes, dtype):
    _, _, is_labelled, given = dataset("large")
    result = implementation_run("large", method, include_self, block_sizes, dtype)
    assert_matches_reference(result, reference_run("large", method, include_self), is_labelled,
                             given, dtype, method)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block_sizes", TINY_BLOCK_SIZES, ids=str)
@pytest.mark.parametrize("include_self", [False, True], ids=["exclude_self", "include_self"])
@pytest.mark.parametrize("method", METHODS)
def test_propagation_matches_reference_with_tiny_blocks(method, include_self, block_sizes, dtype):
    _, _, is_labelled, given = dataset("small")
    for block in [block_sizes.query_rows, block_sizes.key_rows]:
        sizes = [SMALL_ROWS, is_labelled.sum(), (~is_labelled).sum()]
        assert block == 1 or all(size % block for size in sizes), "blocks must not divide the sizes"
    result = implementation_run("small", method, include_self, block_sizes, dtype)
    assert_matches_reference(result, reference_run("small", method, include_self), is_labelled,
                             given, dtype, method)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("include_self", [False, True], ids=["exclude_self", "include_self"])
@pytest.mark.parametrize("method", METHODS)
def test_results_do_not_depend_on_block_sizes(method, include_self, dtype):
    for name, block_sizes_list in [("large", BLOCK_SIZES), ("small", [ONE_BLOCK] + TINY_BLOCK_SIZES)]:
        baseline = implementation_run(name, method, include_self, ONE_BLOCK, dtype)
        for block_sizes in block_sizes_list[1:]:
            result = implementation_run(name, method, include_self, block_sizes, dtype)
            np.testing.assert_array_equal(result.labels, baseline.labels, err_msg=str(block_sizes))
            np.testing.assert_allclose(result.confidences, baseline.confidences, rtol=0,
                                       atol=CONFIDENCE_ATOL[dtype], err_msg=str(block_sizes))
            np.testing.assert_allclose(result.log_density, baseline.log_density,
                                       rtol=LOG_DENSITY_RTOL[dtype],
                                       err_msg=str(block_sizes))


def test_knn_ignores_include_self():
    """include_self only concerns the density, which the plain kNN does not use."""
    for dtype in DTYPES:
        a = implementation_run("large", "knn", False, ONE_BLOCK, dtype)
        b = implementation_run("large", "knn", True, ONE_BLOCK, dtype)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.confidences, b.confidences)


@pytest.mark.parametrize("t", [1, T, SMALL_ROWS - 1])
@pytest.mark.parametrize("include_self", [False, True])
def test_log_density_float64(include_self, t):
    """log_density on its own, in float64, against Eq. 7: from the single nearest row to all N - 1."""
    bank, _, is_labelled, _ = dataset("small")
    rows = np.flatnonzero(is_labelled).astype(np.int32)
    result = prop.log_density(bank, rows, t, TAU, include_self=include_self,
                              block_sizes=prop.BlockSizes(11, 29)).numpy()
    assert result.dtype == np.float64
    np.testing.assert_allclose(result, ref.log_density(bank, rows, t, TAU, include_self), rtol=1e-12)


def test_vote_matches_weighted_sum():
    """vote(): w_c = sum of exp(score) over neighbours labelled c, p = w / sum w (Eq. 5-6)."""
    rng = np.random.default_rng(0)
    scores = -np.sort(-rng.normal(0, 3, size=(50, K)), axis=1)      # descending, as top_k gives them
    neighbour_labels = rng.integers(0, NUM_CLASSES, size=(50, K))
    labels, confidences = neighbours.vote(scores, neighbour_labels, NUM_CLASSES)
    w = np.zeros((50, NUM_CLASSES))
    for q in range(50):
        for score, label in zip(scores[q], neighbour_labels[q]):
            w[q, label] += np.exp(score)
    p = w / w.sum(axis=1, keepdims=True)
    np.testing.assert_array_equal(labels.numpy(), p.argmax(axis=1))
    np.testing.assert_allclose(confidences.numpy(), p.max(axis=1), rtol=1e-12)


# ----------------------------------------------------------------------------- paper Fig. 1c

def figure_1c():
    """Unit vectors on a circle (D = 2). The query (row 0, angle 0) lies nearer to the three labelled
    members of a dense class 1 (angles 0.30-0.32, inside 30 unlabelled points at 0.27-0.37) than to the
    three labelled members of a sparse class 0 (angles -0.36, -0.9, -1.4, alone)."""
    angles = np.array([0.0, 0.30, 0.31, 0.32, *np.linspace(0.27, 0.37, 30), -0.36, -0.9, -1.4])
    labels = np.array([-1, 1, 1, 1] + [-1] * 30 + [0, 0, 0])
    return np.stack([np.cos(angles), np.sin(angles)], axis=1), labels >= 0, labels


@pytest.mark.parametrize("include_self", [False, True])
def test_density_weighting_changes_the_answer(include_self):
    bank, is_labelled, labels = figure_1c()
    k, t = 3, 10
    similarity = bank[is_labelled] @ bank[0]
    dense, sparse = labels[is_labelled] == 1, labels[is_labelled] == 0
    assert np.sort(similarity[dense])[0] > np.sort(similarity[sparse])[-1], "query nearer the dense"
    knn = ref.propagate(bank, is_labelled, labels, 2, k, t, TAU, False, include_self)
    llp = ref.propagate(bank, is_labelled, labels, 2, k, t, TAU, True, include_self)
    assert llp["log_density"][dense].min() > llp["log_density"][sparse].max()
    assert knn["labels"][0] == 1, "weighted kNN follows the nearer, dense class"
    assert llp["labels"][0] == 0, "dividing out the density favours the sparse class"
    for dtype in DTYPES:
        for use_density, expected in [(False, knn), (True, llp)]:
            for block_sizes in [ONE_BLOCK, prop.BlockSizes(4, 5)]:
                result = prop.propagate(bank.astype(dtype), is_labelled, labels, 2, k=k, t=t, tau=TAU,
                                        use_density=use_density, include_self=include_self,
                                        block_sizes=block_sizes)
                np.testing.assert_array_equal(result.labels, expected["labels"])
                np.testing.assert_allclose(result.confidences, expected["confidences"], atol=1e-5)
                if use_density:
                    np.testing.assert_allclose(result.log_density, expected["log_density"], rtol=1e-5)


# ----------------------------------------------------------------------------- edge cases and errors

def test_all_rows_labelled_keeps_every_label():
    bank, truth, _, _ = dataset("small")
    result = prop.propagate(bank, np.ones(len(bank), bool), truth, 4, k=K, t=T, tau=TAU)
    np.testing.assert_array_equal(result.labels, truth)
    np.testing.assert_array_equal(result.confidences, 1.0)


def test_largest_allowed_k_and_t():
    """K = M (every labelled row votes) and T = N - 1 (every other row is a neighbour) are valid."""
    bank, _, is_labelled, given = dataset("small")
    m, n = is_labelled.sum(), len(bank)
    for use_density in [True, False]:
        expected = ref.propagate(bank, is_labelled, given, 4, m, n - 1, TAU, use_density, False)
        result = prop.propagate(bank, is_labelled, given, 4, k=int(m), t=n - 1, tau=TAU,
                                use_density=use_density, block_sizes=prop.BlockSizes(17, 23))
        np.testing.assert_array_equal(result.labels, expected["labels"])
        np.testing.assert_allclose(result.confidences, expected["confidences"], atol=2e-7)


ERROR_CASES = {                                   # name -> (change, expected message) given M, N
    "k_above_labelled": lambda m, n: (dict(k=m + 1), f"K={m + 1}"),
    "k_zero": lambda m, n: (dict(k=0), "K=0"),
    "t_equals_n": lambda m, n: (dict(t=n), f"T={n}"),
    "t_above_n": lambda m, n: (dict(t=n + 1), f"T={n + 1}"),
    "t_zero": lambda m, n: (dict(t=0), "T=0"),
    "tau_zero": lambda m, n: (dict(tau=0.0), "tau"),
    "tau_negative": lambda m, n: (dict(tau=-0.07), "tau"),
    "no_labelled": lambda m, n: (dict(), "labelled"),
}


@pytest.mark.parametrize("case", ERROR_CASES)
def test_clear_errors(case):
    bank, _, is_labelled, given = dataset("small")
    change, message = ERROR_CASES[case](int(is_labelled.sum()), len(bank))
    if case == "no_labelled":
        is_labelled = np.zeros_like(is_labelled)
    with pytest.raises(ValueError, match=message):
        prop.propagate(bank, is_labelled, given, 4, **(dict(k=K, t=T, tau=TAU) | change))


@pytest.mark.parametrize("size", ["k", "t", "block_sizes"])
def test_numpy_integer_sizes_are_accepted(size):
    """K, T and block sizes often arrive as NumPy integers (counted from arrays, read from configs);
    the propagation must give the same answer as with Python ints."""
    bank, _, is_labelled, given = dataset("small")
    kwargs = dict(k=K, t=T, tau=TAU, block_sizes=prop.BlockSizes(17, 23))
    expected = prop.propagate(bank, is_labelled, given, 4, **kwargs)
    kwargs[size] = (prop.BlockSizes(np.int64(17), np.int64(23)) if size == "block_sizes"
                    else np.int64(kwargs[size]))
    try:
        result = prop.propagate(bank, is_labelled, given, 4, **kwargs)
    except TypeError as error:
        pytest.fail(f"IMPLEMENTATION BUG: propagate({size}=<np.int64>) raises TypeError (int64 sizes "
                    f"meet int32 shapes inside _block_top_k): {str(error).splitlines()[-1][:200]}")
    np.testing.assert_array_equal(result.labels, expected.labels)
    np.testing.assert_array_equal(result.confidences, expected.confidences)


# ----------------------------------------------------------------------------- the two-stage top-k

def test_two_stage_top_k_equals_top_k_with_ties():
    """_top_k_of_block (top_k of group maxima, then of the best groups' columns) gives exactly
    tf.math.top_k, ties to the lower column included: scores drawn from a few integers tie often.
    With a floor, the entries above it are exactly top_k's, the rest -inf."""
    rng = np.random.default_rng(SEED)
    for trial in range(80):
        rows, columns, k = rng.integers(1, 5), rng.integers(1, 300), int(rng.integers(1, 40))
        group = int(2 ** rng.integers(0, 5))
        scores = rng.integers(0, rng.integers(2, 40), size=(rows, columns)).astype(np.float32)
        floor = rng.integers(0, 40, size=rows).astype(np.float32) if trial % 2 else None
        values, positions = neighbours._top_k_of_block(tf.constant(scores), k, group,
                                                 None if floor is None else tf.constant(floor))
        expected = tf.math.top_k(scores, min(k, columns))
        case = f"{rows}x{columns}, k={k}, group={group}, floor={floor}"
        above = (np.ones(expected.values.shape, bool) if floor is None
                 else expected.values.numpy() > floor[:, None])
        np.testing.assert_array_equal(np.where(above, values, -np.inf),
                                      np.where(above, expected.values, -np.inf), err_msg=case)
        np.testing.assert_array_equal(values.numpy()[~above], -np.inf, err_msg=case)
        np.testing.assert_array_equal(np.where(above, positions, -1),
                                      np.where(above, expected.indices, -1), err_msg=case)


@pytest.mark.parametrize("keys", ["all_rows", "labelled_rows"])
@pytest.mark.parametrize("exclude_self", [False, True], ids=["with_self", "exclude_self"])
@pytest.mark.parametrize("block_sizes", [prop.BlockSizes(64, 256), prop.BlockSizes(13, 7), ONE_BLOCK],
                         ids=str)
def test_top_k_neighbours_matches_brute_force(block_sizes, exclude_self, keys):
    """top_k_neighbours in float64 against ref.nearest. 1001 rows in 256-key blocks leave a last block
    of 233 keys, not whole groups of 4; ~100 labelled keys with a bias fit one block, padded to whole
    groups; queries are labelled and unlabelled rows, so with exclude_self some are keys, some not."""
    bank, _, is_labelled, _ = dataset("large")
    bank, is_labelled = bank[:1001], is_labelled[:1001]
    key_rows = np.arange(1001) if keys == "all_rows" else np.flatnonzero(is_labelled)
    key_bias = None if keys == "all_rows" else np.random.default_rng(SEED).normal(0, 1, len(key_rows))
    query_rows = np.concatenate([np.flatnonzero(is_labelled)[:30], np.flatnonzero(~is_labelled)[:30]])
    k = 6
    scores, positions = neighbours.top_k_neighbours(bank, query_rows, key_rows, k, TAU, key_bias=key_bias,
                                              exclude_self=exclude_self, block_sizes=block_sizes)
    expected_scores, expected_positions = ref.nearest(bank, query_rows, key_rows, k, TAU, key_bias,
                                                      exclude_self)
    np.testing.assert_array_equal(positions.numpy(), expected_positions)
    np.testing.assert_allclose(scores.numpy(), expected_scores, rtol=1e-12)


def test_top_k_neighbours_needs_enough_keys():
    bank, _, _, _ = dataset("small")
    with pytest.raises(ValueError, match="besides the query itself"):
        neighbours.top_k_neighbours(bank, [0, 1], np.arange(5), 5, TAU, exclude_self=True)
    with pytest.raises(ValueError, match="5 keys"):
        neighbours.top_k_neighbours(bank, [0, 1], np.arange(5), 6, TAU)


# ----------------------------------------------------------------------------- split across replicas

@pytest.mark.parametrize("num_rows, num_replicas", [(1, 2), (7, 2), (8, 2), (10, 3), (2, 3)])
def test_replica_shares_cover_every_row_once_in_order(num_rows, num_replicas):
    shares = [neighbours.replica_share(num_rows, replica, num_replicas).numpy()
              for replica in range(num_replicas)]
    assert len({len(share) for share in shares}) == 1, "equal shares: the gather needs equal shapes"
    assert len(shares[0]) == -(-num_rows // num_replicas), "no replica does more than its share"
    np.testing.assert_array_equal(np.concatenate(shares)[:num_rows], np.arange(num_rows))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", METHODS)
def test_propagation_split_over_two_replicas(mirrored_strategy, method, dtype):
    """Under a 2-replica MirroredStrategy each replica takes half the query rows of each pass (odd
    counts: 153 labelled, 1347 unlabelled): the gathered result matches the reference and the
    single-device run."""
    _, _, is_labelled, given = dataset("large")
    block_sizes = prop.BlockSizes(97, 110)
    bank = dataset("large")[0].astype(dtype)
    result = prop.propagate(bank, is_labelled, given, NUM_CLASSES, k=K, t=T, tau=TAU,
                            use_density=METHODS[method], block_sizes=block_sizes,
                            strategy=mirrored_strategy)
    assert_matches_reference(result, reference_run("large", method, False), is_labelled, given, dtype,
                             method)
    single = implementation_run("large", method, False, block_sizes, dtype)
    np.testing.assert_array_equal(result.labels, single.labels)
    np.testing.assert_allclose(result.confidences, single.confidences, rtol=0,
                               atol=CONFIDENCE_ATOL[dtype])


def test_propagation_of_a_mirrored_bank(mirrored_strategy):
    """The training callback's call: the bank a MirroredVariable, each replica reading its own copy,
    after a scatter update as in training (which makes every whole read of the variable a copy)."""
    bank, _, is_labelled, given = dataset("large")
    with mirrored_strategy.scope():
        mirrored_bank = tf.Variable(bank.astype(np.float32), trainable=False,
                                    aggregation=tf.VariableAggregation.NONE)
    rows = tf.range(5)
    mirrored_strategy.run(lambda: mirrored_bank.scatter_update(
        tf.IndexedSlices(tf.gather(bank.astype(np.float32), rows), rows)))
    result = prop.propagate(mirrored_bank, is_labelled, given, NUM_CLASSES, k=K, t=T, tau=TAU,
                            strategy=mirrored_strategy)
    assert_matches_reference(result, reference_run("large", "llp", False), is_labelled, given,
                             "float32", "llp")


def test_variable_banks_of_different_sizes_in_one_process():
    """From the third bank variable on, tf.function reuses a trace made for another variable of the
    same dtype whatever its size: nothing size-dependent may be baked into it. Two smaller banks
    first, then the large one, with the same blocks (the same traced pass): the last must search all
    its rows (with the size baked in it searched only the first 1200 and got log rho off by 0.6)."""
    bank, _, is_labelled, given = dataset("large")
    block_sizes = prop.BlockSizes(97, 110)
    for rows in [1000, 1200, NUM_ROWS]:
        result = prop.propagate(tf.Variable(bank[:rows].astype(np.float32)), is_labelled[:rows],
                                given[:rows], NUM_CLASSES, k=K, t=T, tau=TAU, block_sizes=block_sizes)
    assert_matches_reference(result, reference_run("large", "llp", False), is_labelled, given,
                             "float32", "llp")


def test_command_line_block_sizes_default_to_the_library_defaults():
    """llp-train's and llp-propagate's block sizes default to propagation.BlockSizes(), the measured best
    (one pair of constants in llp_tf/config.py, which the command lines read without TensorFlow)."""
    from llp_tf import config
    from llp_tf.tools import propagate  # pylint: disable=unused-import  (defines its flags)
    from absl import flags
    defaults = config.TrainConfig(dataset="x", workdir="y")
    assert (defaults.propagation_query_rows, defaults.propagation_key_rows) == (
        prop.BlockSizes().query_rows, prop.BlockSizes().key_rows)
    assert (flags.FLAGS["query_rows"].default, flags.FLAGS["key_rows"].default) == (
        prop.BlockSizes().query_rows, prop.BlockSizes().key_rows)
