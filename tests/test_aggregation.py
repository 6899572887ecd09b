"""The aggregation metric (paper Fig. 2b-c) against a float64 NumPy reference."""
import numpy as np

from llp_tf import aggregation


def reference_norms(bank, labels, num_classes):
    norms = np.full(num_classes, np.nan)
    for c in range(num_classes):
        rows = bank[labels == c].astype(np.float64)
        if len(rows):
            norms[c] = np.linalg.norm(rows.mean(axis=0))
    return norms


def test_class_mean_norms_match_reference():
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(500, 16))
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    labels = rng.integers(-1, 6, 500)  # -1: rows to skip; class 6 of 7 is empty
    got = aggregation.class_mean_norms(bank.astype(np.float32), labels, 7)
    want = reference_norms(bank, labels, 7)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert np.isnan(got[6])


def test_tight_clusters_score_higher_than_scattered_ones():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 100)
    centres = rng.normal(size=(4, 8))
    tight = centres[labels] + 0.1 * rng.normal(size=(400, 8))
    loose = centres[labels] + 3.0 * rng.normal(size=(400, 8))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    is_labelled = rng.random(400) < 0.2
    tight_summary = aggregation.aggregation_summary(unit(tight), labels, is_labelled, 4)
    loose_summary = aggregation.aggregation_summary(unit(loose), labels, is_labelled, 4)
    assert tight_summary["aggregation/norm_mean"] > 0.9 > loose_summary["aggregation/norm_mean"]
    want = np.nanmean(reference_norms(unit(tight), np.where(is_labelled, labels, -1), 4))
    np.testing.assert_allclose(tight_summary["aggregation/norm_mean_labelled"], want, rtol=1e-5)
