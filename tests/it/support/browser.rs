//! A real browser for page tests that need more than a DOM dump: forms
//! filled and submitted from the keyboard, cookies kept across pages, and
//! axe-core's accessibility checks. `tests/browser/drive.mjs` drives Debian's
//! Chromium through puppeteer-core; this module writes it a scenario, runs
//! it under a deadline and reads its result. `dev/test` installs the node
//! packages (`npm ci` in `tests/browser/`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

/// How long one scenario may take before its processes are killed.
const DEADLINE: Duration = Duration::from_secs(120);

/// One step of a scenario (the driver's `do` steps).
#[derive(Debug, Clone)]
pub enum Step {
    Goto(String),
    Fill(String, String),
    /// Set a field's value from script (a hidden field too): `(selector,
    /// value)`.
    SetValue(String, String),
    /// The current URL and the status of the document shown.
    Location,
    /// Open `url` again and again (every 250 ms) until the final URL holds
    /// `url_contains`; fails after `deadline`.
    GotoUntil {
        url: String,
        url_contains: String,
        deadline: Duration,
    },
    /// The page's time zone from now on (an IANA name).
    TimeZone(String),
    /// The first element matching the selector: its text, value and
    /// attributes.
    Read(String),
    /// Press Tab until the element matching the selector has focus.
    TabTo(String),
    /// Wait until the element matching the selector has focus (a page's
    /// `autofocus` is applied at a rendering update, which on a busy
    /// machine comes after `load`: keys typed before it are lost).
    AwaitFocus(String),
    Type(String),
    /// A key; `true` when it submits or follows a link.
    Press(String, bool),
    Click(String, bool),
    ExpectText(String),
    Axe,
    /// `(url, name, value)`: a cookie set before the page asks for it.
    SetCookie(String, String, String),
    Cookies,
    Html,
    Screenshot(PathBuf),
    /// Where the first element matching the selector is drawn: the
    /// document's and the viewport's widths, its box, whether it is
    /// visible, and whether it lies inside its closest ancestor matching
    /// `within` (when given).
    Layout(String, Option<String>),
}

impl Step {
    fn to_json(&self) -> Value {
        match self {
            Self::Goto(url) => json!({"do": "goto", "url": url}),
            Self::Fill(selector, value) => {
                json!({"do": "fill", "selector": selector, "value": value})
            }
            // Pages put the navigation and filters before their forms.
            Self::SetValue(selector, value) => {
                json!({"do": "set_value", "selector": selector, "value": value})
            }
            Self::Location => json!({"do": "location"}),
            Self::GotoUntil {
                url,
                url_contains,
                deadline,
            } => json!({
                "do": "goto_until",
                "url": url,
                "url_contains": url_contains,
                "deadline_ms": deadline.as_millis() as u64,
                "every_ms": 250,
            }),
            Self::TimeZone(zone) => json!({"do": "timezone", "zone": zone}),
            Self::Read(selector) => json!({"do": "read", "selector": selector}),
            Self::TabTo(selector) => json!({"do": "tab_to", "selector": selector, "max": 200}),
            Self::AwaitFocus(selector) => json!({"do": "await_focus", "selector": selector}),
            Self::Type(text) => json!({"do": "type", "text": text}),
            Self::Press(key, navigates) => {
                json!({"do": "press", "key": key, "navigates": navigates})
            }
            Self::Click(selector, navigates) => {
                json!({"do": "click", "selector": selector, "navigates": navigates})
            }
            Self::ExpectText(text) => json!({"do": "expect_text", "text": text}),
            Self::Axe => json!({"do": "axe"}),
            Self::SetCookie(url, name, value) => {
                json!({"do": "set_cookie", "url": url, "name": name, "value": value})
            }
            Self::Cookies => json!({"do": "cookies"}),
            Self::Html => json!({"do": "html"}),
            Self::Screenshot(path) => json!({"do": "screenshot", "path": path}),
            Self::Layout(selector, within) => {
                json!({"do": "layout", "selector": selector, "within": within})
            }
        }
    }
}

/// One axe-core rule a page broke, with where.
#[derive(Debug, Clone, Deserialize)]
pub struct Violation {
    pub id: String,
    pub impact: String,
    pub help: String,
    pub nodes: Vec<ViolationNode>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ViolationNode {
    pub target: String,
    pub html: String,
    pub summary: String,
}

/// What the driver printed: every step that ran, and the first failure.
#[derive(Debug, Clone, Deserialize)]
pub struct Outcome {
    pub ok: bool,
    pub steps: Vec<Value>,
    pub error: Option<String>,
}

impl Outcome {
    /// Panics with the driver's error unless every step passed.
    pub fn expect_ok(self) -> Self {
        assert!(
            self.ok,
            "browser scenario failed: {}",
            self.error.as_deref().unwrap_or("?")
        );
        self
    }

    /// The serious and critical violations of every `Axe` step, with the
    /// URL it ran on.
    pub fn violations(&self) -> Vec<(String, Violation)> {
        self.steps
            .iter()
            .filter(|s| s["do"] == "axe")
            .flat_map(|s| {
                let url = s["url"].as_str().unwrap_or_default().to_string();
                let found: Vec<Violation> =
                    serde_json::from_value(s["violations"].clone()).unwrap();
                found.into_iter().map(move |v| (url.clone(), v))
            })
            .collect()
    }

    /// The DOM of the last `Html` step.
    pub fn html(&self) -> String {
        self.steps
            .iter()
            .rev()
            .find(|s| s["do"] == "html")
            .and_then(|s| s["html"].as_str())
            .expect("the scenario has an html step")
            .to_string()
    }

    /// The results of every step that did `what` (`"read"`, `"location"`),
    /// in order.
    pub fn all(&self, what: &str) -> Vec<&Value> {
        self.steps.iter().filter(|s| s["do"] == what).collect()
    }

    /// The result of step `i` (in scenario order).
    pub fn step(&self, i: usize) -> &Value {
        &self.steps[i]
    }
}

/// The violations as a readable list, for an assertion's message.
pub fn describe(violations: &[(String, Violation)]) -> String {
    violations
        .iter()
        .map(|(url, v)| {
            let nodes: Vec<String> = v
                .nodes
                .iter()
                .take(5)
                .map(|n| format!("      {} :: {}\n        {}", n.target, n.html, n.summary))
                .collect();
            format!(
                "{url}: {} ({}) {}\n{}",
                v.id,
                v.impact,
                v.help,
                nodes.join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn browser_dir() -> PathBuf {
    crate::support::repo_root().join("tests/browser")
}

/// Run `steps` in a fresh browser (its own profile, no cookies), bounded by
/// [`DEADLINE`].
pub async fn run(steps: &[Step]) -> Outcome {
    run_in(steps, (1400, 1000)).await
}

/// [`run`] in a viewport of `(width, height)` CSS pixels (a phone:
/// `(390, 844)`).
pub async fn run_in(steps: &[Step], (width, height): (u32, u32)) -> Outcome {
    let scenario = json!({
        "steps": steps.iter().map(Step::to_json).collect::<Vec<_>>(),
        // The driver gives up a little before this side kills it.
        "timeout_ms": (DEADLINE - Duration::from_secs(10)).as_millis() as u64,
        "viewport": {"width": width, "height": height},
    });
    tokio::task::spawn_blocking(move || run_blocking(&scenario))
        .await
        .unwrap()
}

fn run_blocking(scenario: &Value) -> Outcome {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/puppeteer-core").is_dir()
            && dir.join("node_modules/axe-core").is_dir(),
        "the browser driver's packages are missing: run `npm ci` in {} (dev/test does)",
        dir.display()
    );
    let mut command = Command::new("node");
    command
        .arg(dir.join("drive.mjs"))
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Its own process group, so the browser goes with it at the deadline.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node ({e}): apt-get install nodejs npm"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scenario.to_string().as_bytes())
        .unwrap();
    let output = super::chromium::wait_bounded(child, DEADLINE, "the browser scenario");
    let status = output.status;
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!("the driver printed no result ({e}; exit {status}):\n{stdout}\nstderr:\n{stderr}")
    })
}
