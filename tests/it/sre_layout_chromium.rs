//! The SRE pages fit the window, with data in them (the overview's seeded
//! calls, error patterns, alerts and their transitions, a breaker
//! transition), on a phone (390 x 844) and a desktop (1440 x 900), in
//! Debian's headless Chromium (`tests/browser/page_widths.mjs`): the page's
//! content is no wider than the window (a wide table scrolls inside its
//! own box), no panel's content is wider than the panel (the alert
//! timeline's notification ids wrap), and every filter label is one line
//! ("From (UTC)" was drawn on three).

use crate::accessibility::breaker_transitions;
use crate::overview::{seeded, PATTERN_A};
use crate::support::page_widths::{measure, misfits};

const VIEWPORTS: [(u32, u32); 2] = [(390, 844), (1440, 900)];

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
    let answer = tokio::task::spawn_blocking(move || measure(&urls, &VIEWPORTS))
        .await
        .unwrap();
    let pages = answer["pages"].as_array().unwrap();
    assert_eq!(pages.len(), paths.len() * VIEWPORTS.len());
    let wrong = misfits(pages, &base);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
