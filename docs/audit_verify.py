"""Verify a Tollgate audit export (NDJSON) offline, from docs/audit.md alone.

    python3 audit_verify.py export.ndjson [--public-key HEX] [--anchor checkpoints.jsonl]

Standard library, plus the `cryptography` package for Ed25519 signatures
(without it nothing can be proven and the run fails). Trust: pass the public
key you obtained independently (GET /api/v1/audit/public-key, your key
custodian) with --public-key; otherwise the key in the export's header is
used, which proves integrity but not who signed. Pass the checkpoint anchor
you keep outside Tollgate (`tollgate audit checkpoints export`) with
--anchor, so that checkpoints removed from the database still count.

Checks, in the order docs/audit.md gives them: the signed manifest in the
footer (export complete and unaltered), then per chain either every link
from seq 1 and every checkpoint (whole-chain export) or each entry's
inclusion proof (search export, header "scope": "search"), then the
anchor. Prints one line per chain, `<chain> OK ...` or
`<chain> BROKEN at seq <n>: <kind> (<detail>)`, and
`export BROKEN: line <n>: not a JSON object: <why>` for a damaged line (not
UTF-8, cut, garbled), which is skipped while the rest is still verified
(its chain and the manifest then tell what it held); exit status 1 when
anything is broken, 2 when the export holds no entries (nothing verified:
an org or team without entries, or a search that found none, is not a
verified trail).
"""

import hashlib
import json
import sys
from collections import defaultdict


def canonical(obj):  # RFC 8785 for strings, integers, null, arrays, objects
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256(data):
    return hashlib.sha256(data).digest()


def mth(leaves):  # RFC 6962 Merkle tree hash of raw 32-byte entry hashes
    if not leaves:
        return sha256(b"")
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


def consistent(m, n, old_root, new_root, proof):  # RFC 9162 section 2.1.4.2
    if m > n:
        return False
    if m == 0:
        return not proof
    if m == n:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = ([old_root] if m & (m - 1) == 0 else []) + proof
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = sha256(b"\x01" + c + fr), sha256(b"\x01" + c + sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = sha256(b"\x01" + sr + c)
        fn, sn = fn >> 1, sn >> 1
    return fr == old_root and sr == new_root and sn == 0


FIELDS = ["api_key_id", "chain_id", "decision", "decision_reason", "event_id", "kafka_offset",
          "kafka_partition", "kind", "model", "occurred_at_ms", "org_id", "outcome",
          "provider", "seq", "team_id", "user_id"]
CHECKPOINT_V1 = ["chain_id", "created_at_ms", "from_seq", "head_hash", "merkle_root",
                 "public_key", "to_seq"]
CHECKPOINT_V2 = CHECKPOINT_V1 + ["org_id", "team_id", "tree_root"]
WINDOW = 16  # "nearby" for reordered entries


def personal(row):
    """Version 2: what the entry hash commits to instead of user_id and the
    event. With a salt, the commitment recomputed from the salt, user_id and
    event_json, which must equal the stored one; erased (no salt), the stored
    commitment, with user_id and event_json empty. Otherwise a value no
    entry was hashed over, so the entry reads as edited."""
    salt = row.get("salt", "")
    if not salt:
        return row["personal_commitment"] if row["user_id"] == "" == row["event_json"] else "inconsistent"
    data = unhex(salt)
    if data is None:
        return "inconsistent"
    text = canonical({"event": row["event_json"], "user_id": row["user_id"]})
    recomputed = sha256(data + text.encode("utf-8")).hex()
    return recomputed if recomputed == row["personal_commitment"] else "inconsistent"


def entry_hash(row, prev):
    v = row.get("v", 1)
    if v == 1:
        entry = {f: row[f] for f in FIELDS}
        entry["event"] = row["event_json"]
    else:  # version 2: personal fields only through their salted commitment
        entry = {f: row[f] for f in FIELDS if f != "user_id"}
        entry["personal"] = personal(row)
    entry["v"] = v
    return sha256(prev + canonical(entry).encode("utf-8"))


ERASURE_KIND = "admin.personal_data.erased"


def erased(row):
    return row.get("v", 1) >= 2 and not row.get("salt", "")


def recorded_erasures(row):
    """(seq, entry hash) of every entry an admin.personal_data.erased entry
    names in its own chain: each seq with the hash at its position."""
    if row["kind"] != ERASURE_KIND:
        return []
    try:
        admin = json.loads(row["event_json"]).get("admin") or {}
    except ValueError:
        return []
    if admin.get("chain_id") != row["chain_id"]:
        return []
    seqs, hashes = admin.get("seqs"), admin.get("entry_hashes")
    if not isinstance(seqs, list) or not isinstance(hashes, list):
        return []
    return [(s, h.lower()) for s, h in zip(seqs, hashes)
            if isinstance(s, int) and not isinstance(s, bool) and isinstance(h, str)]


def parse(line):
    """The line (bytes, without its newline) as a JSON object, or why it is not one."""
    if line.startswith(b"\xef\xbb\xbf"):
        return "it starts with a UTF-8 byte order mark"
    try:
        row = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as e:
        return f"not UTF-8 (byte 0x{line[e.start]:02x} at column {e.start + 1})"
    except json.JSONDecodeError as e:
        return f"{e.msg}: column {e.colno}"
    except (ValueError, RecursionError) as e:  # a number too long, nesting too deep
        return str(e)
    if isinstance(row, dict):
        return row
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(row), "a number")


def of_type(row, kind):
    return row if isinstance(row, dict) and row.get("type") == kind else None


def unhex(text):
    try:
        return bytes.fromhex(text) if len(text) == 64 else None
    except (TypeError, ValueError):
        return None


class Signatures:
    def __init__(self, key):
        try:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
            self.key, self.verifier = key, Ed25519PublicKey.from_public_bytes(bytes.fromhex(key))
        except Exception:  # noqa: BLE001 - no package or no usable key: nothing verifies
            self.key, self.verifier = key, None

    def ok(self, message, public_key, signature):
        if self.verifier is None or public_key != self.key:
            return False
        try:
            self.verifier.verify(bytes.fromhex(signature), canonical(message).encode("utf-8"))
            return True
        except Exception:  # noqa: BLE001 - any failure is a bad signature
            return False

    def checkpoint(self, cp):
        v = cp.get("v", 1)
        if v not in (1, 2):
            return False
        message = {k: cp[k] for k in (CHECKPOINT_V2 if v == 2 else CHECKPOINT_V1)}
        message.update(type="tollgate.audit.checkpoint", v=v)
        return self.ok(message, cp["public_key"], cp["signature"])


def cp_id(cp):
    return (cp["from_seq"], cp["to_seq"], cp["signature"])


def verify_chain(rows, cps, sigs, anchored_ids, horizon):
    """The first break of a whole chain as (seq, kind, detail), or None (docs/audit.md)."""
    good, early = defaultdict(list), None

    def earlier(a, b):
        return b if a is None or (b is not None and b[0] < a[0]) else a

    for cp in cps:
        if not sigs.checkpoint(cp):
            early = earlier(early, (cp["to_seq"], "bad_signature", "signature does not verify"))
        elif not 1 <= cp["from_seq"] <= cp["to_seq"]:
            early = earlier(early, (cp["to_seq"], "checkpoint_mismatch", "empty range"))
        elif cp not in good[cp["to_seq"]]:
            good[cp["to_seq"]].append(cp)
        if (anchored_ids is not None and cp.get("v", 1) == 2 and cp.get("_source") == "export"
                and cp["created_at_ms"] <= horizon and cp_id(cp) not in anchored_ids and sigs.checkpoint(cp)):
            early = earlier(early, (cp["to_seq"], "unanchored", "not in the anchor"))
    head, expected, last_pos, hashes, roots = bytes(32), 1, None, [], {0: sha256(b"")}
    wanted = {cp["from_seq"] - 1 for cps_ in good.values() for cp in cps_ if cp.get("v", 1) == 2}
    found, erased_seqs, recorded = None, [], set()
    for row in rows:
        e = expected
        if row["seq"] > e:
            found = (e, "missing", f"entries {e}..={row['seq'] - 1} are missing")
            break
        if row["seq"] < e:
            found = (row["seq"], "duplicate", f"sequence number {row['seq']} appears twice")
            break
        computed = entry_hash(row, head)
        back = last_pos is not None and last_pos[0] == row["kafka_partition"] and row["kafka_offset"] <= last_pos[1]
        if row["prev_hash"] == head.hex() and row["entry_hash"] == computed.hex() and not back:
            if row["occurred_at"] != row["occurred_at_ms"] // 1000:
                found = (e, "edited", "occurred_at does not match occurred_at_ms")
                break
            if erased(row):
                erased_seqs.append((e, row["entry_hash"].lower()))
            recorded.update(recorded_erasures(row))
            hashes.append(computed)
            head, expected, last_pos = computed, e + 1, (row["kafka_partition"], row["kafka_offset"])
            if e in wanted:
                roots[e] = mth(hashes)
            for cp in good.get(e, []):
                found = check_checkpoint(cp, head, hashes, roots, good)
                if found:
                    break
            if found:
                break
            continue
        prev = unhex(row["prev_hash"])
        if prev is not None and any(entry_hash(dict(row, seq=s), prev).hex() == row["entry_hash"]
                                    for s in range(max(1, e - WINDOW), e + WINDOW + 1) if s != e):
            found = (e, "reordered", "its stored hash is valid for a nearby seq")
        elif back:
            found = (e, "reordered", "its kafka offset goes backwards")
        elif row["prev_hash"] == head.hex():
            found = (e, "edited", "it does not hash to its stored entry_hash")
        elif prev is not None and entry_hash(row, prev).hex() == row["entry_hash"] and e > 1:
            found = (e - 1, "edited", f"entry {e} links to a different hash")
        else:
            found = (e, "broken_link", "neither links nor hashes")
        break
    if found is None:
        beyond = [t for t in good if t >= expected]
        if beyond:
            found = (expected, "truncated", f"a signed checkpoint covers up to seq {max(beyond)}")
    if found is None:
        # An erased entry must be named by an erasure entry of its chain.
        unrecorded = [s for s, h in erased_seqs if (s, h) not in recorded]
        if unrecorded:
            found = (unrecorded[0], "unrecorded_erasure", "erased, but no erasure entry names it with its hash")
    if early is not None and (found is None or early[0] <= found[0]):
        return early
    return found


def check_checkpoint(cp, head, hashes, roots, good):
    at, frm = cp["to_seq"], cp["from_seq"]
    if cp["head_hash"] != head.hex():
        return (at, "checkpoint_mismatch", "head hash differs")
    if mth(hashes[frm - 1:]).hex() != cp["merkle_root"]:
        return (at, "checkpoint_mismatch", "segment merkle root differs")
    if cp.get("v", 1) == 2:
        root = mth(hashes)
        if root.hex() != cp["tree_root"]:
            return (at, "checkpoint_mismatch", "tree root differs")
        if frm > 1 and frm - 1 not in good:
            return (frm - 1, "missing_checkpoint", f"no checkpoint ends at seq {frm - 1}")
        proof = [unhex(h) for h in cp["consistency"]]
        if None in proof or not consistent(frm - 1, at, roots.get(frm - 1), root, proof):
            return (at, "checkpoint_mismatch", "consistency proof does not hold")
    return None


def main(argv):
    path = argv[1]
    trusted = argv[argv.index("--public-key") + 1] if "--public-key" in argv else None
    anchor_path = argv[argv.index("--anchor") + 1] if "--anchor" in argv else None
    with open(path, "rb") as f:
        raw = f.read().split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    lines = [parse(r) for r in raw]  # a JSON object, or why the line is not one
    ok = True

    def broken(what):
        nonlocal ok
        ok = False
        print(what)

    header = (of_type(lines[0], "header") if lines else None) or {}
    footer = of_type(lines[-1], "footer") if lines else None
    sigs = Signatures(trusted or header.get("public_key") or "")
    if sigs.verifier is None:
        broken("export BROKEN: no usable public key, or no `cryptography` package: nothing can be proven")
    # 1. The manifest: signed, naming every line before the footer.
    manifest = (footer or {}).get("manifest")
    if not header or footer is None or manifest is None:
        broken("manifest BROKEN: no header, footer or manifest (cut, or a format before v2)")
        manifest = {"chains": []}
    else:
        if not sigs.ok(manifest, header.get("public_key"), footer.get("signature") or ""):
            broken("manifest BROKEN: its signature does not verify")
        body = raw[:-1]
        digest = hashlib.sha256(b"".join(b + b"\n" for b in body)).hexdigest()
        if manifest.get("lines") != len(body) or manifest.get("lines_sha256") != digest:
            broken("manifest BROKEN: the lines before the footer are not the signed ones")
        for k, v in header.items():
            if k != "type" and manifest.get(k) != v:
                broken(f"manifest BROKEN: header member {k} differs from the signed one")
    entries, checkpoints = defaultdict(list), defaultdict(list)
    for n, row in enumerate(lines[:-1] if footer is not None else lines, 1):
        if isinstance(row, str):  # skipped: its chain and the manifest tell what is lost
            broken(f"export BROKEN: line {n}: not a JSON object: {row}")
        elif n == 1:
            continue  # the header, or the manifest check says there is none
        elif row.get("type") == "entry":
            entries[row["chain_id"]].append(row)
        elif row.get("type") == "checkpoint":
            checkpoints[row["chain_id"]].append(dict(row, _source="export"))
        else:
            broken(f"export BROKEN: line {n}: unexpected line of type {row.get('type')!r}")
    entries, checkpoints = dict(entries), dict(checkpoints)
    present = set(entries) | set(checkpoints)
    listed = {c["chain_id"]: c for c in manifest["chains"]}
    for chain in sorted(present | set(listed)):
        rows, cps, m = entries.get(chain, []), checkpoints.get(chain, []), listed.get(chain)
        have = {"entries": len(rows), "last_seq": max((r["seq"] for r in rows), default=0),
                "checkpoints": len(cps), "checkpointed_to_seq": max((c["to_seq"] for c in cps), default=0)}
        have["head_hash"] = next((r["entry_hash"] for r in rows if r["seq"] == have["last_seq"]), "")
        if m is None or any(m.get(k) != v for k, v in have.items()):
            broken(f"{chain} BROKEN: the export holds {have}, the signed manifest says {m}")
    # 2. The anchor: checkpoints kept outside the database.
    anchored, anchored_ids = defaultdict(list), None
    if anchor_path:
        anchored_ids = set()
        with open(anchor_path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    cp = json.loads(line)
                    anchored[cp["chain_id"]].append(cp)
                    anchored_ids.add(cp_id(cp))
        for chain, cps in sorted(anchored.items()):
            known = {c["to_seq"]: c for c in cps + checkpoints.get(chain, [])}
            first = min(c["from_seq"] for c in cps)
            for cp in cps:
                before = known.get(cp["from_seq"] - 1)
                proof = [unhex(h) for h in cp["consistency"]]
                if not sigs.checkpoint(cp):
                    broken(f"{chain} BROKEN at seq {cp['to_seq']}: bad_signature (anchored checkpoint)")
                elif cp.get("v", 1) != 2 or cp["from_seq"] == 1:
                    continue
                elif before is None:
                    # The chain's first anchored checkpoint may follow a v1
                    # one, written before the anchor existed.
                    if cp["from_seq"] != first:
                        broken(f"{chain} BROKEN at seq {cp['from_seq'] - 1}: missing_checkpoint (not in the anchor)")
                elif before.get("v", 1) == 2:
                    if None in proof or not consistent(
                            cp["from_seq"] - 1, cp["to_seq"], unhex(before["tree_root"]),
                            unhex(cp["tree_root"]), proof):
                        broken(f"{chain} BROKEN at seq {cp['to_seq']}: checkpoint_mismatch "
                               "(anchored checkpoint does not extend its predecessor)")
    # Checkpoints cut after the anchor was exported cannot be in it.
    horizon = max((c["created_at_ms"] for cps in anchored.values() for c in cps), default=0)
    exported_at = header.get("exported_at_ms", 0)
    due = {chain: [c for c in cps if c["created_at_ms"] <= exported_at] for chain, cps in anchored.items()}
    # 3. The chains.
    search = header.get("scope") == "search"
    chains = set(present)
    if not search:
        team = header.get("team")
        chains |= {chain for chain, cps in due.items()
                   if any(c.get("org_id") == header.get("org") and team in (None, c.get("team_id")) for c in cps)}
    for chain in sorted(chains):
        rows, cps = entries.get(chain, []), checkpoints.get(chain, [])
        rows = sorted(rows, key=lambda r: r["seq"]) if search else rows
        if search:
            covered = max((c["to_seq"] for c in cps + anchored.get(chain, [])), default=0)
            by_to_seq = {cp["to_seq"]: cp for cp in cps}
            found, proven, pending = None, 0, 0
            for cp in cps:
                if (anchored_ids is not None and cp.get("v", 1) == 2 and cp["created_at_ms"] <= horizon
                        and cp_id(cp) not in anchored_ids):
                    found = (cp["to_seq"], "unanchored", "not in the anchor")
            for row in rows if found is None else []:
                h = entry_hash(row, unhex(row["prev_hash"]) or bytes(32))
                if h.hex() != row["entry_hash"]:
                    found = (row["seq"], "edited", "content does not match its hash")
                    break
                proof = (row.get("proof") or {}).get("proof")
                if proof is None:
                    if row["seq"] <= covered:
                        found = (row["seq"], "unproven", f"called unverifiable yet, but a checkpoint covers up to {covered}")
                        break
                    pending += 1
                    continue
                cp = by_to_seq.get(proof["checkpoint_to_seq"])
                if cp is None or not sigs.checkpoint(cp):
                    found = (row["seq"], "bad_signature", "its checkpoint is missing or badly signed")
                    break
                root = root_from_proof(h, row["seq"] - cp["from_seq"], cp["to_seq"] - cp["from_seq"] + 1,
                                       [bytes.fromhex(p) for p in proof["path"]])
                if root is None or root.hex() != cp["merkle_root"]:
                    found = (row["seq"], "checkpoint_mismatch", "inclusion proof does not lead to the root")
                    break
                proven += 1
            if found:
                broken(f"{chain} BROKEN at seq {found[0]}: {found[1]} ({found[2]})")
            else:
                print(chain, "OK", proven, "entries proven,", pending, "unverifiable yet")
        else:
            ids = {cp_id(x) for x in cps}
            found = verify_chain(rows, cps + [c for c in due.get(chain, []) if cp_id(c) not in ids],
                                 sigs, anchored_ids, horizon)
            if found:
                broken(f"{chain} BROKEN at seq {found[0]}: {found[1]} ({found[2]})")
            else:
                print(chain, "OK", len(rows), "entries")
    if not ok:
        return 1
    if not any(entries.values()):
        print("nothing verified: the export holds no entries", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
