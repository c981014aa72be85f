"""CPU seconds of 1,000 per-site splits (`split_site`: 500 rows, two classes, stratified, test 0.34,
seed 43: benchmarks/scale.py's sites), for the fedcare on PYTHONPATH. Run once per source tree,
alternating: for src in /work/main/src src; do PYTHONPATH=$src python benchmarks/split_time.py $src; done
"""

import sys
import time

import numpy as np

from fedcare.data.splitting import split_site

labels = np.random.default_rng(0).integers(0, 2, 500)
cpu = time.process_time()
for i in range(1000):
    split_site(f"site{i}", 500, labels, 0.34, 0.0, 43)
print(f"{sys.argv[1]}: 1,000 splits in {time.process_time() - cpu:.3f} CPU s", flush=True)
