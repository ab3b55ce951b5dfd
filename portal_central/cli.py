"""``fip central``: serve the portal, create the first admin, upgrade the database."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from federation.errors import InputError
from federation.logs import log_config
from federation.protocol import MAX_FRAME_BYTES
from portal_central.accounts import service
from portal_central.db import Database, upgrade
from portal_central.errors import PortalError
from portal_central.security import Passwords
from portal_central.settings import CentralSettings


def configure(central: argparse.ArgumentParser) -> None:
    """``fip central``'s flags and actions (its line in ``fip --help`` is in federation.cli)."""
    central.description = (
        "Run the central portal (HTTPS pages, JSON API and the sites' WebSocket on "
        "one port). Every setting is also an environment variable FIP_CENTRAL_<NAME>; flags win."
    )
    central.add_argument(
        "--data-dir", type=Path, help="database, secret key and logs (FIP_CENTRAL_DATA_DIR)"
    )
    central.add_argument("--database-url", help="SQLAlchemy URL; default SQLite in the data dir")
    central.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    central.add_argument("--port", type=int, help="port to listen on (default 8443)")
    central.add_argument("--certfile", type=Path, help="TLS certificate (PEM)")
    central.add_argument("--keyfile", type=Path, help="TLS private key (PEM)")
    central.add_argument(
        "--allow-insecure-websocket",
        action="store_true",
        default=None,
        help="accept sites over plain ws:// from this machine (development only)",
    )
    central.set_defaults(handler=_serve)
    actions = central.add_subparsers(title="actions", metavar="ACTION")

    admin = actions.add_parser(
        "create-admin",
        help="create an admin account (asks for the password when --password is not given)",
    )
    admin.add_argument("--username", required=True)
    admin.add_argument("--email", required=True)
    admin.add_argument("--password", help="the password; prompted for when omitted")
    admin.set_defaults(handler=_create_admin)

    unlock = actions.add_parser(
        "unlock",
        help="let an account sign in again at once: clear its failed sign-ins and its wait",
        description="Clear the failed sign-ins counted against USERNAME and the wait they "
        "impose (the waits of client addresses are kept). Works while central is running.",
    )
    unlock.add_argument("username", metavar="USERNAME", help="the account, e.g. admin")
    unlock.set_defaults(handler=_unlock)

    cert = actions.add_parser(
        "dev-cert",
        help="make a local CA and a server certificate for trying central with TLS",
        description="Write ca.pem, server.pem and server-key.pem into DATA_DIR/tls (or --out). "
        "Start central with --certfile and --keyfile; give sites the CA file.",
    )
    cert.add_argument("--out", type=Path, help="folder for the files (default DATA_DIR/tls)")
    cert.add_argument(
        "--name",
        action="append",
        help="a host name or IP address the certificate is for (repeatable; "
        "default localhost, 127.0.0.1 and ::1)",
    )
    cert.add_argument(
        "--ca-copy",
        type=Path,
        metavar="DIR",
        help="also copy ca.pem (only the CA certificate) into DIR, to hand to the sites",
    )
    cert.set_defaults(handler=_dev_cert)

    db = actions.add_parser("db", help="database maintenance")
    db_actions = db.add_subparsers(title="db actions", metavar="ACTION", required=True)
    db_upgrade = db_actions.add_parser("upgrade", help="apply the migrations up to the newest")
    db_upgrade.set_defaults(handler=_db_upgrade)


def settings_from(args: argparse.Namespace) -> CentralSettings:
    """Environment variables, overridden by the flags that were given."""
    given = {
        key: getattr(args, key)
        for key in (
            "data_dir",
            "database_url",
            "host",
            "port",
            "certfile",
            "keyfile",
            "allow_insecure_websocket",
        )
        if getattr(args, key, None) is not None
    }
    return CentralSettings(**given)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from portal_central.app import create_app

    settings = settings_from(args)
    if (settings.certfile is None) != (settings.keyfile is None):
        raise InputError("give both --certfile and --keyfile, or neither")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.certfile) if settings.certfile else None,
        ssl_keyfile=str(settings.keyfile) if settings.keyfile else None,
        ws_per_message_deflate=False,  # compression costs ~15x on float64 frames
        ws_max_size=MAX_FRAME_BYTES,  # as the sites' own limit: the widest job's replies fit
        log_config=log_config(),
    )
    return 0


def _create_admin(args: argparse.Namespace) -> int:
    settings = settings_from(args).prepare()
    password = args.password
    if password is None:
        password = getpass.getpass(f"Password for {args.username}: ")
        if getpass.getpass("Again: ") != password:
            raise InputError("the two passwords differ")
    upgrade(settings.database)
    database = Database(settings.database)
    passwords = Passwords(
        time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib
    )
    try:
        with database.session() as session:
            user = service.create_admin(
                session=session,
                passwords=passwords,
                username=args.username,
                email=args.email,
                password=password,
            )
    except PortalError as error:
        raise InputError(
            f"{error.field}: {error.message}" if error.field else error.message
        ) from None
    finally:
        database.dispose()
    print(f"admin '{user.username}' created in {settings.database}", file=sys.stdout)
    return 0


def _unlock(args: argparse.Namespace) -> int:
    settings = settings_from(args).prepare()
    upgrade(settings.database)
    database = Database(settings.database)
    try:
        with database.session() as session:
            user = service.unlock(session=session, username=args.username)
    except PortalError as error:
        raise InputError(error.message) from None
    finally:
        database.dispose()
    print(f"'{user.username}' may sign in again now: its failed sign-ins are cleared")
    return 0


def _dev_cert(args: argparse.Namespace) -> int:
    from portal_central.devcert import make_dev_cert

    settings = settings_from(args)
    folder = args.out or settings.data_dir / "tls"
    made = make_dev_cert(folder, names=args.name or ("localhost", "127.0.0.1", "::1"))
    print(f"CA certificate (give it to the sites): {made.ca_file}")
    print(f"server certificate:                    {made.certfile}")
    print(f"server key:                            {made.keyfile}")
    if args.ca_copy is not None:
        args.ca_copy.mkdir(parents=True, exist_ok=True)
        copy = args.ca_copy / "ca.pem"
        copy.write_bytes(made.ca_file.read_bytes())
        print(f"CA certificate copied to:              {copy}")
    print(f"start central with: fip central --certfile {made.certfile} --keyfile {made.keyfile}")
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    settings = settings_from(args).prepare()
    upgrade(settings.database)
    print(f"database at the newest migration: {settings.database}")
    return 0
