//! `tvm-verifier`: check one piece of evidence now, and (later) the validator service.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tvm_verifier::input::{binary_or_hex, parse_time};
use tvm_verifier::snp::{self, SnpInput};
use tvm_verifier::tdx::{self, TdxInput};
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
    /// Verify a TDX quote or an SEV-SNP report and print every check.
    ///
    /// Exit status: 0 accepted, 1 rejected, 2 unusable input.
    Verify(VerifyArgs),
}

#[derive(Args)]
struct VerifyArgs {
    /// TDX quote (binary, or hex with or without 0x).
    #[arg(long, conflicts_with = "snp_report")]
    quote: Option<PathBuf>,
    /// Intel collateral for the quote: dcap-qvl QuoteCollateralV3 JSON.
    #[arg(long, requires = "quote")]
    collateral: Option<PathBuf>,
    /// SEV-SNP attestation report (binary or hex).
    #[arg(long)]
    snp_report: Option<PathBuf>,
    /// The report's VCEK or VLEK certificate (DER or PEM).
    #[arg(long, alias = "vlek", requires = "snp_report")]
    vcek: Option<PathBuf>,
    /// AMD CA chain, PEM: the ASK (or ASVK) then the ARK. Default: the pinned chain.
    #[arg(long, requires = "snp_report")]
    chain: Option<PathBuf>,
    /// Verify as of this time: RFC 3339 or Unix seconds. Default: now.
    #[arg(long)]
    at: Option<String>,
    /// Policy file (YAML, docs/policy.md). Default: the built-in strict policy.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Expected report_data (128 hex characters); without it binding is not checked.
    #[arg(long)]
    report_data: Option<String>,
    /// Print the verdict as JSON.
    #[arg(long)]
    json: bool,
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

fn verify(args: &VerifyArgs) -> Result<Verdict, String> {
    let at = match &args.at {
        Some(s) => parse_time(s)?,
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
    let verification = if let Some(q) = &args.quote {
        let quote = binary_or_hex(&read(q, "quote")?);
        let Some(c) = &args.collateral else {
            return Err(
                "give the quote's Intel collateral with --collateral FILE (QuoteCollateralV3 JSON)"
                    .into(),
            );
        };
        let collateral = tdx::parse_collateral(&read(c, "collateral")?)
            .map_err(|e| format!("{}: {e}", c.display()))?;
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
        let Some(k) = &args.vcek else {
            return Err("give the report's VCEK or VLEK with --vcek FILE".into());
        };
        let vek = read_cert(k, "VCEK/VLEK")?;
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
        );
        snp::verify(&SnpInput {
            report: &report,
            endorsement: &endorsement,
            at,
        })
    } else {
        return Err(
            "give --quote FILE --collateral FILE (TDX) or --snp-report FILE --vcek FILE (SEV-SNP)"
                .into(),
        );
    };
    Ok(appraise(verification, &policy, expected.as_ref(), at))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Verify(args) => match verify(&args) {
            Ok(v) => {
                if args.json {
                    match serde_json::to_string_pretty(&v) {
                        Ok(s) => println!("{s}"),
                        Err(e) => {
                            eprintln!("error: cannot print the verdict as JSON: {e}");
                            return ExitCode::from(UNUSABLE);
                        }
                    }
                } else {
                    print!("{}", v.render());
                }
                if v.accepted {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(REJECTED)
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(UNUSABLE)
            }
        },
    }
}
