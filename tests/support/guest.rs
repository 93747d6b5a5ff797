//! QEMU guests for boot tests: a guard that kills the guest by PID when
//! dropped, serial-log reading and marker parsing, and the demo cache the
//! boot tests build from.

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The demo cache, as scripts/demo.sh finds it.
pub fn demo_cache() -> PathBuf {
    if let Some(p) = std::env::var_os("NODEBAKE_DEMO_CACHE") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    cache.join("nodebake").join("demo")
}

/// A TOML basic string (one line; newlines escaped).
pub fn toml_str(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("\"{escaped}\"")
}

/// A token unique to this run, so a marker can only come from this boot.
pub fn token() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", h.finish())
}

/// Drops ANSI escape sequences (systemd colours its status lines).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// A serial log as text, without ANSI escapes (empty if unreadable).
pub fn read_log(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_end(&mut bytes);
    }
    strip_ansi(&String::from_utf8_lossy(&bytes))
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The `key=value` fields of the complete marker line, if it was printed.
pub fn marker_fields(log: &str, marker: &str) -> Option<BTreeMap<String, String>> {
    let start = log.find(marker)?;
    let rest = &log[start + marker.len()..];
    // Only a complete line: the guest may still be writing it.
    let line = &rest[..rest.find('\n')?];
    Some(
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// The QEMU process; killed (by its PID) and reaped when dropped, so a
/// failing assertion never leaves a guest running.
pub struct Guest {
    /// The QEMU process.
    pub child: Child,
    /// The serial console, written by QEMU.
    pub serial: PathBuf,
    /// QEMU's own stdout and stderr.
    pub qemu_out: PathBuf,
}

impl Guest {
    /// Starts a headless `qemu-system-x86_64` with `mem_mib` of RAM,
    /// `-no-reboot`, no monitor, the serial console to `dir/serial.log` and
    /// QEMU's own output to `dir/qemu.out`, plus the test's `args`
    /// (machine, disks, NICs, kernel).
    pub fn start<I, S>(dir: &Path, mem_mib: u32, args: I) -> Guest
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let serial = dir.join("serial.log");
        let qemu_out = dir.join("qemu.out");
        let out = File::create(&qemu_out).expect("qemu.out");
        let child = Command::new("qemu-system-x86_64")
            .args(["-m", &mem_mib.to_string()])
            .args([
                "-nographic",
                "-no-reboot",
                "-display",
                "none",
                "-monitor",
                "none",
            ])
            .args(args)
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup qemu.out"))
            .stderr(out)
            .spawn()
            .expect("spawn qemu-system-x86_64");
        Guest {
            child,
            serial,
            qemu_out,
        }
    }

    /// Waits (bounded) for QEMU to exit after the guest powered off and
    /// returns its status; panics with the console's tail on timeout.
    pub fn wait_exit(&mut self, timeout: std::time::Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("qemu status") {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "guest did not power off within {} s\n{}",
                timeout.as_secs(),
                tail(&read_log(&self.serial), 60)
            );
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }

    /// Polls the serial console until the complete line after `marker`
    /// appears and returns its fields; panics with QEMU's output and the
    /// console's tail when QEMU exits first or `timeout` passes.
    pub fn wait_marker(
        &mut self,
        marker: &str,
        timeout: std::time::Duration,
        what: &str,
    ) -> BTreeMap<String, String> {
        let started = std::time::Instant::now();
        loop {
            let text = read_log(&self.serial);
            if let Some(f) = marker_fields(&text, marker) {
                return f;
            }
            let exited = self.child.try_wait().expect("qemu status");
            if exited.is_some() || started.elapsed() > timeout {
                let why = match exited {
                    Some(s) => format!(
                        "QEMU exited ({s}) after {:.0} s",
                        started.elapsed().as_secs_f64()
                    ),
                    None => format!("no marker within {} s", timeout.as_secs()),
                };
                panic!(
                    "{what} did not boot to {MARKER_UNIT}: {why}\nQEMU output:\n{}\nlast 60 lines of the serial console:\n{}",
                    read_log(&self.qemu_out),
                    tail(&read_log(&self.serial), 60)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The demo cache's base tarball and kernel .deb, or `None` (with a
/// SKIPPED line) when the cache is incomplete; under `CI=true` an
/// incomplete cache fails the test.
pub fn demo_inputs() -> Option<(PathBuf, PathBuf)> {
    let cache = demo_cache();
    let base = cache.join("debian-bookworm-amd64.tar.gz");
    let kernel_deb = cache.join("debs").join("kernel.deb");
    let missing: Vec<String> = [&base, &kernel_deb]
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some((base, kernel_deb));
    }
    let why = format!(
        "demo cache incomplete (missing {}): run scripts/demo.sh first",
        missing.join(", ")
    );
    if crate::in_ci() {
        panic!("{why}");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// The oneshot unit the boot tests bake; it runs the marker script once
/// multi-user.target is reached, then powers the machine off.
pub const MARKER_UNIT: &str = "nodebake-boot-marker.service";

/// A boot-test image: the demo base, (part of) the Debian cloud kernel
/// package and a marker unit.
pub struct MarkerImage<'a> {
    /// Spec `name`.
    pub name: &'a str,
    /// `[kernel] cmdline`.
    pub cmdline: &'a str,
    /// What to take out of the kernel .deb (`include` globs).
    pub kernel_include: &'a [&'a str],
    /// Shell lines run before the marker line, to print extra report
    /// lines on /dev/console.
    pub report: &'a str,
    /// Extra spec text (more `[[file]]` tables).
    pub extra: &'a str,
    /// Units to enable besides the marker.
    pub enable: &'a [&'a str],
    /// The `[outputs]` table's body.
    pub outputs: &'a str,
}

/// The spec text of a marker image, with the run's `token` in the marker.
pub fn marker_spec(base: &Path, kernel_deb: &Path, token: &str, img: &MarkerImage) -> String {
    // The script spells the marker as `NODEBAKE-BOOT-%s ... OK`, so the
    // literal marker exists only in what the script prints, never in a file
    // of the image or a line systemd echoes about the unit.
    let script = format!(
        r#"#!/bin/sh
# Reports how the system came up; the unit then powers the machine off.
{report}
firstboot=$(systemctl is-active nodebake-firstboot.service)
printf 'NODEBAKE-BOOT-%s %s pid1=%s root=%s kernel=%s firstboot=%s\n' OK {token} "$(cat /proc/1/comm)" "$(stat -f -c %T /)" "$(uname -r)" "$firstboot" >/dev/console
systemctl --failed --no-legend --no-pager >/dev/console 2>&1
exit 0
"#,
        report = img.report
    );
    // After=multi-user.target with WantedBy=multi-user.target: the marker
    // runs once the target is reached, i.e. the whole boot transaction
    // (including the baked nodebake-firstboot.service, which multi-user
    // waits for) is done. systemd drops the implicit target-after-wants
    // ordering when the unit is already ordered after the target, so there
    // is no cycle.
    let unit = r#"[Unit]
Description=nodebake boot test marker
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/nodebake-boot-marker
ExecStart=/bin/systemctl poweroff --no-block

[Install]
WantedBy=multi-user.target
"#;
    let enable = std::iter::once(MARKER_UNIT)
        .chain(img.enable.iter().copied())
        .map(toml_str)
        .collect::<Vec<_>>()
        .join(", ");
    let include = img
        .kernel_include
        .iter()
        .map(|g| toml_str(g))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"spec_version = 1
name = {name}
version = "1"
arch = "x86_64"
source_date_epoch = 1700000000

[base]
source = {base}
sha256 = {base_sha}

[kernel]
path = "/boot/vmlinuz-*"
cmdline = {cmdline}

[kubernetes]
version = "1.20.2"

[[artifact]]
name = "kernel"
kind = "deb"
source = {kernel}
sha256 = {kernel_sha}
include = [{include}]

[[file]]
path = "/usr/local/sbin/nodebake-boot-marker"
mode = "0755"
content = {script}

[[file]]
path = "/etc/systemd/system/{MARKER_UNIT}"
content = {unit}
{extra}
[systemd]
enable = [{enable}]

[outputs]
{outputs}
"#,
        name = toml_str(img.name),
        cmdline = toml_str(img.cmdline),
        base = toml_str(&base.to_string_lossy()),
        base_sha = toml_str(&crate::sha256_file(base)),
        kernel = toml_str(&kernel_deb.to_string_lossy()),
        kernel_sha = toml_str(&crate::sha256_file(kernel_deb)),
        script = toml_str(&script),
        unit = toml_str(unit),
        extra = img.extra,
        outputs = img.outputs,
    )
}
