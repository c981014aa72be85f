"""Simulated faulty or hostile sites, for testing robust aggregation in simulation.

An AttackedSite wraps an honest site and rewrites the update it sends with an attack piece
(fedcare.algorithms.attacks): the corruption happens on the site's side of the wire, so the
coordinator meets it exactly as it would meet a real one — a NaN update is refused on arrival,
a sign-flipped or scaled one must be caught by the aggregation rule. Label flipping is done on the
data instead (see fedcare.transports.simulated), because the attacker's update then looks like an honest one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedcare.algorithms.attacks import Attack
from fedcare.algorithms.pieces import RoundContext
from fedcare.core.messages import FitRequest, Split
from fedcare.core.params import Params
from fedcare.core.update import Update
from fedcare.federation.transport import SiteMetrics
from fedcare.transports.simulation import Site


class AttackedSite:
    def __init__(self, site: Site, attack: Attack):
        self.site = site
        self.site_id = site.site_id
        self.attack = attack

    def fit(self, params: Params, request: FitRequest) -> Update:
        honest = self.site.fit(params, request)
        ctx = RoundContext(params=params, round=request.round, rng=np.random.default_rng(request.seed))
        (attacked,), _ = self.attack.apply([honest], {}, ctx)
        return attacked

    def evaluate(self, params: Params, splits: Sequence[Split]) -> SiteMetrics:
        return self.site.evaluate(params, splits)
