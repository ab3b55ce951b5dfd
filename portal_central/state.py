"""What the running central portal holds: settings, database, security, mail, templates."""

from __future__ import annotations

from dataclasses import dataclass

from federation.registry import Registry
from portal_central.accounts.limits import RateLimit
from portal_central.accounts.mail import Mailer
from portal_central.accounts.throttle import Throttle
from portal_central.algorithms_store import load_registry, sync_builtins
from portal_central.db import Database
from portal_central.jobs.runner import Runs
from portal_central.security import Passwords, Tokens
from portal_central.settings import CentralSettings
from portal_central.sites.connections import Connections


@dataclass
class CentralState:
    settings: CentralSettings
    database: Database
    passwords: Passwords
    tokens: Tokens
    mailer: Mailer
    registry: Registry
    connections: Connections
    runs: Runs
    throttle: Throttle
    """Waits after failed sign-ins (per username and per client address), in the database."""
    sign_in_limit: RateLimit
    register_limit: RateLimit
    reset_limit: RateLimit
    """"Forgot password" requests per client address."""

    @classmethod
    def create(cls, settings: CentralSettings) -> CentralState:
        database = Database(settings.database)
        connections = Connections(grace_seconds=settings.site_grace_seconds)
        with database.session() as session:
            sync_builtins(session=session)
        with database.session() as session:
            registry = load_registry(session=session)
        return cls(
            settings=settings,
            database=database,
            passwords=Passwords(
                time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib
            ),
            tokens=Tokens(settings.secret_key()),
            mailer=Mailer(settings, database),
            registry=registry,
            connections=connections,
            runs=Runs(
                database=database,
                registry=registry,
                connections=connections,
                result_expiry_seconds=settings.result_expiry_minutes * 60,
                download_grace_seconds=settings.download_grace_seconds,
                request_deadline_seconds=settings.request_deadline_seconds,
            ),
            throttle=Throttle(settings),
            sign_in_limit=RateLimit(
                "sign-in requests", capacity=settings.token_requests_per_minute, window=60
            ),
            register_limit=RateLimit(
                "registrations", capacity=settings.register_requests_per_hour, window=3600
            ),
            reset_limit=RateLimit(
                "password reset requests", capacity=settings.reset_requests_per_hour, window=3600
            ),
        )
