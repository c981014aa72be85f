"""A live federation: the coordinator keeps its run open as a series of training phases.

Each phase is an ordinary run of the coordinator (data preparation, rounds, evaluation,
personalization). When one completes it becomes the next model version (federation/registry.py),
and the coordinator waits. Sites report how their data file has grown (row counts and a content
hash, never rows); a new phase starts, warm-started from the current version, when `min_sites`
sites each have at least `min_new_rows` new rows, or, once `phase_every` seconds have passed since
the last version, when any site has new rows.

Membership is the credential registry's: a site credentialed after the run started takes part from
the next phase; a site removed by the admin, or not heard from for `site_timeout` seconds (a site
never heard from counts from the coordinator's start), is left out of the next phase (and so out of
its quorum), with a line in the audit log. A site that gives no answer to a preparation question by
the deadline is dropped from that phase (audit status 408) and from later ones until it calls
again, which the audit log records as `live rejoin`; the next phase then asks it again.

Everything is decided from durable state (the runs table, the reports table, the registry's
folders), so a coordinator killed between phases, or in one, picks up where it was.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass

from fedcare.core.errors import ConfigError, FedcareError
from fedcare.core.params import Params
from fedcare.core.serialization import load_params, params_to_bytes
from fedcare.data.prepare import PreparedDataset
from fedcare.federation.checkpoint import Checkpoints
from fedcare.federation.drift import DriftConfig
from fedcare.federation.registry import ModelRegistry
from fedcare.transports.network.livedrift import notices
from fedcare.transports.network.livestore import LiveStore

log = logging.getLogger("fedcare.coordinator")


@dataclass(frozen=True)
class LiveSettings:
    min_new_rows: int = 1              # a site has new data with at least this many new rows
    min_sites: int = 1                 # a phase starts when this many sites have new data
    phase_every: float | None = None   # or when this many seconds passed since the last version and any site has new rows
    site_timeout: float = 3600.0       # a site silent this long is left out of the next phase
    check_every: float = 1.0           # seconds between looks at the reports
    drift_threshold: float = DriftConfig.drift_threshold  # a metric drop on a site's new rows beyond this is drift

    def __post_init__(self) -> None:
        if self.min_new_rows < 1 or self.min_sites < 1:
            raise ConfigError("--min-new-rows and --min-new-sites must be at least 1")
        if self.phase_every is not None and self.phase_every <= 0:
            raise ConfigError("--phase-every must be a positive number of seconds")
        if not self.drift_threshold > 0:
            raise ConfigError("--drift-threshold is a positive drop of the headline metric, e.g. 0.05")
        if self.site_timeout <= 0:
            raise ConfigError("--site-timeout must be a positive number of seconds")


class Phases:
    """Runs next to a `Coordinator`: who takes part, what a phase starts from, and when one starts."""

    def __init__(self, coordinator, credentials, settings: LiveSettings):
        self.c = coordinator
        self.drift = DriftConfig(drift_threshold=settings.drift_threshold)
        self.credentials = credentials
        self.settings = settings
        self.live = LiveStore(coordinator.store_path)
        self.models = ModelRegistry(coordinator.settings.state / "models")
        self._stop = threading.Event()
        self._left_out: set[str] = set()  # sites the last phase left out for silence (audited once)
        self.started = time.time()  # a site never heard from has been silent since this coordinator started
        coordinator.members = self.members
        coordinator.phase_sites = self.phase_sites
        coordinator.warm_start = self.warm_start
        coordinator.fitted = self.fitted
        coordinator.extra_status = self.status
        coordinator.before_rounds = self.check_drift
        coordinator.summary_extra = self.summary_extra
        coordinator.on_silent = self.live.drop

    # ----- who takes part -----------------------------------------------------------------------

    def members(self) -> list[str]:
        """Sites that may call: every active credential, in the order issued, but those that left."""
        left = self.live.left()
        return [s for s in self.credentials.site_ids() if s not in left]

    def phase_sites(self) -> list[str]:
        """The sites a new phase asks: members heard from within `site_timeout` (one never heard
        from counts from this coordinator's start, so a new site gets its chance) and not dropped
        for silence since they last called; each site left out for silence is audited."""
        seen, now = self.c.store.sites_seen(), time.time()
        silent = {s for s in self.members() if now - seen.get(s, self.started) > self.settings.site_timeout}
        for site in sorted(silent - self._left_out):
            self.c.store.audit(site, "live leave", 200, f"not heard from for over {self.settings.site_timeout:g} s: "
                                                         "left out of this phase and of its quorum")
        self._left_out = silent
        dropped = self.live.dropped()
        return [s for s in self.members() if s not in silent and s not in dropped]

    def rejoin(self) -> None:
        """A site dropped for silence that has called since is back: audited, asked by the next phase."""
        seen = self.c.store.sites_seen()
        for site, at in sorted(self.live.dropped().items()):
            if seen.get(site, 0.0) > at:
                self.live.back(site)
                self.c.store.audit(site, "live rejoin", 200, "heard from again after it was dropped for silence: "
                                                             "the next phase asks it again")
                log.info("site %s is back: the next phase asks it again", site)

    def remove(self, site_id: str) -> None:
        """The admin's `remove-site`: the site may no longer call, and no phase counts it."""
        if site_id not in self.credentials.site_ids() and site_id not in self.live.left():
            raise FedcareError(f"no active site '{site_id}' in the credential registry")
        self.live.leave(site_id, "removed by the admin")
        self.c.store.audit(site_id, "live leave", 200, "removed by the admin: left out of every phase and quorum "
                                                       "from now on")

    # ----- what a phase starts from -------------------------------------------------------------

    def warm_start(self) -> Params | None:
        current = self.models.current()
        if current is None:
            return None
        return load_params(self.models.folder(current["version"]) / "global.safetensors")[0]

    def fitted(self) -> PreparedDataset | None:
        """The current version's data preparation: a phase encodes with its transforms, so the model
        keeps its inputs and a joining site's rows are encoded as everyone's."""
        current = self.models.current()
        if current is None:
            return None
        folder = self.models.folder(current["version"])
        return PreparedDataset.from_json(Checkpoints(folder).load_prepared(f"or move '{folder}' aside"))

    # ----- before a phase trains: new categories, drift (livedrift.py) --------------------------

    def check_drift(self, run_id: str, transport, prepared, quorum: int) -> None:
        """Before a phase trains: the categories the transforms do not know, and each site's
        statistics of its new rows, a notice per drifted site in the phase's drift.json, the audit log
        and the log; the version and status show them."""
        warm = self.warm_start()
        if warm is None:
            return
        for site, columns in sorted(prepared.preprocessing.get("new_categories", {}).items()):
            line = "; ".join(f"{c}: {', '.join(v[:10])}" for c, v in sorted(columns.items()))
            self.c.store.audit(site, "live categories", 200, f"categories the model does not know, encoded as all "
                                                             f"zeros: {line}")
            log.warning("run %s: site %s brings categories the model does not know: %s", run_id, site, line)
        answers = transport.ask_all("drift.check", "drift", {}, params_to_bytes(warm), quorum=quorum)
        found = notices(answers, prepared.shape, self.drift)
        checked = sorted(s for s, a in answers.items() if a is not None)
        for notice in found:
            self.c.store.audit(notice.site_id, "live drift", 200, notice.line())
            log.warning("run %s: %s", run_id, notice.line())
        record = {"checked": checked, "notices": [n.to_json() for n in found],
                  "new_categories": prepared.preprocessing.get("new_categories", {})}
        path = self.c.run_dir(run_id) / "drift.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(path)

    def drift_of(self, run_id: str) -> dict | None:
        path = self.c.run_dir(run_id) / "drift.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def summary_extra(self, run_id: str) -> dict:
        """The phase's drift notices, for its summary.json and report.html."""
        drift = self.drift_of(run_id)
        return {"drift": drift["notices"] if drift else []}

    # ----- when a phase starts ------------------------------------------------------------------

    def with_new_data(self, since: float) -> dict[str, int]:
        """Sites with reports newer than `since` showing at least `min_new_rows` new rows."""
        members = set(self.phase_sites())
        return {s: r["new_rows"] for s, r in self.live.reports().items()
                if s in members and r["at"] > since and r["new_rows"] >= self.settings.min_new_rows}

    def due(self, since: float, last_version_at: float | None) -> str | None:
        """Why a new phase starts now, or None."""
        fresh = self.with_new_data(since)
        if len(fresh) >= self.settings.min_sites:
            return f"{len(fresh)} site(s) with new rows: " + ", ".join(f"{s} +{n}" for s, n in sorted(fresh.items()))
        every = self.settings.phase_every
        if every is not None and last_version_at is not None and time.time() - last_version_at >= every:
            grown = {s: r["new_rows"] for s, r in self.live.reports().items() if r["at"] > since and r["new_rows"] > 0}
            if grown:
                return f"scheduled (every {every:g} s), new rows at " + ", ".join(sorted(grown))
        return None

    def step(self) -> None:
        """One look: publish a completed phase as a version, start the next phase when it is due."""
        self.rejoin()
        latest = self.c.store.runs(1)
        if not latest or self.c.busy():
            return
        run = latest[0]
        if run["status"] in ("running", "paused"):
            return  # a phase under way that no thread drives: recover() resumes it, never a new phase
        current = self.models.current()
        if run["status"] == "completed" and (current is None or current["run_id"] != run["run_id"]):
            drift = self.drift_of(run["run_id"])
            published = self.models.publish(self.c.run_dir(run["run_id"]), run["run_id"],
                                            {"drift": drift["notices"] if drift else []})
            self.c.store.audit(None, "live version", 200, f"version {published['version']} published from run "
                                                          f"{run['run_id']} ({published['rounds']} rounds, sites "
                                                          f"{', '.join(published['sites'])})")
            log.info("version %d published from run %s", published["version"], run["run_id"])
            return
        if current is None:
            return  # no version yet: the first phase is the admin's (or --start's)
        reason = self.due(run["started"], current["published"])
        if reason is not None:
            run_id = self.c.start()
            self.c.store.audit(None, "live phase", 200, f"phase run {run_id} started, warm from version "
                                                        f"{current['version']}: {reason}")
            log.info("phase %s started from version %d: %s", run_id, current["version"], reason)

    def watch(self) -> None:
        threading.Thread(target=self._loop, name="live-phases", daemon=True).start()

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.check_every):
            try:
                self.step()
            except FedcareError as exc:
                log.warning("live federation: %s", exc)
            except Exception:  # a bug: say it, keep serving and looking
                log.exception("live federation: a look at the reports failed")

    def status(self) -> dict:
        latest = self.c.store.runs(1)
        drift = self.drift_of(latest[0]["run_id"]) if latest else None
        return {"versions": self.models.versions(), "reports": self.live.reports(), "left": self.live.left(),
                "left_out_silent": sorted(self._left_out), "dropped_silent": sorted(self.live.dropped()),
                "settings": self.settings.__dict__,
                "drift": drift["notices"] if drift else [],
                "new_categories": drift.get("new_categories", {}) if drift else {}}
