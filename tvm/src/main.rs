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
        /// Exit after the first epoch (status 0 when the chain accepted its weights).
        #[arg(long)]
        once: bool,
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
    },
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
            dir,
            dashboard,
            block_ms,
            epoch_blocks,
        } => rt
            .block_on(tvm::devnet::run(tvm::devnet::DevnetOptions {
                once,
                dir,
                dashboard,
                block_time: std::time::Duration::from_millis(block_ms.max(50)),
                epoch_blocks: epoch_blocks.max(2),
            }))
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
