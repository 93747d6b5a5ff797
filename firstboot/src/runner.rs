//! The one interface through which the agent touches the running system:
//! external commands and the hostname. [`SystemRunner`] acts; with
//! `--root` the agent uses [`RecordingRunner`], which executes nothing and
//! records every action as skipped, so tests run the real step code
//! against a temporary root without changing the host.

use std::fmt;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

use crate::hostnamed;

/// An external command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    /// Program name or path.
    pub program: String,
    /// Arguments. Never put secrets here: commands are logged.
    pub args: Vec<String>,
}

impl Cmd {
    /// A command from a program and its arguments.
    pub fn new<I, S>(program: &str, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for a in &self.args {
            if a.is_empty() || a.contains(char::is_whitespace) {
                write!(f, " '{a}'")?;
            } else {
                write!(f, " {a}")?;
            }
        }
        Ok(())
    }
}

/// What came of an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It ran and succeeded; the command's standard output.
    Ran(String),
    /// It was not executed (recording runner).
    Skipped,
}

/// Static and transient hostname as the running system reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostnameState {
    /// Static hostname (`/etc/hostname`).
    pub static_name: String,
    /// Transient (kernel) hostname.
    pub transient: String,
}

/// Everything that acts on, or asks, the running system.
pub trait Runner {
    /// Runs `cmd`; a non-zero exit is an error that carries its stderr.
    fn run(&self, cmd: &Cmd) -> Result<Outcome>;
    /// Sets the static and transient hostname.
    fn set_hostname(&self, name: &str) -> Result<Outcome>;
    /// The running system's hostnames; `None` when this runner does not
    /// look at the running system.
    fn query_hostname(&self) -> Result<Option<HostnameState>>;
    /// Whether this runner executes (false: records only).
    fn is_live(&self) -> bool;
    /// Actions recorded as skipped so far, in order.
    fn skipped(&self) -> Vec<String>;
}

/// Acts on the running system.
#[derive(Debug, Default)]
pub struct SystemRunner {
    /// D-Bus system bus address; `None` means `DBUS_SYSTEM_BUS_ADDRESS` or
    /// the standard socket.
    pub bus_address: Option<String>,
}

impl Runner for SystemRunner {
    fn run(&self, cmd: &Cmd) -> Result<Outcome> {
        let out = Command::new(&cmd.program)
            .args(&cmd.args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("starting `{cmd}`"))?;
        if !out.status.success() {
            bail!(
                "`{cmd}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Outcome::Ran(
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    }

    fn set_hostname(&self, name: &str) -> Result<Outcome> {
        match hostnamed::system_bus_address(self.bus_address.as_deref()) {
            Some(addr) => hostnamed::set_hostname(&addr, name)?,
            None => {
                nix::unistd::sethostname(name).context("sethostname(2)")?;
            }
        }
        Ok(Outcome::Ran(String::new()))
    }

    fn query_hostname(&self) -> Result<Option<HostnameState>> {
        match hostnamed::system_bus_address(self.bus_address.as_deref()) {
            Some(addr) => hostnamed::query(&addr).map(Some),
            None => {
                let transient = nix::unistd::gethostname()
                    .context("gethostname(2)")?
                    .to_string_lossy()
                    .into_owned();
                let static_name = std::fs::read_to_string("/etc/hostname")
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                Ok(Some(HostnameState {
                    static_name,
                    transient,
                }))
            }
        }
    }

    fn is_live(&self) -> bool {
        true
    }

    fn skipped(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Executes nothing; records every action as skipped.
#[derive(Debug, Default)]
pub struct RecordingRunner {
    log: Mutex<Vec<String>>,
}

impl RecordingRunner {
    fn record(&self, what: String) -> Result<Outcome> {
        self.log
            .lock()
            .map_err(|_| anyhow::anyhow!("recording runner poisoned"))?
            .push(what);
        Ok(Outcome::Skipped)
    }
}

impl Runner for RecordingRunner {
    fn run(&self, cmd: &Cmd) -> Result<Outcome> {
        self.record(cmd.to_string())
    }

    fn set_hostname(&self, name: &str) -> Result<Outcome> {
        self.record(format!(
            "org.freedesktop.hostname1 SetStaticHostname+SetHostname {name} (or sethostname(2))"
        ))
    }

    fn query_hostname(&self) -> Result<Option<HostnameState>> {
        Ok(None)
    }

    fn is_live(&self) -> bool {
        false
    }

    fn skipped(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_runner_executes_nothing() {
        let r = RecordingRunner::default();
        let out = r.run(&Cmd::new("/bin/sh", ["-c", "exit 1"])).unwrap();
        assert_eq!(out, Outcome::Skipped);
        r.set_hostname("x").unwrap();
        assert_eq!(r.skipped().len(), 2);
        assert_eq!(r.skipped()[0], "/bin/sh -c 'exit 1'");
        assert!(!r.is_live());
    }

    #[test]
    fn system_runner_reports_failures() {
        let r = SystemRunner::default();
        assert_eq!(
            r.run(&Cmd::new("sh", ["-c", "echo hi"])).unwrap(),
            Outcome::Ran("hi\n".into())
        );
        let e = r
            .run(&Cmd::new("sh", ["-c", "echo bad >&2; exit 3"]))
            .unwrap_err();
        assert!(e.to_string().contains("bad"), "{e}");
        assert!(r
            .run(&Cmd::new("/nonexistent/prog", Vec::<String>::new()))
            .is_err());
    }
}
