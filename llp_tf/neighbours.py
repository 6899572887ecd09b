"""Blocked nearest-neighbour search over a memory bank: for each query row, its k best key rows by
bank[q] . bank[key] / tau (+ a bias per key), without an N x M matrix ever existing.

Every pass scores a block of query rows against a block of key rows ([query_rows, key_rows] floats
at most, BlockSizes) with one matrix multiply, keeps the best k keys of each query, and reduces each
query block to its outputs before the next: the neighbours themselves (top_k_neighbours), their
log-sum-exp (a density) or their weighted vote (vote). Cost O(N M D); memory is the bank, a copy of
the keys when they are not all rows or carry a bias, the outputs and a fixed workspace of a few
blocks. Under a tf.distribute strategy the query rows are split across its replicas, each searching
the whole bank (O(N M D / P) per replica). The functions are dtype-generic (float32 in training,
float64 in tests). propagation.py builds LLP's density and labels on `search`.

The top-k of a score block is the costly part after the multiply (tf.math.top_k over a whole block
costs more than the multiply on CPU; BUILD.md). It runs in two stages instead (_top_k_of_block):
top_k over the maxima of groups of columns, then over the columns of the best groups, which touches
each score once in a vectorised max and leaves top_k only about 2 sqrt(k n) of the n columns; from
the second key block on, scores below the running k-th best are masked out first. top_k's cost is
mostly per query row and key block, so key blocks are long and query blocks short. A bias on the
keys (LLP's -log density) is one more dimension of the multiply, not a pass over the block.
"""
import dataclasses
import typing

import numpy as np
import tensorflow as tf

from llp_tf import config

@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Block sizes of a blocked pass: the score block is query_rows x key_rows floats. A pass over
    fewer keys than key_rows takes proportionally more query rows (same block area)."""
    query_rows: int = config.PROPAGATION_QUERY_ROWS
    key_rows: int = config.PROPAGATION_KEY_ROWS



# ----------------------------------------------------------------------------- top-k of score blocks

def group_size(block_keys, k, divides=True):
    """Columns per group of the two-stage top-k: the largest power of two <= sqrt(block_keys / k)
    (balancing the two stages' sizes, block_keys / g and k g), dividing block_keys if `divides`."""
    size = 1
    while (2 * size) ** 2 * k <= block_keys and (not divides or block_keys % (2 * size) == 0):
        size *= 2
    return size


def _top_k_of_block(scores, k, group, floor=None):
    """tf.math.top_k(scores, min(k, n)) of a [q, n] block, ties to the lower column, in two stages:
    top_k over the maxima of groups of `group` columns, then over the columns of the k best groups.

    Exact: each of the k best columns lies in one of the k best groups (groups ranked by their best
    column), and the groups are taken back in column order, so ties still go to the lower column.
    floor [q]: the caller already holds k scores >= floor from lower columns, so scores <= floor
    cannot enter; they turn to -inf before each top_k, which then rarely has to reorder its heap.
    Returns (values [q, k'], columns [q, k'] int32); where fewer than k' scores beat the floor, the
    rest carry -inf.
    """
    rows, columns = tf.shape(scores)[0], tf.shape(scores)[1]
    k = tf.minimum(k, columns)
    num_groups = (columns + group - 1) // group
    minus_inf = tf.constant(-np.inf, scores.dtype)
    # A no-op (no copy) unless the block is a partial last one.
    padded = tf.pad(scores, [[0, 0], [0, num_groups * group - columns]], constant_values=minus_inf)
    grouped = tf.reshape(padded, [rows, num_groups, group])
    maxima = tf.reduce_max(grouped, axis=2)
    if floor is not None:
        maxima = tf.where(maxima > floor[:, None], maxima, minus_inf)
    _, best_groups = tf.math.top_k(maxima, tf.minimum(k, num_groups))
    best_groups = tf.sort(best_groups, axis=1)
    candidates = tf.reshape(tf.gather(grouped, best_groups, batch_dims=1), [rows, -1])
    if floor is not None:
        candidates = tf.where(candidates > floor[:, None], candidates, minus_inf)
    values, picks = tf.math.top_k(candidates, k)
    return values, tf.gather(best_groups, picks // group, batch_dims=1) * group + picks % group


def _nearest_keys(queries, keys, k, key_block, group):
    """The k keys with the highest queries . keys, one key block at a time, merging the running best
    (earlier blocks first, so ties keep going to the lower key id); the running k-th best score is
    the floor of the next block's top-k.

    keys: the bank itself [N, D] (blocks of key_block rows), or a copy cut into transposed blocks
    [num_blocks, D', key_block] (the faster layout for the multiply; see _key_blocks).
    Returns (scores [q, k'], key ids [q, k'] int32), k' = min(k, number of keys).
    """
    transposed = len(keys.shape) == 3

    def block_best(index, floor=None):
        start = index * key_block
        if transposed:
            scores = tf.matmul(queries, keys[index])
        else:
            block = _bank_slice(keys, start, tf.minimum(start + key_block, _size(keys, 0)))
            scores = tf.matmul(queries, block, transpose_b=True)
        values, columns = _top_k_of_block(scores, k, group, floor)
        return values, columns + start

    num_blocks = _size(keys, 0) if transposed else (_size(keys, 0) + key_block - 1) // key_block
    best_scores, best_ids = block_best(0)
    for index in tf.range(1, num_blocks):
        # Two blocks in flight: the next multiply overlaps this block's top-k.
        tf.autograph.experimental.set_loop_options(parallel_iterations=2, shape_invariants=[
            (best_scores, tf.TensorShape([None, None])), (best_ids, tf.TensorShape([None, None]))])
        floor = tf.where(tf.shape(best_scores)[1] >= k, best_scores[:, -1],
                         tf.constant(-np.inf, best_scores.dtype))
        block_scores, block_ids = block_best(index, floor)
        merged_scores = tf.concat([best_scores, block_scores], axis=1)
        merged_ids = tf.concat([best_ids, block_ids], axis=1)
        best_scores, keep = tf.math.top_k(merged_scores, tf.minimum(k, tf.shape(merged_scores)[1]))
        best_ids = tf.gather(merged_ids, keep, batch_dims=1)
    return best_scores, best_ids


def _bank_rows(bank, rows):
    """bank[rows] of a tensor or variable, reading only those rows. A variable that has seen a scatter
    update (the memory bank in training) copies itself whole on every dense read, and tf.gather reads
    a mirrored variable densely; ResourceGather on the (replica's own) handle reads just the rows."""
    if isinstance(bank, tf.Variable):
        return tf.raw_ops.ResourceGather(resource=bank.handle, indices=rows, dtype=bank.dtype)
    return tf.gather(bank, rows)


def _bank_slice(bank, start, stop):
    """bank[start:stop] of a tensor (a view) or variable (see _bank_rows)."""
    if isinstance(bank, tf.Variable):
        return _bank_rows(bank, tf.range(start, stop))
    return bank[start:stop]


def _size(tensor_or_variable, axis):
    """A dimension as a tensor. Of a variable, read from its handle: tf.shape would read (copy) the
    whole variable, and its static shape is no part of a tf.function's trace, so a trace for one
    bank could be reused for another of a different size."""
    if isinstance(tensor_or_variable, tf.Variable):
        return tf.raw_ops.VariableShape(input=tensor_or_variable.handle)[axis]
    return tf.shape(tensor_or_variable)[axis]


def _drop_self(scores, ids, self_ids, keep):
    """From k = keep + 1 best, the `keep` best other than self: drop self's column where it is among
    them, else the last column. [q, keep] scores and ids."""
    is_self = tf.equal(ids, self_ids[:, None])
    is_last = tf.equal(tf.range(tf.shape(ids)[1]), keep)[None, :]
    drop = tf.where(tf.reduce_any(is_self, axis=1, keepdims=True), is_self, is_last)
    return (tf.reshape(tf.boolean_mask(scores, ~drop), [-1, keep]),
            tf.reshape(tf.boolean_mask(ids, ~drop), [-1, keep]))


# ----------------------------------------------------------------------------- passes over query rows

class _Pass(typing.NamedTuple):
    """What a pass computes for each query row from its k best keys (skipping the query's own key
    with exclude_self): "neighbours" (scores, key ids), "log_density" or "vote" (label, confidence);
    and how it blocks the keys (key_block keys per multiply, groups of `group` in the top-k).
    A NamedTuple, so tf.function compares it by value and traces each kind of pass once."""
    output: str
    k: int
    exclude_self: bool
    key_block: int
    group: int
    num_classes: int = 0


def _finish(pass_, scores, ids, key_labels):
    if pass_.output == "neighbours":
        return scores, ids
    if pass_.output == "log_density":
        return (tf.reduce_logsumexp(scores, axis=1),)
    return vote(scores, tf.gather(key_labels, ids), pass_.num_classes)


def _output_dtypes(pass_, dtype):
    return {"neighbours": (dtype, tf.int32), "log_density": (dtype,), "vote": (tf.int64, dtype)}[pass_.output]


def _query_blocks(pass_, bank, keys, biased, key_labels, query_rows, self_ids, inv_tau, query_block):
    """The pass's outputs for query_rows, one block of query_block rows at a time (a tf.while_loop
    that runs one query block at a time: the workspace is two score blocks, see _nearest_keys)."""
    num_queries = tf.shape(query_rows)[0]
    num_blocks = (num_queries + query_block - 1) // query_block
    arrays = tuple(tf.TensorArray(dtype, size=num_blocks, infer_shape=False)
                   for dtype in _output_dtypes(pass_, bank.dtype))
    search_k = pass_.k + 1 if pass_.exclude_self else pass_.k
    for index in tf.range(num_blocks):
        tf.autograph.experimental.set_loop_options(parallel_iterations=1)
        start = index * query_block
        stop = tf.minimum(start + query_block, num_queries)
        queries = _bank_rows(bank, query_rows[start:stop]) * inv_tau
        if biased:  # meets the keys' bias row (see _key_blocks)
            queries = tf.concat([queries, tf.ones([stop - start, 1], queries.dtype)], axis=1)
        scores, ids = _nearest_keys(queries, keys, search_k, pass_.key_block, pass_.group)
        if pass_.exclude_self:
            scores, ids = _drop_self(scores, ids, self_ids[start:stop], pass_.k)
        outputs = _finish(pass_, scores, ids, key_labels)
        arrays = tuple(array.write(index, output) for array, output in zip(arrays, outputs))
    return tuple(array.concat() for array in arrays)


def _key_blocks(key_vectors, key_bias, key_block):
    """Key rows [M, D] cut into transposed blocks [M / key_block, D, key_block], the faster layout for
    the multiply. With key_bias [M / key_block, key_block], each block gets one more row holding the
    bias, which the queries meet with a 1: the multiply adds the bias (D + 1 instead of D costs
    nothing visible; BUILD.md), so no pass over the score block has to."""
    blocks = tf.reshape(key_vectors, [-1, key_block, tf.shape(key_vectors)[1]])
    blocks = tf.transpose(blocks, [0, 2, 1])
    if key_bias is None:
        return blocks
    return tf.concat([blocks, key_bias[:, None, :]], axis=1)


def replica_share(num_rows, replica, num_replicas):
    """Positions of the rows that replica `replica` of num_replicas handles: the replica-th of equal
    contiguous shares of ceil(num_rows / num_replicas). A short last share repeats the last row
    (the gathered result is trimmed to num_rows), so every replica's output has the same shape."""
    share = (num_rows + num_replicas - 1) // num_replicas
    return tf.minimum(replica * share + tf.range(share), num_rows - 1)


@tf.function(reduce_retracing=True)
def _run_pass(strategy, pass_, bank, query_rows, self_ids, key_rows, key_bias, key_labels, inv_tau,
              query_block):
    """The pass over all query_rows, split into equal contiguous shares, one per replica of strategy;
    each replica searches its own copy of the bank. Outputs are gathered in query order."""
    num_queries = tf.shape(query_rows)[0]

    def replica_pass(bank, query_rows, self_ids, key_rows, key_bias, key_labels):
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        positions = replica_share(num_queries, replica, strategy.num_replicas_in_sync)
        if not isinstance(bank, tf.Variable):
            bank = tf.identity(bank)  # moved to this replica's device once, not by every block
        if key_rows is None:
            keys = bank
        else:
            keys = _key_blocks(_bank_rows(bank, key_rows), key_bias, pass_.key_block)
        return _query_blocks(pass_, bank, keys, key_bias is not None, key_labels,
                             tf.gather(query_rows, positions),
                             None if self_ids is None else tf.gather(self_ids, positions), inv_tau,
                             query_block)

    per_replica = strategy.run(replica_pass,
                               args=(bank, query_rows, self_ids, key_rows, key_bias, key_labels))
    return tuple(strategy.gather(output, axis=0)[:num_queries] for output in per_replica)


class BlockLayout(typing.NamedTuple):
    """How a pass cuts its work: query_block x key_block scores per multiply, num_blocks key blocks,
    groups of `group` columns in the two-stage top-k."""
    query_block: int
    key_block: int
    num_blocks: int
    group: int


def block_layout(num_keys, k, block_sizes, all_rows):
    """The BlockLayout of a pass taking the k best of num_keys keys.

    all_rows: the keys are the bank itself, cut into blocks of block_sizes.key_rows rows (the last one
    shorter) without copying it; groups then divide the block. Otherwise the keys are a copy, cut
    into equal blocks padded to whole groups. A pass over fewer keys than block_sizes.key_rows takes
    proportionally more query rows, keeping the block's area (the workspace).
    """
    key_block = min(int(block_sizes.key_rows), num_keys)
    num_blocks = -(-num_keys // key_block)
    if all_rows:
        group = group_size(key_block, k)
    else:
        group = group_size(-(-num_keys // num_blocks), k, divides=False)
        key_block = -(-num_keys // (num_blocks * group)) * group
    query_block = max(1, int(block_sizes.query_rows) * int(block_sizes.key_rows) // key_block)
    return BlockLayout(query_block, key_block, num_blocks, group)


def search(output, bank, query_rows, key_rows, k, tau, key_bias=None, key_labels=None,
           exclude_self=False, num_classes=0, block_sizes=BlockSizes(), strategy=None):
    """Runs one pass (see _Pass) of bank rows query_rows against bank rows key_rows."""
    bank = bank if isinstance(bank, tf.Variable) else tf.convert_to_tensor(bank)
    num_rows = int(bank.shape[0])
    query_rows = np.asarray(query_rows, np.int32)
    key_rows = np.asarray(key_rows, np.int32)
    k, num_keys = int(k), len(key_rows)
    search_k = k + 1 if exclude_self else k
    if not 1 <= search_k <= num_keys:
        raise ValueError(f"k={k} neighbours {'besides the query itself ' if exclude_self else ''}"
                         f"need 1 <= k{' + 1' if exclude_self else ''} <= the {num_keys} keys")
    # The bank itself serves as the keys, uncopied, when they are all its rows and carry no bias.
    all_rows = (key_bias is None and num_keys == num_rows
                and np.array_equal(key_rows, np.arange(num_rows)))
    blocks = block_layout(num_keys, search_k, block_sizes, all_rows)
    self_ids = None
    if exclude_self:  # each query's own position among the keys, -1 where it is not a key
        lookup = np.full(num_rows, -1, np.int32)
        lookup[key_rows] = np.arange(num_keys, dtype=np.int32)
        self_ids = tf.constant(lookup[query_rows])
    if key_bias is not None:
        key_bias = tf.cast(key_bias, bank.dtype)
    if all_rows:
        key_rows = None  # search the bank itself rather than a copy of it
    else:
        padding = blocks.num_blocks * blocks.key_block - num_keys
        if padding:  # the padding keys score -inf
            key_rows = np.concatenate([key_rows, np.repeat(key_rows[:1], padding)])
            known_bias = tf.zeros([num_keys], bank.dtype) if key_bias is None else key_bias
            key_bias = tf.concat([known_bias, tf.fill([padding], tf.constant(-np.inf, bank.dtype))], 0)
        if key_bias is not None:
            key_bias = tf.reshape(key_bias, [blocks.num_blocks, blocks.key_block])
    pass_ = _Pass(output, k, bool(exclude_self), blocks.key_block, blocks.group, int(num_classes))
    if len(query_rows) == 0:
        empty_shape = [0, k] if output == "neighbours" else [0]
        return tuple(tf.zeros(empty_shape, dtype) for dtype in _output_dtypes(pass_, bank.dtype))
    strategy = strategy or tf.distribute.get_strategy()
    return _run_pass(strategy, pass_, bank, tf.constant(query_rows), self_ids,
                     None if key_rows is None else tf.constant(key_rows), key_bias,
                     None if key_labels is None else tf.convert_to_tensor(key_labels),
                     tf.constant(1.0 / tau, bank.dtype), blocks.query_block)


def top_k_neighbours(bank, query_rows, key_rows, k, tau, key_bias=None, exclude_self=False,
                     block_sizes=BlockSizes(), strategy=None):
    """For each bank row in query_rows, the k key rows with the highest bank[q].bank[key]/tau + key_bias.

    query_rows, key_rows: int indices into bank. exclude_self skips key == query (by bank row).
    strategy: split the query rows across its replicas (default: the current strategy).
    Returns (scores [Q, k] sorted descending, positions into key_rows [Q, k] int32) as tensors.
    """
    return search("neighbours", bank, query_rows, key_rows, k, tau, key_bias=key_bias,
                  exclude_self=exclude_self, block_sizes=block_sizes, strategy=strategy)



def vote(scores, neighbour_labels, num_classes):
    """Class probabilities from weighted votes (Eq. 5-6, 8): w_c = sum of exp(score) over the
    neighbours labelled c, p_c = w_c / sum w. Returns (labels int64 [Q], confidences [Q]).

    scores: [Q, K] sorted descending (as top_k gives them); the common factor exp(max) cancels in p.
    """
    weights = tf.exp(scores - scores[:, :1])
    num_queries = tf.shape(scores)[0]
    segment = tf.range(num_queries)[:, None] * num_classes + tf.cast(neighbour_labels, tf.int32)
    votes = tf.math.unsorted_segment_sum(tf.reshape(weights, [-1]), tf.reshape(segment, [-1]),
                                         num_queries * num_classes)
    votes = tf.reshape(votes, [num_queries, num_classes])
    probabilities = votes / tf.reduce_sum(votes, axis=1, keepdims=True)
    return tf.argmax(probabilities, axis=1), tf.reduce_max(probabilities, axis=1)
