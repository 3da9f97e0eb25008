//! `tvm`: see the crate docs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tvm",
    version,
    about = "tvm: verified GPU compute for Bittensor subnet 4"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The miner's axon: lists this miner's CVMs to validators at GET /cvm.
    Serve {
        /// YAML config (see docs/miner.md).
        #[arg(long)]
        config: PathBuf,
    },
    /// The whole network on this machine: a test chain, 3 miners, 6
    /// SIMULATED agents and misbehaving nodes, a validator and its dashboard.
    Devnet {
        /// Exit after the first epoch (status 0 when the chain accepted its
        /// weights: with commit-reveal, once it revealed them).
        #[arg(long)]
        once: bool,
        /// Run the test chain without commit-reveal: weights are set
        /// directly (finney's default is commit-reveal on).
        #[arg(long)]
        no_commit_reveal: bool,
        /// Keep the simulated hierarchy and the validator's database here
        /// (default: a temporary folder, removed at exit).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The dashboard's address (port 0: any free one).
        #[arg(long, default_value = "127.0.0.1:9100")]
        dashboard: SocketAddr,
        /// Test chain block time, milliseconds.
        #[arg(long, default_value_t = 1000)]
        block_ms: u64,
        /// Blocks per epoch (the first epoch's round runs at once).
        #[arg(long, default_value_t = 60)]
        epoch_blocks: u64,
        /// A real small model to serve and check instead of the toy: a
        /// GGUF file (llama architecture, byte-level BPE, ChatML), such as
        /// SmolLM2-135M-Instruct (docs/validator.md#v5).
        #[arg(long, value_name = "GGUF")]
        model_file: Option<PathBuf>,
    },
    /// Operators: image signing keys, signed manifests, the image service.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Miners: can this host run a confidential VM of the node type? Each
    /// check says PASS, WARN, FAIL or SKIP, what it saw and how to fix it.
    /// Exit 0: ready; 1: a check failed; 2: bad usage.
    Check(HostArgs),
    /// Miners: check the host, send the report (--submit), fetch and verify
    /// the release (--service-url), start the CVM under systemd
    /// (--launch-vm). Exit 0 done, 1 host not ready, 2 bad usage, 3 release
    /// not fetched or not verified, 4 report refused, 5 CVM not started.
    #[command(version)]
    Install(Box<InstallArgs>),
    /// Miners: the CVMs tvm install started, their systemd units and their
    /// agents' /health. Exit 0 when all run and answer ready.
    Status {
        #[arg(long, default_value = "/")]
        root: PathBuf,
        #[arg(long, hide = true)]
        fixture_commands: Option<PathBuf>,
    },
    /// Miners: start the confidential VM of a verified release with QEMU:
    /// the manifest is verified under the operator keys, its boot files
    /// checked by size and SHA-256, the VM's shape compared with the host's
    /// GPUs and NVSwitches; then QEMU runs in the foreground.
    Launch {
        /// The signed manifest of the release.
        #[arg(long)]
        manifest: PathBuf,
        /// The operator key set to verify it with.
        #[arg(long)]
        keys: PathBuf,
        /// The folder holding the release's files.
        #[arg(long)]
        image_dir: PathBuf,
        /// A GPU to pass through (as lspci -D prints it), once per GPU.
        #[arg(long = "gpu")]
        gpus: Vec<String>,
        /// An NVSwitch to pass through (8-GPU boards, protected PCIe).
        #[arg(long = "switch")]
        switches: Vec<String>,
        /// The writable disk (qcow2) for models and logs.
        #[arg(long)]
        data_disk: Option<PathBuf>,
        /// Host ports forwarded to the agent's ports in the VM.
        #[arg(long = "port", default_values_t = [8080u16, 8980])]
        ports: Vec<u16>,
        #[arg(long, default_value = "tvm-cvm0")]
        name: String,
        /// TDX: the vsock port of the host's quote generation service.
        #[arg(long, default_value_t = 4050)]
        qgs_port: u32,
        /// Where the guest's serial console goes (default: <name>.serial.log here).
        #[arg(long)]
        serial_log: Option<PathBuf>,
        /// The miner's settings the guest reads (fw_cfg opt/tvm/miner):
        /// `hotkey=SS58`, then `validators=SS58,...` or `allow=any-signer`.
        #[arg(long)]
        miner_config: PathBuf,
        /// Print the QEMU command instead of running it.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(clap::Args)]
struct HostArgs {
    /// What the host is for.
    #[arg(long, value_enum)]
    node_type: tvm::check::NodeType,
    /// The image service (checked for reachability; install fetches from it).
    #[arg(long)]
    service_url: Option<String>,
    /// Where the release and the CVM's data disk go.
    #[arg(long, default_value = "/var/lib/tvm")]
    vm_download_dir: PathBuf,
    /// Storage the CVM's data disk may use, in TB (21 or 21TB).
    #[arg(long, value_parser = tvm::check::parse_storage)]
    host_machine_storage: Option<u64>,
    /// The machine-readable report (schema tvm-check/1, docs/miner.md).
    #[arg(long)]
    json: bool,
    /// Write the report here too.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Only what did not pass, and the summary.
    #[arg(long)]
    compact: bool,
    /// Apply the safe, reversible fixes (module loading, blacklists,
    /// services) and check again; print the rest.
    #[arg(long)]
    fix_warnings: bool,
    /// Read the host under this folder (a copy of another host's files).
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Tests: command outputs from this JSON table instead of running them.
    #[arg(long, hide = true)]
    fixture_commands: Option<PathBuf>,
}

#[derive(clap::Args)]
struct InstallArgs {
    #[command(flatten)]
    host: HostArgs,
    /// Send the host report to the service, signed with --hotkey-phrase.
    #[arg(long)]
    submit: bool,
    /// The miner's hotkey (mnemonic, 0x seed or //Dev URI); better in the
    /// environment than on the command line, which other users can read.
    #[arg(
        long,
        env = "TVM_HOTKEY_PHRASE",
        hide_env_values = true,
        conflicts_with = "hotkey_file"
    )]
    hotkey_phrase: Option<String>,
    /// Or a bittensor wallet hotkey file (~/.bittensor/wallets/W/hotkeys/H).
    #[arg(long)]
    hotkey_file: Option<PathBuf>,
    /// Start the CVM under systemd once the release is verified.
    #[arg(long)]
    launch_vm: bool,
    /// The subnet operator's key set (default: the one built into tvm).
    #[arg(long)]
    operator_keys: Option<PathBuf>,
    /// The CVM's name (its systemd unit is tvm-NAME.service).
    #[arg(long, default_value = "cvm0")]
    name: String,
    /// Host ports forwarded to the agent's ports.
    #[arg(long = "port", default_values_t = [8080u16, 8980])]
    ports: Vec<u16>,
    /// With --launch-vm: the validator hotkeys (SS58, comma-separated) the
    /// CVM's agent answers; default any signed request for your hotkey.
    #[arg(long, value_delimiter = ',')]
    validators: Vec<String>,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Serve release files (v1/manifests, v1/files under DIR) and take host
    /// reports (POST /v1/reports, Epistula-signed) into --reports.
    Serve {
        dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8088")]
        listen: SocketAddr,
        /// Where reports are stored (default DIR/../reports, outside what is served).
        #[arg(long)]
        reports: Option<PathBuf>,
    },
    /// The host reports the service took, oldest first per hotkey.
    Reports { dir: PathBuf },
    /// A new Ed25519 signing key (PKCS#8, written with mode 0600, never over a file).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a manifest (its exact text), or add a signature to a signed one.
    Sign {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        manifest: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// `--manifest` is already signed: add this key's signature (rotation).
        #[arg(long)]
        add: bool,
    },
    /// What a validator pinning `--keys` concludes about a signed manifest.
    Verify {
        #[arg(long)]
        keys: PathBuf,
        #[arg(long)]
        manifest: PathBuf,
        /// RFC 3339 or Unix seconds; default now.
        #[arg(long)]
        at: Option<String>,
    },
    /// Withdraw a release ("NAME VERSION") in a key set.
    Retire {
        #[arg(long)]
        keys: PathBuf,
        #[arg(long)]
        release: String,
    },
    /// A manifest's measurement set for one platform and VM shape (JSON, for
    /// `measurements[]`).
    #[command(subcommand)]
    Measure(MeasureCommand),
    /// Why a TDX quote does not match a manifest: register by register, and
    /// with the event log the first event that differs. Exit 1 when no
    /// measurement set matches.
    Diagnose {
        #[arg(long)]
        quote: PathBuf,
        /// The TDX event log (CCEL, TCG2 crypto-agile) of that boot.
        #[arg(long)]
        event_log: Option<PathBuf>,
        /// The signed manifest.
        #[arg(long)]
        manifest: PathBuf,
        /// Check its signatures as a validator pinning this key set does.
        #[arg(long)]
        keys: Option<PathBuf>,
        #[arg(long)]
        at: Option<String>,
    },
    /// Add a new key to a key set; the current keys expire after the overlap.
    RotateKey {
        #[arg(long)]
        keys: PathBuf,
        /// The new key's public key, hex (from `tvm image keygen`).
        #[arg(long)]
        public_key: String,
        #[arg(long, default_value_t = 14)]
        overlap_days: u32,
        #[arg(long, default_value_t = 365)]
        lifetime_days: u32,
        /// When the new key starts (RFC 3339 or Unix seconds); default now.
        #[arg(long)]
        at: Option<String>,
    },
}

#[derive(Subcommand)]
enum MeasureCommand {
    /// TDX: from a reference boot (`--quote`, `--event-log`) or from the
    /// release (`--firmware FILE|--mrtd HEX --rtmr0 --kernel FILE|
    /// --kernel-authenticode HEX --cmdline-sha384 --initrd-sha384`).
    Tdx(Box<TdxMeasure>),
    /// SEV-SNP: the launch digest from a launch document (OVMF pages digest,
    /// sections, kernel/initrd SHA-256, command line, vCPUs, CPU model…).
    SevSnp {
        #[arg(long)]
        shape: String,
        #[arg(long)]
        launch: PathBuf,
    },
}

#[derive(clap::Args)]
struct TdxMeasure {
    #[arg(long)]
    shape: String,
    #[arg(long, conflicts_with = "mrtd")]
    quote: Option<PathBuf>,
    #[arg(long, requires = "quote")]
    event_log: Option<PathBuf>,
    /// MRTD, hex, as the firmware's tooling gives it...
    #[arg(long, requires_all = ["rtmr0", "cmdline_sha384", "initrd_sha384"])]
    mrtd: Option<String>,
    /// ...or computed from the TDVF (OVMF for TDX) image.
    #[arg(long, conflicts_with_all = ["mrtd", "quote"], requires_all = ["rtmr0", "cmdline_sha384", "initrd_sha384"])]
    firmware: Option<PathBuf>,
    /// How the host's QEMU adds the firmware's pages: `single-pass`
    /// (QEMU 9 and later) or `two-pass` (QEMU 8). Required with
    /// `--firmware`: the wrong one gives an MRTD no host shows.
    #[arg(long, requires = "firmware", value_parser = ["single-pass", "two-pass"])]
    page_order: Option<String>,
    #[arg(long)]
    rtmr0: Option<String>,
    /// The kernel (bzImage): its Authenticode SHA-384 is computed.
    #[arg(long, conflicts_with = "kernel_authenticode")]
    kernel: Option<PathBuf>,
    /// The kernel's Authenticode SHA-384, hex, when the file is not at hand.
    #[arg(long)]
    kernel_authenticode: Option<String>,
    #[arg(long)]
    cmdline_sha384: Option<String>,
    #[arg(long)]
    initrd_sha384: Option<String>,
}

fn time_or_now(at: Option<&str>) -> Result<i64, String> {
    match at {
        Some(s) => tvm_verifier::input::parse_time(s).map_err(|e| format!("--at: {e}")),
        None => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)),
    }
}

fn image(cmd: ImageCommand) -> Result<(), String> {
    use tvm::image;
    let e = |e: image::ImageError| e.to_string();
    match cmd {
        ImageCommand::Serve {
            dir,
            listen,
            reports,
        } => {
            let reports = reports.unwrap_or_else(|| {
                dir.parent()
                    .unwrap_or(std::path::Path::new("."))
                    .join("reports")
            });
            let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            rt.block_on(async {
                tokio::select! {
                    r = tvm::image_service::serve(listen, &dir, &reports) => r,
                    _ = tokio::signal::ctrl_c() => Ok(()),
                }
            })
        }
        ImageCommand::Reports { dir } => {
            print!("{}", tvm::image_service::list_reports(&dir)?);
            Ok(())
        }
        ImageCommand::Keygen { out } => {
            print!("{}", image::keygen(&out).map_err(e)?);
            Ok(())
        }
        ImageCommand::Sign {
            key,
            manifest,
            out,
            add,
        } => image::sign(&key, &manifest, &out, add).map_err(e),
        ImageCommand::Verify { keys, manifest, at } => {
            let at = time_or_now(at.as_deref())?;
            print!("{}", image::verify(&keys, &manifest, at).map_err(e)?);
            Ok(())
        }
        ImageCommand::Retire { keys, release } => image::retire(&keys, &release).map_err(e),
        ImageCommand::Measure(MeasureCommand::Tdx(args)) => {
            let TdxMeasure {
                shape,
                quote,
                event_log,
                mrtd,
                firmware,
                page_order,
                rtmr0,
                kernel,
                kernel_authenticode,
                cmdline_sha384,
                initrd_sha384,
            } = *args;
            let mrtd = match (&firmware, mrtd) {
                (Some(f), _) => {
                    let Some(order) = page_order else {
                        return Err("--firmware needs --page-order single-pass (QEMU 9 and later) or two-pass (QEMU 8)".into());
                    };
                    Some(image::firmware_mrtd(f, order == "two-pass").map_err(e)?)
                }
                (None, given) => given,
            };
            let kernel_authenticode = match (&kernel, kernel_authenticode) {
                (Some(k), _) => Some(image::kernel_authenticode(k).map_err(e)?),
                (None, given) => given,
            };
            let source = match (&quote, &mrtd) {
                (Some(q), _) => image::TdxSource::ReferenceBoot {
                    quote: q,
                    event_log: event_log.as_deref(),
                },
                (None, Some(mrtd)) => image::TdxSource::Digests {
                    mrtd,
                    rtmr0: rtmr0.as_deref().unwrap_or_default(),
                    kernel_authenticode: kernel_authenticode.as_deref().unwrap_or_default(),
                    cmdline_sha384: cmdline_sha384.as_deref().unwrap_or_default(),
                    initrd_sha384: initrd_sha384.as_deref().unwrap_or_default(),
                },
                (None, None) => {
                    return Err(
                        "give --quote (a reference boot), or --mrtd or --firmware with the release's digests"
                            .into(),
                    )
                }
            };
            print!("{}", image::measure_tdx(&shape, source).map_err(e)?);
            Ok(())
        }
        ImageCommand::Measure(MeasureCommand::SevSnp { shape, launch }) => {
            print!("{}", image::measure_snp(&shape, &launch).map_err(e)?);
            Ok(())
        }
        ImageCommand::Diagnose {
            quote,
            event_log,
            manifest,
            keys,
            at,
        } => {
            let at = time_or_now(at.as_deref())?;
            let (text, matched) =
                image::diagnose(&quote, event_log.as_deref(), &manifest, keys.as_deref(), at)
                    .map_err(e)?;
            print!("{text}");
            if matched {
                Ok(())
            } else {
                Err("the quote matches no measurement set of this manifest".into())
            }
        }
        ImageCommand::RotateKey {
            keys,
            public_key,
            overlap_days,
            lifetime_days,
            at,
        } => {
            let at = time_or_now(at.as_deref())?;
            image::rotate_key(&keys, &public_key, at, overlap_days, lifetime_days).map_err(e)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The devnet prints its own story; its parts log warnings only.
    let level = match cli.command {
        Command::Devnet { .. } => "warn",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Command::Launch { .. } = cli.command {
        return match launch(cli.command) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        };
    }
    match cli.command {
        Command::Check(args) => return tvm_install::check(args),
        Command::Install(args) => return tvm_install::install(*args),
        Command::Status {
            root,
            fixture_commands,
        } => return tvm_install::status(root, fixture_commands),
        _ => {}
    }
    if let Command::Image(cmd) = cli.command {
        return match image(cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve { config } => rt
            .block_on(async {
                let cfg = tvm::serve::ServeConfig::load(&config)?;
                tokio::select! {
                    r = tvm::serve::run(cfg) => r,
                    _ = tokio::signal::ctrl_c() => Ok(()),
                }
            })
            .map_err(|e: tvm::serve::ServeError| e.to_string()),
        Command::Devnet {
            once,
            no_commit_reveal,
            dir,
            dashboard,
            block_ms,
            epoch_blocks,
            model_file,
        } => rt
            .block_on(tvm::devnet::run(tvm::devnet::DevnetOptions {
                model_file,
                once,
                commit_reveal: !no_commit_reveal,
                dir,
                dashboard,
                block_time: std::time::Duration::from_millis(block_ms.max(50)),
                epoch_blocks: epoch_blocks.max(2),
            }))
            .map_err(|e| e.to_string()),
        Command::Image(_)
        | Command::Launch { .. }
        | Command::Check(_)
        | Command::Install(_)
        | Command::Status { .. } => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `tvm launch`: verify, check the files and the shape, then run QEMU (or
/// print its command with `--dry-run`). QEMU's exit status is passed on.
fn launch(cmd: Command) -> Result<ExitCode, String> {
    let Command::Launch {
        manifest,
        keys,
        image_dir,
        gpus,
        switches,
        data_disk,
        ports,
        name,
        qgs_port,
        serial_log,
        miner_config,
        dry_run,
    } = cmd
    else {
        return Err("not a launch".into());
    };
    let pci = |list: Vec<String>| -> Result<Vec<tvm::launch::PciAddress>, String> {
        list.iter()
            .map(|a| {
                a.parse()
                    .map_err(|e: tvm::launch::LaunchError| e.to_string())
            })
            .collect()
    };
    let now = time_or_now(None)?;
    let keys = tvm::image::load_keys(&keys).map_err(|e| e.to_string())?;
    let signed = std::fs::read(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let m = tvm_image::manifest::verify(&signed, &keys, now)
        .map_err(|e| format!("{}: {e}", manifest.display()))?;
    let options = tvm::launch::HostOptions {
        serial_log: serial_log.unwrap_or_else(|| PathBuf::from(format!("{name}.serial.log"))),
        name,
        image_dir,
        data: data_disk,
        gpus: pci(gpus)?,
        switches: pci(switches)?,
        ports,
        qgs_port,
        miner_config: Some(miner_config),
    };
    let args = tvm::launch::plan(&m, &options).map_err(|e| e.to_string())?;
    // The guest stops at boot without it; say so before QEMU starts.
    if let Some(path) = &options.miner_config {
        match std::fs::metadata(path) {
            Ok(md) if md.is_file() && md.len() > 0 && md.len() <= 64 * 1024 => {}
            Ok(_) => {
                return Err(format!(
                    "{}: the miner settings must be a file of 1 byte to 64 KiB (hotkey=SS58, then validators=SS58,... or allow=any-signer)",
                    path.display()
                ))
            }
            Err(e) => return Err(format!("{}: {e} (tvm install --launch-vm writes it)", path.display())),
        }
    }
    const QEMU: &str = "qemu-system-x86_64";
    if dry_run {
        println!("{}", tvm::launch::shell_line(QEMU, &args));
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("tvm launch: {} ({}) starting", m.release(), options.name);
    let status = std::process::Command::new(QEMU)
        .args(&args)
        .status()
        .map_err(|e| {
            format!("cannot start {QEMU}: {e} (install QEMU with TDX or SEV-SNP support)")
        })?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// `tvm check`, `tvm install`, `tvm status`.
mod tvm_install {
    use super::{HostArgs, InstallArgs};
    use std::path::PathBuf;
    use std::process::ExitCode;
    use tvm::check::host::{Host, Recorded, Runner};
    use tvm::check::{self, Report};
    use tvm::install::{self, EXIT_IMAGE, EXIT_LAUNCH, EXIT_NOT_READY, EXIT_SUBMIT, EXIT_USAGE};

    fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
        eprintln!("error: {msg}");
        ExitCode::from(code)
    }

    fn host(root: PathBuf, table: Option<PathBuf>) -> Result<Host, String> {
        let runner = match table {
            None => Runner::System {
                timeout: std::time::Duration::from_secs(5),
            },
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let outputs: std::collections::BTreeMap<String, Recorded> =
                    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
                Runner::Table {
                    outputs,
                    log: Default::default(),
                }
            }
        };
        Ok(Host::new(root, runner))
    }

    fn runtime() -> Result<tokio::runtime::Runtime, String> {
        tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the async runtime: {e}"))
    }

    /// Check (and fix), print, write `--output`. Err: usage or I/O.
    fn checked(a: &HostArgs, h: &Host) -> Result<Report, String> {
        let vm_dir =
            std::fs::canonicalize(&a.vm_download_dir).unwrap_or_else(|_| a.vm_download_dir.clone());
        let opts = check::Options {
            node_type: a.node_type,
            service_url: a.service_url.clone(),
            storage_bytes: a.host_machine_storage,
            vm_dir: vm_dir.display().to_string(),
        };
        let mut report = check::run(h, &opts);
        if a.fix_warnings {
            let done = check::apply_fixes(h, &report);
            if done.is_empty() {
                eprintln!("--fix-warnings: nothing to fix automatically");
            }
            for d in done {
                eprintln!("--fix-warnings: {d}");
            }
            report = check::run(h, &opts);
        }
        let text = if a.json {
            report.json()
        } else {
            report.text(a.compact)
        };
        print!("{text}");
        if let Some(out) = &a.output {
            std::fs::write(out, &text).map_err(|e| format!("{}: {e}", out.display()))?;
        }
        Ok(report)
    }

    pub fn check(a: HostArgs) -> ExitCode {
        let h = match host(a.root.clone(), a.fixture_commands.clone()) {
            Ok(h) => h,
            Err(e) => return fail(EXIT_USAGE, e),
        };
        match checked(&a, &h) {
            Ok(r) if r.ready => ExitCode::SUCCESS,
            Ok(_) => ExitCode::from(EXIT_NOT_READY),
            Err(e) => fail(EXIT_USAGE, e),
        }
    }

    pub fn install(a: InstallArgs) -> ExitCode {
        // Usage first: a mistake costs no check.
        let hotkey = match (&a.hotkey_phrase, &a.hotkey_file) {
            (None, None) if a.submit => {
                return fail(
                    EXIT_USAGE,
                    "--submit needs --hotkey-phrase or --hotkey-file",
                )
            }
            (None, None) => None,
            // An empty phrase would be read as the development key //Alice.
            (Some(p), _) if p.trim().is_empty() => {
                return fail(
                    EXIT_USAGE,
                    "--hotkey-phrase is empty (is the variable set?)",
                )
            }
            (p, f) => match tvm_protocol::wallet::configured_hotkey(p.as_deref(), f.as_deref()) {
                Ok(k) => Some(k),
                Err(e) => return fail(EXIT_USAGE, e),
            },
        };
        // Another root is for reading a copy of a host: nothing is changed on this one for it.
        let elsewhere = a.host.root != std::path::Path::new("/");
        if elsewhere && a.host.fixture_commands.is_none() && (a.launch_vm || a.host.fix_warnings) {
            return fail(
                EXIT_USAGE,
                "--root reads another host's files: --launch-vm and --fix-warnings act on this host, run them there",
            );
        }
        if (a.submit || a.launch_vm) && a.host.service_url.is_none() {
            return fail(EXIT_USAGE, "--submit and --launch-vm need --service-url");
        }
        if a.launch_vm && !install::unit_safe_name(&a.name) {
            return fail(
                EXIT_USAGE,
                "--name: letters, digits, '.', '_' and '-', not starting with '-' or '.'",
            );
        }
        if a.launch_vm && hotkey.is_none() {
            return fail(
                EXIT_USAGE,
                "--launch-vm needs --hotkey-file or --hotkey-phrase: the CVM's agent answers for that hotkey",
            );
        }
        if !a.validators.is_empty() && !a.launch_vm {
            return fail(EXIT_USAGE, "--validators is for the CVM --launch-vm starts");
        }
        if let (true, Some(k)) = (a.launch_vm, &hotkey) {
            if let Err(e) = install::miner_config_text(&k.account_id(), &a.validators) {
                return fail(EXIT_USAGE, e);
            }
        }
        let keys = if a.launch_vm || a.host.service_url.is_some() {
            match install::operator_keys(a.operator_keys.as_deref()) {
                Ok(k) => Some(k),
                Err(e) => return fail(EXIT_USAGE, e),
            }
        } else {
            None
        };
        let h = match host(a.host.root.clone(), a.host.fixture_commands.clone()) {
            Ok(h) => h,
            Err(e) => return fail(EXIT_USAGE, e),
        };
        let report = match checked(&a.host, &h) {
            Ok(r) => r,
            Err(e) => return fail(EXIT_USAGE, e),
        };
        let rt = match runtime() {
            Ok(rt) => rt,
            Err(e) => return fail(EXIT_USAGE, e),
        };
        let client = match tvm::download::client() {
            Ok(c) => c,
            Err(e) => return fail(EXIT_USAGE, e),
        };
        let service = a.host.service_url.clone().unwrap_or_default();
        if let (true, Some(hotkey)) = (a.submit, &hotkey) {
            match rt.block_on(install::submit(&client, &service, hotkey, &report)) {
                Ok(id) => eprintln!("report sent: {id}"),
                Err(e) => return fail(EXIT_SUBMIT, format!("the report was not accepted: {e}")),
            }
        }
        if !report.ready {
            eprintln!(
                "this host cannot mine yet: fix every FAIL above (nothing was downloaded or started)"
            );
            return ExitCode::from(EXIT_NOT_READY);
        }
        let Some((keys, keys_text)) = keys else {
            eprintln!("host ready; give --service-url to fetch the release");
            return ExitCode::SUCCESS;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        eprintln!(
            "fetching the {} release from {service}",
            a.host.node_type.as_str()
        );
        let release = match rt.block_on(tvm::download::fetch_release(
            &client,
            &service,
            a.host.node_type,
            &keys,
            &a.host.vm_download_dir,
            now,
        )) {
            Ok(r) => r,
            Err(e) => return fail(EXIT_IMAGE, e),
        };
        eprintln!(
            "{} verified in {} ({} bytes fetched)",
            release.manifest.release(),
            release.dir.display(),
            release.fetched
        );
        if !a.launch_vm {
            return ExitCode::SUCCESS;
        }
        match launch_vm(&a, &h, &release, &keys_text, hotkey.as_ref()) {
            Ok(cvm) => {
                eprintln!(
                    "{} started ({}); see it with: tvm status; its console: journalctl -u {}",
                    cvm.name, cvm.release, cvm.unit
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(EXIT_LAUNCH, e),
        }
    }

    fn launch_vm(
        a: &InstallArgs,
        h: &Host,
        release: &tvm::download::Release,
        keys_text: &str,
        hotkey: Option<&tvm_protocol::keys::Hotkey>,
    ) -> Result<install::Cvm, String> {
        let hotkey = hotkey.ok_or("--launch-vm needs a hotkey")?;
        let miner_text = install::miner_config_text(&hotkey.account_id(), &a.validators)?;
        let abs =
            |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let image_dir = abs(&release.dir);
        let vm_dir = abs(&a.host.vm_download_dir);
        install::check_owned_by_root(&vm_dir)?;
        // What root runs at every start lives where only root writes.
        let keys = std::path::PathBuf::from(install::KEYS_PATH);
        h.write(install::KEYS_PATH, keys_text)
            .map_err(|e| format!("{}: {e}", install::KEYS_PATH))?;
        let exe = install::install_binary(h)?;
        let (gpus, switches) = tvm::check::devices(h, a.host.node_type);
        let shape =
            tvm::launch::Shape::from_launch(&release.manifest.launch).map_err(|e| e.to_string())?;
        let data_disk = if shape.data_disk {
            let bytes = a.host.host_machine_storage.ok_or(
                "this release has a data disk: declare its size with --host-machine-storage <TB>",
            )?;
            Some((vm_dir.join(format!("{}.data.qcow2", a.name)), bytes))
        } else {
            None
        };
        let plan = install::LaunchPlan {
            name: a.name.clone(),
            exe,
            image_dir: image_dir.clone(),
            release: release.manifest.release(),
            keys,
            gpus: gpus.clone(),
            switches: switches.clone(),
            data_disk: data_disk.clone(),
            ports: a.ports.clone(),
            qgs_port: tvm::check::qgs_port(h),
            serial_log: vm_dir.join(format!("{}.serial.log", a.name)),
            miner_config: vm_dir.join(format!("{}.miner", a.name)),
        };
        h.write(&plan.miner_config.display().to_string(), &miner_text)
            .map_err(|e| format!("{}: {e}", plan.miner_config.display()))?;
        // What tvm launch will refuse (shape, files) is refused now.
        let pci = |v: &[String]| -> Result<Vec<tvm::launch::PciAddress>, String> {
            v.iter()
                .map(|s| {
                    s.parse()
                        .map_err(|e: tvm::launch::LaunchError| e.to_string())
                })
                .collect()
        };
        tvm::launch::plan(
            &release.manifest,
            &tvm::launch::HostOptions {
                name: a.name.clone(),
                image_dir,
                data: data_disk.map(|(d, _)| d),
                gpus: pci(&gpus)?,
                switches: pci(&switches)?,
                ports: a.ports.clone(),
                qgs_port: plan.qgs_port,
                serial_log: plan.serial_log.clone(),
                miner_config: Some(plan.miner_config.clone()),
            },
        )
        .map_err(|e| e.to_string())?;
        install::start_under_systemd(h, &plan)
    }

    pub fn status(root: PathBuf, table: Option<PathBuf>) -> ExitCode {
        let h = match host(root, table) {
            Ok(h) => h,
            Err(e) => return fail(EXIT_USAGE, e),
        };
        let (rt, client) = match (runtime(), tvm::download::client()) {
            (Ok(rt), Ok(c)) => (rt, c),
            (Err(e), _) | (_, Err(e)) => return fail(EXIT_USAGE, e),
        };
        let (text, ok) = rt.block_on(install::status(&h, &client));
        print!("{text}");
        if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}
