"""A simulated federation: the plan, and every site built in this process from a loaded dataset.

What simulation adds to the plan: the sites themselves (each a LocalSite holding its own rows),
the simulated hostile ones swapped in where the config asks for attackers, the secure-aggregation
runner, and the pooled site of the ceiling baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fedcare.algorithms.attacks import attack, flip_labels
from fedcare.core.config import FederationConfig
from fedcare.core.errors import ConfigError
from fedcare.core.params import Params
from fedcare.data import FederatedDataset, SiteData
from fedcare.data.dataset import SPLITS
from fedcare.data.examples import array, concat, with_arrays
from fedcare.data.targets import label_rules
from fedcare.federation.plan import Plan, make_plan
from fedcare.learning.models import ModelFactory
from fedcare.learning.site import LocalSite
from fedcare.transports.adversary import AttackedSite
from fedcare.transports.secure import SecureAggregation, SecureSites


@dataclass
class Federation:
    """Everything a simulated run needs: the plan, the data and the sites."""

    plan: Plan
    dataset: FederatedDataset
    sites: list[LocalSite]      # the honest sites, in the data's order
    federated_sites: list       # what the federation meets: `sites`, with simulated attackers swapped in
    initial: Params

    @property
    def config(self) -> FederationConfig:
        return self.plan.config


def build_federation(cfg: FederationConfig, dataset: FederatedDataset, *, model_factory: ModelFactory | None = None,
                     aggregator: object | None = None) -> Federation:
    """The plan for the dataset's shape, and its sites with their data and model."""
    plan = make_plan(cfg, dataset.shape, [sd.site_id for sd in dataset.sites], model_factory=model_factory,
                     aggregator=aggregator)
    sites = [plan.local_site(sd) for sd in dataset.sites]
    hostile = set(attacker_ids(cfg, {s.site_id: s.num_train for s in sites}))
    federated = attacked(plan, dataset.sites, sites, hostile)
    return Federation(plan, dataset, sites,
                      SecureSites(federated, SecureAggregation(plan.secure)) if plan.secure is not None else federated,
                      plan.initial_params())


def attacker_ids(cfg: FederationConfig, sizes: Mapping[str, int]) -> list[str]:
    """The attacking sites: the K sites with the most training rows (the worst case for an
    example-weighted mean; ties in site order), or the ids the config names."""
    r = cfg.robustness
    if r.attack is None:
        return []
    site_ids = list(sizes)
    if isinstance(r.attackers, int):
        if r.attackers >= len(site_ids):
            raise ConfigError(f"attackers={r.attackers} leaves no honest site among {len(site_ids)}")
        return sorted(site_ids, key=lambda s: -sizes[s])[:r.attackers]
    unknown = [a for a in r.attackers if a not in site_ids]
    if unknown:
        raise ConfigError(f"attackers names unknown site '{unknown[0]}'; the sites are {', '.join(site_ids)}")
    return list(r.attackers)


def attacked(plan: Plan, data: Sequence[SiteData], sites: list[LocalSite], hostile: set[str]) -> list:
    """The sites as the federation meets them: the hostile ones' updates (or labels) corrupted."""
    cfg, task = plan.config, plan.task
    if not hostile:
        return list(sites)
    out: list = []
    for sd, site in zip(data, sites, strict=True):
        if site.site_id not in hostile:
            out.append(site)
        elif cfg.robustness.attack == "label-flip":
            train = sd.splits["train"]
            labels = array(train, "label") if task.reads == "classes" else None  # others have none to flip
            flipped = with_arrays(train, label=flip_labels(labels, label_rules(task.name), len(task.classes)))
            out.append(plan.local_site(SiteData(sd.site_id, {**sd.splits, "train": flipped})))
        else:
            r = cfg.robustness
            out.append(AttackedSite(site, attack(r.attack, [site.site_id], r.attack_scale, cfg.run.seed)))
    return out


def honest(sites: Sequence) -> dict[str, LocalSite]:
    """The LocalSite behind each federated site (a simulated attacker wraps one)."""
    return {s.site_id: getattr(s, "site", s) for s in sites}


def personalize(fed: Federation, global_params: Params) -> dict[str, Params]:
    """Each site's own final model (its kept layers, its Ditto model, or the fine-tuned global one)."""
    return {sid: site.personal_params(global_params, fed.plan.personalize_request(i))
            for i, (sid, site) in enumerate(honest(fed.federated_sites).items())}


def pooled_site(fed: Federation) -> LocalSite:
    """The ceiling baseline's one site: every site's training (and validation) rows in one place."""
    splits = {split: concat([sd.splits[split] for sd in fed.dataset.sites]) for split in SPLITS}
    return fed.plan.local_site(SiteData("pooled", splits))
