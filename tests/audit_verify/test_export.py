"""The offline verifier of docs/audit.md (docs/audit_verify.py, the same
file the doc points to) against exports the Rust side produced, end to end:
simulated events on a fresh Kafka topic, `tollgate process --folds audit`
chains and signs them into a fresh ClickHouse database, `tollgate audit
export` writes a whole-chain export and a search export (with inclusion
proofs); the verifier must accept both, and reject them after one field of
one entry is edited. Nothing here imports or copies project code.

Needs the dev stack (Kafka, ClickHouse, PostgreSQL; addresses from
TOLLGATE_TEST_KAFKA / _CLICKHOUSE / _POSTGRES) and TOLLGATE_BIN.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERIFIER = ROOT / "docs" / "audit_verify.py"
SEED = "4f1c0a7e3b9d2c8e5f6a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e"
EVENTS = 400

KAFKA = os.environ.get("TOLLGATE_TEST_KAFKA", "127.0.0.1:9092")
CLICKHOUSE = os.environ.get("TOLLGATE_TEST_CLICKHOUSE", "http://127.0.0.1:8123")
POSTGRES = os.environ.get("TOLLGATE_TEST_POSTGRES", "postgres://tollgate:tollgate@127.0.0.1:5433/tollgate")


def clickhouse(sql: str) -> str:
    request = urllib.request.Request(CLICKHOUSE, data=sql.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode()


def run_verifier(path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(VERIFIER), str(path), *extra],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    binary = os.environ.get("TOLLGATE_BIN")
    if not binary or not os.access(binary, os.X_OK):
        pytest.fail("TOLLGATE_BIN must point at the built tollgate binary (dev/test sets it)")
    name = f"t_pyaudit_{secrets.token_hex(4)}"
    tmp = tmp_path_factory.mktemp("audit")
    admin_db = POSTGRES.rsplit("/", 1)
    subprocess.run(["psql", POSTGRES, "-q", "-c", f'CREATE DATABASE "{name}"'], check=True,
                   capture_output=True)
    config = tmp / "tollgate.toml"
    config.write_text(f"""[kafka]
brokers = "{KAFKA}"
events_topic = "{name}.events"
dlq_topic = "{name}.events.dlq"
decisions_topic = "{name}.decisions"
audit_checkpoints_topic = "{name}.audit.checkpoints"

[postgres]
url = "{admin_db[0]}/{name}"

[clickhouse]
url = "{CLICKHOUSE}"
database = "{name}"

[processor]
group_id = "{name}"
batch_max_wait_ms = 200

[audit]
group_id = "{name}-audit"
signing_key = "{SEED}"
checkpoint_every = 50
checkpoint_interval_secs = 3600
""")
    # TOLLGATE_* variables are configuration overrides for the binary.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}

    def tollgate(*args, **kwargs):
        return subprocess.run([binary, "--config", str(config), *args], env=env,
                              capture_output=True, text=True, timeout=300, **kwargs)

    out = tollgate("migrate")
    assert out.returncode == 0, out.stderr
    out = tollgate("simulate", "--direct-kafka", "--events", str(EVENTS), "--span-minutes", "120", "--seed", "7")
    assert out.returncode == 0, out.stderr
    log = open(tmp / "process.log", "w")
    process = subprocess.Popen([binary, "--config", str(config), "process", "--folds", "audit"],
                               env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            count = int(clickhouse(f"SELECT count() FROM {name}.audit_chain").strip() or 0)
            if count >= EVENTS:
                break
            time.sleep(0.5)
        assert count == EVENTS, f"{count} of {EVENTS} entries chained; see {tmp / 'process.log'}"
    finally:
        process.send_signal(signal.SIGTERM)  # the fold checkpoints open segments on shutdown
        process.wait(timeout=60)
    org = clickhouse(f"SELECT org_id FROM {name}.audit_chain GROUP BY org_id ORDER BY count() DESC LIMIT 1").strip()
    whole = tmp / "whole.ndjson"
    out = tollgate("audit", "export", "--org", org, "--out", str(whole))
    assert out.returncode == 0, out.stderr
    # A search: the org's entries in the second half of the simulated window.
    middle = int(clickhouse(f"SELECT toUInt64(avg(occurred_at_ms)) FROM {name}.audit_chain").strip())
    search = tmp / "search.ndjson"
    out = tollgate("audit", "export", "--org", org, "--from", str(middle), "--out", str(search))
    assert out.returncode == 0, out.stderr
    public_key = tollgate("audit", "public-key").stdout.strip()
    yield {"whole": whole, "search": search, "public_key": public_key, "tmp": tmp, "org": org}
    clickhouse(f"DROP DATABASE IF EXISTS {name}")
    subprocess.run(["psql", POSTGRES, "-q", "-c", f'DROP DATABASE IF EXISTS "{name}"'], check=False,
                   capture_output=True)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_doc_points_at_the_verifier():
    doc = (ROOT / "docs" / "audit.md").read_text(encoding="utf-8")
    assert "docs/audit_verify.py" in doc


def test_whole_chain_export_verifies(exports):
    result = run_verifier(exports["whole"], "--public-key", exports["public_key"])
    assert result.returncode == 0, result.stdout + result.stderr
    rows = lines(exports["whole"])
    entries = sum(1 for r in rows if r["type"] == "entry")
    checked = sum(int(line.split()[2]) for line in result.stdout.splitlines() if " OK " in line)
    assert checked == entries > 0
    assert "BROKEN" not in result.stdout


def test_search_export_verifies_each_entry_by_proof(exports):
    result = run_verifier(exports["search"], "--public-key", exports["public_key"])
    assert result.returncode == 0, result.stdout + result.stderr
    rows = lines(exports["search"])
    header = rows[0]
    assert header["scope"] == "search" and header["org"] == exports["org"]
    entries = [r for r in rows if r["type"] == "entry"]
    assert entries and all(r["org_id"] == exports["org"] for r in entries)
    assert all(r["occurred_at_ms"] >= header["from_ms"] for r in entries)
    # The processor stopped gracefully, so every entry is under a checkpoint.
    assert all(r["status"] == "verified" and r["proof"] for r in entries)
    proven = sum(int(line.split()[2]) for line in result.stdout.splitlines() if " OK " in line)
    assert proven == len(entries)


def test_edited_entry_is_rejected(exports):
    for kind in ("whole", "search"):
        rows = lines(exports[kind])
        victim = next(i for i, r in enumerate(rows) if r["type"] == "entry")
        rows[victim]["model"] = rows[victim]["model"] + "-edited"
        tampered = exports["tmp"] / f"{kind}-tampered.ndjson"
        tampered.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        result = run_verifier(tampered, "--public-key", exports["public_key"])
        assert result.returncode == 1, f"{kind}: {result.stdout}"
        assert "BROKEN" in result.stdout


def test_wrong_public_key_is_rejected(exports):
    other = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"
    result = run_verifier(exports["search"], "--public-key", other)
    assert result.returncode == 1, result.stdout
