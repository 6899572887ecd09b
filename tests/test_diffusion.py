"""llp_tf.diffusion against a dense float64 reading of Iscen et al. 2019: the kNN affinity built
entry by entry, and the closed-form Z = (I - alpha W_n)^-1 Y by a dense solve."""
import numpy as np
import pytest

from llp_tf import diffusion, neighbours

NUM_ROWS, DIM, NUM_CLASSES, K, ALPHA, GAMMA = 120, 6, 3, 7, 0.9, 3.0


def random_problem(seed=0):
    """Unit rows in three loose clusters (some similarities negative), 4 labelled rows per class."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, NUM_CLASSES, NUM_ROWS)
    centres = rng.normal(size=(NUM_CLASSES, DIM))
    features = centres[truth] + rng.normal(size=(NUM_ROWS, DIM))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    is_labelled = np.zeros(NUM_ROWS, bool)
    for c in range(NUM_CLASSES):
        is_labelled[np.flatnonzero(truth == c)[:4]] = True
    return features, truth, is_labelled


def dense_reference(features, is_labelled, labels, k, alpha, gamma):
    """(W_n [N, N], Z [N, C]) by the textbook formulas, in float64."""
    num_rows = len(features)
    similarity = features @ features.T
    affinity = np.zeros((num_rows, num_rows))
    for i in range(num_rows):
        others = [j for j in np.argsort(-similarity[i]) if j != i][:k]
        affinity[i, others] = np.maximum(similarity[i, others], 0) ** gamma
    weights = affinity + affinity.T
    degree = weights.sum(axis=1)
    inverse_sqrt = np.where(degree > 0, 1 / np.sqrt(np.where(degree > 0, degree, 1)), 0)
    normalised = inverse_sqrt[:, None] * weights * inverse_sqrt[None, :]
    targets = np.zeros((num_rows, NUM_CLASSES))
    for c in range(NUM_CLASSES):
        seeds = is_labelled & (labels == c)
        targets[seeds, c] = 1 / seeds.sum()
    scores = np.linalg.solve(np.eye(num_rows) - alpha * normalised, targets)
    return normalised, scores


@pytest.mark.parametrize("block_sizes", [neighbours.BlockSizes(), neighbours.BlockSizes(17, 29)])
def test_graph_matches_dense_reference(block_sizes):
    features, truth, is_labelled = random_problem()
    expected, _ = dense_reference(features, is_labelled, truth, K, ALPHA, GAMMA)
    graph = diffusion.normalised_knn_graph(features, K, GAMMA, block_sizes)
    assert (features @ features.T < 0).any()  # the clamp at 0 is exercised
    np.testing.assert_allclose(graph.toarray(), expected, rtol=1e-12, atol=1e-15)


def test_conjugate_gradient_solves_the_closed_form():
    features, truth, is_labelled = random_problem()
    labels = np.where(is_labelled, truth, -1)  # unlabelled labels must never be read
    _, expected = dense_reference(features, is_labelled, truth, K, ALPHA, GAMMA)
    predicted, scores = diffusion.diffuse(features, is_labelled, labels, NUM_CLASSES, k=K, alpha=ALPHA,
                                          gamma=GAMMA, max_iterations=None, rtol=1e-12)
    np.testing.assert_allclose(scores, expected, rtol=1e-8, atol=1e-12)
    expected_labels = np.where(is_labelled, truth, np.argmax(expected, axis=1))
    np.testing.assert_array_equal(predicted, expected_labels)
    assert np.mean(predicted[~is_labelled] == truth[~is_labelled]) > 0.6  # the clusters are found


def test_float32_features_and_default_iterations_give_the_same_labels():
    features, truth, is_labelled = random_problem(seed=1)
    _, expected = dense_reference(features, is_labelled, truth, K, ALPHA, GAMMA)
    predicted, _ = diffusion.diffuse(features.astype(np.float32), is_labelled, truth, NUM_CLASSES,
                                     k=K, alpha=ALPHA, gamma=GAMMA)
    agreement = np.mean(predicted == np.where(is_labelled, truth, np.argmax(expected, axis=1)))
    assert agreement > 0.97


@pytest.mark.parametrize("change, message", [
    (dict(alpha=1.0), "alpha"),
    (dict(k=NUM_ROWS), "k=120"),
    (dict(is_labelled=np.zeros(NUM_ROWS, bool)), "none is labelled"),
    (dict(labels=np.full(NUM_ROWS, NUM_CLASSES)), "must lie in"),
    (dict(is_labelled=np.ones(3, bool)), "features must be"),
])
def test_bad_input_is_named(change, message):
    features, truth, is_labelled = random_problem()
    arguments = dict(features=features, is_labelled=is_labelled, labels=truth,
                     num_classes=NUM_CLASSES, k=K, alpha=ALPHA)
    arguments.update(change)
    with pytest.raises(ValueError, match=message):
        diffusion.diffuse(**arguments)
