"""The paper's analysis of a trained run's embedding (Sec. 5, Fig. 2), behind llp-analyze.

    curve = aggregation_curve("runs/my_run")          # (epochs, norm_mean, norm_mean_labelled)
    result = analyze("runs/my_run", "analysis/my_run", compare_workdir="runs/baseline")
    print(result["text"])

  stats.py   per-class statistics of bank rows: spherical 2-means, multi-modality, MDS (pure NumPy,
             scikit-learn for the MDS)
  runs.py    a workdir as the analysis reads it: RunState, load_run_state, the TensorBoard aggregation
             curve, the checks that two runs compare
  plots.py   the matplotlib figures
  report.py  run_summary, summary_text and analyze: the whole analysis, its figures and summaries

matplotlib and scikit-learn (pip install ".[analysis]") are imported only by the functions that draw
or embed, so importing this package needs neither. No flags here: tools/analyze.py is the command line.
"""
from llp_tf.analysis.plots import plot_aggregation_curve, plot_mds, plot_norm_histogram, plot_norm_scatter
from llp_tf.analysis.report import SUPERVISED_NOTE, analyze, run_summary, summary_text
from llp_tf.analysis.runs import (AGGREGATION_TAGS, EPOCH_TAG, RunState, aggregation_curve, check_classes,
                                  check_comparable, check_split_files, load_run_state, read_scalars)
from llp_tf.analysis.stats import (GAUSSIAN_R2, ITERATIONS, MULTIMODALITY_DEFINITION, RESTARTS,
                                   best_split_r2, choose_classes, class_multimodality, cosine_distances,
                                   mds_embedding, multimodality, per_class_pseudo_label_accuracy,
                                   sample_class_rows, two_means, unit_rows)
