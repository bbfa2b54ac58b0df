//! An export (`trail.rs`) as a stream of byte chunks, for an HTTP body:
//! `GET /api/v1/audit/export` and the compliance page's download write the
//! very lines `tollgate audit export` writes to its file, as they are
//! read, so memory holds a chunk, not the export.
//!
//! The export is written by a task into one end of an in-memory pipe of
//! [`CHUNK`] bytes and the stream reads the other end: the task waits
//! while the client reads slowly, and stops at its next write when the
//! client hangs up (the stream, holding the task, aborts it when dropped).
//! The footer (counts and signed manifest) is written last, as the format
//! defines. An export that fails after its first chunk ends the stream
//! with an error, so the HTTP answer ends unfinished (no last chunk) and
//! clients report a failed download rather than a short export.

use clickhouse::Client;
use futures::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::task::JoinHandle;

use super::search::SearchQuery;
use super::trail::{export, export_file_name, export_search, ExportError, ExportSummary};
use tollgate_contract::audit::checkpoint::CheckpointSigner;

/// Bytes written and read at a time (and held in the pipe at most).
pub const CHUNK: usize = 64 * 1024;

/// What an export holds (`docs/audit.md`, "Export and offline
/// verification").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportScope {
    /// Every chain holding the org's (and team's) entries, whole.
    Chains { org: String, team: Option<String> },
    /// The entries of a search, each with its inclusion proof.
    Search(Box<SearchQuery>),
}

impl ExportScope {
    /// What an export of `query` holds: the whole chains of its org (and
    /// team) when it filters by nothing else and has no time window, else
    /// the search's entries with their proofs. The API and the compliance
    /// page both ask this (their two copies disagreed on a team).
    pub fn of(query: SearchQuery) -> Self {
        let org = query.filter("org").to_string();
        let whole_chains = !org.is_empty()
            && query.from_ms.is_none()
            && query.to_ms.is_none()
            && super::search::FILTERS
                .iter()
                .all(|(name, _)| matches!(*name, "org" | "team") || query.filter(name).is_empty());
        if whole_chains {
            let team = Some(query.filter("team"))
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            Self::Chains { org, team }
        } else {
            Self::Search(Box::new(query))
        }
    }

    /// Write the export to `out`.
    pub async fn write<W: AsyncWrite + Unpin>(
        &self,
        client: &Client,
        signer: Option<&CheckpointSigner>,
        out: &mut W,
    ) -> Result<ExportSummary, ExportError> {
        match self {
            Self::Chains { org, team } => export(client, org, team.as_deref(), signer, out).await,
            Self::Search(query) => export_search(client, query, signer, out).await,
        }
    }

    /// The name the export is downloaded as ([`export_file_name`]).
    pub fn file_name(&self, now: chrono::DateTime<chrono::Utc>) -> String {
        match self {
            Self::Chains { org, team } => export_file_name(org, team.as_deref(), false, now),
            Self::Search(query) => {
                export_file_name(query.filter("org"), Some(query.filter("team")), true, now)
            }
        }
    }
}

/// Exports streamed at once by this process, at most: each holds a
/// ClickHouse query open for as long as its client reads, so a few slow
/// readers must not hold them all (review; ClickHouse allows 100).
pub const MAX_EXPORTS: usize = 4;

static EXPORTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_EXPORTS);

/// The writing task, aborted when the stream reading it is dropped, and
/// the export's place among [`MAX_EXPORTS`], given back then.
struct Writing(
    JoinHandle<Result<ExportSummary, ExportError>>,
    // Held, not read: dropped with the stream.
    #[allow(dead_code)] Option<tokio::sync::SemaphorePermit<'static>>,
);

impl Drop for Writing {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The export of `scope` as chunks of at most [`CHUNK`] bytes; an
/// `Err` item (last) when it could not be finished.
pub fn stream(
    client: Client,
    scope: ExportScope,
    signer: Option<CheckpointSigner>,
) -> impl Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    stream_holding(client, scope, signer, None)
}

fn stream_holding(
    client: Client,
    scope: ExportScope,
    signer: Option<CheckpointSigner>,
    place: Option<tokio::sync::SemaphorePermit<'static>>,
) -> impl Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    let (writer, reader) = tokio::io::duplex(CHUNK);
    let writing = Writing(
        tokio::spawn(async move {
            let mut out = BufWriter::with_capacity(CHUNK, writer);
            let summary = scope.write(&client, signer.as_ref(), &mut out).await?;
            out.shutdown().await?;
            Ok(summary)
        }),
        place,
    );
    chunks(reader, writing)
}

/// [`stream`], once its first chunk is read: an export whose ClickHouse
/// cannot be read fails here, before an answer has started (a 503 rather
/// than a broken download), and so does one past [`MAX_EXPORTS`].
pub async fn started(
    client: Client,
    scope: ExportScope,
    signer: Option<CheckpointSigner>,
) -> Result<impl Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static, std::io::Error> {
    use futures::StreamExt;
    let place = EXPORTS.try_acquire().map_err(|_| {
        std::io::Error::other(format!(
            "{MAX_EXPORTS} exports are streaming, the most at once; try again when one has finished"
        ))
    })?;
    let mut chunks = Box::pin(stream_holding(client, scope, signer, Some(place)));
    let first = match chunks.next().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(err)) => return Err(err),
        None => Vec::new(),
    };
    Ok(futures::stream::once(async move { Ok(first) }).chain(chunks))
}

fn chunks<R: AsyncRead + Unpin + Send + 'static>(
    reader: R,
    writing: Writing,
) -> impl Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    futures::stream::unfold(Some((reader, writing)), |state| async move {
        let (mut reader, mut writing) = state?;
        let mut chunk = vec![0u8; CHUNK];
        match reader.read(&mut chunk).await {
            Ok(0) => {}
            Ok(n) => {
                chunk.truncate(n);
                return Some((Ok(chunk), Some((reader, writing))));
            }
            Err(err) => return Some((Err(err), None)),
        }
        // The pipe ended: the task finished, or stopped on an error.
        let finished = match (&mut writing.0).await {
            Ok(Ok(summary)) => {
                tracing::info!(
                    chains = summary.chains,
                    entries = summary.entries,
                    checkpoints = summary.checkpoints,
                    "audit export streamed"
                );
                return None;
            }
            Ok(Err(err)) => err.to_string(),
            Err(err) => err.to_string(),
        };
        tracing::error!(err = %finished, "audit export stopped before its footer");
        Some((
            Err(std::io::Error::other(format!(
                "the export stopped before its footer: {finished}"
            ))),
            None,
        ))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use futures::StreamExt;

    /// The API's and the page's exports hold the same for one query:
    /// whole chains for an org (and team) alone, else the search.
    #[test]
    fn an_org_and_team_alone_export_their_whole_chains() {
        let scope = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            ExportScope::of(SearchQuery::from_pairs(&pairs).unwrap())
        };
        assert!(matches!(
            scope(&[("org", "acme"), ("team", "t")]),
            ExportScope::Chains { org, team: Some(team) } if org == "acme" && team == "t"
        ));
        assert!(matches!(
            scope(&[("org", "acme")]),
            ExportScope::Chains { team: None, .. }
        ));
        assert!(matches!(
            scope(&[("org", "acme"), ("user", "u")]),
            ExportScope::Search(_)
        ));
        assert!(matches!(
            scope(&[("org", "acme"), ("from", "2026-01-01")]),
            ExportScope::Search(_)
        ));
    }

    /// Past [`MAX_EXPORTS`] an export is refused before it reads anything.
    #[tokio::test]
    async fn exports_past_the_most_at_once_are_refused() {
        let held: Vec<_> = (0..MAX_EXPORTS)
            .map(|_| EXPORTS.try_acquire().unwrap())
            .collect();
        let unreachable = Client::default().with_url("http://127.0.0.1:1");
        let scope = ExportScope::Chains {
            org: "acme".into(),
            team: None,
        };
        let Err(err) = started(unreachable, scope, None).await else {
            panic!("a fifth export started");
        };
        assert!(err.to_string().contains("the most at once"), "{err}");
        drop(held);
        assert_eq!(EXPORTS.available_permits(), MAX_EXPORTS);
    }

    fn writing(result: Result<ExportSummary, ExportError>) -> Writing {
        Writing(tokio::spawn(async move { result }), None)
    }

    #[tokio::test]
    async fn chunks_end_cleanly_only_when_the_export_finished() {
        let body = vec![b'x'; CHUNK * 2 + 10];
        let read: Vec<_> = chunks(
            std::io::Cursor::new(body.clone()),
            writing(Ok(Default::default())),
        )
        .collect()
        .await;
        assert!(read.iter().all(Result::is_ok));
        assert!(read.iter().all(|c| c.as_ref().unwrap().len() <= CHUNK));
        let joined: Vec<u8> = read.into_iter().flat_map(Result::unwrap).collect();
        assert_eq!(joined, body);

        let failed = ExportError::Io(std::io::Error::other("clickhouse went away"));
        let read: Vec<_> = chunks(
            std::io::Cursor::new(b"{\"type\":\"header\"}\n".to_vec()),
            writing(Err(failed)),
        )
        .collect()
        .await;
        assert_eq!(read.len(), 2);
        let err = read[1].as_ref().unwrap_err().to_string();
        assert!(
            err.contains("before its footer") && err.contains("went away"),
            "{err}"
        );
    }
}
