//! The self-join path through the agent's real code, with the kubeadm and
//! kubectl test doubles (`tests/support/kubeadm-double`,
//! `tests/support/kubectl-double`) standing in for the real programs and a
//! local `openssl s_server` as the control-plane endpoint.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Result};
use nodebake_firstboot::agent::{self, RunOptions};
use nodebake_firstboot::kubeadm::endpoint::{probe_command, wait_for_endpoint, Backoff, Probe};
use nodebake_firstboot::root::Root;
use nodebake_firstboot::runner::{
    Cmd, HostnameState, Outcome, RecordingRunner, Runner, SystemRunner,
};
use nodebake_firstboot::step::JoinSettings;

use common::ChildGuard;

const TOOLS: &[&str] = &["openssl", "timeout", "python3"];

/// The tools and PyYAML (the doubles parse YAML with it); under `CI=true`
/// anything missing fails the test.
fn ready(test: &str) -> bool {
    if !common::require(test, TOOLS) {
        return false;
    }
    let ok = Command::new("python3")
        .args(["-c", "import yaml"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: python3 has no yaml module (install python3-yaml)");
        }
        eprintln!("SKIPPED {test}: python3 has no yaml module (python3-yaml)");
    }
    ok
}

fn support(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(name)
}

/// Executes kubeadm and kubectl as the doubles (and openssl/timeout for
/// the endpoint probe); records every other command as skipped. Not live:
/// host steps only check files.
struct DoubleRunner {
    root: PathBuf,
    state: PathBuf,
    env: Vec<(String, String)>,
    rest: RecordingRunner,
    log: std::sync::Mutex<Vec<String>>,
}

impl DoubleRunner {
    fn new(root: &Path, state: &Path, env: &[(&str, &str)]) -> Self {
        Self {
            root: root.into(),
            state: state.into(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            rest: RecordingRunner::default(),
            log: Default::default(),
        }
    }

    fn calls(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.state.join("calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Runner for DoubleRunner {
    fn run(&self, cmd: &Cmd) -> Result<Outcome> {
        let program = match cmd.program.as_str() {
            "kubeadm" => support("kubeadm-double"),
            "kubectl" => support("kubectl-double"),
            "timeout" | "openssl" => PathBuf::from(&cmd.program),
            _ => return self.rest.run(cmd),
        };
        self.log.lock().unwrap().push(cmd.to_string());
        let out = Command::new(program)
            .args(&cmd.args)
            .env("KUBEADM_DOUBLE_ROOT", &self.root)
            .env("KUBEADM_DOUBLE_STATE", &self.state)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!(
                "`{cmd}` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Outcome::Ran(String::from_utf8_lossy(&out.stdout).into()))
    }
    fn set_hostname(&self, name: &str) -> Result<Outcome> {
        self.rest.set_hostname(name)
    }
    fn query_hostname(&self) -> Result<Option<HostnameState>> {
        Ok(None)
    }
    fn is_live(&self) -> bool {
        false
    }
    fn skipped(&self) -> Vec<String> {
        self.rest.skipped()
    }
}

fn sh(script: &str, dir: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A CA (`<name>.crt`/`.key`) made by the openssl CLI in `dir`.
fn make_ca(dir: &Path, name: &str, cn: &str) {
    sh(
        &format!(
            "openssl req -x509 -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.crt -days 2 \
             -subj /CN={cn} -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null"
        ),
        dir,
    );
}

/// A server certificate for `master.k8s.io` signed by CA `ca`.
fn make_server_cert(dir: &Path, ca: &str, name: &str) {
    sh(
        &format!(
            "openssl req -new -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.csr \
             -subj /CN=kube-apiserver 2>/dev/null && \
             printf 'subjectAltName=DNS:master.k8s.io,IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > {name}.ext && \
             openssl x509 -req -in {name}.csr -CA {ca}.crt -CAkey {ca}.key -CAcreateserial \
             -days 2 -out {name}.crt -extfile {name}.ext 2>/dev/null"
        ),
        dir,
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `openssl s_server` on a free loopback port with `<cert>.crt/.key`.
fn tls_server(dir: &Path, cert: &str) -> (ChildGuard, String) {
    let port = free_port();
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(dir.join(format!("{cert}.crt")))
        .arg("-key")
        .arg(dir.join(format!("{cert}.key")))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = ChildGuard::new(child);
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            return (guard, addr);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("openssl s_server did not listen on {addr}");
}

/// The seed metadata for `host` under `dir/md`, edited by `edit`.
/// A temporary directory holding the node's root, the doubles' state and
/// a PKI directory (all created).
fn work_dirs() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let (root, state, pki) = (
        t.path().join("root"),
        t.path().join("state"),
        t.path().join("pki"),
    );
    for d in [&root, &state, &pki] {
        std::fs::create_dir_all(d).unwrap();
    }
    (t, root, state, pki)
}

/// Worker k8s-node3's metadata under `dir`, and an API server stand-in
/// with a certificate of a cluster CA made in `pki`.
fn worker_node3(dir: &Path, pki: &Path) -> (ChildGuard, String, String) {
    make_ca(pki, "ca", "kubernetes");
    make_server_cert(pki, "ca", "apiserver");
    let (server, addr) = tls_server(pki, "apiserver");
    (server, addr, metadata(dir, "k8s-node3", |u| u))
}

fn metadata(dir: &Path, host: &str, edit: impl Fn(String) -> String) -> String {
    let md = dir.join(format!("md-{host}"));
    std::fs::create_dir_all(&md).unwrap();
    let src = common::fixture(host);
    std::fs::copy(src.join("meta-data"), md.join("meta-data")).unwrap();
    let user = std::fs::read_to_string(src.join("user-data")).unwrap();
    std::fs::write(md.join("user-data"), edit(user)).unwrap();
    md.display().to_string()
}

fn fast() -> JoinSettings {
    let b = |tries| Backoff {
        tries,
        initial: Duration::from_millis(20),
        max: Duration::from_millis(100),
    };
    JoinSettings {
        endpoint: b(5),
        endpoint_target: None,
        peer_targets: Some(Vec::new()),
        attempts: b(3),
        ready: b(5),
        etcd: b(2),
        endpoint_confirm: b(2),
        stale_node: b(4),
        api: b(4),
        lease_watch: Duration::from_millis(1),
        ..JoinSettings::default()
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn count(calls: &[Vec<String>], prefix: &[&str]) -> usize {
    calls
        .iter()
        .filter(|c| c.len() >= prefix.len() && c.iter().zip(prefix).all(|(a, b)| a == b))
        .count()
}

const FLANNEL: &str = "---\nkind: ConfigMap\napiVersion: v1\nmetadata:\n  name: kube-flannel-cfg\ndata:\n  net-conf.json: |\n    { \"Network\": \"10.244.0.0/16\", \"Backend\": { \"Type\": \"vxlan\" } }\n";

#[test]
fn initialiser_inits_applies_cni_waits_ready_and_keeps_the_token() {
    if !ready("self_join") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let state = t.path().join("state");
    std::fs::create_dir_all(root.join("usr/lib/nodebake/manifests")).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        root.join("usr/lib/nodebake/manifests/kube-flannel.yml"),
        FLANNEL,
    )
    .unwrap();
    let md = metadata(t.path(), "k8s-master1", |u| {
        u.replace("kubernetes_version: 1.20.0", "kubernetes_version: 1.28.3")
            .replace("pod_cidr: 10.244.0.0/16", "pod_cidr: 10.200.0.0/16")
    });
    let runner = DoubleRunner::new(
        &root,
        &state,
        &[
            ("KUBEADM_DOUBLE_VERSION", "1.28.3"),
            ("KUBEADM_DOUBLE_FAIL_INIT", "1"),
            ("KUBECTL_DOUBLE_NOT_READY", "2"),
        ],
    );
    let mut o = RunOptions::new(Root::new(&root));
    o.metadata = Some(md.clone());
    o.join = fast();
    agent::run(&o, &runner).unwrap();

    let calls = runner.calls();
    let cfg = root.join("etc/nodebake/kubeadm.yaml").display().to_string();
    let init = vec!["init", "--config", cfg.as_str(), "--upload-certs"];
    assert_eq!(count(&calls, &init), 2, "{calls:?}");
    assert_eq!(count(&calls, &["reset", "-f"]), 1, "{calls:?}");
    assert_eq!(
        count(&calls, &["kubectl", "--kubeconfig"]),
        1 + 3,
        "{calls:?}"
    );
    assert_eq!(count(&calls, &["token", "create"]), 0, "init created it");
    assert_eq!(mode(&root.join("etc/nodebake/kubeadm.yaml")), 0o600);
    assert_eq!(mode(&root.join("root/.kube/config")), 0o600);
    let cni = std::fs::read_to_string(root.join("etc/nodebake/cni.yaml")).unwrap();
    assert!(cni.contains("\"Network\": \"10.200.0.0/16\""), "{cni}");
    // No secret on any command line.
    for c in runner.log.lock().unwrap().iter() {
        assert!(
            !c.contains("0123456789abcdef") && !c.contains("0b1c2d3e4f"),
            "{c}"
        );
    }
    let status = agent::status(&Root::new(&root)).unwrap();
    assert!(status.contains("step node-ready: applied"), "{status}");
    assert!(status.contains("join: Ready"), "{status}");

    // The token expired (deleted): a re-check re-creates it from the file,
    // through an API that times out twice first (retried, not fatal).
    std::fs::remove_file(state.join("tokens.json")).unwrap();
    let mut again = RunOptions::new(Root::new(&root));
    again.metadata = Some(md);
    again.join = fast();
    again.again = true;
    let r2 = DoubleRunner::new(
        &root,
        &state,
        &[
            ("KUBEADM_DOUBLE_VERSION", "1.28.3"),
            ("KUBEADM_DOUBLE_FAIL_TOKEN_LIST", "2"),
        ],
    );
    agent::run(&again, &r2).unwrap();
    let calls = r2.calls();
    assert_eq!(
        count(&calls, &init),
        2,
        "init must not run again: {calls:?}"
    );
    assert_eq!(
        count(&calls, &["token", "create", "--config"]),
        1,
        "{calls:?}"
    );
    assert_eq!(mode(&root.join("etc/nodebake/kubeadm-token.yaml")), 0o600);
    let tokens = std::fs::read_to_string(state.join("tokens.json")).unwrap();
    assert!(tokens.contains("abcdef.0123456789abcdef"));

    // The periodic keep-alive: nothing while the token is there, re-created
    // once it is gone.
    let keep = |r: &DoubleRunner| {
        let mut o = RunOptions::new(Root::new(&root));
        o.metadata = Some(again.metadata.clone().unwrap());
        agent::keep_token(&o, r).unwrap()
    };
    let r3 = DoubleRunner::new(&root, &state, &[("KUBEADM_DOUBLE_VERSION", "1.28.3")]);
    keep(&r3);
    assert_eq!(count(&r3.calls(), &["token", "create", "--config"]), 1);
    std::fs::remove_file(state.join("tokens.json")).unwrap();
    keep(&r3);
    assert_eq!(count(&r3.calls(), &["token", "create", "--config"]), 2);
    assert!(state.join("tokens.json").exists());

    // 30 days on: the token expired and its Secret is still there (the
    // token cleaner has not run yet). kubeadm refuses to create an id that
    // exists, so it is deleted first, then created again with a fresh TTL.
    let t = std::fs::read_to_string(state.join("tokens.json")).unwrap();
    std::fs::write(
        state.join("tokens.json"),
        t.replace("\"ttl\"", "\"expired\": true, \"ttl\""),
    )
    .unwrap();
    keep(&r3);
    let calls = r3.calls();
    assert_eq!(
        count(&calls, &["token", "delete", "abcdef"]),
        1,
        "{calls:?}"
    );
    assert_eq!(
        count(&calls, &["token", "create", "--config"]),
        3,
        "{calls:?}"
    );
    let t = std::fs::read_to_string(state.join("tokens.json")).unwrap();
    assert!(
        t.contains("abcdef.0123456789abcdef") && !t.contains("expired"),
        "{t}"
    );
}

/// CA material as the metadata carries it, made by openssl in `dir`.
fn ca_yaml(dir: &Path) -> String {
    make_ca(dir, "ca", "kubernetes");
    make_ca(dir, "front-proxy-ca", "front-proxy-ca");
    make_ca(dir, "etcd-ca", "etcd-ca");
    sh(
        "openssl genrsa -out sa.key 2048 2>/dev/null && openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null",
        dir,
    );
    let block = |file: &str| {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let body: String = text.lines().map(|l| format!("        {l}\n")).collect();
        format!("|\n{body}")
    };
    format!(
        "    ca:\n      ca_crt: {}      ca_key: {}      front_proxy_ca_crt: {}      front_proxy_ca_key: {}      \
         etcd_ca_crt: {}      etcd_ca_key: {}      sa_key: {}      sa_pub: {}",
        block("ca.crt"),
        block("ca.key"),
        block("front-proxy-ca.crt"),
        block("front-proxy-ca.key"),
        block("etcd-ca.crt"),
        block("etcd-ca.key"),
        block("sa.key"),
        block("sa.pub"),
    )
}

/// k8s-master2 with shared CA material (no certificate key) on Kubernetes
/// `version`, its control-plane endpoint a local TLS server with a
/// certificate of that CA.
struct SharedCaMaster {
    _dir: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    pki: PathBuf,
    hash: String,
    md: String,
    _server: ChildGuard,
    addr: String,
}

fn shared_ca_master2(version: &str) -> SharedCaMaster {
    let (t, root, state, pki) = work_dirs();
    let ca = ca_yaml(&pki);
    let hash = sh(
        "openssl x509 -pubkey -noout -in ca.crt | openssl pkey -pubin -outform der | sha256sum",
        &pki,
    );
    let hash = format!("sha256:{}", hash.split_whitespace().next().unwrap());
    make_server_cert(&pki, "ca", "apiserver");
    let (server, addr) = tls_server(&pki, "apiserver");
    let md = metadata(t.path(), "k8s-master2", |u| {
        let u = u.replace(
            "kubernetes_version: 1.20.0",
            &format!("kubernetes_version: {version}"),
        );
        let u = u
            .lines()
            .filter(|l| !l.contains("certificate_key") && !l.contains("ca_cert_hash"))
            .map(|l| format!("{l}\n"))
            .collect::<String>();
        format!("{u}    ca_cert_hash: {hash}\n{ca}")
    });
    SharedCaMaster {
        _dir: t,
        root,
        state,
        pki,
        hash,
        md,
        _server: server,
        addr,
    }
}

#[test]
fn control_plane_join_with_shared_ca_retries_after_reset() {
    if !ready("self_join") {
        return;
    }
    let m = shared_ca_master2("1.31.1");
    let (root, state, pki, hash) = (
        m.root.clone(),
        m.state.clone(),
        m.pki.clone(),
        m.hash.clone(),
    );
    let (md, addr) = (m.md.clone(), m.addr.clone());
    let runner = DoubleRunner::new(
        &root,
        &state,
        &[
            ("KUBEADM_DOUBLE_VERSION", "1.31.1"),
            ("KUBEADM_DOUBLE_FAIL_JOIN", "1"),
        ],
    );
    // A rebuild: the old Node object is still there, NotReady.
    std::fs::write(state.join("nodes.json"), r#"{"k8s-master2": "Unknown"}"#).unwrap();
    let mut o = RunOptions::new(Root::new(&root));
    o.metadata = Some(md);
    o.join = fast();
    o.join.endpoint_target = Some(addr);
    agent::run(&o, &runner).unwrap();

    let calls = runner.calls();
    assert_eq!(count(&calls, &["join", "--config"]), 2, "{calls:?}");
    let deletes = calls
        .iter()
        .filter(|c| {
            c.first().map(String::as_str) == Some("kubectl") && c.contains(&"delete".to_string())
        })
        .count();
    assert_eq!(deletes, 1, "stale NotReady Node deleted once: {calls:?}");
    assert_eq!(
        std::fs::read_to_string(state.join("nodes.json")).unwrap(),
        "{}"
    );
    assert_eq!(count(&calls, &["reset", "-f"]), 1, "{calls:?}");
    let config = std::fs::read_to_string(root.join("etc/nodebake/kubeadm.yaml")).unwrap();
    assert!(config.contains("apiVersion: kubeadm.k8s.io/v1beta4"));
    assert!(!config.contains("certificateKey"), "{config}");
    assert!(config.contains(&hash), "{config}");
    let k = root.join("etc/kubernetes/pki");
    for (f, m) in [
        ("ca.crt", 0o644),
        ("ca.key", 0o600),
        ("front-proxy-ca.key", 0o600),
        ("etcd/ca.key", 0o600),
        ("sa.key", 0o600),
        ("sa.pub", 0o644),
    ] {
        assert_eq!(mode(&k.join(f)), m, "{f}");
    }
    assert_eq!(
        std::fs::read(k.join("ca.crt")).unwrap(),
        std::fs::read(pki.join("ca.crt")).unwrap()
    );
    let log = runner.log.lock().unwrap().join("\n");
    assert!(log.contains("-verify_return_error"), "{log}");
    // Before each attempt: a client certificate from the etcd CA, then the
    // stale-member check through the other masters (etcdctl is skipped here).
    let client = root.join("etc/nodebake/etcd-client");
    assert_eq!(mode(&client.join("etcd-client.key")), 0o600);
    let v = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(pki.join("etcd-ca.crt"))
        .arg(client.join("etcd-client.crt"))
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let skipped = runner.skipped();
    let lists = skipped
        .iter()
        .filter(|s| {
            s.starts_with("etcdctl --endpoints=https://192.168.147.137:2379")
                && s.contains("member list")
        })
        .count();
    // Per attempt: stale-member check, then the wait for this master's turn.
    assert_eq!(lists, 2 * 2, "{skipped:?}");
}

#[test]
fn worker_joins_with_token_and_hash() {
    if !ready("self_join") {
        return;
    }
    let (t, root, state, pki) = work_dirs();
    let (_server, addr, md) = worker_node3(t.path(), &pki);
    let runner = DoubleRunner::new(&root, &state, &[("KUBEADM_DOUBLE_VERSION", "1.20.0")]);
    let mut o = RunOptions::new(Root::new(&root));
    o.metadata = Some(md);
    o.join = fast();
    o.join.endpoint_target = Some(addr);
    agent::run(&o, &runner).unwrap();
    let calls = runner.calls();
    assert_eq!(count(&calls, &["join", "--config"]), 1, "{calls:?}");
    assert_eq!(count(&calls, &["token"]), 0, "workers keep no token");
    assert!(root.join("etc/kubernetes/kubelet.conf").exists());
    assert!(!root.join("etc/kubernetes/admin.conf").exists());
}

/// A worker rebuilt under the name of a Node that `ready_for` more
/// kubeadm joins still see Ready (the old machine's, until the node
/// lifecycle controller notices it is gone).
fn rebuilt_worker(ready_for: &str) -> (Result<()>, Vec<Vec<String>>, PathBuf, tempfile::TempDir) {
    let (t, root, state, pki) = work_dirs();
    let (_server, addr, md) = worker_node3(t.path(), &pki);
    std::fs::write(state.join("nodes.json"), r#"{"k8s-node3": "True"}"#).unwrap();
    let runner = DoubleRunner::new(
        &root,
        &state,
        &[
            ("KUBEADM_DOUBLE_VERSION", "1.20.0"),
            ("KUBEADM_DOUBLE_NODE_READY_FOR", ready_for),
        ],
    );
    let mut o = RunOptions::new(Root::new(&root));
    o.metadata = Some(md);
    o.join = fast();
    o.join.endpoint_target = Some(addr);
    let r = agent::run(&o, &runner).map(|_| ());
    (r, runner.calls(), root, t)
}

#[test]
fn rebuilt_worker_waits_until_its_old_node_is_no_longer_ready() {
    if !ready("self_join") {
        return;
    }
    // Four refusals: more than the three join attempts, which they do not use up.
    let (r, calls, root, _t) = rebuilt_worker("4");
    r.unwrap();
    assert_eq!(count(&calls, &["join", "--config"]), 5, "{calls:?}");
    assert_eq!(count(&calls, &["reset", "-f"]), 4, "{calls:?}");
    assert!(root.join("etc/kubernetes/kubelet.conf").exists());
}

#[test]
fn rebuilt_worker_names_a_node_that_stays_ready() {
    if !ready("self_join") {
        return;
    }
    let (r, calls, root, _t) = rebuilt_worker("1000");
    let e = format!("{:#}", r.unwrap_err());
    assert!(e.contains("a Node named k8s-node3 stayed Ready"), "{e}");
    assert!(e.contains("kubectl delete node k8s-node3"), "{e}");
    // stale_node is 4 tries: the fifth refusal ends it.
    assert_eq!(count(&calls, &["join", "--config"]), 5, "{calls:?}");
    assert!(!root.join("etc/kubernetes/kubelet.conf").exists());
}

/// A master rebuilt while its old Node is still Ready, with that Node's
/// Lease `lease` ("stale": never renewed, "live": renewed on every read).
fn rebuilt_master(lease: &str, ready_for: &str) -> (Result<()>, Vec<Vec<String>>, PathBuf) {
    let m = shared_ca_master2("1.28.7");
    let (root, state) = (m.root.clone(), m.state.clone());
    let (md, addr) = (m.md.clone(), m.addr.clone());
    std::fs::write(state.join("nodes.json"), r#"{"k8s-master2": "True"}"#).unwrap();
    std::fs::write(
        state.join("leases.json"),
        format!(r#"{{"k8s-master2": "{lease}"}}"#),
    )
    .unwrap();
    let runner = DoubleRunner::new(
        &root,
        &state,
        &[
            ("KUBEADM_DOUBLE_VERSION", "1.28.7"),
            ("KUBEADM_DOUBLE_NODE_READY_FOR", ready_for),
        ],
    );
    let mut o = RunOptions::new(Root::new(&root));
    o.metadata = Some(md);
    o.join = fast();
    o.join.endpoint_target = Some(addr);
    let r = agent::run(&o, &runner).map(|_| ());
    let nodes = std::fs::read_to_string(state.join("nodes.json")).unwrap();
    (r, runner.calls(), PathBuf::from(nodes))
}

#[test]
fn rebuilt_master_deletes_a_ready_node_whose_lease_stands_still() {
    if !ready("self_join") {
        return;
    }
    let (r, calls, nodes) = rebuilt_master("stale", "1000");
    if let Err(e) = r {
        panic!("{e:#}");
    }
    let deletes = calls
        .iter()
        .filter(|c| {
            c.first().map(String::as_str) == Some("kubectl") && c.contains(&"delete".into())
        })
        .count();
    assert_eq!(deletes, 1, "{calls:?}");
    assert_eq!(nodes, PathBuf::from("{}"));
    assert_eq!(count(&calls, &["join", "--config"]), 1, "{calls:?}");
}

#[test]
fn rebuilt_master_leaves_a_ready_node_whose_lease_moves_and_waits() {
    if !ready("self_join") {
        return;
    }
    let (r, calls, nodes) = rebuilt_master("live", "2");
    if let Err(e) = r {
        panic!("{e:#}");
    }
    assert!(
        !calls.iter().any(|c| c.contains(&"delete".into())),
        "a live machine's Node is not deleted: {calls:?}"
    );
    assert_eq!(count(&calls, &["join", "--config"]), 3, "{calls:?}");
    assert_eq!(nodes, PathBuf::from(r#"{"k8s-master2": "Unknown"}"#));
}

#[test]
fn endpoint_wait_needs_the_cluster_ca() {
    if !ready("self_join") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    make_ca(d.path(), "ca", "kubernetes");
    make_ca(d.path(), "other", "someone-else");
    make_server_cert(d.path(), "ca", "apiserver");
    let (_server, addr) = tls_server(d.path(), "apiserver");
    let b = Backoff {
        tries: 3,
        initial: Duration::from_millis(50),
        max: Duration::from_millis(100),
    };
    let runner = SystemRunner::default();
    let wrong = probe_command(&addr, "master.k8s.io", Some(&d.path().join("other.crt")));
    let e = wait_for_endpoint(&runner, &wrong, "endpoint", &b).unwrap_err();
    assert!(e.to_string().contains("after 3 tries"), "{e}");
    let right = probe_command(&addr, "master.k8s.io", Some(&d.path().join("ca.crt")));
    assert_eq!(
        wait_for_endpoint(&runner, &right, "endpoint", &b).unwrap(),
        Probe::Ok
    );
    // Nobody listening: a clear error too.
    let none = probe_command(&format!("127.0.0.1:{}", free_port()), "master.k8s.io", None);
    assert!(wait_for_endpoint(&runner, &none, "endpoint", &b).is_err());
}

#[test]
fn kubeadm_double_refuses_unknown_flags_and_fields() {
    if !ready("self_join") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(support("kubeadm-double"))
            .args(args)
            .env("KUBEADM_DOUBLE_ROOT", t.path())
            .env("KUBEADM_DOUBLE_STATE", t.path())
            .output()
            .unwrap()
    };
    assert!(!run(&["init", "--bogus"]).status.success());
    assert!(!run(&["upgrade"]).status.success());
    let cfg = t.path().join("c.yaml");
    std::fs::write(
        &cfg,
        "apiVersion: kubeadm.k8s.io/v1beta3\nkind: JoinConfiguration\nnodeRegistration: {name: a}\n\
         discovery: {bootstrapToken: {token: abcdef.0123456789abcdef, apiServerEndpoint: 'a:1', \
         caCertHashes: ['sha256:00']}}\ninventedField: 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(&["join", "--config", cfg.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("inventedField"));
}

#[test]
fn rebuilt_initialiser_joins_the_cluster_that_answers() {
    if !ready("self_join") {
        return;
    }
    let (t, root, state, pki) = work_dirs();
    let ca = ca_yaml(&pki);
    make_server_cert(&pki, "ca", "apiserver");
    let (_server, addr) = tls_server(&pki, "apiserver");
    let md = metadata(t.path(), "k8s-master1", |u| {
        let u = u.replace("kubernetes_version: 1.20.0", "kubernetes_version: 1.28.3");
        let u: String = u
            .lines()
            .filter(|l| !l.contains("ca_cert_hash"))
            .map(|l| format!("{l}\n"))
            .collect();
        format!("{u}{ca}")
    });
    let runner = DoubleRunner::new(&root, &state, &[("KUBEADM_DOUBLE_VERSION", "1.28.3")]);
    let mut o = RunOptions::new(Root::new(&root));
    o.metadata = Some(md);
    o.join = fast();
    o.join.rebuild_probe = Backoff {
        tries: 1,
        initial: Duration::from_millis(10),
        max: Duration::from_millis(10),
    };
    o.join.endpoint_target = Some(addr);
    agent::run(&o, &runner).unwrap();
    let calls = runner.calls();
    assert_eq!(count(&calls, &["init"]), 0, "no second cluster: {calls:?}");
    assert_eq!(count(&calls, &["join", "--config"]), 1, "{calls:?}");
    let config = std::fs::read_to_string(root.join("etc/nodebake/kubeadm.yaml")).unwrap();
    assert!(config.contains("kind: JoinConfiguration") && config.contains("controlPlane:"));
    assert_eq!(
        std::fs::read_to_string(root.join("var/lib/nodebake/join-path")).unwrap(),
        "control-plane-join\n"
    );
}

/// Never a second cluster: a rebuilt initialiser that boots while the VIP
/// is down (the endpoint does not answer) but another master's etcd does
/// records the join path and never runs `kubeadm init`; it waits for the
/// endpoint instead (here it never comes back: the bounded wait fails).
#[test]
fn initialiser_with_the_endpoint_down_joins_when_another_master_answers() {
    if !ready("self_join") {
        return;
    }
    let (t, root, state, pki) = work_dirs();
    let ca = ca_yaml(&pki);
    let md = metadata(t.path(), "k8s-master1", |u| {
        let u = u.replace("kubernetes_version: 1.20.0", "kubernetes_version: 1.28.3");
        let u: String = u
            .lines()
            .filter(|l| !l.contains("ca_cert_hash"))
            .map(|l| format!("{l}\n"))
            .collect();
        format!("{u}{ca}")
    });
    // k8s-master2's etcd answers; nothing listens on the endpoint.
    let etcd = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let runner = DoubleRunner::new(&root, &state, &[("KUBEADM_DOUBLE_VERSION", "1.28.3")]);
    let mut o = RunOptions::new(Root::new(&root));
    o.metadata = Some(md);
    o.join = fast();
    o.join.endpoint_target = Some(format!("127.0.0.1:{}", free_port()));
    o.join.peer_targets = Some(vec![(
        "k8s-master2 (etcd client)".into(),
        etcd.local_addr().unwrap(),
    )]);
    let err = agent::run(&o, &runner).unwrap_err();
    assert!(
        format!("{err:#}").contains("control-plane endpoint"),
        "{err:#}"
    );
    let calls = runner.calls();
    assert_eq!(
        count(&calls, &["init"]),
        0,
        "a second cluster was started: {calls:?}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("var/lib/nodebake/join-path")).unwrap(),
        "control-plane-join\n"
    );
}
