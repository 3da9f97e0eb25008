//! How one TEE quote vouches for a whole node: its 64-byte report_data is
//!
//! ```text
//! report_data = SHA-512( "tvm-report-data-v3" || nonce[32] || SHA-256(canonical_claims) )
//! ```
//!
//! and every GPU and NVSwitch signs [`device_nonce`], the validator's nonce
//! bound to the CVM id (the hash of the RA-TLS key), so that a report made
//! for one CVM cannot be shown by another.
//!
//! `canonical_claims` is a length-prefixed binary encoding (below) that any
//! language can rebuild from the JSON claims without a canonical-JSON library.
//! docs/protocol.md has the same definition and a worked example.

use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::evidence::{Claims, Runtime, RuntimeEvent};
use crate::hexbytes::Digest32;
use crate::nonce::Nonce;

/// Domain tag of report_data: no other tvm hash starts with these bytes.
pub const REPORT_DATA_TAG: &[u8] = b"tvm-report-data-v3";
/// First field of the canonical claims; changes with the claims schema.
pub const CLAIMS_TAG: &[u8] = b"tvm-claims-v3";
/// Domain tag of runtime event digests (RTMR3 extensions).
pub const RUNTIME_EVENT_TAG: &[u8] = b"tvm-runtime-event-v1";

/// The runtime event types this build knows; a verifier fails any other.
pub mod runtime_event {
    /// The agent configuration digest (hex SHA-256).
    pub const AGENT_CONFIG: &str = "agent-config";
    /// The inference runtime's image digest.
    pub const RUNTIME_IMAGE: &str = "runtime-image";
    /// One model served.
    pub const MODEL: &str = "model";
    pub const KNOWN: [&str; 3] = [AGENT_CONFIG, RUNTIME_IMAGE, MODEL];
}
/// Domain tag of the nonce the devices sign.
pub const DEVICE_NONCE_TAG: &[u8] = b"tvm-device-nonce-v1";

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Lengths are u32 big-endian; claims are far below 4 GiB (bundles are capped).
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn put_opt(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            put_bytes(out, b);
        }
    }
}

/// The canonical encoding of claims, field by field in this order:
///
/// | field | encoding |
/// |---|---|
/// | tag | `bytes("tvm-claims-v3")` |
/// | cvm_id | 32 raw bytes |
/// | node_type | `bytes("gpu" \| "cpu")` |
/// | agent_version | `bytes(utf8)` |
/// | simulated | one byte, 0 or 1 |
/// | gpu_reports_sha256 | u32 count, then 32 raw bytes each |
/// | switch_reports_sha256 | u32 count, then 32 raw bytes each |
/// | runtime.image_digest | `opt(utf8)` |
/// | runtime.upstream | `opt(utf8)` |
/// | runtime.models | u32 count, then `bytes(utf8)` each |
/// | runtime.agent_config | `opt(32 raw bytes)` |
///
/// `bytes(x)` = u32 big-endian length ‖ x; `opt(x)` = `00` when absent, `01 ‖ bytes(x)` when present.
pub fn canonical_claims(c: &Claims) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(256 + 32 * (c.gpu_reports_sha256.len() + c.switch_reports_sha256.len()));
    put_bytes(&mut out, CLAIMS_TAG);
    out.extend_from_slice(&c.cvm_id.0);
    put_bytes(&mut out, c.node_type.as_str().as_bytes());
    put_bytes(&mut out, c.agent_version.as_bytes());
    out.push(u8::from(c.simulated));
    for list in [&c.gpu_reports_sha256, &c.switch_reports_sha256] {
        out.extend_from_slice(&(list.len() as u32).to_be_bytes());
        for d in list {
            out.extend_from_slice(&d.0);
        }
    }
    put_opt(
        &mut out,
        c.runtime.image_digest.as_deref().map(str::as_bytes),
    );
    put_opt(&mut out, c.runtime.upstream.as_deref().map(str::as_bytes));
    out.extend_from_slice(&(c.runtime.models.len() as u32).to_be_bytes());
    for m in &c.runtime.models {
        put_bytes(&mut out, m.as_bytes());
    }
    put_opt(&mut out, c.runtime.agent_config.as_ref().map(|d| &d.0[..]));
    out
}

/// The events an agent extends RTMR3 with at start, in this order: its
/// configuration digest, its runtime image, each model it serves.
pub fn runtime_events(r: &Runtime) -> Vec<RuntimeEvent> {
    let event = |kind: &str, value: String| RuntimeEvent {
        kind: kind.to_string(),
        value,
    };
    let mut out = Vec::new();
    if let Some(d) = &r.agent_config {
        out.push(event(runtime_event::AGENT_CONFIG, hex::encode(d.0)));
    }
    if let Some(i) = &r.image_digest {
        out.push(event(runtime_event::RUNTIME_IMAGE, i.clone()));
    }
    for m in &r.models {
        out.push(event(runtime_event::MODEL, m.clone()));
    }
    out
}

/// What one runtime event extends RTMR3 with:
/// `SHA-384("tvm-runtime-event-v1" ‖ bytes(kind) ‖ bytes(value))`.
pub fn runtime_event_digest(e: &RuntimeEvent) -> [u8; 48] {
    let mut m = RUNTIME_EVENT_TAG.to_vec();
    put_bytes(&mut m, e.kind.as_bytes());
    put_bytes(&mut m, e.value.as_bytes());
    Sha384::digest(m).into()
}

/// RTMR3 after `events`, extended from zero as TDX extends:
/// `RTMR = SHA-384(RTMR ‖ digest)`.
pub fn replay_runtime_events(events: &[RuntimeEvent]) -> [u8; 48] {
    events.iter().fold([0u8; 48], |rtmr, e| {
        let mut h = Sha384::new();
        h.update(rtmr);
        h.update(runtime_event_digest(e));
        h.finalize().into()
    })
}

/// The 64 bytes the TEE quote/report must carry as its report_data.
pub fn report_data(nonce: &Nonce, claims: &Claims) -> [u8; 64] {
    let claims_hash = Sha256::digest(canonical_claims(claims));
    let mut h = Sha512::new();
    h.update(REPORT_DATA_TAG);
    h.update(nonce.0);
    h.update(claims_hash);
    h.finalize().into()
}

/// The 32 bytes every GPU and NVSwitch of a node signs for the validator's
/// `nonce`: `SHA-256("tvm-device-nonce-v1" ‖ nonce ‖ cvm_id)`. The CVM id is
/// the SHA-256 of the RA-TLS key the validator's connection saw, so a
/// report asked for by one CVM fails `spdm.nonce` when another shows it.
pub fn device_nonce(nonce: &Nonce, cvm_id: &Digest32) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DEVICE_NONCE_TAG);
    h.update(nonce.0);
    h.update(cvm_id.0);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::{NodeType, Runtime};

    /// The worked example of docs/protocol.md. If this test changes, the
    /// protocol changed: bump the tags and the bundle version.
    fn example() -> (Nonce, Claims) {
        let nonce: Nonce = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
            .parse()
            .unwrap();
        let claims = Claims {
            cvm_id: Digest32::sha256(b"example spki"),
            node_type: NodeType::Gpu,
            agent_version: "0.1.0".into(),
            simulated: false,
            gpu_reports_sha256: vec![Digest32::sha256(b"gpu0"), Digest32::sha256(b"gpu1")],
            switch_reports_sha256: vec![],
            runtime: Runtime {
                image_digest: Some(
                    "sha256:0000000000000000000000000000000000000000000000000000000000000000"
                        .into(),
                ),
                upstream: None,
                models: vec!["meta-llama/Llama-3.1-8B-Instruct".into()],
                agent_config: Some(Digest32::sha256(b"example agent config")),
            },
        };
        (nonce, claims)
    }

    #[test]
    fn worked_example_is_pinned() {
        let (nonce, claims) = example();
        assert_eq!(
            hex::encode(Sha256::digest(canonical_claims(&claims))),
            "0873931a15140869776e72534b5a2164f706fdbd255b50f5a2e85b8a426e37f1"
        );
        assert_eq!(hex::encode(report_data(&nonce, &claims)), "7070b204437e050633eaeaaefd51d50d35f86fcb3602695b041414fb63cbc51eb7cf53941b5e054de41c4afe504585908c8fab0c1bc9928120c5207a2a6d9c0f");
        assert_eq!(
            hex::encode(device_nonce(&nonce, &claims.cvm_id)),
            "b3e880c0deb4b49372dd030a31e333db6c213c5d7d6fb1afb8b79537ac65c8d8"
        );
        let events = runtime_events(&claims.runtime);
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["agent-config", "runtime-image", "model"]);
        assert_eq!(
            hex::encode(replay_runtime_events(&events)),
            "00c896a777f1d2908923e82c36bfa09f8f8d12c68d804c4411bb00455e09ca7aa6e84ddf457d35c3621fcabb96f7fde5"
        );
    }

    #[test]
    fn every_claim_changes_report_data() {
        let (nonce, base) = example();
        let rd = report_data(&nonce, &base);
        let mut variants: Vec<Claims> = Vec::new();
        let mut c = base.clone();
        c.cvm_id.0[0] ^= 1;
        variants.push(c);
        let mut c = base.clone();
        c.node_type = NodeType::Cpu;
        variants.push(c);
        let mut c = base.clone();
        c.agent_version.push('x');
        variants.push(c);
        let mut c = base.clone();
        c.simulated = true;
        variants.push(c);
        let mut c = base.clone();
        c.gpu_reports_sha256.swap(0, 1);
        variants.push(c);
        let mut c = base.clone();
        // Moving a GPU hash into the switch list must not collide.
        let g = c.gpu_reports_sha256.pop().unwrap();
        c.switch_reports_sha256.push(g);
        variants.push(c);
        let mut c = base.clone();
        c.runtime.upstream = Some(String::new());
        variants.push(c);
        let mut c = base.clone();
        c.runtime.models.push(String::new());
        variants.push(c);
        let mut c = base.clone();
        c.runtime.agent_config = None;
        variants.push(c);
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(report_data(&nonce, v), rd, "variant {i}");
        }
        let mut other = nonce;
        other.0[31] ^= 1;
        assert_ne!(report_data(&other, &base), rd);
    }
}
