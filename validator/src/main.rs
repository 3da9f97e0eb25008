//! `tvm-verifier`: check one piece of evidence now (`verify`, `check`), run the validator service (`run`), manage collateral (`collateral`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tvm_certs::store::{CollateralStore, Source, StoreConfig};
use tvm_certs::AmdProduct;
use tvm_validator::gpu_collateral;
use tvm_verifier::gpu::input as gpu_input;
use tvm_verifier::gpu::node::{appraise_node, NodeInput, NodeVerdict, RimInput};
use tvm_verifier::input::{binary_or_hex, parse_time};
use tvm_verifier::tee::snp::{self, SnpInput};
use tvm_verifier::tee::tdx::{self, TdxInput};
use tvm_verifier::{appraise, Policy, Verdict};

/// Exit statuses: 0 accepted, 1 rejected, 2 unusable input.
const REJECTED: u8 = 1;
const UNUSABLE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "tvm-verifier",
    version,
    about = "Verify confidential-VM evidence the way tvm validators do"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify a TDX quote, an SEV-SNP report or NVIDIA GPU evidence and print
    /// every check.
    ///
    /// Exit status: 0 accepted, 1 rejected, 2 unusable input.
    Verify(Box<VerifyArgs>),
    /// Attest one node now, as a validator would, and print every check:
    /// the command to see why a node fails.
    ///
    /// Exit status: 0 accepted, 1 rejected, 2 could not attest.
    Check(Box<CheckArgs>),
    /// The validator service: every epoch, attest every CVM each miner
    /// lists, score, set weights; status API, dashboard and metrics.
    Run {
        /// YAML config (docs/validator.md).
        #[arg(long)]
        config: PathBuf,
        /// Run the current epoch's round (or finish it) and exit.
        #[arg(long)]
        once: bool,
    },
    /// Share collateral between validators as one file (checked on import).
    Collateral {
        #[command(subcommand)]
        action: CollateralAction,
    },
}

#[derive(Subcommand)]
enum CollateralAction {
    /// Write everything in the collateral cache to FILE.
    Export {
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Check every item of FILE against the pinned roots and add it to the cache.
    Import {
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Where collateral comes from when it is not given as a file.
#[derive(Args)]
struct StoreArgs {
    /// Collateral cache. Default: $TVM_COLLATERAL_DIR, else ~/.cache/tvm/collateral.
    #[arg(long)]
    collateral_dir: Option<PathBuf>,
    /// Intel PCS, or a PCCS speaking its v4 API.
    #[arg(long)]
    pcs_url: Option<String>,
    /// Intel SGX Root CA CRL.
    #[arg(long)]
    root_crl_url: Option<String>,
    /// AMD KDS.
    #[arg(long)]
    kds_url: Option<String>,
    /// NVIDIA's OCSP responder (device and RIM certificates).
    #[arg(long)]
    nvidia_ocsp_url: Option<String>,
    /// NVIDIA's RIM service.
    #[arg(long)]
    nvidia_rim_url: Option<String>,
    /// An extra TLS root (PEM or DER) for a PCCS or mirror with a private CA.
    #[arg(long)]
    tls_root: Option<PathBuf>,
}

impl StoreArgs {
    fn open(&self) -> Result<CollateralStore, String> {
        let defaults = StoreConfig::default();
        let dir = tvm_validator::run::collateral_dir(self.collateral_dir.as_deref());
        let cfg = StoreConfig {
            dir,
            pcs_url: self.pcs_url.clone().unwrap_or(defaults.pcs_url),
            root_crl_url: self.root_crl_url.clone().unwrap_or(defaults.root_crl_url),
            kds_url: self.kds_url.clone().unwrap_or(defaults.kds_url),
            nvidia_ocsp_url: self
                .nvidia_ocsp_url
                .clone()
                .unwrap_or(defaults.nvidia_ocsp_url),
            nvidia_rim_url: self
                .nvidia_rim_url
                .clone()
                .unwrap_or(defaults.nvidia_rim_url),
            ..defaults
        };
        let roots = match &self.tls_root {
            None => Vec::new(),
            Some(p) => vec![read_cert(p, "TLS root")?],
        };
        CollateralStore::open(cfg, &roots).map_err(|e| e.to_string())
    }
}

#[derive(Args)]
struct CheckArgs {
    /// The node: `http://HOST:PORT`, `HOST:PORT` or `HOST` (then ports 8080 and 8980).
    node: String,
    /// The miner hotkey the node answers for (SS58).
    #[arg(long)]
    miner_hotkey: String,
    /// Sign as this hotkey (secret URI); default a throwaway key, which only
    /// agents with `allow: any-signer` accept.
    #[arg(long)]
    signer: Option<String>,
    /// Policy file (YAML); defaults apply without one.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// TDX collateral (JSON) instead of the store.
    #[arg(long)]
    collateral: Option<PathBuf>,
    /// Signed image manifests: a folder or an `https://` URL (repeatable);
    /// the policy's images.operator_keys decide which are accepted.
    #[arg(long)]
    manifests: Vec<String>,
    /// Judge the evidence as of this time: RFC 3339 or Unix seconds
    /// (collateral saved earlier). Default: now.
    #[arg(long)]
    at: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args)]
struct VerifyArgs {
    /// TDX quote (binary, or hex with or without 0x).
    #[arg(long, conflicts_with = "snp_report")]
    quote: Option<PathBuf>,
    /// Intel collateral for the quote: dcap-qvl QuoteCollateralV3 JSON.
    /// Without it, collateral comes from the cache or Intel PCS.
    #[arg(long, requires = "quote")]
    collateral: Option<PathBuf>,
    /// SEV-SNP attestation report (binary or hex).
    #[arg(long)]
    snp_report: Option<PathBuf>,
    /// The report's VCEK or VLEK certificate (DER or PEM). Without it, the
    /// VCEK comes from the cache or AMD KDS.
    #[arg(long, alias = "vlek", requires = "snp_report")]
    vcek: Option<PathBuf>,
    /// The report's AMD product (milan, genoa, turin) when fetching its VCEK
    /// for a v2 report, which does not say.
    #[arg(long, value_parser = parse_product)]
    product: Option<AmdProduct>,
    /// AMD CA chain, PEM: the ASK (or ASVK) then the ARK. Default: the pinned chain.
    #[arg(long, requires = "snp_report")]
    chain: Option<PathBuf>,
    /// AMD's CRL for the report's product (DER). Without it, revocation is
    /// checked only when the VCEK comes from the store.
    #[arg(long, requires = "snp_report")]
    crl: Option<PathBuf>,
    /// Verify as of this time: RFC 3339 or Unix seconds. Default: now.
    #[arg(long)]
    at: Option<String>,
    /// Policy file (YAML, docs/policy.md). Default: the built-in strict policy.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Expected report_data (128 hex characters); without it binding is not checked.
    #[arg(long)]
    report_data: Option<String>,
    /// Folders of signed image manifests (repeatable); the policy's
    /// images.operator_keys decide which are accepted.
    #[arg(long)]
    manifests: Vec<String>,
    /// The TDX event log (CCEL) of the quote, to name the first event that
    /// differs from the nearest manifest's reference events.
    #[arg(long, requires = "quote")]
    event_log: Option<PathBuf>,
    /// The node type the evidence is for (`gpu` or `cpu`): only manifests
    /// listing it count, as in a round. Absent: any.
    #[arg(long, value_parser = ["gpu", "cpu"])]
    node_type: Option<String>,
    /// NVIDIA GPU/NVSwitch evidence: nvtrust's JSON list, one of our evidence
    /// bundles, or a single SPDM report (hex or binary) with --cert-chain.
    /// Repeat (GPUs, then switches) to appraise a node from several files.
    #[arg(long, num_args = 1.., conflicts_with_all = ["quote", "snp_report"])]
    gpu_evidence: Vec<PathBuf>,
    /// The device certificate chain (PEM, leaf first) of a single SPDM report.
    #[arg(long, requires = "gpu_evidence")]
    cert_chain: Option<PathBuf>,
    /// The nonce (64 hex characters) every GPU and switch must have answered;
    /// without it the nonce is not checked.
    #[arg(long, requires = "gpu_evidence")]
    nonce: Option<String>,
    /// NVIDIA RIMs (signed SWID XML: driver, VBIOS, switch firmware) to
    /// compare the devices' measurements with. Repeat for several.
    #[arg(long, num_args = 1.., requires = "gpu_evidence")]
    rim: Vec<PathBuf>,
    /// Get what the GPU appraisal needs from the collateral store (cache,
    /// then NVIDIA's services): the RIMs (unless --rim is given) and OCSP
    /// answers for the device certificates.
    #[arg(long, requires = "gpu_evidence")]
    fetch: bool,
    /// Print the verdict as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// What `verify` concluded: one CPU TEE verdict or a node's GPU verdicts.
enum Outcome {
    Cpu(Box<Verdict>),
    Gpu(NodeVerdict),
}

impl Outcome {
    fn accepted(&self) -> bool {
        match self {
            Outcome::Cpu(v) => v.accepted(),
            Outcome::Gpu(v) => v.accepted(),
        }
    }
    fn render(&self) -> String {
        match self {
            Outcome::Cpu(v) => v.render(),
            Outcome::Gpu(v) => v.render(),
        }
    }
    fn json(&self) -> serde_json::Result<String> {
        match self {
            Outcome::Cpu(v) => serde_json::to_string_pretty(v),
            Outcome::Gpu(v) => serde_json::to_string_pretty(v),
        }
    }
}

fn parse_product(s: &str) -> Result<AmdProduct, String> {
    AmdProduct::ALL
        .into_iter()
        .find(|p| p.name().eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("{s:?} is not milan, genoa or turin"))
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

/// DER, or the first certificate of a PEM file.
fn read_cert(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let raw = read(path, what)?;
    if raw.starts_with(b"-----BEGIN") {
        let certs = tvm_certs::anchors::pem_certificates(&raw)
            .map_err(|e| format!("{what} {}: {e}", path.display()))?;
        return certs
            .into_iter()
            .next()
            .ok_or_else(|| format!("{what} {} holds no certificate", path.display()));
    }
    Ok(raw)
}

fn verify_gpus(args: &VerifyArgs, policy: &Policy, at: i64) -> Result<NodeVerdict, String> {
    let chain = match &args.cert_chain {
        Some(p) => Some(read(p, "certificate chain")?),
        None => None,
    };
    let mut devices = Vec::new();
    // The devices of an agent's bundle answer the nonce bound to its CVM.
    let mut bundle_cvm = None;
    for path in &args.gpu_evidence {
        let data = read(path, "GPU evidence")?;
        if data.trim_ascii_start().starts_with(b"{") {
            if let Ok(b) = tvm_protocol::EvidenceBundle::from_json(&data) {
                if bundle_cvm.is_some_and(|c| c != b.claims.cvm_id) {
                    return Err(format!(
                        "{}: a bundle of another CVM than the one before; give one CVM's bundle at a time",
                        path.display()
                    ));
                }
                bundle_cvm = Some(b.claims.cvm_id);
            }
        }
        devices.extend(
            gpu_input::read(&data, chain.as_deref())
                .map_err(|e| format!("{}: {e}", path.display()))?,
        );
    }
    let nonce = match &args.nonce {
        None => None,
        Some(h) => {
            let nonce: tvm_protocol::Nonce = h
                .trim_start_matches("0x")
                .parse()
                .map_err(|_| "--nonce must be 64 hex characters (32 bytes)".to_string())?;
            Some(match bundle_cvm {
                Some(cvm) => tvm_protocol::device_nonce(&nonce, &cvm),
                None => nonce.0,
            })
        }
    };
    let mut rims = args
        .rim
        .iter()
        .map(|p| {
            Ok(RimInput::verify(
                p.display().to_string(),
                &read(p, "RIM")?,
                at,
            ))
        })
        .collect::<Result<Vec<_>, String>>()?;
    // Said here even when another RIM of its kind is good and takes its place.
    for r in &rims {
        if let Err(e) = &r.rim {
            eprintln!("warning: --rim {}: {e}; it is not used", r.name);
        }
    }
    let mut revocation = Vec::new();
    if args.fetch {
        let store = args.store.open()?;
        let rt = runtime()?;
        if rims.is_empty() {
            let (fetched, problems) = rt.block_on(gpu_collateral::rims(&store, &devices, at));
            for p in problems {
                eprintln!("warning: {p}");
            }
            rims = fetched;
        }
        rt.block_on(gpu_collateral::rim_revocation(
            &store,
            &mut rims,
            at,
            policy.gpu.ocsp_grace_seconds,
        ));
        revocation = rt.block_on(gpu_collateral::revocation(
            &store,
            &devices,
            at,
            policy.gpu.ocsp_grace_seconds,
        ));
    }
    Ok(appraise_node(&NodeInput {
        root: tvm_verifier::gpu::DeviceRoot::Nvidia,
        devices: &devices,
        nonce,
        rims: &rims,
        revocation: &revocation,
        policy: &policy.gpu,
        at,
    }))
}

fn verify(args: &VerifyArgs) -> Result<Outcome, String> {
    let at = match &args.at {
        Some(s) => parse_time(s).map_err(|e| e.to_string())?,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .map_err(|e| format!("system clock before 1970: {e}"))?,
    };
    let policy = match &args.policy {
        Some(p) => Policy::load(p).map_err(|e| e.to_string())?,
        None => Policy::default(),
    };
    let expected = match &args.report_data {
        None => None,
        Some(h) => {
            let mut out = [0u8; 64];
            hex::decode_to_slice(h.trim_start_matches("0x"), &mut out)
                .map_err(|_| "--report-data must be 128 hex characters (64 bytes)".to_string())?;
            Some(out)
        }
    };
    if !args.gpu_evidence.is_empty() {
        return verify_gpus(args, &policy, at).map(Outcome::Gpu);
    }
    let verification = if let Some(q) = &args.quote {
        let quote = binary_or_hex(&read(q, "quote")?);
        let collateral = match &args.collateral {
            Some(c) => tdx::parse_collateral(&read(c, "collateral")?)
                .map_err(|e| format!("{}: {e}", c.display()))?,
            None => {
                let (fmspc, ca) = tdx::platform_of(&quote).map_err(|e| e.to_string())?;
                let store = args.store.open()?;
                let (c, source) = runtime()?
                    .block_on(store.tdx(&fmspc, ca, at))
                    .map_err(|e| format!("no collateral for FMSPC {fmspc}: {e}"))?;
                if let Source::StaleCache(why) = source {
                    eprintln!("warning: could not refresh collateral for FMSPC {fmspc} ({why}); using the cached copy");
                }
                c
            }
        };
        let root = tvm_certs::anchors::intel_sgx_root().map_err(|e| e.to_string())?;
        let collateral = tdx::TdxCollateral::prepare(collateral, root);
        tdx::verify(&TdxInput {
            quote: &quote,
            collateral: &collateral,
            at,
            grace_seconds: policy.collateral_grace_seconds,
        })
    } else if let Some(r) = &args.snp_report {
        let report = binary_or_hex(&read(r, "SNP report")?);
        // From files, or from the store: the VCEK and AMD's CRL for its product.
        let (vek, crl) = match &args.vcek {
            Some(k) => {
                let crl = match &args.crl {
                    Some(p) => Ok(read(p, "AMD CRL")?),
                    None => Err("no AMD CRL given (--crl FILE)".to_string()),
                };
                (read_cert(k, "VCEK/VLEK")?, crl)
            }
            None => {
                let product = args.product.or_else(|| snp::product_of_report(&report)).ok_or(
                    "this report does not name its AMD product: give --product milan|genoa|turin, or its --vcek",
                )?;
                let (chip_id, tcb) = snp::vcek_request(&report).map_err(|e| e.to_string())?;
                let store = args.store.open()?;
                let rt = runtime()?;
                let vek = rt
                    .block_on(store.vcek(product, &chip_id, tcb))
                    .map_err(|e| format!("no VCEK for this chip and TCB: {e}"))?
                    .0;
                let crl = match &args.crl {
                    Some(p) => Ok(read(p, "AMD CRL")?),
                    None => rt
                        .block_on(store.amd_crl(product, tvm_certs::AmdSigner::Vcek, at))
                        .map(|(der, _)| der)
                        .map_err(|e| format!("AMD CRL unavailable ({e})")),
                };
                (vek, crl)
            }
        };
        let chain = match &args.chain {
            None => None,
            Some(p) => {
                let certs = tvm_certs::anchors::pem_certificates(&read(p, "chain")?)
                    .map_err(|e| format!("{}: {e}", p.display()))?;
                match <[Vec<u8>; 2]>::try_from(certs) {
                    Ok([ask, ark]) => Some((ask, ark)),
                    Err(v) => {
                        return Err(format!(
                            "--chain {} holds {} certificates; expected the ASK/ASVK then the ARK",
                            p.display(),
                            v.len()
                        ))
                    }
                }
            }
        };
        let endorsement = snp::SnpEndorsement::prepare(
            &vek,
            chain.as_ref().map(|(a, b)| (a.as_slice(), b.as_slice())),
        )
        .with_crl(crl.as_deref().map_err(Clone::clone));
        snp::verify(&SnpInput {
            report: &report,
            endorsement: &endorsement,
            grace_seconds: policy.collateral_grace_seconds,
            at,
        })
    } else {
        return Err(
            "give --quote FILE --collateral FILE (TDX), --snp-report FILE --vcek FILE (SEV-SNP) or --gpu-evidence FILE (NVIDIA)"
                .into(),
        );
    };
    let found = tvm_certs::store::manifests_in_folders(&args.manifests);
    for p in &found.problems {
        eprintln!("warning: image manifests: {p}");
    }
    let images = tvm_verifier::Images::load(
        found
            .manifests
            .iter()
            .map(|(s, b)| (s.as_str(), b.as_slice())),
        &policy.images.operator_keys,
        at,
    );
    let event_log = match &args.event_log {
        Some(p) => Some(read(p, "event log")?),
        None => None,
    };
    let image = tvm_verifier::ImageInput {
        images: &images,
        node_type: args.node_type.as_deref().map(|t| match t {
            "gpu" => tvm_protocol::evidence::NodeType::Gpu,
            _ => tvm_protocol::evidence::NodeType::Cpu,
        }),
        event_log: event_log.as_deref(),
        runtime: None,
    };
    Ok(Outcome::Cpu(Box::new(appraise(
        verification,
        &policy,
        &image,
        expected.as_ref(),
        at,
    ))))
}

fn collateral(action: &CollateralAction) -> Result<String, String> {
    match action {
        CollateralAction::Export { file, store } => {
            let store = store.open()?;
            let bundle = store.export_bundle().map_err(|e| e.to_string())?;
            std::fs::write(file, &bundle)
                .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            Ok(format!(
                "wrote {} bytes to {}",
                bundle.len(),
                file.display()
            ))
        }
        CollateralAction::Import { file, store } => {
            let store = store.open()?;
            let n = store
                .import_bundle(&read(file, "bundle")?)
                .map_err(|e| e.to_string())?;
            Ok(format!("imported {n} item(s) from {}", file.display()))
        }
    }
}

/// `check`: fetch the node's evidence for a fresh nonce and appraise it.
fn check(args: &CheckArgs) -> Result<tvm_verifier::bundle::BundleVerdict, String> {
    use tvm_protocol::keys::{AccountId, Hotkey};
    use tvm_protocol::nodes::NodeEntry;
    let policy = match &args.policy {
        Some(p) => Policy::load(p).map_err(|e| e.to_string())?,
        None => Policy::default(),
    };
    let miner =
        AccountId::from_ss58(&args.miner_hotkey).map_err(|e| format!("--miner-hotkey: {e}"))?;
    let signer = match &args.signer {
        Some(uri) => Hotkey::from_uri(uri).map_err(|e| format!("--signer: {e}"))?,
        None => {
            let mut seed = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
                .map_err(|_| "no system randomness".to_string())?;
            Hotkey::from_mini_secret(&seed).map_err(|e| e.to_string())?
        }
    };
    // Host and, when given, the one port to try.
    let bare = args
        .node
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let bare = bare.split('/').next().unwrap_or(bare);
    let (host, port) = match bare.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => match p.parse::<u16>() {
            Ok(p) => (
                h.trim_matches(|c| c == '[' || c == ']').to_string(),
                Some(p),
            ),
            Err(_) => (bare.to_string(), None),
        },
        _ => (bare.to_string(), None),
    };
    let at = match &args.at {
        Some(s) => parse_time(s).map_err(|e| format!("--at: {e}"))?,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    };
    let rt = runtime()?;
    let mut attester =
        tvm_validator::attest::Attester::new(signer.clone(), std::time::Duration::from_secs(120))
            .map_err(|e| e.to_string())?;
    if let Some(p) = port {
        attester.ports = vec![p];
    }
    let nonce = tvm_protocol::nonce::Nonce::generate(&signer.account_id());
    let node = NodeEntry {
        ip: host,
        price: None,
    };
    let fetched = rt
        .block_on(attester.evidence(&node, &miner, &nonce))
        .map_err(|e| e.to_string())?;
    eprintln!(
        "evidence from {}{}",
        fetched.url,
        if fetched.tls_spki_sha256.is_some() {
            " (RA-TLS)"
        } else {
            " (plain HTTP)"
        }
    );
    let b = &fetched.bundle;
    let tdx = match &b.tee {
        tvm_protocol::evidence::TeeEvidence::Tdx { quote, .. } => {
            let raw = match &args.collateral {
                Some(c) => tdx::parse_collateral(&read(c, "collateral")?)
                    .map_err(|e| format!("{}: {e}", c.display()))?,
                None => {
                    // Only for a platform Intel vouched for (the node is not
                    // trusted to name one).
                    let root = tvm_certs::anchors::intel_sgx_root().map_err(|e| e.to_string())?;
                    let (fmspc, ca) =
                        tdx::verified_platform_of(&quote.0, root, at).map_err(|e| e.to_string())?;
                    let store = args.store.open()?;
                    rt.block_on(store.tdx(&fmspc, ca, at))
                        .map_err(|e| format!("no collateral for FMSPC {fmspc}: {e}"))?
                        .0
                }
            };
            let root = match (&policy.dangerous_trust_simulated, b.claims.simulated) {
                (Some(r), true) => r.intel_root_der().map_err(|e| e.to_string())?,
                _ => tvm_certs::anchors::intel_sgx_root()
                    .map_err(|e| e.to_string())?
                    .to_vec(),
            };
            Some(tdx::TdxCollateral::prepare(raw, &root))
        }
        tvm_protocol::evidence::TeeEvidence::SevSnp { .. } => None,
    };
    // SEV-SNP and real GPUs: VCEK, AMD CRL, RIMs and OCSP from the store.
    use tvm_validator::round::Collateral as _;
    let devices = tvm_verifier::gpu::input::from_bundle(b);
    let is_snp = matches!(b.tee, tvm_protocol::evidence::TeeEvidence::SevSnp { .. });
    let (snp, gpu): (_, tvm_validator::round::GpuCollateral) =
        if b.claims.simulated || (!is_snp && devices.is_empty()) {
            (None, Default::default())
        } else {
            let store = tvm_validator::run::StoreCollateral::new(
                args.store.open()?,
                policy.gpu.ocsp_grace_seconds,
                Vec::new(),
            );
            let snp = match &b.tee {
                tvm_protocol::evidence::TeeEvidence::SevSnp { report, certs } => Some(
                    rt.block_on(store.snp(&report.0, certs.as_ref().map(|c| c.0.as_slice()), at)),
                ),
                _ => None,
            };
            let gpu = match devices.is_empty() {
                true => Default::default(),
                false => rt.block_on(store.gpus(&devices, at)),
            };
            (snp, gpu)
        };
    let tee_collateral = match (&tdx, &snp) {
        (Some(c), _) => tvm_verifier::bundle::TeeCollateral::Tdx(c),
        (_, Some(Ok(e))) => tvm_verifier::bundle::TeeCollateral::Snp(e),
        (_, Some(Err(why))) => tvm_verifier::bundle::TeeCollateral::Unavailable(why),
        _ => tvm_verifier::bundle::TeeCollateral::None,
    };
    let images = if policy.images.dangerous_allow_unmeasured {
        tvm_verifier::Images::none()
    } else {
        let store = tvm_validator::run::StoreCollateral::new(
            args.store.open()?,
            policy.gpu.ocsp_grace_seconds,
            args.manifests.clone(),
        );
        rt.block_on(store.images(&policy.images.operator_keys, at))
    };
    Ok(tvm_verifier::bundle::appraise_bundle(
        &tvm_verifier::bundle::BundleInput {
            bundle: b,
            nonce: &nonce,
            tls_spki_sha256: fetched.tls_spki_sha256,
            tee_collateral,
            rims: &gpu.rims,
            revocation: &gpu.revocation,
            policy: &policy,
            images: &images,
            at,
        },
    ))
}

/// Print a verdict (text or JSON) and turn it into the exit status:
/// 0 accepted, 1 rejected, 2 unusable input.
fn finish(
    result: Result<(bool, String, serde_json::Result<String>), String>,
    json: bool,
) -> ExitCode {
    let (accepted, text, as_json) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(UNUSABLE);
        }
    };
    if json {
        match as_json {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: cannot print the verdict as JSON: {e}");
                return ExitCode::from(UNUSABLE);
            }
        }
    } else {
        print!("{text}");
    }
    if accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(REJECTED)
    }
}

/// `run`: the service until Ctrl-C (or one round with `--once`).
fn run(config: &Path, once: bool) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = tvm_validator::run::RunConfig::load(config).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    rt.block_on(async {
        let v = tvm_validator::run::Validator::start(cfg)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(addr) = v.cfg.status_listen {
            let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                format!("cannot listen on {addr} for the status pages: {e} (change status_listen)")
            })?;
            let app = tvm_validator::status::router(v.db.clone(), v.status_info());
            tracing::info!(%addr, "status API, dashboard and /metrics");
            tokio::spawn(async move {
                if let Err(e) = tvm_validator::status::serve(l, app).await {
                    tracing::error!(error = %e, "status server stopped");
                }
            });
        }
        if once {
            let epoch = v.current_epoch().await.map_err(|e| e.to_string())?;
            let out = v.run_epoch(epoch).await.map_err(|e| e.to_string())?;
            println!(
                "{}",
                serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
            );
            return Ok(());
        }
        tokio::select! {
            _ = v.run_forever(None) => Ok(()),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, once } => match run(&config, once) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(UNUSABLE)
            }
        },
        Command::Check(args) => finish(
            check(&args).map(|v| (v.accepted(), v.render(), serde_json::to_string_pretty(&v))),
            args.json,
        ),
        Command::Collateral { action } => match collateral(&action) {
            Ok(msg) => {
                println!("{msg}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(UNUSABLE)
            }
        },
        Command::Verify(args) => finish(
            verify(&args).map(|v| (v.accepted(), v.render(), v.json())),
            args.json,
        ),
    }
}
