"""What an admin does to an account, and what central answers a forgotten password: the same
for the pages (``web/admin.py``, ``web/auth.py``) and the JSON API (``api/accounts.py``).

Database work runs in a worker thread; a mail follows the commit, and its failure does not
undo the decision (the notice says so)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from federation import __version__
from portal_central.accounts import notices, passwords, service
from portal_central.accounts.mail import MailError
from portal_central.devcert import issued_by_dev_ca
from portal_central.models import User
from portal_central.sites.connections import DISABLED

if TYPE_CHECKING:
    from portal_central.state import CentralState

_in_thread = asyncio.to_thread
"""Database work from the event loop: in a worker thread."""


def forgot_answer(minutes: float) -> str:
    """The one answer to "forgot password", whether or not an account matched."""
    return (
        "If an account has that username or email, a link to choose a new password is on its "
        f"way there. It works once, for {minutes:g} minutes."
    )


async def send_reset_link(state: CentralState, *, user_id: int) -> tuple[User, str, bool]:
    """An admin's reset link for an account: made, committed, then mailed."""

    def make() -> tuple[User, passwords.ResetLink]:
        with state.database.session() as session:
            user = service.get_user(session=session, user_id=user_id)
            link = passwords.new_reset_link(
                session=session,
                user=user,
                base_url=state.settings.url,
                minutes=state.settings.password_reset_minutes,
            )
            return user, link

    user, link = await _in_thread(make)
    try:
        await notices.send_reset_link(state, link, by_admin=True)
    except MailError as error:
        return user, f"The reset link was not sent: {error}. Send one again later.", True
    if state.settings.smtp_host is None:
        return user, f"A reset link for {user.username} is in the outbox: forward it.", False
    return user, f"A reset link was mailed to {user.email}.", False


async def delete_account(state: CentralState, *, user_id: int, admin: User) -> str:
    """Delete an account; a site's WebSocket is closed at once. The admin's notice."""

    def delete() -> service.Deleted:
        with state.database.session() as session:
            return service.delete_account(session=session, user_id=user_id, by=admin)

    deleted = await _in_thread(delete)
    if deleted.site_id:
        await state.connections.close(
            deleted.site_id, code=DISABLED, reason="this site's account was deleted"
        )
    kept = " Finished jobs still name its institution." if deleted.kept_for_jobs else ""
    return f"{deleted.username} is deleted: it can no longer sign in.{kept}"


async def apply_decision(
    state: CentralState, *, user_id: int, action: str
) -> tuple[User, str, bool]:
    """Decide, commit, then mail the user; a mail failure does not undo the decision."""

    def decide() -> User:
        with state.database.session() as session:
            return service.decide(session=session, user_id=user_id, action=action)

    user = await _in_thread(decide)
    if action == "disable" and user.site_id:
        await state.connections.close(user.site_id, code=DISABLED, reason="this site was disabled")
    template = {"approve": "site_approved", "reject": "site_rejected"}.get(action)
    notice = {
        "approve": f"Approved: site_id {user.site_id}, mailed to {user.email}.",
        "reject": f"Rejected; {user.email} was told.",
        "disable": "Disabled: its tokens are revoked.",
        "enable": "Enabled again.",
    }[action]
    if template is None:
        return user, notice, False
    try:
        await state.mailer.send(
            to=user.email,
            template=template,
            user=user,
            central_url=state.settings.url,
            site_install=state.settings.site_install or "",
            version=__version__,
            own_ca=issued_by_dev_ca(state.settings.certfile),
            tls=state.settings.tls,
        )
    except MailError as error:
        return user, f"{notice.split(':')[0]}, but {error}. site_id: {user.site_id}", True
    if state.settings.smtp_host is None:
        notice = {
            "approve": f"Approved: site_id {user.site_id}; the mail for {user.email} is in the "
            "outbox (forward it).",
            "reject": f"Rejected; the mail for {user.email} is in the outbox (forward it).",
        }[action]
    return user, notice, False
