//! Headless Chromium for page tests: Debian's `chromium` (or
//! `TOLLGATE_TEST_CHROMIUM`), with the flags this machine's closed network
//! needs, its own profile directory and a bounded run time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn chromium() -> PathBuf {
    let path =
        std::env::var("TOLLGATE_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let path = PathBuf::from(path);
    assert!(
        path.exists(),
        "{} not found: install Debian's chromium (apt-get install -y chromium) \
         or set TOLLGATE_TEST_CHROMIUM",
        path.display()
    );
    path
}

/// Run headless Chromium on `url` with `extra` flags; its own profile
/// directory, no network beyond the page, bounded time.
pub fn run_chromium(url: &str, profile: &Path, extra: &[&str]) -> Output {
    run_chromium_with_env(url, profile, extra, &[])
}

/// [`run_chromium`] with `env` set for the browser only (e.g. `TZ`, the
/// time zone the page's scripts see).
pub fn run_chromium_with_env(
    url: &str,
    profile: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let child = Command::new(chromium())
        .envs(env.iter().copied())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_bounded(child, Duration::from_secs(120), "chromium")
}

/// Wait for `child` (stdout and stderr piped) and collect its output, read
/// on threads so a large output cannot block it; after `deadline` it is
/// killed, its process group too when it leads one, and the test fails
/// naming `what`.
pub fn wait_bounded(mut child: Child, deadline: Duration, what: &str) -> Output {
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut buf).unwrap();
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut buf).unwrap();
        buf
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Save a screenshot of `url` as `tests/artifacts/<name>` (for people; the
/// directory is ignored by git) and check it is not blank.
pub async fn screenshot(url: &str, name: &str) {
    let artifacts = crate::support::repo_root().join("tests/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join(name);
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let url = url.to_string();
    let path = profile.path().to_path_buf();
    let arg = format!("--screenshot={}", shot.display());
    let out = tokio::task::spawn_blocking(move || {
        run_chromium(&url, &path, &[&arg, "--window-size=1400,900"])
    })
    .await
    .unwrap();
    assert!(out.status.success());
    assert!(std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0) > 10_000);
}

/// Open `page` as the API key `key` would see it (through the signed-in
/// forwarder, `support::signed_in`, which sends the key with every
/// request), dump the page's DOM and save a screenshot as
/// `tests/artifacts/<shot>`.
pub async fn signed_in_dom(base: &str, key: &str, page: &str, shot: &str) -> String {
    let forward = super::signed_in::forward_with_key(base.to_string(), key.to_string());
    let url = format!("{forward}{page}");
    let profile = tempfile::tempdir().unwrap();
    let dom = {
        let (url, profile) = (url.clone(), profile.path().to_path_buf());
        tokio::task::spawn_blocking(move || run_chromium(&url, &profile, &["--dump-dom"]))
            .await
            .unwrap()
    };
    assert!(
        dom.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let artifacts = crate::support::repo_root().join("tests/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let path = artifacts.join(shot);
    let _ = std::fs::remove_file(&path);
    let arg = format!("--screenshot={}", path.display());
    let shot_profile = tempfile::tempdir().unwrap();
    let out = {
        let profile = shot_profile.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            run_chromium(&url, &profile, &[&arg, "--window-size=1400,1000"])
        })
        .await
        .unwrap()
    };
    assert!(
        out.status.success(),
        "chromium screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 20_000,
        "screenshot {} is only {size} bytes",
        path.display()
    );
    String::from_utf8(dom.stdout).unwrap()
}

/// The text of a piece of a dumped DOM: markup dropped, the entities a
/// dump writes in text (`&amp;`, `&lt;`, `&gt;`) decoded.
pub fn text_of(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}
