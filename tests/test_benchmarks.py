"""The benchmark scripts run, at toy sizes, and print the figures BUILD.md quotes (their numbers are
only meaningful at the sizes in BUILD.md; here they must merely be there and be positive)."""
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # every test here starts a program or trains a run


def run_script(name, *args):
    """Runs `python scripts/<name>.py args` from the repository root (scripts/ is not installed);
    raises with its output on failure."""
    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", f"{name}.py"), *args],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    if result.returncode:
        raise AssertionError(f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def numbers_after(label, text):
    match = re.search(re.escape(label) + r"\s*=?\s*([0-9.,]+)", text)
    assert match, (label, text[-2000:])
    return float(match.group(1).replace(",", ""))


def table_row(text, first_cell):
    row = next((line for line in text.splitlines() if line.startswith(f"| {first_cell} |")), None)
    assert row, (first_cell, text[-2000:])
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_bench_propagation_prints_its_ratio_and_memory():
    out = run_script("bench_propagation", "--sizes=3000x300,6000x600", "--repeats=1",
                   "--query_rows=256", "--key_rows=1024", "--classes=10").stdout
    assert out.startswith("machine: ")
    cells = table_row(out, "6,000")
    ratio, peak = float(cells[9]), float(cells[14].replace(",", ""))
    assert ratio > 0 and peak > 0
    assert "propagation seconds ~ (N*M)^" in out


def test_bench_propagation_block_parts():
    out = run_script("bench_propagation", "--block_parts", "--query_rows=64",
                   "--key_rows=2048").stdout
    for part in ("multiply", "k=10: top_k of", "k=25: whole two-stage top-k"):
        assert part in out, out


def test_bench_step_prints_the_ratio_of_each_phase():
    out = run_script("bench_step", "--bank_rows=2000", "--rounds=1", "--steps=1",
                   "--batch_size=16", "--image_size=12").stdout
    cells = table_row(out, "2,000")
    assert all(float(cell) > 0 for cell in cells[1:])


def test_bench_input_compares_the_pipeline_with_the_model(tiny_npz):
    out = run_script("bench_input", f"--dataset=npz:{tiny_npz}", "--batch_size=32",
                   "--steps=2", "--rounds=1").stdout
    assert numbers_after("pipeline / model", out) > 0 and numbers_after("fed / held", out) > 0
    assert numbers_after("pipeline alone:", out) > 0
