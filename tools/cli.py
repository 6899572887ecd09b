"""What every llp_tf program does before its own work: a quiet console and a --help that lists the
program's own flags. A program imports TensorFlow only inside main, so that the console is quiet
before TensorFlow's first line (and --help stays fast).

Quiet: TensorFlow's C++ INFO lines (XLA, oneDNN notes) are off (TF_CPP_MIN_LOG_LEVEL=1, unless the
environment sets it), a few known lines that say nothing on a machine without a GPU (the CUDA driver
probe, cuInit's failure, the CPU-instruction note) are taken out of standard error, and TensorFlow's
Python INFO lines (a "Sharding callback duration" after every checkpoint) are dropped. Warnings and
errors always pass. `--verbosity=1` (or `-v 1`) shows everything.

--help (also -h, -?): the program's flags in groups, with defaults, then exit 0; --helpfull stays
absl's list of every flag.
"""
import atexit
import logging
import os
import re
import sys
import textwrap
import threading

from absl import app, flags

NOISE = [re.compile(pattern) for pattern in (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"cudart_stub\.cc:\d+\] Could not find cuda drivers",
    r"cuda_platform\.cc:\d+\] failed call to cuInit",
    r"cuda_executor\.cc:\d+\].*(kernel driver does not appear|no NVIDIA GPU)",
    r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized",
    r"^To enable the following instructions: .*rebuild TensorFlow",
)]
HELP_ARGUMENTS = ("--help", "-help", "-h", "--h", "-?")


def wants_verbose(argv) -> bool:
    """True when the command line asks absl for verbosity >= 1 (then nothing is silenced)."""
    for i, arg in enumerate(argv):
        value = None
        for name in ("--verbosity=", "-verbosity=", "--v=", "-v="):
            if arg.startswith(name):
                value = arg[len(name):]
        if arg in ("-v", "--v", "--verbosity", "-verbosity") and i + 1 < len(argv):
            value = argv[i + 1]
        if value is not None:
            try:
                if int(value) >= 1:
                    return True
            except ValueError:
                pass
    return False


class _DropTensorFlowInfo(logging.Filter):
    """Drops INFO records that TensorFlow's own Python code sends through absl logging."""

    def filter(self, record):
        return record.levelno > logging.INFO or f"{os.sep}tensorflow{os.sep}" not in record.pathname


def quiet(argv=None):
    """Silences the noise described above for the rest of the process, unless argv asks for it."""
    argv = sys.argv if argv is None else argv
    if wants_verbose(argv):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    logging.getLogger("absl").addFilter(_DropTensorFlowInfo())
    _filter_standard_error(NOISE)


def _filter_standard_error(patterns):
    """Standard error (file descriptor 2, so C++ writes too) through a pipe whose reader passes on
    every line but those matching patterns. At exit the reader is drained before the process ends."""
    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:
        return  # no standard error to filter (closed): nothing to silence either

    def pump():
        with os.fdopen(read_end, "rb", buffering=0) as source:
            for line in iter(source.readline, b""):
                text = line.decode("utf-8", errors="replace")
                if not any(pattern.search(text) for pattern in patterns):
                    os.write(original, line)

    reader = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    reader.start()

    def drain():
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(original, 2)  # closes the pipe's last write end, so the reader sees its end
        reader.join(timeout=5)

    atexit.register(drain)


def check_output_file(flag, path, suffix=None, inputs=(), creates_folder=False):
    """ValueError unless `path` (the value of --flag) can take the file a program writes at its end,
    checked before its work so that a bad path loses none: not a directory, ending in `suffix` when
    given, in a folder this user may write in (or, creates_folder: may create), not one of the
    `inputs` files. Writes nothing."""
    if not path:
        return
    shown = f"--{flag}={path}"
    if os.path.isdir(path):
        name = "output" + (suffix or ".json")
        raise ValueError(f"{shown} is a directory: name a file, e.g. {os.path.join(path, name)}")
    if suffix and not path.endswith(suffix):
        raise ValueError(f"{shown}: the output is a {suffix} file; give a name ending in {suffix} "
                         f"(e.g. {path}{suffix})")
    folder = os.path.dirname(os.path.abspath(path))
    existing = folder
    while creates_folder and not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        if os.path.lexists(existing):
            raise ValueError(f"{shown}: {existing} is a file, not a folder: name a file in a folder")
        raise ValueError(f"{shown}: the folder {existing} does not exist: create it or name another")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{shown}: {existing} is not writable: name a file in a folder you may write in")
    for given in inputs:
        if given and os.path.exists(given) and os.path.exists(path) and os.path.samefile(given, path):
            raise ValueError(f"{shown} is the input file {given}: name another output")


def help_text(program, summary, groups, flag_values=flags.FLAGS, module=None) -> str:
    """The program's flags, group by group: [(title, [flag names])], then under "Other" every flag that
    `module` (the program's module object) defined and no group names, so none is lost."""
    named = {name for _, names in groups for name in names}
    others = [name for name in program_flag_names(module, flag_values) if name not in named]
    header = summary.strip()  # a line, or the program's module docstring
    lines = [header if header.startswith(program) else f"{program}: {header}", "",
             f"Usage: {program} [--flag=value ...] (or --flagfile=FILE; --helpfull lists absl's and "
             "TensorFlow's flags too)"]
    for title, names in [*groups, *([("Other", others)] if others else [])]:
        lines += ["", f"{title}:"]
        for name in names:
            flag = flag_values[name]
            default = _shown_default(flag)
            lines.append(f"  --{name} (default: {default})")
            lines += textwrap.wrap(flag.help, width=96, initial_indent="      ",
                                   subsequent_indent="      ")
    lines += ["", "Console: quiet by default; --verbosity=1 also shows TensorFlow's own log lines."]
    return "\n".join(lines) + "\n"


def _shown_default(flag) -> str:
    if flag.default is None:
        return "none"
    shown = flag.default_as_str  # quoted, e.g. '0.01'
    shown = shown[1:-1] if len(shown) >= 2 and shown[0] == shown[-1] == "'" else shown
    return shown or "empty"


def program_flag_names(module, flag_values=flags.FLAGS):
    """The flags `module` (a module object, e.g. sys.modules[main.__module__]) defined, in definition
    order; keyed by the module object, so the same under `python -m` as under the console script."""
    if module is None:
        return []
    return [flag.name for flag in flag_values.flags_by_module_id_dict().get(id(module), [])]


def run(main, program, summary, groups, argv=None):
    """Quiet, then --help (exit 0) or app.run(main). groups: [(title, [flag names])]; flags of the
    program (those main's module defined) that no group names are listed last under "Other"."""
    argv = sys.argv if argv is None else argv
    if any(arg in HELP_ARGUMENTS for arg in argv[1:]):
        sys.stdout.write(help_text(program, summary, groups, module=sys.modules.get(main.__module__)))
        sys.exit(0)
    quiet(argv)
    app.run(main, argv=argv)
