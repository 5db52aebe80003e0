"""The command line as a user runs it: real processes, real files, real signals."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port


def fastgw(
    *args: str, stdin: bytes = b"", cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "fastgw", *args],
        input=stdin,
        capture_output=True,
        env=env,
        cwd=cwd,
        timeout=30,
    )


def test_check_accepts_a_valid_file(tmp_path: Path) -> None:
    cfg = tmp_path / "ok.yaml"
    cfg.write_text("upstreams: {a: {targets: ['http://127.0.0.1:9']}}\nroutes: [{path: /x/*, upstream: a}]\n")
    result = fastgw("check", "-c", str(cfg))
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_reports_every_error_with_its_key_path(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "server: {workers: many, listen: nowhere}\n"
        "upstreams: {bill: {targets: ['http://127.0.0.1:9']}}\n"
        "routes:\n"
        "  - {path: /a, upstream: bill}\n"
        "  - {path: /b, upstream: bilin}\n"
        "  - {path: /a, upstream: bill}\n"
        "  - {path: /c, upstream: bill, colour: red}\n"
    )
    result = fastgw("check", "-c", str(cfg))
    assert result.returncode == 1
    out = result.stdout.decode()
    assert "server.workers:" in out
    assert "server.listen:" in out
    assert "routes[1].upstream: unknown upstream 'bilin'" in out
    assert "routes[2].path: duplicate route" in out
    assert "routes[3].colour: unknown key" in out


def test_run_refuses_an_invalid_config(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("routes: [{path: /x, upstream: nope}]\n")
    result = fastgw("run", "-c", str(cfg))
    assert result.returncode == 1
    assert b"routes[0].upstream: unknown upstream 'nope'" in result.stderr
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["check", "run"])
def test_store_errors_never_show_credentials(tmp_path: Path, command: str) -> None:
    cfg = tmp_path / "store.yaml"
    cfg.write_text("store: 'mysql://gateway:hunter2-secret@db.internal:3306/gw?password=also-secret'\n")
    result = fastgw(command, "-c", str(cfg))
    assert result.returncode == 1
    shown = result.stdout + result.stderr
    assert b"store: unsupported store 'mysql://***@db.internal:3306/gw'" in shown
    assert b"hunter2" not in shown and b"also-secret" not in shown and b"gateway:" not in shown


def test_usage_errors_exit_2() -> None:
    assert fastgw().returncode == 2
    assert fastgw("run").returncode == 2
    assert fastgw("frobnicate").returncode == 2


def test_sign_and_verify_spec_vector() -> None:
    args = [
        "--secret",
        "test-signing-secret",
        "--method",
        "POST",
        "--path",
        "/api/service/svc_1/endpoint/ep_9/invoke?mode=fast",
        "--timestamp",
        "1767225600",
        "--user",
        "usr_abc123",
        "--role",
        "admin",
        "--app",
        "app_main",
        "--plan",
        "pro",
    ]
    body = b'{"hello":"world"}'
    signed = fastgw("sign", *args, stdin=body)
    expected = "v2=09472f5aab971fa69f410e14292bb60c841a7cc614af09dbd4939e7fa331b556"
    assert signed.stdout.decode().strip() == expected
    assert fastgw("verify", *args, "--signature", expected, stdin=body).returncode == 0
    assert fastgw("verify", *args, "--signature", expected, stdin=body + b" ").returncode == 1


def test_demo_serves_its_printed_curl_lines(tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    stderr = (tmp_path / "stderr.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastgw", "demo", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
        cwd=workdir,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = proc.stdout.readline().decode()
            lines.append(line)
            if "Ctrl-C" in line:
                break
        curls = [line.strip() for line in lines if line.strip().startswith("curl ")]
        assert len(curls) >= 4
        for curl in curls:
            argv = shlex.split(curl)
            if "/nowhere" not in curl:
                argv.insert(1, "--fail-with-body")
            result = subprocess.run([*argv, "--max-time", "5"], capture_output=True, timeout=10)
            assert result.returncode == 0, (curl, result.stdout, result.stderr)
            assert result.stdout, curl
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        if proc.stdout is not None:
            proc.stdout.close()
        stderr.close()
    assert b"Traceback" not in (tmp_path / "stderr.log").read_bytes()
    assert list(workdir.iterdir()) == []  # the demo needs no files and leaves none


PRODUCTION_CONFIG = """
server: {{production: {production}}}
signing: {{secret: {signing}}}
auth:
  usage_key: dev-secret-change-me
  tokens: [{{token: short-token, user_id: u}}]
  jwt: {{secret: {jwt}, leeway: 1h}}
upstreams: {{a: {{targets: ['http://127.0.0.1:9']}}}}
routes:
  - {{path: /hook, upstream: a, auth: hmac, hmac: {{secret: changeme}}}}
"""


@pytest.mark.parametrize("command", ["check", "run"])
def test_production_refuses_weak_secrets_without_showing_them(tmp_path: Path, command: str) -> None:
    strong = "s" * 40
    cfg = tmp_path / "prod.yaml"
    cfg.write_text(PRODUCTION_CONFIG.format(production="true", signing="short-signing-secret", jwt=strong))
    result = fastgw(command, "-c", str(cfg))
    assert result.returncode == 1
    shown = (result.stdout + result.stderr).decode()
    for line in (
        "signing.secret: is shorter than 32 bytes (server.production is on)",
        "auth.usage_key: is a well-known placeholder (server.production is on)",
        "auth.tokens[0].token: is shorter than 32 bytes",
        "routes[0].hmac.secret: is a well-known placeholder",
        "auth.jwt.leeway: more than 300 s defeats exp enforcement",
    ):
        assert line in shown, shown
    assert "auth.jwt.secret" not in shown  # 40 bytes, not a placeholder
    for secret in ("short-signing-secret", "dev-secret-change-me", "short-token", "changeme", strong):
        assert secret not in shown
    # The same file without production: accepted.
    cfg.write_text(PRODUCTION_CONFIG.format(production="false", signing="short-signing-secret", jwt=strong))
    assert fastgw("check", "-c", str(cfg)).returncode == 0
