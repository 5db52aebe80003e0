"""``fastgw tokens create|list|revoke``: API tokens managed from the shell (SPEC section 1).

These work on the config's store file directly, with or without a gateway running: a running
gateway sees a created token on its next lookup and a revocation within 1 s, through the same
revision counter the HTTP endpoint bumps. Output is JSON on stdout; errors go to stderr without
any token. Exit codes: 0 ok, 1 invalid config or input (or an unknown id), 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TypeVar

import msgspec

from ..access_log import utc_timestamp
from ..config import Config, ConfigError, load_config
from ..store import StoreError, audit, connect_store
from ..store import tokens as token_rows
from ..store.db import Connection, transaction
from .api_tokens import IssuedToken, check_identity, check_name, check_scopes, issue

T = TypeVar("T")
ACTOR_DETAILS = {"via": "cli"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tokens = sub.add_parser("tokens", help="create, list and revoke API tokens in the config's store")
    commands = tokens.add_subparsers(dest="tokens_command", required=True)
    create = commands.add_parser("create", help="create a token; prints it once, as JSON")
    create.add_argument("-c", "--config", required=True, help="YAML config file")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", action="append", default=[], help="repeat for several scopes")
    create.add_argument("--user", default="cli", help="owner user id (default: cli)")
    create.add_argument("--role", default="")
    create.add_argument("--plan", default="")
    create.add_argument("--app", default="", help="owner app key")
    listing = commands.add_parser("list", help="one JSON object per token (no secrets)")
    listing.add_argument("-c", "--config", required=True)
    revoke = commands.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("-c", "--config", required=True)
    revoke.add_argument("id")


def _print(obj: object) -> None:
    sys.stdout.write(msgspec.json.encode(obj).decode() + "\n")


def _with_store(config: Config, fn: Callable[[Connection], T], *, write: bool) -> T:
    conn = connect_store(config.store)
    try:
        return transaction(conn, fn) if write else fn(conn)
    finally:
        conn.close()


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return 1
    try:
        if args.tokens_command == "create":
            return _create(config, args)
        if args.tokens_command == "list":
            for record in _with_store(
                config, lambda c: token_rows.list_tokens(c, active_only=False), write=False
            ):
                _print(record.admin())
            return 0
        return _revoke(config, args.id)
    except StoreError as exc:
        print(f"fastgw: {exc}", file=sys.stderr)
        return 1


def _create(config: Config, args: argparse.Namespace) -> int:
    if not config.auth.api_tokens.enabled:
        print("fastgw: auth.api_tokens.enabled is false in this config", file=sys.stderr)
        return 1
    try:
        name = check_name(args.name)
        scopes = check_scopes(list(args.scope))
        owner = {
            "user_id": check_identity(args.user, "--user"),
            "role": check_identity(args.role, "--role"),
            "plan": check_identity(args.plan, "--plan"),
            "app_key": check_identity(args.app, "--app"),
        }
    except ValueError as exc:
        print(f"fastgw: {exc}", file=sys.stderr)
        return 1
    if not owner["user_id"]:
        print("fastgw: --user must not be empty", file=sys.stderr)
        return 1
    prefix = config.auth.api_tokens.prefix

    def create(conn: Connection) -> IssuedToken:
        issued = issue(conn, prefix, name=name, scopes=scopes, **owner)
        details = {**ACTOR_DETAILS, "name": name, "scopes": list(scopes), "userId": owner["user_id"]}
        audit.insert(conn, None, "api_token.created", "api_token", issued.record.id, details)
        return issued

    _print(_with_store(config, create, write=True).shown_once())
    return 0


def _revoke(config: Config, token_id: str) -> int:
    def revoke(conn: Connection) -> str:
        result = token_rows.revoke(conn, token_id, utc_timestamp())
        if result == "revoked":
            audit.insert(conn, None, "api_token.revoked", "api_token", token_id, ACTOR_DETAILS)
        return result

    result = _with_store(config, revoke, write=True)
    if result == "unknown":
        print(f"fastgw: no API token with id {token_id!r}", file=sys.stderr)
        return 1
    _print({"id": token_id, "revoked": True, "alreadyRevoked": result == "already"})
    return 0
