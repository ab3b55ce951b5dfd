"""Outgoing mail: through SMTP (aiosmtplib) when configured, else into the portal's outbox."""

from __future__ import annotations

import asyncio
import logging
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from portal_central.db import Database
from portal_central.models import OutboxMail
from portal_central.settings import CentralSettings

log = logging.getLogger(__name__)
MAIL_TEMPLATES = Path(__file__).resolve().parents[1] / "templates" / "mail"


class MailError(Exception):
    """The SMTP server could not take the mail."""


class Mailer:
    """Renders ``portal_central/templates/mail/<name>.txt`` (first line ``Subject: ...``) and
    sends it."""

    def __init__(self, settings: CentralSettings, database: Database) -> None:
        self._settings = settings
        self._database = database
        self._templates = Environment(
            loader=FileSystemLoader(MAIL_TEMPLATES),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            autoescape=False,
        )
        if settings.smtp_host is None:
            log.info("no SMTP server configured: mail goes to the outbox in the admin pages")

    def render(self, template: str, **context: Any) -> tuple[str, str]:
        text = self._templates.get_template(f"{template}.txt").render(**context)
        first, _, body = text.partition("\n")
        if not first.startswith("Subject: "):
            raise ValueError(f"mail template {template}.txt must start with 'Subject: '")
        return first.removeprefix("Subject: ").strip(), body.lstrip("\n")

    def _to_outbox(self, to: str, subject: str, body: str) -> None:
        with self._database.session() as session:
            session.add(OutboxMail(to_address=to, subject=subject, body=body))

    async def send(self, *, to: str, template: str, **context: Any) -> None:
        subject, body = self.render(template, **context)
        settings = self._settings
        if settings.smtp_host is None:
            await asyncio.to_thread(self._to_outbox, to, subject, body)
            log.info("mail to %s stored in the outbox: %s", to, subject)
            return
        message = EmailMessage()
        message["From"] = settings.mail_from
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        try:
            await aiosmtplib.send(
                message,
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                use_tls=settings.smtp_security == "tls",
                start_tls=settings.smtp_security == "starttls",
                username=settings.smtp_user,
                password=settings.smtp_password.get_secret_value()
                if settings.smtp_password
                else None,
                timeout=20,
            )
        except (aiosmtplib.SMTPException, OSError) as error:
            log.error("mail to %s failed: %s", to, error)
            raise MailError(f"the mail to {to} could not be sent: {error}") from None
        log.info("mail sent to %s: %s", to, subject)
