//! The result of `tvm check`: one finding per check, as text or JSON
//! (schema `tvm-check/1`, documented in docs/miner.md).

use serde::Serialize;

use super::NodeType;

/// The JSON schema's name; a change to its fields changes the version.
pub const SCHEMA: &str = "tvm-check/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// A change `--fix-warnings` may make: reversible, and harmless to a host
/// that is already running a CVM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Write a file of tvm's own (never one the miner wrote).
    Write { path: String, contents: String },
    /// Run a command.
    Run { argv: Vec<String> },
}

impl Action {
    pub fn describe(&self) -> String {
        match self {
            Action::Write { path, .. } => format!("write {path}"),
            Action::Run { argv } => argv.join(" "),
        }
    }
}

/// Most of what a check quotes from the host (command output can be long;
/// a report must stay small enough to send).
pub const MAX_SAW: usize = 2048;

fn bounded(mut s: String) -> String {
    if s.len() > MAX_SAW {
        let mut cut = MAX_SAW;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(" … (cut)");
    }
    s
}

/// One check's outcome: what it saw and, when it did not pass, how to fix it.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Stable identifier (`tee.kvm`, `gpu.vfio`…).
    pub id: &'static str,
    pub title: &'static str,
    pub status: Status,
    /// The evidence: what was read, and from where.
    pub saw: String,
    /// What to do (absent when it passed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// What `--fix-warnings` would do for it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub auto_fix: Vec<Action>,
}

impl Finding {
    pub fn new(
        id: &'static str,
        title: &'static str,
        status: Status,
        saw: impl Into<String>,
    ) -> Self {
        Finding {
            id,
            title,
            status,
            saw: bounded(saw.into()),
            fix: None,
            auto_fix: Vec::new(),
        }
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    pub fn auto(mut self, actions: Vec<Action>) -> Self {
        self.auto_fix = actions;
        self
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
    pub skip: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub tvm_version: &'static str,
    pub node_type: NodeType,
    pub checks: Vec<Finding>,
    pub summary: Summary,
    /// No check failed: this host can run the node type's CVM.
    pub ready: bool,
}

impl Report {
    pub fn new(node_type: NodeType, checks: Vec<Finding>) -> Self {
        let mut summary = Summary::default();
        for c in &checks {
            match c.status {
                Status::Pass => summary.pass += 1,
                Status::Warn => summary.warn += 1,
                Status::Fail => summary.fail += 1,
                Status::Skip => summary.skip += 1,
            }
        }
        Report {
            schema: SCHEMA,
            tvm_version: env!("CARGO_PKG_VERSION"),
            node_type,
            ready: summary.fail == 0,
            checks,
            summary,
        }
    }

    pub fn json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// For people: every check (or with `compact`, only those that did not
    /// pass or skip), each with what it saw and the fix, then the summary.
    pub fn text(&self, compact: bool) -> String {
        let mut out = format!("tvm check: node type {}\n", self.node_type.as_str());
        for c in &self.checks {
            if compact && matches!(c.status, Status::Pass | Status::Skip) {
                continue;
            }
            out.push_str(&format!(
                "{:<4}  {:<18} {}\n",
                c.status.label(),
                c.id,
                c.title
            ));
            for line in c.saw.lines() {
                out.push_str(&format!("      saw: {line}\n"));
            }
            if let Some(fix) = &c.fix {
                for line in fix.lines() {
                    out.push_str(&format!("      fix: {line}\n"));
                }
            }
            for a in &c.auto_fix {
                out.push_str(&format!("      --fix-warnings: {}\n", a.describe()));
            }
        }
        let s = self.summary;
        out.push_str(&format!(
            "{} passed, {} warnings, {} failed, {} skipped: {}\n",
            s.pass,
            s.warn,
            s.fail,
            s.skip,
            if self.ready {
                "this host can run the CVM"
            } else {
                "this host cannot mine yet (fix every FAIL above)"
            }
        ));
        out
    }
}
