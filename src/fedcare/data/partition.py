"""Split one pooled table into simulated sites, for experimenting when real sites are not available.

iid = random equal shares; dirichlet = label skew (each class spread over sites by Dir(alpha));
quantity = size skew (site shares ~ Dir(alpha)). Small alpha means stronger skew.
Every site gets at least MIN_ROWS rows so that it can still be split into train and test.
"""

from __future__ import annotations

import numpy as np

from fedcare.core.errors import DataError

MIN_ROWS = 4
MAX_TRIES = 100


def _check_room(n_rows: int, num_sites: int) -> None:
    if num_sites < 1:
        raise DataError(f"num_sites must be at least 1, got {num_sites}")
    if n_rows < MIN_ROWS * num_sites:
        raise DataError(
            f"{n_rows} rows cannot give {num_sites} sites at least {MIN_ROWS} rows each; "
            "lower --num-sites"
        )


def iid(n_rows: int, num_sites: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle rows and deal them into num_sites nearly equal parts."""
    _check_room(n_rows, num_sites)
    return [np.sort(part) for part in np.array_split(rng.permutation(n_rows), num_sites)]


def dirichlet(labels: np.ndarray, num_sites: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Label skew: each class's rows go to sites in proportions drawn from Dir(alpha)."""
    labels = np.asarray(labels)
    if labels.dtype.kind == "f" and not np.all(np.mod(labels, 1) == 0):
        raise DataError(
            "the dirichlet partition skews labels by class and a regression label has no classes; "
            "use --partition iid or --partition quantity"
        )
    if alpha <= 0:
        raise DataError(f"alpha must be positive, got {alpha}")
    _check_room(len(labels), num_sites)
    classes = np.unique(labels)
    for _ in range(MAX_TRIES):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_sites)]
        for cls in classes:
            rows = rng.permutation(np.flatnonzero(labels == cls))
            shares = rng.dirichlet(np.full(num_sites, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(int)
            for site, chunk in enumerate(np.split(rows, cuts)):
                parts[site].append(chunk)
        sites = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(s) for s in sites) >= MIN_ROWS:
            return sites
    raise DataError(
        f"the dirichlet partition with alpha={alpha} left a site with fewer than {MIN_ROWS} rows "
        f"after {MAX_TRIES} tries; raise --alpha or lower --num-sites"
    )


def quantity(n_rows: int, num_sites: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Size skew: every site gets MIN_ROWS rows plus a Dir(alpha) share of the rest."""
    if alpha <= 0:
        raise DataError(f"alpha must be positive, got {alpha}")
    _check_room(n_rows, num_sites)
    spare = n_rows - MIN_ROWS * num_sites
    shares = rng.dirichlet(np.full(num_sites, alpha))
    extra = np.floor(shares * spare).astype(int)
    # hand out rounding leftovers to the largest fractional parts, so sizes sum to n_rows
    leftover = spare - int(extra.sum())
    extra[np.argsort(-(shares * spare - extra), kind="stable")[:leftover]] += 1
    sizes = MIN_ROWS + extra
    order = rng.permutation(n_rows)
    return [np.sort(part) for part in np.split(order, np.cumsum(sizes)[:-1])]
