"""llp-analyze's whole analysis of a run (paper Sec. 5, Fig. 2): per-class statistics of its final bank,
its aggregation curve, the figures and summary.txt / summary.json.

    result = analyze("runs/my_run", "analysis/my_run", compare_workdir="runs/baseline")
    print(result["text"])

writes into the output directory
  aggregation_curve.png     aggregation/norm_mean (solid) and .._labelled (dashed) per epoch, read back
                            from WORKDIR/tensorboard (Fig. 2b); one colour per workdir
  class_norm_histogram.png  histogram of the per-class norms of the final bank, true labels (Fig. 2c)
  class_norm_scatter.png    with a compare workdir only: per-class norm of run 1 against run 2 (Fig. 2d)
  mds_classes.png           2-D metric MDS (1 - cosine) of a few classes' bank rows (Fig. 2a, e-g)
  summary.txt, summary.json per-class norms, multi-modality, pseudo-label accuracy, the chosen classes
"""
import json
import math
import os
import textwrap

import numpy as np

from llp_tf import aggregation
from llp_tf.analysis.plots import (CLUSTER_COLOURS, class_colours, plot_aggregation_curve, plot_mds,
                                   plot_norm_histogram, plot_norm_scatter)
from llp_tf.analysis.runs import (RunState, aggregation_curve, check_classes, check_comparable,
                                  check_split_files, load_run_state)
from llp_tf.analysis.stats import (MULTIMODALITY_DEFINITION, choose_classes, class_multimodality,
                                   mds_embedding, per_class_pseudo_label_accuracy, sample_class_rows,
                                   two_means, unit_rows)

SUPERVISED_NOTE = (
    "a supervised run trains on the labelled examples only: the bank rows of the unlabelled "
    "examples keep their initial entries (bank_init) and the embedding head is trained by no loss (weight "
    "decay only scales it), so its norms over all rows mostly measure the untrained network; its "
    "labelled-only norms are of the trained backbone through a fixed random head")


def _nan_to_none(value):
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, np.ndarray):
        return _nan_to_none(value.tolist())
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _propagated(state: RunState) -> bool:
    return state.method == "llp" and bool((state.current_labels[~state.is_labelled] >= 0).all())


def run_summary(state: RunState, seed: int = 0) -> dict:
    """Per-class statistics of one run's final bank, its TensorBoard curve and its chosen classes."""
    q = state.num_classes
    norms = aggregation.class_mean_norms(state.bank, state.true_labels, q)
    norms_labelled = aggregation.class_mean_norms(
        state.bank, np.where(state.is_labelled, state.true_labels, -1), q)
    modality = class_multimodality(state.bank, state.true_labels, q, seed)
    epochs, curve, curve_labelled = aggregation_curve(state.workdir)
    summary = {
        "workdir": state.workdir, "checkpoint": state.checkpoint, "method": state.method,
        "dataset": state.dataset, "backbone": state.backbone, "epochs": state.epochs,
        "warmup_epochs": state.warmup_epochs,
        "num_examples": int(len(state.rows)), "num_labelled": int(state.is_labelled.sum()),
        "class_names": state.class_names,
        "class_counts": np.bincount(state.true_labels, minlength=q).tolist(),
        "norm_mean": float(np.nanmean(norms)), "norm_mean_labelled": float(np.nanmean(norms_labelled)),
        "class_norms": norms, "class_norms_labelled": norms_labelled,
        "class_multimodality": modality,
        "aggregation_curve": {"epochs": epochs.tolist(), "norm_mean": curve,
                              "norm_mean_labelled": curve_labelled},
        "pseudo_label_accuracy": None, "class_pseudo_label_accuracy": None,
    }
    if _propagated(state):
        unlabelled = ~state.is_labelled
        summary["pseudo_label_accuracy"] = float(
            np.mean(state.current_labels[unlabelled] == state.true_labels[unlabelled]))
        summary["class_pseudo_label_accuracy"] = per_class_pseudo_label_accuracy(
            state.current_labels, state.true_labels, state.is_labelled, q)
    order = np.argsort(-np.where(np.isfinite(norms), norms, -np.inf), kind="stable")
    finite = [int(c) for c in order if np.isfinite(norms[c])]
    by_modality = [int(c) for c in np.argsort(-np.where(np.isfinite(modality), modality, -np.inf),
                                              kind="stable") if np.isfinite(modality[c])]
    summary["ranking"] = {"easiest": finite[:3], "hardest": finite[::-1][:3],
                          "multimodal": by_modality[:3]}
    summary["chosen"] = choose_classes(norms, modality)
    return summary


def _fmt(value, digits=3):
    return "-" if value is None or not math.isfinite(float(value)) else f"{float(value):.{digits}f}"


def summary_text(summary: dict) -> str:
    names = summary["class_names"]
    label = lambda c: f"{c} ({names[c]})" if names[c] != str(c) else str(c)  # noqa: E731
    lines = [f"llp-analyze: {summary['workdir']}",
             f"  {summary['method']}, {summary['backbone']}, {summary['dataset']}: {summary['epochs']} "
             f"epochs, {summary['num_examples']} training examples, {summary['num_labelled']} labelled, "
             f"{len(names)} classes",
             f"  checkpoint {summary['checkpoint']}",
             f"aggregation norm_mean of the final bank (true labels of every row): "
             f"{_fmt(summary['norm_mean'])}; labelled rows only: {_fmt(summary['norm_mean_labelled'])}"]
    curve = summary["aggregation_curve"]
    lines.append("  per epoch (TensorBoard aggregation/norm_mean): " + ", ".join(
        f"{e}: {_fmt(v)}" for e, v in zip(curve["epochs"], curve["norm_mean"])))
    if summary["pseudo_label_accuracy"] is not None:
        accuracy = _fmt(summary["pseudo_label_accuracy"])
        lines.append(f"pseudo-label accuracy on the unlabelled rows: {accuracy}")
    if summary["method"] == "supervised":
        lines.append(textwrap.fill("note: " + SUPERVISED_NOTE, 100, initial_indent="  ",
                                   subsequent_indent="  "))
    compare = summary.get("compare")
    header = f"{'class':>24} {'rows':>6} {'norm':>6} {'labelled':>8} {'multimodal':>10} {'pseudo-acc':>10}"
    if compare:
        header += f" {'compare norm':>12} {'labelled':>8}"
    lines += ["per class (norm: |mean bank row| with true labels; labelled: of its labelled rows only):",
              header]
    for c, name in enumerate(names):
        pseudo = summary["class_pseudo_label_accuracy"]
        line = (f"{(str(c) + ' ' + name if name != str(c) else name)[:24]:>24} "
                f"{summary['class_counts'][c]:>6} {_fmt(summary['class_norms'][c]):>6} "
                f"{_fmt(summary['class_norms_labelled'][c]):>8} "
                f"{_fmt(summary['class_multimodality'][c]):>10} "
                f"{_fmt(pseudo[c] if pseudo is not None else None):>10}")
        if compare:
            line += f" {_fmt(compare['class_norms'][c]):>12} {_fmt(compare['class_norms_labelled'][c]):>8}"
        lines.append(line)
    ranking = summary["ranking"]
    norms, modality = summary["class_norms"], summary["class_multimodality"]
    lines += [
        "easiest (highest norm): " + ", ".join(f"{label(c)} {_fmt(norms[c])}" for c in ranking["easiest"]),
        "hardest (lowest norm): " + ", ".join(f"{label(c)} {_fmt(norms[c])}" for c in ranking["hardest"]),
        "most multi-modal: " + ", ".join(f"{label(c)} {_fmt(modality[c])}" for c in ranking["multimodal"]),
        textwrap.fill(MULTIMODALITY_DEFINITION, 100, initial_indent="  ", subsequent_indent="  "),
        "MDS classes: " + ", ".join(f"{label(c)} [{role}]" for c, role in
                                    zip(summary["mds_classes"], summary["mds_roles"])),
    ]
    if compare:
        norms2 = np.asarray(compare["class_norms"], np.float64)
        mine = np.asarray(summary["class_norms"], np.float64)
        keep = np.isfinite(mine) & np.isfinite(norms2)
        lines += [f"compare: {compare['workdir']} ({compare['method']}, {compare['backbone']}, "
                  f"{compare['epochs']} epochs): norm_mean {_fmt(compare['norm_mean'])}, labelled rows "
                  f"only {_fmt(compare['norm_mean_labelled'])}",
                  f"  this run's class norm is higher in {int(np.sum(mine[keep] > norms2[keep]))} and lower "
                  f"in {int(np.sum(mine[keep] < norms2[keep]))} of {int(keep.sum())} classes"]
        if not compare["same_labelled_split"]:
            lines.append("  note: the two runs label different examples (another --labelled_fraction "
                         "or split)")
        if compare["method"] == "supervised":
            lines.append(textwrap.fill("note on the compare run: " + SUPERVISED_NOTE, 100,
                                       initial_indent="  ", subsequent_indent="  "))
    lines.append("figures: " + ", ".join(summary["figures"].values()))
    return "\n".join(lines)


def analyze(workdir, output_dir, compare_workdir=None, classes=None, max_points_per_class: int = 300,
            seed: int = 0) -> dict:
    """Writes the figures and summary.txt / summary.json of the run in `workdir` into output_dir.
    Returns {"figures": {name: path}, "summary_txt", "summary_json": paths, "summary": dict,
    "text": str}. classes: the class indices of the MDS figure (default: the easiest, the hardest and
    the most multi-modal class); compare_workdir: a second run on the same training examples."""
    if max_points_per_class < 2:
        raise ValueError(f"max_points_per_class must be at least 2, got {max_points_per_class}")
    if compare_workdir is not None:
        check_split_files(workdir, compare_workdir)  # fails fast, before the slow restores
    state = load_run_state(workdir)
    if classes is not None:
        classes = check_classes(classes, state.num_classes)
    other = None
    if compare_workdir is not None:
        other = load_run_state(compare_workdir)
        check_comparable(state, other)
    summary = run_summary(state, seed)
    os.makedirs(output_dir, exist_ok=True)
    figures = {}
    path = lambda name: os.path.join(output_dir, name + ".png")  # noqa: E731

    other_summary = run_summary(other, seed) if other is not None else None
    runs = [(state, summary)] + ([(other, other_summary)] if other is not None else [])
    curves = [(s.name, np.array(m["aggregation_curve"]["epochs"]),
               np.array(m["aggregation_curve"]["norm_mean"], np.float64),
               np.array(m["aggregation_curve"]["norm_mean_labelled"], np.float64)) for s, m in runs]
    figures["aggregation_curve"] = plot_aggregation_curve(
        curves, path("aggregation_curve"), [(s.name, s.warmup_epochs) for s, _ in runs])
    figures["class_norm_histogram"] = plot_norm_histogram(
        [(s.name, m["class_norms"]) for s, m in runs], path("class_norm_histogram"))
    if other is not None:
        figures["class_norm_scatter"] = plot_norm_scatter(
            summary["class_norms"], other_summary["class_norms"], state.class_names, state.name,
            other.name, path("class_norm_scatter"))
        summary["compare"] = {key: other_summary[key] for key in (
            "workdir", "checkpoint", "method", "backbone", "epochs", "norm_mean", "norm_mean_labelled",
            "class_norms", "class_norms_labelled", "class_multimodality", "aggregation_curve",
            "pseudo_label_accuracy")}
        summary["compare"]["same_labelled_split"] = bool(np.array_equal(state.is_labelled,
                                                                        other.is_labelled))

    chosen = summary["chosen"]
    if classes is None:
        roles = {}
        for role in ("easiest", "hardest", "multimodal"):
            roles.setdefault(chosen[role], []).append(role)
        classes = list(roles)
        role_names = ["/".join(roles[c]) for c in classes]
    else:
        role_names = ["chosen" for _ in classes]
    summary["mds_classes"], summary["mds_roles"] = classes, role_names
    figures["mds_classes"] = _mds_figure(state, summary, classes, role_names, max_points_per_class,
                                         seed, path("mds_classes"))
    summary["figures"] = figures

    text = summary_text(summary)
    summary["multimodality_definition"] = MULTIMODALITY_DEFINITION
    summary_txt = os.path.join(output_dir, "summary.txt")
    summary_json = os.path.join(output_dir, "summary.json")
    with open(summary_txt, "w") as f:
        f.write(text + "\n")
    with open(summary_json, "w") as f:
        json.dump(_nan_to_none(summary), f, indent=2)
    return {"figures": figures, "summary_txt": summary_txt, "summary_json": summary_json,
            "summary": summary, "text": text}


def _mds_figure(state: RunState, summary, classes, role_names, max_points_per_class, seed, path):
    """Panel 1: every chosen class together, coloured by true class (Fig. 2a); then one panel per
    class, coloured by its 2-means sub-cluster (Fig. 2e-g), each from its own MDS."""
    names = state.class_names
    picked = sample_class_rows(state.true_labels, classes, max_points_per_class, seed)
    position = {c: i for i, c in enumerate(classes)}
    groups = np.array([position[int(c)] for c in state.true_labels[picked]], np.int64)
    panels = [{"title": "chosen classes together: good = each class its own tight group",
               "points": mds_embedding(state.bank[picked], seed), "groups": groups,
               "group_names": [f"{names[c]} [{role}]" for c, role in zip(classes, role_names)],
               "colours": class_colours(len(classes)), "legend_title": "colour: true class",
               "labelled": state.is_labelled[picked]}]
    if len(classes) > 1:
        for c, role in zip(classes, role_names):
            rows = picked[state.true_labels[picked] == c]
            if len(rows) < 2:
                continue
            members = state.bank[state.true_labels == c]
            assignment, centres = (two_means(members, seed) if len(members) >= 2
                                   else (np.zeros(len(members), np.int64), None))
            sub = (np.argmax(unit_rows(state.bank[rows]) @ centres.T, axis=1) if centres is not None
                   else np.zeros(len(rows), np.int64))
            share = np.bincount(assignment, minlength=2) / max(len(assignment), 1)
            panels.append({
                "title": f"{names[c]} [{role}]: norm {_fmt(summary['class_norms'][c])}, "
                         f"multimodality {_fmt(summary['class_multimodality'][c])}",
                "points": mds_embedding(state.bank[rows], seed), "groups": sub,
                "group_names": [f"cluster {k + 1}, {share[k]:.0%} of the class" for k in (0, 1)],
                "colours": list(CLUSTER_COLOURS), "legend_title": "colour: 2-means sub-cluster",
                "labelled": state.is_labelled[rows]})
    title = ("MDS (1 - cosine) of bank rows, at most %d per class: " % max_points_per_class
             + ", ".join(f"{names[c]} [{role}]" for c, role in zip(classes, role_names))
             + "\none class alone: two well-separated sub-clusters mean a multi-modal class (harder to "
             "label); one blob, an easy one")
    return plot_mds(panels, title, path)
