"""Preparation seconds of one CSV with a site column (`load_dataset`: reading, typing, the federated
preparation of every site), for the fedcare on PYTHONPATH; the CSV is benchmarks/scale.py's
(`make_csv`: 500 rows per site, 20 features); peak is the process's largest resident size (ru_maxrss,
imports included). Run it once per source tree, alternating, e.g.

    python -c "import sys; sys.path.insert(0, 'benchmarks'); from scale import make_csv; \
               from pathlib import Path; make_csv(Path('/tmp/s1000.csv'), 1000)"
    for src in /work/main/src src; do PYTHONPATH=$src python benchmarks/prepare_time.py /tmp/s1000.csv $src; done
"""

import resource
import sys
import time

from fedcare.core.config.data import DataSpec
from fedcare.data.loader import load_dataset

spec = DataSpec.model_validate({"data": [sys.argv[1]], "site": "site", "label": "y", "task": "multiclass"})
cpu, wall = time.process_time(), time.perf_counter()
dataset = load_dataset(spec)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's largest resident size
print(f"{sys.argv[2]}: CPU {time.process_time() - cpu:.2f} s, wall {time.perf_counter() - wall:.2f} s, "
      f"peak {peak:.0f} MB, {len(dataset.sites)} sites", flush=True)
