//! Waiting for the control-plane endpoint: a TLS handshake through the
//! runner (`openssl s_client`, so the agent needs no TLS stack), verified
//! against the cluster CA when the node has it. Bounded, with backoff and
//! one log line per try.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::runner::{Cmd, Outcome, Runner};

/// How long and how often to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    /// Tries before giving up (at least 1).
    pub tries: u32,
    /// Pause after the first failed try; doubled after each, up to `max`.
    pub initial: Duration,
    /// Longest pause.
    pub max: Duration,
}

impl Backoff {
    /// The pause after failed try number `n` (1-based).
    pub fn pause(&self, n: u32) -> Duration {
        let f = 1u32 << n.saturating_sub(1).min(16);
        self.initial.saturating_mul(f).min(self.max)
    }
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The handshake succeeded (and verified, when a CA was given).
    Ok,
    /// The runner does not execute commands.
    Skipped,
    /// No answer, or a certificate that does not chain to the CA.
    Failed(String),
}

/// The probe command: `timeout 10 openssl s_client` against `target`
/// (`host:port`) with SNI `server_name`; with `ca_file`, the chain must
/// verify against it (`-verify_return_error`) and name `server_name`.
pub fn probe_command(target: &str, server_name: &str, ca_file: Option<&Path>) -> Cmd {
    let mut args: Vec<String> = [
        "10",
        "openssl",
        "s_client",
        "-connect",
        target,
        "-servername",
        server_name,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(ca) = ca_file {
        args.extend([
            "-CAfile".to_string(),
            ca.display().to_string(),
            "-verify_return_error".into(),
            "-verify_hostname".into(),
            server_name.into(),
        ]);
    }
    Cmd::new("timeout", args)
}

/// One TLS handshake with the endpoint.
pub fn probe(runner: &dyn Runner, cmd: &Cmd) -> Probe {
    match runner.run(cmd) {
        Ok(Outcome::Ran(_)) => Probe::Ok,
        Ok(Outcome::Skipped) => Probe::Skipped,
        Err(e) => Probe::Failed(last_line(&e.to_string())),
    }
}

/// The last non-empty line of a failure, at most 240 characters: its end
/// (openssl's reason comes after the command line and exit status).
fn last_line(s: &str) -> String {
    let line = s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(s);
    let n = line.chars().count();
    if n <= 240 {
        return line.to_string();
    }
    let tail: String = line.chars().skip(n - 240).collect();
    format!("…{tail}")
}

/// Probes until the endpoint answers (or the runner skips), at most
/// `b.tries` times, logging each try. An error names the endpoint and the
/// last failure.
pub fn wait_for_endpoint(runner: &dyn Runner, cmd: &Cmd, what: &str, b: &Backoff) -> Result<Probe> {
    let tries = b.tries.max(1);
    let mut last = String::new();
    for n in 1..=tries {
        match probe(runner, cmd) {
            Probe::Failed(why) => {
                eprintln!("nodebake-firstboot: waiting for {what}: try {n}/{tries} failed: {why}");
                last = why;
            }
            ok => {
                eprintln!("nodebake-firstboot: {what} answers (try {n}/{tries})");
                return Ok(ok);
            }
        }
        if n < tries {
            std::thread::sleep(b.pause(n));
        }
    }
    bail!("{what} did not answer with a certificate of the cluster CA after {tries} tries; last: {last}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_keeps_its_reason_at_the_end_of_a_long_line() {
        let cmd = "`timeout 10 openssl s_client".to_string() + &" -x".repeat(150);
        let e = format!("{cmd}` failed (exit status: 1): 40E7:error:0A000126:SSL routines::unexpected eof while reading\n\n");
        let got = last_line(&e);
        assert!(got.ends_with("unexpected eof while reading"), "{got}");
        assert!(got.starts_with('…') && got.chars().count() == 241, "{got}");
        assert_eq!(last_line("a\nshort reason\n"), "short reason");
    }

    #[test]
    fn backoff_doubles_up_to_max() {
        let b = Backoff {
            tries: 10,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(5),
        };
        let p: Vec<u64> = (1..6).map(|n| b.pause(n).as_secs()).collect();
        assert_eq!(p, [1, 2, 4, 5, 5]);
    }

    #[test]
    fn probe_command_verifies_only_with_a_ca() {
        let c = probe_command("10.0.0.1:16443", "api.example", None).to_string();
        assert!(!c.contains("-verify_return_error"), "{c}");
        let c = probe_command("10.0.0.1:16443", "api.example", Some(Path::new("/ca.crt")));
        let c = c.to_string();
        assert!(c.contains("-CAfile /ca.crt -verify_return_error"), "{c}");
    }
}
