"""An account's role and status (one definition each). The values are the strings stored in
central's database, so an enum member compares equal to its string."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    SITE = "site"
    """A site user: the account carries the site's ``site_id``."""


class AccountStatus(StrEnum):
    PENDING = "pending"
    """Registered, waiting for an admin's decision."""
    APPROVED = "approved"
    REJECTED = "rejected"
    DISABLED = "disabled"
    """Tokens and sessions revoked; an admin can enable it again."""
    DELETED = "deleted"
    """A deleted account's nameless row, kept only while finished jobs name it."""
