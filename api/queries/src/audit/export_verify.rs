//! Offline verification of an export file (`tollgate verify-audit
//! --export`), with no server at all: everything `docs/audit.md` asks of an
//! export, in the order `docs/audit_verify.py` checks it and with the same
//! kinds and seqs — the signed manifest (the file is complete and
//! unaltered), the anchor file's own checkpoints, then per chain every link
//! and checkpoint through [`ChainVerifier`] (whole-chain export) or each
//! entry's inclusion proof (search export), held to the anchor when given.
//!
//! The file is read twice: the footer holding the manifest comes last, and
//! a chain's checkpoints (and which chains an anchor adds) must be known
//! before its first entry is checked. Memory is the checkpoints and the
//! entry hashes of the chains (32 bytes an entry), not the file.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{BufRead, Seek, SeekFrom};
use std::time::Instant;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::trail::ChainManifest;
use super::verify::{Anchored, Break, BreakKind, ChainReport, ChainVerifier, Verdict};
use tollgate_contract::audit::checkpoint::{
    check_message, check_signature, parse_public_key, CheckpointRow,
};
use tollgate_contract::audit::entry::{entry_hash, parse_hash, EntryRow, GENESIS};
use tollgate_contract::audit::merkle;

/// What is wrong with the file as a whole (rather than at a chain position).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// No trusted key and none usable in the header: nothing can be proven.
    NoKey,
    /// A line that is not a JSON object of its type.
    MalformedLine,
    /// A line between header and footer that is neither an entry nor a
    /// checkpoint.
    UnexpectedLine,
    /// No header first, no footer last, or no manifest in it: the file was
    /// cut, or is of a format before v2.
    NoManifest,
    /// The manifest's signature does not verify with the trusted key.
    ManifestSignature,
    /// The lines before the footer are not the signed ones (count, digest).
    ManifestLines,
    /// A header member differs from the manifest's.
    ManifestHeader,
    /// A chain's lines differ from what the manifest lists for it (or the
    /// manifest lists a chain the file lacks, or the reverse).
    ManifestChain,
}

/// One problem with the file as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportProblem {
    pub kind: ProblemKind,
    /// The chain, for `manifest_chain`.
    pub chain_id: Option<String>,
    /// The line (from 1), for a problem with one line.
    pub line: Option<u64>,
    pub detail: String,
}

/// An anchored checkpoint that does not verify, or does not extend its
/// predecessor (checked whatever the export holds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnchorBreak {
    pub chain_id: String,
    #[serde(flatten)]
    pub at: Break,
}

/// The result for one chain of the export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportChainReport {
    #[serde(flatten)]
    pub chain: ChainReport,
    /// Search export only: entries no checkpoint covers yet (the others of
    /// `entries` were proven by their inclusion proofs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unverifiable_yet: Option<u64>,
}

impl ExportChainReport {
    /// What was verified, or where and how the chain is broken, for people.
    pub fn line(&self) -> String {
        match (self.unverifiable_yet, &self.chain.first_break) {
            (Some(pending), None) => format!(
                "chain {}: {} entries proven by their inclusion proofs, {pending} unverifiable yet",
                self.chain.chain_id,
                self.chain.entries - pending
            ),
            _ => self.chain.line(),
        }
    }
}

/// The result of verifying an export file.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// The verdict is [`Verdict::Verified`].
    pub ok: bool,
    pub verdict: Verdict,
    /// The header's `scope` (`chains` or `search`; empty without a header).
    pub scope: String,
    pub org: Option<String>,
    pub team: Option<String>,
    pub exported_at_ms: Option<u64>,
    /// The key every signature was checked against (hex).
    pub public_key: Option<String>,
    /// Whether that key is the export's own (integrity, not origin).
    pub key_from_header: bool,
    /// Checkpoints in the anchor given, if one was.
    pub anchored_checkpoints: Option<u64>,
    /// Lines in the file.
    pub lines: u64,
    pub problems: Vec<ExportProblem>,
    pub anchor_breaks: Vec<AnchorBreak>,
    pub chains: Vec<ExportChainReport>,
    pub entries: u64,
    pub checkpoints: u64,
    pub elapsed_ms: u64,
    pub entries_per_s: u64,
}

impl ExportReport {
    /// One line per problem, broken anchored checkpoint and chain, for people.
    pub fn lines(&self) -> Vec<String> {
        let problems = self.problems.iter().map(|p| match p.kind {
            ProblemKind::NoKey => format!("export BROKEN: {}", p.detail),
            ProblemKind::MalformedLine | ProblemKind::UnexpectedLine => {
                format!("export BROKEN: line {}: {}", p.line.unwrap_or(0), p.detail)
            }
            ProblemKind::ManifestChain => format!(
                "chain {}: BROKEN: {}",
                p.chain_id.as_deref().unwrap_or(""),
                p.detail
            ),
            _ => format!("manifest BROKEN: {}", p.detail),
        });
        let anchored = self.anchor_breaks.iter().map(|b| {
            format!(
                "chain {}: BROKEN at seq {}: {} ({})",
                b.chain_id,
                b.at.seq,
                b.at.kind.as_str(),
                b.at.detail
            )
        });
        problems
            .chain(anchored)
            .chain(self.chains.iter().map(ExportChainReport::line))
            .collect()
    }
}

/// How far the verification is: `pass` 1 reads the file (manifest,
/// checkpoints), pass 2 verifies the entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub pass: u8,
    pub bytes: u64,
    pub total: u64,
}

/// Report progress about every this many bytes.
const PROGRESS_EVERY: u64 = 4 << 20;

/// What every line says about itself (the rest of an entry is read in pass 2).
#[derive(Deserialize)]
struct LineHead {
    #[serde(rename = "type")]
    kind: Option<String>,
    chain_id: Option<String>,
    seq: Option<u64>,
    entry_hash: Option<String>,
}

/// A search export entry's `proof` member: `{status, detail?, proof, checkpoint}`.
#[derive(Deserialize)]
struct ProofLine {
    #[serde(default)]
    proof: Option<ProofMember>,
}

#[derive(Deserialize)]
struct ProofMember {
    #[serde(default)]
    proof: Option<InclusionRef>,
}

/// What a verifier uses of an inclusion proof: the checkpoint it names and
/// the path (the leaf index and size follow from the entry and checkpoint).
#[derive(Deserialize)]
struct InclusionRef {
    checkpoint_to_seq: u64,
    path: Vec<String>,
}

/// What pass 1 learns.
#[derive(Default)]
struct Scan {
    lines: u64,
    header: Option<Map<String, Value>>,
    footer: Option<Map<String, Value>>,
    /// SHA-256 of every line but the last, each with its `\n`.
    body_sha256: String,
    /// Indexes (from 0) of the entry lines.
    entry_lines: Vec<u64>,
    /// The checkpoint lines per chain, in file order.
    checkpoints: BTreeMap<String, Vec<CheckpointRow>>,
    /// What the file holds of each chain, as the manifest lists it.
    held: BTreeMap<String, ChainManifest>,
    problems: Vec<ExportProblem>,
}

impl Scan {
    fn problem(&mut self, kind: ProblemKind, line: u64, detail: String) {
        self.problems.push(ExportProblem {
            kind,
            chain_id: None,
            line: Some(line + 1),
            detail,
        });
    }

    fn held(&mut self, chain: &str) -> &mut ChainManifest {
        self.held
            .entry(chain.to_string())
            .or_insert_with(|| ChainManifest {
                chain_id: chain.to_string(),
                ..ChainManifest::default()
            })
    }

    /// A line between the header and the footer.
    fn body_line(&mut self, index: u64, bytes: &[u8]) {
        // serde would also read a struct from an array of its members in
        // order (`["entry", "c", 1, "h"]` counted as an entry of chain c).
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return self.problem(
                ProblemKind::MalformedLine,
                index,
                "not a JSON object".into(),
            );
        }
        let head: LineHead = match serde_json::from_slice(bytes) {
            Ok(head) => head,
            Err(e) => {
                return self.problem(
                    ProblemKind::MalformedLine,
                    index,
                    format!("not a JSON object: {e}"),
                )
            }
        };
        match head.kind.as_deref() {
            Some("entry") => {
                let (Some(chain), Some(seq), Some(hash)) =
                    (head.chain_id, head.seq, head.entry_hash)
                else {
                    return self.problem(
                        ProblemKind::MalformedLine,
                        index,
                        "an entry needs chain_id, seq and entry_hash".into(),
                    );
                };
                let held = self.held(&chain);
                if held.entries == 0 || seq > held.last_seq {
                    held.last_seq = seq;
                    held.head_hash = hash;
                }
                held.entries += 1;
                self.entry_lines.push(index);
            }
            Some("checkpoint") => match serde_json::from_slice::<CheckpointRow>(bytes) {
                Ok(cp) => {
                    let held = self.held(&cp.chain_id);
                    held.checkpoints += 1;
                    held.checkpointed_to_seq = held.checkpointed_to_seq.max(cp.to_seq);
                    self.checkpoints
                        .entry(cp.chain_id.clone())
                        .or_default()
                        .push(cp);
                }
                Err(e) => self.problem(
                    ProblemKind::MalformedLine,
                    index,
                    format!("not a checkpoint: {e}"),
                ),
            },
            other => self.problem(
                ProblemKind::UnexpectedLine,
                index,
                format!("unexpected line of type {other:?}"),
            ),
        }
    }
}

fn object_of_type(bytes: &[u8], kind: &str) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) if map.get("type").and_then(Value::as_str) == Some(kind) => {
            Some(map)
        }
        _ => None,
    }
}

/// Strip the line's `\n`.
fn without_newline(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

/// Pass 1: the header, the footer, the digest of the lines before it, the
/// checkpoints and what the file holds of each chain.
fn scan<R: BufRead>(
    input: &mut R,
    total: u64,
    progress: &mut dyn FnMut(Progress),
) -> std::io::Result<Scan> {
    let mut out = Scan::default();
    let mut digest = Sha256::new();
    let (mut line, mut previous) = (Vec::new(), Vec::new());
    let (mut read, mut reported) = (0u64, 0u64);
    loop {
        line.clear();
        let n = input.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        read += n as u64;
        let index = out.lines;
        if index > 0 {
            // The previous line is not the last: hash it, and read it
            // unless it is the header.
            let prev = without_newline(&previous);
            digest.update(prev);
            digest.update(b"\n");
            if index > 1 {
                out.body_line(index - 1, prev);
            }
        } else {
            out.header = object_of_type(without_newline(&line), "header");
            if serde_json::from_slice::<Map<String, Value>>(without_newline(&line)).is_err() {
                out.problem(ProblemKind::MalformedLine, 0, "not a JSON object".into());
            }
        }
        std::mem::swap(&mut line, &mut previous);
        out.lines += 1;
        if read - reported >= PROGRESS_EVERY {
            reported = read;
            progress(Progress {
                pass: 1,
                bytes: read,
                total,
            });
        }
    }
    if out.lines > 0 {
        let last = without_newline(&previous);
        out.footer = object_of_type(last, "footer");
        if out.footer.is_none() && out.lines > 1 {
            out.body_line(out.lines - 1, last);
        }
    }
    out.body_sha256 = hex::encode(digest.finalize());
    progress(Progress {
        pass: 1,
        bytes: read,
        total,
    });
    Ok(out)
}

/// The signed manifest against the file (docs/audit.md, "Checking the
/// manifest"); the manifest's chains, empty without one.
fn check_manifest(scan: &Scan, key: &VerifyingKey, problems: &mut Vec<ExportProblem>) {
    let mut chain_problems = Vec::new();
    let mut problem = |kind, chain_id: Option<&str>, detail: String| {
        let p = ExportProblem {
            kind,
            chain_id: chain_id.map(str::to_string),
            line: None,
            detail,
        };
        if kind == ProblemKind::ManifestChain {
            chain_problems.push(p);
        } else {
            problems.push(p);
        }
    };
    let manifest = scan
        .footer
        .as_ref()
        .and_then(|f| f.get("manifest"))
        .and_then(Value::as_object);
    let mut listed: BTreeMap<String, &Map<String, Value>> = BTreeMap::new();
    match (&scan.header, &scan.footer, manifest) {
        (Some(header), Some(footer), Some(manifest)) => {
            let message = serde_jcs::to_string(manifest).unwrap_or_default();
            let named = header
                .get("public_key")
                .and_then(Value::as_str)
                .unwrap_or("");
            let signature = footer
                .get("signature")
                .and_then(Value::as_str)
                .unwrap_or("");
            if signature.is_empty() {
                // An export made without the signing key: say so, not
                // "signed by key , not by …".
                problem(
                    ProblemKind::ManifestSignature,
                    None,
                    "it is not signed (exported without [audit] signing_key: nothing proves which server made it)"
                        .to_string(),
                );
            } else if let Err(why) = check_message(&message, named, signature, Some(key)) {
                problem(
                    ProblemKind::ManifestSignature,
                    None,
                    format!("its signature does not verify ({why})"),
                );
            }
            if manifest.get("lines") != Some(&Value::from(scan.lines - 1))
                || manifest.get("lines_sha256") != Some(&Value::from(scan.body_sha256.as_str()))
            {
                let signed = manifest.get("lines").unwrap_or(&Value::Null);
                let detail = if signed == &Value::from(scan.lines - 1) {
                    format!(
                        "the {} lines before the footer are not the signed ones (their SHA-256 differs: a line was changed)",
                        scan.lines - 1
                    )
                } else {
                    format!(
                        "the {} lines before the footer are not the signed ones (the manifest says {signed} lines)",
                        scan.lines - 1
                    )
                };
                problem(ProblemKind::ManifestLines, None, detail);
            }
            for (k, v) in header {
                if k != "type" && manifest.get(k).unwrap_or(&Value::Null) != v {
                    problem(
                        ProblemKind::ManifestHeader,
                        None,
                        format!("header member {k} differs from the signed one"),
                    );
                }
            }
            for chain in manifest
                .get("chains")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
            {
                if let Some(id) = chain.get("chain_id").and_then(Value::as_str) {
                    listed.insert(id.to_string(), chain);
                }
            }
        }
        _ => problem(
            ProblemKind::NoManifest,
            None,
            "no header, footer or manifest (cut, or a format before v2)".into(),
        ),
    }
    let names: BTreeSet<&String> = scan.held.keys().chain(listed.keys()).collect();
    let empty = ChainManifest::default();
    for chain in names {
        let held = scan.held.get(chain).unwrap_or(&empty);
        let have = [
            ("entries", Value::from(held.entries)),
            ("last_seq", Value::from(held.last_seq)),
            ("checkpoints", Value::from(held.checkpoints)),
            ("checkpointed_to_seq", Value::from(held.checkpointed_to_seq)),
            ("head_hash", Value::from(held.head_hash.as_str())),
        ];
        let says = listed.get(chain);
        if says.is_none_or(|m| have.iter().any(|(k, v)| m.get(*k) != Some(v))) {
            problem(
                ProblemKind::ManifestChain,
                Some(chain),
                format!(
                    "the export holds {} entries up to seq {} and {} checkpoints up to seq {}, the signed manifest says {}",
                    held.entries,
                    held.last_seq,
                    held.checkpoints,
                    held.checkpointed_to_seq,
                    says.map_or("nothing of it".to_string(), |m| Value::Object((*m).clone()).to_string())
                ),
            );
        }
    }
    // In docs/audit_verify.py's order: the manifest, the lines, the chains.
    problems.extend(scan.problems.iter().cloned());
    problems.append(&mut chain_problems);
}

/// The anchor's own checkpoints: each signed, each v2 one extending its
/// predecessor (in the anchor or the export) by its consistency proof.
fn check_anchor(
    by_chain: &BTreeMap<&str, Vec<&CheckpointRow>>,
    exported: &BTreeMap<String, Vec<CheckpointRow>>,
    key: &VerifyingKey,
) -> Vec<AnchorBreak> {
    let mut out = Vec::new();
    for (chain, cps) in by_chain {
        let mut known: HashMap<u64, &CheckpointRow> = HashMap::new();
        for cp in cps
            .iter()
            .copied()
            .chain(exported.get(*chain).into_iter().flatten())
        {
            known.insert(cp.to_seq, cp);
        }
        let first = cps.iter().map(|c| c.from_seq).min().unwrap_or(0);
        let mut broken = |seq, kind, detail| {
            out.push(AnchorBreak {
                chain_id: (*chain).to_string(),
                at: Break { seq, kind, detail },
            })
        };
        for cp in cps {
            let range = format!("anchored checkpoint {}..={}", cp.from_seq, cp.to_seq);
            if let Err(why) = check_signature(cp, Some(key)) {
                broken(
                    cp.to_seq,
                    BreakKind::BadSignature,
                    format!("{range}: {why}"),
                );
                continue;
            }
            if cp.v != 2 || cp.from_seq == 1 {
                continue;
            }
            let old_size = cp.from_seq.saturating_sub(1);
            match cp.from_seq.checked_sub(1).and_then(|s| known.get(&s)) {
                // The chain's first anchored checkpoint may follow a v1 one,
                // written before the anchor existed.
                None if cp.from_seq != first => broken(
                    old_size,
                    BreakKind::MissingCheckpoint,
                    format!("{range} follows a checkpoint ending at seq {old_size}, which is in neither the anchor nor the export"),
                ),
                Some(before) if before.v == 2 => {
                    let proof: Option<Vec<[u8; 32]>> =
                        cp.consistency.iter().map(|h| parse_hash(h)).collect();
                    let holds = match (parse_hash(&before.tree_root), parse_hash(&cp.tree_root), proof) {
                        (Some(old), Some(new), Some(proof)) => {
                            merkle::verify_consistency(old_size, cp.to_seq, &old, &new, &proof)
                        }
                        _ => false,
                    };
                    if !holds {
                        broken(
                            cp.to_seq,
                            BreakKind::CheckpointMismatch,
                            format!("{range} does not extend its predecessor: its consistency proof from tree size {old_size} does not hold"),
                        );
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// One chain of a search export: each entry is verified on its own.
struct SearchChain<'a> {
    /// The highest `to_seq` of a checkpoint in the export or the anchor.
    covered: u64,
    by_to_seq: HashMap<u64, &'a CheckpointRow>,
    /// Whether the checkpoint ending at a seq is validly signed (checked once).
    signed: HashMap<u64, bool>,
    /// A stored checkpoint the anchor lacks (entries are then not checked).
    unanchored: Option<Break>,
    /// The first failing entry in seq order.
    failed: Option<Break>,
    /// `(seq, proven)` of every entry that verified.
    passed: Vec<(u64, bool)>,
    used: BTreeSet<u64>,
}

impl SearchChain<'_> {
    fn check(&mut self, row: &EntryRow, proof: Option<InclusionRef>, key: &VerifyingKey) {
        let seq = row.seq;
        let fail = |kind, detail| Break { seq, kind, detail };
        let hash = entry_hash(&parse_hash(&row.prev_hash).unwrap_or(GENESIS), row);
        let result = if hex::encode(hash) != row.entry_hash {
            Err(fail(
                BreakKind::Edited,
                format!(
                    "entry {seq} does not hash to its stored entry_hash: its content was changed"
                ),
            ))
        } else if let Some(proof) = proof {
            let signed = self
                .by_to_seq
                .get(&proof.checkpoint_to_seq)
                .copied()
                .filter(|cp| {
                    *self
                        .signed
                        .entry(cp.to_seq)
                        .or_insert_with(|| check_signature(cp, Some(key)).is_ok())
                });
            match signed {
                Some(cp) => {
                    let path: Option<Vec<[u8; 32]>> =
                        proof.path.iter().map(|h| parse_hash(h)).collect();
                    let index = seq.checked_sub(cp.from_seq);
                    let size = (cp.to_seq + 1).checked_sub(cp.from_seq);
                    let holds = match (path, index, size, parse_hash(&cp.merkle_root)) {
                        (Some(path), Some(index), Some(size), Some(root)) => {
                            merkle::verify_inclusion(&hash, index, size, &path, &root)
                        }
                        _ => false,
                    };
                    if holds {
                        self.used.insert(cp.to_seq);
                        Ok(true)
                    } else {
                        Err(fail(
                            BreakKind::CheckpointMismatch,
                            format!(
                                "entry {seq}: its inclusion proof does not lead to the merkle root of checkpoint {}..={}",
                                cp.from_seq, cp.to_seq
                            ),
                        ))
                    }
                }
                _ => Err(fail(
                    BreakKind::BadSignature,
                    format!(
                        "entry {seq}: the checkpoint its proof names (to_seq {}) is missing or badly signed",
                        proof.checkpoint_to_seq
                    ),
                )),
            }
        } else if seq <= self.covered {
            Err(fail(
                BreakKind::Unproven,
                format!(
                    "entry {seq} is said to be unverifiable yet, but a signed checkpoint covers the chain up to seq {}",
                    self.covered
                ),
            ))
        } else {
            Ok(false)
        };
        match result {
            Ok(proven) => self.passed.push((seq, proven)),
            Err(b) => {
                if self.failed.as_ref().is_none_or(|f| b.seq < f.seq) {
                    self.failed = Some(b);
                }
            }
        }
    }

    fn finish(self, chain_id: &str) -> ExportChainReport {
        let first_break = self.unanchored.or(self.failed);
        let before = |seq: u64| first_break.as_ref().is_none_or(|b| seq < b.seq);
        let passed: Vec<bool> = self
            .passed
            .iter()
            .filter(|(seq, _)| before(*seq))
            .map(|(_, proven)| *proven)
            .collect();
        ExportChainReport {
            chain: ChainReport {
                chain_id: chain_id.to_string(),
                entries: passed.len() as u64,
                checkpoints: self.used.len() as u64,
                verified_to_seq: None,
                first_break,
            },
            unverifiable_yet: Some(passed.iter().filter(|p| !**p).count() as u64),
        }
    }
}

/// Either kind of chain check, fed entries in file order.
enum Chain<'a> {
    Whole(Box<ChainVerifier>),
    Search(Box<SearchChain<'a>>),
}

/// Verify the export read from `input` against `trusted` (the export's own
/// key when `None`), held to `anchor` (every checkpoint of an anchor file)
/// when given. `Err` only when the input cannot be read; everything wrong
/// with the export is in the report.
pub fn verify_export<R: BufRead + Seek>(
    input: &mut R,
    trusted: Option<&VerifyingKey>,
    anchor: Option<&[CheckpointRow]>,
    progress: &mut dyn FnMut(Progress),
) -> std::io::Result<ExportReport> {
    let started = Instant::now();
    let total = input.seek(SeekFrom::End(0))?;
    input.seek(SeekFrom::Start(0))?;
    let scan = scan(input, total, progress)?;
    let header = scan.header.clone().unwrap_or_default();
    let text = |k: &str| header.get(k).and_then(Value::as_str).map(str::to_string);
    let exported_at_ms = header.get("exported_at_ms").and_then(Value::as_u64);
    let key = match trusted {
        Some(key) => Some(*key),
        None => header
            .get("public_key")
            .and_then(Value::as_str)
            .and_then(parse_public_key),
    };
    let mut report = ExportReport {
        ok: false,
        verdict: Verdict::Broken,
        scope: text("scope").unwrap_or_default(),
        org: text("org"),
        team: text("team"),
        exported_at_ms,
        public_key: key.map(|k| hex::encode(k.to_bytes())),
        key_from_header: trusted.is_none(),
        anchored_checkpoints: anchor.map(|a| a.len() as u64),
        lines: scan.lines,
        problems: Vec::new(),
        anchor_breaks: Vec::new(),
        chains: Vec::new(),
        entries: 0,
        checkpoints: 0,
        elapsed_ms: 0,
        entries_per_s: 0,
    };
    let Some(key) = key else {
        report.problems.push(ExportProblem {
            kind: ProblemKind::NoKey,
            chain_id: None,
            line: None,
            detail:
                "no trusted public key given and none usable in the header: nothing can be proven"
                    .into(),
        });
        return Ok(report);
    };
    check_manifest(&scan, &key, &mut report.problems);

    let mut anchored: BTreeMap<&str, Vec<&CheckpointRow>> = BTreeMap::new();
    for cp in anchor.into_iter().flatten() {
        anchored.entry(cp.chain_id.as_str()).or_default().push(cp);
    }
    if anchor.is_some() {
        report.anchor_breaks = check_anchor(&anchored, &scan.checkpoints, &key);
    }
    // Checkpoints cut after the anchor was read cannot be in it.
    let horizon_ms = anchor
        .into_iter()
        .flatten()
        .map(|c| c.created_at_ms)
        .max()
        .unwrap_or(0);
    let as_of_ms = exported_at_ms.unwrap_or(0);
    let search = report.scope == "search";
    let mut names: BTreeSet<String> = scan.held.keys().cloned().collect();
    if !search {
        // An anchored chain of the export's org (and team) that the export
        // lacks was dropped: it is verified with no entries.
        let org = header.get("org").unwrap_or(&Value::Null);
        let team = header.get("team").filter(|t| !t.is_null());
        for (chain, cps) in &anchored {
            if cps.iter().any(|c| {
                c.created_at_ms <= as_of_ms
                    && org == &Value::from(c.org_id.as_str())
                    && team.is_none_or(|t| t == &Value::from(c.team_id.as_str()))
            }) {
                names.insert((*chain).to_string());
            }
        }
    }
    let anchored_ids: HashSet<(u64, u64, &str)> = anchor
        .into_iter()
        .flatten()
        .map(|c| (c.from_seq, c.to_seq, c.signature.as_str()))
        .collect();
    let no_checkpoints = Vec::new();
    let mut chains: BTreeMap<String, Chain<'_>> = BTreeMap::new();
    for name in names {
        let stored = scan.checkpoints.get(&name).unwrap_or(&no_checkpoints);
        let own_anchored = anchored.get(name.as_str());
        let chain = if search {
            let mut by_to_seq = HashMap::new();
            let mut unanchored = None;
            for cp in stored {
                by_to_seq.insert(cp.to_seq, cp);
                if anchor.is_some()
                    && cp.v == 2
                    && cp.created_at_ms <= horizon_ms
                    && !anchored_ids.contains(&(cp.from_seq, cp.to_seq, cp.signature.as_str()))
                {
                    unanchored = Some(Break {
                        seq: cp.to_seq,
                        kind: BreakKind::Unanchored,
                        detail: format!(
                            "signed checkpoint {}..={} is in the export but not in the anchor",
                            cp.from_seq, cp.to_seq
                        ),
                    });
                }
            }
            Chain::Search(Box::new(SearchChain {
                covered: stored
                    .iter()
                    .chain(own_anchored.into_iter().flatten().copied())
                    .map(|c| c.to_seq)
                    .max()
                    .unwrap_or(0),
                by_to_seq,
                signed: HashMap::new(),
                unanchored,
                failed: None,
                passed: Vec::new(),
                used: BTreeSet::new(),
            }))
        } else {
            let held_to = anchor.map(|_| Anchored {
                checkpoints: own_anchored
                    .into_iter()
                    .flatten()
                    .map(|c| (*c).clone())
                    .collect(),
                horizon_ms,
                as_of_ms: Some(as_of_ms),
            });
            Chain::Whole(Box::new(ChainVerifier::anchored(
                &name,
                stored.clone(),
                held_to,
                Some(&key),
            )))
        };
        chains.insert(name, chain);
    }

    // Pass 2: the entries, in file order, each to its chain.
    input.seek(SeekFrom::Start(0))?;
    let mut line = Vec::new();
    let (mut index, mut read, mut reported) = (0u64, 0u64, 0u64);
    let mut entry_lines = scan.entry_lines.iter().copied().peekable();
    while entry_lines.peek().is_some() {
        line.clear();
        let n = input.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        read += n as u64;
        if read - reported >= PROGRESS_EVERY {
            reported = read;
            progress(Progress {
                pass: 2,
                bytes: read,
                total,
            });
        }
        let this = index;
        index += 1;
        if entry_lines.peek() != Some(&this) {
            continue;
        }
        entry_lines.next();
        let bytes = without_newline(&line);
        let row: EntryRow = match serde_json::from_slice(bytes) {
            Ok(row) => row,
            Err(e) => {
                report.problems.push(ExportProblem {
                    kind: ProblemKind::MalformedLine,
                    chain_id: None,
                    line: Some(this + 1),
                    detail: format!("not an entry: {e}"),
                });
                continue;
            }
        };
        match chains.get_mut(&row.chain_id) {
            Some(Chain::Whole(verifier)) => {
                verifier.push(&row);
            }
            Some(Chain::Search(chain)) => {
                if chain.unanchored.is_some() {
                    continue;
                }
                match serde_json::from_slice::<ProofLine>(bytes) {
                    Ok(p) => chain.check(&row, p.proof.and_then(|p| p.proof), &key),
                    Err(e) => report.problems.push(ExportProblem {
                        kind: ProblemKind::MalformedLine,
                        chain_id: None,
                        line: Some(this + 1),
                        detail: format!("not a search entry's proof: {e}"),
                    }),
                }
            }
            None => {}
        }
    }
    progress(Progress {
        pass: 2,
        bytes: total,
        total,
    });
    report.chains = chains
        .into_iter()
        .map(|(name, chain)| match chain {
            Chain::Whole(verifier) => ExportChainReport {
                chain: (*verifier).finish(),
                unverifiable_yet: None,
            },
            Chain::Search(chain) => (*chain).finish(&name),
        })
        .collect();
    report.entries = report.chains.iter().map(|c| c.chain.entries).sum();
    report.checkpoints = report.chains.iter().map(|c| c.chain.checkpoints).sum();
    let broken = !report.problems.is_empty()
        || !report.anchor_breaks.is_empty()
        || report.chains.iter().any(|c| c.chain.first_break.is_some());
    report.verdict = Verdict::of(broken, report.entries);
    report.ok = report.verdict == Verdict::Verified;
    let elapsed = started.elapsed();
    report.elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rate = (report.entries as f64 / elapsed.as_secs_f64().max(1e-6)) as u64;
    report.entries_per_s = rate;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::super::verify::tests::{chain, checkpoints};
    use super::*;
    use tollgate_contract::audit::checkpoint::CheckpointSigner;

    /// A whole-chain (or search) export of `rows` and `cps` as `trail.rs`
    /// writes one, signed by `signer`.
    fn export(
        scope: &str,
        rows: &[Value],
        cps: &[CheckpointRow],
        signer: &CheckpointSigner,
    ) -> Vec<u8> {
        let header = serde_json::json!({
            "type": "header", "format": "tollgate.audit.export.v2", "scope": scope,
            "org": "o", "team": null, "public_key": signer.public_key_hex(),
            "exported_at": "2026-03-10T10:00:00.000Z", "exported_at_ms": 2_000_000_000_000u64,
        });
        let mut lines = vec![header.to_string()];
        let cp_lines = cps
            .iter()
            .map(tollgate_contract::audit::checkpoint::checkpoint_line);
        let entry_lines = rows.iter().map(|r| {
            let mut v = r.clone();
            v["type"] = Value::from("entry");
            v.to_string()
        });
        if scope == "search" {
            lines.extend(entry_lines.chain(cp_lines));
        } else {
            lines.extend(cp_lines.chain(entry_lines));
        }
        let mut held = ChainManifest {
            chain_id: "t".into(),
            ..ChainManifest::default()
        };
        for r in rows {
            held.entries += 1;
            held.last_seq = r["seq"].as_u64().unwrap();
            held.head_hash = r["entry_hash"].as_str().unwrap().into();
        }
        held.checkpoints = cps.len() as u64;
        held.checkpointed_to_seq = cps.iter().map(|c| c.to_seq).max().unwrap_or(0);
        let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let mut manifest = header.as_object().unwrap().clone();
        manifest.remove("type");
        manifest.insert("type".into(), "tollgate.audit.export.manifest".into());
        manifest.insert("v".into(), 2.into());
        manifest.insert("chains".into(), serde_json::to_value(vec![held]).unwrap());
        manifest.insert("lines".into(), lines.len().into());
        manifest.insert(
            "lines_sha256".into(),
            hex::encode(Sha256::digest(body.as_bytes())).into(),
        );
        let signature = signer.sign(&serde_jcs::to_string(&manifest).unwrap());
        let footer =
            serde_json::json!({"type": "footer", "manifest": manifest, "signature": signature});
        format!("{body}{footer}\n").into_bytes()
    }

    fn verify(bytes: &[u8], anchor: Option<&[CheckpointRow]>) -> ExportReport {
        let mut calls = 0;
        let report = verify_export(
            &mut std::io::Cursor::new(bytes.to_vec()),
            None,
            anchor,
            &mut |_| calls += 1,
        )
        .unwrap();
        assert!(calls >= 1, "progress is reported at the end of each pass");
        report
    }

    fn setup() -> (CheckpointSigner, Vec<Value>, Vec<CheckpointRow>) {
        let signer = CheckpointSigner::from_hex_seed(&"11".repeat(32)).unwrap();
        let rows = chain(25);
        let cps = checkpoints(&rows[..20], &signer, 10);
        let rows = rows
            .iter()
            .map(|r| serde_json::to_value(r).unwrap())
            .collect();
        (signer, rows, cps)
    }

    fn breaks(report: &ExportReport) -> Vec<(u64, BreakKind)> {
        report
            .chains
            .iter()
            .filter_map(|c| c.chain.first_break.as_ref().map(|b| (b.seq, b.kind)))
            .collect()
    }

    fn kinds(report: &ExportReport) -> Vec<ProblemKind> {
        report.problems.iter().map(|p| p.kind).collect()
    }

    /// An export made without the signing key is named as unsigned, not as
    /// "signed by key , not by the trusted key".
    #[test]
    fn an_unsigned_export_is_called_unsigned() {
        let (signer, rows, cps) = setup();
        let text = String::from_utf8(export("chains", &rows, &cps, &signer)).unwrap();
        let footer_at = text.trim_end().rfind('\n').unwrap() + 1;
        let mut footer: Value = serde_json::from_str(text[footer_at..].trim_end()).unwrap();
        footer["signature"] = Value::Null;
        let unsigned = format!("{}{footer}\n", &text[..footer_at]);
        let trusted = parse_public_key(signer.public_key_hex()).unwrap();
        let report = verify_export(
            &mut std::io::Cursor::new(unsigned.into_bytes()),
            Some(&trusted),
            None,
            &mut |_| {},
        )
        .unwrap();
        assert!(!report.ok);
        assert_eq!(kinds(&report), vec![ProblemKind::ManifestSignature]);
        let said = report.problems[0].detail.clone();
        assert!(said.starts_with("it is not signed"), "{said}");
    }

    #[test]
    fn intact_whole_chain_export_verifies_and_tampering_is_located() {
        let (signer, rows, cps) = setup();
        let report = verify(&export("chains", &rows, &cps, &signer), None);
        assert!(report.ok, "{:?}", report.lines());
        assert_eq!((report.entries, report.checkpoints), (25, 2));
        assert!(report.key_from_header);

        // Edited in the file: the digest and the chain tell.
        let bytes = export("chains", &rows, &cps, &signer);
        let text =
            String::from_utf8(bytes)
                .unwrap()
                .replacen("\"model\":\"m\"", "\"model\":\"x\"", 1);
        let report = verify(text.as_bytes(), None);
        assert_eq!(kinds(&report), vec![ProblemKind::ManifestLines]);
        assert_eq!(breaks(&report), vec![(1, BreakKind::Edited)]);

        // Cut after the first checkpoint, re-signed by the attacker's key:
        // the trusted key is the header's, so only the anchor tells.
        let other = CheckpointSigner::from_hex_seed(&"22".repeat(32)).unwrap();
        let cut = export("chains", &rows[..10], &cps[..1], &other);
        let report = verify(&cut, None);
        assert_eq!(breaks(&report), vec![(10, BreakKind::BadSignature)]);
        let cut = export("chains", &rows[..10], &cps[..1], &signer);
        assert!(verify(&cut, None).ok);
        let report = verify(&cut, Some(&cps));
        assert!(report.problems.is_empty());
        assert_eq!(breaks(&report), vec![(11, BreakKind::Truncated)]);
    }

    #[test]
    fn an_array_line_is_no_entry() {
        // serde reads a struct from an array of its members in order: such
        // a line counted as an entry of chain c before.
        let (signer, rows, cps) = setup();
        let bytes = export("chains", &rows, &cps, &signer);
        let mut text = String::from_utf8(bytes).unwrap();
        let second_line = text.find('\n').unwrap() + 1;
        text.insert_str(second_line, "[\"entry\", \"c\", 1, \"h\"]\n");
        let report = verify(text.as_bytes(), None);
        assert!(!report.ok);
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.kind == ProblemKind::MalformedLine && p.detail == "not a JSON object"),
            "{:?}",
            report.lines()
        );
        assert!(
            report.chains.iter().all(|c| c.chain.chain_id != "c"),
            "{:?}",
            report.lines()
        );
    }

    #[test]
    fn search_export_claims_are_checked_against_the_anchor() {
        let (signer, rows, cps) = setup();
        // Entry 12 said to be unverifiable yet, with the export holding only
        // the first checkpoint: fine alone, `unproven` next to the anchor.
        let mut row = rows[11].clone();
        row["proof"] =
            serde_json::json!({"status": "unverifiable_yet", "proof": null, "checkpoint": null});
        let bytes = export("search", &[row], &cps[..1], &signer);
        let report = verify(&bytes, None);
        assert!(report.ok, "{:?}", report.lines());
        assert_eq!(report.chains[0].unverifiable_yet, Some(1));
        let report = verify(&bytes, Some(&cps));
        assert_eq!(breaks(&report), vec![(12, BreakKind::Unproven)]);
    }

    #[test]
    fn no_key_and_no_footer_are_reported() {
        let (signer, rows, cps) = setup();
        let bytes = export("chains", &rows, &cps, &signer);
        let text = String::from_utf8(bytes).unwrap();
        let without_footer: String = text
            .lines()
            .take(text.lines().count() - 1)
            .map(|l| format!("{l}\n"))
            .collect();
        let report = verify(without_footer.as_bytes(), None);
        assert_eq!(
            kinds(&report),
            vec![ProblemKind::NoManifest, ProblemKind::ManifestChain]
        );
        let no_key = text.replacen(signer.public_key_hex(), "", 1);
        let report = verify(no_key.as_bytes(), None);
        assert!(!report.ok);
        assert_eq!(kinds(&report), vec![ProblemKind::NoKey]);
    }
}
