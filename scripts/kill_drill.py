"""Kill drill: SIGKILLs a small llp-train run again and again, some kills inside checkpoint writes,
reruns the same command after each, and checks that the finished run equals an uninterrupted one.

  python -c "from tests.datasets import write_npz; write_npz('/tmp/drill.npz', num_train=960)"  # from the repository root
  python scripts/kill_drill.py --dataset=npz:/tmp/drill.npz --workdir=/tmp/drill --kills=10 --seed=0

Every round starts the run (the same --deterministic command each time) and SIGKILLs it: once during
start-up (a random moment within the reference run's start-up), once at each pause point inside a
checkpoint save (the process is started with the point patched into TensorFlow's save path and killed
as soon as it reports that it has reached it), and otherwise a random time (up to 1.5 epochs) after
its restore. Before each rerun every checkpoint on disk is read back in full (each tensor against its checksum); the
rerun's log must show that it resumed from the newest of those that read back whole (or, when none
was left, that it started from scratch), unless it was killed before it got that far. At the end the
run's metrics.json and final checkpoint are compared with a reference run that was never killed:
the same keys, shapes and dtypes, and, the runs being deterministic, the same values.
"""
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

from llp_tf.workdir import Workdir

WALL_CLOCK_KEYS = ("wall_seconds",)
# Where a paused process waits to be killed: {name: (patched function, what is on disk by then)}.
PAUSE_POINTS = {
    "write": ("gen_io_ops.merge_v2_checkpoints",
              "the new checkpoint's shards are in <prefix>_temp/, not yet merged and renamed"),
    "record": ("checkpoint_management.update_checkpoint_state_internal",
               "the new checkpoint is complete, the state file does not name it yet"),  # 1st call of a save
    "sweep": ("checkpoint_management._delete_file_if_exists",
              "the state file names the new checkpoint; an old one's index is deleted, its data not"),
}
PAUSE_ENV = "LLP_KILL_DRILL_PAUSE_AT"  # "<point>:<n>": pause at the n-th save of the process
PAUSED = "kill-drill: paused at"
RESUMED = re.compile(r"resuming from (\S+) \(")
FROM_SCRATCH = "training from scratch"


def train_command(dataset, workdir, epochs=16, instance_epochs=1, steps_per_epoch=20, keep=2,
                  warmup="instance"):
    """A small --deterministic llp-train command (one device) whose saves also delete old checkpoints;
    its warm-up (instance recognition or supervised) lasts instance_epochs."""
    return [sys.executable, "-m", "llp_tf.tools.train", f"--dataset={dataset}", f"--workdir={workdir}",
            "--backbone=small_cnn", "--width=1", "--batch_size=32", "--labelled_fraction=0.1", "--k=5",
            "--t=10", "--eval_knn_k=20", "--learning_rate=0.05", f"--epochs={epochs}",
            f"--warmup={warmup}", f"--warmup_epochs={instance_epochs}", f"--steps_per_epoch={steps_per_epoch}",
            f"--keep_checkpoints={keep}", "--strategy=default", "--deterministic", "--verbose=2"]


def start(command, log_prefix, pause_at=None):
    """Starts `command` (a train_command) with stdout and stderr in log_prefix.out / .err; with
    pause_at ("<point>:<n>") the process stops at that point of its n-th save there and waits."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if pause_at:
        env[PAUSE_ENV] = pause_at
        module = command.index("llp_tf.tools.train")
        command = command[:module - 1] + [os.path.abspath(__file__), "--child"] + command[module + 1:]
    with open(f"{log_prefix}.out", "w") as out, open(f"{log_prefix}.err", "w") as err:
        return subprocess.Popen(command, stdout=out, stderr=err, env=env)


def kill_when(process, ready, timeout=600):
    """SIGKILLs `process` once ready() holds; False if it exited before that."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            return False
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise TimeoutError(f"not ready after {timeout} s")
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return True


def paused(log_prefix):
    return lambda: PAUSED in read(f"{log_prefix}.err")


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


def resumed_from(stderr_text):
    """The checkpoint a rerun restored, from its log (None: it started from scratch)."""
    found = RESUMED.findall(stderr_text)
    return found[-1] if found else None


def restored(stderr_text):
    """True once the log shows that the run restored a checkpoint or started from scratch."""
    return bool(RESUMED.search(stderr_text)) or FROM_SCRATCH in stderr_text


def checkpoint_health(workdir):
    """{prefix: (position, None) if every tensor reads back, else (None, error)} for every checkpoint
    with a file on disk, recorded or not, and the prefixes the state file records (newest last)."""
    import tensorflow as tf
    directory = Workdir(workdir).checkpoints
    health = {}
    files = glob.glob(os.path.join(directory, "ckpt-*")) + glob.glob(
        os.path.join(directory, "interrupted", "ckpt-*"))
    prefixes = {re.sub(r"\.(index|data-.*)$", "", path) for path in files if not path.endswith("_temp")}
    for prefix in sorted(prefixes):
        try:
            reader = tf.train.load_checkpoint(prefix)
            tensors = {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()}
            steps = tensors.get("progress/steps_in_epoch/.ATTRIBUTES/VARIABLE_VALUE", 0)
            health[prefix] = ((int(tensors["state/completed_epochs/.ATTRIBUTES/VARIABLE_VALUE"]),
                               int(steps)), None)
        except Exception as error:  # noqa: BLE001 - any failure to read back is what we report
            health[prefix] = (None, f"{type(error).__name__}: {str(error).splitlines()[0][:120]}")
    state = tf.train.get_checkpoint_state(directory)
    recorded = [os.path.join(directory, os.path.basename(p))
                for p in (state.all_model_checkpoint_paths if state else [])]
    return health, recorded


def expected_restore(health, recorded):
    """The newest checkpoint a rerun may take: recorded (or interrupted) and whole."""
    candidates = [(position, prefix) for prefix, (position, _) in health.items()
                  if position is not None and (prefix in recorded or "/interrupted/" in prefix)]
    return max(candidates)[1] if candidates else None


def compare_runs(reference, workdir):
    """(differences in structure, names of values that differ) between two finished workdirs."""
    import tensorflow as tf
    problems, differing = [], []
    ours = json.loads(read(Workdir(workdir).metrics))
    theirs = json.loads(read(Workdir(reference).metrics))
    if set(ours) != set(theirs):
        problems.append(f"metrics.json keys differ: {sorted(set(ours) ^ set(theirs))}")
    for key in set(ours) & set(theirs):
        if isinstance(ours[key], list) and len(ours[key]) != len(theirs[key]):
            problems.append(f"metrics.json {key} has {len(ours[key])} entries, not {len(theirs[key])}")
        elif key not in WALL_CLOCK_KEYS and json.dumps(ours[key]) != json.dumps(theirs[key]):
            differing.append(f"metrics.json {key}: {ours[key]} vs {theirs[key]}")
    names = [sorted(os.listdir(Workdir(w).checkpoints)) for w in (workdir, reference)]
    if names[0] != names[1]:  # leftovers of a kill (temp dirs, half-deleted or interrupted ones)
        problems.append(f"files in checkpoints/ differ: {names[0]} vs {names[1]}")
    latest = [tf.train.load_checkpoint(tf.train.latest_checkpoint(Workdir(w).checkpoints))
              for w in (workdir, reference)]
    shapes = [r.get_variable_to_shape_map() for r in latest]
    dtypes = [r.get_variable_to_dtype_map() for r in latest]
    if shapes[0] != shapes[1] or dtypes[0] != dtypes[1]:
        problems.append("the final checkpoints hold other variables, shapes or dtypes")
    else:
        for key in sorted(set(shapes[0]) - {"_CHECKPOINTABLE_OBJECT_GRAPH"}):
            if not np.array_equal(latest[0].get_tensor(key), latest[1].get_tensor(key)):
                differing.append(f"checkpoint {key}")
    return problems, differing


def drill(dataset, workdir, kills, seed, epochs=16, steps_per_epoch=20, log=print):
    """Runs the drill; returns True when every check held."""
    rng = np.random.default_rng(seed)
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    reference, run = os.path.join(workdir, "reference"), os.path.join(workdir, "run")
    command = train_command(dataset, run, epochs=epochs, steps_per_epoch=steps_per_epoch)
    began = time.monotonic()
    process = start(train_command(dataset, reference, epochs=epochs, steps_per_epoch=steps_per_epoch),
                    reference)
    while f"Epoch 1/{epochs}" not in read(f"{reference}.out") and process.poll() is None:
        time.sleep(0.02)
    start_up = time.monotonic() - began
    if process.wait():
        raise RuntimeError(f"the reference run failed:\n{read(f'{reference}.err')[-3000:]}")
    epoch_seconds = (time.monotonic() - began - start_up) / epochs
    log(f"reference run: {start_up:.0f} s start-up, then {epoch_seconds:.1f} s per epoch of "
        f"{steps_per_epoch} steps ({epochs} epochs)")
    # One kill in start-up and one at each pause point; the others after a random delay.
    plan = ["start-up", *PAUSE_POINTS] + ["training"] * max(0, kills - len(PAUSE_POINTS) - 1)
    plan = [plan[i] for i in rng.permutation(len(plan))][:kills]
    ok, expected = True, None
    for number, kind in enumerate(plan + ["finish"], start=1):
        prefix = os.path.join(workdir, f"round{number:02d}")
        killed, what, returncode = run_round(command, prefix, kind, rng, start_up, epoch_seconds)
        stderr = read(f"{prefix}.err")
        failures = round_failures(stderr, expected, killed, returncode)
        for failure in failures:
            log(f"  FAIL: round {number} {failure}")
        ok = ok and not failures
        took = ((resumed_from(stderr) or "nothing (started from scratch)") if restored(stderr)
                else "nothing (killed before its restore)")
        health, recorded = checkpoint_health(run)
        expected = expected_restore(health, recorded)
        damaged = {p: error for p, (_, error) in health.items() if error}
        log(f"round {number}: {what}; resumed from {short(took)}; after it: recorded "
            f"{[short(p) for p in recorded]}, "
            f"whole {[short(p) for p, (pos, _) in health.items() if pos]}, damaged {damaged or 'none'}, "
            f"next restore should take {short(expected)}")
    problems, differing = compare_runs(reference, run)
    for problem in problems:
        log(f"  FAIL: {problem}")
    log(f"final state vs the uninterrupted run: {'same structure' if not problems else 'DIFFERENT'}; "
        + ("every value equal" if not differing else f"{len(differing)} values differ: {differing[:5]}"))
    return ok and not problems


def run_round(command, prefix, kind, rng, start_up, epoch_seconds):
    """Starts the run and ends it as `kind` says: "finish" waits; a pause point, "start-up" or
    "training" kills. Returns (killed, what happened, return code)."""
    if kind == "finish":
        process = start(command, prefix)
        return False, "run to the end", process.wait()
    if kind in PAUSE_POINTS:
        pause_at = f"{kind}:{rng.integers(1, 3)}"
        process = start(command, prefix, pause_at)
        killed = kill_when(process, paused(prefix))
        what = f"SIGKILL paused at {pause_at} ({PAUSE_POINTS[kind][1]})"
    elif kind == "start-up":
        delay = float(rng.uniform(0.0, start_up))
        process = start(command, prefix)
        began = time.monotonic()
        killed = kill_when(process, lambda: time.monotonic() - began > delay)
        what = f"SIGKILL {delay:.1f} s after the start"
    else:
        delay = float(rng.uniform(0.0, 1.5 * epoch_seconds))
        process = start(command, prefix)
        restored_at = []

        def ready():
            if not restored_at and restored(read(f"{prefix}.err")):
                restored_at.append(time.monotonic())
            return bool(restored_at) and time.monotonic() - restored_at[0] > delay

        killed = kill_when(process, ready)
        what = f"SIGKILL {delay:.1f} s after its restore"
    return killed, what + ("" if killed else " (it finished first)"), process.returncode


def round_failures(stderr, expected, killed, returncode):
    """What went wrong in a round: a restore of anything but `expected`, or a failed run."""
    failures = []
    if restored(stderr) and resumed_from(stderr) != expected:
        failures.append(f"restored {resumed_from(stderr)}, expected {expected}")
    if not restored(stderr) and not killed:
        failures.append("finished without saying what it restored")
    if not killed and returncode != 0:
        failures.append(f"exited with {returncode}:\n{stderr[-2000:]}")
    return failures


def short(path):
    """checkpoints/ckpt-3 for WORKDIR/checkpoints/ckpt-3; anything else unchanged."""
    if not isinstance(path, str) or not os.path.isabs(path):
        return path
    return os.path.relpath(path, os.path.dirname(os.path.dirname(path)))


def child():
    """The llp-train process of a round with a pause point: patches it in, then runs llp-train."""
    point, occurrence = os.environ[PAUSE_ENV].split(":")
    from tensorflow.python.checkpoint import checkpoint_management
    from tensorflow.python.ops import gen_io_ops
    module_name, function_name = PAUSE_POINTS[point][0].split(".")
    module = {"gen_io_ops": gen_io_ops, "checkpoint_management": checkpoint_management}[module_name]
    original = getattr(module, function_name)
    calls = []

    def pause(what):
        calls.append(what)
        if len(calls) == int(occurrence):
            print(f"{PAUSED} {point}:{occurrence} ({what})", file=sys.stderr, flush=True)
            time.sleep(600)  # the drill kills us here

    def pausing(*args, **kwargs):
        if point == "write":
            pause(args[1])  # (shard prefixes, destination prefix)
        elif point == "record" and kwargs["model_checkpoint_path"] not in calls:
            pause(kwargs["model_checkpoint_path"])  # not its second call, after the sweep
        result = original(*args, **kwargs)
        if point == "sweep" and str(args[0]).endswith(".index"):  # the index is gone, the data not yet
            pause(args[0])
        return result

    setattr(module, function_name, pausing)
    from llp_tf.tools import train
    sys.argv = [sys.argv[0]] + sys.argv[2:]  # drop --child
    train.run()


def main():
    from absl import app, flags
    flags.DEFINE_string("dataset", None, "training data of the drill's runs (a small npz: see above)")
    flags.DEFINE_string("workdir", "/tmp/kill_drill", "scratch directory (emptied first)")
    flags.DEFINE_integer("kills", 10, "SIGKILLs before the final rerun (one in start-up, one per pause "
                         "point, the rest in training)")
    flags.DEFINE_integer("seed", 0, "seed of the kill plan and delays")
    flags.DEFINE_integer("epochs", 16, "epochs of the drilled run")
    flags.DEFINE_integer("steps_per_epoch", 20, "steps per epoch")
    flags.mark_flag_as_required("dataset")

    def run(argv):
        del argv
        FLAGS = flags.FLAGS
        ok = drill(FLAGS.dataset, FLAGS.workdir, FLAGS.kills, FLAGS.seed, FLAGS.epochs,
                   FLAGS.steps_per_epoch)
        print("kill drill: all checks held" if ok else "kill drill: FAILED")
        sys.exit(0 if ok else 1)

    app.run(run)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child()
    else:
        main()
