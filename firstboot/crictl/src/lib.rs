//! `nodebake-crictl`: a small, honest `crictl` for nodebake images.
//!
//! kubeadm (1.28) shells out to `crictl` for its container runtime checks:
//! `info` (is the runtime up, and which sandbox image does it use),
//! `pods -q`, `stopp`, `rmp`, `pull` and `inspecti`. Debian has no
//! cri-tools package, so images carry this instead: it speaks the real CRI
//! v1 gRPC API ([`cri`]) to containerd over its unix socket, with gRPC
//! framed by hand ([`grpc`]) on an HTTP/2 connection from the `h2` crate,
//! and prints what the real crictl prints ([`output`], [`commands`]), with
//! the same exit codes. Operators also get `images`, `ps` and `version`.
//!
//! Flags, environment and `/etc/crictl.yaml` are resolved into
//! [`settings::Settings`] the way crictl does it: flag, then environment,
//! then the config file, then the default containerd socket.

#![warn(missing_docs)]

pub mod cli;
pub mod commands;
pub mod cri;
pub mod endpoint;
pub mod grpc;
pub mod output;
pub mod settings;

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Context;

/// Runs crictl with `args` (argv, program name first) and returns its exit
/// status: 0 on success, 1 on any error (printed to stderr), like crictl.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match cli::Cli::parse_from_args(args) {
        Ok(cli) => cli,
        Err(exit) => return exit,
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crictl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the version, or resolves the settings and runs the parsed command on a single-threaded
/// tokio runtime.
fn run(cli: cli::Cli) -> anyhow::Result<()> {
    if cli.global.version {
        println!(
            "crictl version {} (nodebake-crictl)",
            env!("CARGO_PKG_VERSION")
        );
        return Ok(());
    }
    let settings = settings::Settings::resolve(&cli.global, settings::process_env)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(commands::run(&settings, cli.command))
}
