//! Network boot end to end, all local: `nodebake cluster init` on the
//! seed inventory, a PXE image built from the cached demo inputs, and
//! `nodebake serve` on loopback. QEMU (TCG, SeaBIOS, user-mode networking)
//! boots the NIC's iPXE ROM with the DHCP boot file
//! `http://10.0.2.2:PORT/boot.ipxe` (10.0.2.2 is the host's loopback seen
//! from the guest) and k8s-node1's MAC; iPXE chains to
//! `/ipxe?mac=${mac:hexhyp}`, loads the kernel and the initramfs from
//! `serve` and boots systemd from RAM. The kernel command line must carry
//! k8s-node1's metadata URL
//! (`ds=nocloud-net;s=http://10.0.2.2:PORT/nodes/52-54-00-93-01-41/`);
//! udev loads the virtio NIC driver (through the module indexes the
//! builder wrote), systemd-networkd gets an address by DHCP, and the baked
//! first-boot agent fetches the node's meta-data and user-data from
//! `serve` over HTTP and configures the node from them (hostname, hosts
//! block), which a marker unit reports on the console.
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
use support::guest::{
    demo_inputs, marker_fields, marker_spec, read_log, tail, token, Guest, MarkerImage,
};

/// From QEMU's start to the marker: the iPXE download of a ~130 MiB
/// initramfs over user-mode networking under TCG, then the boot (~30 s).
const BOOT_TIMEOUT: Duration = Duration::from_secs(480);
const GUEST_MEM_MIB: u32 = 1536;
const NODE1_MAC: &str = "52:54:00:93:01:41";

/// What the guest needs to fetch its metadata over HTTP: the virtio NIC
/// driver (udev loads it through the module indexes the builder makes)
/// and DHCP from systemd-networkd, waited for by network-online.target,
/// which the first-boot unit is ordered after.
const KERNEL_INCLUDE: &[&str] = &[
    "boot/vmlinuz-*",
    "lib/modules/*/modules.order",
    "lib/modules/*/modules.builtin",
    "lib/modules/*/modules.builtin.modinfo",
    "lib/modules/*/kernel/drivers/virtio/virtio*.ko",
    "lib/modules/*/kernel/drivers/net/virtio_net.ko",
    "lib/modules/*/kernel/drivers/net/net_failover.ko",
    "lib/modules/*/kernel/net/core/failover.ko",
];

const DHCP_NETWORK: &str = r#"
[[file]]
path = "/etc/systemd/network/10-dhcp.network"
content = "[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n"
"#;

/// What the marker reports besides the boot line: the kernel command line
/// and what the first-boot agent made of the metadata.
const REPORT: &str = r#"printf 'NODEBAKE-CMDLINE-%s %s\n' OK "$(cat /proc/cmdline)" >/dev/console
printf 'NODEBAKE-NODE-%s hostname=%s metadata=%s hosts_block=%s\n' OK "$(hostname)" "$(/usr/lib/nodebake/bin/nodebake-firstboot status | sed -n 's/^metadata: //p' | tr ' ' '_')" "$(grep -c 'k8s-master1' /etc/hosts)" >/dev/console
/usr/lib/nodebake/bin/nodebake-firstboot status >/dev/console 2>&1"#;

/// The spec: demo base, the kernel with its NIC modules, DHCP, the marker
/// unit and its script, PXE output only.
fn spec_text(base: &Path, kernel_deb: &Path, token: &str) -> String {
    marker_spec(
        base,
        kernel_deb,
        token,
        &MarkerImage {
            name: "pxe-boot-test",
            cmdline: "console=ttyS0 net.ifnames=0 panic=-1",
            kernel_include: KERNEL_INCLUDE,
            report: REPORT,
            extra: DHCP_NETWORK,
            enable: &[
                "systemd-networkd.service",
                "systemd-networkd-wait-online.service",
            ],
            outputs: "formats = [\"pxe\"]\ngzip_level = 1",
        },
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
    let Some((base, kernel_deb)) = demo_inputs() else {
        return;
    };
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

    let started = Instant::now();
    let mut guest = Guest::start(
        tmp.path(),
        GUEST_MEM_MIB,
        [
            "-netdev".to_string(),
            format!("user,id=n0,bootfile=http://10.0.2.2:{port}/boot.ipxe"),
            "-device".to_string(),
            format!("virtio-net-pci,netdev=n0,mac={NODE1_MAC}"),
            "-boot".to_string(),
            "n".to_string(),
        ],
    );
    let marker = format!("NODEBAKE-BOOT-OK {token}");
    let fields = guest.wait_marker(&marker, BOOT_TIMEOUT, "the PXE guest");
    eprintln!(
        "pxe: marker after {:.1} s (QEMU TCG, iPXE over user networking): {fields:?}",
        started.elapsed().as_secs_f64()
    );
    let console = read_log(&guest.serial);
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
    // First boot fetched k8s-node1's metadata from serve over HTTP and
    // configured the node from it.
    for req in ["meta-data", "user-data"] {
        let want = format!("\"GET /nodes/52-54-00-93-01-41/{req}\" 200");
        assert!(served.contains(&want), "serve log lacks {want}:\n{served}");
    }
    let node = marker_fields(&console, "NODEBAKE-NODE-OK")
        .unwrap_or_else(|| panic!("no node report line:\n{}", tail(&console, 60)));
    assert_eq!(
        node.get("hostname").map(String::as_str),
        Some("k8s-node1"),
        "hostname not set from the HTTP metadata\n{}",
        tail(&console, 60)
    );
    let source = node.get("metadata").cloned().unwrap_or_default();
    assert!(
        source.contains(&format!("http://10.0.2.2:{port}/nodes/52-54-00-93-01-41/")),
        "first boot's metadata source is `{source}`, not serve's URL\n{}",
        tail(&console, 60)
    );
    assert_eq!(
        node.get("hosts_block").map(String::as_str),
        Some("1"),
        "/etc/hosts lacks the cluster block\n{}",
        tail(&console, 60)
    );
    drop(guest);
}
