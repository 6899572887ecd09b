"""Prints the import graph of llp_tf/, layer by layer from the ground up: each module and the llp_tf
modules it imports (read from the source with ast; nothing is imported). The layers and the walker are
tests/test_layers.py's, which fails on a cycle, an upward import or a BUILD.md Layout that shows
another graph than this one.

  python -m scripts.import_graph          (from the repository root)
"""
from tests import test_layers

if __name__ == "__main__":
    print(test_layers.graph_text(), end="")
