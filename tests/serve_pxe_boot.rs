//! Network boot end to end, all local: `nodebake cluster init` on the
//! seed inventory, a PXE image built from the cached demo inputs, and
//! `nodebake serve` on loopback. QEMU (TCG, SeaBIOS, user-mode networking)
//! boots the NIC's iPXE ROM with the DHCP boot file
//! `http://10.0.2.2:PORT/boot.ipxe` (10.0.2.2 is the host's loopback seen
//! from the guest) and k8s-node1's MAC; iPXE chains to
//! `/ipxe?mac=${mac:hexhyp}`, loads the kernel and the initramfs from
//! `serve` and boots systemd from RAM to a marker unit, which prints the
//! kernel command line: it must carry k8s-node1's metadata URL
//! (`ds=nocloud-net;s=http://10.0.2.2:PORT/nodes/52-54-00-93-01-41/`).
//!
//! Needs `qemu-system-x86_64` with the iPXE ROMs (Debian `ipxe-qemu`,
//! pulled in by `qemu-system-x86`), the demo cache (`scripts/demo.sh`),
//! the static `nodebake-firstboot` and a built `nodebake`. Missing pieces
//! skip the test, except under `CI=true`, where they fail it.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nodebake_suite as support;
use support::guest::{demo_cache, marker_fields, read_log, tail, token, toml_str, Guest};

/// From QEMU's start to the marker: the iPXE download of a ~130 MiB
/// initramfs over user-mode networking under TCG, then the boot (~30 s).
const BOOT_TIMEOUT: Duration = Duration::from_secs(480);
const GUEST_MEM_MIB: u32 = 1536;
const MARKER_UNIT: &str = "nodebake-boot-marker.service";
const NODE1_MAC: &str = "52:54:00:93:01:41";

/// The spec: demo base, only the kernel image out of the kernel .deb, the
/// marker unit and its script, PXE output only.
fn spec_text(base: &Path, kernel_deb: &Path, token: &str) -> String {
    // The script spells the marker as `NODEBAKE-BOOT-%s ... OK`, so the
    // literal marker exists only in what the script prints, never in a file
    // of the image or a line systemd echoes about the unit.
    let script = format!(
        r#"#!/bin/sh
# Reports how the system came up; the unit then powers the machine off.
firstboot=$(systemctl is-active nodebake-firstboot.service)
printf 'NODEBAKE-CMDLINE-%s %s\n' OK "$(cat /proc/cmdline)" >/dev/console
printf 'NODEBAKE-BOOT-%s %s pid1=%s root=%s kernel=%s firstboot=%s\n' OK {token} "$(cat /proc/1/comm)" "$(stat -f -c %T /)" "$(uname -r)" "$firstboot" >/dev/console
systemctl --failed --no-legend --no-pager >/dev/console 2>&1
exit 0
"#
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
    format!(
        r#"spec_version = 1
name = "pxe-boot-test"
version = "1"
arch = "x86_64"
source_date_epoch = 1700000000

[base]
source = {base}
sha256 = {base_sha}

[kernel]
path = "/boot/vmlinuz-*"
cmdline = "console=ttyS0 panic=-1"

[kubernetes]
version = "1.20.2"

[[artifact]]
name = "kernel"
kind = "deb"
source = {kernel}
sha256 = {kernel_sha}
# The kernel image only: the modules would add ~100 MB to the initramfs
# and the guest needs none of them.
include = ["boot/vmlinuz-*"]

[[file]]
path = "/usr/local/sbin/nodebake-boot-marker"
mode = "0755"
content = {script}

[[file]]
path = "/etc/systemd/system/{MARKER_UNIT}"
content = {unit}

[systemd]
enable = ["{MARKER_UNIT}"]

[outputs]
formats = ["pxe"]
gzip_level = 1
"#,
        base = toml_str(&base.to_string_lossy()),
        base_sha = toml_str(&support::sha256_file(base)),
        kernel = toml_str(&kernel_deb.to_string_lossy()),
        kernel_sha = toml_str(&support::sha256_file(kernel_deb)),
        script = toml_str(&script),
        unit = toml_str(unit),
    )
}

/// `nodebake serve`, killed by PID on drop.
struct Serve {
    child: Child,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ipxe_chains_to_serve_and_boots_the_initramfs_with_node_metadata_url() {
    if !support::require_tools(&["qemu-system-x86_64"]) {
        return;
    }
    let cache = demo_cache();
    let base = cache.join("debian-bookworm-amd64.tar.gz");
    let kernel_deb = cache.join("debs").join("kernel.deb");
    let missing: Vec<String> = [&base, &kernel_deb]
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        let why = format!(
            "demo cache incomplete (missing {}): run scripts/demo.sh first",
            missing.join(", ")
        );
        assert!(!support::in_ci(), "{why}");
        eprintln!("SKIPPED: {why}");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let token = token();
    let spec = tmp.path().join("pxe-boot-test.toml");
    std::fs::write(&spec, spec_text(&base, &kernel_deb, &token)).expect("write spec");
    let out = tmp.path().join("out");
    support::run_ok(
        Command::new(support::bin("nodebake"))
            .arg("build")
            .arg(&spec)
            .arg("--out")
            .arg(&out)
            .arg("--store")
            .arg(tmp.path().join("store"))
            .args(["--offline", "--no-cache", "--quiet"])
            .arg("--firstboot")
            .arg(support::static_firstboot()),
    );
    let cluster = tmp.path().join("cluster");
    support::run_ok(
        Command::new(support::bin("nodebake"))
            .args(["cluster", "init"])
            .arg(support::repo().join("examples/seed-ha-cluster.toml"))
            .arg("--out")
            .arg(&cluster),
    );

    let serve_log = tmp.path().join("serve.log");
    let mut serve = Serve {
        child: Command::new(support::bin("nodebake"))
            .arg("serve")
            .arg(&cluster)
            .arg("--image")
            .arg(&out)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(File::create(&serve_log).expect("serve.log"))
            .spawn()
            .expect("start nodebake serve"),
    };
    let mut line = String::new();
    BufReader::new(serve.child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("serve address");
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| {
            panic!(
                "serve printed no address: {line:?}\n{}",
                read_log(&serve_log)
            )
        });

    let log = tmp.path().join("serial.log");
    let qemu_out = File::create(tmp.path().join("qemu.out")).expect("qemu.out");
    let started = Instant::now();
    let mut guest = Guest {
        child: Command::new("qemu-system-x86_64")
            .args(["-m", &GUEST_MEM_MIB.to_string()])
            .args([
                "-nographic",
                "-no-reboot",
                "-display",
                "none",
                "-monitor",
                "none",
            ])
            .arg("-netdev")
            .arg(format!(
                "user,id=n0,bootfile=http://10.0.2.2:{port}/boot.ipxe"
            ))
            .arg("-device")
            .arg(format!("virtio-net-pci,netdev=n0,mac={NODE1_MAC}"))
            .args(["-boot", "n"])
            .arg("-serial")
            .arg(format!("file:{}", log.display()))
            .stdin(Stdio::null())
            .stdout(qemu_out.try_clone().expect("dup"))
            .stderr(qemu_out)
            .spawn()
            .expect("spawn qemu-system-x86_64"),
    };
    let marker = format!("NODEBAKE-BOOT-OK {token}");
    let fields = loop {
        let text = read_log(&log);
        if let Some(f) = marker_fields(&text, &marker) {
            break f;
        }
        let exited = guest.child.try_wait().expect("qemu status");
        if exited.is_some() || started.elapsed() > BOOT_TIMEOUT {
            panic!(
                "no marker ({}; {:.0} s)\nQEMU output:\n{}\nserve log:\n{}\nlast 60 console lines:\n{}",
                exited.map(|s| s.to_string()).unwrap_or_else(|| "still running".into()),
                started.elapsed().as_secs_f64(),
                read_log(&tmp.path().join("qemu.out")),
                tail(&read_log(&serve_log), 30),
                tail(&read_log(&log), 60)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!(
        "pxe: marker after {:.1} s (QEMU TCG, iPXE over user networking): {fields:?}",
        started.elapsed().as_secs_f64()
    );
    let console = read_log(&log);
    let cmdline = console
        .lines()
        .find_map(|l| l.split("NODEBAKE-CMDLINE-OK ").nth(1))
        .unwrap_or_else(|| panic!("no command line line:\n{}", tail(&console, 60)));
    let url = format!("ds=nocloud-net;s=http://10.0.2.2:{port}/nodes/52-54-00-93-01-41/");
    assert!(
        cmdline.contains(&url),
        "kernel command line lacks `{url}`: {cmdline}"
    );
    assert!(cmdline.contains("console=ttyS0"), "{cmdline}");
    assert_eq!(fields.get("pid1").map(String::as_str), Some("systemd"));
    assert!(matches!(
        fields.get("root").map(String::as_str),
        Some("tmpfs" | "ramfs")
    ));
    let served = read_log(&serve_log);
    for req in [
        "\"GET /boot.ipxe\" 200".to_string(),
        "\"GET /ipxe?mac=52-54-00-93-01-41\" 200".to_string(),
        "\"GET /image/vmlinuz\" 200".to_string(),
        "\"GET /image/initramfs.cpio.gz\" 200".to_string(),
    ] {
        assert!(served.contains(&req), "serve log lacks {req}:\n{served}");
    }
    // The agent in this minimal image (kernel without modules: no guest
    // NIC driver) cannot reach the metadata URL; report what it fetched.
    let fetched: Vec<&str> = served.lines().filter(|l| l.contains("/nodes/")).collect();
    eprintln!(
        "pxe: metadata requests from the guest: {}",
        if fetched.is_empty() {
            "none".to_string()
        } else {
            fetched.join(" | ")
        }
    );
    drop(guest);
}
