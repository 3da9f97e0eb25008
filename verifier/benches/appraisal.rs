//! Full appraisal vs the field's tool on the same input, in one run:
//! TDX-1 through `dcap_qvl` directly and through tvm (warm collateral), and
//! SEV-SNP report appraisal.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tvm_verifier::input::binary_or_hex;
use tvm_verifier::tee::snp::{self, SnpInput};
use tvm_verifier::tee::tdx::{self, TdxCollateral, TdxInput};
use tvm_verifier::{appraise, Policy};

const QUOTE: &[u8] = include_bytes!("../../testdata/tdx/dcapqvl_tdx_quote_v4.bin");
const COLLATERAL: &[u8] = include_bytes!("../../testdata/tdx/dcapqvl_tdx_quote_v4_collateral.json");
const SNP_REPORT: &[u8] = include_bytes!("../../testdata/snp/virtee_milan_report.hex");
const VCEK: &[u8] = include_bytes!("../../testdata/snp/virtee_milan_vcek.der");
const AT: i64 = 1_751_624_191; // 2025-07-04T10:16:31Z

fn bench(c: &mut Criterion) {
    let raw = tdx::parse_collateral(COLLATERAL).expect("collateral");
    let root = tvm_certs::anchors::intel_sgx_root().expect("root");
    let warm = TdxCollateral::prepare(raw.clone(), root);
    let mut policy = Policy::default();
    // TDX-1 and SNP-2 run images no one published a tvm manifest for.
    policy.images.dangerous_allow_unmeasured = true;

    let mut g = c.benchmark_group("tdx");
    g.throughput(Throughput::Elements(1));
    g.bench_function("dcap_qvl::verify (TDX-1)", |b| {
        let v = dcap_qvl::verify::QuoteVerifier::new(root.to_vec());
        b.iter(|| v.verify(QUOTE, &raw, AT as u64).expect("verifies"))
    });
    g.bench_function("tvm verify+appraise, warm collateral (TDX-1)", |b| {
        b.iter(|| {
            let v = tdx::verify(&TdxInput {
                quote: QUOTE,
                collateral: &warm,
                at: AT,
                grace_seconds: 0,
            });
            let verdict = appraise(
                v,
                &policy,
                &tvm_verifier::ImageInput::new(&tvm_verifier::Images::none()),
                None,
                AT,
            );
            assert!(verdict.accepted());
            verdict
        })
    });
    g.bench_function("tvm collateral prepare (once per FMSPC)", |b| {
        b.iter(|| TdxCollateral::prepare(raw.clone(), root))
    });
    g.finish();

    let report = binary_or_hex(SNP_REPORT);
    let endorsement = snp::SnpEndorsement::prepare(VCEK, None);
    // No real AMD CRL is among the vectors: the default policy would refuse
    // SNP-2 for it (snp.revocation), and the bench times an acceptance.
    let mut snp_policy = policy.clone();
    snp_policy.snp.dangerous_allow_missing_crl = true;
    let mut g = c.benchmark_group("snp");
    g.throughput(Throughput::Elements(1));
    g.bench_function("tvm verify+appraise (SNP-2)", |b| {
        b.iter(|| {
            let v = snp::verify(&SnpInput {
                report: &report,
                endorsement: &endorsement,
                grace_seconds: 0,
                at: 1_748_736_000,
            });
            let verdict = appraise(
                v,
                &snp_policy,
                &tvm_verifier::ImageInput::new(&tvm_verifier::Images::none()),
                None,
                1_748_736_000,
            );
            assert!(verdict.accepted());
            verdict
        })
    });
    g.bench_function("tvm endorsement prepare (once per VCEK)", |b| {
        b.iter(|| snp::SnpEndorsement::prepare(VCEK, None))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
