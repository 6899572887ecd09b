"""scripts/results_table.py's fair baselines: an LLP run is compared with the best supervised run that
shares its data, split, seed, network, augmentation, epochs and schedule (learning rates aside)."""
from scripts import results_table

BASE = {"dataset": "idx:/d", "labelled_fraction": 0.01, "kept_fraction": 1.0, "split_seed": 0, "seed": 0,
        "backbone": "small_cnn", "width": None, "image_size": None, "epochs": 24,
        "steps_per_epoch": None, "batch_size": 128, "lr_drop_epochs": [10, 12, 21], "momentum": 0.9,
        "weight_decay": 1e-4, "augment": True, "crop_area_min": 0.2, "random_flip": True,
        "color_jitter": True, "random_grayscale": True, "learning_rate": 0.03,
        "lr_values": [0.1, 0.01, 0.03, 0.003], "method": "llp"}


def run(name, top1, **changes):
    return name, {**BASE, **changes}, {"val_top1": top1}


def test_the_best_matching_supervised_run_is_the_baseline_and_the_ceiling_gives_the_share():
    runs = [
        run("llp", 0.84),
        run("sup_lr_a", 0.81, method="supervised"),
        run("sup_lr_b", 0.82, method="supervised", lr_values=[0.03, 0.003, 0.009, 0.0009]),
        run("sup_fewer_epochs", 0.83, method="supervised", epochs=12),  # another schedule: unfair
        run("sup_other_seed", 0.83, method="supervised", seed=1),
        run("sup_milder_crops", 0.83, method="supervised", crop_area_min=0.6),
        run("sup_all_labels", 0.88, method="supervised", labelled_fraction=1.0),
        run("llp_from_another_run", 0.85, init_from="/runs/sup"),
    ]
    rows = results_table.fair_baselines(runs)
    assert len(rows) == 1
    (name, _, _), best, candidates, ceiling = rows[0]
    assert name == "llp" and best[0] == "sup_lr_b"
    assert sorted(c[0] for c in candidates) == ["sup_lr_a", "sup_lr_b"]
    assert ceiling[0] == "sup_all_labels"


def test_no_matching_baseline_no_row():
    assert results_table.fair_baselines([run("llp", 0.84), run("sup", 0.8, method="supervised", epochs=12)]) == []
