"""Membership-inference audit of a finished run: how well can an attacker tell a site's training
patients (members) from patients the model never trained on (non-members)?

This is the auditor's side of a simulation: it reads the run folder, rebuilds the dataset exactly
as the run did (same config, same split seeds), loads the saved models and attacks them. Two attacks:

* **loss threshold** (Yeom et al., CSF 2018): score = −(the example's loss). Members are every
  site's training rows, non-members every site's test rows (validation rows, which the model never
  trained on but which chose its round, are left out). No training, so every test row is usable.
* **shadow models** (Shokri et al., S&P 2017): the attacker trains models of its own whose
  membership it knows, learns what members look like, and applies that to the audited model.
  Each site's test rows are shuffled (seeded) and cut in two halves:
    - the *shadow pool*: shadow model k trains on a random half of it ("in") and not on the rest
      ("out"); the attack classifier (logistic regression on log-loss, confidence, correct) is fitted
      on the shadows' in/out examples;
    - the *evaluation non-members*: the other half, never seen by a shadow model or by the classifier.
  The classifier then scores the audited model's members (all training rows) against the evaluation
  non-members only, so no example it is judged on was used to fit it.
  Shadows repeat the run's recipe (algorithm, model, rounds actually used, local epochs, lr, batch
  size, optimizer, personalization) on the shadow-in rows, with their own seeds, but *without*
  DP-SGD: DP noise calibrated to a shadow's few rows would drown what the attacker wants to learn
  (what membership looks like), and the attack stays a valid lower bound whatever the attacker
  trains on. Shadows train on far fewer rows than the audited model (so they tend to overfit more),
  and on rows encoded with the run's own preprocessing, which summary.json already publishes.

Every figure is reported overall and per site, with the worst (highest-AUC) site, and with the
numbers of members and non-members behind it. AUC and the advantage (max TPR − FPR over thresholds)
do not depend on the ratio of members to non-members, so the classes are not subsampled; the
advantage takes the best threshold in hindsight, which flatters the attacker. An attack's AUC is a
lower bound on what a stronger attacker could learn, not a privacy guarantee (see docs/privacy.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.func import vmap
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fedcare.core.config import FederationConfig, load_config
from fedcare.core.errors import ConfigError, DataError, FedcareError
from fedcare.core.params import Params
from fedcare.core.serialization import load_params
from fedcare.data import FederatedDataset, load_dataset
from fedcare.data.dataset import SiteData
from fedcare.data.examples import ArrayExamples, Examples
from fedcare.data.targets import label_rules
from fedcare.federation.engine import RoundEngine
from fedcare.learning.models import set_params
from fedcare.federation.runfolder import file_stem
from fedcare.learning.tasks import task_type
from fedcare.transports.simulated import Federation, build_federation, personalize
from fedcare.transports.simulation import SimulationTransport

Rows = dict[str, ArrayExamples]
"""site id -> the examples (inputs and label) an attack looks at for that site."""

MODEL_CHOICES = ("global", "personalized", "all")
AUDIT_FILE = "audit.json"


@dataclass
class AuditedRun:
    """A run folder as the auditor rebuilds it: config, summary, data, models."""

    path: Path
    config: FederationConfig
    summary: dict
    dataset: FederatedDataset
    federation: Federation
    models: dict[str, dict[str, Params]]  # "global" / "personalized" -> site id -> params that site uses


def audit_membership(run_dir: str | Path, *, shadows: int = 4, seed: int = 0, model: str = "all",
                     write: bool = True) -> dict:
    """Attack the run's models (loss threshold and shadow models) and write RUN_DIR/audit.json.

    `model`: "global", "personalized" (each site's own model; the run must have them) or "all"
    (the global model, plus the personalized ones where the run has them). Deterministic for a seed.
    """
    if model not in MODEL_CHOICES:
        raise ConfigError(f"model must be one of {', '.join(MODEL_CHOICES)}, not '{model}'")
    if shadows < 1:
        raise ConfigError(f"shadows must be at least 1, got {shadows}")
    run = load_run(run_dir)
    if model == "personalized" and "personalized" not in run.models:
        raise ConfigError(f"run '{run.path}' has no personalized models (sites/*.safetensors: a run with "
                          "--personalization writes them); use --model global")
    names = [m for m in ("global", "personalized") if m in run.models and model in (m, "all")]
    members, non_members = training_rows(run.dataset), held_out_rows(run.dataset)
    pool, held_out = split_held_out(non_members, seed)
    trained = train_shadows(run, pool, shadows, seed, personalized="personalized" in names)
    attacks: dict[str, dict] = {"loss_threshold": {}, "shadow": {}}
    for name in names:
        attacks["loss_threshold"][name] = loss_threshold_attack(run, run.models[name], members, non_members)
        attacks["shadow"][name] = shadow_attack(run, run.models[name], trained, name, members, held_out)
    result = {
        "dataset": run.dataset.name,
        "algorithm": run.config.algorithm.name,
        "personalization": run.config.personalization.mode,
        "models": names,
        "members": _count(members),
        "non_members": _count(non_members),
        "attacks": attacks,
        "dp": dp_block(run.summary),
        "seed": seed,
        "shadows": shadows,
    }
    if write:
        write_audit(run.path, result)
    return result


# ----- the run folder ---------------------------------------------------------------------------

def load_run(run_dir: str | Path) -> AuditedRun:
    """Read config.yaml, summary.json and the models, and rebuild the run's data; refuses a folder
    that is missing, unfinished, written by another version, or whose data has changed."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ConfigError(f"run folder '{path}' not found; pass the --out folder of a fedcare simulate run")
    for name in ("config.yaml", "summary.json", "global.safetensors"):
        if not (path / name).is_file():
            raise ConfigError(f"'{path}' has no {name}: not a finished fedcare run folder")
    try:
        cfg = load_config(path / "config.yaml")
    except ConfigError as exc:
        raise ConfigError(f"'{path / 'config.yaml'}' cannot be read by this fedcare version ({exc})") from None
    summary = _read_summary(path)
    task = task_type(str(summary.get("task")))
    if not task.per_example:
        raise ConfigError(f"the membership audit needs a per-patient loss; the {task.name} task's loss has none")
    dataset = load_dataset(cfg.data)
    _check_same_data(dataset, summary)
    fed = build_federation(cfg, dataset)
    return AuditedRun(path, cfg, summary, dataset, fed, _load_models(path, fed, dataset))


def _read_summary(path: Path) -> dict:
    try:
        summary = json.loads((path / "summary.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"'{path / 'summary.json'}' is not valid JSON; run the federation again") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("site_sizes"), dict):
        raise ConfigError(f"'{path / 'summary.json'}' lacks site_sizes: it was written by another fedcare version")
    return summary


def _check_same_data(dataset: FederatedDataset, summary: dict) -> None:
    """The audit is only meaningful on the rows the run trained on: compare the split sizes."""
    sizes = summary["site_sizes"]
    for sd in dataset.sites:
        then = sizes.get(sd.site_id, {})
        now = sd.sizes()
        if any(then.get(k) != v for k, v in now.items()):
            raise DataError(f"site '{sd.site_id}' now has {now} rows but the run had {then}: the data behind "
                            "config.yaml changed, so its training rows cannot be told apart")
    missing = sorted(set(sizes) - {sd.site_id for sd in dataset.sites})
    if missing:
        raise DataError(f"the run had site '{missing[0]}', which the data behind config.yaml no longer has")


def _load_models(path: Path, fed: Federation, dataset: FederatedDataset) -> dict[str, dict[str, Params]]:
    """The global model for every site, and each site's personalized model where the run saved one."""
    global_params = _load(path / "global.safetensors", fed)
    features = global_params[1].get("feature_names")
    if features is not None and list(features) != list(dataset.feature_names):
        raise DataError(f"'{path / 'global.safetensors'}' was trained on other features than the data behind "
                        "config.yaml now gives")
    ids = [sd.site_id for sd in dataset.sites]
    models = {"global": {sid: global_params[0] for sid in ids}}
    files = {sid: path / "sites" / f"{file_stem(sid)}.safetensors" for sid in ids}
    if fed.config.personalization.mode != "none" and all(f.is_file() for f in files.values()):
        models["personalized"] = {sid: _load(f, fed)[0] for sid, f in files.items()}
    return models


def _load(file: Path, fed: Federation) -> tuple[Params, dict]:
    try:
        return load_params(file, fed.initial)
    except FedcareError as exc:
        raise ConfigError(f"'{file}' does not match the model config.yaml describes (another fedcare version, or "
                          f"a Python model_factory?): {exc}") from None


def dp_block(summary: dict) -> dict | None:
    """ε and δ from summary.json's privacy block; None when the run had no DP."""
    privacy = summary.get("privacy") or {}
    if privacy.get("epsilon") is None:
        return None
    return {key: privacy.get(key) for key in ("level", "epsilon", "delta", "budget", "clip")}


def write_audit(run_dir: Path, result: dict) -> Path:
    """audit.json, written whole through a temporary name (like every file of the run folder)."""
    tmp, final = run_dir / f".{AUDIT_FILE}.tmp", run_dir / AUDIT_FILE
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(final)
    return final


# ----- rows -------------------------------------------------------------------------------------

def training_rows(dataset: FederatedDataset) -> Rows:
    return {sd.site_id: _in_memory(sd.splits["train"]) for sd in dataset.sites}


def held_out_rows(dataset: FederatedDataset) -> Rows:
    return {sd.site_id: _in_memory(sd.splits["test"]) for sd in dataset.sites}


def _in_memory(examples: Examples) -> ArrayExamples:
    return examples if isinstance(examples, ArrayExamples) else _take(examples, np.arange(len(examples)))


def _take(examples: Examples, rows: np.ndarray) -> ArrayExamples:
    return ArrayExamples(examples.take(rows))


def split_held_out(rows: Rows, seed: int) -> tuple[Rows, Rows]:
    """Each site's held-out rows, shuffled with the seed, cut into (shadow pool, evaluation
    non-members): the shadows may only ever see the first, the shadow attack is judged on the second."""
    pool, held = {}, {}
    for i, (sid, examples) in enumerate(rows.items()):
        n = len(examples)
        if n < 4:
            raise DataError(f"site '{sid}' has {n} test rows; the shadow attack needs at least 4 per site")
        order = np.random.default_rng([seed, i]).permutation(n)
        cut = n // 2
        pool[sid], held[sid] = _take(examples, order[:cut]), _take(examples, order[cut:])
    return pool, held


def _count(rows: Rows) -> int:
    return int(sum(len(examples) for examples in rows.values()))


# ----- what an attacker sees of one example -----------------------------------------------------

def example_features(run: AuditedRun, params: Params, examples: ArrayExamples) -> np.ndarray:
    """(n, f) per-example features of the model's outputs: loss first, then (classification)
    confidence in the predicted class and whether the prediction is right."""
    plan = run.federation.plan
    module = plan.new_model()
    set_params(module, params)
    module.eval()
    with torch.no_grad():
        out = module({name: torch.as_tensor(examples.arrays[name], dtype=torch.float32)
                      for name in plan.shape.inputs}).double()
    task = plan.task
    targets = {k: v.double() if v.is_floating_point() else v
               for k, v in task.target_tensors({t: examples.arrays[t] for t in task.targets}).items()}
    one = vmap(lambda o, t: task.loss(o.unsqueeze(0), {k: v.unsqueeze(0) for k, v in t.items()}))
    loss = one(out, targets).numpy()  # the task's own loss, one patient at a time
    kind = label_rules(task.name)
    if kind == "binary":
        p, y = torch.sigmoid(out.squeeze(-1)), targets["label"]
        return np.column_stack([loss, torch.maximum(p, 1 - p).numpy(), ((p >= 0.5).double() == y).double().numpy()])
    if kind == "multiclass":
        probs = torch.softmax(out, dim=-1)
        return np.column_stack([loss, probs.max(dim=1).values.numpy(),
                                (probs.argmax(dim=1) == targets["label"]).double().numpy()])
    return loss[:, None]


def _features(run: AuditedRun, params_by_site: dict[str, Params], rows: Rows) -> dict[str, np.ndarray]:
    return {sid: example_features(run, params_by_site[sid], examples) for sid, examples in rows.items()}


# ----- scoring ----------------------------------------------------------------------------------

def auc_block(member_scores: np.ndarray, non_member_scores: np.ndarray) -> dict:
    """ROC AUC of "higher score = member", the best-threshold advantage (TPR − FPR), and the counts.
    AUC is None when either class is empty."""
    block = {"auc": None, "advantage": None, "members": int(len(member_scores)),
             "non_members": int(len(non_member_scores))}
    if len(member_scores) == 0 or len(non_member_scores) == 0:
        return block
    truth = np.r_[np.ones(len(member_scores)), np.zeros(len(non_member_scores))]
    scores = np.r_[member_scores, non_member_scores]
    fpr, tpr, _ = roc_curve(truth, scores)
    block["auc"] = round(float(roc_auc_score(truth, scores)), 6)
    block["advantage"] = round(float(np.max(tpr - fpr)), 6)
    return block


def site_report(member_scores: dict[str, np.ndarray], non_member_scores: dict[str, np.ndarray]) -> dict:
    """The overall block (all sites' examples pooled), one block per site, and the worst site: the
    one where the attack does best (highest AUC)."""
    sites = {sid: auc_block(member_scores[sid], non_member_scores[sid]) for sid in member_scores}
    overall = auc_block(np.concatenate(list(member_scores.values())),
                        np.concatenate(list(non_member_scores.values())))
    scored = [sid for sid, b in sites.items() if b["auc"] is not None]
    worst = max(scored, key=lambda sid: sites[sid]["auc"]) if scored else None
    return {**overall, "sites": sites, "worst_site": {"site_id": worst, **(sites[worst] if worst else {})}}


# ----- the attacks ------------------------------------------------------------------------------

def loss_threshold_attack(run: AuditedRun, params_by_site: dict[str, Params], members: Rows,
                          non_members: Rows) -> dict:
    """Yeom et al.: a lower loss means "member". Per site, each site's rows are scored by the model
    that site uses."""
    def scores(rows: Rows) -> dict[str, np.ndarray]:
        return {sid: -f[:, 0] for sid, f in _features(run, params_by_site, rows).items()}

    return {"score": "-loss", **site_report(scores(members), scores(non_members))}


def train_shadows(run: AuditedRun, pool: Rows, shadows: int, seed: int, personalized: bool) -> list[dict]:
    """Shadow federations on the shadow pool: for each, {"in": rows, "out": rows, "global": site ->
    params, "personalized": site -> params (when asked)}. Deterministic for the seed."""
    out = []
    for k in range(shadows):
        inside, outside = {}, {}
        for i, (sid, examples) in enumerate(pool.items()):
            order = np.random.default_rng([seed, i, k + 1]).permutation(len(examples))
            cut = (len(examples) + 1) // 2
            inside[sid], outside[sid] = _take(examples, order[:cut]), _take(examples, order[cut:])
        models = _train_shadow(run, inside, int(np.random.SeedSequence([seed, k]).generate_state(1)[0]), personalized)
        out.append({"in": inside, "out": outside, **models})
    return out


def _train_shadow(run: AuditedRun, inside: Rows, shadow_seed: int, personalized: bool) -> dict[str, dict]:
    """One shadow federation: the run's recipe on the shadow-in rows, as many rounds as gave the
    audited model, no DP, no simulated attackers, no early stopping, no evaluation rounds."""
    cfg = run.config
    rounds = int(run.summary.get("best_round") or cfg.algorithm.rounds)
    shadow_cfg = cfg.replace(**{"seed": shadow_seed, "rounds": rounds, "dp_epsilon": None,
                              "attack": None, "patience": None, "baselines": False, "checkpoint_every": 0})
    dataset = replace(run.dataset, sites=tuple(_shadow_site(sid, examples) for sid, examples in inside.items()))
    fed = build_federation(shadow_cfg, dataset)
    settings = replace(fed.plan.settings, eval_splits=())
    params = RoundEngine(fed.plan.algorithm, SimulationTransport(fed.federated_sites), settings).run(fed.initial).params
    models = {"global": {sid: params for sid in inside}}
    if personalized:
        models["personalized"] = personalize(fed, params)
    return models


def _shadow_site(site_id: str, train: ArrayExamples) -> SiteData:
    none = _take(train, np.arange(0))
    return SiteData(site_id, {"train": train, "val": none, "test": none})


def shadow_attack(run: AuditedRun, params_by_site: dict[str, Params], shadows: list[dict], model: str,
                  members: Rows, held_out: Rows) -> dict:
    """Shokri et al.: fit the attack classifier on the shadows' in/out examples (shadow `model`:
    "global" or "personalized", as audited), then score the audited model's members against the
    held-out non-members, rows that no shadow and not the classifier ever saw."""
    xs, labels = [], []
    for shadow in shadows:
        for part, label in (("in", 1), ("out", 0)):
            for sid, f in _features(run, shadow[model], shadow[part]).items():
                xs.append(_attack_input(f))
                labels.append(np.full(len(f), label))
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    classifier.fit(np.concatenate(xs), np.concatenate(labels))

    def scores(rows: Rows) -> dict[str, np.ndarray]:
        return {sid: classifier.predict_proba(_attack_input(f))[:, 1]
                for sid, f in _features(run, params_by_site, rows).items()}

    report = site_report(scores(members), scores(held_out))
    return {"classifier": "logistic regression on log-loss, confidence, correct", "shadows": len(shadows),
            "shadow_examples": int(sum(len(label) for label in labels)), **report}


def _attack_input(features: np.ndarray) -> np.ndarray:
    """The loss on a log scale (members' losses sit orders of magnitude below non-members')."""
    out = features.copy()
    out[:, 0] = np.log(np.maximum(out[:, 0], 1e-12))
    return out
