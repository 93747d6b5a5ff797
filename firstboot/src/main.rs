//! `nodebake-firstboot`: configures a node from its metadata on first boot.
//! Run as `/init` (the builder copies it into a disk image's initramfs), it
//! is the stage-1 init instead.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    if started_as_init() {
        nodebake_firstboot::stage1::main();
    }
    match nodebake_firstboot::cli::parse_args().run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nodebake-firstboot: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether argv[0] names a file called exactly `init` (the kernel ran
/// `/init` from the initramfs).
fn started_as_init() -> bool {
    std::env::args_os()
        .next()
        .is_some_and(|arg0| Path::new(&arg0).file_name().is_some_and(|n| n == "init"))
}
