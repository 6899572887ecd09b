"""Local label propagation (paper Eq. 5-8) and weighted kNN classification over the memory bank.

The density of each labelled row (Eq. 7) and the label and confidence of each unlabelled row from
its K best labelled rows (Eq. 5-6, 8) are passes of the blocked neighbour search in neighbours.py,
so no N x M matrix ever exists; every function here takes its block sizes as `block_sizes`
(neighbours.BlockSizes) and a tf.distribute strategy whose replicas share the query rows.
"""
import dataclasses

import numpy as np
import tensorflow as tf

from llp_tf.neighbours import BlockSizes, search, vote


@dataclasses.dataclass
class Propagation:
    """Result of one propagation pass over the bank."""
    labels: np.ndarray          # int64 [N]: true label where labelled, pseudo-label elsewhere
    confidences: np.ndarray     # float32 [N]: 1 where labelled, p_{y_u} elsewhere (Eq. 6)
    log_density: np.ndarray     # float32 [M]: log rho of each labelled row (Eq. 7), 0 without density


def log_density(bank, labelled_rows, t, tau, include_self=False, block_sizes=BlockSizes(),
                strategy=None):
    """log rho(l) = log sum over the T nearest bank rows j of exp(bank[l].bank[j] / tau) (Eq. 7).

    Neighbours are searched among all N rows; include_self counts l among its own neighbours (the
    authors' released code) instead of skipping it (the paper's text, our default). [M] tensor.
    """
    (result,) = search("log_density", bank, labelled_rows, np.arange(int(bank.shape[0])), t, tau,
                       exclude_self=not include_self, block_sizes=block_sizes, strategy=strategy)
    return result


def classify_by_neighbours(bank, query_rows, labelled_rows, labelled_labels, num_classes, k, tau,
                           labelled_log_density=None, block_sizes=BlockSizes(), strategy=None):
    """Labels and confidences of query rows from their K best labelled rows.

    With labelled_log_density, the score of labelled l is bank[l].v/tau - log rho(l) and the K best
    by that score vote (LLP, Eq. 8); without it, the K nearest vote with exp(sim/tau) (weighted kNN).
    Returns (labels int64 [Q], confidences [Q]) tensors.
    """
    key_bias = None if labelled_log_density is None else -tf.convert_to_tensor(labelled_log_density)
    return search("vote", bank, query_rows, labelled_rows, k, tau, key_bias=key_bias,
                  key_labels=tf.cast(labelled_labels, tf.int32), num_classes=num_classes,
                  block_sizes=block_sizes, strategy=strategy)


def propagate(bank, is_labelled, labels, num_classes, k=10, t=25, tau=0.07, use_density=True,
              include_self=False, block_sizes=BlockSizes(), strategy=None) -> Propagation:
    """One LLP pass over the bank: density of the labelled rows, then labels of all unlabelled rows.

    bank: [N, D] array, tensor or variable (a mirrored one: each replica reads its own copy).
    is_labelled: bool [N]; labels: int [N], read only where labelled. use_density=False gives the
    plain weighted-kNN propagation (the "Top-K" ablation without "lw"). strategy: a tf.distribute
    strategy whose replicas share the rows of each pass (default: the current strategy).
    """
    is_labelled = np.asarray(is_labelled, bool)
    labels = np.asarray(labels, np.int64)
    labelled_rows = np.flatnonzero(is_labelled).astype(np.int32)
    unlabelled_rows = np.flatnonzero(~is_labelled).astype(np.int32)
    check_propagation_sizes(len(is_labelled), len(labelled_rows), k, t, tau)
    if use_density:
        density = log_density(bank, labelled_rows, t, tau, include_self=include_self,
                              block_sizes=block_sizes, strategy=strategy)
    else:
        density = None
    pseudo, confidence = classify_by_neighbours(
        bank, unlabelled_rows, labelled_rows, labels[labelled_rows], num_classes, k, tau,
        labelled_log_density=density, block_sizes=block_sizes, strategy=strategy)
    all_labels = labels.copy()
    all_labels[unlabelled_rows] = pseudo.numpy()
    confidences = np.ones(len(labels), np.float32)
    confidences[unlabelled_rows] = confidence.numpy()
    log_rho = np.zeros(len(labelled_rows), np.float32) if density is None else density.numpy()
    return Propagation(all_labels, confidences, log_rho.astype(np.float32))


def check_propagation_sizes(num_rows, num_labelled, k, t, tau):
    """Clear errors for settings the propagation cannot honour, before any work is done."""
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    if num_labelled == 0:
        raise ValueError("propagation needs at least one labelled example; none is labelled")
    if not 1 <= k <= num_labelled:
        raise ValueError(f"K={k} neighbours need 1 <= K <= the {num_labelled} labelled examples")
    if not 1 <= t < num_rows:
        raise ValueError(f"T={t} density neighbours need 1 <= T < N={num_rows}")
