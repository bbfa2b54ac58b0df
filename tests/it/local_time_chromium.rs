//! Times in the viewer's time zone beyond the tables: a chart's axis label
//! and tooltip, a `datetime-local` form field and the overview's `<time>`,
//! in headless Chromium with its time zone set to Asia/Kolkata (UTC+05:30
//! all year, so the expected text needs no time-zone database). The server
//! writes UTC with the instant in `data-utc` (or `<time datetime>`);
//! `static/local-time.js` rewrites it, and the form still sends UTC.

use chrono::{DateTime, FixedOffset, Utc};

use crate::accessibility::breaker_transitions;
use crate::support::browser::{run, Step};
use crate::support::TestEnv;

const ZONE: &str = "Asia/Kolkata";

fn kolkata() -> FixedOffset {
    FixedOffset::east_opt(5 * 3600 + 30 * 60).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_axes_tooltips_and_form_times_are_local() {
    let mut env = TestEnv::new("local_time").await;
    breaker_transitions(&env).await;
    env.start_api().await;
    let base = env.api_url();
    let latency =
        format!("{base}/sre/latency?range=custom&from=2026-03-10T10:00&to=2026-03-10T10:15");
    let steps = vec![
        Step::TimeZone(ZONE.into()),
        Step::Goto(format!("{base}/sre/breakers?range=24h")),
        Step::Read("svg text.axis-time".into()),
        Step::Read("svg rect title[data-utc]".into()),
        Step::Goto(latency),
        Step::Read("input#from".into()),
        Step::Read("label:has(> input#from) .tz-name".into()),
        // The form sends what it shows, as UTC.
        Step::Click(
            "form[action='/sre/latency'] button[type=submit]".into(),
            true,
        ),
        Step::Location,
        // The overview's times are <time> elements like every table's.
        Step::Goto(format!("{base}/overview")),
        Step::Read(".summary time[datetime]".into()),
    ];
    let outcome = run(&steps).await.expect_ok();
    let reads = outcome.all("read");

    // The axis: the window's start, month-day and minute, local.
    let axis = reads[0];
    let utc: DateTime<Utc> = axis["attributes"]["data-utc"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let local = utc
        .with_timezone(&kolkata())
        .format("%m-%d %H:%M")
        .to_string();
    let text = axis["text"].as_str().unwrap();
    // Its text is the label then the <title>'s UTC time.
    let utc_title = utc.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    assert_eq!(text, format!("{local} GMT+5:30{utc_title}"), "{axis}");
    // A segment's tooltip: local, then UTC.
    let title = reads[1]["text"].as_str().unwrap();
    let at: DateTime<Utc> = reads[1]["attributes"]["data-utc"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let both = format!(
        "{} GMT+5:30 ({} UTC)",
        at.with_timezone(&kolkata()).format("%Y-%m-%d %H:%M:%S%.3f"),
        at.format("%Y-%m-%d %H:%M:%S%.3f")
    );
    assert!(title.ends_with(&both), "{title} / {both}");

    // The form field: 10:00 UTC shown as 15:30 local, UTC on hover.
    let from = reads[2];
    assert_eq!(from["value"], "2026-03-10T15:30", "{from}");
    assert_eq!(from["attributes"]["title"], "2026-03-10 10:00 UTC");
    assert_eq!(reads[3]["text"], "GMT+5:30");
    let as_of = reads[4];
    let at: DateTime<Utc> = as_of["attributes"]["datetime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        as_of["text"],
        format!(
            "{} GMT+5:30",
            at.with_timezone(&kolkata()).format("%Y-%m-%d %H:%M")
        )
    );
    // UTC on hover, to the millisecond when it has any.
    let utc_format = if at.timestamp_subsec_millis() == 0 {
        "%Y-%m-%d %H:%M:%S UTC"
    } else {
        "%Y-%m-%d %H:%M:%S%.3f UTC"
    };
    assert_eq!(
        as_of["attributes"]["title"],
        at.format(utc_format).to_string()
    );
    let sent = outcome.all("location")[0]["url"].as_str().unwrap();
    assert!(
        sent.contains("from=2026-03-10T10%3A00") && sent.contains("to=2026-03-10T10%3A15"),
        "{sent}"
    );
}
