"""``fip site``: run the site portal on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import ValidationError

from federation.logs import log_config
from portal_site.settings import SiteSettings


def configure(site: argparse.ArgumentParser) -> None:
    """``fip site``'s flags (its line in ``fip --help`` is in federation.cli)."""
    site.description = (
        "Run the site portal next to the site's data. Open it in a browser: the "
        "first visit chooses the portal's own local password (or set FIP_SITE_LOCAL_PASSWORD "
        "before the first start, for automation); then enter central's URL and this site's "
        "site_id in Settings, and sign in to central. Scripts get a bearer token for the JSON "
        "API from POST /api/local/token. Settings are also environment variables "
        "FIP_SITE_<NAME>; flags win."
    )
    site.add_argument(
        "--host", help="address of the local UI (default 127.0.0.1: this machine only)"
    )
    site.add_argument("--port", type=int, help="port of the local UI (default 8001)")
    site.add_argument(
        "--allowed-hosts",
        metavar="NAMES",
        help="comma-separated name or name:port the UI also answers for, besides 127.0.0.1, "
        "localhost and [::1] at its port (FIP_SITE_ALLOWED_HOSTS); other Host headers are "
        "refused",
    )
    site.add_argument(
        "--data-dir", type=Path, help="the site's small database and logs (FIP_SITE_DATA_DIR)"
    )
    site.add_argument(
        "--forget-local-password",
        action="store_true",
        help="forget the stored local password before starting: the next visit (or "
        "FIP_SITE_LOCAL_PASSWORD) chooses a new one",
    )
    site.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from portal_site.app import create_app
    from portal_site.store import Store

    given = {
        k: getattr(args, k)
        for k in ("host", "port", "data_dir", "allowed_hosts")
        if getattr(args, k) is not None
    }
    try:
        settings = SiteSettings(**given).prepare()
    except ValidationError as error:
        raise SystemExit(f"fip site: error: {_problems(error)}") from None
    if args.forget_local_password:
        store = Store(settings.database)
        try:
            store.set_local_password_hash("", only_if_unset=False)
        finally:
            store.dispose()
        print("fip site: the local password is forgotten; the next visit chooses a new one")
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_config=log_config()
    )
    return 0


def _problems(error: ValidationError) -> str:
    """Each bad setting by its environment variable's name."""
    messages = []
    for problem in error.errors():
        message = str(problem["msg"]).removeprefix("Value error, ")
        if not message.startswith("FIP_SITE_"):
            message = f"FIP_SITE_{str(problem['loc'][0]).upper()}: {message}"
        messages.append(message)
    return "; ".join(messages)
