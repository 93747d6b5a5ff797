//! Real kubeadm (v1.28.7, `../shared/kubernetes`) judges every kubeadm
//! configuration the agent renders: for 1-, 3- and 5-master inventories
//! made by `nodebake cluster init` (shared CA material) and for the seed
//! fixtures (upload-certs path), for every role, the rebuilt-initialiser
//! path and the token keep-alive configuration, `kubeadm config validate`
//! must accept it; the init configuration also passes `kubeadm init
//! --dry-run`, which must use nodebake's CAs and service-account key as
//! they are. The kubeadm test double is checked against the real one: on
//! every rendered config and on a set of broken ones, whatever the double
//! accepts, real kubeadm accepts too.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nodebake_suite::{bin, real_kubernetes, repo, run, run_ok};

/// Kubernetes versions real kubeadm 1.28.7 deploys (control plane 1.27 and
/// 1.28): every kubeadm API version it serves (v1beta3) is exercised.
const VERSIONS: [&str; 2] = ["1.27.11", "1.28.7"];

fn seed_inventory() -> String {
    std::fs::read_to_string(repo().join("examples/seed-ha-cluster.toml")).unwrap()
}

fn machine(name: &str, role: &str, ip: u8) -> String {
    format!(
        "\n[[machines]]\nname = \"{name}\"\nrole = \"{role}\"\nip = \"192.168.147.{ip}\"\nmac = \"52:54:00:93:02:{ip:02x}\"\n"
    )
}

/// The seed inventory cut down to `masters` masters (and `workers`
/// workers), at `version`, with `edit` applied to the `[cluster]` table.
fn inventory(masters: usize, workers: usize, version: &str, edit: &[(&str, &str)]) -> String {
    let text = seed_inventory();
    let head = text.split("[[machines]]").next().unwrap().to_string();
    let mut out = head.replace(
        "kubernetes_version = \"1.20.0\"",
        &format!("kubernetes_version = \"{version}\""),
    );
    for (from, to) in edit {
        assert!(out.contains(from), "inventory edit: `{from}` not found");
        out = out.replacen(from, to, 1);
    }
    for m in 1..=masters {
        out.push_str(&machine(&format!("k8s-master{m}"), "master", 10 + m as u8));
        if m == 1 {
            out.push_str("initialiser = true\n");
        }
    }
    for w in 1..=workers {
        out.push_str(&machine(&format!("k8s-node{w}"), "worker", 40 + w as u8));
    }
    out
}

/// `nodebake cluster init` of `inv` into `dir`; returns the node
/// directories (metadata) by host name.
fn cluster_init(inv: &str, dir: &Path) -> Vec<(String, PathBuf)> {
    let inv_path = dir.join("inventory.toml");
    std::fs::write(&inv_path, inv).unwrap();
    let out = dir.join("cluster");
    run_ok(
        Command::new(bin("nodebake"))
            .args(["cluster", "init"])
            .arg(&inv_path)
            .arg("--out")
            .arg(&out),
    );
    let mut nodes: Vec<(String, PathBuf)> = std::fs::read_dir(out.join("nodes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    nodes.sort();
    nodes
}

/// The seed fixture `host` (no shared CA: the upload-certs path) at `version`.
fn seed_fixture(host: &str, version: &str, dir: &Path) -> PathBuf {
    let src = repo().join("tests/fixtures/metadata/seed-ha").join(host);
    let dst = dir.join(format!("fixture-{host}-{version}"));
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["meta-data", "user-data"] {
        let text = std::fs::read_to_string(src.join(f)).unwrap().replace(
            "kubernetes_version: 1.20.0",
            &format!("kubernetes_version: {version}"),
        );
        std::fs::write(dst.join(f), text).unwrap();
    }
    dst
}

/// `nodebake-firstboot kubeadm-config` for the node metadata in `meta`.
fn render(meta: &Path, extra: &[&str]) -> String {
    let root = tempfile::tempdir().unwrap();
    run_ok(
        Command::new(bin("nodebake-firstboot"))
            .args(["kubeadm-config", "--root"])
            .arg(root.path())
            .arg("--metadata")
            .arg(meta)
            .args(extra),
    )
}

/// One rendered configuration and what it is.
struct Rendered {
    what: String,
    yaml: String,
}

/// Writes `yaml` 0600 (as the agent does; the double insists) and returns its path.
fn write_config(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, yaml).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Every configuration the agent renders for the inventories and fixtures.
fn all_rendered(dir: &Path) -> Vec<Rendered> {
    let mut out = Vec::new();
    let mut add = |what: String, yaml: String| out.push(Rendered { what, yaml });
    let variants: Vec<(String, String)> = VERSIONS
        .iter()
        .flat_map(|v| {
            [
                (format!("3+3 ipvs aliyun {v}"), inventory(3, 3, v, &[])),
                (
                    format!("1+1 iptables registry.k8s.io bridge skip-phases {v}"),
                    inventory(
                        1,
                        1,
                        v,
                        &[
                            ("kube_proxy_mode = \"ipvs\"", "kube_proxy_mode = \"iptables\""),
                            (
                                "image_repository = \"registry.aliyuncs.com/google_containers\"\n",
                                "",
                            ),
                            ("cni = \"flannel\"", "cni = \"bridge\""),
                            (
                                "firewalld = \"disable\"",
                                "firewalld = \"disable\"\n[cluster.kubeadm]\n\
                                 skip_phases = [\"addon/coredns\", \"preflight\", \"control-plane-join/mark-control-plane\"]\n\
                                 control_plane_timeout = \"20m0s\"\ndiscovery_timeout = \"15m0s\"\nimage_pull_policy = \"Never\"\n\
                                 [cluster.kubeadm.extra_args]\n\
                                 etcd = { heartbeat-interval = \"500\", election-timeout = \"5000\" }\n\
                                 api_server = { audit-log-maxage = \"7\", audit-log-path = \"y\" }\n\
                                 controller_manager = { node-monitor-grace-period = \"60s\" }\n\
                                 scheduler = { v = \"2\" }\n\
                                 [[cluster.kubeadm.patches]]\ntarget = \"etcd\"\n\
                                 patch = \"spec: {containers: [{name: etcd, livenessProbe: {failureThreshold: 30}}]}\"\n\
                                 [[cluster.kubeadm.patches]]\ntarget = \"kubeletconfiguration\"\ntype = \"merge\"\n\
                                 patch = \"{maxPods: 50}\"",
                            ),
                        ],
                    ),
                ),
                (
                    format!("5+1 kubelet args {v}"),
                    inventory(
                        5,
                        1,
                        v,
                        &[(
                            "firewalld = \"disable\"",
                            "firewalld = \"disable\"\n[cluster.kubelet_extra_args]\nmax-pods = \"60\"",
                        )],
                    ),
                ),
            ]
        })
        .collect();
    for (n, (label, inv)) in variants.iter().enumerate() {
        let d = dir.join(format!("inv{n}"));
        std::fs::create_dir_all(&d).unwrap();
        for (host, meta) in cluster_init(inv, &d) {
            add(format!("{label}: {host}"), render(&meta, &[]));
            if host.starts_with("k8s-master") {
                add(
                    format!("{label}: {host} rebuilt (control-plane join)"),
                    render(&meta, &["--path", "control-plane-join"]),
                );
                add(
                    format!("{label}: {host} token keep-alive"),
                    render(&meta, &["--token-config"]),
                );
            }
        }
    }
    for v in VERSIONS {
        for host in ["k8s-master1", "k8s-master2", "k8s-node1"] {
            let meta = seed_fixture(host, v, dir);
            add(
                format!("seed fixture {v} (upload-certs): {host}"),
                render(&meta, &[]),
            );
        }
    }
    out
}

/// `kubeadm config validate`; `Err(stderr)` when refused.
fn validate(kubeadm: &Path, config: &Path) -> Result<(), String> {
    let o = run(Command::new(kubeadm)
        .args(["config", "validate", "--config"])
        .arg(config));
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

fn double() -> PathBuf {
    repo().join("firstboot/tests/support/kubeadm-double")
}

/// The double's `config validate`, emulating kubeadm 1.28.
fn double_accepts(config: &Path, state: &Path) -> bool {
    run(Command::new(double())
        .args(["config", "validate", "--config"])
        .arg(config)
        .env("KUBEADM_DOUBLE_STATE", state)
        .env("KUBEADM_DOUBLE_VERSION", "1.28.7"))
    .status
    .success()
}

#[test]
fn real_kubeadm_validates_every_rendered_config() {
    let Some(k8s) = real_kubernetes() else { return };
    let kubeadm = k8s.join("kubeadm");
    let dir = tempfile::tempdir().unwrap();
    let rendered = all_rendered(dir.path());
    assert!(
        rendered.len() >= 60,
        "only {} configs rendered",
        rendered.len()
    );
    let mut refused = Vec::new();
    for (n, r) in rendered.iter().enumerate() {
        assert!(
            !r.yaml.starts_with("#") || !r.yaml.contains("\n---\n---"),
            "{}",
            r.what
        );
        let p = write_config(dir.path(), &format!("c{n}.yaml"), &r.yaml);
        if let Err(e) = validate(&kubeadm, &p) {
            refused.push(format!("{}: {e}", r.what));
        }
    }
    assert!(
        refused.is_empty(),
        "real kubeadm refused {} of {} rendered configs:\n{}",
        refused.len(),
        rendered.len(),
        refused.join("\n")
    );
    eprintln!(
        "real kubeadm 1.28.7 validated all {} rendered configs",
        rendered.len()
    );
}

/// Broken variants of a rendered config: each is what some earlier bug or
/// a careless edit produced.
fn mutations(yaml: &str) -> Vec<(&'static str, String)> {
    let first_doc_end = yaml.find("\n---\n").map(|i| i + 1).unwrap_or(yaml.len());
    let mut m = vec![
        (
            "comment-only first document",
            format!("# header\n---\n{}", yaml.trim_start_matches("---\n")),
        ),
        ("empty document", format!("---\n---\n{yaml}")),
        (
            "unknown nodeRegistration field",
            yaml.replacen(
                "nodeRegistration:\n",
                "nodeRegistration:\n  bogusField: 1\n",
                1,
            ),
        ),
        (
            "v1beta2 on kubeadm 1.28",
            yaml.replace("kubeadm.k8s.io/v1beta3", "kubeadm.k8s.io/v1beta2"),
        ),
        (
            "v1beta4 on kubeadm 1.28",
            yaml.replace("kubeadm.k8s.io/v1beta3", "kubeadm.k8s.io/v1beta4"),
        ),
        ("missing kind", yaml.replacen("kind: ", "# kind: ", 1)),
        (
            "malformed token",
            yaml.replacen("token: ", "token: NOT-A-TOKEN", 1),
        ),
        (
            "kubernetesVersion out of skew",
            yaml.replace("kubernetesVersion: v1.2", "kubernetesVersion: v1.1"),
        ),
        (
            "bad pod subnet",
            yaml.replace("podSubnet: 10.244.0.0/16", "podSubnet: 10.244.0.0/33"),
        ),
        ("bad caCertHash", yaml.replace("- sha256:", "- md5:")),
    ];
    m.push(("first document only", yaml[..first_doc_end].to_string()));
    m.retain(|(_, v)| v != yaml);
    m
}

#[test]
fn kubeadm_double_accepts_nothing_real_kubeadm_refuses() {
    let Some(k8s) = real_kubernetes() else { return };
    if !nodebake_suite::require_tools(&["python3"]) {
        return;
    }
    let kubeadm = k8s.join("kubeadm");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("double-state");
    std::fs::create_dir_all(&state).unwrap();
    let rendered = all_rendered(dir.path());
    let samples: Vec<&Rendered> = rendered
        .iter()
        .filter(|r| r.what.contains("1.28.7") && !r.what.contains("token"))
        .collect();
    let (mut both_refuse, mut checked) = (0, 0);
    let mut lenient = Vec::new();
    for (n, r) in samples.iter().enumerate() {
        let mut cases = vec![("as rendered", r.yaml.clone())];
        cases.extend(mutations(&r.yaml));
        for (i, (what, yaml)) in cases.iter().enumerate() {
            let p = write_config(dir.path(), &format!("m{n}-{i}.yaml"), yaml);
            let real = validate(&kubeadm, &p);
            let dbl = double_accepts(&p, &state);
            checked += 1;
            match (dbl, real) {
                (true, Err(e)) => lenient.push(format!(
                    "{} / {what}: the double accepts, real kubeadm refuses: {e}",
                    r.what
                )),
                (false, Err(_)) => both_refuse += 1,
                _ => {}
            }
        }
    }
    assert!(
        lenient.is_empty(),
        "the kubeadm double is more lenient than real kubeadm:\n{}",
        lenient.join("\n")
    );
    assert!(both_refuse > 0, "no broken config was refused by both");
    eprintln!("kubeadm double vs real kubeadm: {checked} configs, {both_refuse} refused by both, none accepted by the double alone");
}

fn am_root() -> bool {
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0
}

/// The initialiser's configuration with the shared CA material of
/// `cluster init` in a certificates directory: real `kubeadm init phase
/// certs all` signs every leaf certificate with nodebake's CAs (ECDSA) and
/// keeps them and the service-account key as they are; then `kubeadm init
/// --dry-run` shows the endpoint, SANs, CIDRs, kube-proxy mode and cgroup
/// driver of the inventory.
#[test]
fn real_kubeadm_init_uses_nodebake_pki_and_dry_runs() {
    let Some(k8s) = real_kubernetes() else { return };
    if !am_root() {
        assert!(
            !nodebake_suite::in_ci(),
            "kubeadm init --dry-run needs root"
        );
        eprintln!("SKIPPED: kubeadm init --dry-run needs root");
        return;
    }
    let kubeadm = k8s.join("kubeadm");
    let dir = tempfile::tempdir().unwrap();
    let etcd_args = "firewalld = \"disable\"\n[cluster.kubeadm.extra_args]\n\
                     etcd = { heartbeat-interval = \"500\", election-timeout = \"5000\" }\n\
                     [[cluster.kubeadm.patches]]\ntarget = \"etcd\"\n\
                     patch = '''\nspec:\n  containers:\n  - name: etcd\n    livenessProbe:\n      failureThreshold: 31\n'''\n\
                     [[cluster.kubeadm.patches]]\ntarget = \"kube-apiserver\"\ntype = \"json\"\n\
                     patch = '[{op: replace, path: /spec/containers/0/livenessProbe/timeoutSeconds, value: 47}]'";
    let nodes = cluster_init(
        &inventory(3, 1, "1.28.7", &[("firewalld = \"disable\"", etcd_args)]),
        dir.path(),
    );
    let meta = &nodes.iter().find(|(h, _)| h == "k8s-master1").unwrap().1;
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(pki.join("etcd")).unwrap();
    let secrets = dir.path().join("cluster/secrets");
    let shared = [
        ("ca.crt", "ca.crt"),
        ("ca.key", "ca.key"),
        ("front-proxy-ca.crt", "front-proxy-ca.crt"),
        ("front-proxy-ca.key", "front-proxy-ca.key"),
        ("etcd-ca.crt", "etcd/ca.crt"),
        ("etcd-ca.key", "etcd/ca.key"),
        ("sa.key", "sa.key"),
        ("sa.pub", "sa.pub"),
    ];
    for (from, to) in shared {
        std::fs::copy(secrets.join(from), pki.join(to))
            .unwrap_or_else(|e| panic!("secrets/{from}: {e}"));
    }
    let patches = dir.path().join("patches");
    let yaml = render(meta, &["--patches-dir", patches.to_str().unwrap()]).replacen(
        "kind: ClusterConfiguration\n",
        &format!(
            "kind: ClusterConfiguration\ncertificatesDir: {}\n",
            pki.display()
        ),
        1,
    );
    let config = write_config(dir.path(), "init.yaml", &yaml);
    let certs = run_ok(
        Command::new(&kubeadm)
            .args(["init", "phase", "certs", "all", "--config"])
            .arg(&config),
    );
    for want in [
        "Using existing ca certificate authority",
        "Using existing front-proxy-ca certificate authority",
        "Using existing etcd/ca certificate authority",
        "Using the existing \"sa\" key",
    ] {
        assert!(
            certs.contains(want),
            "kubeadm init phase certs lacks `{want}`:\n{certs}"
        );
    }
    for (from, to) in shared {
        assert_eq!(
            std::fs::read(pki.join(to)).unwrap(),
            std::fs::read(secrets.join(from)).unwrap(),
            "kubeadm changed {to}"
        );
    }
    for (ca, leaf) in [
        ("ca.crt", "apiserver.crt"),
        ("ca.crt", "apiserver-kubelet-client.crt"),
        ("front-proxy-ca.crt", "front-proxy-client.crt"),
        ("etcd/ca.crt", "etcd/server.crt"),
        ("etcd/ca.crt", "etcd/peer.crt"),
        ("etcd/ca.crt", "apiserver-etcd-client.crt"),
    ] {
        run_ok(
            Command::new("openssl")
                .args(["verify", "-CAfile"])
                .arg(pki.join(ca))
                .arg(pki.join(leaf)),
        );
    }
    let sans = run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
            .arg(pki.join("apiserver.crt")),
    );
    for san in [
        "DNS:master.k8s.io",
        "IP Address:192.168.147.154",
        "IP Address:192.168.147.11",
        "IP Address:192.168.147.12",
        "IP Address:192.168.147.13",
        "DNS:k8s-master3",
    ] {
        assert!(
            sans.contains(san),
            "apiserver certificate lacks {san}: {sans}"
        );
    }

    let o = run(Command::new(&kubeadm)
        .args(["init", "--dry-run", "--config"])
        .arg(&config)
        // The host is not a node: its preflight is not what is tested here
        // (the image's preflight is, in the end-to-end test).
        .arg("--skip-phases=preflight"));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "kubeadm init --dry-run failed:\n{err}\n{out}"
    );
    for want in [
        "Using existing ca certificate authority",
        "Using existing apiserver certificate and key on disk",
        "--cluster-cidr=10.244.0.0/16",
        "--service-cluster-ip-range=10.1.0.0/16",
        "server: https://master.k8s.io:16443",
        "mode: ipvs",
        "strictARP: true",
        "cgroupDriver: systemd",
        "registry.aliyuncs.com/google_containers/kube-apiserver:v1.28.7",
        // The inventory's etcd flags, in the ClusterConfiguration kubeadm
        // uploads (joining masters' etcd takes them from there).
        "heartbeat-interval: \"500\"",
        "election-timeout: \"5000\"",
        // Joining masters' etcd members start as learners (1.28).
        "EtcdLearnerMode: true",
        // The inventory's patches, applied by kubeadm to the manifests.
        "[patches] Applied patch of type \"application/strategic-merge-patch+json\" to target \"etcd\"",
        "[patches] Applied patch of type \"application/json-patch+json\" to target \"kube-apiserver\"",
    ] {
        assert!(
            out.contains(want),
            "kubeadm init --dry-run output lacks `{want}`:\n{out}"
        );
    }
    // The patched manifests, in the directory the dry run wrote (and
    // leaves behind: removed here).
    let tmp = out
        .split("Using certificateDir folder \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no dry-run directory in:\n{out}"));
    let etcd = std::fs::read_to_string(tmp.join("etcd.yaml")).unwrap();
    let apiserver = std::fs::read_to_string(tmp.join("kube-apiserver.yaml")).unwrap();
    if tmp.starts_with("/etc/kubernetes/tmp") {
        std::fs::remove_dir_all(&tmp).unwrap();
    }
    assert!(etcd.contains("failureThreshold: 31"), "{etcd}");
    assert!(apiserver.contains("timeoutSeconds: 47"), "{apiserver}");
    assert!(!etcd.contains("timeoutSeconds: 47") && !apiserver.contains("failureThreshold: 31"));
}
