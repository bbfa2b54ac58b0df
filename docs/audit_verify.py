"""Verify a Tollgate audit export (NDJSON) offline, from docs/audit.md alone.

    python3 audit_verify.py export.ndjson [--public-key HEX]

Standard library, plus the `cryptography` package for Ed25519 signatures
(without it signatures are skipped and the output says so). Trust: pass the
public key you obtained independently (GET /api/v1/audit/public-key, your
key custodian) with --public-key; otherwise the key in the export's header
is used, which proves integrity but not who signed.

A whole-chain export (`tollgate audit export --org ...`) is checked link by
link from seq 1, and every checkpoint against the recomputed entries. A
search export (header "scope": "search") holds single entries: each is
re-hashed from its stored prev_hash and content, and its RFC 6962 inclusion
proof is checked against the signed checkpoint it names; entries that no
checkpoint covers yet are reported as unverifiable-yet, not as failures.
Exit status 0 when nothing is broken, 1 otherwise.
"""

import hashlib
import json
import sys
from collections import defaultdict


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256(data):
    return hashlib.sha256(data).digest()


def mth(leaves):  # RFC 6962 Merkle tree hash of raw 32-byte entry hashes
    if len(leaves) == 1:
        return sha256(b"\x00" + leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))


def root_from_proof(entry_hash, index, size, path):  # RFC 9162 section 2.1.3.2
    if index >= size:
        return None
    fn, sn, r = index, size - 1, sha256(b"\x00" + entry_hash)
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = sha256(b"\x01" + p + r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = sha256(b"\x01" + r + p)
        fn, sn = fn >> 1, sn >> 1
    return r if sn == 0 else None


FIELDS = ["api_key_id", "chain_id", "decision", "decision_reason", "event_id", "kafka_offset",
          "kafka_partition", "kind", "model", "occurred_at_ms", "org_id", "outcome",
          "provider", "seq", "team_id", "user_id"]
CHECKPOINT_FIELDS = ["chain_id", "created_at_ms", "from_seq", "head_hash", "merkle_root",
                     "public_key", "to_seq"]


def entry_hash(row, prev):
    entry = {f: row[f] for f in FIELDS}
    entry["event"], entry["v"] = row["event_json"], 1
    return sha256(prev + canonical(entry).encode("utf-8"))


def main(argv):
    path = argv[1]
    trusted = argv[argv.index("--public-key") + 1] if "--public-key" in argv else None
    header, entries, checkpoints = {}, defaultdict(list), defaultdict(list)
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["type"] == "header":
                header = row
            elif row["type"] == "entry":
                entries[row["chain_id"]].append(row)
            elif row["type"] == "checkpoint":
                checkpoints[row["chain_id"]].append(row)
    key = trusted or header.get("public_key")
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        verifier = Ed25519PublicKey.from_public_bytes(bytes.fromhex(key)) if key else None
    except ImportError:
        verifier = None
    if verifier is None:
        print("warning: signatures not checked (no public key, or no `cryptography` package)")

    def signature_ok(cp):
        if verifier is None:
            return True
        message = {k: cp[k] for k in CHECKPOINT_FIELDS}
        message.update(type="tollgate.audit.checkpoint", v=1)
        try:
            verifier.verify(bytes.fromhex(cp["signature"]), canonical(message).encode("utf-8"))
            return True
        except Exception:  # noqa: BLE001 - any failure is a bad signature
            return False

    ok = True
    search = header.get("scope") == "search"
    for chain, rows in sorted(entries.items()):
        broken, proven, pending = None, 0, 0
        if search:
            by_to_seq = {cp["to_seq"]: cp for cp in checkpoints[chain]}
            for row in rows:
                h = entry_hash(row, bytes.fromhex(row["prev_hash"]))
                if h.hex() != row["entry_hash"]:
                    broken = f"entry {row['seq']}: content does not match its hash"
                    break
                proof = row.get("proof")
                if proof is None:
                    pending += 1
                    continue
                cp = by_to_seq.get(proof["checkpoint_to_seq"])
                if cp is None or not signature_ok(cp):
                    broken = f"entry {row['seq']}: checkpoint {proof['checkpoint_to_seq']} missing or badly signed"
                    break
                root = root_from_proof(h, row["seq"] - cp["from_seq"], cp["to_seq"] - cp["from_seq"] + 1,
                                       [bytes.fromhex(p) for p in proof["path"]])
                if root is None or root.hex() != cp["merkle_root"]:
                    broken = f"entry {row['seq']}: inclusion proof does not lead to checkpoint {cp['to_seq']}"
                    break
                proven += 1
            status = "OK" if broken is None else "BROKEN at " + broken
            print(chain, status, proven, "entries proven,", pending, "unverifiable yet")
        else:
            prev, hashes = bytes(32), []
            for seq, row in enumerate(rows, start=1):
                h = entry_hash(row, prev)
                if row["seq"] != seq or row["prev_hash"] != prev.hex() or row["entry_hash"] != h.hex():
                    broken = f"entry {seq}"
                    break
                prev = h
                hashes.append(h)
            for cp in checkpoints[chain]:
                if not signature_ok(cp):
                    broken = broken or f"checkpoint {cp['to_seq']}: bad signature"
                segment = hashes[cp["from_seq"] - 1: cp["to_seq"]]
                if len(segment) != cp["to_seq"] - cp["from_seq"] + 1:
                    broken = broken or f"checkpoint {cp['to_seq']}: chain truncated at {len(hashes) + 1}"
                elif mth(segment).hex() != cp["merkle_root"] or segment[-1].hex() != cp["head_hash"]:
                    broken = broken or f"checkpoint {cp['to_seq']}: entries do not match"
            print(chain, "OK" if broken is None else "BROKEN at " + broken, len(hashes), "entries")
        ok = ok and broken is None
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
