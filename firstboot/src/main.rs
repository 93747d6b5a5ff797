//! `nodebake-firstboot`: configures a node from its metadata on first boot.

use std::process::ExitCode;

fn main() -> ExitCode {
    match nodebake_firstboot::cli::parse_args().run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nodebake-firstboot: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
