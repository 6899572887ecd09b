"""What a user sees: each program's --help, a standard error without TensorFlow's start-up noise that
still carries real errors, llp-train's phase and propagation lines, and class names carried from the
data to llp-eval, llp-export and llp-analyze."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from llp_tf import console
from llp_tf.analysis import plots
from llp_tf.config import TrainConfig
from llp_tf.tools import cli
from tests.conftest import ROOT, TINY, run_tool
from tests.datasets import write_npz

# Each program with flags its --help must list.
PROGRAMS = {
    "llp_tf.tools.train": ["dataset", "workdir", "method", "backbone", "epochs", "warmup", "warmup_epochs",
                           "class_names", "verbose", "eval_knn_k", "cpu_replicas"],
    "llp_tf.tools.propagate": ["features", "output", "method", "k", "t", "tau"],
    "llp_tf.tools.export": ["workdir", "export_dir", "checkpoint"],
    "llp_tf.tools.evaluate": ["workdir", "checkpoint", "split", "knn_k", "output"],
    "llp_tf.tools.analyze": ["workdir", "compare_workdir", "output_dir", "classes"],
    "llp_tf.tools.compare_propagation": ["features", "workdir", "classes", "methods", "sweep_sizes"],
    "llp_tf.tools.transfer": ["workdir", "dataset", "epochs", "learning_rate"],
    "llp_tf.tools.first_propagation": ["workdir", "k", "output_json"],
    "llp_tf.tools.pseudo_label_confidence": ["workdir", "checkpoint", "thresholds"],
}
NAMES = ["ankle boot", "bag", "coat", "T-shirt/top"]
# What TensorFlow prints on a machine without a GPU, and after every checkpoint.
NOISE = re.compile(r"cuInit|Could not find cuda drivers|cpu_feature_guard|Sharding callback|"
                   r"absl::InitializeLog")


def run_quiet_by_default(module, *args):
    """`python -m module args` with the environment a user has: no TF_CPP_MIN_LOG_LEVEL (the test
    session sets one, which would hide TensorFlow's lines whatever the program does)."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("module", sorted(PROGRAMS))
def test_help_lists_the_programs_own_flags_and_exits_0(module):
    result = run_tool(module, "--help")  # raises unless the exit status is 0
    for name in PROGRAMS[module]:
        assert re.search(rf"^  --{name} \(default: ", result.stdout, re.M), name
    assert "--logtostderr" not in result.stdout and "--verbosity (default" not in result.stdout
    assert result.stderr == ""  # no TensorFlow imported before --help answers


@pytest.mark.slow
def test_llp_train_help_groups_every_setting_once():
    result = run_tool("llp_tf.tools.train", "-h")
    titles = re.findall(r"^(\S[^:\n]*):$", result.stdout, re.M)
    assert titles[:1] == ["Data"] and {"Method", "Schedule", "Outputs", "Hardware"} <= set(titles)
    assert "Other" not in titles  # FLAG_GROUPS names every setting
    listed = re.findall(r"^  --(\w+) \(default: ", result.stdout, re.M)
    # Every setting, and llp-train's one flag that is an action rather than a setting of the run.
    assert sorted(listed) == sorted([*TrainConfig.__dataclass_fields__, "reevaluate"])
    # The paper's value where the default differs.
    for name, paper in (("backbone", "resnet18v2"), ("epochs", "200"), ("warmup_epochs", "10 epochs"),
                        ("eval_knn_k", "paper: 200")):
        block = result.stdout.split(f"  --{name} (default: ", 1)[1].split("\n  --", 1)[0]
        assert "paper" in block and paper in block, name


def test_help_lists_a_flag_no_group_names_under_other():
    flag_values = flags.FlagValues()
    flags.DEFINE_integer("grouped", 3, "a grouped flag", flag_values=flag_values)
    flags.DEFINE_string("forgotten", None, "a flag no group names", flag_values=flag_values)
    text = cli.help_text("prog", "does things", [("Main", ["grouped"])], flag_values,
                         module=sys.modules[__name__])
    assert text.index("Main:\n  --grouped (default: 3)") < text.index("Other:\n  --forgotten (default: none)")


@pytest.mark.slow
def test_an_error_still_reaches_standard_error_and_verbosity_1_shows_tensorflow(tmp_path):
    missing = tmp_path / "no_such_run"
    quiet = run_quiet_by_default("llp_tf.tools.evaluate", f"--workdir={missing}")
    assert quiet.returncode == 1
    assert f"llp-eval: workdir {missing} does not exist" in quiet.stderr
    assert not NOISE.search(quiet.stderr), quiet.stderr
    verbose = run_quiet_by_default("llp_tf.tools.evaluate", f"--workdir={missing}", "--verbosity=1")
    assert f"llp-eval: workdir {missing} does not exist" in verbose.stderr
    assert NOISE.search(verbose.stderr), verbose.stderr  # TensorFlow's start-up lines, let through


@pytest.fixture(scope="module")
def named_run(tmp_path_factory):
    """(workdir, llp-train's result) of a short LLP run on an npz whose class_names are NAMES, started
    as a user would (no TF_CPP_MIN_LOG_LEVEL), with a line per epoch."""
    root = tmp_path_factory.mktemp("named")
    path = write_npz(root / "plain.npz")
    with np.load(path) as arrays:
        np.savez(root / "named.npz", **arrays, class_names=np.array(NAMES))
    workdir = root / "run"
    result = run_quiet_by_default("llp_tf.tools.train", f"--dataset=npz:{root / 'named.npz'}",
                                  f"--workdir={workdir}", *TINY, "--epochs=2", "--warmup_epochs=1",
                                  "--steps_per_epoch=5", "--verbose=2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir, result


@pytest.mark.slow
def test_console_tells_each_phase_and_each_propagation(named_run):
    _, result = named_run
    lines = result.stdout.splitlines()
    starts = lambda text: next(i for i, line in enumerate(lines) if line.startswith(text))  # noqa: E731
    first = starts("Instance recognition (warm-up), epoch 1 of 2:")
    assert "the classifier is not trained in this phase, so val_top1 stays at chance" in lines[first]
    propagations = [i for i, line in enumerate(lines) if line.startswith("Propagation after epoch")]
    assert len(propagations) == 2  # the switch's, then the LLP epoch's
    llp = starts("LLP, epoch 2 of 2:")
    epoch_ends = [i for i, line in enumerate(lines) if re.match(r"5/5 - ", line)]
    assert first < epoch_ends[0] < propagations[0] < llp < epoch_ends[1] < propagations[1]
    for i in propagations:
        assert re.search(r": \d+\.\d+ s, \d+ of 432 pseudo-labels changed \(\d+\.\d%\), mean confidence "
                         r"0\.\d{3}, pseudo-label accuracy \d+\.\d\d%", lines[i]), lines[i]
    assert re.search(r"432 of 432 pseudo-labels changed \(100\.0%\)", lines[propagations[0]])


@pytest.mark.slow
def test_standard_error_of_a_run_is_free_of_tensorflow_noise(named_run):
    _, result = named_run
    assert not NOISE.search(result.stderr), result.stderr
    assert "Gradients do not exist" not in result.stderr
    assert "retracing" not in result.stderr


@pytest.mark.slow
def test_confidence_histogram_from_the_switch_on(named_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    workdir, _ = named_run
    events = EventAccumulator(str(workdir / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    assert len(events.Tensors("propagation/confidence")) == 2  # the switch's propagation, then epoch 2's


@pytest.mark.slow
def test_class_names_reach_eval_export_and_analyze(named_run, tmp_path):
    workdir, _ = named_run
    run_tool("llp_tf.tools.evaluate", f"--workdir={workdir}", f"--output={tmp_path / 'eval.json'}")
    results = json.loads((tmp_path / "eval.json").read_text())
    assert [c["name"] for c in results["per_class_accuracy"]] == NAMES
    run_tool("llp_tf.tools.export", f"--workdir={workdir}", f"--export_dir={tmp_path / 'exported'}")
    assert (tmp_path / "exported" / "assets" / "class_names.txt").read_text().splitlines() == NAMES
    run_tool("llp_tf.tools.analyze", f"--workdir={workdir}", f"--output_dir={tmp_path / 'analysis'}",
             "--max_points_per_class=20")
    assert json.loads((tmp_path / "analysis" / "summary.json").read_text())["class_names"] == NAMES


@pytest.mark.slow
def test_class_names_flag_renames_and_a_wrong_count_is_one_line(tmp_path):
    path = write_npz(tmp_path / "plain.npz")
    result = run_quiet_by_default("llp_tf.tools.train", f"--dataset=npz:{path}",
                                  f"--workdir={tmp_path / 'w'}", *TINY, "--class_names=a,b,c")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"llp-train: --class_names gives 3 names but npz:{path} has 4 classes: give 4 comma-separated "
        "names, in label order")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "w" / "checkpoints").exists()


@pytest.mark.slow
def test_llp_propagate_reports_t_only_for_llp(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.where(rng.random(60) < 0.3, np.arange(60) % 3, -1)
    np.savez(tmp_path / "f.npz", features=rng.normal(size=(60, 8)).astype(np.float32), labels=labels)
    knn = run_tool("llp_tf.tools.propagate", f"--features={tmp_path / 'f.npz'}",
                   f"--output={tmp_path / 'o.npz'}", "--method=knn", "--k=3")
    assert "(knn, K=3, tau=0.07)" in knn.stdout and "T=" not in knn.stdout


def test_mds_class_colours_are_never_the_sub_cluster_colours():
    from matplotlib import colors
    clusters = {colors.to_rgba(c) for c in plots.CLUSTER_COLOURS}
    for count in (3, 8, 12):
        chosen = [colors.to_rgba(c) for c in plots.class_colours(count)]
        assert len(set(chosen)) == count and not clusters & set(chosen)


def test_verbose_auto_is_a_progress_bar_on_a_terminal_and_a_line_per_epoch_otherwise():
    assert TrainConfig(verbose="auto").keras_verbose(is_terminal=True) == 1
    assert TrainConfig(verbose="auto").keras_verbose(is_terminal=False) == 2
    assert [TrainConfig(verbose=v).keras_verbose(True) for v in ("0", "1", "2", 0)] == [0, 1, 2, 0]
    with pytest.raises(ValueError, match="--verbose must be one of auto, 0, 1, 2, got '3'"):
        TrainConfig(dataset="npz:x", workdir="w", verbose="3").validate()


@pytest.mark.parametrize("settings, phase, epochs, expected", [
    ({}, "instance", (0, 2), r"Instance recognition \(warm-up\), epochs 1-2 of 10: .* the classifier is not "
     r"trained in this phase, so val_top1 stays at chance \(about 10%\)\. The first propagation comes at "
     "the end of epoch 2"),
    ({"warmup_category_loss": True}, "instance", (0, 2),
     "the classifier learns from the batch's labelled images"),
    ({"warmup": "supervised"}, "supervised", (0, 2),
     "Supervised warm-up, epochs 1-2 of 10: the network trains on the 60 labelled images alone; at the "
     "end of epoch 2 the bank is refilled"),
    ({"warmup": "supervised", "consistency_warmup": True}, "supervised", (0, 2),
     r"the network trains on the 60 labelled images and, through the consistency loss "
     r"\(--consistency_warmup\), the unlabelled ones; at the end of epoch 2"),
    ({}, "llp", (2, 10), "LLP, epochs 3-10 of 10: .* after every epoch a propagation"),
    ({"method": "two_stage"}, "llp", (2, 10), "Two-stage baseline, epochs 3-10 of 10: .* stay fixed"),
    ({"method": "supervised"}, "supervised", (0, 10),
     "Supervised baseline, epochs 1-10 of 10: .* no propagation"),
])
def test_each_phase_line_says_what_trains(settings, phase, epochs, expected):
    config = TrainConfig(dataset="npz:x", workdir="w", warmup_epochs=2, **settings)
    assert re.search(expected, console.phase_line(phase, *epochs, config, 10, 60))
