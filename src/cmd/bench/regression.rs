//! `tollgate bench regression`: the benches the test suite runs on every
//! change, at sizes that take about three minutes in a release build, and
//! their figures set beside a recorded baseline. Issue 17 found the
//! pipeline eight times slower than the docs said, because no benchmark
//! ran on each change; this one does, and says so when a figure drifts
//! past its tolerance. It never fails on a figure (speed is for people to
//! judge, not for an assertion); it fails when a bench cannot run.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use super::figures::{compare, Baseline, Figures, Row, CATALOGUE};
use super::{audit, ingest, otlp, proxy, reports};
use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// The baseline to compare with (JSON, written by `--record`).
    #[arg(long, default_value = "bench/baseline.json")]
    pub baseline: PathBuf,
    /// Write this run's figures and the comparison here (JSON).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Make this run the baseline: write it to `--baseline`.
    #[arg(long)]
    pub record: bool,
    /// Run every bench at this fraction of its size (for checking the
    /// command itself; a scaled run's figures do not compare with a
    /// baseline and cannot be recorded).
    #[arg(long, default_value_t = 1.0, value_parser = parse_scale)]
    pub scale: f64,
}

fn parse_scale(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(scale) if scale > 0.0 && scale <= 1.0 => Ok(scale),
        _ => Err(format!(
            "{value:?} is not a scale: expected a number above 0 and at most 1"
        )),
    }
}

/// The sizes of the runs: large enough to leave the warm-up behind, small
/// enough for every change.
struct Sizes {
    ingest_events: u64,
    proxy_rps: u32,
    proxy_seconds: u64,
    audit_entries: u64,
    report_calls: u64,
    report_requests: usize,
    api_calls: u64,
}

impl Sizes {
    fn scaled(scale: f64) -> Sizes {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let of = |full: u64, least: u64| ((full as f64 * scale).round() as u64).max(least);
        Sizes {
            ingest_events: of(150_000, 1_000),
            proxy_rps: u32::try_from(of(1_000, 10)).unwrap_or(1_000),
            proxy_seconds: 5,
            audit_entries: of(200_000, 1_000),
            report_calls: of(200_000, 1_000),
            report_requests: usize::try_from(of(10, 2)).unwrap_or(10),
            api_calls: of(50_000, 1_000),
        }
    }
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<()> {
    let baseline = match std::fs::read_to_string(&args.baseline) {
        Ok(text) => Some(
            Baseline::parse(&text)
                .map_err(|why| anyhow::anyhow!("{}: {why}", args.baseline.display()))?,
        ),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => {
            return Err(err).with_context(|| format!("cannot read {}", args.baseline.display()))
        }
    };
    anyhow::ensure!(
        !(args.record && args.scale < 1.0),
        "--record takes a full-size run: drop --scale"
    );
    let size = Sizes::scaled(args.scale);
    if args.scale < 1.0 {
        eprintln!(
            "bench regression: every bench at {} of its size; the figures do not compare with the baseline",
            args.scale
        );
    }
    if cfg!(debug_assertions) {
        eprintln!("bench regression: this is a debug build; its figures do not compare with a release baseline");
    }

    let mut figures = Figures::default();
    let mut failed = Vec::new();
    // The proxy first, while ClickHouse is not merging what another bench
    // wrote (its tail shares the two cores); ingest last for the same
    // reason.
    let benches: [(&str, String); 6] = [
        (
            "proxy",
            format!(
                "{} requests/s per path for {} s, budgets on",
                size.proxy_rps, size.proxy_seconds
            ),
        ),
        (
            "proxy-stream",
            format!(
                "{} streamed requests/s per path for {} s, budgets on",
                size.proxy_rps, size.proxy_seconds
            ),
        ),
        (
            "audit",
            format!("{} entries verified, 3 rounds", size.audit_entries),
        ),
        (
            "reports",
            format!("every report and page over {} calls", size.report_calls),
        ),
        (
            "ingest-api",
            format!(
                "{} calls as JSON events, then as OTLP spans, 1,000 a request",
                size.api_calls
            ),
        ),
        (
            "ingest",
            format!("{} events end to end", size.ingest_events),
        ),
    ];
    for (i, (name, what)) in benches.iter().enumerate() {
        eprintln!(
            "bench regression: [{}/{}] {name}: {what}",
            i + 1,
            benches.len()
        );
        let result = match *name {
            "proxy" => proxy::run(proxy_args(&size, false), config).await,
            "proxy-stream" => proxy::run(proxy_args(&size, true), config).await,
            "audit" => audit::run(audit_args(&size), config).await,
            "reports" => reports::run(reports_args(&size), config).await,
            "ingest-api" => otlp::run(api_args(&size), config).await,
            _ => ingest::run(ingest_args(&size), config).await,
        };
        match result {
            Ok(taken) => figures.extend(taken),
            Err(err) => {
                eprintln!("bench regression: {name} failed: {err:#}");
                failed.push(*name);
            }
        }
    }

    let run = Baseline {
        recorded: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        commit: commit(),
        machine: machine(),
        figures,
    };
    let rows = compare(&run.figures, baseline.as_ref().map(|b| &b.figures));
    print_table(&args.baseline, baseline.as_ref(), &run, &rows);
    if let Some(out) = &args.out {
        let report = serde_json::json!({
            "run": run,
            "baseline": args.baseline,
            "rows": rows,
            "flagged": rows.iter().filter(|r| r.flagged).map(|r| r.key).collect::<Vec<_>>(),
        });
        write_json(out, &report)?;
    }
    if args.record {
        anyhow::ensure!(
            failed.is_empty(),
            "not recorded: a baseline needs every bench's figures"
        );
        write_json(&args.baseline, &run)?;
        println!("bench regression: recorded as {}", args.baseline.display());
    }
    anyhow::ensure!(
        failed.is_empty(),
        "benches that could not run: {}",
        failed.join(", ")
    );
    Ok(())
}

fn ingest_args(size: &Sizes) -> ingest::Args {
    ingest::Args {
        events: size.ingest_events,
        chunk: 5_000,
        timeout_secs: 600,
        keep: false,
        seed: 1,
        processors: 1,
        rate: None,
    }
}

fn api_args(size: &Sizes) -> otlp::Args {
    otlp::Args {
        calls: size.api_calls,
        batch: 1_000,
        concurrency: 4,
        timeout_secs: 600,
        keep: false,
        seed: 1,
    }
}

fn proxy_args(size: &Sizes, stream: bool) -> proxy::Args {
    proxy::Args {
        rps: size.proxy_rps,
        duration: size.proxy_seconds,
        upstream_ms: 10,
        stream,
        tokens: 16,
        budget: true,
        durability: None,
        wal_fsync_interval_ms: None,
    }
}

fn audit_args(size: &Sizes) -> audit::Args {
    audit::Args {
        entries: size.audit_entries,
        chains: 4,
        checkpoint_every: 1_000,
        rounds: 3,
        chunk: 100_000,
        keep: false,
        seed: 1,
    }
}

fn reports_args(size: &Sizes) -> reports::Args {
    reports::Args {
        calls: size.report_calls,
        days: 30,
        requests: size.report_requests,
        warmups: 2,
        chunk: 1_000_000,
        keep: false,
    }
}

fn print_table(path: &Path, baseline: Option<&Baseline>, run: &Baseline, rows: &[Row]) {
    println!();
    match baseline {
        Some(b) => {
            println!(
                "bench regression: against {} (recorded {}, commit {}, {})",
                path.display(),
                b.recorded,
                b.commit.as_deref().unwrap_or("unknown"),
                b.machine
            );
            if b.machine != run.machine {
                println!(
                    "  this machine differs ({}): the ratios compare machines too",
                    run.machine
                );
            }
        }
        None => println!(
            "bench regression: no baseline at {} (take one with --record)",
            path.display()
        ),
    }
    println!(
        "  {:<38} {:>10} {:>12} {:>12} {:>8} {:>9}",
        "figure", "unit", "now", "baseline", "x worse", "tolerance"
    );
    let number = |v: Option<f64>| v.map_or_else(|| "-".to_string(), readable);
    for (row, measure) in rows.iter().zip(CATALOGUE) {
        println!(
            "  {:<38} {:>10} {:>12} {:>12} {:>8} {:>9}{}",
            row.key,
            row.unit,
            number(row.now),
            number(row.baseline),
            row.worse_by
                .map_or_else(|| "-".into(), |w| format!("{w:.2}")),
            format!("{:.2}", measure.tolerance),
            if row.flagged { "  PAST TOLERANCE" } else { "" }
        );
    }
    let flagged: Vec<&str> = rows.iter().filter(|r| r.flagged).map(|r| r.key).collect();
    let compared = rows.iter().filter(|r| r.worse_by.is_some()).count();
    if baseline.is_none() {
        let taken = rows.iter().filter(|r| r.now.is_some()).count();
        println!("bench regression: {taken} figures taken, no baseline to compare them with");
    } else if flagged.is_empty() {
        println!("bench regression: {compared} figures compared, none past its tolerance");
    } else {
        println!(
            "bench regression: {} of {compared} figures past their tolerance: {}",
            flagged.len(),
            flagged.join(", ")
        );
        for (row, measure) in rows.iter().zip(CATALOGUE).filter(|(r, _)| r.flagged) {
            println!(
                "  {} ({}): {:.2} times worse than the baseline, {:.1} allowed",
                row.key,
                measure.what,
                row.worse_by.unwrap_or(0.0),
                measure.tolerance
            );
        }
    }
}

/// A figure as people read it: thousands grouped from 1,000, decimals
/// below.
fn readable(v: f64) -> String {
    if v.abs() >= 1000.0 {
        #[allow(clippy::cast_possible_truncation)]
        let whole = v.round() as i128;
        tollgate_dashboards::display::Count(whole).text()
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The commit being measured, when this runs in a checkout.
fn commit() -> Option<String> {
    let out = Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|c| !c.is_empty())
}

/// Cores, memory and CPU model: what makes two runs comparable.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
        .map_or("unknown CPU", str::trim)
        .to_string();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{cores} cores, {gib:.0} GiB, {model}")
}

#[cfg(test)]
mod tests {
    use super::{parse_scale, readable, Sizes};

    #[test]
    fn full_size_is_the_documented_run_and_a_small_scale_keeps_a_floor() {
        let full = Sizes::scaled(1.0);
        assert_eq!(
            (
                full.ingest_events,
                full.proxy_rps,
                full.proxy_seconds,
                full.audit_entries,
                full.report_calls,
                full.report_requests
            ),
            (150_000, 1_000, 5, 200_000, 200_000, 10)
        );
        let tiny = Sizes::scaled(0.000_001);
        assert_eq!(
            (
                tiny.ingest_events,
                tiny.proxy_rps,
                tiny.audit_entries,
                tiny.report_calls,
                tiny.report_requests
            ),
            (1_000, 10, 1_000, 1_000, 2)
        );
        assert_eq!(Sizes::scaled(0.02).ingest_events, 3_000);
        for bad in ["0", "-0.5", "1.01", "NaN", "inf", "half"] {
            assert!(parse_scale(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_scale("0.25"), Ok(0.25));
    }

    #[test]
    fn figures_read_as_people_read_them() {
        assert_eq!(readable(27_512.4), "27,512");
        assert_eq!(readable(1_234_567.0), "1,234,567");
        assert_eq!(readable(-1_500.0), "-1,500");
        assert_eq!(readable(158.25), "158.2");
        assert_eq!(readable(0.0421), "0.042");
        assert_eq!(readable(-0.1), "-0.100");
    }
}
