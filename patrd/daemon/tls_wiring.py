"""Builds the TLS parts from the config, for the composition root (patrd/daemon/compose.py)."""

from __future__ import annotations

from dataclasses import dataclass

from patrd.control.options import RouteSink
from patrd.proxy.router import RoutingTable
from patrd.settings.config import Config
from patrd.state.store import Store
from patrd.tls.acme_client import AcmeClient, AcmeOptions, ChallengeTokens
from patrd.tls.certstore import CertStore
from patrd.tls.controller import LOCAL_POLICY, TlsController, TlsOptions
from patrd.tls.localca import LocalCA, permitted_names
from patrd.tls.renewal import Policy


@dataclass(frozen=True, slots=True)
class TlsParts:
    certs: CertStore
    local_ca: LocalCA
    challenges: ChallengeTokens
    controller: TlsController


def build_tls(config: Config, store: Store) -> TlsParts:
    base = config.daemon.data_dir / "tls"
    certs = CertStore(base / "certs")
    local_ca = LocalCA(
        base / "local-ca", permitted_names(config.proxy.base_domain, config.tls.local_ca_names)
    )
    challenges = ChallengeTokens()
    acme_config = config.acme
    acme = None
    if acme_config.enabled:
        acme = AcmeClient(
            AcmeOptions(
                directory_url=acme_config.directory_url,
                state_dir=base / "acme",
                ca_bundle=acme_config.ca_bundle,
                contact_email=acme_config.contact_email,
                timeout_s=acme_config.timeout_s,
            ),
            challenges,
        )
    renew_before = config.tls.renew_before
    options = TlsOptions(
        policy=Policy(
            renew_before=renew_before,
            backoff_initial_s=acme_config.backoff_initial_s,
            backoff_max_s=acme_config.backoff_max_s,
            max_orders_per_hour=acme_config.max_orders_per_hour,
        ),
        local_policy=Policy(
            renew_before=renew_before,
            backoff_initial_s=LOCAL_POLICY.backoff_initial_s,
            backoff_max_s=LOCAL_POLICY.backoff_max_s,
        ),
        check_interval_s=config.tls.check_interval_s,
        resolve_check=acme_config.resolve_check,
        resolver=(
            (acme_config.resolver.host, acme_config.resolver.port) if acme_config.resolver else None
        ),
        public_addresses=frozenset(acme_config.public_addresses),
    )
    controller = TlsController(store, certs, local_ca, acme, options)
    return TlsParts(certs, local_ca, challenges, controller)


class RouteFanout:
    """The controller's route sink: the proxy gets the table, TLS its hostnames."""

    def __init__(self, proxy: RouteSink, tls: TlsController | None) -> None:
        self._proxy = proxy
        self._tls = tls

    def set_table(self, table: RoutingTable) -> None:
        self._proxy.set_table(table)
        if self._tls is not None:
            owners = {
                r.host: r.deployment
                for r in table.routes
                if r.redirect is None and r.upstream_host is None and r.deployment
            }
            self._tls.set_hosts(table.hosts(), owners)

    def outstanding(self, host: str, port: int) -> int:
        return self._proxy.outstanding(host, port)
