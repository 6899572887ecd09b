"""Specification tests of llp_tf.bank against the float64 reference of tests/reference.py.

METHOD.md "Memory bank": after a step, bank[i] <- normalize(m * bank[i] + (1 - m) * v_i) for the batch's
rows only; with several replicas every copy is updated with the whole (all-gathered) global batch, so
the copies stay identical and equal to a one-device run.
"""
import numpy as np
import pytest
import tensorflow as tf

from llp_tf import bank as bank_lib
from tests import reference as ref

NUM_ROWS, DIM, BATCH = 200, 16, 24
MOMENTUM = 0.7          # not the default 0.5, where m and 1 - m swapped would go unnoticed


def unit_rows(rng, rows, dim=DIM):
    x = rng.normal(size=(rows, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32).astype(np.float64)


def initial_bank_and_batches(seed, num_batches):
    """A bank of unit rows and batches of (distinct, unsorted) indices with unit embeddings."""
    rng = np.random.default_rng(seed)
    batches = [(rng.choice(NUM_ROWS, BATCH, replace=False).astype(np.int64), unit_rows(rng, BATCH))
               for _ in range(num_batches)]
    return unit_rows(rng, NUM_ROWS), batches


def reference_updates(bank, batches, momentum=MOMENTUM):
    bank = bank.copy()
    for indices, embeddings in batches:
        bank[indices] = ref.blended_rows(bank[indices], embeddings, momentum)
    return bank


# ----------------------------------------------------------------------------- pure functions

def test_random_unit_rows():
    rows = bank_lib.random_unit_rows(500, DIM, seed=3).numpy()
    assert rows.shape == (500, DIM)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(rows, bank_lib.random_unit_rows(500, DIM, seed=3).numpy())
    assert not np.allclose(rows, bank_lib.random_unit_rows(500, DIM, seed=4).numpy())
    assert np.abs(rows.mean(axis=0)).max() < 0.1, "directions should be spread over the sphere"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("momentum", [0.5, 0.0, 0.9])
def test_blended_rows_matches_reference(momentum, dtype):
    rng = np.random.default_rng(0)
    old, embeddings = unit_rows(rng, BATCH), unit_rows(rng, BATCH)
    result = bank_lib.blended_rows(tf.constant(old.astype(dtype)),
                                   tf.constant(embeddings.astype(np.float32)), momentum)
    assert result.dtype == dtype
    expected = ref.blended_rows(old, embeddings, momentum)
    np.testing.assert_allclose(result.numpy(), expected, rtol=0,
                               atol=1e-14 if dtype == "float64" else 1e-6)
    np.testing.assert_allclose(np.linalg.norm(result.numpy(), axis=1), 1.0,
                               atol=1e-14 if dtype == "float64" else 1e-6)
    if momentum == 0.0:
        np.testing.assert_allclose(result.numpy(), embeddings, atol=1e-6)


# ----------------------------------------------------------------------------- update in place

@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_update_bank_changes_only_the_given_rows(dtype, graph):
    initial, batches = initial_bank_and_batches(seed=1, num_batches=2)
    variable = tf.Variable(initial.astype(dtype), trainable=False)
    update = tf.function(bank_lib.update_bank) if graph else bank_lib.update_bank
    for indices, embeddings in batches:
        before = variable.numpy()
        update(variable, tf.constant(indices), tf.constant(embeddings.astype(np.float32)), MOMENTUM)
        after = variable.numpy()
        untouched = np.setdiff1d(np.arange(NUM_ROWS), indices)
        np.testing.assert_array_equal(after[untouched], before[untouched],
                                      err_msg="rows outside the batch must not change")
        assert not np.any(np.all(after[indices] == before[indices], axis=1)), "batch rows must change"
        np.testing.assert_allclose(np.linalg.norm(after, axis=1), 1.0,
                                   atol=1e-14 if dtype == "float64" else 1e-6)
    np.testing.assert_allclose(variable.numpy(), reference_updates(initial, batches), rtol=0,
                               atol=1e-14 if dtype == "float64" else 2e-6)


# ----------------------------------------------------------------------------- two replicas

def mirrored_bank(strategy, initial):
    with strategy.scope():
        return tf.Variable(initial.astype(np.float32), trainable=False,
                           aggregation=tf.VariableAggregation.NONE)


def run_replicated_updates(strategy, variable, batches, gather):
    """Each replica gets its half of every global batch; with `gather`, each all-gathers the indices
    and embeddings of the whole global batch before updating its copy, as the training step does."""
    replicas = strategy.num_replicas_in_sync

    def replica_step(indices, embeddings):
        if gather:
            context = tf.distribute.get_replica_context()
            indices = context.all_gather(indices, axis=0)
            embeddings = context.all_gather(embeddings, axis=0)
        bank_lib.update_bank(variable, indices, embeddings, MOMENTUM)

    @tf.function
    def step(indices, embeddings):
        strategy.run(replica_step, args=(indices, embeddings))

    for indices, embeddings in batches:
        per_replica = BATCH // replicas

        def shard(array):
            return lambda context: tf.constant(
                array[context.replica_id_in_sync_group * per_replica:
                      (context.replica_id_in_sync_group + 1) * per_replica])

        step(strategy.experimental_distribute_values_from_function(shard(indices)),
             strategy.experimental_distribute_values_from_function(shard(embeddings.astype(np.float32))))


def test_mirrored_update_with_all_gather_equals_one_device(mirrored_strategy):
    initial, batches = initial_bank_and_batches(seed=2, num_batches=3)
    variable = mirrored_bank(mirrored_strategy, initial)
    run_replicated_updates(mirrored_strategy, variable, batches, gather=True)

    copies = [copy.numpy() for copy in variable.values]
    assert len(copies) == 2
    assert len({copy.device for copy in variable.values}) == 2, "one copy on each device"
    np.testing.assert_array_equal(copies[0], copies[1], err_msg="replica copies of the bank diverged")

    single = tf.Variable(initial.astype(np.float32), trainable=False)
    for indices, embeddings in batches:
        bank_lib.update_bank(single, tf.constant(indices), tf.constant(embeddings.astype(np.float32)),
                             MOMENTUM)
    np.testing.assert_allclose(copies[0], single.numpy(), rtol=0, atol=1e-7,
                               err_msg="2 replicas must equal one device on the same global batch")
    np.testing.assert_allclose(copies[0], reference_updates(initial, batches), rtol=0, atol=2e-6)


def test_mirrored_update_without_all_gather_diverges(mirrored_strategy):
    """Negative control: the comparison above can fail. Each replica updating its copy with its own
    half batch leaves the copies different."""
    initial, batches = initial_bank_and_batches(seed=2, num_batches=1)
    variable = mirrored_bank(mirrored_strategy, initial)
    run_replicated_updates(mirrored_strategy, variable, batches, gather=False)
    first, second = [copy.numpy() for copy in variable.values]
    indices = batches[0][0]
    half = BATCH // 2
    np.testing.assert_array_equal(first[indices[half:]], initial[indices[half:]].astype(np.float32))
    np.testing.assert_array_equal(second[indices[:half]], initial[indices[:half]].astype(np.float32))
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf_function"])
def test_read_whole_keeps_its_value_through_later_updates(graph):
    """read_whole shares the bank's buffer (no copy-on-read); a scatter update while that tensor is
    in use must copy first, so the tensor keeps the values read, before and after any earlier
    update, and the bank takes the new rows."""
    bank_rows, batches = initial_bank_and_batches(seed=3, num_batches=3)
    bank = tf.Variable(bank_rows, dtype=tf.float64)
    (first_indices, first_rows), (second_indices, second_rows), _ = batches

    def read_update_read():
        bank_lib.update_bank(bank, first_indices, first_rows, MOMENTUM)  # copy-on-read mode on
        before = bank_lib.read_whole(bank)
        with tf.control_dependencies([before]):
            bank_lib.update_bank(bank, second_indices, second_rows, MOMENTUM)
        return before * 1.0, bank_lib.read_whole(bank)  # `before` used after the update

    if graph:
        read_update_read = tf.function(read_update_read)
    before, after = read_update_read()
    expected_before = reference_updates(bank_rows, batches[:1])
    expected_after = reference_updates(bank_rows, batches[:2])
    np.testing.assert_allclose(before.numpy(), expected_before, rtol=1e-12)
    np.testing.assert_allclose(after.numpy(), expected_after, rtol=1e-12)
    np.testing.assert_allclose(bank.numpy(), expected_after, rtol=1e-12)
