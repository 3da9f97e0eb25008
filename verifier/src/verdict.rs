//! A verdict is never a bare bool: every check by name, with its outcome and
//! the reason, plus the facts a validator needs.

use std::fmt::Write as _;

use serde::Serialize;

use crate::facts::Facts;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    /// Not evaluated: nothing to check against, or an earlier check failed.
    NotChecked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    /// What was found (pass) or what is wrong and what to do (fail).
    pub detail: String,
}

impl Check {
    pub fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            status: Status::Pass,
            detail: detail.into(),
        }
    }
    pub fn fail(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            status: Status::Fail,
            detail: detail.into(),
        }
    }
    pub fn not_checked(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            status: Status::NotChecked,
            detail: detail.into(),
        }
    }
}

/// The checks of one piece of evidence and what it showed. Only this crate
/// makes one: a caller can read a verdict but not write `accepted`.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub(crate) accepted: bool,
    pub(crate) checks: Vec<Check>,
    pub(crate) facts: Option<Facts>,
}

impl Verdict {
    pub(crate) fn new(checks: Vec<Check>, facts: Option<Facts>) -> Self {
        // Accepted only when something passed and nothing failed.
        let accepted = checks.iter().all(|c| c.status != Status::Fail)
            && checks.iter().any(|c| c.status == Status::Pass);
        Verdict {
            accepted,
            checks,
            facts,
        }
    }

    /// Something passed and nothing failed.
    pub fn accepted(&self) -> bool {
        self.accepted
    }

    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    pub fn facts(&self) -> Option<&Facts> {
        self.facts.as_ref()
    }

    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }

    /// A plain-text table for people.
    pub fn render(&self) -> String {
        let mut out = render_checks(&self.checks);
        if let Some(f) = &self.facts {
            out.push('\n');
            for (k, v) in f.rows() {
                let _ = writeln!(out, "{k:>18}: {v}");
            }
        }
        let _ = writeln!(
            out,
            "\n{}",
            if self.accepted {
                "ACCEPTED"
            } else {
                "REJECTED"
            }
        );
        out
    }
}

/// One line per check: status, name, detail.
pub fn render_checks(checks: &[Check]) -> String {
    let mut out = String::new();
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in checks {
        let mark = match c.status {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::NotChecked => " -- ",
        };
        let _ = writeln!(out, "{mark}  {:width$}  {}", c.name, c.detail);
    }
    out
}

/// The outcome of `verify` (is the evidence genuine?), before any policy.
/// Only this crate makes one.
#[derive(Debug, Clone)]
pub struct Verification {
    pub(crate) checks: Vec<Check>,
    pub(crate) facts: Option<Facts>,
}

impl Verification {
    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    pub fn facts(&self) -> Option<&Facts> {
        self.facts.as_ref()
    }

    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }

    /// Stop early: every check of `order` not yet run is marked not checked.
    pub(crate) fn stopped(
        mut checks: Vec<Check>,
        order: &[&'static str],
        facts: Option<Facts>,
    ) -> Self {
        let failed = checks
            .iter()
            .find(|c| c.status == Status::Fail)
            .map(|c| c.name)
            .unwrap_or("an earlier check");
        for name in order {
            if !checks.iter().any(|c| c.name == *name) {
                checks.push(Check::not_checked(
                    name,
                    format!("not reached: {failed} failed"),
                ));
            }
        }
        Verification { checks, facts }
    }

    /// No check failed. (Checks not run for lack of input, such as revocation
    /// without a CRL, show as not checked.)
    pub fn genuine(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }
}
