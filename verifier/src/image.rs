//! Which software runs in the CVM: a genuine quote's measurements against
//! the signed manifests of the operators the policy pins (`images` in the
//! policy, `tvm image` to make them). A quote passes `measurement` only
//! when one accepted manifest for its platform and node type gives every
//! `enforce` register it shows; `warn` registers that differ are reported
//! and do not fail it. A quote that matches none fails, naming the nearest
//! manifest and its first differing register, and, when the node sent its
//! TDX event log and the manifest lists reference events, the first event
//! that differs.

use tvm_image::eventlog::{self, Event};
pub use tvm_image::manifest::{KeySet, Manifest, ManifestError, Mode, Platform};
use tvm_protocol::evidence::NodeType;

use crate::facts::Facts;
use crate::verdict::Check;

pub const MEASUREMENT: &str = "measurement";

/// Manifests checked under a policy's operator keys at one time: those
/// accepted, and those refused with why. Only [`Images::load`] makes one,
/// so nothing unverified reaches appraisal.
#[derive(Debug, Clone, Default)]
pub struct Images {
    accepted: Vec<Manifest>,
    refused: Vec<(String, ManifestError)>,
}

impl Images {
    /// No manifests: every measured quote fails unless the policy says
    /// `dangerous_allow_unmeasured`.
    pub fn none() -> Self {
        Images::default()
    }

    /// Verify each signed manifest (`(where it came from, its bytes)`) under
    /// `keys` at Unix time `at`.
    pub fn load<'a>(
        signed: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        keys: &KeySet,
        at: i64,
    ) -> Self {
        let mut images = Images::default();
        for (source, bytes) in signed {
            match tvm_image::manifest::verify(bytes, keys, at) {
                Ok(m) => images.accepted.push(m),
                Err(e) => images.refused.push((source.to_string(), e)),
            }
        }
        images
    }

    pub fn accepted(&self) -> &[Manifest] {
        &self.accepted
    }

    pub fn refused(&self) -> &[(String, ManifestError)] {
        &self.refused
    }
}

/// The image part of a policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagePolicy {
    /// The operator keys whose signed manifests say which images are
    /// accepted (each with a validity window, so a rotation overlaps), and
    /// the releases the operator retired. Pin keys, not image digests: a
    /// new release then needs no policy change.
    pub operator_keys: KeySet,
    /// Do not check which image runs (`measurement` not checked): a guest of
    /// the miner's own making then passes, and with it any claim it makes.
    /// For tests on evidence from images no one published manifests for.
    pub dangerous_allow_unmeasured: bool,
}

/// A register's value in a quote.
struct Shown {
    name: &'static str,
    value: [u8; 48],
}

fn shown(facts: &Facts) -> Option<(Platform, Vec<Shown>)> {
    match facts {
        Facts::Tdx(f) => {
            let mut regs = vec![Shown {
                name: "mrtd",
                value: f.mrtd,
            }];
            for (name, value) in ["rtmr0", "rtmr1", "rtmr2", "rtmr3"].into_iter().zip(f.rtmr) {
                regs.push(Shown { name, value });
            }
            Some((Platform::Tdx, regs))
        }
        Facts::SevSnp(f) => Some((
            Platform::SevSnp,
            vec![Shown {
                name: "measurement",
                value: f.measurement,
            }],
        )),
        Facts::Gpu(_) => None,
    }
}

/// One register that differs from a manifest's value.
struct Differs {
    register: &'static str,
    actual: [u8; 48],
    expected: [u8; 48],
    mode: Mode,
}

/// How one manifest's measurement set compares with the quote.
struct Candidate<'a> {
    manifest: &'a Manifest,
    expected: &'a tvm_image::manifest::Expected,
    differs: Vec<Differs>,
}

impl Candidate<'_> {
    fn enforced(&self) -> impl Iterator<Item = &Differs> {
        self.differs.iter().filter(|d| d.mode == Mode::Enforce)
    }
    fn name(&self) -> String {
        format!(
            "{} ({} shape {})",
            self.manifest.release(),
            self.expected.platform.as_str(),
            self.expected.shape
        )
    }
}

fn short(v: &[u8; 48]) -> String {
    let h = hex::encode(v);
    format!("{}…", &h[..16])
}

/// The `measurement` check of genuine evidence. `node_type` is what the
/// claims say (`None`: any), `event_log` the TDX CCEL the node sent.
pub fn appraise_measurement(
    facts: &Facts,
    node_type: Option<NodeType>,
    event_log: Option<&[u8]>,
    images: &Images,
    policy: &ImagePolicy,
    at: i64,
) -> Check {
    if policy.dangerous_allow_unmeasured {
        return Check::not_checked(
            MEASUREMENT,
            "which image runs is not checked (images.dangerous_allow_unmeasured)",
        );
    }
    let Some((platform, regs)) = shown(facts) else {
        return Check::not_checked(MEASUREMENT, "not CPU TEE evidence");
    };
    let when = time::OffsetDateTime::from_unix_timestamp(at).ok();
    let mut candidates: Vec<Candidate<'_>> = Vec::new();
    let mut other_platform = 0;
    let mut other_type = 0;
    let mut out_of_window = Vec::new();
    for m in &images.accepted {
        if when.is_none_or(|t| t < m.valid_from || t > m.valid_until) {
            out_of_window.push(m.release());
            continue;
        }
        if let Some(t) = node_type {
            if !m.node_types.iter().any(|n| n == t.as_str()) {
                other_type += 1;
                continue;
            }
        }
        for e in &m.measurements {
            if e.platform != platform {
                other_platform += 1;
                continue;
            }
            let differs = regs
                .iter()
                .filter_map(|r| {
                    let want = e.register(r.name)?;
                    (want != r.value).then(|| Differs {
                        register: r.name,
                        actual: r.value,
                        expected: want,
                        mode: e.mode(r.name),
                    })
                })
                .collect();
            candidates.push(Candidate {
                manifest: m,
                expected: e,
                differs,
            });
        }
    }

    // A match with nothing to warn about beats one that warns.
    let matched = candidates
        .iter()
        .filter(|c| c.enforced().next().is_none())
        .min_by_key(|c| c.differs.len());
    if let Some(c) = matched {
        if c.differs.is_empty() {
            return Check::pass(MEASUREMENT, format!("image {}", c.name()));
        }
        let warnings: Vec<String> = c
            .differs
            .iter()
            .map(|d| {
                format!(
                    "{} is {}, the manifest expects {}",
                    d.register,
                    short(&d.actual),
                    short(&d.expected)
                )
            })
            .collect();
        return Check::pass(
            MEASUREMENT,
            format!(
                "image {}; WARNING (warn-only registers, not failed): {}",
                c.name(),
                warnings.join("; ")
            ),
        );
    }

    let mut why = Vec::new();
    if images.accepted.is_empty() && images.refused.is_empty() {
        why.push(
            "no signed image manifest is loaded: pin the operator's keys under images.operator_keys in the policy and give the validator the operator's manifests (--manifests DIR or URL; docs/operator.md)"
                .to_string(),
        );
    } else if images.accepted.is_empty() {
        // Say what would make them count, by why they did not.
        let keys = images.refused.iter().any(|(_, e)| {
            matches!(
                e,
                ManifestError::UnknownKey(_)
                    | ManifestError::KeyOutsideWindow { .. }
                    | ManifestError::KeyRevoked(_)
                    | ManifestError::BadSignature(_)
            )
        });
        why.push(format!(
            "no signed image manifest was accepted: {}",
            if keys {
                "are images.operator_keys the operator's current keys?"
            } else {
                "the operator must publish manifests this build accepts (see the reasons)"
            }
        ));
    }
    if !images.refused.is_empty() {
        let refused: Vec<String> = images
            .refused
            .iter()
            .take(3)
            .map(|(src, e)| format!("{src}: {e}"))
            .collect();
        why.push(format!(
            "{} manifest(s) refused ({})",
            images.refused.len(),
            refused.join("; ")
        ));
    }
    if !out_of_window.is_empty() {
        why.push(format!(
            "outside their validity window now: {}",
            out_of_window.join(", ")
        ));
    }
    if other_type > 0 {
        if let Some(t) = node_type {
            why.push(format!(
                "{other_type} manifest(s) are not for {} nodes",
                t.as_str()
            ));
        }
    }
    if other_platform > 0 && candidates.is_empty() {
        why.push(format!(
            "no manifest gives {} measurements",
            platform.as_str()
        ));
    }
    let nearest = candidates
        .iter()
        .min_by_key(|c| c.enforced().count())
        .map(|c| nearest_detail(c, event_log));
    let detail = match nearest {
        Some(n) => format!(
            "the measurements match no accepted image; nearest is {n}{}: run a published image, or ask the operator for this release's manifest",
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({})", why.join("; "))
            }
        ),
        None => format!(
            "the measurements match no accepted image: {}",
            why.join("; ")
        ),
    };
    Check::fail(MEASUREMENT, detail)
}

/// The nearest candidate, its first differing enforced register, and the
/// event that made the difference when the log and the manifest tell.
fn nearest_detail(c: &Candidate<'_>, event_log: Option<&[u8]>) -> String {
    let enforced: Vec<&Differs> = c.enforced().collect();
    let Some(first) = enforced.first() else {
        return c.name();
    };
    let mut s = format!(
        "{}: first differing register {} is {}, the manifest expects {}",
        c.name(),
        first.register,
        hex::encode(first.actual),
        hex::encode(first.expected)
    );
    if enforced.len() > 1 {
        let rest: Vec<&str> = enforced[1..].iter().map(|d| d.register).collect();
        s.push_str(&format!(" (also {})", rest.join(", ")));
    }
    if let Some(event) = first_event(c, first, event_log) {
        s.push_str(&format!("; {event}"));
    }
    s
}

fn first_event(c: &Candidate<'_>, d: &Differs, event_log: Option<&[u8]>) -> Option<String> {
    let index = ["rtmr0", "rtmr1", "rtmr2"]
        .iter()
        .position(|r| *r == d.register)?;
    let want = c.expected.events_of(index)?;
    let events: Vec<Event> = match eventlog::parse(event_log?) {
        Ok(e) => e,
        Err(e) => return Some(format!("the event log does not parse: {e}")),
    };
    // A log that does not replay to the quote's register tells nothing about it.
    if eventlog::replay(&events)[index] != d.actual {
        return Some(format!(
            "the node's event log does not replay to its quote's RTMR{index}, so it cannot name the event"
        ));
    }
    eventlog::diagnose_register(&events, index, &want)
        .map(|div| format!("first differing event: {div}"))
}
