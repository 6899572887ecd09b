"""Specification tests of llp_tf.losses against the float64 references of tests/reference.py.

METHOD.md "Non-parametric softmax" and "Loss" (paper Eq. 1-4): L_A = -log P(A|v) over the whole bank
in log space, the instance loss as L_A with every example its own class, L_C the softmax cross-entropy,
the total c * (L_C + L_A). Float32 results must be within 1e-5 relative of a direct float64 computation.
"""
import numpy as np
import pytest
import tensorflow as tf

from llp_tf import losses
from tests import reference as ref

NUM_ROWS, DIM, NUM_CLASSES, BATCH = 1500, 16, 6, 64
EXACT_ROWS = 8           # the first examples of the batch embed exactly onto their own bank row
TAUS = [0.07, 0.01]      # 0.07: exp(1/tau) = 1.6e6; 0.01: exp(1/tau) = 2.7e43 overflows float32
# Relative tolerances of the losses against the float64 reference: the 1e-5 at the paper's
# tau = 0.07. At tau = 0.01 the float32 logits (~100) themselves carry ~1e-5 absolute error, which no
# float32 implementation can beat, so 1e-4 there. Float64 must be far tighter.
LOSS_RTOL = {("float32", 0.07): 1e-5, ("float32", 0.01): 1e-4,
             ("float64", 0.07): 1e-10, ("float64", 0.01): 1e-10}
PRECISION_HINT = ("IMPLEMENTATION PRECISION: L_A written as lse_all - lse_A subtracts two numbers "
                  "near 1/tau and loses relative precision where P(A|v) ~ 1 (small losses); "
                  "softplus(lse_notA - lse_A) is the same quantity without the cancellation")


def batch_against_bank(seed=0):
    """A bank of clustered unit rows with current labels (true labels, 10% replaced at random as
    pseudo-labels would be), and a batch of examples: each a perturbed copy of its own bank row (the
    first EXACT_ROWS an exact copy) with that row's current label. All float32-representable."""
    rng = np.random.default_rng(seed)
    bank, truth, _ = ref.clustered_bank(seed, NUM_ROWS, DIM, NUM_CLASSES)
    relabel = rng.random(NUM_ROWS) < 0.1
    bank_labels = np.where(relabel, rng.integers(0, NUM_CLASSES, NUM_ROWS), truth)
    indices = rng.choice(NUM_ROWS, BATCH, replace=False)
    embeddings = bank[indices] + 0.3 * rng.normal(size=(BATCH, DIM)) / np.sqrt(DIM)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    embeddings[:EXACT_ROWS] = bank[indices[:EXACT_ROWS]]
    embeddings = embeddings.astype(np.float32).astype(np.float64)
    return dict(bank=bank, bank_labels=bank_labels, indices=indices, embeddings=embeddings,
                labels=bank_labels[indices])


DATA = batch_against_bank()


def as_tensors(dtype, *names):
    return [tf.constant(DATA[name].astype(dtype) if DATA[name].dtype.kind == "f" else DATA[name])
            for name in names]


# ----------------------------------------------------------------------------- the references

def test_reference_aggregation_is_eq_1_to_3():
    """The log-space reference equals the paper's form -log sum_{i in A} P(i|v), P from Eq. 1, which
    float64 can evaluate directly at tau = 0.07 and 0.01."""
    for tau in TAUS:
        for v, y in zip(DATA["embeddings"][:10], DATA["labels"][:10]):
            p = np.exp(DATA["bank"] @ v / tau) / np.sum(np.exp(DATA["bank"] @ v / tau))   # Eq. 1
            p_a = p[DATA["bank_labels"] == y].sum()                                       # Eq. 2
            expected = ref.aggregation_loss(v[None], DATA["bank"], DATA["bank_labels"], [y], tau)
            # -log(p_a) itself is only good to ~1e-16 absolute where p_a ~ 1.
            np.testing.assert_allclose(expected, -np.log(p_a), rtol=1e-10, atol=1e-15)     # Eq. 3


def test_test_batch_is_not_trivial():
    """At tau = 0.07 the losses span small (P(A|v) near 1, the hard case for precision) to large
    (v among another class's rows) values; at tau = 0.01 some are tiny. Every class is in the batch."""
    expected = ref.aggregation_loss(DATA["embeddings"], DATA["bank"], DATA["bank_labels"],
                                    DATA["labels"], 0.07)
    assert expected.min() < 0.1 and expected.max() > 1, expected
    expected = ref.aggregation_loss(DATA["embeddings"], DATA["bank"], DATA["bank_labels"],
                                    DATA["labels"], 0.01)
    assert expected.min() < 1e-6 and expected.max() > 1, expected
    assert len(np.unique(DATA["labels"])) == NUM_CLASSES


# ----------------------------------------------------------------------------- bank logits

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bank_logits(dtype):
    bank, embeddings = as_tensors(dtype, "bank", "embeddings")
    result = losses.bank_logits(tf.cast(embeddings, tf.float32), bank, 0.07)
    assert result.dtype == bank.dtype and result.shape == (BATCH, NUM_ROWS)
    np.testing.assert_allclose(result.numpy(), DATA["embeddings"] @ DATA["bank"].T / 0.07,
                               rtol=1e-12 if dtype == "float64" else 1e-6,
                               atol=0 if dtype == "float64" else 1e-5)


# ----------------------------------------------------------------------------- aggregation loss

@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("tau", TAUS)
def test_aggregation_loss_matches_reference(tau, dtype):
    embeddings, bank = as_tensors(dtype, "embeddings", "bank")
    result = losses.aggregation_loss(embeddings, bank, tf.constant(DATA["bank_labels"]),
                                     tf.constant(DATA["labels"]), tau)
    expected = ref.aggregation_loss(DATA["embeddings"], DATA["bank"], DATA["bank_labels"],
                                    DATA["labels"], tau)
    assert result.shape == (BATCH,) and result.dtype == bank.dtype
    assert np.all(np.isfinite(result.numpy())), "log-space: no inf/nan even where exp(1/tau) overflows"
    np.testing.assert_allclose(result.numpy(), expected, rtol=LOSS_RTOL[dtype, tau],
                               err_msg=PRECISION_HINT)


@pytest.mark.parametrize("tau", TAUS)
def test_aggregation_loss_finite_when_embedding_is_its_own_bank_row(tau):
    """v = bank[i] exactly, so bank[i].v/tau = 1/tau is the largest logit: L_A and its gradient stay
    finite, also when A = {i} alone. Agreement to the float32 resolution of logits ~1/tau."""
    rows = DATA["indices"][:EXACT_ROWS]
    bank = tf.constant(DATA["bank"], tf.float32)
    embeddings = tf.constant(DATA["bank"][rows], tf.float32)
    for bank_labels, labels in [(DATA["bank_labels"], DATA["bank_labels"][rows]),
                                (np.arange(NUM_ROWS), rows)]:
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            loss = losses.aggregation_loss(embeddings, bank, tf.constant(bank_labels),
                                           tf.constant(labels), tau)
            mean_loss = tf.reduce_mean(loss)
        gradient = tape.gradient(mean_loss, embeddings)
        assert np.all(np.isfinite(loss.numpy())) and np.all(np.isfinite(gradient.numpy()))
        assert np.all(loss.numpy() >= 0)
        expected = ref.aggregation_loss(DATA["bank"][rows], DATA["bank"], bank_labels, labels, tau)
        np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5, atol=8 * 2.0**-23 / tau)


# ----------------------------------------------------------------------------- instance loss

@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("tau", TAUS)
def test_instance_loss_is_aggregation_with_every_example_its_own_class(tau, dtype):
    embeddings, bank = as_tensors(dtype, "embeddings", "bank")
    indices = tf.constant(DATA["indices"])
    result = losses.instance_loss(embeddings, bank, indices, tau).numpy()
    as_aggregation = losses.aggregation_loss(embeddings, bank, tf.range(NUM_ROWS, dtype=tf.int64),
                                             indices, tau).numpy()
    expected = ref.instance_loss(DATA["embeddings"], DATA["bank"], DATA["indices"], tau)  # -log P(i|v)
    assert np.all(np.isfinite(result))
    np.testing.assert_allclose(result, as_aggregation, rtol=LOSS_RTOL[dtype, tau])
    np.testing.assert_allclose(as_aggregation, expected, rtol=LOSS_RTOL[dtype, tau],
                               err_msg=PRECISION_HINT)
    np.testing.assert_allclose(result, expected, rtol=LOSS_RTOL[dtype, tau],
                               err_msg=PRECISION_HINT.replace("lse_A", "logit_i"))


# ----------------------------------------------------------------------------- category and total

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_category_loss_is_softmax_cross_entropy(dtype):
    rng = np.random.default_rng(1)
    logits = (rng.normal(size=(BATCH, NUM_CLASSES)) * 20).astype(np.float32).astype(np.float64)
    labels = rng.integers(0, NUM_CLASSES, BATCH)
    result = losses.category_loss(tf.constant(labels), tf.constant(logits.astype(dtype))).numpy()
    expected = ref.softmax_cross_entropy(labels, logits)
    assert result.shape == (BATCH,) and np.all(np.isfinite(result))
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("use_category", [True, False])
@pytest.mark.parametrize("use_confidence", [True, False])
def test_llp_loss_is_confidence_times_category_plus_aggregation(use_confidence, use_category):
    """Eq. 4 without the weight penalty: c * (L_C + L_A); the flags drop c and/or L_C."""
    rng = np.random.default_rng(2)
    aggregation, category = rng.uniform(0.1, 5, BATCH), rng.uniform(0.1, 5, BATCH)
    confidences = rng.uniform(0.2, 1, BATCH)
    expected = (category + aggregation) if use_category else aggregation
    if use_confidence:
        expected = confidences * expected
    for dtype in ["float64", "float32"]:
        result = losses.llp_loss(tf.constant(aggregation.astype(dtype)),
                                 tf.constant(category.astype(dtype)),
                                 tf.constant(confidences.astype(np.float32)),
                                 use_confidence=use_confidence, use_category=use_category).numpy()
        np.testing.assert_allclose(result, expected, rtol=1e-6)


# ----------------------------------------------------------------------------- gradients

def test_reference_gradient_matches_finite_differences():
    """The analytic gradient (1/B) sum_j (P(j|v) - P(j|v, A)) bank_j / tau against central differences
    of the reference loss, in float64, for a few examples (each loss depends on its own v only)."""
    tau, step = 0.07, 1e-6
    analytic = ref.aggregation_loss_gradient(DATA["embeddings"], DATA["bank"], DATA["bank_labels"],
                                             DATA["labels"], tau)
    for b in [0, EXACT_ROWS, BATCH - 1]:
        numeric = np.zeros(DIM)
        for d in range(DIM):
            shifted = np.stack([DATA["embeddings"][b]] * 2)
            shifted[0, d] += step
            shifted[1, d] -= step
            up, down = ref.aggregation_loss(shifted, DATA["bank"], DATA["bank_labels"],
                                            [DATA["labels"][b]] * 2, tau)
            numeric[d] = (up - down) / (2 * step) / BATCH
        np.testing.assert_allclose(analytic[b], numeric, rtol=1e-5, atol=1e-7 * np.abs(numeric).max())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("tau", TAUS)
def test_aggregation_loss_gradient(tau, dtype):
    embeddings, bank = as_tensors(dtype, "embeddings", "bank")
    with tf.GradientTape() as tape:
        tape.watch(embeddings)
        loss = tf.reduce_mean(losses.aggregation_loss(
            embeddings, bank, tf.constant(DATA["bank_labels"]), tf.constant(DATA["labels"]), tau))
    gradient = tape.gradient(loss, embeddings).numpy()
    expected = ref.aggregation_loss_gradient(DATA["embeddings"], DATA["bank"], DATA["bank_labels"],
                                             DATA["labels"], tau)
    assert np.all(np.isfinite(gradient))
    # Relative to the gradient of the mean loss as a whole ([B, D]): examples with P(A|v) ~ 1 have
    # gradients many orders of magnitude below the rest, and contribute nothing to a training step.
    relative = np.linalg.norm(gradient - expected) / np.linalg.norm(expected)
    assert relative < (1e-10 if dtype == "float64" else 1e-4), relative
    scale = np.abs(expected).max()
    np.testing.assert_allclose(gradient, expected, rtol=1e-4, atol=1e-4 * scale if dtype == "float32"
                               else 1e-10 * scale)


def test_instance_loss_gradient_equals_aggregation_gradient_with_instance_labels():
    embeddings, bank = as_tensors("float64", "embeddings", "bank")
    with tf.GradientTape() as tape:
        tape.watch(embeddings)
        loss = tf.reduce_mean(losses.instance_loss(embeddings, bank, tf.constant(DATA["indices"]),
                                                   0.07))
    expected = ref.aggregation_loss_gradient(DATA["embeddings"], DATA["bank"], np.arange(NUM_ROWS),
                                             DATA["indices"], 0.07)
    np.testing.assert_allclose(tape.gradient(loss, embeddings).numpy(), expected, rtol=1e-8,
                               atol=1e-12)


# ----------------------------------------------------------------------------- consistency departure

@pytest.mark.parametrize("threshold", [0.0, 0.6, 0.95])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_consistency_loss_matches_reference(threshold, dtype):
    """FixMatch's unlabelled loss: the weak view's confident argmax as the strong view's target."""
    rng = np.random.default_rng(3)
    weak = (rng.normal(size=(BATCH, NUM_CLASSES)) * 3).astype(np.float32).astype(np.float64)
    weak[:4, 0] = 30.0  # certainly confident rows, so the mask holds ones at every threshold < 1
    strong = (rng.normal(size=(BATCH, NUM_CLASSES)) * 3).astype(np.float32).astype(np.float64)
    loss, mask = losses.consistency_loss(tf.constant(strong.astype(dtype)),
                                         tf.constant(weak.astype(dtype)), threshold)
    expected, expected_mask = ref.consistency_loss(strong, weak, threshold)
    np.testing.assert_array_equal(mask.numpy(), expected_mask)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5, atol=1e-6)
    if 0 < threshold < 1:  # the test data reach both sides of the threshold
        assert 0 < expected_mask.sum() < BATCH


def test_consistency_loss_sends_no_gradient_to_the_weak_view():
    weak = tf.Variable(np.random.default_rng(4).normal(size=(8, NUM_CLASSES)).astype(np.float32) * 5)
    strong = tf.Variable(np.random.default_rng(5).normal(size=(8, NUM_CLASSES)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss, _ = losses.consistency_loss(strong, weak, 0.0)
        total = tf.reduce_sum(loss)
    weak_gradient, strong_gradient = tape.gradient(total, [weak, strong])
    assert weak_gradient is None
    assert np.abs(strong_gradient.numpy()).sum() > 0
