"""Diffusion over a kNN graph (Iscen et al. 2019, "Label Propagation for Deep Semi-supervised
Learning"): the global propagation of DLP, one of LLP's comparisons (paper Table 5, LP_DLP).

Over unit feature rows v_1..v_N:
  affinity   a_ij = max(v_i . v_j, 0) ** gamma  when j is one of the k nearest neighbours of i (j != i)
  graph      W = A + A^T,  W_n = D^-1/2 W D^-1/2  with D = diag(W 1)
  solve      (I - alpha W_n) z_c = y_c for each class c, y_c[i] = 1 / |L_c| on the rows labelled c
             (their code's class-size normalisation of the paper's one-hot Y)
  labels     argmax_c z_c[i] for unlabelled rows; labelled rows keep their label.

The neighbour search is neighbours.top_k_neighbours (blocked: memory O(N k), time O(N^2 D)); W_n is a
scipy.sparse matrix of at most 2 N k entries, and each conjugate-gradient step costs O(N k). The
defaults (k=50, gamma=3, alpha=0.99, at most 20 CG steps, rtol 1e-6) are Iscen et al.'s; their
neighbour search is faiss, ours exact and brute force.
"""
import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from llp_tf import neighbours


def normalised_knn_graph(features, k, gamma=3.0, block_sizes=neighbours.BlockSizes()):
    """W_n = D^-1/2 (A + A^T) D^-1/2 as a float64 CSR matrix [N, N] (see the module docstring).

    features: unit rows [N, D]. A row whose neighbours all have non-positive similarity has degree 0
    and stays isolated (its row of W_n is zero), as in Iscen et al.'s code.
    """
    num_rows = len(features)
    if not 1 <= k < num_rows:
        raise ValueError(f"k={k} graph neighbours need 1 <= k < N={num_rows}")
    all_rows = np.arange(num_rows, dtype=np.int32)
    similarities, nearest = neighbours.top_k_neighbours(
        features, all_rows, all_rows, k, tau=1.0, exclude_self=True, block_sizes=block_sizes)
    weights = np.maximum(similarities.numpy().astype(np.float64), 0.0) ** gamma
    affinity = scipy.sparse.csr_matrix(
        (weights.ravel(), (np.repeat(all_rows, k), nearest.numpy().ravel())),
        shape=(num_rows, num_rows))
    symmetric = (affinity + affinity.T).tocsr()
    degrees = np.asarray(symmetric.sum(axis=1)).ravel()
    inverse_sqrt = np.divide(1.0, np.sqrt(degrees), out=np.zeros_like(degrees), where=degrees > 0)
    scale = scipy.sparse.diags(inverse_sqrt)
    return (scale @ symmetric @ scale).tocsr()


def diffuse(features, is_labelled, labels, num_classes, k=50, alpha=0.99, gamma=3.0,
            max_iterations=20, rtol=1e-6, block_sizes=neighbours.BlockSizes()):
    """Labels of all rows by diffusion from the labelled ones.

    features: unit rows [N, D]; is_labelled: bool [N]; labels: int [N], read only where labelled.
    max_iterations: conjugate-gradient steps per class (None: SciPy's default, 10 N).
    Returns (labels int64 [N], scores float64 [N, num_classes]: the solutions z_c as columns).
    """
    is_labelled = np.asarray(is_labelled, bool)
    labels = np.asarray(labels, np.int64)
    check_diffusion_inputs(features, is_labelled, labels, num_classes, alpha)
    graph = normalised_knn_graph(features, k, gamma, block_sizes)
    system = scipy.sparse.identity(len(labels), format="csr") - alpha * graph
    scores = np.zeros([len(labels), num_classes])
    for c in range(num_classes):
        seeds = is_labelled & (labels == c)
        if not seeds.any():
            continue  # z_c = 0: a class without labelled rows receives no mass
        target = seeds / seeds.sum()
        scores[:, c], _ = scipy.sparse.linalg.cg(system, target, rtol=rtol, maxiter=max_iterations)
    predicted = np.where(is_labelled, labels, np.argmax(scores, axis=1))
    return predicted, scores


def check_diffusion_inputs(features, is_labelled, labels, num_classes, alpha):
    """Clear errors for inputs the diffusion cannot use, before the neighbour search."""
    if np.ndim(features) != 2 or is_labelled.shape != (len(features),) or labels.shape != is_labelled.shape:
        raise ValueError(f"features must be [N, D] with is_labelled and labels [N]; got "
                         f"{np.shape(features)}, {is_labelled.shape} and {labels.shape}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if not is_labelled.any():
        raise ValueError("diffusion needs at least one labelled row; none is labelled")
    given = labels[is_labelled]
    if given.min() < 0 or given.max() >= num_classes:
        raise ValueError(f"labelled rows' labels must lie in [0, {num_classes - 1}], got "
                         f"[{given.min()}, {given.max()}]")
