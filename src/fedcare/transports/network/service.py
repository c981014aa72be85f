"""Entry points behind `fedcare coordinator`, `fedcare site` and `fedcare admin`: wire credentials,
TLS, the coordinator and the agent together."""

from __future__ import annotations

import logging
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



def serve(config: Path, credentials: Path, state: Path, host: str, port: int, sites: list[str] | None,
          deadline: float | None, max_body_mb: float | None, start: bool, insecure: bool,
          database: Path | None = None, render_report: ReportRenderer | None = None) -> None:
    """`deadline` and `max_body_mb`, when given, override the config's deployment keys;
    `render_report(summary, rows)` writes each finished run's report.html (the interfaces give it)."""
    import uvicorn

    from fedcare.learning.tasks import load_plugins
    from fedcare.transports.network.coordinator import Coordinator, ServiceSettings
    from fedcare.transports.network.server import create_app

    _logging()
    load_plugins()  # installed packages' tasks, as the sites' agents load them
    overrides = {k: v for k, v in (("deadline", deadline), ("max_body_mb", max_body_mb)) if v is not None}
    cfg = load_config(config, overrides)
    deployment = cfg.deployment
    registry = Registry.load(credentials)
    members = [check_site_id(s.strip()) for s in sites] if sites else registry.site_ids()
    if not members:
        raise ConfigError(f"no sites: issue credentials with `fedcare certs site NAME --dir {credentials}` "
                          "or pass --sites")
    if len(set(members)) != len(members):
        raise ConfigError("--sites names a site twice")
    settings = ServiceSettings(state, tuple(members), deployment.deadline, int(deployment.max_body_mb * 1024 * 1024),
                               database=database)
    control = Coordinator(cfg, settings, render_report)
    resumed = control.recover()
    if resumed:
        logging.getLogger("fedcare.coordinator").info("resuming run %s after a restart", resumed)
    elif start:
        control.start()
    tls = {} if insecure else dict(zip(("ssl_certfile", "ssl_keyfile"), map(str, server_tls_files(credentials))))
    scheme = "http" if insecure else "https"
    logging.getLogger("fedcare.coordinator").info("listening on %s://%s:%d for sites %s", scheme, host, port,
                                                  ", ".join(members))
    server = uvicorn.Server(uvicorn.Config(create_app(control, registry), host=host, port=port, log_level="warning",
                                           timeout_graceful_shutdown=2, **tls))
    server.run()


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns what matters


def _verify(ca_pem: bytes, insecure: bool) -> object:
    return False if insecure else client_ssl_context(ca_pem)


def _check_url(url: str, insecure: bool) -> None:
    if not insecure and not url.startswith("https://"):
        raise ConfigError(f"'{url}' is not an https:// URL; plain HTTP needs --insecure")


def run_site(coordinator: str, credential: Path, data: Path | None, dataset: str | None, site_id: str | None,
             state: Path | None, approve: bool, insecure: bool, images: Path | None = None,
             skip_bad_images: bool = False) -> None:
    from fedcare.learning.tasks import load_plugins
    from fedcare.transports.network.agent import AgentSettings, SiteAgent

    _logging()
    load_plugins()
    _check_url(coordinator, insecure)
    cred = SiteCredential.load(credential)
    if site_id is not None and site_id != cred.site_id:
        raise ConfigError(f"--site-id '{site_id}' differs from the credential's site '{cred.site_id}'")
    if data is not None and not data.is_file():
        raise ConfigError(f"data file '{data}' not found")
    if images is not None and not images.is_file():
        raise ConfigError(f"image manifest '{images}' not found")
    settings = AgentSettings(coordinator, cred.site_id, cred.token, state or Path(".fedcare-site") / cred.site_id,
                             _verify(cred.ca_pem, insecure), data, dataset, _ask if approve else None,
                             images=images, skip_bad_images=skip_bad_images)
    SiteAgent(settings).run()


def _ask(plan: str) -> bool:
    print("Approve this plan and train on this site's data? [y/N] ", end="", flush=True)
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def admin_call(coordinator: str, credential: Path, method: str, path: str, insecure: bool) -> object:
    _check_url(coordinator, insecure)
    cred = AdminCredential.load(credential)
    try:
        response = httpx.request(method, coordinator.rstrip("/") + path, verify=_verify(cred.ca_pem, insecure),
                                 headers={"Authorization": f"Bearer {cred.token}"}, timeout=30)
    except httpx.TransportError as exc:
        raise FedcareError(f"coordinator at {coordinator} unreachable ({type(exc).__name__}: {exc})") from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:200]
        raise FedcareError(f"coordinator refused ({response.status_code}): {detail}")
    return response.json()
