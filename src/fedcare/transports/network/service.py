"""Entry points behind `fedcare coordinator`, `fedcare site` and `fedcare admin`: wire credentials,
TLS, the coordinator and the agent together."""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from fedcare.core.config import load_config
from fedcare.core.errors import ConfigError, FedcareError
from fedcare.transports.network.credentials import (AdminCredential, Registry, SiteCredential, check_site_id,
                                                    client_ssl_context, server_tls_files)

if TYPE_CHECKING:
    from fedcare.transports.network.coordinator import ReportRenderer
    from fedcare.transports.network.phases import LiveSettings



def serve(config: Path, credentials: Path, state: Path, host: str, port: int, sites: list[str] | None,
          deadline: float | None, max_body_mb: float | None, start: bool, insecure: bool,
          database: Path | None = None, render_report: ReportRenderer | None = None,
          live: LiveSettings | None = None) -> None:
    """`deadline` and `max_body_mb`, when given, override the config's deployment keys;
    `render_report(summary, rows)` writes each finished run's report.html (the interfaces give it);
    `live` keeps the run open as phases and model versions (phases.py)."""
    import uvicorn

    from fedcare.learning.tasks import load_plugins
    from fedcare.transports.network.coordinator import Coordinator, ServiceSettings, for_sites
    from fedcare.transports.network.httpstack import uvicorn_options
    from fedcare.transports.network.server import create_app

    _logging()
    load_plugins()  # installed packages' tasks, as the sites' agents load them
    overrides = {k: v for k, v in (("deadline", deadline), ("max_body_mb", max_body_mb)) if v is not None}
    cfg = load_config(config, overrides)
    cfg = for_sites(cfg)
    deployment = cfg.deployment
    registry = Registry.load(credentials)
    if live is not None and sites:
        raise ConfigError("--live takes its sites from the credential registry (`fedcare certs site NAME` adds one, "
                          "`fedcare admin remove-site NAME` removes one): drop --sites")
    members = [check_site_id(s.strip()) for s in sites] if sites else registry.site_ids()
    if not members:
        raise ConfigError(f"no sites: issue credentials with `fedcare certs site NAME --dir {credentials}` "
                          "or pass --sites")
    if len(set(members)) != len(members):
        raise ConfigError("--sites names a site twice")
    stack, stack_line = uvicorn_options()  # uvloop and httptools with fedcare[fast], else asyncio and h11
    listener = _bind(host, port)  # first: a busy port is one line, before any run starts or "listening" is said
    settings = ServiceSettings(state, tuple(members), deployment.deadline, int(deployment.max_body_mb * 1024 * 1024),
                               database=database, max_json=int(deployment.max_json_mb * 1024 * 1024))
    control = Coordinator(cfg, settings, render_report)
    extensions, phases = [], None
    if live is not None:
        from fedcare.transports.network.liveapi import live_routes
        from fedcare.transports.network.phases import Phases

        phases = Phases(control, registry, live)
        extensions.append(live_routes(phases))
    resumed = control.recover()
    if resumed:
        logging.getLogger("fedcare.coordinator").info("resuming run %s after a restart", resumed)
    elif start:
        control.start()
    if phases is not None:  # only now: no phase may begin on a half-restored state
        phases.watch()
    tls = {} if insecure else dict(zip(("ssl_certfile", "ssl_keyfile"), map(str, server_tls_files(credentials))))
    scheme = "http" if insecure else "https"
    logging.getLogger("fedcare.coordinator").info(stack_line)
    logging.getLogger("fedcare.coordinator").info("listening on %s://%s:%d for sites %s", scheme, host, port,
                                                  ", ".join(members))
    server = uvicorn.Server(uvicorn.Config(create_app(control, registry, extensions), host=host, port=port, log_level="warning",
                                           timeout_graceful_shutdown=2, **stack, **tls))
    server.run(sockets=[listener])


def _bind(host: str, port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}): another process holds the port; "
                          "stop it or choose another --port") from None
    return listener


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns what matters


def _verify(ca_pem: bytes, insecure: bool) -> object:
    return False if insecure else client_ssl_context(ca_pem)


def _check_url(url: str, insecure: bool) -> None:
    if not insecure and not url.startswith("https://"):
        raise ConfigError(f"'{url}' is not an https:// URL; plain HTTP needs --insecure")


def run_site(coordinator: str, credential: Path, data: Path | None, dataset: str | None, site_id: str | None,
             state: Path | None, approve: bool, insecure: bool, keep_running: bool = False,
             policy: Path | None = None, images: Path | None = None, skip_bad_images: bool = False,
             watch_every: float | None = None, max_backoff: float = 30.0,
             joined: dict[str, Path] | None = None, patient: str | None = None) -> None:
    from fedcare.learning.tasks import load_plugins
    from fedcare.transports.network.agent import AgentSettings, SiteAgent
    from fedcare.transports.network.policy import load_policy

    _logging()
    load_plugins()
    _check_url(coordinator, insecure)
    cred = SiteCredential.load(credential)
    if site_id is not None and site_id != cred.site_id:
        raise ConfigError(f"--site-id '{site_id}' differs from the credential's site '{cred.site_id}'")
    if max_backoff <= 0 or (watch_every is not None and watch_every <= 0):
        raise ConfigError("--max-backoff and --watch-every are positive numbers of seconds")
    if data is not None and not data.is_file():
        raise ConfigError(f"data file '{data}' not found")
    if images is not None and not images.is_file():
        raise ConfigError(f"image manifest '{images}' not found")
    for kind, path in (joined or {}).items():
        if not path.is_file():
            raise ConfigError(f"{kind} file '{path}' not found")
    rules = None if policy is None else load_policy(policy)
    if rules is None and not approve:
        logging.getLogger("fedcare.site").warning(
            "no --policy and no --approve: this site accepts every run the coordinator sends (each plan is shown "
            "here); give --policy policy.yaml to limit what it accepts (docs/deployment.md)")
    settings = AgentSettings(coordinator, cred.site_id, cred.token, state or Path(".fedcare-site") / cred.site_id,
                             _verify(cred.ca_pem, insecure), data, dataset, _ask if approve else None,
                             rules, policy.name if policy else "the policy", keep_running=keep_running,
                             images=images, skip_bad_images=skip_bad_images, watch_every=watch_every,
                             max_backoff=max_backoff, joined=joined or {}, patient=patient)
    SiteAgent(settings).run()


def _ask(plan: str) -> bool:
    print("Approve this plan and train on this site's data? [y/N] ", end="", flush=True)
    line = sys.stdin.readline()
    if not line:  # no terminal (a service, a container): nobody will ever answer
        raise ConfigError("--approve needs a person at a terminal, and there is none (stdin is closed); to run "
                          "unattended give --policy policy.yaml with what this site accepts (docs/deployment.md)")
    return line.strip().lower() in ("y", "yes")


def admin_call(coordinator: str, credential: Path, method: str, path: str, insecure: bool,
               body: dict | None = None) -> object:
    _check_url(coordinator, insecure)
    cred = AdminCredential.load(credential)
    try:
        response = httpx.request(method, coordinator.rstrip("/") + path, verify=_verify(cred.ca_pem, insecure),
                                 headers={"Authorization": f"Bearer {cred.token}"}, timeout=30, json=body)
    except httpx.TransportError as exc:
        raise FedcareError(f"coordinator at {coordinator} unreachable ({type(exc).__name__}: {exc})") from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:200]
        raise FedcareError(f"coordinator refused ({response.status_code}): {detail}")
    return response.json()


def start_run(coordinator: str, credential: Path, config: Path | None, insecure: bool) -> object:
    """`fedcare admin start`: a new run, with the coordinator's config or `config` (checked here first,
    so a bad file is one line before anything is sent)."""
    body = None if config is None else {"config": load_config(config).flat(mode="json")}
    return admin_call(coordinator, credential, "POST", "/v1/run", insecure, body)
