"""``fip site``: run the site portal on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path

from federation.logs import log_config
from portal_site.settings import SiteSettings


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    site = commands.add_parser(
        "site",
        help="run the site portal: a local browser UI and the worker that answers central",
        description="Run the site portal next to the site's data. Open it in a browser, enter "
        "central's URL and this site's site_id in Settings, and sign in. Settings are also "
        "environment variables FIP_SITE_<NAME>; flags win.",
    )
    site.add_argument(
        "--host", help="address of the local UI (default 127.0.0.1: this machine only)"
    )
    site.add_argument("--port", type=int, help="port of the local UI (default 8001)")
    site.add_argument(
        "--data-dir", type=Path, help="the site's small database and logs (FIP_SITE_DATA_DIR)"
    )
    site.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from portal_site.app import create_app

    given = {
        k: getattr(args, k) for k in ("host", "port", "data_dir") if getattr(args, k) is not None
    }
    settings = SiteSettings(**given).prepare()
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_config=log_config()
    )
    return 0
