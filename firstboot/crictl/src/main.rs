//! `crictl`: a small CRI v1 client for the container runtime of a node
//! image (see the library crate, `nodebake_crictl`).

use std::process::ExitCode;

fn main() -> ExitCode {
    restore_default_sigpipe();
    nodebake_crictl::main(std::env::args_os())
}

/// Lets a closed pipe end the process quietly (`crictl images | head`),
/// as it ends the Go crictl, instead of making `println!` panic.
fn restore_default_sigpipe() {
    extern "C" {
        fn signal(signum: i32, handler: usize) -> usize;
    }
    const SIGPIPE: i32 = 13;
    const SIG_DFL: usize = 0;
    // SAFETY: signal(2) with SIG_DFL only resets the disposition of
    // SIGPIPE; it runs first in main, before any other thread exists.
    unsafe {
        signal(SIGPIPE, SIG_DFL);
    }
}
