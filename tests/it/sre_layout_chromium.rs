//! The SRE pages fit the window, with data in them (the overview's seeded
//! calls, error patterns, alerts and their transitions, a breaker
//! transition), on a phone (390 x 844) and a desktop (1440 x 900), in
//! Debian's headless Chromium (`tests/browser/page_widths.mjs`): the page's
//! content is no wider than the window (a wide table scrolls inside its
//! own box), no panel's content is wider than the panel (the alert
//! timeline's notification ids wrap), and every filter label is one line
//! ("From (UTC)" was drawn on three).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::accessibility::breaker_transitions;
use crate::overview::{seeded, PATTERN_A};
use crate::support;

const VIEWPORTS: [(u32, u32); 2] = [(390, 844), (1440, 900)];

/// Every measured page: `page_widths.mjs`'s answer.
fn measure(urls: &[String]) -> Value {
    let dir = support::repo_root().join("tests/browser");
    assert!(
        dir.join("node_modules/puppeteer-core").is_dir(),
        "the browser driver's packages are missing: run `npm ci` in {} (dev/test does)",
        dir.display()
    );
    let mut command = Command::new("node");
    command
        .arg(dir.join("page_widths.mjs"))
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().expect("node");
    let input = json!({
        "urls": urls,
        "viewports": VIEWPORTS
            .iter()
            .map(|(width, height)| json!({"width": width, "height": height}))
            .collect::<Vec<_>>(),
        "timeout_ms": 100_000,
    });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = support::chromium::wait_bounded(child, Duration::from_secs(120), "page_widths.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let line = stdout.lines().last().unwrap_or_default();
    let answer: Value = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "page_widths.mjs printed no result ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(answer["ok"], true, "{answer:#}");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sre_pages_fit_a_phone_and_a_desktop() {
    let seeded = seeded("sre_layout").await;
    breaker_transitions(&seeded.env).await;
    let base = seeded.env.api_url();
    let rule = seeded.firing[0].0;
    let signature = format!("{:016x}", PATTERN_A.0);
    let paths = [
        "/sre/latency?range=24h".to_string(),
        "/sre/errors?range=24h".to_string(),
        format!("/sre/errors/{signature}?range=24h"),
        "/sre/breakers?range=24h".to_string(),
        "/sre/alerts".to_string(),
        "/sre/alerts/rules".to_string(),
        format!("/sre/alerts/rules/{rule}"),
    ];
    let urls: Vec<String> = paths.iter().map(|p| format!("{base}{p}")).collect();
    let answer = tokio::task::spawn_blocking(move || measure(&urls))
        .await
        .unwrap();
    let pages = answer["pages"].as_array().unwrap();
    assert_eq!(pages.len(), paths.len() * VIEWPORTS.len());
    let mut wrong = Vec::new();
    for page in pages {
        let at = format!(
            "{} at {}px",
            page["url"].as_str().unwrap().trim_start_matches(&base),
            page["viewport"]["width"]
        );
        if page["status"] != 200 {
            wrong.push(format!("{at}: status {}", page["status"]));
        }
        let main = &page["main"];
        if main["scroll_width"].as_u64() > main["client_width"].as_u64() {
            wrong.push(format!(
                "{at}: the page is {} px wide in a {} px window (document {} px)",
                main["scroll_width"], main["client_width"], page["document"]["scroll_width"]
            ));
        }
        for what in page["overflowing"].as_array().unwrap() {
            wrong.push(format!("{at}: content wider than its box: {what}"));
        }
        for label in page["labels"].as_array().unwrap() {
            if label["lines"] != 1 {
                wrong.push(format!(
                    "{at}: label {} drawn on {} lines",
                    label["text"], label["lines"]
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
