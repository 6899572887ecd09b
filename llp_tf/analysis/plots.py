"""The figures of llp-analyze (paper Fig. 2), drawn with matplotlib's object API on the Agg canvas so the
global pyplot backend is left alone. Each title says what a good picture looks like, for a reader who has
not read the paper; per-epoch axes have integer ticks; in the MDS figure a colour means a class in the
first panel and a 2-means sub-cluster in the others, from two palettes that share no colour.

matplotlib is imported inside the functions that draw: it is an optional dependency (the `analysis`
extra), and `import llp_tf.analysis` must work without it.
"""
import math

import numpy as np


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # optional dependency (docstring)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=150)
    FigureCanvasAgg(figure)
    return figure


# The MDS figure's 2-means sub-clusters; the class colours leave these two out.
CLUSTER_COLOURS = ("tab:orange", "tab:purple")


def _colours(count, exclude=()):
    """`count` distinct colours (tab10, or tab20 beyond 10), none of the tab10 colours `exclude` (nor,
    in tab20, their light twins), cycling if too few."""
    from matplotlib import colormaps, colors  # optional dependency (docstring)

    excluded = {colors.to_rgba(c) for c in exclude}
    if count + len(exclude) <= 10:
        palette = [c for c in colormaps["tab10"].colors if colors.to_rgba(c) not in excluded]
    else:  # tab20 holds each tab10 colour followed by its light twin
        pairs = np.reshape(colormaps["tab20"].colors, (10, 2, 3))
        palette = [tuple(c) for pair in pairs if colors.to_rgba(tuple(pair[0])) not in excluded for c in pair]
    return [palette[i % len(palette)] for i in range(count)]


def class_colours(count):
    """The MDS figure's class colours: none of them is a sub-cluster colour."""
    return _colours(count, exclude=CLUSTER_COLOURS)


def _integer_ticks(axis):
    from matplotlib.ticker import MaxNLocator  # optional dependency (docstring)

    axis.set_major_locator(MaxNLocator(integer=True))


def plot_aggregation_curve(curves, path, switch_epochs=()):
    """curves: [(label, epochs, norm_mean, norm_mean_labelled)]; switch_epochs: [(label, epoch)]
    warm-up -> LLP switches drawn as dotted vertical lines."""
    figure = _figure(7, 4.5)
    axes = figure.subplots()
    colours = _colours(len(curves))
    for colour, (label, epochs, norm_mean, labelled) in zip(colours, curves):
        axes.plot(epochs, norm_mean, "-o", color=colour, markersize=3, label=f"{label}: all rows")
        if np.isfinite(labelled).any():
            axes.plot(epochs, labelled, "--", color=colour, label=f"{label}: labelled rows")
    for (label, epoch), colour in zip(switch_epochs, colours):
        if epoch:
            axes.axvline(epoch, color=colour, linestyle=":", linewidth=1)
            axes.annotate("warm-up -> LLP", (epoch, axes.get_ylim()[0]), rotation=90, fontsize=7,
                          color=colour, xytext=(3, 3), textcoords="offset points")
    axes.set_xlabel("epoch")
    _integer_ticks(axes.xaxis)
    axes.set_ylabel("mean over classes of |class mean embedding|")
    axes.set_title("Aggregation along training (cf. paper Fig. 2b): how tightly each class gathers\n"
                   "good: rising after the switch to LLP as each class's embeddings pull together "
                   "(1 = one point)", fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_norm_histogram(norm_sets, path):
    """norm_sets: [(label, per-class norms [Q])] overlaid on shared bins."""
    figure = _figure(7, 4.5)
    axes = figure.subplots()
    finite = np.concatenate([np.asarray(n)[np.isfinite(n)] for _, n in norm_sets])
    count = max(len(np.asarray(n)) for _, n in norm_sets)
    low, high = float(finite.min()), float(finite.max())
    if high - low < 1e-3:
        low, high = low - 0.01, high + 0.01
    bins = np.linspace(low, high, int(np.clip(np.sqrt(count) * 2, 5, 40)) + 1)
    for colour, (label, norms) in zip(_colours(len(norm_sets)), norm_sets):
        norms = np.asarray(norms)[np.isfinite(norms)]
        axes.hist(norms, bins=bins, alpha=0.55, color=colour, edgecolor="black", linewidth=0.5,
                  label=f"{label}: mean {norms.mean():.3f}")
        axes.axvline(norms.mean(), color=colour, linestyle="--")
    _integer_ticks(axes.yaxis)
    axes.set_xlabel("|class mean embedding| (per class, true labels of every bank row)")
    axes.set_ylabel("classes")
    axes.set_title("Per-class aggregation of the final bank (cf. paper Fig. 2c)\n"
                   "good: mass to the right (classes gathered tightly); classes far left are the hard ones",
                   fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_norm_scatter(first_norms, second_norms, class_names, first_label, second_label, path):
    """One point per class: its norm in the first run (x) and the second (y), with the diagonal."""
    figure = _figure(5.5, 5.5)
    axes = figure.subplots()
    x, y = np.asarray(first_norms), np.asarray(second_norms)
    keep = np.isfinite(x) & np.isfinite(y)
    axes.scatter(x[keep], y[keep], s=25, color="tab:blue", edgecolor="black", linewidth=0.5, zorder=3)
    values = np.concatenate([x[keep], y[keep]])
    low, high = float(values.min()), float(values.max())
    margin = max(0.05 * (high - low), 0.01)
    low, high = max(low - margin, 0.0), min(high + margin, 1.0)
    axes.plot([low, high], [low, high], color="gray", linestyle="--", linewidth=1, zorder=1)
    axes.set_xlim(low, high)
    axes.set_ylim(low, high)
    axes.set_aspect("equal")
    if len(class_names) <= 20:
        for c in np.flatnonzero(keep):
            axes.annotate(class_names[c], (x[c], y[c]), fontsize=7, xytext=(3, 3),
                          textcoords="offset points")
    above, below = int(np.sum(y[keep] > x[keep])), int(np.sum(y[keep] < x[keep]))
    axes.set_xlabel(f"{first_label}: per-class norm")
    axes.set_ylabel(f"{second_label}: per-class norm")
    axes.set_title(f"Per-class aggregation (cf. Fig. 2d), {int(keep.sum())} classes: y > x in {above}, "
                   f"y < x in {below}\nabove the diagonal: classes the second run gathers more tightly",
                   fontsize=9)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_mds(panels, title, path):
    """panels: [dict(title, points [n, 2], groups int [n], group_names, labelled bool [n], and
    optionally colours (one per group) and legend_title (what a colour means in this panel))]; each
    panel colours its points by group; labelled rows are larger with a black edge."""
    columns = min(len(panels), 2)
    rows = math.ceil(len(panels) / columns)
    figure = _figure(5.2 * columns, 4.8 * rows)
    grid = np.atleast_1d(figure.subplots(rows, columns, squeeze=False).ravel())
    for axes, panel in zip(grid, panels):
        points, groups, labelled = panel["points"], panel["groups"], panel["labelled"]
        colours = panel.get("colours") or class_colours(len(panel["group_names"]))
        for g, (name, colour) in enumerate(zip(panel["group_names"], colours)):
            plain, known = (groups == g) & ~labelled, (groups == g) & labelled
            axes.scatter(points[plain, 0], points[plain, 1], s=7, color=colour, alpha=0.6,
                         linewidth=0, label=f"{name}: {int(np.sum(groups == g))} shown")
            axes.scatter(points[known, 0], points[known, 1], s=45, color=colour, edgecolor="black",
                         linewidth=1.0, zorder=3)
        axes.set_title(panel["title"], fontsize=9)
        axes.set_aspect("equal", adjustable="datalim")
        axes.set_xticks([])
        axes.set_yticks([])
        axes.legend(fontsize=7, markerscale=2, loc="best", title=panel.get("legend_title"),
                    title_fontsize=7)
    for axes in grid[len(panels):]:
        axes.set_visible(False)
    figure.suptitle(title + "\nlarge points with a black edge: labelled rows", fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    return path
