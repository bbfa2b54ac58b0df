//! How pages lay out in Debian's headless Chromium at given window sizes
//! (`tests/browser/page_widths.mjs`): the document's and `main`'s widths,
//! panels whose content is wider than they are, filter labels' lines.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

/// Every page of `urls` at every window size of `viewports` (width,
/// height): `page_widths.mjs`'s answer.
pub fn measure(urls: &[String], viewports: &[(u32, u32)]) -> Value {
    let dir = super::repo_root().join("tests/browser");
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
        "viewports": viewports
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
    let out = super::chromium::wait_bounded(child, Duration::from_secs(120), "page_widths.mjs");
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

/// What does not fit in `pages` (`measure`'s `pages`), one line each: a
/// status other than 200, a page wider than its window, a panel's content
/// wider than the panel, a filter label on more than one line.
pub fn misfits(pages: &[Value], base: &str) -> Vec<String> {
    let mut wrong = Vec::new();
    for page in pages {
        let at = format!(
            "{} at {}px",
            page["url"].as_str().unwrap().trim_start_matches(base),
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
    wrong
}
