"""Prints the RESULTS.md table of the finished runs in a directory (as scripts/run_results.sh leaves it):
one row per run with its settings that differ between runs, its results and wall time, then the mean
and spread of every group of runs that differ only in --seed, then each one-run LLP run's margin over
its fair baseline: the best --method=supervised run with the same data, split, seed, network,
augmentation, epochs and schedule (only the learning rates may differ: the baseline at its better
learning rate), and the share of what all the labels are worth (a supervised run of the same with
--labelled_fraction=1) that the margin recovers.

  python scripts/results_table.py runs [--match=cifar]
"""
import collections
import glob
import json
import os
import re

import numpy as np
from absl import app, flags

from llp_tf.config import CROP_AREA_MIN
from llp_tf.workdir import Workdir

flags.DEFINE_string("match", "", "only runs whose directory name contains this regular expression")
FLAGS = flags.FLAGS

# What a fair baseline must share with the run it is compared with; the learning rates may differ.
SAME_FOR_A_FAIR_BASELINE = (
    "dataset", "labelled_fraction", "kept_fraction", "split_seed", "seed", "backbone", "width",
    "image_size", "epochs", "steps_per_epoch", "batch_size", "lr_drop_epochs", "momentum",
    "weight_decay", "augment", "crop_area_min", "random_flip", "color_jitter", "random_grayscale")


def load_runs(directory):
    runs = []
    for path in sorted(glob.glob(os.path.join(directory, "*", Workdir.METRICS))):
        workdir = os.path.dirname(path)
        name = os.path.basename(workdir)
        if FLAGS.match and not re.search(FLAGS.match, name):
            continue
        with open(path) as f:
            metrics = json.load(f)
        with open(Workdir(workdir).config) as f:
            config = json.load(f)
        runs.append((name, config, metrics))
    return runs


def percent(value):
    return "-" if value is None else f"{100 * value:.2f}"


def describe(config):
    text = (f"{100 * config['labelled_fraction']:g}% labels, {config['method']}, lr {learning_rates(config)}, "
            f"{config['epochs']} ep")
    if config["method"] != "supervised":
        if config.get("warmup") == "supervised":
            text += f" ({config['warmup_epochs']} supervised warm-up), K={config['k']}"
        else:
            text += f" ({config['instance_epochs']} instance), K={config['k']}"
        # The paper's Table 6 ingredients, named where they are switched off.
        text += "".join(f", no {name}" for name, key in (
            ("density", "use_density"), ("confidence", "use_confidence"),
            ("category loss", "use_category_loss")) if not config.get(key, True))
    if config.get("init_from"):
        text += f", from {os.path.basename(os.path.normpath(config['init_from']))}"
    if config.get("labelled_per_batch"):
        text += f", {config['labelled_per_batch']} labelled/batch"
    if config.get("refresh_bank"):
        text += ", bank refreshed before each propagation"
    if config.get("crop_area_min", CROP_AREA_MIN) != CROP_AREA_MIN:
        text += f", crops of >= {100 * config['crop_area_min']:g}% of the area"
    if config.get("confidence_threshold"):
        text += f", pseudo-labels below confidence {config['confidence_threshold']:g} weigh 0"
    if config.get("width") not in (None, 1):
        text += f", width {config['width']}"
    return text


def main(argv):
    runs = load_runs(argv[1] if len(argv) > 1 else "runs")
    print("| run | dataset | settings | seed | val top-1 | val top-5 | kNN top-1 | pseudo-label acc. | wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    groups = collections.defaultdict(list)
    for name, config, metrics in runs:
        print(f"| {name} | {config['dataset']} | {describe(config)} | {config['seed']} "
              f"| {percent(metrics['val_top1'])} | {percent(metrics['val_top5'])} "
              f"| {percent(metrics['knn_top1'])} (k={config['eval_knn_k']}) | {percent(metrics['pseudo_label_accuracy'])} "
              f"| {metrics['wall_seconds']:.0f} |")
        groups[(config["dataset"], re.sub(r"_s\d+$", "", name))].append(metrics["val_top1"])
    print()
    print("| runs (all seeds) | dataset | seeds | val top-1 mean | spread (max - min) / 2 |")
    print("|---|---|---|---|---|")
    for (dataset, group), values in groups.items():
        values = 100 * np.array(values)
        print(f"| {group} | {dataset} | {len(values)} | {values.mean():.2f} "
              f"| {(values.max() - values.min()) / 2:.2f} |")
    print_fair_baselines(runs)


def fair_key(config, **changes):
    values = {**config, **changes}
    return tuple(json.dumps(values.get(key)) for key in SAME_FOR_A_FAIR_BASELINE)


def learning_rates(config):
    return ",".join(map(str, config.get("lr_values") or [])) or str(config["learning_rate"])


def fair_baselines(runs):
    """[(LLP run, its best fair supervised baseline, all-labels supervised run or None)]."""
    supervised = collections.defaultdict(list)
    for name, config, metrics in runs:
        if config["method"] == "supervised":
            supervised[fair_key(config)].append((name, config, metrics))
    rows = []
    for name, config, metrics in runs:
        if config["method"] == "supervised" or config.get("init_from"):
            continue  # a run started from another one has no one-run baseline
        candidates = supervised.get(fair_key(config))
        if not candidates:
            continue
        best = max(candidates, key=lambda run: run[2]["val_top1"])
        ceiling = supervised.get(fair_key(config, labelled_fraction=1.0), [None])[0]
        rows.append(((name, config, metrics), best, candidates, ceiling))
    return rows


def print_fair_baselines(runs):
    rows = fair_baselines(runs)
    if not rows:
        return
    print()
    print("| run | val top-1 | fair baseline (its learning rates tried) | baseline val top-1 | margin "
          "| all labels | share of what all labels are worth |")
    print("|---|---|---|---|---|---|---|")
    for (name, config, metrics), best, candidates, ceiling in rows:
        tried = ", ".join(f"{learning_rates(c)}: {percent(m['val_top1'])}" for _, c, m in candidates)
        margin = metrics["val_top1"] - best[2]["val_top1"]
        worth = share = "-"
        if ceiling is not None:
            gap = ceiling[2]["val_top1"] - best[2]["val_top1"]
            worth = f"{ceiling[0]}: {percent(ceiling[2]['val_top1'])}"
            share = f"{100 * margin / gap:.0f}%" if gap > 0 else "-"
        print(f"| {name} | {percent(metrics['val_top1'])} | {best[0]} ({tried}) | "
              f"{percent(best[2]['val_top1'])} | {100 * margin:+.2f} | {worth} | {share} |")


if __name__ == "__main__":
    app.run(main)
