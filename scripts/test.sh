#!/usr/bin/env bash
# Set everything up, then run the whole test suite under a virtual X server (napari needs GL).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# One thread for each of the two workers and for each process a test starts (a fine-tune's child): more threads
# than cores leave OpenMP's waiting threads spinning, which slowed the panel's training tests fivefold.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# Two pytest-xdist workers, one core each (tests/conftest.py shares the threads out); a module's tests stay on
# one worker, so its shared fixtures (the learning test's training run) are built once. `-n 0` runs serially.
exec xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/python -m pytest -n 2 --dist loadscope "$@"
