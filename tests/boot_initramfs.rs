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

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nodebake_suite as support;
use support::guest::{
    demo_inputs, marker_spec, read_log, tail, token, Guest, MarkerImage, MARKER_UNIT,
};

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

/// The spec: demo base, only the kernel image out of the kernel .deb, the
/// marker unit and its script, PXE output only. The kernel's modules would
/// add ~100 MB to the initramfs and the guest needs none of them.
fn spec_text(base: &Path, kernel_deb: &Path, token: &str) -> String {
    marker_spec(
        base,
        kernel_deb,
        token,
        &MarkerImage {
            name: "boot-test",
            cmdline: "console=ttyS0",
            kernel_include: &["boot/vmlinuz-*"],
            report: "",
            extra: "",
            enable: &[],
            outputs: "formats = [\"pxe\"]\ngzip_level = 1",
        },
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
    let Some((base, kernel_deb)) = demo_inputs() else {
        return;
    };

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
    let started = Instant::now();
    let mut guest = Guest::start(
        tmp.path(),
        GUEST_MEM_MIB,
        [
            "-machine".into(),
            "q35".into(),
            "-nic".into(),
            "none".into(),
            "-kernel".into(),
            vmlinuz.clone().into_os_string(),
            "-initrd".into(),
            initramfs.clone().into_os_string(),
            "-append".into(),
            std::ffi::OsString::from(format!("{cmdline} panic=-1")),
        ],
    );

    let marker = format!("NODEBAKE-BOOT-OK {token}");
    let fields = guest.wait_marker(&marker, BOOT_TIMEOUT, "the PXE image");
    let boot = started.elapsed();
    eprintln!(
        "boot: marker after {:.1} s (QEMU TCG, {GUEST_MEM_MIB} MiB): {fields:?}",
        boot.as_secs_f64()
    );

    let field = |k: &str| fields.get(k).map(String::as_str).unwrap_or("<missing>");
    let log = guest.serial.clone();
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
    let status = guest.wait_exit(POWEROFF_TIMEOUT);
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
