//! The state disk of a PXE node, on real block devices (loop devices) with
//! a real etcd: `nodebake-firstboot state-disk` formats a blank disk once,
//! serves /etc/kubernetes, /var/lib/etcd and /var/lib/kubelet from it, and
//! after a "reboot" (every mount gone, the RAM root rebuilt from the image)
//! finds it again without formatting: etcd comes back as the same member
//! with its data. Disks that hold something else are refused untouched.
//! The agent's first step refuses to go on without the disk its metadata
//! names, and kubeadm init refuses to run over etcd data.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{require, require_root, text, ChildGuard};

const BIN: &str = env!("CARGO_BIN_EXE_nodebake-firstboot");

/// A loop device over a sparse file; detached (after unmounting whatever
/// is mounted from it under `root`) when dropped.
struct Loop {
    dev: String,
    root: PathBuf,
}

impl Loop {
    fn new(dir: &Path, name: &str, root: &Path) -> Self {
        let img = dir.join(name);
        let f = std::fs::File::create(&img).unwrap();
        // etcd preallocates a 64 MiB WAL file.
        f.set_len(256 << 20).unwrap();
        let o = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(o.status.success(), "losetup: {}", text(&o));
        Loop {
            dev: String::from_utf8_lossy(&o.stdout).trim().to_string(),
            root: root.to_path_buf(),
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        unmount_all(&self.root);
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// Mount points at or under `root`, deepest first.
fn mounts_under(root: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = root.display().to_string();
    let mut v: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| m.replace("\\040", " "))
        .filter(|m| m == &root || m.starts_with(&format!("{root}/")))
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.len()));
    v
}

/// A power cut as the root sees it: every mount under it gone.
fn unmount_all(root: &Path) {
    for m in mounts_under(root) {
        let _ = Command::new("umount").arg("-l").arg(&m).status();
    }
}

/// The RAM root as the image has it: kubeadm's directory with baked
/// content, nothing else.
fn fresh_root(root: &Path) {
    if root.exists() {
        std::fs::remove_dir_all(root).unwrap();
    }
    std::fs::create_dir_all(root.join("etc/kubernetes/manifests")).unwrap();
    std::fs::write(root.join("etc/kubernetes/baked.txt"), "from the image\n").unwrap();
    std::fs::create_dir_all(root.join("var/lib")).unwrap();
}

fn state_disk(root: &Path, dev: &str) -> std::process::Output {
    Command::new(BIN)
        .args(["state-disk", "--root"])
        .arg(root)
        .args(["--device", dev, "--wait-s", "5"])
        .output()
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Etcd {
    _child: ChildGuard,
    client: String,
}

fn start_etcd(data: &Path, client: u16, peer: u16, log: &Path) -> Etcd {
    let c = format!("http://127.0.0.1:{client}");
    let p = format!("http://127.0.0.1:{peer}");
    let log_path = log.to_path_buf();
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new("etcd")
        .arg("--name=m1")
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--listen-client-urls={c}"))
        .arg(format!("--advertise-client-urls={c}"))
        .arg(format!("--listen-peer-urls={p}"))
        .arg(format!("--initial-advertise-peer-urls={p}"))
        .arg(format!("--initial-cluster=m1={p}"))
        .arg("--initial-cluster-state=new")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let e = Etcd {
        _child: ChildGuard::new(child),
        client: c,
    };
    let start = Instant::now();
    while etcdctl(&e, &["endpoint", "health"]).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "etcd on {data:?} never became healthy: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    e
}

fn etcdctl(e: &Etcd, args: &[&str]) -> Result<String, String> {
    let o = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", e.client))
        .arg("--dial-timeout=2s")
        .arg("--command-timeout=5s")
        .args(args)
        .output()
        .unwrap();
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(text(&o))
    }
}

/// The member id and the cluster id etcd reports.
fn ids(e: &Etcd) -> (u64, u64) {
    let j: serde_json::Value =
        serde_json::from_str(&etcdctl(e, &["member", "list", "-w", "json"]).unwrap()).unwrap();
    (
        j["header"]["member_id"].as_u64().unwrap(),
        j["header"]["cluster_id"].as_u64().unwrap(),
    )
}

#[test]
fn a_blank_disk_is_formatted_once_and_etcd_comes_back_as_the_same_member() {
    if !require_root("state_disk")
        || !require(
            "state_disk",
            &["losetup", "mkfs.ext4", "blkid", "etcd", "etcdctl", "umount"],
        )
    {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fresh_root(&root);
    let disk = Loop::new(t.path(), "state.img", &root);

    // First boot: blank, so formatted; the image's content seeds the disk.
    let o = state_disk(&root, &disk.dev);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("formatted and mounted"),
        "{}",
        text(&o)
    );
    let b = Command::new("blkid")
        .args(["-p", "-o", "export", &disk.dev])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&b.stdout).contains("LABEL=nodebake-state"),
        "{}",
        text(&b)
    );
    let mp = root.join("var/lib/nodebake-state");
    let disk_dev = std::fs::metadata(&mp).unwrap().dev();
    for d in ["etc/kubernetes", "var/lib/etcd", "var/lib/kubelet"] {
        assert_eq!(
            std::fs::metadata(root.join(d)).unwrap().dev(),
            disk_dev,
            "{d} is served from the state disk"
        );
    }
    assert_eq!(
        std::fs::read_to_string(root.join("etc/kubernetes/baked.txt")).unwrap(),
        "from the image\n"
    );
    assert!(root.join("etc/kubernetes/manifests").is_dir());
    assert_eq!(
        std::fs::metadata(root.join("var/lib/etcd"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let marker: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("run/nodebake/state-disk.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(marker["device"], disk.dev.as_str());
    assert_eq!(marker["formatted"], true);

    // Run again in the same boot: nothing formatted, nothing mounted twice.
    let before = mounts_under(&root).len();
    let o = state_disk(&root, &disk.dev);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("formatted"));
    assert_eq!(
        mounts_under(&root).len(),
        before,
        "{:?}",
        mounts_under(&root)
    );

    // etcd writes its member into /var/lib/etcd.
    let (client, peer) = (free_port(), free_port());
    let etcd = start_etcd(
        &root.join("var/lib/etcd"),
        client,
        peer,
        &t.path().join("etcd1.log"),
    );
    let first = ids(&etcd);
    etcdctl(&etcd, &["put", "/registry/nodebake", "survives"]).unwrap();
    std::fs::write(root.join("etc/kubernetes/admin.conf"), "kubeadm's\n").unwrap();
    drop(etcd);

    // Power loss: mounts gone, RAM root rebuilt from the image.
    unmount_all(&root);
    fresh_root(&root);
    assert!(!root.join("var/lib/etcd/member").exists());
    let o = state_disk(&root, &disk.dev);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("mounted") && !out.contains("formatted"),
        "{}",
        text(&o)
    );
    assert!(root.join("var/lib/etcd/member").is_dir());
    assert_eq!(
        std::fs::read_to_string(root.join("etc/kubernetes/admin.conf")).unwrap(),
        "kubeadm's\n"
    );
    let etcd = start_etcd(
        &root.join("var/lib/etcd"),
        client,
        peer,
        &t.path().join("etcd2.log"),
    );
    assert_eq!(ids(&etcd), first, "the same member of the same cluster");
    let got = etcdctl(&etcd, &["get", "--print-value-only", "/registry/nodebake"]).unwrap();
    assert_eq!(got.trim(), "survives");
}

#[test]
fn a_disk_holding_anything_else_is_refused_untouched() {
    if !require_root("state_disk_foreign")
        || !require(
            "state_disk_foreign",
            &["losetup", "mkfs.ext4", "mkfs.vfat", "blkid", "sha256sum"],
        )
    {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fresh_root(&root);
    for (name, mkfs, want) in [
        (
            "ext4.img",
            vec!["mkfs.ext4", "-q", "-L", "data"],
            "labelled `data`",
        ),
        ("vfat.img", vec!["mkfs.vfat", "-n", "BOOT"], "TYPE=vfat"),
    ] {
        let disk = Loop::new(t.path(), name, &root);
        let o = Command::new(mkfs[0])
            .args(&mkfs[1..])
            .arg(&disk.dev)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let sum = |d: &str| {
            let o = Command::new("sha256sum").arg(d).output().unwrap();
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        let before = sum(&disk.dev);
        let o = state_disk(&root, &disk.dev);
        assert!(!o.status.success(), "{name}: accepted: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&disk.dev) && err.contains(want) && err.contains("refusing to format"),
            "{name}: {err}"
        );
        assert_eq!(sum(&disk.dev), before, "{name}: the disk was changed");
        assert!(mounts_under(&root).is_empty(), "{:?}", mounts_under(&root));
    }

    // Not a device at all, and a device that never appears.
    let o = state_disk(&root, "/dev/nodebake-no-such-disk");
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("did not appear within 5 s"),
        "{}",
        text(&o)
    );
    let o = state_disk(&root, "relative/vdb");
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a device path"),
        "{}",
        text(&o)
    );
}

/// k8s-master1's fixture metadata in `dir`, with `extra` appended to its
/// `nodebake` settings.
fn metadata(dir: &Path, extra: &str) -> String {
    let src = common::fixture("k8s-master1");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(src.join("meta-data"), dir.join("meta-data")).unwrap();
    let mut ud = std::fs::read_to_string(src.join("user-data")).unwrap();
    ud += extra;
    std::fs::write(dir.join("user-data"), ud).unwrap();
    dir.display().to_string()
}

#[test]
fn the_agent_stops_without_its_state_disk_and_never_runs_kubeadm_over_etcd_data() {
    use nodebake_firstboot::agent::{self, RunOptions};
    use nodebake_firstboot::root::Root;
    use nodebake_firstboot::runner::{RecordingRunner, Runner};

    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let md = metadata(&t.path().join("md"), "  state_disk: /dev/vdb\n");
    let opts = || {
        let mut o = RunOptions::new(Root::new(&root));
        o.metadata = Some(md.clone());
        o
    };

    // The metadata names a state disk nobody mounted: the first step
    // stops the run, before any change to the node.
    let runner = RecordingRunner::default();
    let err = format!("{:#}", agent::run(&opts(), &runner).unwrap_err());
    assert!(
        err.contains("step state-disk") && err.contains("state disk /dev/vdb is not mounted"),
        "{err}"
    );
    assert!(runner.skipped().is_empty(), "{:?}", runner.skipped());
    assert!(
        !root.join("etc").exists(),
        "nothing written before the disk"
    );

    // Mounted, but another disk than the metadata says.
    let put_marker = |dev: &str| {
        std::fs::create_dir_all(root.join("run/nodebake")).unwrap();
        std::fs::write(
            root.join("run/nodebake/state-disk.json"),
            format!(
                r#"{{"device":"{dev}","formatted":false,"directories":["/etc/kubernetes","/var/lib/etcd","/var/lib/kubelet"]}}"#
            ),
        )
        .unwrap();
    };
    put_marker("/dev/vdc");
    let err = format!(
        "{:#}",
        agent::run(&opts(), &RecordingRunner::default()).unwrap_err()
    );
    assert!(
        err.contains("/dev/vdc is mounted") && err.contains("state_disk is /dev/vdb"),
        "{err}"
    );

    // The right disk, holding etcd's data but not kubeadm's files (lost,
    // or restored by hand): the agent prepares the host but refuses
    // kubeadm init — a second cluster, and the reset between attempts
    // would delete the data.
    put_marker("/dev/vdb");
    std::fs::create_dir_all(root.join("var/lib/etcd/member/snap")).unwrap();
    std::fs::write(root.join("var/lib/etcd/member/snap/db"), "etcd data").unwrap();
    let runner = RecordingRunner::default();
    let err = format!("{:#}", agent::run(&opts(), &runner).unwrap_err());
    assert!(
        err.contains("step kubeadm-init")
            && err.contains("/var/lib/etcd/member holds an etcd member's data"),
        "{err}"
    );
    assert!(
        !runner.skipped().iter().any(|c| c.starts_with("kubeadm ")),
        "no kubeadm command ran: {:?}",
        runner.skipped()
    );
    assert_eq!(
        std::fs::read_to_string(root.join("var/lib/etcd/member/snap/db")).unwrap(),
        "etcd data"
    );
}
