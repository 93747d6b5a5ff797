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
//! k8s-node1 has a state disk in the inventory (a virtio disk with serial
//! `nbstate`, named by its udev link), so serve's script puts
//! `nodebake.state=/dev/disk/by-id/virtio-nbstate` on the command line.
//! The first boot finds it blank and formats it; the marker starts a real
//! etcd (the host's, baked in) on /var/lib/etcd and records a boot count.
//! The machine is then booted again over the network from the same disk:
//! the disk is not formatted again, and etcd comes back as the same member
//! with the first boot's data — a rebooted PXE master keeps its member.
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
    "lib/modules/*/kernel/drivers/block/virtio_blk.ko",
];

/// The state disk as udev names it (`-device virtio-blk-pci,serial=nbstate`).
const STATE_DISK: &str = "/dev/disk/by-id/virtio-nbstate";

const DHCP_NETWORK: &str = r#"
[[file]]
path = "/etc/systemd/network/10-dhcp.network"
content = "[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n"
"#;

/// What the marker reports besides the boot line: the kernel command line
/// and what the first-boot agent made of the metadata.
const REPORT: &str = r#"printf 'NODEBAKE-CMDLINE-%s %s\n' OK "$(cat /proc/cmdline)" >/dev/console
printf 'NODEBAKE-NODE-%s hostname=%s metadata=%s hosts_block=%s\n' OK "$(hostname)" "$(/usr/lib/nodebake/bin/nodebake-firstboot status | sed -n 's/^metadata: //p' | tr ' ' '_')" "$(grep -c 'k8s-master1' /etc/hosts)" >/dev/console
/usr/lib/nodebake/bin/nodebake-firstboot status >/dev/console 2>&1
printf 'NODEBAKE-STATE-%s %s\n' OK "$(tr -d ' \n' </run/nodebake/state-disk.json 2>/dev/null || echo none)" >/dev/console
export ETCDCTL_API=3
etcd --name m1 --data-dir /var/lib/etcd --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster m1=http://127.0.0.1:2380 >/run/etcd.log 2>&1 &
etcd_pid=$!
i=0
while [ $i -lt 180 ] && ! etcdctl --dial-timeout=2s endpoint health >/dev/null 2>&1; do sleep 1; i=$((i+1)); done
member=$(etcdctl member list -w json | sed -n 's/.*"member_id":\([0-9]*\).*/\1/p')
boots=$(etcdctl get --print-value-only /nodebake/boots)
boots=${boots:-0}
etcdctl put /nodebake/boots $((boots+1)) >/dev/null
printf 'NODEBAKE-ETCD-%s member=%s boots_before=%s etcd_dev=%s state_dev=%s\n' OK "${member:-none}" "$boots" "$(stat -c %d /var/lib/etcd)" "$(stat -c %d /var/lib/nodebake-state)" >/dev/console
kill $etcd_pid; wait $etcd_pid
tail -5 /run/etcd.log >/dev/console"#;

/// The spec: demo base, the kernel with its NIC and disk modules, DHCP,
/// the host's etcd, the marker unit and its script, PXE output only.
fn spec_text(base: &Path, kernel_deb: &Path, token: &str) -> String {
    let mut extra = DHCP_NETWORK.to_string();
    for tool in ["etcd", "etcdctl"] {
        let src = format!("/usr/bin/{tool}");
        extra += &format!(
            "\n[[artifact]]\nname = \"{tool}\"\nkind = \"file\"\nsource = \"{src}\"\nsha256 = \"{}\"\ndest = \"/usr/bin/{tool}\"\nmode = \"0755\"\n",
            support::sha256_file(Path::new(&src))
        );
    }
    marker_spec(
        base,
        kernel_deb,
        token,
        &MarkerImage {
            name: "pxe-boot-test",
            cmdline: "console=ttyS0 net.ifnames=0 panic=-1",
            kernel_include: KERNEL_INCLUDE,
            report: REPORT,
            extra: &extra,
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
    if !support::require_tools(&["qemu-system-x86_64", "etcd", "etcdctl"]) {
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
    let inventory = tmp.path().join("inventory.toml");
    let text = std::fs::read_to_string(support::repo().join("examples/seed-ha-cluster.toml"))
        .expect("example inventory");
    let with_disk = text.replacen(
        "name = \"k8s-node1\"\n",
        &format!("name = \"k8s-node1\"\nstate_disk = \"{STATE_DISK}\"\n"),
        1,
    );
    assert_ne!(with_disk, text, "the example no longer names k8s-node1");
    std::fs::write(&inventory, with_disk).expect("inventory");
    support::run_ok(
        Command::new(support::bin("nodebake"))
            .args(["cluster", "init"])
            .arg(&inventory)
            .arg("--out")
            .arg(&cluster),
    );
    let disk = tmp.path().join("state.raw");
    File::create(&disk)
        .and_then(|f| f.set_len(512 << 20))
        .expect("state disk");

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

    let qemu_args = [
        "-netdev".to_string(),
        format!("user,id=n0,bootfile=http://10.0.2.2:{port}/boot.ipxe"),
        "-device".to_string(),
        format!("virtio-net-pci,netdev=n0,mac={NODE1_MAC}"),
        "-drive".to_string(),
        format!("file={},if=none,id=d0,format=raw", disk.display()),
        "-device".to_string(),
        "virtio-blk-pci,drive=d0,serial=nbstate".to_string(),
        "-boot".to_string(),
        "n".to_string(),
    ];
    let started = Instant::now();
    let mut guest = Guest::start(tmp.path(), GUEST_MEM_MIB, &qemu_args);
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
    let state = format!("nodebake.state={STATE_DISK}");
    assert!(cmdline.contains(&state), "{cmdline}");
    let first = state_report(&console, true);
    assert_eq!(guest.wait_exit(Duration::from_secs(60)).code(), Some(0));
    drop(guest);

    // The reboot: the same machine, the same disk, booted over the network
    // again with a fresh RAM root.
    let again = tmp.path().join("reboot");
    std::fs::create_dir(&again).expect("reboot dir");
    let started = Instant::now();
    let mut guest = Guest::start(&again, GUEST_MEM_MIB, &qemu_args);
    guest.wait_marker(&marker, BOOT_TIMEOUT, "the rebooted PXE guest");
    eprintln!(
        "pxe: reboot marker after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let console = read_log(&guest.serial);
    let second = state_report(&console, false);
    assert_eq!(
        second.get("member"),
        first.get("member"),
        "etcd came back as another member\n{}",
        tail(&console, 60)
    );
    assert_eq!(
        second.get("boots_before").map(String::as_str),
        Some("1"),
        "the first boot's etcd data is gone\n{}",
        tail(&console, 60)
    );
}

/// The state disk lines of one boot: the marker of `nodebake-state`
/// (formatted on the first boot only) and etcd's report, whose data
/// directory must be on the state disk. Returns etcd's fields.
fn state_report(console: &str, first_boot: bool) -> std::collections::BTreeMap<String, String> {
    let line = console
        .lines()
        .find_map(|l| l.split("NODEBAKE-STATE-OK ").nth(1))
        .unwrap_or_else(|| panic!("no state disk line:\n{}", tail(console, 60)));
    assert!(
        line.contains(&format!("\"device\":\"{STATE_DISK}\""))
            && line.contains(&format!("\"formatted\":{first_boot}")),
        "state disk marker (first boot: {first_boot}): {line}\n{}",
        tail(console, 60)
    );
    let etcd = marker_fields(console, "NODEBAKE-ETCD-OK")
        .unwrap_or_else(|| panic!("no etcd line:\n{}", tail(console, 60)));
    assert!(
        etcd.get("member")
            .is_some_and(|m| m != "none" && !m.is_empty()),
        "etcd did not answer: {etcd:?}\n{}",
        tail(console, 60)
    );
    assert_eq!(
        etcd.get("etcd_dev"),
        etcd.get("state_dev"),
        "/var/lib/etcd is not on the state disk: {etcd:?}"
    );
    if first_boot {
        assert_eq!(etcd.get("boots_before").map(String::as_str), Some("0"));
    }
    etcd
}
