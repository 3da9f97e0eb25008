//! Prometheus text exposition of a few counters and one latency histogram,
//! written by hand: the agent needs a dozen numbers, not a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the evidence latency histogram.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
pub struct Metrics {
    /// (route, status) → count
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// reason → count
    denied: Mutex<BTreeMap<&'static str, u64>>,
    evidence_ok: AtomicU64,
    evidence_failed: AtomicU64,
    evidence_busy: AtomicU64,
    upstream_errors: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

impl Metrics {
    pub fn request(&self, route: &'static str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route, status)).or_default() += 1;
        }
    }

    pub fn denied(&self, reason: &'static str) {
        if let Ok(mut m) = self.denied.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    pub fn evidence(&self, ok: bool, seconds: f64) {
        if ok {
            self.evidence_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.evidence_failed.fetch_add(1, Ordering::Relaxed);
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn busy(&self) {
        self.evidence_busy.fetch_add(1, Ordering::Relaxed);
    }

    pub fn upstream_error(&self) {
        self.upstream_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, ready: bool, simulated: bool, gpus: usize) -> String {
        let mut o = String::new();
        let g = |o: &mut String, name: &str, help: &str, kind: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        g(
            &mut o,
            "tvm_agent_requests_total",
            "HTTP requests by route and status.",
            "counter",
        );
        if let Ok(m) = self.requests.lock() {
            for ((route, status), n) in m.iter() {
                let _ = writeln!(
                    o,
                    "tvm_agent_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        g(
            &mut o,
            "tvm_agent_denied_total",
            "Requests refused by access control, by reason.",
            "counter",
        );
        if let Ok(m) = self.denied.lock() {
            for (reason, n) in m.iter() {
                let _ = writeln!(o, "tvm_agent_denied_total{{reason=\"{reason}\"}} {n}");
            }
        }
        g(
            &mut o,
            "tvm_agent_evidence_total",
            "Evidence bundles produced, by result.",
            "counter",
        );
        let _ = writeln!(
            o,
            "tvm_agent_evidence_total{{result=\"ok\"}} {}",
            self.evidence_ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "tvm_agent_evidence_total{{result=\"failed\"}} {}",
            self.evidence_failed.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "tvm_agent_evidence_total{{result=\"busy\"}} {}",
            self.evidence_busy.load(Ordering::Relaxed)
        );
        g(
            &mut o,
            "tvm_agent_evidence_seconds",
            "Time to produce one evidence bundle.",
            "histogram",
        );
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "tvm_agent_evidence_seconds_bucket{{le=\"{b}\"}} {}",
                self.latency_buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            o,
            "tvm_agent_evidence_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            o,
            "tvm_agent_evidence_seconds_sum {}",
            self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(o, "tvm_agent_evidence_seconds_count {count}");
        g(
            &mut o,
            "tvm_agent_upstream_errors_total",
            "Inference requests the upstream could not answer.",
            "counter",
        );
        let _ = writeln!(
            o,
            "tvm_agent_upstream_errors_total {}",
            self.upstream_errors.load(Ordering::Relaxed)
        );
        g(
            &mut o,
            "tvm_agent_ready",
            "1 when the GPUs are in CC mode and ready.",
            "gauge",
        );
        let _ = writeln!(o, "tvm_agent_ready {}", u8::from(ready));
        g(
            &mut o,
            "tvm_agent_simulated",
            "1 when the TEE or GPUs are SIMULATED.",
            "gauge",
        );
        let _ = writeln!(o, "tvm_agent_simulated {}", u8::from(simulated));
        g(&mut o, "tvm_agent_gpus", "GPUs this node reports.", "gauge");
        let _ = writeln!(o, "tvm_agent_gpus {gpus}");
        o
    }
}
