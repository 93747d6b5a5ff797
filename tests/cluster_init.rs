//! `nodebake cluster init` on the seed's inventory: the secrets bundle
//! (modes, openssl-verified CAs, token format, discovery hash against
//! openssl's), per-node NoCloud documents parsed by the contract, no private
//! key in any worker file, seeds listed by isoinfo/xorriso and read back by
//! the first-boot agent, idempotent re-runs, scale-out with the same
//! secrets, --rotate and named validation errors.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nodebake_contract::node::NodeConfig;
use nodebake_contract::profile::Role;
use nodebake_suite::{bin, repo, require_tools, run, run_ok};
use sha2::{Digest, Sha256};

const NODES: [&str; 6] = [
    "k8s-master1",
    "k8s-master2",
    "k8s-master3",
    "k8s-node1",
    "k8s-node2",
    "k8s-node3",
];

fn example() -> PathBuf {
    repo().join("examples/seed-ha-cluster.toml")
}

fn init(inventory: &Path, out: &Path, extra: &[&str]) -> String {
    run_ok(
        Command::new(bin("nodebake"))
            .args(["cluster", "init"])
            .arg(inventory)
            .arg("--out")
            .arg(out)
            .args(extra),
    )
}

/// `cluster init INVENTORY --out OUT`, whatever its outcome.
fn try_init(inventory: &Path, out: &Path) -> std::process::Output {
    run(Command::new(bin("nodebake"))
        .args(["cluster", "init"])
        .arg(inventory)
        .arg("--out")
        .arg(out))
}

/// The hash printed on stdout (`ca-cert-hash: sha256:...`).
fn printed_hash(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("ca-cert-hash: "))
        .expect("ca-cert-hash line")
        .to_string()
}

/// sha256 over every path, mode and content under `dir`, sorted.
fn tree_hash(dir: &Path) -> String {
    fn walk(base: &Path, d: &Path, out: &mut Vec<(String, u32, Vec<u8>)>) {
        let mut entries: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let mode = meta.permissions().mode();
            if meta.is_dir() {
                out.push((rel, mode, Vec::new()));
                walk(base, &p, out);
            } else {
                out.push((rel, mode, std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut all = Vec::new();
    walk(dir, dir, &mut all);
    let mut h = Sha256::new();
    for (p, m, c) in all {
        h.update(format!("{p}\0{m:o}\0{}\0", c.len()));
        h.update(c);
    }
    hex::encode(h.finalize())
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn init_writes_secrets_and_role_scoped_nodes_and_reruns_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cluster");
    let first = init(&example(), &out, &[]);

    let secrets = out.join("secrets");
    assert_eq!(mode(&secrets), 0o700);
    let mut files = 0;
    for e in std::fs::read_dir(&secrets).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
        files += 1;
    }
    assert_eq!(files, 12);

    let token = std::fs::read_to_string(secrets.join("bootstrap-token")).unwrap();
    let token = token.trim();
    let (a, b) = token.split_once('.').expect("token has a dot");
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    };
    assert!(
        ok(a, 6) && ok(b, 16),
        "token is not [a-z0-9]{{6}}.[a-z0-9]{{16}}"
    );
    let ck = std::fs::read_to_string(secrets.join("certificate-key")).unwrap();
    assert!(ck.trim().len() == 64 && ck.trim().chars().all(|c| c.is_ascii_hexdigit()));
    // The printed hash is the stored one and no secret value is printed.
    assert_eq!(
        printed_hash(&first),
        std::fs::read_to_string(secrets.join("ca-cert-hash"))
            .unwrap()
            .trim()
    );
    assert!(!first.contains(token));

    for name in NODES {
        let dir = out.join("nodes").join(name);
        assert_eq!(mode(&dir), 0o700);
        for f in ["meta-data", "user-data", "seed.iso"] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{name}/{f}");
        }
        let meta = std::fs::read_to_string(dir.join("meta-data")).unwrap();
        let user = std::fs::read_to_string(dir.join("user-data")).unwrap();
        let cfg = NodeConfig::from_nocloud(&meta, &user)
            .unwrap_or_else(|e| panic!("{name}: the contract refuses its metadata: {e}"));
        assert_eq!(cfg.hostname, name);
        assert_eq!(cfg.initialiser, "k8s-master1");
        assert_eq!(cfg.endpoint.vip.to_string(), "192.168.147.154");
        assert_eq!(cfg.endpoint.port, 16443);
        assert_eq!(cfg.endpoint.dns_name, "master.k8s.io");
        assert_eq!(cfg.pod_cidr.to_string(), "10.244.0.0/16");
        assert_eq!(cfg.service_cidr.to_string(), "10.1.0.0/16");
        assert_eq!(cfg.kubernetes_version.to_string(), "1.20.0");
        assert_eq!(cfg.masters.len(), 3);
        assert_eq!(cfg.workers.len(), 3);
        assert_eq!(cfg.secrets.bootstrap_token.expose(), token);
        assert_eq!(
            cfg.secrets.ca_cert_hash.as_deref(),
            Some(printed_hash(&first).as_str())
        );
        let worker = name.starts_with("k8s-node");
        assert_eq!(cfg.role, if worker { Role::Worker } else { Role::Master });
        if worker {
            assert!(cfg.secrets.ca.is_none() && cfg.secrets.certificate_key.is_none());
            assert!(cfg.secrets.vrrp_password.is_none());
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                let bytes = std::fs::read(&p).unwrap();
                for needle in [
                    &b"PRIVATE KEY"[..],
                    b"ca_key",
                    b"sa_key",
                    b"certificate_key",
                ] {
                    assert!(
                        !contains(&bytes, needle),
                        "{} holds {:?}",
                        p.display(),
                        String::from_utf8_lossy(needle)
                    );
                }
            }
        } else {
            let ca = cfg
                .secrets
                .ca
                .as_ref()
                .expect("masters get the CA material");
            assert_eq!(
                ca.ca_crt,
                std::fs::read_to_string(secrets.join("ca.crt")).unwrap()
            );
            assert!(cfg.secrets.certificate_key.is_some() && cfg.secrets.vrrp_password.is_some());
        }
    }

    let before = tree_hash(&out);
    let second = init(&example(), &out, &[]);
    assert_eq!(tree_hash(&out), before, "a re-run changed the output");
    assert_eq!(second, first);
}

#[test]
fn cas_verify_and_the_hash_equals_openssls() {
    if !require_tools(&["openssl", "sh", "sha256sum"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c");
    let stdout = init(&example(), &out, &[]);
    let s = out.join("secrets");
    for (crt, cn) in [
        ("ca.crt", "kubernetes"),
        ("front-proxy-ca.crt", "front-proxy-ca"),
        ("etcd-ca.crt", "etcd-ca"),
    ] {
        let p = s.join(crt);
        let v = run_ok(
            Command::new("openssl")
                .arg("verify")
                .arg("-CAfile")
                .arg(&p)
                .arg(&p),
        );
        assert!(v.contains(": OK"), "{v}");
        let text = run_ok(
            Command::new("openssl")
                .args(["x509", "-noout", "-text", "-in"])
                .arg(&p),
        );
        assert!(text.contains("CA:TRUE"), "{crt}: {text}");
        assert!(text.contains("Certificate Sign"), "{crt}: {text}");
        assert!(
            text.contains(&format!("CN = {cn}")) || text.contains(&format!("CN={cn}")),
            "{text}"
        );
        // The key matches the certificate.
        let key = s.join(crt.replace(".crt", ".key"));
        let from_key = run_ok(
            Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(&key),
        );
        let from_crt = run_ok(
            Command::new("openssl")
                .args(["x509", "-pubkey", "-noout", "-in"])
                .arg(&p),
        );
        assert_eq!(from_key, from_crt, "{crt} and its key differ");
    }
    let sa_pub = run_ok(
        Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(s.join("sa.key")),
    );
    assert_eq!(sa_pub, std::fs::read_to_string(s.join("sa.pub")).unwrap());
    let openssl = run_ok(Command::new("sh").arg("-c").arg(format!(
        "openssl x509 -pubkey -noout -in '{}' | openssl pkey -pubin -outform der | sha256sum",
        s.join("ca.crt").display()
    )));
    let want = format!("sha256:{}", openssl.split_whitespace().next().unwrap());
    assert_eq!(printed_hash(&stdout), want);
}

#[test]
fn seeds_are_cidata_isos_the_agent_reads() {
    if !require_tools(&["isoinfo", "xorriso"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c");
    init(&example(), &out, &[]);
    for name in NODES {
        let dir = out.join("nodes").join(name);
        let iso = dir.join("seed.iso");
        let d = run_ok(Command::new("isoinfo").arg("-d").arg("-i").arg(&iso));
        assert!(d.contains("Volume id: cidata"), "{d}");
        let l = run_ok(Command::new("isoinfo").args(["-l", "-J", "-i"]).arg(&iso));
        for f in ["meta-data", "user-data", "network-config"] {
            assert!(l.contains(f), "{name}: isoinfo -l -J lacks {f}: {l}");
            let x = run_ok(
                Command::new("isoinfo")
                    .args(["-J", "-i"])
                    .arg(&iso)
                    .arg("-x")
                    .arg(format!("/{f}")),
            );
            assert_eq!(
                x,
                std::fs::read_to_string(dir.join(f)).unwrap(),
                "{name}/{f}"
            );
        }
        let o = run(Command::new("xorriso").arg("-indev").arg(&iso).arg("-ls"));
        assert!(o.status.success());
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            all.contains("'meta-data'") && all.contains("'user-data'"),
            "{all}"
        );
        assert!(all.contains("Volume id    : 'cidata'"), "{all}");
    }
    // The first-boot agent reads the seed image and plans the node.
    let fb = nodebake_suite::target_dir().join("nodebake-firstboot");
    if !fb.is_file() {
        assert!(
            !nodebake_suite::in_ci(),
            "{} not built: cargo build -p nodebake-firstboot",
            fb.display()
        );
        eprintln!("SKIPPED agent read-back: {} not built", fb.display());
        return;
    }
    for name in ["k8s-master1", "k8s-node1"] {
        let root = tempfile::tempdir().unwrap();
        let plan = run_ok(
            Command::new(&fb)
                .arg("plan")
                .arg("--root")
                .arg(root.path())
                .arg("--metadata")
                .arg(out.join("nodes").join(name).join("seed.iso")),
        );
        assert!(
            plan.contains(name),
            "{name}: plan does not name the node:\n{plan}"
        );
        let plan_dir = run_ok(
            Command::new(&fb)
                .arg("plan")
                .arg("--root")
                .arg(root.path())
                .arg("--metadata")
                .arg(out.join("nodes").join(name)),
        );
        let body = |p: &str| -> String {
            p.lines()
                .filter(|l| !l.starts_with("metadata:"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert!(plan.contains("label cidata"), "{plan}");
        assert_eq!(
            body(&plan),
            body(&plan_dir),
            "seed and directory give different plans"
        );
    }
}

fn secrets_hash(out: &Path) -> String {
    tree_hash(&out.join("secrets"))
}

#[test]
fn scale_out_keeps_the_secrets_and_rotate_replaces_them() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c");
    let first = init(&example(), &out, &[]);
    let before = secrets_hash(&out);
    let bigger = tmp.path().join("bigger.toml");
    let mut text = std::fs::read_to_string(example()).unwrap();
    text.push_str(
        "\n[[machines]]\nname = \"k8s-node4\"\nrole = \"worker\"\nip = \"192.168.147.144\"\nmac = \"52:54:00:93:01:44\"\n",
    );
    std::fs::write(&bigger, text).unwrap();
    let second = init(&bigger, &out, &[]);
    assert_eq!(printed_hash(&first), printed_hash(&second));
    assert_eq!(secrets_hash(&out), before, "scale-out changed the secrets");
    let meta = std::fs::read_to_string(out.join("nodes/k8s-node4/meta-data")).unwrap();
    let user = std::fs::read_to_string(out.join("nodes/k8s-node4/user-data")).unwrap();
    let cfg = NodeConfig::from_nocloud(&meta, &user).unwrap();
    assert_eq!(cfg.workers.len(), 4);
    let token = std::fs::read_to_string(out.join("secrets/bootstrap-token")).unwrap();
    assert_eq!(cfg.secrets.bootstrap_token.expose(), token.trim());
    assert!(out.join("nodes/k8s-node4/seed.iso").is_file());
    let index = std::fs::read_to_string(out.join("nodes.json")).unwrap();
    assert!(index.contains("52:54:00:93:01:44"));

    let rotated = init(&bigger, &out, &["--rotate"]);
    assert_ne!(printed_hash(&rotated), printed_hash(&first));
    assert_ne!(secrets_hash(&out), before);
    let user = std::fs::read_to_string(out.join("nodes/k8s-node1/user-data")).unwrap();
    assert!(user.contains(&printed_hash(&rotated)));
}

#[test]
fn a_partial_secrets_bundle_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c");
    init(&example(), &out, &[]);
    std::fs::remove_file(out.join("secrets/etcd-ca.key")).unwrap();
    let o = try_init(&example(), &out);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("missing etcd-ca.key") && err.contains("--rotate"),
        "{err}"
    );
}

/// Runs init on the example edited by `edit`; returns (success, stderr).
fn init_edited(edit: impl Fn(String) -> String) -> (bool, String) {
    let tmp = tempfile::tempdir().unwrap();
    let inv = tmp.path().join("inv.toml");
    std::fs::write(&inv, edit(std::fs::read_to_string(example()).unwrap())).unwrap();
    let o = run(Command::new(bin("nodebake"))
        .args(["cluster", "init"])
        .arg(&inv)
        .arg("--out")
        .arg(tmp.path().join("out")));
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// An edit of the example inventory's text.
type Edit = Box<dyn Fn(String) -> String>;

#[test]
fn validation_names_each_problem() {
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "duplicate name",
            Box::new(|t| t.replace("name = \"k8s-node2\"", "name = \"k8s-node1\"")),
            "machines[4].name: duplicate name `k8s-node1` (also machines[3])",
        ),
        (
            "duplicate IP",
            Box::new(|t| t.replace("192.168.147.142", "192.168.147.141")),
            "machines[4].ip: duplicate IP 192.168.147.141",
        ),
        (
            "duplicate MAC",
            Box::new(|t| t.replace("52:54:00:93:01:42", "52-54-00-93-01-41")),
            "machines[4].mac: duplicate MAC 52:54:00:93:01:41",
        ),
        (
            "IP outside the network",
            Box::new(|t| t.replace("192.168.147.143", "192.168.148.143")),
            "machines[5].ip: 192.168.148.143 is outside the node network 192.168.147.0/24",
        ),
        (
            "VIP on a node",
            Box::new(|t| t.replace("vip = \"192.168.147.154\"", "vip = \"192.168.147.140\"")),
            "control_plane_endpoint.vip: VIP 192.168.147.140 collides with machine `k8s-master3`",
        ),
        (
            "no initialiser",
            Box::new(|t| t.replace("initialiser = true", "")),
            "machines: no initialiser",
        ),
        (
            "two initialisers",
            Box::new(|t| {
                t.replace(
                    "mac = \"52:54:00:93:01:39\"",
                    "mac = \"52:54:00:93:01:39\"\ninitialiser = true",
                )
            }),
            "machines: 2 initialisers (k8s-master1, k8s-master2)",
        ),
        (
            "unknown field",
            Box::new(|t| t.replace("[network]", "[network]\nmtu = 9000")),
            "unknown field `mtu`",
        ),
        (
            "bad MAC",
            Box::new(|t| t.replace("52:54:00:93:01:43", "52:54:00:93:01")),
            "machines[5].mac: `52:54:00:93:01` is not a MAC address",
        ),
        (
            "state disk not a device",
            Box::new(|t| t.replace("[cluster]\n", "[cluster]\nstate_disk = \"vdb\"\n")),
            "cluster.state_disk: `vdb` is not a device path",
        ),
        (
            "state disk breaking the command line",
            Box::new(|t| {
                t.replace(
                    "mac = \"52:54:00:93:01:43\"",
                    "mac = \"52:54:00:93:01:43\"\nstate_disk = \"/dev/vdb quiet\"",
                )
            }),
            "machines[5].state_disk: `/dev/vdb quiet` holds characters a kernel command line cannot carry",
        ),
    ];
    for (what, edit, want) in cases {
        let (ok, err) = init_edited(edit);
        assert!(!ok, "{what}: accepted");
        assert!(err.contains(want), "{what}: expected `{want}` in:\n{err}");
    }
    // Several problems at once are all named.
    let (ok, err) = init_edited(|t| {
        t.replace("192.168.147.142", "192.168.147.141")
            .replace("initialiser = true", "")
    });
    assert!(
        !ok && err.contains("duplicate IP") && err.contains("no initialiser"),
        "{err}"
    );
    // An even master count is a warning only.
    let (ok, err) = init_edited(|t| {
        t.replace(
            "name = \"k8s-node1\"\nrole = \"worker\"",
            "name = \"k8s-node1\"\nrole = \"master\"",
        )
    });
    assert!(ok, "{err}");
    assert!(err.contains("warning: machines: 4 masters"), "{err}");
}

#[test]
fn vfat_seeds_are_deterministic_and_read_back() {
    if !require_tools(&["mkfs.vfat", "mcopy", "blkid"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c");
    init(&example(), &out, &["--vfat"]);
    let before = tree_hash(&out);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    init(&example(), &out, &["--vfat"]);
    assert_eq!(
        tree_hash(&out),
        before,
        "a --vfat re-run changed the output"
    );
    let dir = out.join("nodes/k8s-node2");
    for (img, kind, label) in [
        ("seed.img", "vfat", "CIDATA"),
        ("seed.iso", "iso9660", "cidata"),
    ] {
        let b = run_ok(
            Command::new("blkid")
                .arg("-p")
                .arg("-o")
                .arg("export")
                .arg(dir.join(img)),
        );
        assert!(b.contains(&format!("TYPE={kind}")), "{img}: {b}");
        assert!(b.contains(&format!("LABEL={label}")), "{img}: {b}");
    }
    let listing = run_ok(Command::new("mdir").arg("-i").arg(dir.join("seed.img")));
    for f in ["meta-data", "user-data", "network-config"] {
        assert!(listing.contains(f), "{listing}");
    }
    let fb = nodebake_suite::target_dir().join("nodebake-firstboot");
    if fb.is_file() {
        let root = tempfile::tempdir().unwrap();
        let plan = run_ok(
            Command::new(&fb)
                .arg("plan")
                .arg("--root")
                .arg(root.path())
                .arg("--metadata")
                .arg(dir.join("seed.img")),
        );
        assert!(plan.contains("node: k8s-node2"), "{plan}");
        assert!(plan.contains("vfat, label CIDATA"), "{plan}");
    } else {
        assert!(!nodebake_suite::in_ci(), "nodebake-firstboot not built");
    }
}

/// Runs init on the example edited by `edit` into a fresh directory;
/// returns (success, stderr, whether the output directory exists).
fn init_edited_fresh(edit: impl Fn(String) -> String) -> (bool, String, bool) {
    let tmp = tempfile::tempdir().unwrap();
    let inv = tmp.path().join("inv.toml");
    std::fs::write(&inv, edit(std::fs::read_to_string(example()).unwrap())).unwrap();
    let out = tmp.path().join("out");
    let o = try_init(&inv, &out);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        out.exists(),
    )
}

/// Values that would break or add to a generated file (keepalived.conf,
/// the keepalived drop-in, containerd's TOML, a certs.d path) are refused
/// by the consumer's grammar, naming the field, and nothing is written:
/// not even the secrets bundle.
#[test]
fn hostile_values_are_refused_before_anything_is_written() {
    let iface = |v: &'static str| -> Edit {
        Box::new(move |t: String| t.replace("interface = \"ens33\"", &format!("interface = {v}")))
    };
    let appended =
        |text: &'static str| -> Edit { Box::new(move |t: String| format!("{t}\n{text}\n")) };
    let mirrors = |table: &'static str| -> Edit {
        Box::new(move |t: String| format!("{t}\n[cluster.registry_mirrors]\n{table}\n"))
    };
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "interface with keepalived syntax",
            iface(r##""}{\"#;""##),
            "not an interface name",
        ),
        (
            "interface with CR",
            iface(r#""eth\r""#),
            "not an interface name",
        ),
        (
            "interface with VT",
            iface(r#""eth\u000b""#),
            "not an interface name",
        ),
        (
            "interface with a specifier",
            iface(r#""%h""#),
            "not an interface name",
        ),
        (
            "interface with a command",
            iface(r#""$(reboot)""#),
            "not an interface name",
        ),
        ("interface ..", iface(r#""..""#), "not an interface name"),
        (
            "image repository with a quote",
            Box::new(|t: String| {
                t.replace(
                    "image_repository = \"registry.aliyuncs.com/google_containers\"",
                    r#"image_repository = "reg.io/a\"b""#,
                )
            }),
            "not an image repository",
        ),
        (
            "mirror host ..",
            mirrors(r#"".." = ["https://m.example"]"#),
            "not a registry host",
        ),
        (
            "mirror host .",
            mirrors(r#""." = ["https://m.example"]"#),
            "not a registry host",
        ),
        (
            "mirror host with a newline",
            mirrors(r#""a.io\n[x]" = ["https://m.example"]"#),
            "not a registry host",
        ),
        (
            "mirror URL ending in a backslash",
            mirrors(r#""docker.io" = ["https://m.example\\"]"#),
            "not a mirror URL",
        ),
        (
            "gateway is the VIP",
            Box::new(|t: String| {
                t.replace(
                    "gateway = \"192.168.147.2\"",
                    "gateway = \"192.168.147.154\"",
                )
            }),
            "control_plane_endpoint.vip: 192.168.147.154 is the gateway",
        ),
        (
            "broadcast MAC",
            Box::new(|t: String| t.replace("52:54:00:93:01:43", "ff:ff:ff:ff:ff:ff")),
            "machines[5].mac: ff:ff:ff:ff:ff:ff is a broadcast/multicast address",
        ),
        (
            "multicast MAC",
            Box::new(|t: String| t.replace("52:54:00:93:01:43", "01:00:5e:00:00:01")),
            "machines[5].mac: 01:00:5e:00:00:01 is a broadcast/multicast address",
        ),
        (
            "all-zero MAC",
            Box::new(|t: String| t.replace("52:54:00:93:01:43", "00:00:00:00:00:00")),
            "machines[5].mac: 00:00:00:00:00:00 is no interface's address",
        ),
        (
            "component flag with a newline",
            appended("[cluster.kubeadm.extra_args]\napi_server = { v = \"2\\n- --evil\" }"),
            "kubeadm.extra_args.api_server.v",
        ),
    ];
    for (what, edit, want) in cases {
        let (ok, err, wrote) = init_edited_fresh(edit);
        assert!(!ok, "{what}: accepted");
        assert!(err.contains(want), "{what}: expected `{want}` in:\n{err}");
        assert!(
            !wrote,
            "{what}: refused, but the output directory was created"
        );
        assert!(
            !err.contains('\r') && !err.contains('\u{b}'),
            "{what}: raw control bytes in {err:?}"
        );
    }
}

/// A bundle whose VRRP password keepalived would misread (a space, a
/// brace, more than 8 bytes) is refused without changing any node file;
/// the password is not shown.
#[test]
fn a_bundle_vrrp_password_is_checked_as_keepalived_reads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c");
    init(&example(), &out, &[]);
    let before = tree_hash(&out.join("nodes"));
    for bad in ["ab cd", "ab}\n{x", "#abc", "ééééé"] {
        let p = out.join("secrets/vrrp-password");
        std::fs::write(&p, format!("{bad}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let o = try_init(&example(), &out);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{bad:?} accepted");
        assert!(err.contains("secrets/vrrp-password"), "{bad:?}: {err}");
        assert!(
            !err.contains(bad.trim_end()),
            "{bad:?}: the password is shown: {err}"
        );
        assert_eq!(
            tree_hash(&out.join("nodes")),
            before,
            "{bad:?}: node files changed"
        );
    }
}

/// A `secrets` path that is a symbolic link is refused: nothing is written
/// through it and its target's mode is not touched.
#[test]
fn a_symlinked_secrets_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c");
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("secrets")).unwrap();
    let o = try_init(&example(), &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "accepted");
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    assert_eq!(mode(&elsewhere), 0o755);
    assert!(!out.join("nodes").exists());
}

#[test]
fn kubeconfig_is_signed_by_the_cluster_ca_for_the_endpoint() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("cluster");
    init(&example(), &out, &[]);
    let kc = t.path().join("admin.conf");
    run_ok(
        Command::new(bin("nodebake"))
            .args(["cluster", "kubeconfig"])
            .arg(&out)
            .arg("--out")
            .arg(&kc),
    );
    assert_eq!(mode(&kc), 0o600, "holds a private key");
    let text = std::fs::read_to_string(&kc).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(doc["kind"], "Config");
    assert_eq!(
        doc["clusters"][0]["cluster"]["server"],
        "https://192.168.147.154:16443"
    );
    let field = |v: &serde_yaml::Value| {
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        String::from_utf8(b).unwrap()
    };
    let ca = field(&doc["clusters"][0]["cluster"]["certificate-authority-data"]);
    assert_eq!(
        ca,
        std::fs::read_to_string(out.join("secrets/ca.crt")).unwrap()
    );
    let crt = t.path().join("client.crt");
    std::fs::write(
        &crt,
        field(&doc["users"][0]["user"]["client-certificate-data"]),
    )
    .unwrap();
    let key = field(&doc["users"][0]["user"]["client-key-data"]);
    assert!(key.contains("PRIVATE KEY"));
    // openssl: signed by the cluster CA, for client auth, as the admin.
    let v = run_ok(
        Command::new("openssl")
            .args(["verify", "-purpose", "sslclient", "-CAfile"])
            .arg(out.join("secrets/ca.crt"))
            .arg(&crt),
    );
    assert!(v.contains(": OK"), "{v}");
    let subject = run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
            .arg(&crt),
    );
    assert!(
        subject.contains("CN=kubernetes-admin") && subject.contains("O=system:masters"),
        "{subject}"
    );
    // The key is the certificate's.
    let pubkey = |args: &[&str], input: &str| {
        let mut c = Command::new("openssl");
        c.args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
    };
    let from_key = pubkey(&["pkey", "-pubout"], &key);
    let from_crt = pubkey(
        &["x509", "-noout", "-pubkey"],
        &std::fs::read_to_string(&crt).unwrap(),
    );
    assert!(!from_key.is_empty() && from_key == from_crt);

    // Another user, group and server, on stdout; real kubectl reads it.
    let text = run_ok(
        Command::new(bin("nodebake"))
            .args(["cluster", "kubeconfig"])
            .arg(&out)
            .args(["--user", "alice", "--group", "dev", "--days", "7"])
            .args(["--server", "https://master.k8s.io:16443"]),
    );
    std::fs::write(&kc, &text).unwrap();
    if let Some(k8s) = nodebake_suite::real_kubernetes() {
        let view = run_ok(
            Command::new(k8s.join("kubectl"))
                .args([
                    "config",
                    "view",
                    "--minify",
                    "-o",
                    "jsonpath={.users[0].name} {.clusters[0].cluster.server}",
                    "--kubeconfig",
                ])
                .arg(&kc),
        );
        assert_eq!(view.trim(), "alice https://master.k8s.io:16443");
    }
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    std::fs::write(
        &crt,
        field(&doc["users"][0]["user"]["client-certificate-data"]),
    )
    .unwrap();
    let subject = run_ok(
        Command::new("openssl")
            .args([
                "x509", "-noout", "-subject", "-enddate", "-nameopt", "RFC2253", "-in",
            ])
            .arg(&crt),
    );
    assert!(
        subject.contains("CN=alice") && subject.contains("O=dev"),
        "{subject}"
    );

    // Bad input names its culprit; nothing is written.
    let bad = t.path().join("bad.conf");
    for (args, culprit) in [
        (vec!["--days", "0"], "--days"),
        (vec!["--server", "http://x"], "--server"),
        (vec!["--user", ""], "--user"),
    ] {
        let o = run(Command::new(bin("nodebake"))
            .args(["cluster", "kubeconfig"])
            .arg(&out)
            .args(&args)
            .arg("--out")
            .arg(&bad));
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(culprit),
            "{args:?}: {o:?}"
        );
        assert!(!bad.exists());
    }
    let o = run(Command::new(bin("nodebake"))
        .args(["cluster", "kubeconfig"])
        .arg(t.path().join("nowhere")));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nodes.json"),
        "{o:?}"
    );
    // With --json the error is JSON on stdout as well.
    let o = run(Command::new(bin("nodebake"))
        .args(["--json", "cluster", "kubeconfig"])
        .arg(t.path().join("nowhere")));
    assert!(!o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("nodes.json"), "{v}");
}
