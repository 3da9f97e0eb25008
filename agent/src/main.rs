//! `tvm-agent`: the guest agent (see the crate docs and docs/miner.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tvm_agent::config::{Allow, Config, GpuChoice, LogFormat, TeeChoice};
use tvm_agent::{bind, Agent};

#[derive(Parser)]
#[command(
    name = "tvm-agent",
    version,
    about = "tvm guest agent: hardware evidence bound to a validator's nonce, RA-TLS, sealed inference"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the agent's API.
    Run(RunArgs),
    /// Make the SIMULATED test hierarchy in a folder (devnet and development only).
    SimInit {
        #[arg(long, default_value = "tvm-sim")]
        dir: PathBuf,
    },
    /// Probe this machine's NVIDIA GPUs through NVML (and NSCQ) as the agent
    /// would, and say why it would refuse to give evidence. Exit 0 only
    /// when it would give it.
    GpuProbe,
}

#[derive(Args)]
struct RunArgs {
    /// YAML config file; flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The miner's hotkey (SS58) requests must be signed for.
    #[arg(long)]
    hotkey: Option<String>,
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Also serve plain HTTP here (Targon compatibility).
    #[arg(long)]
    plain_http: Option<SocketAddr>,
    /// Use the SIMULATED TDX and GPUs (never on a real miner).
    #[arg(long)]
    sim: bool,
    #[arg(long)]
    sim_dir: Option<PathBuf>,
    #[arg(long)]
    sim_gpus: Option<usize>,
    /// Accept any validly signed caller instead of an allowlist.
    #[arg(long, conflicts_with = "allowlist")]
    any_signer: bool,
    /// File of validator hotkeys, one SS58 per line.
    #[arg(long)]
    allowlist: Option<PathBuf>,
    /// The local inference server, e.g. http://127.0.0.1:8000.
    #[arg(long)]
    upstream: Option<String>,
}

fn config(a: &RunArgs) -> Result<Config, String> {
    let mut c = match &a.config {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(h) = &a.hotkey {
        c.hotkey = h.clone();
    }
    if let Some(l) = a.listen {
        c.listen = l;
    }
    if a.plain_http.is_some() {
        c.plain_http = a.plain_http;
    }
    if a.sim {
        c.tee = TeeChoice::Sim;
        c.gpus = GpuChoice::Sim;
    }
    if let Some(d) = &a.sim_dir {
        c.sim.dir = d.clone();
    }
    if let Some(n) = a.sim_gpus {
        c.sim.gpus = n;
    }
    if a.any_signer {
        c.access.allow = Allow::AnySigner;
    }
    if let Some(p) = &a.allowlist {
        c.access.allow = Allow::Allowlist;
        c.access.allowlist = Some(p.clone());
    }
    if let Some(u) = &a.upstream {
        c.runtime.upstream = Some(u.clone());
    }
    Ok(c)
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

#[cfg(feature = "sim")]
fn sim_init(dir: &std::path::Path) -> Result<String, String> {
    tvm_agent::backend::sim::init(dir).map_err(|e| e.to_string())
}

#[cfg(not(feature = "sim"))]
fn sim_init(_: &std::path::Path) -> Result<String, String> {
    Err("this agent was built without the simulated TEE (cargo feature `sim`)".into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::SimInit { dir } => match sim_init(&dir) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::GpuProbe => gpu_probe(),
        Command::Run(a) => {
            let cfg = match config(&a) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logs(cfg.log);
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "agent stopped");
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(cfg: Config) -> Result<(), tvm_agent::StartError> {
    let agent = Agent::build(&cfg)?;
    let https = bind(cfg.listen)?;
    let http = cfg.plain_http.map(bind).transpose()?;
    let metrics = cfg.metrics.map(bind).transpose()?;
    let src = &agent.state.source;
    if src.simulated() {
        tracing::warn!("SIMULATED TEE/GPUs: this evidence is trusted only by a devnet policy");
    }
    tracing::info!(
        listen = %cfg.listen,
        plain_http = ?cfg.plain_http,
        tee = %src.tee.describe(),
        gpus = %src.devices.describe(),
        cvm_id = %hex::encode(src.cvm_id.0),
        "tvm-agent serving"
    );
    tokio::select! {
        r = agent.serve(https, http, metrics) => r,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("stopping on Ctrl-C");
            Ok(())
        }
    }
}

fn gpu_probe() -> ExitCode {
    use tvm_agent::backend::nvml;
    let api = match nvml::RealNvml::init() {
        Ok(a) => a,
        Err(e) => {
            println!("NVML: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut nonce = [0u8; 32];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce).is_err() {
        println!("no system randomness for a nonce");
        return ExitCode::FAILURE;
    }
    println!("nonce: {}", hex::encode(nonce));
    let mut ok = true;
    for (what, found) in nvml::probe(api, &nonce) {
        match found {
            Ok(v) => println!("{what}: {v}"),
            Err(e) => {
                ok &= !what.starts_with("agent");
                println!("{what}: FAILED: {e}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
