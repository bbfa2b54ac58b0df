//! Every transition of the breaker, with the clock in the test's hands.

use chrono::{Duration, TimeZone};

use super::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
}

fn ms(n: i64) -> Duration {
    Duration::milliseconds(n)
}

fn config() -> BreakersConfig {
    BreakersConfig::default()
}

const SIG_A: SignatureId = SignatureId(0xa);
const SIG_B: SignatureId = SignatureId(0xb);

fn ok(at: DateTime<Utc>) -> CallOutcome {
    CallOutcome {
        failed: false,
        slow: false,
        signature: None,
        started_at: at - ms(100),
    }
}

fn failed(at: DateTime<Utc>, sig: SignatureId) -> CallOutcome {
    CallOutcome {
        failed: true,
        slow: false,
        signature: Some(sig),
        started_at: at - ms(100),
    }
}

fn slow(at: DateTime<Utc>) -> CallOutcome {
    CallOutcome {
        slow: true,
        ..ok(at)
    }
}

fn breaker() -> Breaker {
    Breaker::new("openai", "gpt-4o", t0())
}

type Make = fn(DateTime<Utc>) -> CallOutcome;

/// `count` calls made by `make`.
fn n(make: Make, count: usize) -> Vec<Make> {
    vec![make; count]
}

/// Feed `outcomes` 10 ms apart from `start`; the transitions they caused.
fn feed(b: &mut Breaker, start: DateTime<Utc>, outcomes: &[Make]) -> Vec<Transition> {
    let c = config();
    let mut out = Vec::new();
    for (i, make) in outcomes.iter().enumerate() {
        let at = start + ms(10 * i as i64);
        out.extend(b.observe(&make(at), at, &c));
    }
    out
}

fn fail_a(at: DateTime<Utc>) -> CallOutcome {
    failed(at, SIG_A)
}

fn fail_b(at: DateTime<Utc>) -> CallOutcome {
    failed(at, SIG_B)
}

/// A breaker opened at `t0 + 190 ms` by 20 failures.
fn opened() -> (Breaker, Transition) {
    let mut b = breaker();
    let mut t = feed(&mut b, t0(), &n(fail_a, 20));
    assert_eq!(t.len(), 1);
    (b, t.remove(0))
}

/// A breaker half-open since the returned time.
fn half_open() -> (Breaker, DateTime<Utc>) {
    let (mut b, open) = opened();
    let at = open.at + config().open_for();
    let t = b.tick(at, &config()).unwrap();
    assert_eq!((t.from, t.to), (CircuitState::Open, CircuitState::HalfOpen));
    (b, at)
}

#[test]
fn fewer_than_minimum_calls_never_open_even_all_failing() {
    let mut b = breaker();
    assert!(feed(&mut b, t0(), &n(fail_a, 19)).is_empty());
    assert_eq!(b.state(), CircuitState::Closed);
    assert_eq!(b.window_counts().calls, 19);
    // The 20th call crosses the minimum: it is the one that opens.
    let at = t0() + ms(500);
    let t = b.observe(&fail_a(at), at, &config()).unwrap();
    assert_eq!((t.from, t.to), (CircuitState::Closed, CircuitState::Open));
    assert_eq!((t.calls, t.failures, t.slow), (20, 20, 0));
    assert_eq!(t.generation, 1);
    assert_eq!(t.at, at);
    assert_eq!(t.signature, Some(SIG_A));
    assert_eq!(
        t.reason,
        "20 of 20 calls failed (100%, threshold 50%) in the last 60 s; open for 30 s"
    );
    assert_eq!(b.state(), CircuitState::Open);
    assert_eq!(b.since(), at);
}

#[test]
fn exactly_the_threshold_opens_and_just_below_does_not() {
    // 9 of 20 failed: 45%.
    let mut b = breaker();
    let below = [n(ok, 11), n(fail_a, 9)].concat();
    assert!(feed(&mut b, t0(), &below).is_empty());
    // 10 of 20: 50%, the default threshold.
    let mut b = breaker();
    let at = [n(ok, 10), n(fail_a, 10)].concat();
    let t = feed(&mut b, t0(), &at);
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].calls, t[0].failures), (20, 10));
    assert!(t[0].reason.starts_with("10 of 20 calls failed (50%"));
}

#[test]
fn a_configured_threshold_and_minimum_are_used() {
    let c = BreakersConfig {
        minimum_calls: 4,
        failure_rate_percent: 75,
        ..config()
    };
    let mut b = breaker();
    let now = t0();
    for make in [ok, fail_a, fail_a] {
        assert!(b.observe(&make(now), now, &c).is_none());
    }
    // 3 of 4 = 75%.
    let t = b.observe(&fail_a(now), now, &c).unwrap();
    assert_eq!((t.calls, t.failures, t.to), (4, 3, CircuitState::Open));
}

#[test]
fn slow_calls_open_at_their_own_rate() {
    // The default slow-call threshold is 100%: one fast call keeps it closed.
    let mut b = breaker();
    let mostly = [n(ok, 1), n(slow, 19)].concat();
    assert!(feed(&mut b, t0(), &mostly).is_empty());
    let mut b = breaker();
    let t = feed(&mut b, t0(), &n(slow, 20));
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].calls, t[0].failures, t[0].slow), (20, 0, 20));
    assert_eq!(t[0].signature, None);
    assert_eq!(
        t[0].reason,
        "20 of 20 calls slower than 30000 ms (100%, threshold 100%) in the last 60 s; open for 30 s"
    );
}

#[test]
fn calls_older_than_the_window_no_longer_count() {
    let c = config();
    let mut b = breaker();
    assert!(feed(&mut b, t0(), &n(fail_a, 15)).is_empty());
    // 59.9 s later the first bucket is still in the 60 s window...
    let later = t0() + ms(59_900);
    b.tick(later, &c);
    assert_eq!(b.window_counts().calls, 15);
    // ...at 60 s it has left it.
    let gone = t0() + Duration::seconds(60);
    b.tick(gone, &c);
    assert_eq!(b.window_counts().calls, 0);
    // So 10 more failures are 10 calls, below the minimum.
    assert!(feed(&mut b, gone, &n(fail_a, 10)).is_empty());
    assert_eq!(b.state(), CircuitState::Closed);
    // Expiry also happens on arrival, without a tick in between.
    let mut b = breaker();
    assert!(feed(&mut b, t0(), &n(fail_a, 15)).is_empty());
    assert!(feed(&mut b, t0() + Duration::seconds(61), &n(fail_a, 5)).is_empty());
    assert_eq!(b.window_counts().calls, 5);
}

#[test]
fn the_window_keeps_the_signatures_of_what_it_holds() {
    let mut b = breaker();
    assert!(feed(&mut b, t0(), &n(fail_b, 8)).is_empty());
    let later = t0() + Duration::seconds(30);
    let rest = [n(fail_a, 7), n(ok, 4)].concat();
    assert!(feed(&mut b, later, &rest).is_empty());
    // B leads 8 to 7, until its bucket expires.
    assert_eq!(b.window_counts().top_signature(), Some(SIG_B));
    b.tick(t0() + Duration::seconds(60), &config());
    assert_eq!(b.window_counts().top_signature(), Some(SIG_A));
    assert_eq!(b.window_counts().calls, 11);
}

#[test]
fn the_most_frequent_signature_is_reported_ties_to_the_smaller_id() {
    let mut b = breaker();
    let mix = [n(fail_b, 11), n(fail_a, 9)].concat();
    let t = feed(&mut b, t0(), &mix);
    assert_eq!(t[0].signature, Some(SIG_B));
    let mut b = breaker();
    let tie = [n(fail_b, 10), n(fail_a, 10)].concat();
    let t = feed(&mut b, t0(), &tie);
    assert_eq!(t[0].signature, Some(SIG_A));
}

#[test]
fn open_ignores_calls_and_turns_half_open_after_open_secs() {
    let c = config();
    let (mut b, open) = opened();
    // Stragglers while open change nothing.
    let at = open.at + ms(10);
    assert!(b.observe(&ok(at), at, &c).is_none());
    assert!(b.observe(&fail_a(at), at, &c).is_none());
    assert!(b.tick(open.at + ms(29_999), &c).is_none());
    assert_eq!(b.state(), CircuitState::Open);
    let at = open.at + Duration::seconds(30);
    let t = b.tick(at, &c).unwrap();
    assert_eq!((t.from, t.to), (CircuitState::Open, CircuitState::HalfOpen));
    // The same episode: the generation stays.
    assert_eq!(t.generation, 1);
    assert_eq!((t.calls, t.failures, t.slow, t.signature), (0, 0, 0, None));
    assert_eq!(
        t.reason,
        "open for 30 s; letting 5 probe outcomes decide (2 per proxy, at most 30 s)"
    );
    assert_eq!((b.state(), b.since()), (CircuitState::HalfOpen, at));
    // What opened it is still what a re-published decision shows.
    assert_eq!(b.evidence().calls, 20);
    assert_eq!(b.state_deadline(&c), Some(at + Duration::seconds(30)));
}

#[test]
fn successful_probes_close_it() {
    let c = config();
    let (mut b, since) = half_open();
    let mut last = None;
    for i in 0..5 {
        let at = since + ms(100 * (i + 2));
        last = b.observe(&ok(at), at, &c);
        if i < 4 {
            assert!(last.is_none(), "decided after {} probes", i + 1);
        }
    }
    let t = last.unwrap();
    assert_eq!(
        (t.from, t.to),
        (CircuitState::HalfOpen, CircuitState::Closed)
    );
    assert_eq!((t.calls, t.failures, t.generation), (5, 0, 1));
    assert_eq!(
        t.reason,
        "probes: 5 of 5 succeeded (0 failed, 0 slow; thresholds 50% and 100%)"
    );
    assert_eq!(b.state(), CircuitState::Closed);
    // Closed again, it starts from an empty window: it needs the minimum
    // number of calls again before it can open.
    assert_eq!(b.window_counts().calls, 0);
    let at = t.at + ms(10);
    assert!(feed(&mut b, at, &n(fail_a, 19)).is_empty());
}

#[test]
fn probes_below_the_threshold_close_it() {
    let c = config();
    let (mut b, since) = half_open();
    let at = since + ms(500);
    for make in [ok, fail_a, ok, fail_a] {
        assert!(b.observe(&make(at), at, &c).is_none());
    }
    let t = b.observe(&ok(at), at, &c).unwrap();
    assert_eq!((t.to, t.calls, t.failures), (CircuitState::Closed, 5, 2));
    assert_eq!(t.signature, Some(SIG_A));
}

#[test]
fn failing_probes_open_it_again_with_a_new_generation() {
    let c = config();
    let (mut b, since) = half_open();
    let at = since + ms(500);
    for make in [fail_b, ok, fail_b, ok] {
        assert!(b.observe(&make(at), at, &c).is_none());
    }
    let t = b.observe(&fail_b(at), at, &c).unwrap();
    assert_eq!((t.from, t.to), (CircuitState::HalfOpen, CircuitState::Open));
    assert_eq!((t.calls, t.failures, t.generation), (5, 3, 2));
    assert_eq!(t.signature, Some(SIG_B));
    assert_eq!(
        t.reason,
        "probes: 3 of 5 calls failed (60%, threshold 50%); open again for 30 s"
    );
    assert_eq!(
        (b.state(), b.since(), b.generation()),
        (CircuitState::Open, at, 2)
    );
    // The next half-open period is of the new generation, with fresh probes.
    let t = b.tick(at + Duration::seconds(30), &c).unwrap();
    assert_eq!((t.to, t.generation), (CircuitState::HalfOpen, 2));
    assert_eq!(b.probe_counts().calls, 0);
}

#[test]
fn slow_probes_open_it_again() {
    let c = config();
    let (mut b, since) = half_open();
    let at = since + ms(500);
    let mut last = None;
    for _ in 0..5 {
        last = b.observe(&slow(at), at, &c);
    }
    let t = last.unwrap();
    assert_eq!((t.to, t.slow, t.generation), (CircuitState::Open, 5, 2));
}

#[test]
fn probes_that_never_come_close_it_after_the_max_wait() {
    let c = config();
    let (mut b, since) = half_open();
    assert!(b.tick(since + ms(29_999), &c).is_none());
    assert_eq!(b.state(), CircuitState::HalfOpen);
    let at = since + Duration::seconds(30);
    let t = b.tick(at, &c).unwrap();
    assert_eq!(
        (t.from, t.to),
        (CircuitState::HalfOpen, CircuitState::Closed)
    );
    assert_eq!((t.calls, t.failures, t.generation), (0, 0, 1));
    assert_eq!(
        t.reason,
        "no probe outcome within 30 s of half-open; closed so that live traffic judges it (it opens again after 20 calls if still failing)"
    );
    // Nothing more happens on its own.
    assert!(b.tick(at + Duration::seconds(600), &c).is_none());
    assert_eq!(b.state(), CircuitState::Closed);
}

#[test]
fn too_few_probes_are_decided_on_at_the_max_wait() {
    let c = config();
    // Two successes: closed.
    let (mut b, since) = half_open();
    let at = since + ms(200);
    assert!(b.observe(&ok(at), at, &c).is_none());
    assert!(b.observe(&ok(at), at, &c).is_none());
    let t = b.tick(since + Duration::seconds(30), &c).unwrap();
    assert_eq!((t.to, t.calls, t.failures), (CircuitState::Closed, 2, 0));
    assert!(
        t.reason.starts_with(
            "only 2 of 5 probe outcomes within 30 s; decided on those: probes: 2 of 2 succeeded"
        ),
        "{}",
        t.reason
    );
    // One success, one failure: 50%, open again.
    let (mut b, since) = half_open();
    let at = since + ms(200);
    assert!(b.observe(&ok(at), at, &c).is_none());
    assert!(b.observe(&fail_a(at), at, &c).is_none());
    let t = b.tick(since + Duration::seconds(30), &c).unwrap();
    assert_eq!(
        (t.to, t.calls, t.failures, t.generation),
        (CircuitState::Open, 2, 1, 2)
    );
}

#[test]
fn calls_sent_before_half_open_are_not_probes() {
    let c = config();
    let (mut b, since) = half_open();
    // Ended after half-open began, but sent before: a straggler.
    let at = since + ms(50);
    let straggler = CallOutcome {
        started_at: since - ms(20_000),
        ..fail_a(at)
    };
    for _ in 0..10 {
        assert!(b.observe(&straggler, at, &c).is_none());
    }
    assert_eq!(b.probe_counts().calls, 0);
    assert_eq!(b.state(), CircuitState::HalfOpen);
}

#[test]
fn a_restored_breaker_keeps_its_episode() {
    let c = config();
    let since = t0();
    let mut b = Breaker::restore("openai", "gpt-4o", CircuitState::Open, since, 7);
    assert!(b.tick(since + ms(29_000), &c).is_none());
    let t = b.tick(since + Duration::seconds(30), &c).unwrap();
    assert_eq!((t.to, t.generation), (CircuitState::HalfOpen, 7));
    let mut b = Breaker::restore("openai", "gpt-4o", CircuitState::HalfOpen, since, 7);
    let t = b.tick(since + Duration::seconds(30), &c).unwrap();
    assert_eq!((t.to, t.generation), (CircuitState::Closed, 7));
    // A closed one keeps counting generations from where it was.
    let mut b = Breaker::restore("openai", "gpt-4o", CircuitState::Closed, since, 7);
    let t = feed(&mut b, since, &n(fail_a, 20));
    assert_eq!(t[0].generation, 8);
}

#[test]
fn a_full_cycle_twice() {
    let c = config();
    let mut b = breaker();
    let mut seen = Vec::new();
    let mut now = t0();
    for _ in 0..2 {
        let opened = feed(&mut b, now, &n(fail_a, 20));
        now = opened[0].at + Duration::seconds(30);
        seen.extend(opened);
        seen.extend(b.tick(now, &c));
        now += ms(100);
        seen.extend(feed(&mut b, now, &n(ok, 5)));
        now += Duration::seconds(1);
    }
    let path: Vec<(CircuitState, u64)> = seen.iter().map(|t| (t.to, t.generation)).collect();
    assert_eq!(
        path,
        [
            (CircuitState::Open, 1),
            (CircuitState::HalfOpen, 1),
            (CircuitState::Closed, 1),
            (CircuitState::Open, 2),
            (CircuitState::HalfOpen, 2),
            (CircuitState::Closed, 2),
        ]
    );
}

#[test]
fn the_provider_breaker_counts_every_model_of_the_provider() {
    let c = config();
    let mut all = Breakers::new();
    let now = t0();
    let mut transitions = Vec::new();
    // 10 failures on each of two models: neither model reaches the
    // minimum, the provider does.
    for i in 0..10 {
        let at = now + ms(i);
        transitions.extend(all.observe("openai", "gpt-4o", &fail_a(at), at, &c));
        transitions.extend(all.observe("openai", "gpt-4o-mini", &fail_a(at), at, &c));
    }
    assert_eq!(transitions.len(), 1, "{transitions:?}");
    assert_eq!(
        (
            transitions[0].provider.as_str(),
            transitions[0].model.as_str()
        ),
        ("openai", "")
    );
    assert_eq!(
        transitions[0].reason,
        "20 of 20 calls failed (100%, threshold 50%) in the last 60 s, 10 of 10 (100%) leaving out gpt-4o, the model failing most; open for 30 s"
    );
    assert!(all.keeps_out("openai", "gpt-4o"));
    assert!(!all.keeps_out("anthropic", "claude"));
    assert_eq!(
        all.get("openai", "gpt-4o").unwrap().state(),
        CircuitState::Closed
    );
    // Without per-provider breakers only the models have one.
    let c = BreakersConfig {
        per_provider: false,
        ..config()
    };
    let mut models = Breakers::new();
    for i in 0..20 {
        let at = now + ms(i);
        assert!(models
            .observe("openai", "gpt-4o-mini", &ok(at), at, &c)
            .is_empty());
    }
    assert!(models.get("openai", "").is_none());
    assert_eq!(models.iter().count(), 1);
}

#[test]
fn ticking_all_breakers_moves_each_on_its_own_clock() {
    let c = config();
    let mut all = Breakers::new();
    let now = t0();
    // 20 failures open the model; five failures of a second model of the
    // provider then open the provider too (a provider's breaker opens only
    // when its calls fail at the threshold even leaving out the model
    // failing most, over at least a quarter of the minimum: here 5 of 5).
    for i in 0..20 {
        let at = now + ms(i);
        all.observe("openai", "gpt-4o", &fail_a(at), at, &c);
    }
    for i in 20..25 {
        let at = now + ms(i);
        all.observe("openai", "gpt-4o-mini", &fail_a(at), at, &c);
    }
    let later = now + Duration::seconds(10);
    for i in 0..20 {
        let at = later + ms(i);
        all.observe("anthropic", "claude", &fail_a(at), at, &c);
    }
    for i in 20..25 {
        let at = later + ms(i);
        all.observe("anthropic", "claude-haiku", &fail_a(at), at, &c);
    }
    // The first pair (model and provider) is half-open after 30 s, the
    // second pair 10 s later.
    let t = all.tick(now + Duration::seconds(31), &c);
    assert_eq!(t.len(), 2);
    assert!(t
        .iter()
        .all(|t| t.provider == "openai" && t.to == CircuitState::HalfOpen));
    let t = all.tick(later + Duration::seconds(31), &c);
    assert_eq!(t.len(), 2);
    assert!(t.iter().all(|t| t.provider == "anthropic"));
}

#[test]
fn adopting_a_published_state_starts_its_episode_and_keeps_an_equal_one() {
    let c = config();
    let mut b = breaker();
    assert!(feed(&mut b, t0(), &n(fail_a, 12)).is_empty());
    // The same state and generation: nothing changes, the window stays.
    b.adopt(CircuitState::Closed, t0(), 0, Counts::default());
    assert_eq!(b.window_counts().calls, 12);
    // Another replica opened it (generation 3): this one is open too, its
    // window emptied, the evidence the published one.
    let since = t0() + ms(500);
    b.adopt(
        CircuitState::Open,
        since,
        3,
        Counts::recorded(20, 18, Some(SIG_B)),
    );
    assert_eq!(
        (b.state(), b.since(), b.generation()),
        (CircuitState::Open, since, 3)
    );
    assert_eq!(b.window_counts().calls, 0);
    assert_eq!(
        (
            b.evidence().calls,
            b.evidence().failures,
            b.evidence().top_signature()
        ),
        (20, 18, Some(SIG_B))
    );
    // Its clock runs from the published since.
    let t = b.tick(since + Duration::seconds(30), &c).unwrap();
    assert_eq!((t.to, t.generation), (CircuitState::HalfOpen, 3));
    // As a transition (a replica taking over), from what the topic said.
    let t = b.as_transition(CircuitState::Open, "taken over".into());
    assert_eq!(
        (t.from, t.to, t.generation, t.at),
        (
            CircuitState::Open,
            CircuitState::HalfOpen,
            3,
            since + Duration::seconds(30)
        )
    );
    assert_eq!((t.calls, t.failures), (20, 18));
}

/// Feed `calls` (model, outcome) of provider openai 10 ms apart from
/// `start`; the transitions they caused.
fn feed_all(all: &mut Breakers, start: DateTime<Utc>, calls: &[(&str, Make)]) -> Vec<Transition> {
    feed_all_with(all, start, calls, &config())
}

/// [`feed_all`] with configuration `c`.
fn feed_all_with(
    all: &mut Breakers,
    start: DateTime<Utc>,
    calls: &[(&str, Make)],
    c: &BreakersConfig,
) -> Vec<Transition> {
    let mut out = Vec::new();
    for (i, (model, make)) in calls.iter().enumerate() {
        let at = start + ms(10 * i as i64);
        out.extend(all.observe("openai", model, &make(at), at, c));
    }
    out
}

/// The (calls, failures, slow) of `model` in the window of openai's
/// provider breaker; None when the window holds no call of it.
fn in_provider_window(all: &Breakers, model: &str) -> Option<(u64, u64, u64)> {
    let provider = all.get("openai", "").unwrap();
    provider
        .window
        .by_model
        .0
        .get(model)
        .map(|c| (c.calls, c.failures, c.slow))
}

/// The models of `transitions`, in order ('' is the provider's).
fn models(transitions: &[Transition]) -> Vec<&str> {
    transitions.iter().map(|t| t.model.as_str()).collect()
}

/// One call of a proxy with a same-provider fallback while gpt-4o fails:
/// three failed attempts on gpt-4o (1 + max_retries = 2), then the
/// fallback gpt-4o-mini answers with `fallback`.
fn retried_then(fallback: Make) -> Vec<(&'static str, Make)> {
    vec![
        ("gpt-4o", fail_a as Make),
        ("gpt-4o", fail_a),
        ("gpt-4o", fail_a),
        ("gpt-4o-mini", fallback),
    ]
}

/// [`retried_then`] with the fallback answering.
fn retried_then_fallback() -> Vec<(&'static str, Make)> {
    retried_then(ok)
}

#[test]
fn one_model_failing_alone_opens_its_breaker_not_its_providers() {
    let mut all = Breakers::new();
    // 20 such calls: 60 failures and 20 successes, 75% of the provider's
    // calls failing, all on one model; leaving it out, 0 of 20 fail.
    let calls: Vec<_> = (0..20).flat_map(|_| retried_then_fallback()).collect();
    let t = feed_all(&mut all, t0(), &calls);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(
        (t[0].model.as_str(), t[0].to, t[0].calls, t[0].failures),
        ("gpt-4o", CircuitState::Open, 20, 20)
    );
    let provider = all.get("openai", "").unwrap();
    assert_eq!(provider.state(), CircuitState::Closed);
    assert_eq!(
        (
            provider.window_counts().calls,
            provider.window_counts().failures
        ),
        (80, 60)
    );
    assert_eq!(in_provider_window(&all, "gpt-4o"), Some((60, 60, 0)));
    assert_eq!(in_provider_window(&all, "gpt-4o-mini"), Some((20, 0, 0)));
    // The fallback stays in rotation; the failing model is out.
    assert!(!all.keeps_out("openai", "gpt-4o-mini"));
    assert!(all.keeps_out("openai", "gpt-4o"));
    // Slow calls likewise: every call slow, on one model (no other calls
    // to judge the provider on), opens that model's breaker only.
    let mut all = Breakers::new();
    let t = feed_all(&mut all, t0(), &vec![("gpt-4o", slow as Make); 20]);
    assert_eq!(models(&t), ["gpt-4o"]);
    assert_eq!(all.get("openai", "").unwrap().state(), CircuitState::Closed);
}

#[test]
fn a_stray_failure_of_the_healthy_sibling_does_not_open_the_provider() {
    // As above, but one of the fallback's 20 answers is a 429: two models
    // have failed, yet leaving out gpt-4o only 1 of 20 calls (5%) failed.
    let mut all = Breakers::new();
    let calls: Vec<_> = (0..20)
        .flat_map(|i| retried_then(if i == 1 { fail_b } else { ok }))
        .collect();
    let t = feed_all(&mut all, t0(), &calls);
    assert_eq!(models(&t), ["gpt-4o"]);
    let provider = all.get("openai", "").unwrap();
    assert_eq!(provider.state(), CircuitState::Closed);
    assert_eq!(
        (
            provider.window_counts().calls,
            provider.window_counts().failures
        ),
        (80, 61)
    );
    assert_eq!(in_provider_window(&all, "gpt-4o-mini"), Some((20, 1, 0)));
    assert_eq!(
        all.get("openai", "gpt-4o-mini").unwrap().state(),
        CircuitState::Closed
    );
    assert!(!all.keeps_out("openai", "gpt-4o-mini"));
}

#[test]
fn an_outage_of_the_model_and_its_fallback_opens_the_provider() {
    let mut all = Breakers::new();
    // gpt-4o fails, its fallback answers, until gpt-4o's breaker opens
    // (its 20th failure, in the 7th call): 20 of 26 calls failed (76%),
    // but 0 of 6 leaving out gpt-4o...
    let mut calls: Vec<_> = (0..6).flat_map(|_| retried_then_fallback()).collect();
    calls.extend([("gpt-4o", fail_a as Make), ("gpt-4o", fail_a)]);
    let t = feed_all(&mut all, t0(), &calls);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(
        (t[0].model.as_str(), t[0].to),
        ("gpt-4o", CircuitState::Open)
    );
    assert_eq!(all.get("openai", "").unwrap().state(), CircuitState::Closed);
    // ...then the proxies send to the fallback, and it fails too: 5 of 11
    // (45%) leaving out gpt-4o keep the provider closed, 6 of 12 (50%)
    // open it.
    let at = t0() + Duration::seconds(1);
    let t = feed_all(&mut all, at, &[("gpt-4o-mini", fail_b as Make); 5]);
    assert!(t.is_empty(), "{t:?}");
    let at = t0() + Duration::seconds(2);
    let t = feed_all(&mut all, at, &[("gpt-4o-mini", fail_b)]);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(
        (t[0].model.as_str(), t[0].from, t[0].to, t[0].generation),
        ("", CircuitState::Closed, CircuitState::Open, 1)
    );
    assert_eq!(
        (t[0].calls, t[0].failures, t[0].signature),
        (32, 26, Some(SIG_A))
    );
    assert_eq!(
        t[0].reason,
        "26 of 32 calls failed (81%, threshold 50%) in the last 60 s, 6 of 12 (50%) leaving out gpt-4o, the model failing most; open for 30 s"
    );
    // gpt-4o-mini's own breaker has seen 12 calls, below the minimum, but
    // its provider keeps it out.
    assert_eq!(
        all.get("openai", "gpt-4o-mini").unwrap().state(),
        CircuitState::Closed
    );
    assert!(all.keeps_out("openai", "gpt-4o-mini"));
    // Opening emptied the window, the counts per model with it.
    assert_eq!(in_provider_window(&all, "gpt-4o"), None);
    assert_eq!(in_provider_window(&all, "gpt-4o-mini"), None);
}

#[test]
fn a_model_whose_calls_left_the_window_is_no_longer_part_of_the_provider() {
    // gpt-4o-mini failed once at t0; gpt-4o fails 20 times 60 s later, when
    // that call's bucket has left the window: leaving out gpt-4o, no call
    // is left to judge the provider on.
    let mut all = Breakers::new();
    assert!(feed_all(&mut all, t0(), &[("gpt-4o-mini", fail_b)]).is_empty());
    assert_eq!(in_provider_window(&all, "gpt-4o-mini"), Some((1, 1, 0)));
    all.tick(t0() + Duration::seconds(60), &config());
    assert_eq!(in_provider_window(&all, "gpt-4o-mini"), None);
    let later = t0() + Duration::seconds(60);
    let t = feed_all(&mut all, later, &vec![("gpt-4o", fail_a as Make); 20]);
    assert_eq!(models(&t), ["gpt-4o"]);
    let provider = all.get("openai", "").unwrap();
    assert_eq!(provider.state(), CircuitState::Closed);
    assert_eq!(provider.window_counts().calls, 20);
    assert_eq!(in_provider_window(&all, "gpt-4o"), Some((20, 20, 0)));
    // One second later, that call is still in the window (expired on
    // arrival, without a tick), but one stray failure of another model is
    // not the provider failing: the rest needs a quarter of the minimum
    // (5 calls) to count, and the provider stays closed.
    let mut all = Breakers::new();
    assert!(feed_all(
        &mut all,
        t0() + Duration::seconds(1),
        &[("gpt-4o-mini", fail_b)]
    )
    .is_empty());
    let t = feed_all(&mut all, later, &vec![("gpt-4o", fail_a as Make); 20]);
    assert_eq!(models(&t), ["gpt-4o"]);
    assert!(!all.keeps_out("openai", "gpt-4o-mini"));
    // Five such failures are: leaving out gpt-4o, 5 of 5 failed, and the
    // provider opens at its 20th call (gpt-4o's 15th failure), before
    // gpt-4o's own.
    let mut all = Breakers::new();
    assert!(feed_all(
        &mut all,
        t0() + Duration::seconds(1),
        &[("gpt-4o-mini", fail_b as Make); 5]
    )
    .is_empty());
    let t = feed_all(&mut all, later, &vec![("gpt-4o", fail_a as Make); 20]);
    assert_eq!(models(&t), ["", "gpt-4o"]);
    assert_eq!((t[0].calls, t[0].failures), (20, 20));
    assert_eq!(
        t[0].reason,
        "20 of 20 calls failed (100%, threshold 50%) in the last 60 s, 5 of 5 (100%) leaving out gpt-4o, the model failing most; open for 30 s"
    );
}

#[test]
fn failures_of_the_other_models_leave_the_window_with_their_buckets() {
    // gpt-4o-mini: 5 failures at t0, 5 successes at t0 + 30 s.
    let mini = |all: &mut Breakers| {
        assert!(feed_all(all, t0(), &[("gpt-4o-mini", fail_b as Make); 5]).is_empty());
        let at = t0() + Duration::seconds(30);
        assert!(feed_all(all, at, &[("gpt-4o-mini", ok as Make); 5]).is_empty());
    };
    let gpt_4o_failing = vec![("gpt-4o", fail_a as Make); 20];
    // Its failures leave the window 60 s after t0, its successes stay:
    // leaving out gpt-4o, 0 of 5 failed, and only gpt-4o's breaker opens.
    let mut all = Breakers::new();
    mini(&mut all);
    all.tick(t0() + ms(59_900), &config());
    assert_eq!(in_provider_window(&all, "gpt-4o-mini"), Some((10, 5, 0)));
    all.tick(t0() + Duration::seconds(60), &config());
    assert_eq!(in_provider_window(&all, "gpt-4o-mini"), Some((5, 0, 0)));
    let t = feed_all(&mut all, t0() + Duration::seconds(60), &gpt_4o_failing);
    assert_eq!(models(&t), ["gpt-4o"]);
    let provider = all.get("openai", "").unwrap();
    assert_eq!(provider.state(), CircuitState::Closed);
    assert_eq!(
        (
            provider.window_counts().calls,
            provider.window_counts().failures
        ),
        (25, 20)
    );
    // A second earlier they are still in it: 5 of 10 (50%) leaving out
    // gpt-4o, and the provider opens at its 20th call (gpt-4o's 10th).
    let mut all = Breakers::new();
    mini(&mut all);
    let t = feed_all(&mut all, t0() + Duration::seconds(59), &gpt_4o_failing);
    assert_eq!(models(&t), ["", "gpt-4o"]);
    assert_eq!((t[0].calls, t[0].failures), (20, 15));
    assert_eq!(
        t[0].reason,
        "15 of 20 calls failed (75%, threshold 50%) in the last 60 s, 5 of 10 (50%) leaving out gpt-4o, the model failing most; open for 30 s"
    );
}

#[test]
fn a_tie_on_failures_leaves_out_the_smaller_model_name() {
    // gpt-4o-mini is seen first and answers twice; then each model fails
    // 9 times: 9 failures each. Left out is gpt-4o (the smaller name, not
    // the first seen): 9 of 11 of gpt-4o-mini's calls failed.
    let mut calls = vec![("gpt-4o-mini", ok as Make); 2];
    calls.extend((0..9).flat_map(|_| [("gpt-4o-mini", fail_b as Make), ("gpt-4o", fail_a)]));
    let mut all = Breakers::new();
    let t = feed_all(&mut all, t0(), &calls);
    assert_eq!(models(&t), [""]);
    assert_eq!(
        t[0].reason,
        "18 of 20 calls failed (90%, threshold 50%) in the last 60 s, 9 of 11 (81%) leaving out gpt-4o, the model failing most; open for 30 s"
    );
    // One failure more for gpt-4o-mini (and one success less) makes it the
    // model failing most.
    let mut calls = vec![("gpt-4o-mini", ok as Make)];
    calls.extend((0..9).flat_map(|_| [("gpt-4o-mini", fail_b as Make), ("gpt-4o", fail_a)]));
    calls.push(("gpt-4o-mini", fail_b));
    let mut all = Breakers::new();
    let t = feed_all(&mut all, t0(), &calls);
    assert_eq!(models(&t), [""]);
    assert_eq!(
        t[0].reason,
        "19 of 20 calls failed (95%, threshold 50%) in the last 60 s, 9 of 9 (100%) leaving out gpt-4o-mini, the model failing most; open for 30 s"
    );
}

#[test]
fn slow_calls_open_the_provider_by_the_same_rule() {
    // At a 50% slow-call threshold: gpt-4o slow (three attempts a call),
    // its fallback fast but for one call in 20. Leaving out gpt-4o, 1 of
    // 20 is slow: only gpt-4o's breaker opens, in its usual words.
    let c = BreakersConfig {
        slow_call_rate_percent: 50,
        ..config()
    };
    let calls: Vec<_> = (0..20)
        .flat_map(|i| {
            [
                ("gpt-4o", slow as Make),
                ("gpt-4o", slow),
                ("gpt-4o", slow),
                ("gpt-4o-mini", if i == 1 { slow } else { ok }),
            ]
        })
        .collect();
    let mut all = Breakers::new();
    let t = feed_all_with(&mut all, t0(), &calls, &c);
    assert_eq!(models(&t), ["gpt-4o"]);
    assert_eq!(
        t[0].reason,
        "20 of 20 calls slower than 30000 ms (100%, threshold 50%) in the last 60 s; open for 30 s"
    );
    assert_eq!(all.get("openai", "").unwrap().state(), CircuitState::Closed);
    assert_eq!(in_provider_window(&all, "gpt-4o-mini"), Some((20, 0, 1)));
    assert!(!all.keeps_out("openai", "gpt-4o-mini"));
    // Both models slow: leaving out gpt-4o (a tie, the smaller name), 10 of
    // 10 are slow, and the provider opens.
    let calls: Vec<_> = (0..10)
        .flat_map(|_| [("gpt-4o", slow as Make), ("gpt-4o-mini", slow)])
        .collect();
    let mut all = Breakers::new();
    let t = feed_all(&mut all, t0(), &calls);
    assert_eq!(models(&t), [""]);
    assert_eq!(
        t[0].reason,
        "20 of 20 calls slower than 30000 ms (100%, threshold 100%) in the last 60 s, 10 of 10 (100%) leaving out gpt-4o, the model slow most often; open for 30 s"
    );
}

/// openai's provider breaker opened by an outage of two models and turned
/// half-open; the time it did.
fn provider_half_open() -> (Breaker, DateTime<Utc>) {
    let c = config();
    let mut b = Breaker::new("openai", "", t0());
    let mut opened = None;
    for i in 0..20 {
        let at = t0() + ms(10 * i);
        let model = if i % 2 == 0 { "gpt-4o" } else { "gpt-4o-mini" };
        opened = opened.or(b.observe_call_to(model, &fail_a(at), at, &c));
    }
    let opened = opened.expect("an outage of both models opens the provider");
    let at = opened.at + c.open_for();
    let t = b.tick(at, &c).unwrap();
    assert_eq!((t.from, t.to), (CircuitState::Open, CircuitState::HalfOpen));
    (b, at)
}

/// Feed `probes` (model, outcome) to `b` 10 ms apart from 1 s after
/// `since`; the transitions they caused.
fn probe(b: &mut Breaker, since: DateTime<Utc>, probes: &[(&str, Make)]) -> Vec<Transition> {
    let c = config();
    let start = since + Duration::seconds(1);
    let mut out = Vec::new();
    for (i, (model, make)) in probes.iter().enumerate() {
        let at = start + ms(10 * i as i64);
        out.extend(b.observe_call_to(model, &make(at), at, &c));
    }
    out
}

#[test]
fn a_providers_probes_failing_on_one_model_alone_close_it() {
    // 3 of 5 probes failed (60%), all on gpt-4o; its sibling's 2 answered:
    // the provider is not failing, gpt-4o's own breaker keeps gpt-4o out.
    let (mut b, since) = provider_half_open();
    let probes: [(&str, Make); 5] = [
        ("gpt-4o", fail_a),
        ("gpt-4o-mini", ok),
        ("gpt-4o", fail_a),
        ("gpt-4o-mini", ok),
        ("gpt-4o", fail_a),
    ];
    let t = probe(&mut b, since, &probes);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(
        (t[0].from, t[0].to, t[0].calls, t[0].failures),
        (CircuitState::HalfOpen, CircuitState::Closed, 5, 3)
    );
    // Probes that all went to one model are judged as they are: in an
    // outage the traffic, and so the probes, often reach one model only.
    let (mut b, since) = provider_half_open();
    let t = probe(&mut b, since, &[("gpt-4o", fail_a as Make); 5]);
    assert_eq!((t.len(), t[0].to), (1, CircuitState::Open), "{t:?}");
    let (mut b, since) = provider_half_open();
    let t = probe(&mut b, since, &[("gpt-4o", ok as Make); 5]);
    assert_eq!((t.len(), t[0].to), (1, CircuitState::Closed), "{t:?}");
}

#[test]
fn a_providers_probes_failing_on_its_other_models_too_open_it_again() {
    let (mut b, since) = provider_half_open();
    let probes: [(&str, Make); 5] = [
        ("gpt-4o", fail_a),
        ("gpt-4o-mini", fail_b),
        ("gpt-4o", fail_a),
        ("gpt-4o-mini", ok),
        ("gpt-4o", fail_a),
    ];
    let t = probe(&mut b, since, &probes);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(
        (
            t[0].from,
            t[0].to,
            t[0].calls,
            t[0].failures,
            t[0].generation
        ),
        (CircuitState::HalfOpen, CircuitState::Open, 5, 4, 2)
    );
    assert_eq!(
        t[0].reason,
        "probes: 4 of 5 calls failed (80%, threshold 50%), 1 of 2 (50%) leaving out gpt-4o, the model failing most; open again for 30 s"
    );
    // The next episode's probes start from nothing.
    let at = t[0].at + config().open_for();
    let t = b.tick(at, &config()).unwrap();
    assert_eq!(t.to, CircuitState::HalfOpen);
    let t = probe(&mut b, at, &[("gpt-4o-mini", ok as Make); 5]);
    assert_eq!((t[0].to, t[0].failures), (CircuitState::Closed, 0));
}
