//! The rebuild path against a real 3-member etcd (TLS, CA made here by
//! openssl, free loopback ports): kill one member, wipe it, remove its
//! stale member by peer URL with the agent's code (client certificate
//! minted by the agent from the etcd CA), add it back, start it with
//! `initial-cluster-state=existing`; it must be healthy and the data
//! intact.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nodebake_firstboot::kubeadm::endpoint::Backoff;
use nodebake_firstboot::kubeadm::etcd::{
    member_list, mint_client_cert, remove_foreign_members, remove_stale_etcd_member, EtcdAccess,
};
use nodebake_firstboot::runner::{Cmd, Runner, SystemRunner};

use common::ChildGuard;

fn sh(script: &str, dir: &Path) {
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
}

fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    ls.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

struct Cluster {
    dir: PathBuf,
    client: Vec<u16>,
    peer: Vec<u16>,
}

impl Cluster {
    fn peer_url(&self, i: usize) -> String {
        format!("https://127.0.0.1:{}", self.peer[i])
    }
    fn client_url(&self, i: usize) -> String {
        format!("https://127.0.0.1:{}", self.client[i])
    }
    fn initial_cluster(&self, members: &[usize]) -> String {
        members
            .iter()
            .map(|i| format!("m{i}={}", self.peer_url(*i)))
            .collect::<Vec<_>>()
            .join(",")
    }
    fn start(&self, i: usize, state: &str, members: &[usize]) -> ChildGuard {
        let d = &self.dir;
        let f = |n: &str| d.join(n).display().to_string();
        let log = std::fs::File::create(d.join(format!("m{i}.log"))).unwrap();
        let child = Command::new("etcd")
            .arg(format!("--name=m{i}"))
            .arg(format!("--data-dir={}", f(&format!("data{i}"))))
            .arg(format!("--listen-client-urls={}", self.client_url(i)))
            .arg(format!("--advertise-client-urls={}", self.client_url(i)))
            .arg(format!("--listen-peer-urls={}", self.peer_url(i)))
            .arg(format!(
                "--initial-advertise-peer-urls={}",
                self.peer_url(i)
            ))
            .arg(format!(
                "--initial-cluster={}",
                self.initial_cluster(members)
            ))
            .arg(format!("--initial-cluster-state={state}"))
            .arg("--initial-cluster-token=nodebake-test")
            .arg("--client-cert-auth")
            .arg(format!("--trusted-ca-file={}", f("ca.crt")))
            .arg(format!("--cert-file={}", f("server.crt")))
            .arg(format!("--key-file={}", f("server.key")))
            .arg("--peer-client-cert-auth")
            .arg(format!("--peer-trusted-ca-file={}", f("ca.crt")))
            .arg(format!("--peer-cert-file={}", f("server.crt")))
            .arg(format!("--peer-key-file={}", f("server.key")))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        ChildGuard::new(child)
    }
    fn access(&self, members: &[usize], cert: &str, key: &str) -> EtcdAccess {
        EtcdAccess {
            endpoints: members.iter().map(|i| self.client_url(*i)).collect(),
            cacert: self.dir.join("ca.crt").display().to_string(),
            cert: cert.into(),
            key: key.into(),
        }
    }
}

fn etcdctl(a: &EtcdAccess, ep: &str, args: &[&str]) -> anyhow::Result<String> {
    let cmd: Cmd = a.etcdctl(ep, args.iter().map(|s| s.to_string()));
    match SystemRunner::default().run(&cmd)? {
        nodebake_firstboot::runner::Outcome::Ran(s) => Ok(s),
        _ => unreachable!(),
    }
}

fn wait_healthy(a: &EtcdAccess, ep: &str, within: Duration) {
    let start = Instant::now();
    loop {
        match etcdctl(a, ep, &["endpoint", "health"]) {
            Ok(_) => return,
            Err(e) if start.elapsed() > within => panic!("{ep} not healthy: {e:#}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn stale_member_removed_by_peer_url_and_rebuilt_member_rejoins() {
    if !common::require("etcd_rebuild", &["etcd", "etcdctl", "openssl"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    sh(
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=etcd-ca \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null && \
         openssl req -new -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=etcd 2>/dev/null && \
         printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth,clientAuth\\n' > server.ext && \
         openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out server.crt \
         -extfile server.ext 2>/dev/null",
        d,
    );
    let ports = free_ports(6);
    let c = Cluster {
        dir: d.to_path_buf(),
        client: ports[..3].to_vec(),
        peer: ports[3..].to_vec(),
    };
    let all = [0, 1, 2];
    let mut members: Vec<Option<ChildGuard>> =
        all.iter().map(|i| Some(c.start(*i, "new", &all))).collect();

    // The agent's client certificate, minted from the etcd CA.
    let runner = SystemRunner::default();
    let (cert, key) = mint_client_cert(
        &runner,
        &d.join("client"),
        "etcd-client",
        &d.join("ca.crt").display().to_string(),
        &d.join("ca.key").display().to_string(),
        "nodebake-firstboot-rebuild",
        None,
    )
    .unwrap();
    let a = c.access(&all, &cert, &key);
    for i in all {
        wait_healthy(&a, &c.client_url(i), Duration::from_secs(30));
    }
    etcdctl(&a, &c.client_url(0), &["put", "nodebake/data", "intact"]).unwrap();

    // Member 2's machine dies and is rebuilt with a clean disk.
    drop(members[2].take());
    std::fs::remove_dir_all(d.join("data2")).unwrap();

    let healthy = c.access(&[2, 0, 1], &cert, &key); // the dead one first
    let b = Backoff {
        tries: 20,
        initial: Duration::from_millis(500),
        max: Duration::from_secs(2),
    };
    let removed = remove_stale_etcd_member(&runner, &healthy, &c.peer_url(2), &b).unwrap();
    assert_eq!(removed.len(), 1, "exactly the stale member");
    let (_, left) = member_list(&runner, &healthy).unwrap().unwrap();
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|m| !m.peer_urls.contains(&c.peer_url(2))));
    // Idempotent: nothing left to remove.
    assert!(
        remove_stale_etcd_member(&runner, &healthy, &c.peer_url(2), &b)
            .unwrap()
            .is_empty()
    );

    // m2's turn: m0 and m1 are started, healthy members.
    nodebake_firstboot::kubeadm::etcd::wait_for_join_turn(
        &runner,
        &healthy,
        &[c.peer_url(0), c.peer_url(1)],
        &c.peer_url(2),
        &b,
    )
    .unwrap();

    // What kubeadm's control-plane join does next: add, then start with
    // initial-cluster-state=existing.
    let start = Instant::now();
    loop {
        match etcdctl(
            &a,
            &c.client_url(0),
            &[
                "member",
                "add",
                "m2",
                &format!("--peer-urls={}", c.peer_url(2)),
            ],
        ) {
            Ok(_) => break,
            Err(e) if start.elapsed() > Duration::from_secs(30) => panic!("member add: {e:#}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
    // While m2 is added but not started, another master must wait.
    let quick = Backoff {
        tries: 2,
        initial: Duration::from_millis(100),
        max: Duration::from_millis(100),
    };
    let e = nodebake_firstboot::kubeadm::etcd::wait_for_join_turn(
        &runner,
        &healthy,
        &[c.peer_url(0)],
        "https://127.0.0.1:1",
        &quick,
    )
    .unwrap_err();
    assert!(e.to_string().contains("in flight"), "{e:#}");
    members[2] = Some(c.start(2, "existing", &all));
    wait_healthy(&a, &c.client_url(2), Duration::from_secs(30));
    let v = etcdctl(
        &a,
        &c.client_url(2),
        &["get", "nodebake/data", "--print-value-only"],
    )
    .unwrap();
    assert_eq!(v.trim(), "intact");
    let (_, now) = member_list(&runner, &a).unwrap().unwrap();
    assert_eq!(now.len(), 3);
    assert!(now.iter().all(|m| !m.name.is_empty()), "{now:?}");

    // Reconcile after m2's master left the inventory: metadata naming
    // only m0 (2 of 3 members foreign) or nobody is refused, nothing
    // removed; naming m0 and m1 removes m2 through a healthy member.
    for wanted in [vec![c.peer_url(0)], vec![]] {
        let e = remove_foreign_members(&runner, &a, &wanted, &b).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("half or more") || e.contains("no etcd member"),
            "{e}"
        );
        assert_eq!(member_list(&runner, &a).unwrap().unwrap().1.len(), 3);
    }
    let wanted = [c.peer_url(0), c.peer_url(1)];
    let removed = remove_foreign_members(&runner, &a, &wanted, &b).unwrap();
    assert_eq!(removed, [c.peer_url(2)]);
    let two = c.access(&[0, 1], &cert, &key);
    let (_, left) = member_list(&runner, &two).unwrap().unwrap();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(remove_foreign_members(&runner, &two, &wanted, &b)
        .unwrap()
        .is_empty());
    let v = etcdctl(
        &two,
        &c.client_url(1),
        &["get", "nodebake/data", "--print-value-only"],
    )
    .unwrap();
    assert_eq!(v.trim(), "intact");
}
