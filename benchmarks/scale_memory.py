"""Where a `fedcare.simulate` run's resident memory peaks: benchmarks/scale.py's fedcare run (its CSV,
its config, in-process), with a thread that reads the process's resident size (/proc/self/statm)
every 10 ms together with the main thread's stack, and names each reading by the first phase found
in it, innermost first (reading the CSV, grouping it by site, each preparation phase, the model, the
round). Prints each phase's largest reading and the stack of the overall peak. Memory, not time:
the machine's load does not change it (a 10 ms sampler can miss a peak shorter than that; the
process's ru_maxrss is printed too).

    PYTHONPATH=src python benchmarks/scale_memory.py /tmp/scale10k/scale-10000.csv [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
import traceback

PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20

PHASES = (  # (function name, phase), innermost first: the first one found in the stack names the reading
    ("read_table_typed", "read the CSV (Arrow text, typed)"),
    ("site_groups", "group rows by site"),
    ("from_frame", "site blocks (SiteTable.from_frame)"),
    ("_columns", "prepare: columns"),
    ("_schema", "prepare: schema"),
    ("_split_rows", "prepare: split"),
    ("_finish", "prepare: finish"),
    ("prepare", "prepare: coordinator"),
    ("load_dataset", "load_dataset (other)"),
    ("open_backend", "model build / backend"),
    ("_tracked", "the rounds, report"),
)


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_MB


def phase_of(frame) -> str:
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    for name, phase in PHASES:
        if name in names:
            return phase
    return "other (imports, config)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    os.environ.setdefault("FEDCARE_REPORT_FIGURES", "0")
    import scale

    import fedcare

    main_id = threading.get_ident()
    peaks: dict[str, float] = {}
    order: list[str] = []
    top = {"mb": 0.0, "stack": ""}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            mb = rss_mb()
            frame = sys._current_frames().get(main_id)
            phase = phase_of(frame)
            if phase not in peaks:
                order.append(phase)
            peaks[phase] = max(peaks.get(phase, 0.0), mb)
            if mb > top["mb"]:
                top["mb"], top["stack"] = mb, "".join(traceback.format_stack(frame)[-8:])
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        cfg = {"data": [args.csv], "site": "site", "label": "y", "task": "multiclass", "model": "mlp",
               "hidden": [scale.HIDDEN], "rounds": args.rounds, "local_epochs": 1, "batch_size": scale.BATCH,
               "lr": scale.LR, "seed": scale.SEED, "baselines": False, "out": os.path.join(out, "run")}
        fedcare.simulate(cfg)
    done.set()
    sampler.join()
    print(f"{time.perf_counter() - started:.0f} s wall, load average {os.getloadavg()[0]:.1f}")
    for phase in order:
        print(f"  {phase:40s} largest resident size {peaks[phase]:7.0f} MB")
    print(f"peak sampled {top['mb']:.0f} MB, ru_maxrss "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; the peak's stack:\n{top['stack']}")


if __name__ == "__main__":
    main()
