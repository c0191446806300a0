//! The `mcp-ephemeral` binary: parses flags, sets up logging (always on stderr: in stdio mode
//! stdout carries only JSON-RPC) and dispatches to the library's commands.

use std::process::ExitCode;

use clap::Parser;
use mcp_ephemeral::{
    cli::{Cli, Command},
    commands,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MCP_EPHEMERAL_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| "mcp_ephemeral=info,rmcp=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            // Boxed: the whole meta server's future is deep enough to overflow the compiler's
            // layout query limit when it is inlined here (release builds).
            Box::pin(commands::serve(*args)).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bridge(args) => {
            let ok = commands::bridge(args).await?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Presets { presets_dir, json } => {
            commands::presets(presets_dir.as_deref(), json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crds { out_dir } => {
            use mcp_ephemeral::runtime::kubernetes::crd;
            match out_dir {
                None => print!("{}", crd::definitions_yaml()?),
                Some(dir) => {
                    for (name, text) in crd::definition_files()? {
                        std::fs::write(dir.join(&name), text)?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Version => {
            println!("{} {} ({})", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"), env!("MCP_EPHEMERAL_GIT_COMMIT"));
            Ok(ExitCode::SUCCESS)
        }
    }
}
