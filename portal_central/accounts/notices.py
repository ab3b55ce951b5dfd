"""Mail about accounts that goes out after the request is answered: the admins' notice of a new
registration, and a "forgot password" link (sent after the same answer for every caller)."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import select

from portal_central.accounts.mail import MailError
from portal_central.accounts.passwords import ResetLink
from portal_central.accounts.status import AccountStatus, Role
from portal_central.models import User
from portal_central.state import CentralState

log = logging.getLogger(__name__)


async def tell_admins_of_registration(state: CentralState, user_id: int) -> None:
    """Mail every approved admin that an account waits for approval (failures are logged)."""

    def read() -> tuple[User | None, list[tuple[str, str]]]:
        with state.database.session() as session:
            user = session.get(User, user_id)
            admins = session.execute(
                select(User.username, User.email).where(
                    User.role == Role.ADMIN, User.status == AccountStatus.APPROVED
                )
            ).all()
            return user, [(name, email) for name, email in admins]

    user, admins = await asyncio.to_thread(read)
    if user is None or user.status != AccountStatus.PENDING:
        return
    for name, address in admins:
        try:
            await state.mailer.send(
                to=address,
                template="new_registration",
                user=user,
                admin_name=name,
                central_url=state.settings.url,
            )
        except MailError as error:
            log.error("the registration of %s was not mailed to %s: %s", user.username, name, error)


async def send_reset_link(state: CentralState, link: ResetLink, *, by_admin: bool) -> None:
    """Mail a reset link to its account; raises :class:`MailError` when SMTP refuses it."""
    await state.mailer.send(
        to=link.user.email,
        template="password_reset",
        user=link.user,
        url=link.url,
        minutes=f"{link.minutes:g}",
        by_admin=by_admin,
        central_url=state.settings.url,
    )


async def send_requested_reset_link(state: CentralState, link: ResetLink | None) -> None:
    """After a "forgot password" answer: mail the link if an account matched (logged if not)."""
    if link is None:
        log.info("a password reset was asked for an account that does not exist")
        return
    try:
        await send_reset_link(state, link, by_admin=False)
    except MailError as error:
        log.error("the reset link for %s was not sent: %s", link.user.username, error)
