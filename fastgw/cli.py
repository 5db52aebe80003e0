"""Command line: argument parsing and exit codes only; the work lives in the modules it calls.

Exit codes (SPEC section 1): 0 ok, 1 invalid config or input, 2 usage error.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

import msgspec

from .config import Config, ConfigError, load_config, parse_listen


def _add_identity_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", default="", help="user id in the signing context")
    parser.add_argument("--role", default="")
    parser.add_argument("--app", default="", help="app key")
    parser.add_argument("--plan", default="")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastgw", description="A small, fast API gateway.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a demo gateway with an in-process echo upstream")
    demo.add_argument("--listen", default="127.0.0.1:8080", help="H:P to listen on")

    run = sub.add_parser("run", help="run the gateway from a config file")
    run.add_argument("-c", "--config", required=True, help="YAML config file")
    run.add_argument("--listen", help="override server.listen (H:P)")
    run.add_argument("--workers", type=int, help="override server.workers (0 = one per core)")

    check = sub.add_parser("check", help="validate a config file")
    check.add_argument("-c", "--config", required=True)

    sign = sub.add_parser("sign", help="print the v2 signature of a request (body on stdin)")
    sign.add_argument("--secret", required=True)
    sign.add_argument("--method", required=True)
    sign.add_argument("--path", required=True, help="path and query as forwarded")
    sign.add_argument("--timestamp", help="unix seconds (default: now)")
    _add_identity_flags(sign)

    verify = sub.add_parser("verify", help="check a v2 signature (body on stdin); exit 0 if valid")
    verify.add_argument("--secret", required=True)
    verify.add_argument("--method", required=True)
    verify.add_argument("--path", required=True)
    verify.add_argument("--timestamp", required=True)
    verify.add_argument("--signature", required=True)
    _add_identity_flags(verify)

    from .auth.token_commands import add_parser as add_tokens_parser

    add_tokens_parser(sub)
    return parser


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return None


def _setup_logging() -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s fastgw[%(process)d] %(levelname)s %(message)s",
    )
    # Tornado's access log would print full URIs, query tokens included; ours is the JSON one.
    logging.getLogger("tornado.access").disabled = True


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command
    if command == "check":
        try:
            load_config(args.config)
        except ConfigError as exc:
            for error in exc.errors:
                print(error)
            return 1
        print(f"{args.config}: ok")
        return 0
    if command in ("sign", "verify"):
        return _sign_or_verify(args)
    if command == "tokens":
        from .auth.token_commands import run as run_tokens

        return run_tokens(args)
    _setup_logging()
    if command == "demo":
        from .demo import run_demo

        try:
            parse_listen(args.listen)
        except ValueError as exc:
            print(f"--listen: {exc}", file=sys.stderr)
            return 2
        return run_demo(args.listen)
    config = _load(args.config)
    if config is None:
        return 1
    overrides: dict[str, object] = {}
    if args.listen is not None:
        try:
            parse_listen(args.listen)
        except ValueError as exc:
            print(f"--listen: {exc}", file=sys.stderr)
            return 2
        overrides["listen"] = args.listen
    if args.workers is not None:
        if args.workers < 0:
            print("--workers: must be 0 or more", file=sys.stderr)
            return 2
        overrides["workers"] = args.workers
    if overrides:
        config = msgspec.structs.replace(config, server=msgspec.structs.replace(config.server, **overrides))
    if config.server.workers != 1:
        _enable_multiprocess_metrics()
    from .server import run as serve

    return serve(config, config_path=args.config)


def _enable_multiprocess_metrics() -> None:
    """Point prometheus-client at a directory shared by the workers (multiprocess mode).

    Its value class is chosen when it is imported, from the environment; if it was imported
    already, choose again. Metrics are created in the workers, after this.
    """
    import atexit
    import os
    import shutil
    import tempfile

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    directory = tempfile.mkdtemp(prefix="fastgw-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    if "prometheus_client" in sys.modules:
        from prometheus_client import values

        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    parent = os.getpid()

    def remove() -> None:
        if os.getpid() == parent:  # forked workers exit through here too
            shutil.rmtree(directory, ignore_errors=True)

    atexit.register(remove)


def _sign_or_verify(args: argparse.Namespace) -> int:
    import hmac

    from .speedups import sign_v2

    timestamp = args.timestamp if args.timestamp is not None else str(int(time.time()))
    if not timestamp.isdigit():
        print("--timestamp: expected unix seconds", file=sys.stderr)
        return 1
    body = sys.stdin.buffer.read() if not sys.stdin.isatty() else b""
    signature = sign_v2(
        args.secret.encode(),
        timestamp,
        args.method.upper(),
        args.path,
        args.user,
        args.role,
        args.app,
        args.plan,
        body,
    )
    if args.command == "sign":
        print(signature)
        return 0
    return 0 if hmac.compare_digest(signature, args.signature) else 1
