"""The offline verifier of docs/audit.md (docs/audit_verify.py, the same
file the doc points to) against exports the Rust side produced, end to end:
simulated events on a fresh Kafka topic, `tollgate process --folds audit`
chains and signs them into a fresh ClickHouse database (and publishes every
checkpoint to the anchor topic), `tollgate audit export` writes a
whole-chain export and a search export (with inclusion proofs), `tollgate
audit checkpoints export` the anchor; the verifier must accept them, and
reject them after one field of one entry is edited, after lines are dropped
or the file is cut (signed manifest), and, given the anchor, after the
database lost its newest checkpoint and the entries after the one before, a
whole chain, or a checkpoint that covered entries a search export then
called unverifiable yet; it must locate a damaged line (not UTF-8, not a
JSON object) and go on verifying the rest, and report garbage, an empty
file, a cut line, a byte order mark, huge lines or lines of missing or
mistyped members without a traceback; an anchor, export path or
--public-key it cannot use stops it with one line on stderr and exit
status 1. Nothing here imports or copies project code.

`tollgate verify-audit --export` (the same checks in Rust, offline) runs on
every one of these files too, without a configuration or any server, and
must report the same chains, kinds and seqs as the Python verifier (and
stop, with the same exit status, where it stops).

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
import tomllib
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERIFIER = ROOT / "docs" / "audit_verify.py"
SEED = "4f1c0a7e3b9d2c8e5f6a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e"
EVENTS = 400

# The dev stack's addresses are written once, in dev/tollgate.toml.
with open(ROOT / "dev" / "tollgate.toml", "rb") as _f:
    _DEV = tomllib.load(_f)
KAFKA = os.environ.get("TOLLGATE_TEST_KAFKA", _DEV["kafka"]["brokers"])
CLICKHOUSE = os.environ.get("TOLLGATE_TEST_CLICKHOUSE", _DEV["clickhouse"]["url"])
POSTGRES = os.environ.get("TOLLGATE_TEST_POSTGRES", _DEV["postgres"]["url"])


def clickhouse(sql: str) -> str:
    request = urllib.request.Request(CLICKHOUSE, data=sql.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode()


def run_verifier(path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(VERIFIER), str(path), *extra],
                          capture_output=True, text=True, timeout=120, check=False)


def chain_and_words(line: str) -> tuple[str, list[str]]:
    """A finding's chain (printed quoted when empty or not one plain word)
    and the words after it."""
    if line.startswith('"'):
        chain, end = json.JSONDecoder().raw_decode(line)
        return chain, line[end:].split()
    chain, _, rest = line.partition(" ")
    return chain, rest.split()


def python_findings(stdout: str) -> set:
    """What docs/audit_verify.py reported, as comparable tuples."""
    found = set()
    for line in stdout.splitlines():
        words = line.split()
        chain, after = chain_and_words(line)
        if line.startswith("export BROKEN: no usable public key"):
            found.add(("no_key",))
        elif line.startswith("export BROKEN: line "):
            kind = "unexpected_line" if ": unexpected line" in line else "malformed_line"
            found.add((kind, int(words[3].rstrip(":"))))
        elif line.startswith("manifest BROKEN: no header"):
            found.add(("no_manifest",))
        elif line.startswith("manifest BROKEN: its signature") or line.startswith("manifest BROKEN: it is not signed"):
            found.add(("manifest_signature",))
        elif line.startswith("manifest BROKEN: the lines"):
            found.add(("manifest_lines",))
        elif line.startswith("manifest BROKEN: header member"):
            found.add(("manifest_header",))
        elif after[0:3] == ["BROKEN:", "the", "export"]:
            found.add(("manifest_chain", chain))
        elif after[0:3] == ["BROKEN", "at", "seq"]:
            found.add((chain, int(after[3].rstrip(":")), after[4]))
        elif after[:1] == ["OK"]:
            found.add((chain, "ok"))
        else:
            raise AssertionError(f"unknown verifier line: {line}")
    return found


def run_tollgate_verifier(path: Path, *extra: str) -> tuple[int, set, dict]:
    """`tollgate verify-audit --export` with no configuration and no server
    address: (exit status, findings as python_findings gives them, report)."""
    binary = os.environ["TOLLGATE_BIN"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    out = subprocess.run([binary, "verify-audit", "--export", str(path), "--json", *extra], env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    try:
        report = json.loads(out.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(f"verify-audit --export printed no JSON: {out.stdout}{out.stderr}") from e
    found = set()
    for p in report["problems"]:
        if p["kind"] == "manifest_chain":
            found.add(("manifest_chain", p["chain_id"]))
        else:  # a problem with one line names it
            found.add((p["kind"],) if p["line"] is None else (p["kind"], p["line"]))
    for b in report["anchor_breaks"]:
        found.add((b["chain_id"], b["seq"], b["kind"]))
    for c in report["chains"]:
        b = c["first_break"]
        found.add((c["chain_id"], "ok") if b is None else (c["chain_id"], b["seq"], b["kind"]))
    return out.returncode, found, report


def both_verifiers(path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, set]:
    """Run docs/audit_verify.py and `tollgate verify-audit --export` on one
    file; they must agree on the exit status and on every finding."""
    result = run_verifier(path, *extra)
    ours = python_findings(result.stdout)
    status, theirs, report = run_tollgate_verifier(path, *extra)
    assert ours == theirs, f"docs/audit_verify.py: {sorted(ours, key=str)}\nverify-audit --export: {sorted(theirs, key=str)}\n{json.dumps(report, indent=1)[:4000]}"
    assert (status != 0) == (result.returncode != 0), (status, result.returncode, result.stdout)
    return result, ours


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
checkpoint_every = 20
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
    anchor = tmp / "anchor.jsonl"
    out = tollgate("audit", "checkpoints", "export", "--out", str(anchor))
    assert out.returncode == 0, out.stderr
    yield {"whole": whole, "search": search, "public_key": public_key, "tmp": tmp, "org": org,
           "anchor": anchor, "tollgate": tollgate, "name": name, "middle": middle}
    clickhouse(f"DROP DATABASE IF EXISTS {name}")
    subprocess.run(["psql", POSTGRES, "-q", "-c", f'DROP DATABASE IF EXISTS "{name}"'], check=False,
                   capture_output=True)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_doc_points_at_the_verifier():
    doc = (ROOT / "docs" / "audit.md").read_text(encoding="utf-8")
    assert "docs/audit_verify.py" in doc


def test_whole_chain_export_verifies(exports):
    result, _ = both_verifiers(exports["whole"], "--public-key", exports["public_key"])
    assert result.returncode == 0, result.stdout + result.stderr
    rows = lines(exports["whole"])
    entries = sum(1 for r in rows if r["type"] == "entry")
    checked = sum(int(line.split()[2]) for line in result.stdout.splitlines() if " OK " in line)
    assert checked == entries > 0
    assert "BROKEN" not in result.stdout


def test_what_an_ok_does_not_prove_is_said(exports):
    # Without --public-key an export re-signed with a key of its own
    # passes, and without --anchor one cut with its checkpoints does: the
    # verifier says so on stderr, as `verify-audit --export` does (a trial
    # re-signed a whole export and got a silent OK).
    bare = run_verifier(exports["whole"])
    assert bare.returncode == 0, bare.stdout + bare.stderr
    assert "integrity, not origin" in bare.stderr
    assert "no --anchor FILE" in bare.stderr
    held = run_verifier(exports["whole"], "--public-key", exports["public_key"], "--anchor", str(exports["anchor"]))
    assert held.returncode == 0, held.stdout + held.stderr
    assert "warning" not in held.stderr, held.stderr


def test_an_export_without_entries_verifies_nothing(exports):
    # A mistyped team (or a search that found nothing) exports a valid,
    # signed file with no entry: both verifiers say nothing was verified
    # (exit 2), not OK.
    empty = exports["tmp"] / "empty.ndjson"
    out = exports["tollgate"]("audit", "export", "--org", exports["org"], "--team", "no-such-team",
                              "--out", str(empty))
    assert out.returncode == 0, out.stderr
    assert not [r for r in lines(empty) if r["type"] == "entry"]
    result = run_verifier(empty, "--public-key", exports["public_key"])
    assert result.returncode == 2, result.stdout + result.stderr
    assert "nothing verified" in result.stderr
    status, found, report = run_tollgate_verifier(empty, "--public-key", exports["public_key"])
    assert (status, report["verdict"], report["ok"], found) == (2, "nothing_verified", False, set())


def test_search_export_verifies_each_entry_by_proof(exports):
    result, _ = both_verifiers(exports["search"], "--public-key", exports["public_key"])
    assert result.returncode == 0, result.stdout + result.stderr
    rows = lines(exports["search"])
    header = rows[0]
    assert header["scope"] == "search" and header["org"] == exports["org"]
    entries = [r for r in rows if r["type"] == "entry"]
    assert entries and all(r["org_id"] == exports["org"] for r in entries)
    assert all(r["occurred_at_ms"] >= header["from_ms"] for r in entries)
    # The processor stopped gracefully, so every entry is under a checkpoint.
    assert all(r["proof"]["status"] == "verified" and r["proof"]["proof"] for r in entries)
    proven = sum(int(line.split()[2]) for line in result.stdout.splitlines() if " OK " in line)
    assert proven == len(entries)


def test_edited_entry_is_rejected(exports):
    for kind in ("whole", "search"):
        rows = lines(exports[kind])
        victim = next(i for i, r in enumerate(rows) if r["type"] == "entry")
        rows[victim]["model"] = rows[victim]["model"] + "-edited"
        tampered = exports["tmp"] / f"{kind}-tampered.ndjson"
        tampered.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        result, found = both_verifiers(tampered, "--public-key", exports["public_key"])
        assert result.returncode == 1, f"{kind}: {result.stdout}"
        assert (rows[victim]["chain_id"], rows[victim]["seq"], "edited") in found, (kind, found)


def test_wrong_public_key_is_rejected(exports):
    other = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"
    for kind in ("whole", "search"):
        result, found = both_verifiers(exports[kind], "--public-key", other)
        assert result.returncode == 1, result.stdout
        assert ("manifest_signature",) in found, (kind, found)


def test_swapped_entries_and_forged_signature_are_located(exports):
    rows = lines(exports["whole"])
    first = next(r for r in rows if r["type"] == "entry" and r["seq"] == 5)
    chain = first["chain_id"]
    i = next(i for i, r in enumerate(rows) if r.get("chain_id") == chain and r["type"] == "entry" and r["seq"] == 5)
    assert rows[i + 1]["seq"] == 6 and rows[i + 1]["chain_id"] == chain
    swapped = [dict(r) for r in rows]
    swapped[i], swapped[i + 1] = dict(rows[i + 1], seq=5), dict(rows[i], seq=6)
    result, found = both_verifiers(write(exports["tmp"] / "swapped.ndjson", swapped),
                                   "--public-key", exports["public_key"])
    assert result.returncode == 1 and (chain, 5, "reordered") in found, found
    for kind in ("whole", "search"):
        rows = lines(exports[kind])
        j = next(j for j, r in enumerate(rows) if r["type"] == "checkpoint")
        signature = rows[j]["signature"]
        rows[j] = dict(rows[j], signature=signature[:10] + ("b" if signature[10] == "a" else "a") + signature[11:])
        result, found = both_verifiers(write(exports["tmp"] / f"{kind}-forged.ndjson", rows),
                                       "--public-key", exports["public_key"])
        assert result.returncode == 1, result.stdout
        if kind == "whole":
            assert (rows[j]["chain_id"], rows[j]["to_seq"], "bad_signature") in found, found


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_anchor_file_verifies_with_exports(exports):
    anchored = lines(exports["anchor"])
    assert anchored and all(c["type"] == "checkpoint" and c["v"] == 2 for c in anchored)
    for kind in ("whole", "search"):
        result, _ = both_verifiers(exports[kind], "--public-key", exports["public_key"],
                                   "--anchor", str(exports["anchor"]))
        assert result.returncode == 0, f"{kind}: {result.stdout}{result.stderr}"
    # Without --public-key each trusts the export's own key (integrity only).
    result, _ = both_verifiers(exports["whole"])
    assert result.returncode == 0, result.stdout


def test_incomplete_exports_are_rejected(exports):
    """Each chain of these still verifies on its own; the signed manifest tells."""
    rows = lines(exports["whole"])
    chains = sorted({r["chain_id"] for r in rows if r["type"] == "checkpoint"})
    victim = max(chains, key=lambda c: sum(1 for r in rows if r["type"] == "checkpoint" and r["chain_id"] == c))
    cps = [r for r in rows if r["type"] == "checkpoint" and r["chain_id"] == victim]
    assert len(cps) >= 2, "the victim chain needs two checkpoints"
    last, before = cps[-1], cps[-2]
    cases = {
        "dropped chain": [r for r in rows if r.get("chain_id") != victim],
        "dropped last checkpoint": [r for r in rows if r is not last],
        "cut at a checkpoint boundary": [
            r for r in rows if not (r.get("chain_id") == victim and (
                r is last or (r["type"] == "entry" and r["seq"] > before["to_seq"])))],
        "cut file": rows[:-1],
        "unsigned footer": rows[:-1] + [dict(rows[-1], signature=None)],
    }
    for what, tampered in cases.items():
        result, _ = both_verifiers(write(exports["tmp"] / "incomplete.ndjson", tampered),
                                   "--public-key", exports["public_key"])
        assert result.returncode == 1, f"{what}: {result.stdout}"
        assert "manifest BROKEN" in result.stdout or f"{victim} BROKEN" in result.stdout, what
        if what == "unsigned footer":  # named as such, not as a bad signature
            assert "manifest BROKEN: it is not signed" in result.stdout, result.stdout


def no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr


def test_damaged_line_is_located_and_the_rest_verified(exports):
    """A line that is not UTF-8 or not a JSON object (one byte 0xFF, its
    closing brace removed) is reported by its number and skipped: the
    manifest still breaks, the entry it held is missing from its chain,
    every other chain verifies."""
    for kind in ("whole", "search"):
        raw = exports[kind].read_bytes().split(b"\n")
        rows = [json.loads(r) for r in raw if r]
        last = {}
        for r in rows:
            if r["type"] == "entry":
                last[r["chain_id"]] = max(last.get(r["chain_id"], 0), r["seq"])
        i = next(i for i in range(len(rows) // 2, len(rows)) if rows[i]["type"] == "entry"
                 and rows[i]["seq"] < last[rows[i]["chain_id"]])
        victim, line = rows[i], raw[i]
        assert line.endswith(b"}")
        chain_at = line.index(b'"chain_id":"') + len(b'"chain_id":"')
        event_at = line.index(b'"event_json":"') + len(b'"event_json":"')
        for what, damaged_line in (("0xFF in chain_id", line[:chain_at] + b"\xff" + line[chain_at + 1:]),
                                   ("0xFF in the event", line[:event_at] + b"\xff" + line[event_at + 1:]),
                                   ("closing brace removed", line[:-1])):
            damaged = exports["tmp"] / f"{kind}-damaged.ndjson"
            damaged.write_bytes(b"\n".join(raw[:i] + [damaged_line] + raw[i + 1:]))
            result = run_verifier(damaged, "--public-key", exports["public_key"])
            no_traceback(result)
            assert result.returncode == 1, f"{kind}, {what}: {result.stdout}"
            assert f"export BROKEN: line {i + 1}: not a JSON object: " in result.stdout, (kind, what, result.stdout)
            found = python_findings(result.stdout)
            expected = {("malformed_line", i + 1), ("manifest_lines",), ("manifest_chain", victim["chain_id"])}
            if kind == "whole":  # the chain goes on after the entry it lost
                expected.add((victim["chain_id"], victim["seq"], "missing"))
                assert f"{victim['chain_id']} BROKEN at seq {victim['seq']}: missing" in result.stdout
            assert {f for f in found if f[-1] != "ok"} == expected, (kind, what, found)
            ok = {r["chain_id"] for r in rows if "chain_id" in r} - ({victim["chain_id"]} if kind == "whole" else set())
            assert {f[0] for f in found if f[-1] == "ok"} == ok, (kind, what, found)
            status, theirs, report = run_tollgate_verifier(damaged, "--public-key", exports["public_key"])
            assert status == 1, report
            if what == "0xFF in the event":
                # verify-audit --export reads only type, chain_id, seq and
                # entry_hash when it counts lines for the manifest, so it
                # counts this line, and finds it damaged (at the same line)
                # only when it reads the entry: no manifest_chain finding.
                theirs.add(("manifest_chain", victim["chain_id"]))
            assert theirs == found, (kind, what, json.dumps(report["problems"], indent=1))


def test_files_that_are_no_export_are_reported_not_crashed_on(exports):
    """Garbage, an empty file, a file cut inside a line (no newline at the
    end), a UTF-8 byte order mark, huge lines: each is a finding and exit
    status 1, in both verifiers alike, never a traceback."""
    whole = exports["whole"].read_bytes()
    raw = whole.split(b"\n")
    middle = len(whole) // 2
    cut = whole[:whole.index(b"\n", middle) - 5]  # inside the line at the middle
    huge = [b'{"type":"entry","model":"' + b"x" * (16 << 20), b"[" * 100_000]
    cases = {
        "garbage": (b"\xff\xfe\x00 garbage\n}{][\n\x80\x81 not json",
                    {("malformed_line", 1), ("malformed_line", 2), ("malformed_line", 3), ("no_manifest",)}),
        "empty": (b"", {("no_manifest",)}),
        "cut inside a line": (cut, {("malformed_line", cut.count(b"\n") + 1), ("no_manifest",)}),
        "byte order mark": (b"\xef\xbb\xbf" + whole, {("malformed_line", 1), ("no_manifest",)}),
        "huge lines": (b"\n".join(raw[:2] + huge + raw[2:]),
                       {("malformed_line", 3), ("malformed_line", 4), ("manifest_lines",)}),
    }
    for what, (data, expected) in cases.items():
        path = exports["tmp"] / "no-export.ndjson"
        path.write_bytes(data)
        result, found = both_verifiers(path, "--public-key", exports["public_key"])
        no_traceback(result)
        assert result.returncode == 1, f"{what}: {result.stdout}"
        assert expected <= found, (what, found)


def drop_or_set(row: dict, members: dict) -> dict:
    """row with members set, those given as ... dropped."""
    row = dict(row)
    for k, v in members.items():
        if v is ...:
            row.pop(k, None)
        else:
            row[k] = v
    return row


def test_lines_missing_or_mistyping_members_are_findings(exports):
    """A line that is a JSON object but not one of its type (a member
    missing, null or of the wrong type) is a finding naming its line, never
    a traceback: an entry (verify-audit --export words it `an entry needs
    chain_id, seq and entry_hash`, `not an entry: ...`), a line of no or a
    mistyped type, a checkpoint, the header's members, the footer and its
    manifest, a search entry's proof. Both verifiers report the same
    findings and fail (a mistyped header key, given no --public-key, is
    `no_key` alone)."""
    key = ("--public-key", exports["public_key"])
    for kind in ("whole", "search"):
        raw = exports[kind].read_bytes().split(b"\n")[:-1]
        rows = [json.loads(r) for r in raw]
        e = next(i for i, r in enumerate(rows) if r["type"] == "entry")
        c = next(i for i, r in enumerate(rows) if r["type"] == "checkpoint")
        last = len(rows) - 1
        manifest = rows[last]["manifest"]

        def line(i, text: bytes) -> bytes:
            return b"\n".join(raw[:i] + [text] + raw[i + 1:]) + b"\n"

        def edit(i, **members) -> bytes:
            return line(i, json.dumps(drop_or_set(rows[i], members)).encode())

        malformed_e, malformed_c = {("malformed_line", e + 1)}, {("malformed_line", c + 1)}
        cases = {
            "entry of no members": (line(e, b'{"type":"entry"}'), malformed_e,
                                    "an entry needs chain_id, seq and entry_hash"),
            "entry of mistyped chain_id and seq": (line(e, b'{"type":"entry","chain_id":5,"seq":"x"}'), malformed_e,
                                                   "not a JSON object: invalid type: integer `5`, expected a string"),
            "entry of null entry_hash": (edit(e, entry_hash=None), malformed_e, "an entry needs chain_id"),
            "entry without model": (edit(e, model=...), malformed_e, "not an entry: missing field `model`"),
            "entry of negative seq": (edit(e, seq=-1), malformed_e, "invalid value: integer `-1`, expected u64"),
            "entry of a string kafka_offset": (edit(e, kafka_offset="7"), malformed_e, "not an entry: invalid type"),
            "entry of null v": (edit(e, v=None), malformed_e, "not an entry: invalid type: null, expected u8"),
            "entry of a member given twice": (line(e, raw[e][:-1] + b',"model":"x"}'), malformed_e,
                                              "not an entry: duplicate field `model`"),
            "line of a number for type": (line(e, b'{"type":5}'), malformed_e, "not a JSON object: invalid type"),
            "line of no type": (line(e, b'{"chain_id":"x"}'), {("unexpected_line", e + 1)}, "unexpected line"),
            "checkpoint without head_hash": (edit(c, head_hash=...), malformed_c,
                                             "not a checkpoint: missing field `head_hash`"),
            "checkpoint of numbers for hashes": (edit(c, consistency=[1]), malformed_c, "not a checkpoint: invalid type"),
            "header of mistyped members": (edit(0, exported_at_ms="x", org=5, scope=[1]),
                                           {("manifest_header",), ("manifest_lines",)}, "header member org"),
            "footer without manifest": (edit(last, manifest=...), {("no_manifest",)}, None),
            "manifest not an object": (edit(last, manifest=[manifest]), {("no_manifest",)}, None),
            "manifest of no chain list": (edit(last, manifest=dict(manifest, chains={})),
                                          {("manifest_signature",)} | {("manifest_chain", m["chain_id"])
                                                                       for m in manifest["chains"]}, None),
            "manifest of mistyped chains": (edit(last, manifest=dict(manifest, chains=[5, {"chain_id": 7}] + [
                dict(m, entries=str(m["entries"])) for m in manifest["chains"]])),
                {("manifest_signature",)} | {("manifest_chain", m["chain_id"]) for m in manifest["chains"]}, None),
            "footer of a mistyped signature": (edit(last, signature=5), {("manifest_signature",)}, None),
        }
        if kind == "search":
            entry = rows[e]
            to_seq = entry["proof"]["proof"]["checkpoint_to_seq"]
            proof = lambda **m: {"status": "verified", "proof": m}  # noqa: E731
            cases.update({
                "proof of a number": (edit(e, proof=5), malformed_e, "not a search entry's proof: invalid type"),
                "proof without path": (edit(e, proof=proof(checkpoint_to_seq=to_seq)), malformed_e,
                                       "not a search entry's proof: missing field `path`"),
                "proof path of numbers": (edit(e, proof=proof(checkpoint_to_seq=to_seq, path=[1])), malformed_e,
                                          "not a search entry's proof: invalid type"),
                "proof path not hex": (edit(e, proof=proof(checkpoint_to_seq=to_seq, path=["zz"])),
                                       {(entry["chain_id"], entry["seq"], "checkpoint_mismatch")}, None),
            })
        for what, (data, expected, words) in cases.items():
            path = exports["tmp"] / "mistyped.ndjson"
            path.write_bytes(data)
            result, found = both_verifiers(path, *key)
            no_traceback(result)
            assert result.returncode == 1, f"{kind}, {what}: {result.stdout}"
            assert expected <= found, (kind, what, found)
            assert words is None or words in result.stdout, (kind, what, result.stdout)
        # No trusted key and a mistyped one in the header: nothing can be proven.
        path = exports["tmp"] / "mistyped-key.ndjson"
        path.write_bytes(edit(0, public_key=5))
        result, found = both_verifiers(path)
        no_traceback(result)
        assert (result.returncode, found) == (1, {("no_key",)}), result.stdout


def run_tollgate_as_is(*args: str) -> subprocess.CompletedProcess:
    """`tollgate verify-audit ARGS` with no configuration and no server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    return subprocess.run([os.environ["TOLLGATE_BIN"], "verify-audit", *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def stops(result: subprocess.CompletedProcess, *expected: str) -> None:
    """docs/audit_verify.py could not start: one line on stderr naming what
    and why, nothing on stdout, exit status 2, a usage error (as
    verify-audit stops: 1 is kept for a finding)."""
    no_traceback(result)
    said = result.stderr.strip().splitlines()
    assert (result.returncode, result.stdout) == (2, ""), (result.returncode, result.stdout, result.stderr)
    assert len(said) == 1 and said[0].startswith("audit_verify.py: error: "), result.stderr
    assert all(e in said[0] for e in expected), (expected, said[0])


def tollgate_stops(*args: str) -> None:
    """verify-audit could not start: exit status 2 (a usage error), the
    error on stderr, and with --json an object saying so on stdout."""
    out = run_tollgate_as_is(*args, "--json")
    assert out.returncode == 2, (args, out.returncode, out.stdout, out.stderr)
    report = json.loads(out.stdout)
    assert (report["ok"], report["verdict"], report["exit_status"]) == (False, "usage_error", 2), report
    assert out.stderr.startswith("Error: "), out.stderr


def test_an_unusable_anchor_stops_both_verifiers(exports):
    """An anchor file that does not exist, is not UTF-8, or holds a line
    that is not a checkpoint (not JSON, not an object of type checkpoint, a
    member missing or mistyped) verifies nothing: both stop with an error
    naming the file (and the line), exit status 1."""
    key = ("--public-key", exports["public_key"])
    first, *rest = exports["anchor"].read_bytes().split(b"\n")
    checkpoint = json.loads(first)
    cases = {
        "no such file": (None, "No such file or directory"),
        "not UTF-8": (first + b"\n\xff\xfe\n", "not UTF-8"),
        "not JSON": (b"nope\n", "line 1: not JSON"),
        "NaN": (first[:-1] + b',"x":NaN}\n', "line 1: not JSON"),
        "an array": (b"[1]\n", 'line 1: not a checkpoint line (`type` is not "checkpoint")'),
        "an entry": (json.dumps(dict(checkpoint, type="entry")).encode(), "line 1: not a checkpoint line"),
        "a member missing": (first + b"\n" + json.dumps(drop_or_set(checkpoint, {"signature": ...})).encode(),
                             "line 2: not a checkpoint: missing field `signature`"),
        "a member mistyped": (first + b"\n\n" + json.dumps(dict(checkpoint, to_seq="20")).encode(),
                              "line 3: not a checkpoint: invalid type: string \"20\", expected u64"),
        "a member null": (json.dumps(dict(checkpoint, v=None)).encode(), "line 1: not a checkpoint: invalid type: null"),
    }
    for what, (data, reason) in cases.items():
        anchor = exports["tmp"] / "unusable-anchor.jsonl"
        anchor.unlink(missing_ok=True)
        if data is not None:
            anchor.write_bytes(data)
        for kind in ("whole", "search"):
            result = run_verifier(exports[kind], *key, "--anchor", str(anchor))
            stops(result, "--anchor", str(anchor), reason)
            tollgate_stops("--export", str(exports[kind]), *key, "--anchor", str(anchor))


def test_an_unreadable_export_stops_both_verifiers(exports):
    """An export path that does not exist or is a directory: an error
    naming it, exit status 1, in both verifiers."""
    key = ("--public-key", exports["public_key"])
    for path, reason in ((exports["tmp"] / "no-such-export.ndjson", "No such file or directory"),
                         (exports["tmp"], "Is a directory")):
        stops(run_verifier(path, *key), "cannot read the export", str(path), reason)
        tollgate_stops("--export", str(path), *key)
        # The anchor is read first (as verify-audit reads it), then the export.
        stops(run_verifier(path, *key, "--anchor", str(exports["anchor"])), str(path), reason)


def test_an_unusable_public_key_stops_both_verifiers(exports):
    """--public-key that is not 64 hex characters (too short, too long,
    not hex, empty) or not an Ed25519 public key (64 hex characters but no
    point of the curve): an error, exit status 1, in both verifiers. The
    key in capitals and with surrounding blanks is the same key to both."""
    good = exports["public_key"]
    not_a_point = "02" + "00" * 31
    for value, reason in ((good[:63], "not 64 hex characters"), (good + "0", "not 64 hex characters"),
                          ("zz" * 32, "not 64 hex characters"), ("", "not 64 hex characters"),
                          ("0x" + good[2:], "not 64 hex characters"),
                          (not_a_point, "no usable Ed25519 public key")):
        stops(run_verifier(exports["whole"], "--public-key", value), "--public-key", reason)
        tollgate_stops("--export", str(exports["whole"]), "--public-key", value)
    result, _ = both_verifiers(exports["whole"], "--public-key", f" {good.upper()}\t")
    assert result.returncode == 0, result.stdout + result.stderr


def test_usage_errors_exit_2_without_traceback(exports):
    """No export, an option without its value, an unknown option: a usage
    message and exit status 2 (as verify-audit's argument parser exits)."""
    for args in ((), (str(exports["whole"]), "--anchor"), (str(exports["whole"]), "--public-key"),
                 (str(exports["whole"]), "--bogus")):
        result = subprocess.run([sys.executable, str(VERIFIER), *args], capture_output=True, text=True,
                                timeout=60, check=False)
        no_traceback(result)
        assert (result.returncode, result.stdout) == (2, ""), (args, result.returncode, result.stdout)
        assert "usage: audit_verify.py" in result.stderr, result.stderr
    out = run_tollgate_as_is("--export", str(exports["whole"]), "--anchor")
    assert out.returncode == 2, out.stderr


def test_forged_consistency_proof_in_the_anchor_is_rejected(exports):
    anchored = lines(exports["anchor"])
    victim = next(i for i, c in enumerate(anchored) if c["consistency"])
    anchored[victim]["consistency"][0] = "00" * 32
    forged = write(exports["tmp"] / "forged-anchor.jsonl", anchored)
    result, _ = both_verifiers(exports["search"], "--public-key", exports["public_key"], "--anchor", str(forged))
    assert result.returncode == 1, result.stdout
    assert "checkpoint_mismatch" in result.stdout


def wait_for(sql: str, want: int) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        if int(clickhouse(sql).strip() or 0) == want:
            return
        time.sleep(0.2)
    raise AssertionError(f"mutation not applied: {sql}")


def test_erasure_keeps_the_chain_verifiable_and_unrecorded_erasure_is_caught(exports):
    """Erase one person (`tollgate erase`, the audit fold running to chain
    the records), export the org: both verifiers accept every chain, no
    entry holds the person's id, and an erasure the chain does not record,
    or an erased entry filled in again, is located."""
    db, org, tollgate = exports["name"], exports["org"], exports["tollgate"]
    # A person whose entries are outside the three chains the last test
    # tampers with (those with the most checkpoints).
    ranked = clickhouse(f"SELECT chain_id FROM {db}.audit_checkpoints WHERE chain_id IN "
                        f"(SELECT chain_id FROM {db}.audit_chain WHERE org_id = '{org}') "
                        "GROUP BY chain_id HAVING count() >= 2 ORDER BY count() DESC, chain_id LIMIT 3 FORMAT TSV").split()
    people = [json.loads(line) for line in clickhouse(
        f"SELECT user_id, groupUniqArray(chain_id) AS chains FROM {db}.audit_chain WHERE org_id = '{org}' "
        "AND user_id != '' GROUP BY user_id ORDER BY count() DESC, user_id FORMAT JSONEachRow").splitlines()]
    user = next((p["user_id"] for p in people if not set(p["chains"]) & set(ranked)), "")
    assert user, f"the simulated events carry a user outside the chains {ranked}: {people}"
    held = int(clickhouse(f"SELECT count() FROM {db}.audit_chain WHERE org_id = '{org}' AND user_id = '{user}'"))
    config = exports["tmp"] / "tollgate.toml"
    log = open(exports["tmp"] / "process-erase.log", "w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    process = subprocess.Popen([os.environ["TOLLGATE_BIN"], "--config", str(config), "process", "--folds", "audit"],
                               env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        out = tollgate("erase", "--org", org, "--user", user, "--reason", "ticket 7", "--json")
        assert out.returncode == 0, out.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    receipt = json.loads(out.stdout)
    assert receipt["tables"]["audit_chain"] == {"before": held, "after": 0}, receipt["tables"]
    assert sum(len(c["erased_seqs"]) for c in receipt["chains"]) == held
    assert receipt["kept_v1_entries"] == []
    whole = exports["tmp"] / "whole-erased.ndjson"
    out = tollgate("audit", "export", "--org", org, "--out", str(whole))
    assert out.returncode == 0, out.stderr
    result, found = both_verifiers(whole, "--public-key", exports["public_key"])
    assert result.returncode == 0, result.stdout
    rows = lines(whole)
    assert not [r for r in rows if r.get("user_id") == user or user in r.get("event_json", "")]
    erased = [r for r in rows if r["type"] == "entry" and r["v"] == 2 and r["salt"] == ""]
    assert len(erased) == held and all(r["event_json"] == "" for r in erased)
    records = [r for r in rows if r["type"] == "entry" and r["kind"] == "admin.personal_data.erased"]
    assert {r["chain_id"] for r in records} == {c["chain_id"] for c in receipt["chains"]}
    assert all(user not in r["event_json"] and "ticket 7" in r["event_json"] for r in records)
    # An entry erased without a record; an erased entry filled in again.
    chain = records[0]["chain_id"]
    victim = next(i for i, r in enumerate(rows) if r["type"] == "entry" and r["chain_id"] == chain
                  and r["salt"] != "" and r["kind"] != "admin.personal_data.erased")
    refilled = next(i for i, r in enumerate(rows) if r["type"] == "entry" and r["v"] == 2 and r["salt"] == "")
    for i, edit, kind in ((victim, {"user_id": "", "event_json": "", "salt": ""}, "unrecorded_erasure"),
                          (refilled, {"user_id": user}, "edited")):
        copy = [dict(r, **edit) if j == i else r for j, r in enumerate(rows)]
        tampered = exports["tmp"] / f"erased-{kind}.ndjson"
        tampered.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in copy), encoding="utf-8")
        result, found = both_verifiers(tampered, "--public-key", exports["public_key"])
        assert result.returncode == 1
        assert (copy[i]["chain_id"], copy[i]["seq"], kind) in found, (kind, found)


def test_database_tampering_is_caught_only_with_the_anchor(exports):
    """Runs last: it rewrites the database the other tests exported from."""
    db, org, tollgate = exports["name"], exports["org"], exports["tollgate"]
    counts = clickhouse(f"SELECT chain_id, count() AS n FROM {db}.audit_checkpoints WHERE chain_id IN "
                        f"(SELECT chain_id FROM {db}.audit_chain WHERE org_id = '{org}') "
                        # Not a chain that recorded the erasure test's erasure:
                        # cutting its tail would cut the record, and the
                        # verifiers would rightly report unrecorded_erasure.
                        f"AND chain_id NOT IN (SELECT chain_id FROM {db}.audit_chain "
                        "WHERE kind = 'admin.personal_data.erased') "
                        "GROUP BY chain_id HAVING n >= 2 ORDER BY n DESC, chain_id FORMAT TSV").split("\n")
    chains = [line.split("\t")[0] for line in counts if line]
    assert len(chains) >= 3, f"need three chains with two checkpoints: {counts}"
    tail, dropped, hidden = chains[:3]

    def newest(chain):
        return [int(x) for x in clickhouse(
            f"SELECT to_seq FROM {db}.audit_checkpoints WHERE chain_id = '{chain}' ORDER BY to_seq DESC LIMIT 2 FORMAT TSV"
        ).split()]

    (tail_last, tail_before), (hidden_last, hidden_before) = newest(tail), newest(hidden)
    # tail: newest checkpoint deleted and the entries after the one before.
    gone = (f"(chain_id = '{tail}' AND to_seq = {tail_last}) OR (chain_id = '{hidden}' AND to_seq = {hidden_last})"
            f" OR chain_id = '{dropped}'")
    clickhouse(f"ALTER TABLE {db}.audit_checkpoints DELETE WHERE {gone}")
    clickhouse(f"ALTER TABLE {db}.audit_chain DELETE WHERE chain_id = '{tail}' AND seq > {tail_before}")
    # dropped: the whole chain (its checkpoints went above).
    clickhouse(f"ALTER TABLE {db}.audit_chain DELETE WHERE chain_id = '{dropped}'")
    wait_for(f"SELECT count() FROM {db}.audit_checkpoints WHERE {gone}", 0)
    wait_for(f"SELECT count() FROM {db}.audit_chain WHERE chain_id = '{tail}' AND seq > {tail_before}", 0)
    wait_for(f"SELECT count() FROM {db}.audit_chain WHERE chain_id = '{dropped}'", 0)
    whole = exports["tmp"] / "whole-after.ndjson"
    out = tollgate("audit", "export", "--org", org, "--out", str(whole))
    assert out.returncode == 0, out.stderr
    search = exports["tmp"] / "search-after.ndjson"
    out = tollgate("audit", "export", "--org", org, "--from", str(exports["middle"]), "--out", str(search))
    assert out.returncode == 0, out.stderr
    key = ("--public-key", exports["public_key"])
    # Without the anchor the exports look complete (that is the attack).
    assert both_verifiers(whole, *key)[0].returncode == 0
    assert both_verifiers(search, *key)[0].returncode == 0
    result, _ = both_verifiers(whole, *key, "--anchor", str(exports["anchor"]))
    assert result.returncode == 1, result.stdout
    assert f"{tail} BROKEN at seq {tail_before + 1}: truncated" in result.stdout, result.stdout
    assert f"{dropped} BROKEN at seq 1: truncated" in result.stdout, result.stdout
    # verify-audit (reading the anchor topic) reports the same kind and seq
    # for every chain as this verifier given the exported anchor file.
    out = tollgate("verify-audit", "--org", org, "--json")
    assert out.returncode == 1, out.stdout + out.stderr
    ours = {}
    for line in result.stdout.splitlines():
        words = line.split()
        if len(words) >= 2 and words[1] == "OK":
            ours[words[0]] = None
        elif len(words) >= 6 and words[1:4] == ["BROKEN", "at", "seq"]:
            ours[words[0]] = (int(words[4].rstrip(":")), words[5])
    theirs = {c["chain_id"]: None if c["first_break"] is None else (c["first_break"]["seq"], c["first_break"]["kind"])
              for c in json.loads(out.stdout)["chains"]}
    assert ours == theirs, (result.stdout, out.stdout)
    # hidden kept its entries: its newest entries are now "unverifiable
    # yet" in a search, which the anchored checkpoint contradicts.
    result, _ = both_verifiers(search, *key, "--anchor", str(exports["anchor"]))
    assert result.returncode == 1, result.stdout
    assert f"{hidden} BROKEN at seq" in result.stdout and "unproven" in result.stdout, result.stdout
    assert hidden_before < hidden_last
