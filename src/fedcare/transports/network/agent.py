"""The site agent: runs inside the hospital, holds its rows, connects outbound to the coordinator only.

It polls for declarative tasks (a kind, a round, the run's plan: model from the zoo and its
hyperparameters — data, never code), prints what it is about to run, optionally waits for a
person's approval, trains with the same LocalSite code a simulation uses, and sends back only
updates and scalar metrics. Connection errors, 5xx and 429 answers are retried with capped exponential
backoff, so the agent outlives coordinator restarts and network cuts.

What it keeps in its state folder (inside the hospital): the prepared arrays of the current run,
its site state between rounds (personal layers, Ditto model, SCAFFOLD's cᵢ, its DP accountant), the
reply to the last task it answered (re-sent if a restarted coordinator asks again, so a round is
never trained twice and no privacy budget is spent twice) and its personalized model. Its files are
readable by its own user only (0600, folders 0700), and every id the coordinator sends is checked
to be a plain name before it becomes part of a path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from safetensors.numpy import load_file

from fedcare.core.config import FederationConfig, make_config
from fedcare.core.errors import ConfigError, FedcareError, SiteDeclined
from fedcare.core.messages import CONTROL_PREFIX, FitRequest, scoped
from fedcare.core.params import Params
from fedcare.core.serialization import fit_reply_to_bytes, params_from_bytes, save_params, update_from_bytes
from fedcare.data.dataset import DataShape, SiteData
from fedcare.data.storage import load_site_data, save_site_data
from fedcare.data.joinedfiles import site_from_files
from fedcare.data.prepare import SitePreparation
from fedcare.federation.engine import RoundEngine
from fedcare.federation.plan import Plan, make_plan
from fedcare.federation.runfolder import metric_rows
from fedcare.learning.site import LocalSite
from fedcare.transports.network.policy import Policy
from fedcare.transports.network.secure import b64, unb64
from fedcare.transports.secure import SecurePlan, SecureSiteRound, split_broadcast
from fedcare.transports.simulation import SimulationTransport

log = logging.getLogger("fedcare.site")


class AgentStopped(FedcareError):
    """The coordinator refused this site for good (revoked credential, not in the federation), or the
    person running the agent declined the plan."""


@dataclass(frozen=True)
class AgentSettings:
    coordinator: str                 # https://host:port
    site_id: str
    token: str
    state: Path                      # the agent's own folder, inside the hospital
    verify: object = True            # an ssl.SSLContext pinning the private CA, or False (--insecure)
    data: Path | None = None         # the hospital's CSV/Parquet file
    dataset: str | None = None       # or: this site's rows of a bundled dataset (demos, tests)
    approve: Callable[[str], bool] | None = None  # asked once per run, before it trains; None = no approval step
    policy: Policy | None = None     # the runs this site accepts without a person (--policy)
    policy_name: str = "the policy"  # how refusals name it: the file's name
    poll_wait: float = 20.0
    max_backoff: float = 30.0
    keep_running: bool = False       # after a run is over, wait for the coordinator's next run
    images: Path | None = None       # or: this hospital's image manifest (fedcare.data.manifest)
    skip_bad_images: bool = False    # with images: skip and count unreadable files instead of stopping
    watch_every: float | None = None  # live federation: look at the data file every this many seconds (watch.py)
    joined: Mapping[str, Path] = field(default_factory=dict)  # with data: more inputs' files (kind -> file),
    patient: str | None = None       # joined to it by this patient column (fedcare.data.multimodal)


class SiteAgent:
    def __init__(self, settings: AgentSettings, say: Callable[[str], None] = print):
        if sum(x is not None for x in (settings.data, settings.dataset, settings.images)) != 1:
            raise ConfigError("give the site's data: --data FILE, --images MANIFEST (or --dataset NAME for a bundled "
                              "demo dataset)")
        self.s = settings
        self.say = say
        self.client = httpx.Client(base_url=settings.coordinator.rstrip("/"), verify=settings.verify,
                                   headers={"Authorization": f"Bearer {settings.token}"},
                                   timeout=httpx.Timeout(30.0, read=settings.poll_wait + 30.0))
        self._run: str | None = None
        self._prep: SitePreparation | None = None
        self._site: LocalSite | None = None
        self._plan: Plan | None = None  # the current run's plan
        self._like: tuple[Plan, Params] | None = None  # the plan's initial model (names, shapes, dtypes)
        self._approved: set[str] = set()
        self._over: set[str | None] = set()  # runs whose end this agent was told (--keep-running)
        self._declined: dict[str, str] = {}  # runs outside the policy, and why
        self._held: tuple[str, Params] | None = None  # the last params downloaded, by digest
        self._party: SecureSiteRound | None = None  # this round's secure-aggregation state
        self._watch = None  # the data file's watch, in a live federation
        self._arrived_from: int | None = None  # this phase's first newly arrived file row
        self._rows_read = 0  # the file's rows when this phase read it: marked prepared once the coordinator accepts
        if settings.watch_every is not None:
            if settings.data is None:
                raise ConfigError("--watch-every watches the site's --data file; a bundled dataset or an image "
                                  "manifest does not grow")
            from fedcare.transports.network.watch import DataWatch, Watcher

            self._watch = DataWatch(settings.data, settings.state)
            own = httpx.Client(base_url=settings.coordinator.rstrip("/"), verify=settings.verify, timeout=30.0,
                               headers={"Authorization": f"Bearer {settings.token}"})  # its own thread, its own pool
            self._watcher = Watcher(own, self._watch, settings.state, settings.watch_every)

    # ----- the loop -----------------------------------------------------------------------------

    def run(self) -> dict:
        """Answer tasks until the coordinator says the run is over; returns that last message."""
        os.umask(0o077)  # patients' encoded rows and the site's models: for this user only
        if self._watch is not None:
            self.s.state.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._watcher.start()
        while True:
            task = self._request("GET", "/v1/task", params={"wait": self.s.poll_wait})
            if task is None:
                continue
            plain_id(task.get("id"), "task id")
            if task["kind"] == "done":
                if task.get("run") in self._over:  # still the last run's end: wait for the next run
                    time.sleep(min(self.s.poll_wait, 5.0))
                    continue
                self.say(f"run over: {task.get('status', 'completed')} {task.get('reason', '')}".rstrip())
                if not self.s.keep_running:
                    return task
                self._over.add(task.get("run"))
                self.say("waiting for the coordinator's next run")
                continue
            try:
                self._enter(task["plan"])
            except _Declined as exc:
                self._post_json(task, {"declined": str(exc)})
                if not self.s.keep_running:
                    raise AgentStopped(str(exc)) from None
                time.sleep(min(self.s.poll_wait, 5.0))  # a task that takes no "declined" is asked again: not at once
                continue
            handler = getattr(self, f"_{task['kind'].replace('-', '_')}", None)
            if handler is None:
                log.warning("unknown task kind %r; skipped", task["kind"])
                time.sleep(1.0)
                continue
            try:
                handler(task)
            except _Skip:
                continue

    def _request(self, method: str, path: str, **kwargs) -> object:
        """One call, retried with backoff on network errors and 5xx. 4xx: a clear refusal, logged."""
        delay = 0.5
        while True:
            try:
                response = self.client.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                self._wait(f"coordinator unreachable ({type(exc).__name__})", delay)
                delay = min(self.s.max_backoff, delay * 2)
                continue
            if response.status_code >= 500 or response.status_code == 429:  # 429: too many polls open at once
                self._wait(f"coordinator answered {response.status_code}", delay)
                delay = min(self.s.max_backoff, delay * 2)
                continue
            if response.status_code == 204:
                return None
            if response.status_code in (401, 403):
                raise AgentStopped(f"the coordinator refused this site: {_detail(response)}")
            if response.status_code >= 400:
                self.say(f"refused ({response.status_code}): {_detail(response)}")
                return None
            if response.headers.get("content-type", "").startswith("application/json"):
                return response.json()
            return response.content

    def _wait(self, why: str, delay: float) -> None:
        pause = delay * (0.5 + random.random())  # jitter: restarted sites do not all call back at once
        log.info("%s; retrying in %.1f s", why, pause)
        time.sleep(pause)

    # ----- the run's plan -----------------------------------------------------------------------

    def _enter(self, plan: dict) -> None:
        """A task of a (possibly new) run: show its plan and check it against the policy before
        answering anything; with --approve, ask once per run, before it trains (when the plan is
        complete: the model's inputs are known once the data is prepared)."""
        run = plain_id(plan.get("run"), "run id")
        if run in self._declined:
            raise _Declined(self._declined[run])
        if run != self._run:
            self._run, self._site, self._plan = run, None, None
            self._prep = None
            self.say(describe(plan, self.s.site_id))
            why = None if self.s.policy is None else self.s.policy.refusal(plan.get("config", {}))
            if why is not None:
                self._declined[run] = f"run {run} refused by {self.s.policy_name}: {why}"
                self.say(self._declined[run])
                raise _Declined(self._declined[run])
        if plan.get("shape") and self._site is None:
            self._build_site(plan)
        if plan.get("shape") and self.s.approve is not None and run not in self._approved:
            text = describe(plan, self.s.site_id)
            self.say(text)
            if not self.s.approve(text):
                raise AgentStopped("the plan was not approved; the agent stops without answering")
            self._approved.add(run)

    def _folder(self) -> Path:
        path = self.s.state / plain_id(self._run, "run id")
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    def _build_site(self, plan: dict) -> None:
        self._plan = make_plan(_config(plan), DataShape.from_json(plan["shape"]), plan["sites"])
        data = self._load_data()
        if data is None:
            return  # preparation not done here yet
        site = self._plan.local_site(data)
        state = self._folder() / "site-state.safetensors"
        if state.is_file():
            site.load_site_state(load_file(str(state)))
        self._site = site

    def _load_data(self) -> SiteData | None:
        if self._prep is not None and self._prep.data is not None:
            return self._prep.data
        path = self._folder() / "data.safetensors"
        return load_site_data(path, self.s.site_id) if path.is_file() else None

    def _local_site(self) -> LocalSite:
        if self._site is None:
            raise AgentStopped(f"run {self._run} asks for training, but this site holds no prepared data for it "
                               "(its state folder was lost?); ask the coordinator's operator to start a new run")
        return self._site

    # ----- tasks --------------------------------------------------------------------------------

    def _prepare(self, task: dict) -> None:
        if self._prep is None:
            if self._watch is not None:  # counted before the read: a row appended meanwhile stays new, never skipped
                self._arrived_from, self._rows_read = self._watch.arrived_from(), self._watch.current()[0]
            self._prep = (site_from_files(self.s.site_id, self.s.data, self.s.joined, self.s.patient,  # type: ignore
                                          self.s.skip_bad_images) if self.s.joined
                          else SitePreparation.from_file(self.s.data, self.s.site_id) if self.s.data is not None
                          else SitePreparation.from_manifest(self.s.images, self.s.site_id, self.s.skip_bad_images)
                          if self.s.images is not None
                          else SitePreparation.from_builtin(self.s.dataset, self.s.site_id))
        try:
            answer = self._prep.answer(task["phase"], task["question"])
        except FedcareError as exc:
            self.say(f"data preparation failed here: {exc}")
            raise
        if self._prep.data is not None and not save_site_data(self._folder() / "data.safetensors", self._prep.data):
            self.say("prepared examples not kept here (an input reads its own files): if this agent restarts, "
                     "the run must start again")
        accepted = self._post_json(task, {"answer": answer})
        if accepted and task["phase"] == "finish" and self._watch is not None:  # the coordinator holds them now
            self._watch.mark_prepared(self._rows_read)

    def _fit(self, task: dict) -> None:
        blob = self._train(task, model_only=False)
        if blob is not None:
            self._put_update(task, blob)

    def _train(self, task: dict, model_only: bool) -> bytes | None:
        """This round's update as bytes: trained now, or the one already trained for this task (a
        restarted coordinator asks the round again: same answer, no second training, no second
        spending of privacy budget). None when the site declines the round."""
        cached = self._folder() / f"reply-{task['id']}.safetensors"
        if cached.is_file():
            return cached.read_bytes()
        site = self._local_site()
        params = self._params(task)
        if model_only:  # the clip norm broadcast for site-level DP is not a model array
            params = split_broadcast(params)[0]
        request = FitRequest(**task["request"])
        self.say(f"round {request.round}: training {request.local_epochs} local epoch(s) on {site.num_train} rows")
        try:
            blob = fit_reply_to_bytes(site.fit(params, request), request)
        except SiteDeclined as exc:
            self.say(f"round {request.round}: declined: {exc}")
            self._post_json(task, {"declined": str(exc)})
            return None
        state = site.site_state()
        if state:
            save_params(self._folder() / "site-state.safetensors", state)
        for old in self._folder().glob("reply-*.safetensors"):
            old.unlink()
        tmp = cached.with_suffix(".tmp")
        tmp.write_bytes(blob)
        tmp.replace(cached)
        return blob

    # ----- secure aggregation (see network/secure.py): the update never leaves unmasked ----------

    def _secure_fit(self, task: dict) -> None:
        blob = self._train(task, model_only=True)
        if blob is None:
            return
        message = self._params(task)
        party = SecureSiteRound(self.s.site_id, task["round"], SecurePlan.from_json(task["secure"]))
        request = FitRequest(**task["request"])
        update = update_from_bytes(blob, split_broadcast(message)[0], compress=request.compress, sender=self.s.site_id)
        party.prepare(update, message)  # its DP noise, if any, comes from the OS: never from a known seed
        self._party = party
        self._post_json(task, {"advert": b64(party.advertise())})

    def _secure_share(self, task: dict) -> None:
        self._post_json(task, {"shares": b64(self._secure_party(task).share_keys(unb64(task["roster"])))})

    def _secure_mask(self, task: dict) -> None:
        party = self._secure_party(task)
        party.receive_shares(unb64(task["shares"]))
        self._post_json(task, {"masked": b64(party.masked_input()), "metrics": b64(party.metrics())})

    def _secure_unmask(self, task: dict) -> None:
        self._post_json(task, {"response": b64(self._secure_party(task).unmask(unb64(task["request"])))})

    def _secure_party(self, task: dict) -> SecureSiteRound:
        if self._party is None or self._party.round != task["round"]:
            self.say(f"task {task['id']}: this agent holds no secure round {task['round']} (restarted?); skipped")
            raise _Skip()
        return self._party

    def _drift(self, task: dict) -> None:
        """Score the current version on the rows from before and after the last phase (livedrift.py)."""
        from fedcare.transports.network.livedrift import arrival_stats

        stats = None
        if self._prep is not None and self._prep.data is not None and self._arrived_from is not None:
            stats = arrival_stats(self._plan, self._prep.data, self._prep.file_rows(), self._arrived_from,
                                  self._params(task))
        self._post_json(task, {"drift": stats} if stats else
                        {"skipped": "this site holds no rows from both before and after the last phase"})

    def _evaluate(self, task: dict) -> None:
        metrics = self._local_site().evaluate(self._params(task), task["splits"])
        self._post_json(task, {"metrics": metrics})

    def _personalize(self, task: dict) -> None:
        site = self._local_site()
        personal = site.personal_params(self._params(task), FitRequest(**task["request"]))
        save_params(self._folder() / "personalized.safetensors", personal, {"site_id": self.s.site_id})
        self.say(f"personalized model kept here: {self._folder() / 'personalized.safetensors'}")
        self._post_json(task, {"metrics": site.evaluate(personal, task["splits"])})

    def _local(self, task: dict) -> None:
        """The local-only baseline: this site alone, same algorithm and budget, run here."""
        site = self._local_site()
        algorithm, settings = self._plan.baseline()
        result = RoundEngine(algorithm, SimulationTransport([site]), settings).run(self._plan.initial_params())
        # rows about this site's local model only: the in-process baseline's byte counts crossed no wire
        rows = [row for row in metric_rows("local", result.history) if row["split"] != "bytes"]
        self._post_json(task, {"metrics": site.evaluate(result.params, task["splits"]), "rows": rows})

    # ----- wire ---------------------------------------------------------------------------------

    def _params(self, task: dict) -> Params:
        """The task's arrays: downloaded, or the ones already held when the digest says they are the same."""
        digest = task["params"]["sha256"]
        if self._held is not None and self._held[0] == digest:
            return self._held[1]
        blob = self._request("GET", f"/v1/tasks/{task['id']}/params")
        if not isinstance(blob, bytes):
            raise _Skip()
        if hashlib.sha256(blob).hexdigest() != digest:
            self.say(f"task {task['id']}: the params downloaded do not match their digest; asking again")
            raise _Skip()
        params = params_from_bytes(blob, layout=self._expected(task))[0]
        self._held = (digest, params)
        return params

    def _expected(self, task: dict) -> Params | None:
        """The arrays a task's broadcast holds, which a compressed broadcast is read against: the
        plan's model, and SCAFFOLD's control/<name> beside it in a fit task; without the encoders
        of an input this site lacks when its fit request says so (`skip`). Its order is that of
        the model, as the coordinator's is."""
        if self._plan is None:
            return None
        if self._like is None or self._like[0] is not self._plan:
            self._like = (self._plan, self._plan.initial_params())
        model = self._like[1]
        if task["kind"] != "fit":
            return model
        controls = {CONTROL_PREFIX + k: v for k, v in model.items()} if self._plan.algorithm.scaffold else {}
        return scoped({**model, **controls}, tuple(task.get("request", {}).get("skip", ())))

    def _put_update(self, task: dict, blob: bytes) -> None:
        self._request("PUT", f"/v1/tasks/{task['id']}/update", content=blob,
                      headers={"content-type": "application/octet-stream"})

    def _post_json(self, task: dict, body: dict) -> bool:
        """Send a JSON answer; True when the coordinator accepted it (a refused one is asked again
        while its task is open, or not used)."""
        reply = self._request("POST", f"/v1/tasks/{task['id']}/answer", content=json.dumps(body, allow_nan=False),
                              headers={"content-type": "application/json"})
        return isinstance(reply, dict) and reply.get("accepted") == task["id"]


_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def plain_id(value: object, what: str) -> str:
    """An id the coordinator sent, checked before it names a file here: letters, digits, '.', '_'
    and '-', no '..', so that no id can point outside the agent's state folder."""
    if not isinstance(value, str) or not _PLAIN.fullmatch(value) or ".." in value:
        raise AgentStopped(f"the coordinator sent {what} {str(value)[:80]!r}, which is not a plain name; "
                           "this agent stops rather than use it as a path")
    return value


class _Skip(Exception):
    """The task closed while we fetched it; the loop simply polls again."""


class _Declined(Exception):
    """The run is outside this site's policy: every task of it is answered with the reason."""


def _config(plan: dict) -> FederationConfig:
    return make_config(plan["config"])


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:200]


def describe(plan: dict, site_id: str) -> str:
    """What the agent is about to run, for the person at the hospital (and for --approve)."""
    c = plan["config"]
    lines = [f"run {plan['run']} for site '{site_id}'"]
    model = c["model"] + (f" hidden {c['hidden']}" if c["model"] == "mlp" else "")
    if not plan.get("shape"):
        if c.get("label"):
            target = f"label column '{c['label']}'"
        elif c.get("time"):
            target = f"time '{c['time']}', event '{c['event']}'"
        else:
            target = f"the {c.get('dataset')} dataset's own label"
        lines.append(f"  prepare data: {target}; only column names, counts and sums leave this site")
        lines.append(f"  then train: {c['algorithm']}, {model}")
    else:
        s = plan["shape"]
        inputs = ", ".join(f"{name} {'×'.join(map(str, i['shape']))}" for name, i in s["inputs"].items())
        lines.append(f"  train: {c['algorithm']}, {model}, {s['task']} task, inputs {inputs}")
    lines.append(f"  {c['rounds']} rounds × {c['local_epochs']} local epoch(s), lr {c['lr']}, "
                 f"batch {c['batch_size']}, optimizer {c['optimizer']}, personalization {c['personalization']}")
    if c.get("dp_epsilon") is not None:
        lines.append(f"  record-level DP: ε ≤ {c['dp_epsilon']}, δ = {c['dp_delta']}")
    if c.get("site_dp_epsilon") is not None:
        lines.append(f"  site-level DP: ε ≤ {c['site_dp_epsilon']}, δ = {c['site_dp_delta']}")
    if c.get("secure_aggregation"):
        lines.append("  sends: its update masked (the coordinator can only recover the sum) and scalar metrics")
    else:
        lines.append("  sends: model updates and scalar metrics only")
    return "\n".join(lines)
