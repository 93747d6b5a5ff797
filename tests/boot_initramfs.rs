//! The PXE output boots: builds a small image from the cached demo inputs
//! (Debian 12 base + the Debian cloud kernel) with the real `nodebake`
//! binary, checks `initramfs.cpio.gz` with the real `gzip` and `cpio`, then
//! boots `vmlinuz` + `initramfs.cpio.gz` in QEMU (TCG, no KVM) the way a
//! PXE loader would: no disk, the whole root filesystem in RAM, systemd as
//! PID 1 through `/init`. A oneshot unit baked into the image, enabled
//! through `[systemd] enable`, ordered after `multi-user.target`, prints a
//! marker with a token unique to this run on the console and powers the
//! machine off.
//!
//! Needs `qemu-system-x86_64`, `cpio` and `gzip`, the demo cache filled by
//! `scripts/demo.sh` (`$NODEBAKE_DEMO_CACHE`, default
//! `~/.cache/nodebake/demo`), the static `nodebake-firstboot`
//! (scripts/build-firstboot-static.sh) and a built `nodebake`
//! (`cargo test --workspace`, or `cargo build -p nodebake`). Missing tools
//! or cache skip the test with a message, except under `CI=true`, where
//! they are failures.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nodebake_suite as support;
use support::guest::{demo_cache, marker_fields, read_log, tail, token, toml_str, Guest};

/// How long the guest may take from QEMU's start to the marker. Under TCG
/// on two cores the demo base boots in about 30 s; the rest is headroom
/// for a loaded machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
/// How long the guest may take from the marker to powering off.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(120);
/// Guest RAM: the kernel keeps the compressed initramfs (~130 MiB at
/// gzip level 1) while it unpacks ~270 MiB into the root tmpfs, which may
/// take half of RAM.
const GUEST_MEM_MIB: u32 = 1536;

const MARKER_UNIT: &str = "nodebake-boot-marker.service";

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
name = "boot-test"
version = "1"
arch = "x86_64"
source_date_epoch = 1700000000

[base]
source = {base}
sha256 = {base_sha}

[kernel]
path = "/boot/vmlinuz-*"
cmdline = "console=ttyS0"

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

/// `gzip -dc FILE | cpio -itv -H newc`: the verbose listing, checking that
/// both tools succeed.
fn cpio_listing(initramfs: &Path) -> String {
    let mut gz = Command::new("gzip")
        .arg("-dc")
        .arg(initramfs)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn gzip");
    let out = Command::new("cpio")
        .args(["-itv", "--quiet", "-H", "newc"])
        .stdin(gz.stdout.take().expect("gzip stdout"))
        .output()
        .expect("run cpio");
    let gz_status = gz.wait().expect("wait gzip");
    assert!(gz_status.success(), "gzip -dc {initramfs:?}: {gz_status}");
    assert!(
        out.status.success(),
        "cpio -t on {initramfs:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("cpio listing is UTF-8")
}

#[test]
fn pxe_initramfs_boots_systemd_to_multi_user() {
    if !support::require_tools(&["qemu-system-x86_64", "cpio", "gzip"]) {
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
        if support::in_ci() {
            panic!("{why}");
        }
        eprintln!("SKIPPED: {why}");
        return;
    }

    let tmp = tempfile::tempdir().expect("tempdir");
    let token = token();
    let spec = tmp.path().join("boot-test.toml");
    std::fs::write(&spec, spec_text(&base, &kernel_deb, &token)).expect("write spec");

    // 1. Build with the real binary, baking the real static first-boot
    //    agent. Its unit (WantedBy=multi-user.target, so multi-user waits
    //    for it) finds no metadata in this guest and fails within a
    //    second; a failed Wants= dependency does not hold the target back.
    //    A private store keeps the build cache of these one-off outputs out
    //    of the user's store.
    let out = tmp.path().join("out");
    let started = Instant::now();
    support::run_ok(
        Command::new(support::bin("nodebake"))
            .arg("build")
            .arg(&spec)
            .arg("--out")
            .arg(&out)
            .arg("--store")
            .arg(tmp.path().join("store"))
            .arg("--offline")
            .arg("--no-cache")
            .arg("--firstboot")
            .arg(support::static_firstboot()),
    );
    eprintln!("build: {:.1} s", started.elapsed().as_secs_f64());
    let vmlinuz = out.join("vmlinuz");
    let initramfs = out.join("initramfs.cpio.gz");
    for p in [&vmlinuz, &initramfs, &out.join("manifest.json")] {
        assert!(p.is_file(), "build wrote no {}", p.display());
    }
    assert!(
        !out.join("rootfs.tar.gz").exists(),
        "formats = [\"pxe\"] but a rootfs archive was written"
    );

    // 2. The initramfs as the real tools read it.
    let listing = cpio_listing(&initramfs);
    let has = |pred: &dyn Fn(&str) -> bool, what: &str| {
        assert!(
            listing.lines().any(pred),
            "initramfs has no {what}; listing starts:\n{}",
            listing.lines().take(40).collect::<Vec<_>>().join("\n")
        );
    };
    has(
        &|l: &str| l.starts_with('l') && l.ends_with(" init -> /sbin/init"),
        "/init -> /sbin/init",
    );
    has(
        &|l: &str| l.starts_with('c') && l.ends_with(" dev/console"),
        "char device /dev/console",
    );
    has(
        &|l: &str| l.starts_with('-') && l.ends_with(" usr/lib/systemd/systemd"),
        "usr/lib/systemd/systemd",
    );
    has(
        &|l: &str| l.ends_with(" usr/lib/nodebake/bin/nodebake-firstboot"),
        "baked nodebake-firstboot",
    );
    has(
        &|l: &str| {
            l.starts_with('l')
                && l.ends_with(&format!(
                    " etc/systemd/system/multi-user.target.wants/{MARKER_UNIT} -> /etc/systemd/system/{MARKER_UNIT}"
                ))
        },
        "multi-user.target.wants link for the marker unit",
    );

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).expect("manifest"))
            .expect("manifest.json is JSON");
    let kernel_path = manifest["kernel"]["path"]
        .as_str()
        .expect("manifest kernel.path");
    let kernel_release = kernel_path
        .strip_prefix("/boot/vmlinuz-")
        .unwrap_or_else(|| panic!("kernel.path `{kernel_path}` is not /boot/vmlinuz-*"));
    let cmdline = manifest["kernel"]["cmdline"]
        .as_str()
        .expect("manifest kernel.cmdline");

    // 3. Boot it. The recorded command line is what a PXE config would
    //    pass; panic=-1 with -no-reboot turns a kernel panic into an
    //    immediate QEMU exit instead of a timeout.
    let log = tmp.path().join("serial.log");
    let qemu_out = File::create(tmp.path().join("qemu.out")).expect("qemu.out");
    let started = Instant::now();
    let mut guest = Guest {
        child: Command::new("qemu-system-x86_64")
            .args(["-machine", "q35", "-m", &GUEST_MEM_MIB.to_string()])
            .args([
                "-nographic",
                "-no-reboot",
                "-display",
                "none",
                "-monitor",
                "none",
            ])
            .args(["-nic", "none"])
            .arg("-kernel")
            .arg(&vmlinuz)
            .arg("-initrd")
            .arg(&initramfs)
            .arg("-append")
            .arg(format!("{cmdline} panic=-1"))
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
            let why = match exited {
                Some(s) => format!(
                    "QEMU exited ({s}) after {:.0} s",
                    started.elapsed().as_secs_f64()
                ),
                None => format!("no marker within {} s", BOOT_TIMEOUT.as_secs()),
            };
            panic!(
                "the PXE image did not boot to {MARKER_UNIT}: {why}\nQEMU output:\n{}\nlast 60 lines of the serial console:\n{}",
                read_log(&tmp.path().join("qemu.out")),
                tail(&read_log(&log), 60)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let boot = started.elapsed();
    eprintln!(
        "boot: marker after {:.1} s (QEMU TCG, {GUEST_MEM_MIB} MiB): {fields:?}",
        boot.as_secs_f64()
    );

    let field = |k: &str| fields.get(k).map(String::as_str).unwrap_or("<missing>");
    let console = || tail(&read_log(&log), 60);
    assert_eq!(
        field("pid1"),
        "systemd",
        "PID 1 is not systemd\n{}",
        console()
    );
    assert!(
        matches!(field("root"), "tmpfs" | "ramfs"),
        "root filesystem is {}, not the initramfs\n{}",
        field("root"),
        console()
    );
    assert_eq!(
        field("kernel"),
        kernel_release,
        "booted kernel is not the one the manifest records\n{}",
        console()
    );
    // The baked agent was enabled and ran (no metadata here, so it failed;
    // `inactive` would mean it never started).
    assert!(
        matches!(field("firstboot"), "failed" | "active"),
        "nodebake-firstboot.service is {} after multi-user.target\n{}",
        field("firstboot"),
        console()
    );

    // The unit's `systemctl poweroff` must bring the guest down cleanly.
    let deadline = Instant::now() + POWEROFF_TIMEOUT;
    let status = loop {
        if let Some(s) = guest.child.try_wait().expect("qemu status") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "guest did not power off within {} s of the marker\n{}",
            POWEROFF_TIMEOUT.as_secs(),
            console()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        status.success(),
        "QEMU exited with {status} after poweroff\n{}",
        console()
    );
    let text = read_log(&log);
    assert!(
        text.contains("reboot: Power down"),
        "QEMU exited without the kernel powering down\n{}",
        tail(&text, 60)
    );
    eprintln!(
        "poweroff: QEMU exited {:.1} s after start",
        started.elapsed().as_secs_f64()
    );
}
