//! How one TEE quote vouches for a whole node: its 64-byte report_data is
//!
//! ```text
//! report_data = SHA-512( "tvm-report-data-v2" || nonce[32] || SHA-256(canonical_claims) )
//! ```
//!
//! and every GPU and NVSwitch signs [`device_nonce`], the validator's nonce
//! bound to the CVM id (the hash of the RA-TLS key), so that a report made
//! for one CVM cannot be shown by another.
//!
//! `canonical_claims` is a length-prefixed binary encoding (below) that any
//! language can rebuild from the JSON claims without a canonical-JSON library.
//! docs/protocol.md has the same definition and a worked example.

use sha2::{Digest, Sha256, Sha512};

use crate::evidence::Claims;
use crate::hexbytes::Digest32;
use crate::nonce::Nonce;

/// Domain tag of report_data: no other tvm hash starts with these bytes.
pub const REPORT_DATA_TAG: &[u8] = b"tvm-report-data-v2";
/// First field of the canonical claims; changes with the claims schema.
pub const CLAIMS_TAG: &[u8] = b"tvm-claims-v2";
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
/// | tag | `bytes("tvm-claims-v1")` |
/// | cvm_id | 32 raw bytes |
/// | node_type | `bytes("gpu" \| "cpu")` |
/// | agent_version | `bytes(utf8)` |
/// | simulated | one byte, 0 or 1 |
/// | gpu_reports_sha256 | u32 count, then 32 raw bytes each |
/// | switch_reports_sha256 | u32 count, then 32 raw bytes each |
/// | runtime.image_digest | `opt(utf8)` |
/// | runtime.upstream | `opt(utf8)` |
/// | runtime.models | u32 count, then `bytes(utf8)` each |
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
    out
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
            },
        };
        (nonce, claims)
    }

    #[test]
    fn worked_example_is_pinned() {
        let (nonce, claims) = example();
        assert_eq!(
            hex::encode(Sha256::digest(canonical_claims(&claims))),
            "fca370a0c2e9d23fb6e2b2d1bb02424ce7792a4c34894844878be9bf6309e9ef"
        );
        assert_eq!(hex::encode(report_data(&nonce, &claims)), "8dab86d2d63d03f337013f40509095460a16990c61ac5995e3602e545df0a5d3212aee939daa1e8bf50bd2927ee9c0adf40b57e3258464af226749b89f922310");
        assert_eq!(
            hex::encode(device_nonce(&nonce, &claims.cvm_id)),
            "b3e880c0deb4b49372dd030a31e333db6c213c5d7d6fb1afb8b79537ac65c8d8"
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
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(report_data(&nonce, v), rd, "variant {i}");
        }
        let mut other = nonce;
        other.0[31] ^= 1;
        assert_ne!(report_data(&other, &base), rd);
    }
}
