"""Image sources, the paper's labelled/kept subsets, and the tf.data pipelines LLP trains and evaluates on.

`from llp_tf import data` gives the whole public API; the modules, from the ground up:

    base.py         the Source interface (encoded_examples, decode, labels, examples), ListedSource
    fingerprint.py  what identifies a source's examples (FileTable: a folder's files, hashes and
                    decode results, also the decode check's record), and what changed between two
    arrays.py       ArraySource: uint8 arrays in memory, read from idx files or a .npz
    folders.py      FolderSource: image folders, validated and decoded once; bad-image policy
    tfds_source.py  TfdsSource: a TensorFlow Datasets dataset
    sources.py      load_source(uri): 'tfds:NAME', 'idx:DIR', 'folder:DIR' or 'npz:FILE'
    split.py        select_examples -> Selection: p % labelled among q % kept; its rows are the bank rows
    pipelines.py    train_dataset, eval_dataset, preprocess_for_eval

Every source yields (image uint8 [H, W, C], label int64, index int64) in a fixed source order, so a
training example is identified by its row in the source; `train_dataset` yields bank rows (positions in
`Selection.rows`) as indices next to each augmented image.
"""
from llp_tf.data.arrays import ArraySource, load_idx_source, load_npz_source, read_idx
from llp_tf.data.base import SPLITS, ListedSource, Source
from llp_tf.data.fingerprint import FileTable
from llp_tf.data.folders import IMAGE_EXTENSIONS, FolderSource
from llp_tf.data.pipelines import eval_dataset, preprocess_for_eval, train_dataset
from llp_tf.data.sources import load_source
from llp_tf.data.split import Selection, select_examples
from llp_tf.data.tfds_source import TfdsSource

__all__ = [
    "SPLITS", "IMAGE_EXTENSIONS",
    "Source", "ListedSource", "ArraySource", "FolderSource", "TfdsSource", "FileTable",
    "load_source", "load_idx_source", "load_npz_source", "read_idx",
    "Selection", "select_examples",
    "train_dataset", "eval_dataset", "preprocess_for_eval",
]
