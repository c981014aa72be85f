"""CPU seconds of one fedcare process, this source tree against a reference one, side by side.

The test suite (and a deployment) starts many short processes: site agents, `fedcare simulate`,
backend workers. What each pays before and around its few rounds is start-up, so the measure is
the CPU (user + system, from the children's rusage) of one whole process. The cases alternate,
reference then this tree, `--repeats` times; the medians and their ratio are printed.

    git archive <commit> src | tar -x -C /tmp/ref    # the reference tree
    python benchmarks/process_cpu.py --reference /tmp/ref/src [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "src"
SIMULATE = ["-m", "fedcare", "simulate", "--rounds", "1", "--no-baselines", "--out", "run"]
CASES = {
    "simulate": SIMULATE,
    "simulate-adam": [*SIMULATE, "--optimizer", "adam"],
    "worker-warm-up": ["-c", "from fedcare.learning.batched import warm_up; warm_up()"],
}


def cpu_of(args: list[str], src: Path, cwd: Path) -> float:
    env = {
        **os.environ,
        "PYTHONPATH": str(src),
        "OMP_NUM_THREADS": "1",
        "NO_COLOR": "1",
        "FEDCARE_REPORT_FIGURES": "0",
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, check=True, capture_output=True
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reference", type=Path, required=True, help="the reference tree's src folder"
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    for name, command in CASES.items():
        times: dict[str, list[float]] = {"reference": [], "this": []}
        for _ in range(args.repeats):
            for label, src in (("reference", args.reference), ("this", HERE)):
                with tempfile.TemporaryDirectory() as cwd:
                    times[label].append(cpu_of(command, src, Path(cwd)))
        ref, new = (
            statistics.median(times["reference"]),
            statistics.median(times["this"]),
        )
        print(
            f"{name}: reference {ref:.2f} CPU s, this tree {new:.2f} CPU s (median of {args.repeats}), "
            f"ratio {new / ref:.2f}"
        )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
