//! The v5 score: per miner and model, a sliding window of the last answers;
//! a model the miner fails too often is dropped, a miner that completes too
//! few is not paid, and the rest earn the median verified speed.
//!
//! ```text
//! per (miner, model), over the last `window` answers:
//!   failure rate = failed / asked           dropped (0) when ≥ max_failure_rate over > min_asked_for_drop
//!   model score  = median speed of its answers, a failed one counting 0
//! per miner:
//!   success rate = verified / asked, over its models
//!   score        = 0 when success rate < min_success_rate or verified < min_completed,
//!                  else the sum of its models' scores
//! ```
//!
//! The v5 share of the weights is split in proportion to the scores.

use std::collections::{BTreeMap, VecDeque};

#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoreRules {
    /// Answers kept per miner and model.
    pub window: usize,
    pub max_failure_rate: f64,
    pub min_asked_for_drop: usize,
    pub min_success_rate: f64,
    pub min_completed: usize,
}

impl Default for ScoreRules {
    fn default() -> Self {
        // The subnet's last v5 verifier: drop a model at a failure rate of
        // 0.15 over more than 10 requests; nothing below 50 % success or 25
        // completed.
        ScoreRules {
            window: 100,
            max_failure_rate: 0.15,
            min_asked_for_drop: 10,
            min_success_rate: 0.5,
            min_completed: 25,
        }
    }
}

/// One answer's result.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Answer {
    Verified {
        tps: f64,
        ttft: f64,
    },
    /// Failed a check (named) or could not be had (timeout, error).
    Failed(String),
}

#[derive(Debug, Default, Clone)]
pub struct Windows {
    by: BTreeMap<(u16, String), VecDeque<Answer>>,
}

/// A miner's v5 standing, for the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    pub score: f64,
    pub asked: usize,
    pub verified: usize,
    /// Why the score is what it is (the gate that zeroed it, or the models paid).
    pub reason: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

impl Windows {
    pub fn record(&mut self, rules: &ScoreRules, uid: u16, model: &str, a: Answer) {
        let w = self.by.entry((uid, model.to_string())).or_default();
        w.push_back(a);
        while w.len() > rules.window.max(1) {
            w.pop_front();
        }
    }

    /// The (uid, model) windows held.
    pub fn keys(&self) -> Vec<(u16, String)> {
        self.by.keys().cloned().collect()
    }

    /// Every window, oldest answer first (to keep across restarts).
    pub fn entries(&self) -> Vec<(u16, String, Vec<Answer>)> {
        self.by
            .iter()
            .map(|((u, m), w)| (*u, m.clone(), w.iter().cloned().collect()))
            .collect()
    }

    /// Windows from [`Windows::entries`], each cut to the rules' window.
    pub fn from_entries(rules: &ScoreRules, entries: Vec<(u16, String, Vec<Answer>)>) -> Self {
        let mut w = Windows::default();
        for (uid, model, answers) in entries {
            for a in answers {
                w.record(rules, uid, &model, a);
            }
        }
        w
    }

    /// Keeps only the windows of models `keep` says yes to.
    pub fn retain_models(&mut self, keep: impl Fn(&str) -> bool) {
        self.by.retain(|(_, m), _| keep(m));
    }

    /// Forget a uid (a new hotkey took it).
    pub fn forget(&mut self, uid: u16) {
        self.by.retain(|(u, _), _| *u != uid);
    }

    pub fn standing(&self, rules: &ScoreRules, uid: u16) -> Standing {
        let (mut asked, mut verified, mut score) = (0, 0, 0.0);
        let mut parts = Vec::new();
        for ((u, model), w) in &self.by {
            if *u != uid {
                continue;
            }
            // A failed answer counts as speed 0 in the median: failing the
            // slow requests on purpose does not lift it.
            let speeds: Vec<f64> = w
                .iter()
                .map(|a| match a {
                    Answer::Verified { tps, .. } => *tps,
                    Answer::Failed(_) => 0.0,
                })
                .collect();
            let failed = w.iter().filter(|a| matches!(a, Answer::Failed(_))).count();
            asked += w.len();
            verified += w.len() - failed;
            let rate = failed as f64 / w.len().max(1) as f64;
            if w.len() > rules.min_asked_for_drop && rate >= rules.max_failure_rate {
                let last = w.iter().rev().find_map(|a| match a {
                    Answer::Failed(why) => Some(why.as_str()),
                    Answer::Verified { .. } => None,
                });
                parts.push(format!(
                    "{model} dropped: {failed} of {} failed ({:.0} %; last: {})",
                    w.len(),
                    rate * 100.0,
                    last.unwrap_or("-")
                ));
                continue;
            }
            let m = median(speeds);
            score += m;
            let last = w.iter().rev().find_map(|a| match a {
                Answer::Failed(why) => Some(why.as_str()),
                Answer::Verified { .. } => None,
            });
            parts.push(match last {
                Some(why) => format!(
                    "{model} {m:.1} tokens/s, {failed} of {} failed (last: {why})",
                    w.len()
                ),
                None => format!("{model} {m:.1} tokens/s"),
            });
        }
        let success = verified as f64 / asked.max(1) as f64;
        let gate = if asked == 0 {
            Some("no inference asked yet".to_string())
        } else if success < rules.min_success_rate {
            Some(format!(
                "{verified} of {asked} answers verified ({:.0} %, below {:.0} %)",
                success * 100.0,
                rules.min_success_rate * 100.0
            ))
        } else if verified < rules.min_completed {
            Some(format!(
                "{verified} verified answers so far (at least {} needed)",
                rules.min_completed
            ))
        } else {
            None
        };
        match gate {
            Some(g) => Standing {
                score: 0.0,
                asked,
                verified,
                reason: if parts.is_empty() {
                    g
                } else {
                    format!("{g}; {}", parts.join("; "))
                },
            },
            None => Standing {
                score,
                asked,
                verified,
                reason: parts.join("; "),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(tps: f64) -> Answer {
        Answer::Verified { tps, ttft: 0.1 }
    }

    #[test]
    fn the_formula() {
        let r = ScoreRules {
            min_completed: 3,
            ..ScoreRules::default()
        };
        let mut w = Windows::default();
        for t in [10.0, 30.0, 20.0] {
            w.record(&r, 1, "m", ok(t));
        }
        let s = w.standing(&r, 1);
        assert_eq!((s.score, s.asked, s.verified), (20.0, 3, 3));
        // Too few completed: nothing.
        assert_eq!(w.standing(&ScoreRules::default(), 1).score, 0.0);
        // A model failed at 2 of 12 (17 %): dropped, its reason named.
        for i in 0..12 {
            let a = if i < 2 {
                Answer::Failed("v5.tokens: x".into())
            } else {
                ok(50.0)
            };
            w.record(&r, 1, "bad", a);
        }
        let s = w.standing(&r, 1);
        assert_eq!(s.score, 20.0);
        assert!(
            s.reason.contains("bad dropped: 2 of 12 failed"),
            "{}",
            s.reason
        );
        // Below half verified: nothing at all.
        let mut w = Windows::default();
        for i in 0..10 {
            w.record(
                &r,
                2,
                "m",
                if i < 6 {
                    Answer::Failed("x".into())
                } else {
                    ok(9.0)
                },
            );
        }
        let s = w.standing(&r, 2);
        assert_eq!(s.score, 0.0);
        assert!(
            s.reason.starts_with("4 of 10 answers verified"),
            "{}",
            s.reason
        );
        // The window keeps the newest answers only.
        let r2 = ScoreRules {
            window: 2,
            min_completed: 1,
            ..ScoreRules::default()
        };
        let mut w = Windows::default();
        for t in [1.0, 100.0, 200.0] {
            w.record(&r2, 3, "m", ok(t));
        }
        assert_eq!(w.standing(&r2, 3).score, 150.0);
    }
}
