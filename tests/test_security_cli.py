"""The security commands of the CLI, as a user runs them (one line errors, exit codes)."""

from __future__ import annotations

import json
import subprocess
import sys

import pageq
from conftest import seal_all


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pageq", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_principals_tokens_acl_audit_and_keys(app: pageq.App, env: dict[str, str]) -> None:
    assert cli(env, "principals", "create", "mailer").returncode == 0
    assert cli(env, "acl", "grant", "mailer", "enqueue", "--task", "email.*").returncode == 0
    assert cli(env, "acl", "grant", "mailer", "enqueue", "--task", "email.bulk", "--deny").returncode == 0
    made = cli(env, "tokens", "create", "mailer", "--json")
    token = json.loads(made.stdout)["token"]
    assert token.startswith("pq_")
    listed = cli(env, "tokens", "list")
    assert listed.returncode == 0 and token not in listed.stdout and token[:7] in listed.stdout

    allowed = cli(env, "acl", "check", "mailer", "enqueue", "email.send")
    assert allowed.returncode == 0 and "allowed by rule: allow enqueue" in allowed.stdout
    denied = cli(env, "acl", "check", "mailer", "enqueue", "email.bulk")
    assert denied.returncode == 1 and "denied by rule: deny enqueue" in denied.stdout
    bad = cli(env, "acl", "grant", "mailer", "fly", "--task", "x")
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith(
        "error: unknown action 'fly'"
    )

    as_mailer = {**env, "PAGEQ_TOKEN": token}
    refused = cli(as_mailer, "principals", "list")
    assert refused.returncode == 1 and "may not manage" in refused.stderr

    assert cli(env, "audit", "seal").returncode == 0
    seal_all(app)
    verified = cli(env, "audit", "verify")
    assert (
        verified.returncode == 0
        and verified.stdout.startswith("ok: ")
        and "0 rows unsealed" in verified.stdout
    )
    rows = json.loads(cli(env, "audit", "list", "--action", "grant", "--json").stdout)
    assert [r["action"] for r in rows] == ["grant.add", "grant.add"]
    assert cli(env, "audit", "level", "actions").stdout.strip() == "actions"

    key = cli(env, "keys", "generate", "k1").stdout.strip()
    assert key.startswith("k1:") and len(key) > 40
    rotated = cli({**env, "PAGEQ_KEYRING": key}, "keys", "rotate")
    assert rotated.returncode == 0 and "rewritten: 0" in rotated.stdout
    missing = cli(env, "keys", "rotate")
    assert missing.returncode == 1 and "no keyring configured" in missing.stderr
