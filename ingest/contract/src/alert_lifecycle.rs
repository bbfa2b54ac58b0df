//! The life of one alert (one rule and one set of labels) across
//! evaluations: inactive → pending → firing → resolved, with the rule's
//! `for` duration, in Prometheus' semantics. Pure and clocked by the
//! evaluations it is given, so the evaluator and the backtest (which
//! replays the same evaluations over stored data) take the same steps:
//! a backtest equals what the evaluator then does on the same data.
//!
//! - An evaluation where the condition holds starts a **pending** episode
//!   (or fires at once when `for` is 0).
//! - Pending becomes **firing** at the first evaluation at least `for`
//!   after the episode started, if the condition held at every evaluation
//!   in between; one evaluation where it does not hold clears the episode
//!   without a notification.
//! - Firing becomes **resolved** at the first evaluation where the
//!   condition does not hold; the next evaluation starts from inactive.
//!   So notifications cannot flap faster than the rule's `for` allows: a
//!   new firing needs a new pending episode of at least `for`.
//! - An evaluation that could not be made (the data source was down) is
//!   [`Observation::Unknown`]: it changes nothing, and neither holds nor
//!   breaks a pending episode's continuity (the episode's start stays).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    Inactive,
    /// The condition has held at every evaluation since `since`.
    Pending {
        since: DateTime<Utc>,
    },
    /// Firing since `fired_at`; the episode began (pending) at `since`.
    Firing {
        since: DateTime<Utc>,
        fired_at: DateTime<Utc>,
    },
}

/// What one evaluation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// The rule's condition holds (e.g. the error rate is above it).
    Holds,
    /// It does not.
    Clear,
    /// No answer (the source failed, or a figure nobody reported; a
    /// window with no calls is `Clear`): nothing changes.
    Unknown,
}

/// A change worth recording (and, for `Firing` and `Resolved`, notifying).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum Transition {
    /// inactive → pending.
    Pending { since: DateTime<Utc> },
    /// pending → inactive: the condition stopped holding before `for`.
    Cleared { since: DateTime<Utc> },
    /// → firing (from pending, or from inactive when `for` is 0).
    Firing {
        since: DateTime<Utc>,
        fired_at: DateTime<Utc>,
    },
    /// firing → inactive.
    Resolved {
        since: DateTime<Utc>,
        fired_at: DateTime<Utc>,
        resolved_at: DateTime<Utc>,
    },
}

impl Transition {
    /// The state the transition leads to, as the Alerts page names it.
    pub fn to_state(&self) -> &'static str {
        match self {
            Transition::Pending { .. } => "pending",
            Transition::Cleared { .. } => "inactive",
            Transition::Firing { .. } => "firing",
            Transition::Resolved { .. } => "resolved",
        }
    }

    /// Whether receivers are told (firing and resolved only).
    pub fn notifies(&self) -> bool {
        matches!(
            self,
            Transition::Firing { .. } | Transition::Resolved { .. }
        )
    }
}

impl Phase {
    /// The phase after an evaluation at `at` that found `observation`,
    /// under a rule with `for_duration`, and the transition it made.
    pub fn step(
        self,
        at: DateTime<Utc>,
        observation: Observation,
        for_duration: Duration,
    ) -> (Phase, Option<Transition>) {
        match (self, observation) {
            (phase, Observation::Unknown) => (phase, None),
            (Phase::Inactive, Observation::Clear) => (Phase::Inactive, None),
            (Phase::Inactive, Observation::Holds) => {
                if for_duration <= Duration::zero() {
                    let phase = Phase::Firing {
                        since: at,
                        fired_at: at,
                    };
                    (
                        phase,
                        Some(Transition::Firing {
                            since: at,
                            fired_at: at,
                        }),
                    )
                } else {
                    (
                        Phase::Pending { since: at },
                        Some(Transition::Pending { since: at }),
                    )
                }
            }
            (Phase::Pending { since }, Observation::Clear) => {
                (Phase::Inactive, Some(Transition::Cleared { since }))
            }
            (Phase::Pending { since }, Observation::Holds) => {
                if at - since >= for_duration {
                    (
                        Phase::Firing {
                            since,
                            fired_at: at,
                        },
                        Some(Transition::Firing {
                            since,
                            fired_at: at,
                        }),
                    )
                } else {
                    (Phase::Pending { since }, None)
                }
            }
            (phase @ Phase::Firing { .. }, Observation::Holds) => (phase, None),
            (Phase::Firing { since, fired_at }, Observation::Clear) => (
                Phase::Inactive,
                Some(Transition::Resolved {
                    since,
                    fired_at,
                    resolved_at: at,
                }),
            ),
        }
    }
}

/// Replay `observations` (in time order) from `start`: every transition,
/// with the phase at the end. The backtest is exactly this over stored
/// data at the evaluator's interval.
pub fn replay(
    start: Phase,
    observations: impl IntoIterator<Item = (DateTime<Utc>, Observation)>,
    for_duration: Duration,
) -> (Phase, Vec<(DateTime<Utc>, Transition)>) {
    let mut phase = start;
    let mut transitions = Vec::new();
    for (at, observation) in observations {
        let (next, transition) = phase.step(at, observation, for_duration);
        phase = next;
        if let Some(t) = transition {
            transitions.push((at, t));
        }
    }
    (phase, transitions)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use Observation::{Clear, Holds, Unknown};

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + s, 0).unwrap()
    }

    /// Observations every 10 s from t(0).
    fn run(seq: &[Observation], for_secs: i64) -> Vec<(i64, &'static str)> {
        let (_, transitions) = replay(
            Phase::Inactive,
            seq.iter().enumerate().map(|(i, o)| (t(i as i64 * 10), *o)),
            Duration::seconds(for_secs),
        );
        transitions
            .into_iter()
            .map(|(at, tr)| ((at - t(0)).num_seconds(), tr.to_state()))
            .collect()
    }

    #[test]
    fn pending_fires_after_for_and_resolves_when_clear() {
        assert_eq!(
            run(&[Clear, Holds, Holds, Holds, Holds, Clear, Clear], 30),
            vec![(10, "pending"), (40, "firing"), (50, "resolved")]
        );
    }

    #[test]
    fn a_blip_shorter_than_for_clears_without_firing() {
        assert_eq!(
            run(&[Holds, Holds, Clear, Holds, Clear], 30),
            vec![
                (0, "pending"),
                (20, "inactive"),
                (30, "pending"),
                (40, "inactive")
            ]
        );
    }

    #[test]
    fn for_zero_fires_at_once() {
        assert_eq!(
            run(&[Holds, Holds, Clear], 0),
            vec![(0, "firing"), (20, "resolved")]
        );
    }

    #[test]
    fn unknown_changes_nothing_and_keeps_the_episode_start() {
        assert_eq!(
            run(&[Holds, Unknown, Unknown, Holds], 30),
            vec![(0, "pending"), (30, "firing")]
        );
        assert_eq!(run(&[Unknown, Unknown], 0), vec![]);
        let (phase, _) = replay(
            Phase::Inactive,
            [(t(0), Holds), (t(10), Holds), (t(20), Unknown)],
            Duration::seconds(5),
        );
        assert_eq!(
            phase,
            Phase::Firing {
                since: t(0),
                fired_at: t(10)
            }
        );
    }

    #[test]
    fn firing_carries_its_episode_into_resolved() {
        let (_, transitions) = replay(
            Phase::Inactive,
            [(t(0), Holds), (t(60), Holds), (t(70), Clear)],
            Duration::seconds(60),
        );
        assert_eq!(
            transitions.last().unwrap().1,
            Transition::Resolved {
                since: t(0),
                fired_at: t(60),
                resolved_at: t(70)
            }
        );
        assert!(transitions.last().unwrap().1.notifies());
        assert!(!transitions[0].1.notifies());
    }

    proptest! {
        /// Flapping input: notifications (firing) never come closer than
        /// `for` after the start of their pending episode, every firing is
        /// followed by at most one resolved before the next firing, and
        /// a replay split anywhere (a restart with the persisted phase)
        /// takes the same steps as one replay.
        #[test]
        fn notifications_never_flap_faster_than_for(
            seq in proptest::collection::vec(0u8..3, 0..200),
            for_secs in 0i64..120,
            split in 0usize..200,
        ) {
            let obs: Vec<(DateTime<Utc>, Observation)> = seq
                .iter()
                .enumerate()
                .map(|(i, o)| (t(i as i64 * 10), [Holds, Clear, Unknown][*o as usize]))
                .collect();
            let for_d = Duration::seconds(for_secs);
            let (end, all) = replay(Phase::Inactive, obs.clone(), for_d);
            let mut firing = false;
            for (at, tr) in &all {
                match tr {
                    Transition::Firing { since, fired_at } => {
                        prop_assert!(!firing);
                        prop_assert_eq!(fired_at, at);
                        prop_assert!(*fired_at - *since >= for_d);
                        firing = true;
                    }
                    Transition::Resolved { .. } => {
                        prop_assert!(firing);
                        firing = false;
                    }
                    _ => prop_assert!(!firing),
                }
            }
            let split = split.min(obs.len());
            let (mid, mut first) = replay(Phase::Inactive, obs[..split].to_vec(), for_d);
            let (end2, second) = replay(mid, obs[split..].to_vec(), for_d);
            first.extend(second);
            prop_assert_eq!(end, end2);
            prop_assert_eq!(all, first);
        }
    }
}
