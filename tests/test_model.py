"""LLPModel's train step against a float64 reference, and the 2-replica MirroredStrategy path against
a single device fed the same global batches."""
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from llp_tf.backbones import build_backbone, feature_dim
from llp_tf.model import LLPModel, LLPState
from tests import reference as ref

N, D, Q, B, H = 64, 8, 4, 16, 8
F = feature_dim("small_cnn")
TAU = 0.07


def tiny_backbone(seed):
    """The real small_cnn (BatchNorm included: its statistics must agree across replicas too)."""
    keras.utils.set_random_seed(seed)
    return build_backbone("small_cnn", (H, H, 1), weight_decay=1e-3, width=1)


def make_model(learning_rate, seed=0, use_confidence=True, use_category_loss=True, weight_decay=1e-3,
               **departures):
    rng = np.random.default_rng(seed)
    is_labelled = rng.random(N) < 0.3
    labels = rng.integers(0, Q, N)
    state = LLPState(is_labelled, labels, D, seed=seed)
    backbone = tiny_backbone(seed)
    model = LLPModel(backbone, Q, state, tau=TAU, bank_momentum=0.5, use_confidence=use_confidence,
                     use_category_loss=use_category_loss, weight_decay=weight_decay, **departures)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9))
    model(tf.zeros((1, H, H, 1)))
    model.embedding_head.kernel.assign(rng.normal(size=(F, D)).astype(np.float32) * 0.5)
    model.classifier.kernel.assign(rng.normal(size=(F, Q)).astype(np.float32) * 0.5)
    # Pseudo-labels and confidences as after a propagation.
    state.labels.assign(labels)
    state.confidences.assign(np.where(is_labelled, 1.0, rng.uniform(0.2, 1.0, N)).astype(np.float32))
    return model, labels


def batches(seed=1, steps=3, weak_views=False):
    """Batches as data.train_dataset gives them: (images, true labels, indices), and with weak_views
    a fourth element, other images standing for the weakly augmented views."""
    rng = np.random.default_rng(seed)
    images = rng.random((steps * B, H, H, 1)).astype(np.float32)
    true_labels = rng.integers(0, Q, steps * B)
    indices = rng.permutation(N)[: steps * B]
    elements = (images, true_labels, indices)
    if weak_views:
        weak = np.clip(images + rng.normal(0, 0.3, images.shape), 0, 1).astype(np.float32)
        elements += (weak,)
    return tf.data.Dataset.from_tensor_slices(elements).batch(B)


def logsumexp(x, axis=-1):
    top = np.max(x, axis=axis, keepdims=True)
    return (top + np.log(np.sum(np.exp(x - top), axis=axis, keepdims=True))).squeeze(axis)


def reference_loss(model, bank, images, true_labels, indices, phase, weight_decay=1e-3,
                   warmup_category_loss=False, confidence_threshold=0.0):
    """Eq. 3-4 in float64 from the model's outputs and the bank before the step (and the departures
    from the paper that the model offers)."""
    outputs = model(images, training=True)
    v = outputs["embeddings"].numpy().astype(np.float64)
    logits = outputs["logits"].numpy().astype(np.float64)
    bank = bank.astype(np.float64)
    current = model.state.labels.numpy()
    conf = model.state.confidences.numpy().astype(np.float64)[indices]
    sims = v @ bank.T / TAU
    if phase == "instance":
        per = logsumexp(sims) - sims[np.arange(len(indices)), indices]
        if warmup_category_loss:
            labelled = model.state.is_labelled.numpy()[indices]
            y = np.where(labelled, current[indices], 0)
            per = per + labelled * (logsumexp(logits) - logits[np.arange(len(indices)), y])
    elif phase == "supervised":
        per = logsumexp(logits) - logits[np.arange(len(indices)), true_labels]
    else:
        y = current[indices]
        same = current[None, :] == y[:, None]
        agg = logsumexp(sims) - logsumexp(np.where(same, sims, -np.inf))
        cat = logsumexp(logits) - logits[np.arange(len(indices)), y]
        per = np.where(conf >= confidence_threshold, conf, 0.0) * (agg + cat)
    return per.mean() + weight_penalty(model, weight_decay)


def weight_penalty(model, weight_decay=1e-3):
    """The L2 penalty on every kernel, in float64."""
    kernels = [w for w in model.trainable_weights if w.path.endswith("kernel")]
    return weight_decay * sum(np.sum(k.numpy().astype(np.float64) ** 2) for k in kernels)


@pytest.mark.parametrize("phase", ["instance", "llp", "supervised"])
def test_step_loss_and_bank_update_match_reference(phase):
    model, _ = make_model(learning_rate=0.0)  # weights stay put, so the reference sees the same net
    model.phase = phase
    images, true_labels, indices = next(iter(batches(steps=1)))
    bank_before = model.state.bank.numpy()
    expected = reference_loss(model, bank_before, images, true_labels.numpy(), indices.numpy(), phase)
    embeddings = model(images, training=True)["embeddings"].numpy().astype(np.float64)
    history = model.fit(batches(steps=1), epochs=1, verbose=0)
    np.testing.assert_allclose(history.history["loss"][0], expected, rtol=1e-5)
    blended = 0.5 * bank_before[indices.numpy()] + 0.5 * embeddings
    blended /= np.linalg.norm(blended, axis=1, keepdims=True)
    bank_after = model.state.bank.numpy()
    np.testing.assert_allclose(bank_after[indices.numpy()], blended, atol=1e-6)
    untouched = np.setdiff1d(np.arange(N), indices.numpy())
    np.testing.assert_array_equal(bank_after[untouched], bank_before[untouched])


@pytest.mark.parametrize("phase, departure", [("instance", {"warmup_category_loss": True}),
                                               ("llp", {"confidence_threshold": 0.6})])
def test_departures_from_the_paper_match_reference(phase, departure):
    model, _ = make_model(learning_rate=0.0, **departure)
    model.phase = phase
    images, true_labels, indices = next(iter(batches(steps=1)))
    args = (model, model.state.bank.numpy(), images, true_labels.numpy(), indices.numpy(), phase)
    expected = reference_loss(*args, **departure)
    assert not np.isclose(expected, reference_loss(*args), rtol=1e-3)  # the departure matters here
    history = model.fit(batches(steps=1), epochs=1, verbose=0)
    np.testing.assert_allclose(history.history["loss"][0], expected, rtol=1e-5)


CONSISTENCY = {"consistency_weight": 2.0, "consistency_threshold": 0.36}  # splits the test batch


@pytest.mark.parametrize("phase", ["instance", "llp", "supervised"])
def test_consistency_departure_matches_reference(phase):
    """In LLP epochs the loss gains weight x the consistency loss of each unlabelled example (its weak
    view's confident prediction, with batch-norm in inference mode, as its training view's target);
    in the other phases the weak views change nothing."""
    model, _ = make_model(learning_rate=0.0, **CONSISTENCY)
    model.phase = phase
    images, true_labels, indices, weak = next(iter(batches(steps=1, weak_views=True)))
    indices = indices.numpy()
    expected = reference_loss(model, model.state.bank.numpy(), images, true_labels.numpy(), indices,
                              phase)
    if phase == "llp":
        strong_logits = model(images, training=True)["logits"].numpy()
        weak_logits = model(weak, training=False)["logits"].numpy()
        term, mask = ref.consistency_loss(strong_logits, weak_logits, CONSISTENCY["consistency_threshold"])
        unlabelled = ~model.state.is_labelled.numpy()[indices]
        assert 0 < (mask * unlabelled).sum() < unlabelled.sum()  # the threshold takes some, not all
        expected += CONSISTENCY["consistency_weight"] * np.mean(term * unlabelled)
        expected_mask = (mask * unlabelled).sum() / unlabelled.sum()
    history = model.fit(batches(steps=1, weak_views=True), epochs=1, verbose=0).history
    np.testing.assert_allclose(history["loss"][0], expected, rtol=1e-5)
    if phase == "llp":
        assert history["consistency_loss"][0] > 0
        np.testing.assert_allclose(history["consistency_mask"][0], expected_mask, rtol=1e-6)


def test_consistency_in_the_warmup_matches_reference():
    """--consistency_warmup: in the supervised warm-up the labelled rows' cross-entropy against their
    stored labels, times labelled_weight, and each unlabelled row's consistency term (its true label
    in the batch is never read); the loss of the plain supervised phase otherwise."""
    weight = 3.0
    model, _ = make_model(learning_rate=0.0, consistency_warmup=True, labelled_weight=weight,
                          **CONSISTENCY)
    model.phase = "supervised"
    images, true_labels, indices, weak = next(iter(batches(steps=1, weak_views=True)))
    indices = indices.numpy()
    outputs = model(images, training=True)
    logits = outputs["logits"].numpy().astype(np.float64)
    labelled = model.state.is_labelled.numpy()[indices]
    stored = model.state.labels.numpy()[indices]
    assert 0 < labelled.sum() < len(indices)
    assert (stored[labelled] != true_labels.numpy()[labelled]).any()  # the stored labels are the ones read
    category = logsumexp(logits) - logits[np.arange(len(indices)), np.where(labelled, stored, 0)]
    term, mask = ref.consistency_loss(logits.astype(np.float32),
                                      model(weak, training=False)["logits"].numpy(),
                                      CONSISTENCY["consistency_threshold"])
    assert 0 < (mask * ~labelled).sum() < (~labelled).sum()  # the threshold takes some, not all
    expected = np.mean(weight * labelled * category
                       + CONSISTENCY["consistency_weight"] * ~labelled * term) + weight_penalty(model)
    history = model.fit(batches(steps=1, weak_views=True), epochs=1, verbose=0).history
    np.testing.assert_allclose(history["loss"][0], expected, rtol=1e-5)
    np.testing.assert_allclose(history["consistency_mask"][0],
                               (mask * ~labelled).sum() / (~labelled).sum(), rtol=1e-6)
    with pytest.raises(ValueError, match="needs batches that carry weak views"):
        model.fit(batches(steps=1), epochs=1, verbose=0)


def test_the_consistency_departure_refuses_batches_without_weak_views():
    model, _ = make_model(learning_rate=0.0, **CONSISTENCY)
    model.phase = "llp"
    with pytest.raises(ValueError, match="needs batches that carry weak views"):
        model.fit(batches(steps=1), epochs=1, verbose=0)


def test_without_the_consistency_departure_weak_views_change_nothing():
    model, _ = make_model(learning_rate=0.0)
    model.phase = "llp"
    images, true_labels, indices, _ = next(iter(batches(steps=1, weak_views=True)))
    expected = reference_loss(model, model.state.bank.numpy(), images, true_labels.numpy(),
                              indices.numpy(), "llp")
    history = model.fit(batches(steps=1, weak_views=True), epochs=1, verbose=0).history
    np.testing.assert_allclose(history["loss"][0], expected, rtol=1e-5)
    assert "consistency_loss" not in history


def test_confidence_and_category_switches_change_the_loss():
    images, true_labels, indices = next(iter(batches(steps=1)))
    losses = []
    for use_confidence, use_category in [(True, True), (False, True), (True, False)]:
        model, _ = make_model(0.0, use_confidence=use_confidence, use_category_loss=use_category)
        model.phase = "llp"
        losses.append(model.fit(batches(steps=1), epochs=1, verbose=0).history["loss"][0])
    assert len(set(np.round(losses, 6))) == 3


def train_under(strategy, phase, **departures):
    with strategy.scope():
        model, _ = make_model(learning_rate=0.5, **departures)
    model.phase = phase
    model.fit(batches(steps=3, weak_views=bool(departures)), epochs=2, verbose=0)
    return model


@pytest.mark.parametrize("phase, departures", [
    ("instance", {}), ("llp", {}), ("llp", CONSISTENCY),
    ("supervised", {"consistency_warmup": True, "labelled_weight": 3.0, **CONSISTENCY})])
def test_two_replicas_equal_one_device(phase, departures, mirrored_strategy):
    single = train_under(tf.distribute.get_strategy(), phase, **departures)
    mirrored = train_under(mirrored_strategy, phase, **departures)
    copies = [v.numpy() for v in mirrored.state.bank.values]
    assert len(copies) == 2
    np.testing.assert_array_equal(copies[0], copies[1])
    np.testing.assert_allclose(copies[0], single.state.bank.numpy(), atol=2e-5)
    # The bank moved: a silent no-op update would pass the comparisons above.
    assert not np.allclose(single.state.bank.numpy(), make_model(0.5)[0].state.bank.numpy())
    for a, b in zip(single.weights, mirrored.weights):  # BatchNorm moving statistics included
        if hasattr(b.value, "values"):
            copies = [v.numpy() for v in b.value.values]
            np.testing.assert_allclose(copies[0], copies[1], atol=1e-6, err_msg=b.path)
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4, err_msg=a.path)


@pytest.mark.parametrize("phase, frozen, trained", [("instance", "classifier", "embedding_head"),
                                                    ("supervised", "embedding_head", "classifier"),
                                                    ("llp", None, "classifier")])
def test_a_head_no_loss_of_the_phase_reaches_is_not_trained(phase, frozen, trained, caplog):
    """Instance recognition leaves the classifier as it was, supervised training the embedding head
    (no update from the weight penalty alone, and no Keras "Gradients do not exist" warning); the
    other head and LLP's both heads do move."""
    model, _ = make_model(learning_rate=0.1)
    model.phase = phase
    before = {name: [v.numpy().copy() for v in getattr(model, name).trainable_variables]
              for name in ("classifier", "embedding_head")}
    with caplog.at_level("WARNING"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(batches(steps=2), epochs=1, verbose=0)
    said = caplog.text + " ".join(str(w.message) for w in caught)
    assert "Gradients do not exist" not in said
    for name, values in before.items():
        after = [v.numpy() for v in getattr(model, name).trainable_variables]
        unchanged = all(np.array_equal(a, b) for a, b in zip(values, after))
        assert unchanged == (name == frozen), name
    assert trained != frozen
