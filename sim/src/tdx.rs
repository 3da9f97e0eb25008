//! A simulated Intel TDX guest: TDX v4 quotes in the real binary layout.
//!
//! The quote is what Intel's TD quoting enclave produces: a 48-byte header,
//! a TD report 1.0 body (584 bytes), and ECDSA signature data whose
//! certification data is the QE report (type 6) wrapping the PCK certificate
//! chain (type 5). Every signature is real, made with the keys of a
//! [`SimPlatform`] issued by the local simulated Intel hierarchy
//! ([`crate::intel`]), so dcap-qvl accepts the quote against that
//! hierarchy's root and collateral, and against nothing else.

use crate::intel::{
    SimError, SimPlatform, SIM_CPU_SVN, SIM_QE_ATTRIBUTES, SIM_QE_ISV_PROD_ID, SIM_QE_ISV_SVN,
    SIM_QE_MISC_SELECT, SIM_QE_MRENCLAVE, SIM_QE_MRSIGNER, SIM_SEAM_ATTRIBUTES,
    SIM_TDX_MODULE_MRSEAM, SIM_TDX_MODULE_MRSIGNER, SIM_TEE_TCB_SVN,
};
use sha2::{Digest, Sha256, Sha384};

/// Intel's QE vendor ID, which DCAP verifiers require in the header.
pub const INTEL_QE_VENDOR_ID: [u8; 16] = [
    0x93, 0x9A, 0x72, 0x33, 0xF7, 0x9C, 0x4C, 0xA9, 0x94, 0x0A, 0x0D, 0xB3, 0x95, 0x7F, 0x06, 0x07,
];
/// What the default measurements are derived from.
pub const SIM_IMAGE_LABEL: &str = "tvm simulated image";
pub const SIM_UNLISTED_IMAGE_LABEL: &str = "tvm simulated image (unlisted)";
/// TD attributes of a production TD: only SEPT_VE_DISABLE (bit 28) set; not
/// debug, not migratable. (DCAP verifiers reject a TD without SEPT_VE_DISABLE.)
pub const SIM_TD_ATTRIBUTES: [u8; 8] = (1u64 << 28).to_le_bytes();
/// XFAM of a typical TD: x87, SSE, AVX, AVX-512, PKRU, AMX.
pub const SIM_XFAM: [u8; 8] = [0xe7, 0x02, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00];

const QUOTE_VERSION: u16 = 4;
const ATT_KEY_TYPE_ECDSA_P256: u16 = 2;
const TEE_TYPE_TDX: u32 = 0x81;
const CERT_DATA_PCK_CHAIN: u16 = 5;
const CERT_DATA_QE_REPORT: u16 = 6;
const TD_REPORT_LEN: usize = 584;
const QE_REPORT_LEN: usize = 384;

/// The measured state of the simulated TD, as its TD report carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdMeasurements {
    pub mrtd: [u8; 48],
    pub rtmr: [[u8; 48]; 4],
    pub mr_config_id: [u8; 48],
    pub mr_owner: [u8; 48],
    pub mr_owner_config: [u8; 48],
    pub td_attributes: [u8; 8],
    pub xfam: [u8; 8],
}

impl TdMeasurements {
    /// The measurements of the simulated image: MRTD =
    /// SHA-384("tvm simulated image/MRTD"), RTMR*i* (0–2) =
    /// SHA-384("tvm simulated image/RTMR*i*"), RTMR3, MRCONFIGID, MROWNER
    /// and MROWNERCONFIG zero, [`SIM_TD_ATTRIBUTES`], [`SIM_XFAM`].
    pub fn simulated_image() -> Self {
        Self::labelled(SIM_IMAGE_LABEL)
    }

    /// A simulated image no operator published: the same, labelled
    /// `tvm simulated image (unlisted)`: a guest of the miner's own making.
    pub fn unlisted_image() -> Self {
        Self::labelled(SIM_UNLISTED_IMAGE_LABEL)
    }

    fn labelled(image: &str) -> Self {
        let label = |part: &str| -> [u8; 48] {
            Sha384::digest(format!("{image}/{part}").as_bytes()).into()
        };
        TdMeasurements {
            mrtd: label("MRTD"),
            // RTMR3 starts at zero, as a real TD's does: the agent extends it.
            rtmr: [label("RTMR0"), label("RTMR1"), label("RTMR2"), [0; 48]],
            mr_config_id: [0; 48],
            mr_owner: [0; 48],
            mr_owner_config: [0; 48],
            td_attributes: SIM_TD_ATTRIBUTES,
            xfam: SIM_XFAM,
        }
    }
}

impl Default for TdMeasurements {
    fn default() -> Self {
        Self::simulated_image()
    }
}

/// A simulated TD on a simulated platform.
#[derive(Debug)]
pub struct SimTd {
    platform: SimPlatform,
    measurements: TdMeasurements,
    /// QE report certification data up to (not including) the type-5 PCK
    /// chain: QE report, its PCK signature, QE auth data. The QE certifies its
    /// attestation key once, so this is made once.
    qe_certification: Vec<u8>,
}

impl SimTd {
    /// A TD with the simulated image's measurements.
    pub fn new(platform: SimPlatform) -> Result<Self, SimError> {
        Self::with_measurements(platform, TdMeasurements::simulated_image())
    }

    pub fn with_measurements(
        platform: SimPlatform,
        measurements: TdMeasurements,
    ) -> Result<Self, SimError> {
        let qe_certification = qe_certification(&platform)?;
        Ok(SimTd {
            platform,
            measurements,
            qe_certification,
        })
    }

    pub fn platform(&self) -> &SimPlatform {
        &self.platform
    }

    pub fn measurements(&self) -> &TdMeasurements {
        &self.measurements
    }

    /// Extend RTMR `index` (0–3) as the TDX module does:
    /// `RTMR = SHA-384(RTMR ‖ digest)`. Other indices are ignored.
    pub fn extend_rtmr(&mut self, index: usize, digest: &[u8; 48]) {
        if let Some(r) = self.measurements.rtmr.get_mut(index) {
            let mut h = Sha384::new();
            h.update(*r);
            h.update(digest);
            *r = h.finalize().into();
        }
    }

    /// A TDX v4 quote of this TD with `report_data` in its TD report.
    pub fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, SimError> {
        let mut signed = Vec::with_capacity(48 + TD_REPORT_LEN);
        signed.extend_from_slice(&self.header());
        signed.extend_from_slice(&self.td_report(report_data));
        let signature = self.platform.sign_with_attestation_key(&signed)?;

        // Certification data type 6: QE report data, then type 5 (PCK chain).
        let chain = self.platform.pck_chain_pem().as_bytes();
        let mut qe_data = self.qe_certification.clone();
        put_cert_data(&mut qe_data, CERT_DATA_PCK_CHAIN, chain);

        let mut auth = Vec::with_capacity(128 + 6 + qe_data.len());
        auth.extend_from_slice(&signature);
        auth.extend_from_slice(&self.platform.attestation_public_key());
        put_cert_data(&mut auth, CERT_DATA_QE_REPORT, &qe_data);

        let mut quote = signed;
        quote.extend_from_slice(&(auth.len() as u32).to_le_bytes());
        quote.extend_from_slice(&auth);
        Ok(quote)
    }

    /// Header (48 bytes): version, attestation key type, TEE type, two
    /// reserved u16, QE vendor ID, user data (QE ID ‖ 4 zero bytes).
    fn header(&self) -> [u8; 48] {
        let mut h = [0u8; 48];
        h[0..2].copy_from_slice(&QUOTE_VERSION.to_le_bytes());
        h[2..4].copy_from_slice(&ATT_KEY_TYPE_ECDSA_P256.to_le_bytes());
        h[4..8].copy_from_slice(&TEE_TYPE_TDX.to_le_bytes());
        h[12..28].copy_from_slice(&INTEL_QE_VENDOR_ID);
        h[28..44].copy_from_slice(&self.platform.qe_id());
        h
    }

    /// TD report body 1.0 (584 bytes).
    fn td_report(&self, report_data: &[u8; 64]) -> [u8; TD_REPORT_LEN] {
        let m = &self.measurements;
        let mut r = [0u8; TD_REPORT_LEN];
        let fields: [(usize, &[u8]); 15] = [
            (0, &SIM_TEE_TCB_SVN),
            (16, &SIM_TDX_MODULE_MRSEAM),
            (64, &SIM_TDX_MODULE_MRSIGNER),
            (112, &SIM_SEAM_ATTRIBUTES),
            (120, &m.td_attributes),
            (128, &m.xfam),
            (136, &m.mrtd),
            (184, &m.mr_config_id),
            (232, &m.mr_owner),
            (280, &m.mr_owner_config),
            (328, &m.rtmr[0]),
            (376, &m.rtmr[1]),
            (424, &m.rtmr[2]),
            (472, &m.rtmr[3]),
            (520, report_data),
        ];
        for (at, bytes) in fields {
            r[at..at + bytes.len()].copy_from_slice(bytes);
        }
        r
    }
}

/// QE report (384 bytes, SGX report layout) ‖ its PCK signature ‖ QE auth
/// data (u16 length, 32 bytes). The report binds the attestation key:
/// REPORTDATA = SHA-256(attestation key ‖ QE auth data) ‖ 32 zero bytes.
fn qe_certification(platform: &SimPlatform) -> Result<Vec<u8>, SimError> {
    let auth_data: Vec<u8> = (0u8..32).collect();
    let binding = Sha256::new()
        .chain_update(platform.attestation_public_key())
        .chain_update(&auth_data)
        .finalize();

    let mut report = [0u8; QE_REPORT_LEN];
    report[0..16].copy_from_slice(&SIM_CPU_SVN);
    report[16..20].copy_from_slice(&SIM_QE_MISC_SELECT.to_le_bytes());
    report[48..64].copy_from_slice(&SIM_QE_ATTRIBUTES);
    report[64..96].copy_from_slice(&SIM_QE_MRENCLAVE);
    report[128..160].copy_from_slice(&SIM_QE_MRSIGNER);
    report[256..258].copy_from_slice(&SIM_QE_ISV_PROD_ID.to_le_bytes());
    report[258..260].copy_from_slice(&SIM_QE_ISV_SVN.to_le_bytes());
    report[320..352].copy_from_slice(&binding);
    let signature = platform.sign_with_pck(&report)?;

    let mut out = Vec::with_capacity(QE_REPORT_LEN + 64 + 2 + auth_data.len());
    out.extend_from_slice(&report);
    out.extend_from_slice(&signature);
    out.extend_from_slice(&(auth_data.len() as u16).to_le_bytes());
    out.extend_from_slice(&auth_data);
    Ok(out)
}

/// Certification data: type (u16), size (u32), data. (Sizes here are a few
/// kilobytes: the PCK chain is three certificates.)
fn put_cert_data(out: &mut Vec<u8>, cert_type: u16, data: &[u8]) {
    out.extend_from_slice(&cert_type.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intel::SimIntel;
    use dcap_qvl::verify::{QuoteVerifier, VerifiedReport};

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn report_data() -> [u8; 64] {
        let mut rd = [0u8; 64];
        for (i, b) in rd.iter_mut().enumerate() {
            *b = i as u8 ^ 0x5a;
        }
        rd
    }

    fn verify(sim: &SimIntel, quote: &[u8]) -> Result<VerifiedReport, String> {
        let t = now();
        let collateral = sim.collateral(t as i64).unwrap();
        QuoteVerifier::new(sim.root_der().to_vec())
            .verify(quote, &collateral, t)
            .map_err(|e| format!("{e:#}"))
    }

    // Offsets in a v4 TDX quote.
    const REPORT_DATA_AT: usize = 48 + 520;
    const QUOTE_SIGNATURE_AT: usize = 48 + TD_REPORT_LEN + 4;
    const QE_REPORT_AT: usize = QUOTE_SIGNATURE_AT + 64 + 64 + 2 + 4;

    #[test]
    fn quote_verifies_with_dcap_qvl_against_the_simulated_root() {
        let sim = SimIntel::generate().unwrap();
        let td = SimTd::new(sim.issue_platform().unwrap()).unwrap();
        let quote = td.quote(&report_data()).unwrap();

        let report = verify(&sim, &quote).unwrap();
        assert_eq!(report.status, "UpToDate");
        assert!(report.advisory_ids.is_empty());
        assert_eq!(report.ppid, td.platform().ppid());
        let body = report.report.as_td10().unwrap();
        assert_eq!(body.report_data, report_data());
        assert_eq!(body.mr_td, td.measurements().mrtd);
        assert_eq!(body.rt_mr3, td.measurements().rtmr[3]);
        assert_eq!(body.tee_tcb_svn, SIM_TEE_TCB_SVN);

        let parsed = dcap_qvl::quote::Quote::parse(&quote).unwrap();
        assert_eq!(parsed.header.version, 4);
        assert_eq!(parsed.header.tee_type, 0x81);
        assert_eq!(parsed.inner_cert_type(), 5);
        assert_eq!(
            parsed.inner_cert_data(),
            td.platform().pck_chain_pem().as_bytes()
        );
    }

    #[test]
    fn quote_fails_against_intels_real_root() {
        let sim = SimIntel::generate().unwrap();
        let td = SimTd::new(sim.issue_platform().unwrap()).unwrap();
        let quote = td.quote(&report_data()).unwrap();
        let t = now();
        let collateral = sim.collateral(t as i64).unwrap();
        let err = QuoteVerifier::new_prod()
            .verify(&quote, &collateral, t)
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("root CA CRL"),
            "expected the simulated CRL to fail Intel's root: {err:#}"
        );
    }

    #[test]
    fn altered_quotes_fail() {
        let sim = SimIntel::generate().unwrap();
        let td = SimTd::new(sim.issue_platform().unwrap()).unwrap();
        let quote = td.quote(&report_data()).unwrap();
        verify(&sim, &quote).unwrap();

        for (what, at, expect) in [
            (
                "quote signature",
                QUOTE_SIGNATURE_AT + 5,
                "ISV enclave report signature",
            ),
            (
                "report data",
                REPORT_DATA_AT + 7,
                "ISV enclave report signature",
            ),
            ("MRTD", 48 + 136, "ISV enclave report signature"),
            ("QE report", QE_REPORT_AT + 320, "qe_report"),
            ("QE report ISVSVN", QE_REPORT_AT + 258, "qe_report"),
        ] {
            let mut bad = quote.clone();
            bad[at] ^= 0x01;
            let err = verify(&sim, &bad).unwrap_err();
            assert!(err.contains(expect), "{what}: {err}");
        }
    }

    #[test]
    fn collateral_from_another_hierarchy_fails() {
        let sim = SimIntel::generate().unwrap();
        let other = SimIntel::generate().unwrap();
        let td = SimTd::new(sim.issue_platform().unwrap()).unwrap();
        let quote = td.quote(&report_data()).unwrap();
        let t = now();
        // Our root, their collateral.
        let err = QuoteVerifier::new(sim.root_der().to_vec())
            .verify(&quote, &other.collateral(t as i64).unwrap(), t)
            .unwrap_err();
        assert!(format!("{err:#}").contains("CRL"), "{err:#}");
        // Their root and collateral: our PCK chain does not lead there.
        assert!(verify(&other, &quote).is_err());
    }

    #[test]
    fn saved_and_loaded_hierarchy_still_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let sim = SimIntel::generate().unwrap();
        sim.save(dir.path()).unwrap();
        let loaded = SimIntel::load(dir.path()).unwrap();

        // A platform issued before the save verifies with the loaded collateral…
        let before = SimTd::new(sim.issue_platform().unwrap()).unwrap();
        verify(&loaded, &before.quote(&report_data()).unwrap()).unwrap();
        // …and one issued by the loaded hierarchy with the original's.
        let after = SimTd::new(loaded.issue_platform().unwrap()).unwrap();
        let report = verify(&sim, &after.quote(&report_data()).unwrap()).unwrap();
        assert_eq!(report.status, "UpToDate");
    }

    #[test]
    fn measurements_are_what_the_quote_reports() {
        let sim = SimIntel::generate().unwrap();
        let mut m = TdMeasurements::simulated_image();
        assert_eq!(
            m.mrtd.to_vec(),
            Sha384::digest(b"tvm simulated image/MRTD").to_vec()
        );
        m.mr_config_id = [7; 48];
        let td = SimTd::with_measurements(sim.issue_platform().unwrap(), m.clone()).unwrap();
        let report = verify(&sim, &td.quote(&[0; 64]).unwrap()).unwrap();
        assert_eq!(report.report.as_td10().unwrap().mr_config_id, [7; 48]);

        // A debug TD still verifies cryptographically but dcap-qvl rejects it by default.
        m.td_attributes[0] |= 0x01;
        let td = SimTd::with_measurements(sim.issue_platform().unwrap(), m).unwrap();
        let err = verify(&sim, &td.quote(&[0; 64]).unwrap()).unwrap_err();
        assert!(err.contains("Debug mode"), "{err}");
    }
}
