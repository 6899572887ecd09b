"""Command-line programs of llp_tf (installed as the package llp_tf.tools)."""
