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
`export BROKEN: line <n>: <why>` for a line that is not a JSON object (not
UTF-8, cut, garbled) or not one of its type (an entry without chain_id, seq
or entry_hash, a member of the wrong type), which is skipped while the rest
is still verified (its chain and the manifest then tell what it held); exit
status 1 when anything is broken, 2 when the export holds no entries
(nothing verified: an org or team without entries, or a search that found
none, is not a verified trail). With no usable key at all it prints only
`export BROKEN: no usable public key ...`. A --public-key that is not 64 hex
characters of an Ed25519 key, an export or anchor that cannot be read, or
an anchor line that is not a checkpoint stops it with one line on stderr
and exit status 2 (a usage error: nothing was checked), as `tollgate
verify-audit --export` does.
"""

import argparse
import hashlib
import json
import os
import re
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
    if not 0 <= index < size:
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
    salt = row["salt"]
    if not salt:
        return row["personal_commitment"] if row["user_id"] == "" == row["event_json"] else "inconsistent"
    data = unhex(salt)
    if data is None:
        return "inconsistent"
    text = canonical({"event": row["event_json"], "user_id": row["user_id"]})
    recomputed = sha256(data + text.encode("utf-8")).hex()
    return recomputed if recomputed == row["personal_commitment"] else "inconsistent"


def entry_hash(row, prev):
    v = row["v"]
    if v < 2:  # versions 0 and 1: the personal fields as they are
        entry = {f: row[f] for f in FIELDS}
        entry["event"] = row["event_json"]
    else:  # version 2: personal fields only through their salted commitment
        entry = {f: row[f] for f in FIELDS if f != "user_id"}
        entry["personal"] = personal(row)
    entry["v"] = v
    return sha256(prev + canonical(entry).encode("utf-8"))


ERASURE_KIND = "admin.personal_data.erased"


def erased(row):
    return row["v"] >= 2 and not row["salt"]


def recorded_erasures(row):
    """(seq, entry hash) of every entry an admin.personal_data.erased entry
    names in its own chain: each seq with the hash at its position."""
    if row["kind"] != ERASURE_KIND:
        return []
    try:
        event = DECODER.decode(row["event_json"])
    except (ValueError, RecursionError):
        return []
    admin = event.get("admin") if isinstance(event, dict) and value_error(event) is None else None
    if not isinstance(admin, dict) or admin.get("chain_id") != row["chain_id"]:
        return []
    seqs, hashes = admin.get("seqs"), admin.get("entry_hashes")
    if not isinstance(seqs, list) or not isinstance(hashes, list):
        return []
    return [(s, h.lower()) for s, h in zip(seqs, hashes)
            if read(s, U64)[1] is None and isinstance(h, str)]


# Reading the lines. A line is read as the Rust verifier (`tollgate
# verify-audit --export`) reads it, so that both report the same lines: first
# as a JSON object, then as an object of its type, whose members must be
# present (unless a default is given) and of their type; other members are
# ignored.

class Members(dict):
    """A JSON object; `duplicates` lists the members given more than once
    (the last one counts, but a member the line's type reads, given twice,
    makes the line malformed)."""
    duplicates = ()


def _members(pairs):
    obj = Members(pairs)
    if len(obj) < len(pairs):
        seen = set()
        obj.duplicates = {k for k, _ in pairs if k in seen or seen.add(k)}
    return obj


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")  # Python would read NaN and Infinity


DECODER = json.JSONDecoder(object_pairs_hook=_members, parse_constant=_no_constant)


def parse(line):
    """The line (bytes, without its newline) as a JSON object, or why it is not one."""
    if line.startswith(b"\xef\xbb\xbf"):
        return "it starts with a UTF-8 byte order mark"
    try:
        row = DECODER.decode(line.decode("utf-8"))
    except UnicodeDecodeError as e:
        return f"not UTF-8 (byte 0x{line[e.start]:02x} at column {e.start + 1})"
    except json.JSONDecodeError as e:
        return f"{e.msg}: column {e.colno}"
    except (ValueError, RecursionError) as e:  # a number too long, nesting too deep, NaN
        return str(e)
    if isinstance(row, dict):
        return row
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(row), "a number")


def utf8(text):
    """Whether text is Unicode text (JSON's \\ud800 escapes give lone surrogates)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def value_error(value):
    """Why a parsed object is no JSON value to the Rust verifier (which reads
    the header, the footer and anchor lines as such), or None: nested deeper
    than 127, a lone surrogate, a number out of range."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth > 127:
                return "recursion limit exceeded"
            if isinstance(v, dict) and not all(utf8(k) for k in v):
                return "lone surrogate in hex escape"
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
        elif isinstance(v, str) and not utf8(v):
            return "lone surrogate in hex escape"
        elif isinstance(v, float) and v in (float("inf"), float("-inf")):
            return "number out of range"
    return None


REQUIRED = object()
STRING, STRINGS = ("string",), ("strings",)
U8, U32, U64 = ("int", "u8", 0, 2**8 - 1), ("int", "u32", 0, 2**32 - 1), ("int", "u64", 0, 2**64 - 1)
I32, I64 = ("int", "i32", -2**31, 2**31 - 1), ("int", "i64", -2**63, 2**63 - 1)


def option(t):  # null or absent: None
    return ("option", t)


def struct(name, members):  # members: {name: (type, default or REQUIRED)}
    return ("struct", name, members)


def named(value):
    """A JSON value, as the Rust verifier names one of the wrong type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value!r}`"
    if isinstance(value, str):
        return f"string {json.dumps(value)}"
    return "sequence" if isinstance(value, list) else "map"


def read(value, t, at=""):
    """value read as type t: (value, None) with the defaults of absent
    members filled in, or (None, why) in the Rust verifier's words."""
    where = f" at member {at}" if at else ""
    if t[0] == "option":
        return (None, None) if value is None else read(value, t[1], at)
    if t[0] == "string":
        if not isinstance(value, str):
            return None, f"invalid type: {named(value)}, expected a string{where}"
        return (value, None) if utf8(value) else (None, f"lone surrogate in hex escape{where}")
    if t[0] == "strings":
        if not isinstance(value, list):
            return None, f"invalid type: {named(value)}, expected a sequence{where}"
        for item in value:
            _, why = read(item, STRING, at)
            if why:
                return None, why
        return value, None
    if t[0] == "struct":
        _, name, members = t
        if not isinstance(value, dict):
            return None, f"invalid type: {named(value)}, expected struct {name}{where}"
        out, duplicates = {}, getattr(value, "duplicates", ())
        for key, item in value.items():
            member = members.get(key)
            if member is None:
                if not utf8(key):
                    return None, f"lone surrogate in hex escape{where}"
                continue
            if key in duplicates:
                return None, f"duplicate field `{key}`{where}"
            kind = member[0]
            base = kind[1] if kind[0] == "option" and item is not None else kind
            if (type(item) is str and base is STRING and utf8(item)
                    or type(item) is int and base[0] == "int" and base[2] <= item <= base[3]):  # the usual case, fast
                out[key] = item
                continue
            out[key], why = read(item, kind, f"{at}.{key}" if at else key)
            if why:
                return None, why
        for key, (_, default) in members.items():
            if key not in out:
                if default is REQUIRED:
                    return None, f"missing field `{key}`" + (f" in member {at}" if at else "")
                out[key] = list(default) if isinstance(default, list) else default
        return out, None
    _, name, low, high = t  # an integer
    if isinstance(value, int) and not isinstance(value, bool):
        if low <= value <= high:
            return value, None
        if -2**63 <= value < 2**64:
            return None, f"invalid value: integer `{value}`, expected {name}{where}"
        try:  # beyond 64 bits the Rust verifier reads a floating point number
            value = float(value)
        except OverflowError:
            return None, f"number out of range{where}"
    return None, f"invalid type: {named(value)}, expected {name}{where}"


# What the Rust verifier reads of every line between header and footer...
LINE = struct("LineHead", {"type": (option(STRING), None), "chain_id": (option(STRING), None),
                           "seq": (option(U64), None), "entry_hash": (option(STRING), None)})
# ... of an entry ...
ENTRY = struct("EntryRow", {
    "chain_id": (STRING, REQUIRED), "seq": (U64, REQUIRED), "occurred_at": (U32, REQUIRED),
    "occurred_at_ms": (U64, REQUIRED), **{k: (STRING, REQUIRED) for k in (
        "event_id", "kind", "org_id", "team_id", "user_id", "api_key_id", "provider", "model", "outcome",
        "decision", "decision_reason", "event_json", "prev_hash", "entry_hash")},
    "kafka_partition": (I32, REQUIRED), "kafka_offset": (I64, REQUIRED),
    "v": (U8, 1), "salt": (STRING, ""), "personal_commitment": (STRING, "")})
# ... of a search export entry's proof ...
PROOF = struct("ProofLine", {"proof": (option(struct("ProofMember", {"proof": (option(struct(
    "InclusionRef", {"checkpoint_to_seq": (U64, REQUIRED), "path": (STRINGS, REQUIRED)})), None)})), None)})
# ... and of a checkpoint (in the export and in the anchor).
CHECKPOINT = struct("CheckpointRow", {
    "chain_id": (STRING, REQUIRED), "from_seq": (U64, REQUIRED), "to_seq": (U64, REQUIRED),
    "head_hash": (STRING, REQUIRED), "merkle_root": (STRING, REQUIRED), "created_at_ms": (U64, REQUIRED),
    "public_key": (STRING, REQUIRED), "signature": (STRING, REQUIRED), "v": (U8, 1),
    "tree_root": (STRING, ""), "org_id": (STRING, ""), "team_id": (STRING, ""), "consistency": (STRINGS, [])})


def same(a, b):
    """JSON equality as the Rust verifier has it: 1, 1.0 and true differ."""
    kinds = (bool, int, float, str, list, dict, type(None))
    if next(k for k in kinds if isinstance(a, k)) is not next(k for k in kinds if isinstance(b, k)):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    return a == b


def shown(name):
    """A chain id or member name as printed: as it is, or quoted as a JSON
    string when empty or holding spaces or control characters, so that every
    finding is one line starting with its chain."""
    plain = name and name.isprintable() and not any(c.isspace() for c in name) and not name.startswith('"')
    return name if plain else json.dumps(name)


def of_type(row, kind):
    return row if isinstance(row, dict) and row.get("type") == kind else None


HEX = {n: re.compile(f"[0-9a-fA-F]{{{2 * n}}}") for n in (32, 64)}


def unhex(text, size=32):
    """The bytes of exactly 2 * size hex digits (either case), else None."""
    return bytes.fromhex(text) if isinstance(text, str) and HEX[size].fullmatch(text) else None


P = 2**255 - 19
D = -121665 * pow(121666, P - 2, P) % P
RUST_WHITESPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def public_key(text):
    """The Ed25519 public key in text (64 hex digits, surrounding whitespace
    ignored) as lowercase hex, or None: not hex, or not a point of the curve
    (its y coordinate has no x: a mistyped or made-up key)."""
    data = unhex(text.strip(RUST_WHITESPACE)) if isinstance(text, str) else None
    if data is None:
        return None
    y2 = (int.from_bytes(data, "little") & (2**255 - 1)) ** 2 % P
    x2 = (y2 - 1) * pow(D * y2 + 1, P - 2, P) % P
    return data.hex() if x2 == 0 or pow(x2, (P - 1) // 2, P) == 1 else None


class Signatures:
    def __init__(self, key):  # lowercase hex, or None
        self.key, self.verifier = key, None
        try:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
            self.verifier = Ed25519PublicKey.from_public_bytes(bytes.fromhex(key))
        except Exception:  # noqa: BLE001 - no package or no key: nothing verifies
            pass

    def ok(self, message, named_key, signature):
        signature = unhex(signature, 64)
        if self.verifier is None or named_key != self.key or signature is None:
            return False
        try:
            self.verifier.verify(signature, canonical(message).encode("utf-8"))
            return True
        except Exception:  # noqa: BLE001 - any failure is a bad signature
            return False

    def checkpoint(self, cp):
        v = cp["v"]
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


class Stop(Exception):
    """Why the run cannot start: one line on stderr, exit status 1 (as
    `tollgate verify-audit --export` stops), nothing verified."""


def read_file(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise Stop(f"{what} {path}: {e.strerror or e}") from None


def read_anchor(path):
    """Every checkpoint of an anchor file (JSON lines, blank lines skipped),
    each read as a JSON value, then as a checkpoint: any other line stops
    the run, naming it."""
    data = read_file(path, "--anchor: cannot read")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Stop(f"--anchor: cannot read {path}: not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    anchor = []
    for n, line in enumerate(lines, 1):
        if not line.strip(RUST_WHITESPACE):
            continue
        try:
            value = DECODER.decode(line)
            why = value_error(value)
            why = why and f"not JSON: {why}"
        except json.JSONDecodeError as e:
            why = f"not JSON: {e.msg}: column {e.colno}"
        except (ValueError, RecursionError) as e:
            why = f"not JSON: {e}"
        if why is None and (not isinstance(value, dict) or value.get("type") != "checkpoint"):
            why = 'not a checkpoint line (`type` is not "checkpoint")'
        if why is None:
            cp, why = read(dict(value), CHECKPOINT)  # a JSON value: the last of a member given twice
            why = why and f"not a checkpoint: {why}"
        if why:
            raise Stop(f"--anchor {path}: line {n}: {why}")
        anchor.append(cp)
    return anchor


def arguments(argv):
    parser = argparse.ArgumentParser(
        prog="audit_verify.py", description="Verify a Tollgate audit export offline (docs/audit.md).")
    parser.add_argument("export", help="the export file (NDJSON)")
    parser.add_argument("--public-key", metavar="HEX",
                        help="the trusted Ed25519 public key, 64 hex characters (default: the export's own)")
    parser.add_argument("--anchor", metavar="FILE", help="checkpoint anchor (tollgate audit checkpoints export)")
    return parser.parse_args(argv[1:])  # a usage error: exit status 2


def main(argv):
    args = arguments(argv)
    try:
        trusted = None
        if args.public_key is not None:
            trusted = public_key(args.public_key)
            if trusted is None and unhex(args.public_key.strip(RUST_WHITESPACE)) is not None:
                raise Stop(f"--public-key {args.public_key!r} is 64 hex characters but no usable Ed25519 "
                           "public key (not a point of the curve: a mistyped or made-up key)")
            if trusted is None:
                raise Stop(f"--public-key {args.public_key!r} is not 64 hex characters of an Ed25519 public key")
        anchor = read_anchor(args.anchor) if args.anchor is not None else None
        data = read_file(args.export, "cannot read the export")
    except Stop as e:
        print(f"audit_verify.py: error: {e}", file=sys.stderr)
        return 2  # a usage error, as verify-audit's: nothing was checked
    # What an OK below does not prove, said as `tollgate verify-audit
    # --export` says it: a file re-signed with a key of its own, or cut
    # together with its checkpoints, passes without these.
    if trusted is None:
        print("warning: no --public-key: signatures are checked against the key in the export's header, "
              "which proves integrity, not origin (a file re-signed with another key passes)", file=sys.stderr)
    if anchor is None:
        print("warning: no --anchor FILE: checkpoints removed before the export was made, or a chain left "
              "out of it, go unnoticed", file=sys.stderr)
    return verify(data, trusted, anchor)


def verify(data, trusted, anchor):
    """Verify the export's bytes against the trusted key (lowercase hex, or
    None for the header's) and the anchor's checkpoints (or None); print the
    findings and return the exit status."""
    raw = data.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    lines = [parse(r) for r in raw]  # a JSON object, or why the line is not one
    # The header and the footer are read as JSON values.
    why = value_error(lines[0]) if lines and isinstance(lines[0], dict) else None
    if why:
        lines[0] = why
    header = (of_type(lines[0], "header") if lines else None) or {}
    footer = of_type(lines[-1], "footer") if lines else None
    if footer is not None and value_error(footer):
        footer = None  # then read as a line of type "footer"
    ok = True

    def broken(what):
        nonlocal ok
        ok = False
        print(what)

    sigs = Signatures(trusted or public_key(header.get("public_key")))
    if sigs.verifier is None:
        broken("export BROKEN: no usable public key, or no `cryptography` package: nothing can be proven")
        return 1
    # 1. The manifest: signed, naming every line before the footer.
    manifest, listed = (footer or {}).get("manifest"), {}
    if not header or footer is None or not isinstance(manifest, dict):
        broken("manifest BROKEN: no header, footer or manifest (cut, or a format before v2)")
    else:
        if not footer.get("signature"):
            broken("manifest BROKEN: it is not signed (exported without [audit] signing_key)")
        elif not sigs.ok(manifest, header.get("public_key"), footer.get("signature")):
            broken("manifest BROKEN: its signature does not verify")
        body = raw[:-1]
        digest = hashlib.sha256(b"".join(b + b"\n" for b in body)).hexdigest()
        if not same(manifest.get("lines"), len(body)) or not same(manifest.get("lines_sha256"), digest):
            broken("manifest BROKEN: the lines before the footer are not the signed ones")
        for k, v in header.items():
            if k != "type" and not same(manifest.get(k), v):
                broken(f"manifest BROKEN: header member {shown(k)} differs from the signed one")
        chains = manifest.get("chains")
        for m in chains if isinstance(chains, list) else []:
            if isinstance(m, dict) and isinstance(m.get("chain_id"), str):
                listed[m["chain_id"]] = m
    search = header.get("scope") == "search"
    held = {}  # what the lines hold of each chain, as the manifest lists it
    nothing = {"entries": 0, "last_seq": 0, "checkpoints": 0, "checkpointed_to_seq": 0, "head_hash": ""}
    entries, checkpoints = defaultdict(list), defaultdict(list)

    def holds(chain):
        return held.setdefault(chain, dict(nothing))

    for n, row in enumerate(lines[:-1] if footer is not None else lines, 1):
        if isinstance(row, str):  # skipped: its chain and the manifest tell what is lost
            broken(f"export BROKEN: line {n}: not a JSON object: {row}")
            continue
        if n == 1:
            continue  # the header, or the manifest check says there is none
        line, why = read(row, LINE)
        if why:
            broken(f"export BROKEN: line {n}: not a JSON object: {why}")
        elif line["type"] == "entry":
            if None in (line["chain_id"], line["seq"], line["entry_hash"]):
                broken(f"export BROKEN: line {n}: an entry needs chain_id, seq and entry_hash")
                continue
            h = holds(line["chain_id"])
            if h["entries"] == 0 or line["seq"] > h["last_seq"]:
                h["last_seq"], h["head_hash"] = line["seq"], line["entry_hash"]
            h["entries"] += 1
            entry, why = read(row, ENTRY)
            if why:  # counted above, as the manifest counts it, but not verified
                broken(f"export BROKEN: line {n}: not an entry: {why}")
                continue
            if search:
                entry["_line"], entry["_proof"] = n, read(row, PROOF)
            entries[entry["chain_id"]].append(entry)
        elif line["type"] == "checkpoint":
            cp, why = read(row, CHECKPOINT)
            if why:
                broken(f"export BROKEN: line {n}: not a checkpoint: {why}")
                continue
            h = holds(cp["chain_id"])
            h["checkpoints"] += 1
            h["checkpointed_to_seq"] = max(h["checkpointed_to_seq"], cp["to_seq"])
            checkpoints[cp["chain_id"]].append(dict(cp, _source="export"))
        else:
            broken(f"export BROKEN: line {n}: unexpected line of type {line['type']!r}")
    entries, checkpoints = dict(entries), dict(checkpoints)
    for chain in sorted(set(held) | set(listed)):
        have, m = held.get(chain, nothing), listed.get(chain)
        if m is None or any(not same(m.get(k), v) for k, v in have.items()):
            broken(f"{shown(chain)} BROKEN: the export holds {have}, the signed manifest says {m}")
    # 2. The anchor: checkpoints kept outside the database.
    anchored, anchored_ids = defaultdict(list), None
    if anchor is not None:
        anchored_ids = {cp_id(cp) for cp in anchor}
        for cp in anchor:
            anchored[cp["chain_id"]].append(cp)
        for chain, cps in sorted(anchored.items()):
            known = {c["to_seq"]: c for c in cps + checkpoints.get(chain, [])}
            first = min(c["from_seq"] for c in cps)
            for cp in cps:
                before = known.get(cp["from_seq"] - 1)
                proof = [unhex(h) for h in cp["consistency"]]
                if not sigs.checkpoint(cp):
                    broken(f"{shown(chain)} BROKEN at seq {cp['to_seq']}: bad_signature (anchored checkpoint)")
                elif cp.get("v", 1) != 2 or cp["from_seq"] == 1:
                    continue
                elif before is None:
                    # The chain's first anchored checkpoint may follow a v1
                    # one, written before the anchor existed.
                    if cp["from_seq"] != first:
                        broken(f"{shown(chain)} BROKEN at seq {max(cp['from_seq'] - 1, 0)}: missing_checkpoint (not in the anchor)")
                elif before.get("v", 1) == 2:
                    if None in proof or not consistent(
                            cp["from_seq"] - 1, cp["to_seq"], unhex(before["tree_root"]),
                            unhex(cp["tree_root"]), proof):
                        broken(f"{shown(chain)} BROKEN at seq {cp['to_seq']}: checkpoint_mismatch "
                               "(anchored checkpoint does not extend its predecessor)")
    # Checkpoints cut after the anchor was exported cannot be in it.
    horizon = max((c["created_at_ms"] for cps in anchored.values() for c in cps), default=0)
    exported_at = header.get("exported_at_ms")
    exported_at = 0 if read(exported_at, U64)[1] else exported_at
    due = {chain: [c for c in cps if c["created_at_ms"] <= exported_at] for chain, cps in anchored.items()}
    # 3. The chains.
    chains = set(held)
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
            for row in rows if found is None else []:  # (an unanchored chain's proofs are not read)
                if row["_proof"][1]:
                    broken(f"export BROKEN: line {row['_line']}: not a search entry's proof: {row['_proof'][1]}")
            rows = [row for row in rows if found is None and row["_proof"][1] is None]
            for row in rows:
                h = entry_hash(row, unhex(row["prev_hash"]) or bytes(32))
                if h.hex() != row["entry_hash"]:
                    found = (row["seq"], "edited", "content does not match its hash")
                    break
                proof = (row["_proof"][0]["proof"] or {}).get("proof")
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
                path = [unhex(p) for p in proof["path"]]
                root = None if None in path else root_from_proof(
                    h, row["seq"] - cp["from_seq"], cp["to_seq"] - cp["from_seq"] + 1, path)
                if root is None or root != unhex(cp["merkle_root"]):
                    found = (row["seq"], "checkpoint_mismatch", "inclusion proof does not lead to the root")
                    break
                proven += 1
            if found:
                broken(f"{shown(chain)} BROKEN at seq {found[0]}: {found[1]} ({found[2]})")
            else:
                print(shown(chain), "OK", proven, "entries proven,", pending, "unverifiable yet")
        else:
            ids = {cp_id(x) for x in cps}
            own = None if anchored_ids is None else {cp_id(c) for c in anchored.get(chain, [])}
            found = verify_chain(rows, cps + [c for c in due.get(chain, []) if cp_id(c) not in ids],
                                 sigs, own, horizon)
            if found:
                broken(f"{shown(chain)} BROKEN at seq {found[0]}: {found[1]} ({found[2]})")
            else:
                print(shown(chain), "OK", len(rows), "entries")
    if not ok:
        return 1
    if not any(entries.values()):
        print("nothing verified: the export holds no entries", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(errors="backslashreplace")  # whatever a chain id holds
    try:
        status = main(sys.argv)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (| head): no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 1
    except MemoryError:
        print("audit_verify.py: out of memory: the export is too large for this verifier "
              "(tollgate verify-audit --export reads it as a stream)", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        status = 130
    sys.exit(status)
