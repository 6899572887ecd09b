"""Benchmarks, the kill drill and the RESULTS.md runner: run from a checkout (`python scripts/NAME.py`,
`bash scripts/run_results.sh`), never installed. The installed command-line programs are in tools/."""
