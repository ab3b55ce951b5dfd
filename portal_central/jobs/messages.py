"""A job's state message as each viewer may see it.

Central's admin sees every message whole. A site sees what failed and where: a failure at
central is only "failed at central" (what is wrong with central's own data, its file name and
its counts are central's business), a failure at sites names the sites, and a site reads its
own site's reason in full but not another site's.
"""

from __future__ import annotations

import re

from portal_common.states import JobState

CENTRAL_REFUSED = "central's data was refused: "
"""The start of the message of a job whose central file was refused as it opened (it waits for
a corrected one): the reason is central's business, a site reads only that central is at it."""
_SITE = re.compile(r"(?:^|; )site '([a-z0-9_-]{1,40})': ")
FAILED_AT_CENTRAL = "failed at central"


def for_viewer(message: str, *, state: str, site_id: str | None) -> str:
    """``message`` (of a job in ``state``) for a site's account, or whole for ``site_id=None``."""
    if site_id is not None and message.startswith(CENTRAL_REFUSED):
        return "waiting for central to give a corrected file"
    if site_id is None or state != JobState.FAILED:
        return message
    marks = list(_SITE.finditer(message))
    if not marks or marks[0].start() != 0:
        return FAILED_AT_CENTRAL
    sites = [m.group(1) for m in marks]
    shown = "failed at " + ", ".join(f"site '{s}'" for s in sites)
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        if mark.group(1) == site_id:
            end = following.start() if following is not None else len(message)
            shown += f"; this site: {message[mark.end() : end]}"
    return shown
