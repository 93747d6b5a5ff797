//! VIP failover with the real keepalived and haproxy, configured by the
//! agent's own renderers for a seed-like cluster with test addresses.
//!
//! Three master namespaces and a client namespace hang off a bridge that
//! lives in a namespace of its own; nothing touches the host network. Each
//! master runs the rendered haproxy and keepalived and a TLS apiserver
//! stand-in on :6443 (`tests/vip/helper.py`); the client requests
//! `https://VIP:16443/healthz` in a loop, one connection each. Scenarios:
//! keepalived SIGKILLed on the holder (what systemd's `ExecStopPost` from
//! the rendered drop-in does afterwards is run too), haproxy SIGKILLed on
//! the holder, the holder's link cut, and an apiserver stand-in killed (no
//! failed request allowed). After each, the VIP must move and the client
//! reconnect, and once the cluster settles exactly one master holds the VIP.
//!
//! All namespaces share one PID namespace: PID files are per node; the
//! track script is shared (it connects to 127.0.0.1 of its own namespace).
//!
//! `NODEBAKE_VIP_SETTINGS` (`default,fast`) and `NODEBAKE_VIP_ROUNDS` (1)
//! select what runs; `tests/vip/bench.sh` uses them and prints medians.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{fixture, require, require_root, ChildGuard};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use nodebake_contract::node::NodeConfig;
use nodebake_firstboot::steps::load_balancer::{haproxy, keepalived};

const VIP: &str = "10.77.0.100";
const PORT: u16 = 16443;
const MASTERS: [(&str, &str, &str); 3] = [
    ("k8s-master1", "192.168.147.137", "10.77.0.11"),
    ("k8s-master2", "192.168.147.139", "10.77.0.12"),
    ("k8s-master3", "192.168.147.140", "10.77.0.13"),
];

static SEQ: AtomicU32 = AtomicU32::new(0);

fn now_ms() -> i64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() * 1000 + t.tv_nsec() / 1_000_000
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip(args: &[&str]) {
    run("ip", args);
}

/// Namespaces created by this test run, deleted by name on drop.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, name: &str) {
        ip(&["netns", "add", name]);
        self.0.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"]);
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in self.0.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Load balancer settings under test.
struct Settings {
    name: &'static str,
    yaml: &'static str,
    advert_ms: i64,
}

const DEFAULT: Settings = Settings {
    name: "default",
    yaml: "",
    advert_ms: 1000,
};
/// The fastest settings we call safe on an idle LAN: 100 ms adverts
/// (VRRPv3), the track script's shortest interval and a single failed
/// connect for FAULT.
const FAST: Settings = Settings {
    name: "fast",
    yaml: "  load_balancer:\n    advert_interval_ms: 100\n    check_interval_s: 1\n    check_fall: 1\n    check_rise: 2\n",
    advert_ms: 100,
};

/// One client request: start and end (monotonic ms), answering backend.
#[derive(Debug, Clone)]
struct Request {
    start: i64,
    end: i64,
    ok: Option<String>,
}

/// The running cluster. Field order is drop order: processes first, then
/// namespaces, then the work directory.
struct Cluster {
    procs: HashMap<String, ChildGuard>,
    requests: Arc<Mutex<Vec<Request>>>,
    ns: Namespaces,
    bridge_ns: String,
    masters: Vec<String>,
    work: PathBuf,
    _work_guard: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let names: Vec<String> = self.procs.keys().cloned().collect();
        for n in names {
            self.stop(&n);
        }
        if std::thread::panicking() {
            for e in std::fs::read_dir(&self.work)
                .into_iter()
                .flatten()
                .flatten()
            {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "log") {
                    let t = std::fs::read_to_string(&p).unwrap_or_default();
                    let tail: Vec<&str> = t.lines().rev().take(15).collect();
                    eprintln!("--- {} (last lines)", p.display());
                    for l in tail.iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
    }
}

/// The seed's user-data for `host`, moved to the test subnet, with
/// `extra` (load balancer settings) added.
fn node_config(host: &str, extra: &str) -> NodeConfig {
    let dir = fixture(host);
    let meta = std::fs::read_to_string(dir.join("meta-data")).unwrap();
    let mut user = std::fs::read_to_string(dir.join("user-data")).unwrap();
    for (_, seed, test) in MASTERS {
        user = user.replace(seed, test);
    }
    for (i, w) in ["141", "142", "143"].iter().enumerate() {
        user = user.replace(&format!("192.168.147.{w}"), &format!("10.77.0.2{}", i + 1));
    }
    user = user
        .replace("192.168.147.154", VIP)
        .replace("ens33", "eth0")
        .replace("  secrets:\n", &format!("{extra}  secrets:\n"));
    NodeConfig::from_nocloud(&meta, &user).unwrap_or_else(|e| panic!("{host}: {e}"))
}

impl Cluster {
    fn start(settings: &Settings, helper: &Path) -> Cluster {
        let tag = format!(
            "nbv{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let guard = tempfile::Builder::new()
            .prefix("nodebake-vip-")
            .tempdir_in("/run")
            .unwrap();
        let work = guard.path().to_path_buf();
        std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = Cluster {
            procs: HashMap::new(),
            requests: Arc::new(Mutex::new(Vec::new())),
            ns: Namespaces(Vec::new()),
            bridge_ns: format!("{tag}br"),
            masters: (1..=3).map(|i| format!("{tag}m{i}")).collect(),
            work: work.clone(),
            _work_guard: guard,
        };
        let br = c.bridge_ns.clone();
        c.ns.add(&br);
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        let client_ns = format!("{tag}c");
        let mut nodes: Vec<(String, String, String)> = c
            .masters
            .iter()
            .enumerate()
            .map(|(i, ns)| (ns.clone(), format!("v{}", i + 1), MASTERS[i].2.to_string()))
            .collect();
        nodes.push((client_ns.clone(), "vc".into(), "10.77.0.50".into()));
        for (ns, port, addr) in &nodes {
            c.ns.add(ns);
            ip(&[
                "-n", &br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ]);
            ip(&["-n", &br, "link", "set", port, "master", "br0", "up"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
        }

        // TLS key and certificate for the apiserver stand-ins.
        let (crt, key) = (work.join("apiserver.crt"), work.join("apiserver.key"));
        run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=kube-apiserver",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                crt.to_str().unwrap(),
            ],
        );

        // The track script, shared, in a root-owned 0755 directory.
        let scripts = work.join("scripts");
        std::fs::create_dir(&scripts).unwrap();
        std::fs::set_permissions(&scripts, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = scripts.join("check-haproxy.sh");
        std::fs::write(&script, keepalived::render_check_script(PORT)).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

        for (i, ns) in c.masters.clone().iter().enumerate() {
            let node = node_config(MASTERS[i].0, settings.yaml);
            let dir = work.join(format!("m{}", i + 1));
            std::fs::create_dir(&dir).unwrap();
            let hcfg = dir.join("haproxy.cfg");
            std::fs::write(&hcfg, haproxy::render_config(&node, haproxy::CA_FILE)).unwrap();
            let kcfg = dir.join("keepalived.conf");
            std::fs::write(
                &kcfg,
                keepalived::render_config(&node, script.to_str().unwrap()),
            )
            .unwrap();
            std::fs::set_permissions(&kcfg, std::fs::Permissions::from_mode(0o600)).unwrap();
            // Validation with the real tools, in the node's namespace (the
            // interface must exist for keepalived).
            c.nsrun(ns, &["haproxy", "-c", "-q", "-f", hcfg.to_str().unwrap()]);
            c.nsrun(ns, &["keepalived", "-t", "-f", kcfg.to_str().unwrap()]);

            c.spawn(
                &format!("standin{}", i + 1),
                ns,
                &[
                    "python3",
                    helper.to_str().unwrap(),
                    "server",
                    crt.to_str().unwrap(),
                    key.to_str().unwrap(),
                    MASTERS[i].0,
                    "6443",
                ],
            );
            c.start_haproxy(i);
            c.start_keepalived(i);
        }
        // The client, reading its results in a thread.
        let mut child = Command::new("ip")
            .args(["netns", "exec", &client_ns, "python3"])
            .arg(helper)
            .args(["client", VIP, &PORT.to_string(), "0.02"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        c.procs.insert("client".into(), ChildGuard::new(child));
        let reqs = c.requests.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let f: Vec<&str> = line.splitn(4, ' ').collect();
                if f.len() < 3 {
                    continue;
                }
                let r = Request {
                    start: f[0].parse().unwrap_or(0),
                    end: f[1].parse().unwrap_or(0),
                    ok: (f[2] == "ok").then(|| f.get(3).unwrap_or(&"").to_string()),
                };
                reqs.lock().unwrap().push(r);
            }
        });
        c
    }

    fn nsrun(&self, ns: &str, cmd: &[&str]) {
        let mut a = vec!["netns", "exec", ns];
        a.extend_from_slice(cmd);
        ip(&a);
    }

    fn spawn(&mut self, name: &str, ns: &str, cmd: &[&str]) {
        let log = std::fs::File::create(self.work.join(format!("{name}.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        self.procs.insert(name.into(), ChildGuard::new(child));
    }

    fn start_haproxy(&mut self, i: usize) {
        let cfg = self.work.join(format!("m{}/haproxy.cfg", i + 1));
        let ns = self.masters[i].clone();
        self.spawn(
            &format!("haproxy{}", i + 1),
            &ns,
            &["haproxy", "-db", "-f", cfg.to_str().unwrap()],
        );
    }

    fn vrrp_pidfile(&self, i: usize) -> PathBuf {
        self.work.join(format!("m{}/vrrp.pid", i + 1))
    }

    fn start_keepalived(&mut self, i: usize) {
        let d = self.work.join(format!("m{}", i + 1));
        let p = |f: &str| d.join(f).to_string_lossy().into_owned();
        let _ = std::fs::remove_file(self.vrrp_pidfile(i));
        let ns = self.masters[i].clone();
        self.spawn(
            &format!("keepalived{}", i + 1),
            &ns,
            &[
                "keepalived",
                "-n",
                "-l",
                "-D",
                "-P",
                "-f",
                &p("keepalived.conf"),
                "-p",
                &p("keepalived.pid"),
                "-r",
                &p("vrrp.pid"),
                "-c",
                &p("checkers.pid"),
            ],
        );
        let pidfile = self.vrrp_pidfile(i);
        wait_until(5000, || pidfile.exists()).expect("keepalived wrote no VRRP PID file");
    }

    /// Stops a process by PID (SIGKILL). For keepalived the parent is
    /// stopped first so it cannot respawn its VRRP child, then the child
    /// and the parent are killed: a crash, with no clean-up by keepalived.
    fn stop(&mut self, name: &str) {
        let Some(mut g) = self.procs.remove(name) else {
            return;
        };
        if let Some(i) = name.strip_prefix("keepalived") {
            let i: usize = i.parse::<usize>().unwrap() - 1;
            let parent = Pid::from_raw(g.pid() as i32);
            let _ = kill(parent, Signal::SIGSTOP);
            if let Ok(s) = std::fs::read_to_string(self.vrrp_pidfile(i)) {
                if let Ok(pid) = s.trim().parse::<i32>() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            let _ = std::fs::remove_file(self.vrrp_pidfile(i));
        }
        if let Some(mut child) = g.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Indexes of the masters holding the VIP.
    fn holders(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, ns) in self.masters.iter().enumerate() {
            let o = Command::new("ip")
                .args(["-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&o.stdout).contains(&format!("{VIP}/32")) {
                out.push(i);
            }
        }
        out
    }

    fn requests_since(&self, t: i64) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.start >= t)
            .cloned()
            .collect()
    }
}

/// Polls `f` every 10 ms for at most `ms`; the elapsed ms when it held.
fn wait_until(ms: i64, mut f: impl FnMut() -> bool) -> Option<i64> {
    let t0 = now_ms();
    loop {
        if f() {
            return Some(now_ms() - t0);
        }
        if now_ms() - t0 > ms {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for exactly one holder; returns it.
fn settled_holder(c: &Cluster, settings: &Settings) -> Option<usize> {
    // Long enough for an election and a FAULT to clear (rise 2 × 1 s).
    std::thread::sleep(Duration::from_millis(
        (3 * settings.advert_ms + 2500) as u64,
    ));
    let mut h = None;
    wait_until(10_000, || {
        let v = c.holders();
        h = (v.len() == 1).then(|| v[0]);
        h.is_some()
    });
    h
}

/// Client reconnect time after a failure at `t0`: when the first good
/// request that started after the last failed one ended (0 when no request
/// failed). Waits, bounded, until the client has been good for 1 s.
fn client_back_ms(c: &Cluster, t0: i64) -> i64 {
    let good_for_a_second = || {
        let r = c.requests_since(t0);
        let last_fail = r.iter().rposition(|x| x.ok.is_none());
        let after = match last_fail {
            Some(p) => &r[p + 1..],
            None => &r[..],
        };
        after.iter().any(|x| x.ok.is_some())
            && after.last().is_some_and(|x| x.end - after[0].start > 1000)
    };
    wait_until(20_000, good_for_a_second).expect("the client did not get back through the VIP");
    let r = c.requests_since(t0);
    match r.iter().rposition(|x| x.ok.is_none()) {
        None => 0,
        Some(p) => r[p + 1..].iter().find(|x| x.ok.is_some()).unwrap().end - t0,
    }
}

/// Results of one round of scenarios for one setting.
#[derive(Default)]
struct Round {
    lines: Vec<String>,
    split_brain: usize,
}

/// The one holder once the cluster settled. More than one holder counts
/// as a split brain (and is waited out, bounded); none fails the test.
fn check_settled(c: &Cluster, s: &Settings, round: &mut Round, after: &str) -> usize {
    if let Some(h) = settled_holder(c, s) {
        return h;
    }
    let v = c.holders();
    if v.len() > 1 {
        round.split_brain += 1;
        println!(
            "vip-split-brain settings={} after={after:?} holders={v:?}",
            s.name
        );
        if let Some(h) = settled_holder(c, s) {
            return h;
        }
    }
    panic!(
        "{}: after {after}: VIP holders {:?}, expected exactly one",
        s.name,
        c.holders()
    );
}

fn failure_scenario(c: &mut Cluster, s: &Settings, round: &mut Round, kind: &str) {
    let h = check_settled(c, s, round, "start");
    let t0 = now_ms();
    match kind {
        "crash" => {
            c.stop(&format!("keepalived{}", h + 1));
            // What systemd runs from the rendered drop-in once keepalived
            // is dead (ExecStopPost).
            let node = node_config(MASTERS[h].0, s.yaml);
            let args = keepalived::vip_cleanup_args(&node);
            let mut a = vec!["-n", c.masters[h].as_str()];
            a.extend(args.iter().map(String::as_str));
            let _ = Command::new("ip").args(&a).status();
        }
        "haproxy" => c.stop(&format!("haproxy{}", h + 1)),
        "linkcut" => ip(&[
            "-n",
            &c.bridge_ns,
            "link",
            "set",
            &format!("v{}", h + 1),
            "down",
        ]),
        _ => unreachable!(),
    }
    wait_until(20_000, || {
        let v = c.holders();
        v.len() == 1 && v[0] != h
    })
    .unwrap_or_else(|| {
        panic!(
            "{}: {kind}: the VIP did not move (holders {:?})",
            s.name,
            c.holders()
        )
    });
    let moved = now_ms() - t0;
    let back = client_back_ms(c, t0);
    let line = format!(
        "vip-scenario settings={} kind={kind} vip_move_ms={moved} client_back_ms={back}",
        s.name
    );
    println!("{line}");
    round.lines.push(line);
    // Recover the failed master; it comes back as a backup.
    match kind {
        "crash" => c.start_keepalived(h),
        "haproxy" => c.start_haproxy(h),
        _ => ip(&[
            "-n",
            &c.bridge_ns,
            "link",
            "set",
            &format!("v{}", h + 1),
            "up",
        ]),
    }
    let after = check_settled(c, s, round, &format!("{kind} recovery"));
    assert_ne!(
        after, h,
        "{}: {kind}: the recovered master took the VIP back at once",
        s.name
    );
}

fn dead_backend_scenario(c: &mut Cluster, s: &Settings, round: &mut Round) {
    let h = check_settled(c, s, round, "start");
    let b = (h + 1) % 3;
    let t0 = now_ms();
    c.stop(&format!("standin{}", b + 1));
    // Once stop() returns the backend is dead. A request that was already
    // being answered by it when it died cannot be saved by a TCP load
    // balancer (the response is cut mid-stream); every request that
    // starts after that must be redispatched to a live backend.
    let t_dead = now_ms();
    // fall 2 × inter 1 s, plus margin.
    std::thread::sleep(Duration::from_millis(4000));
    let r = c.requests_since(t0);
    let in_flight = r
        .iter()
        .filter(|x| x.start <= t_dead && x.ok.is_none())
        .count();
    let failed = r
        .iter()
        .filter(|x| x.start > t_dead && x.ok.is_none())
        .count();
    let late_dead = r
        .iter()
        .filter(|x| x.start > t0 + 3000 && x.ok.as_deref() == Some(MASTERS[b].0))
        .count();
    let line = format!(
        "vip-scenario settings={} kind=backend requests={} failed_requests={failed} cut_in_flight={in_flight}",
        s.name,
        r.len()
    );
    assert!(
        in_flight <= 1,
        "{}: {in_flight} requests in flight failed (the client has one connection)",
        s.name
    );
    println!("{line}");
    round.lines.push(line);
    assert!(
        r.len() > 20,
        "{}: too few client requests: {}",
        s.name,
        r.len()
    );
    assert_eq!(
        failed, 0,
        "{}: requests that started after the backend died failed",
        s.name
    );
    assert_eq!(
        late_dead, 0,
        "{}: the dead backend stayed in rotation",
        s.name
    );
}

fn run_settings(s: &Settings, rounds: usize, helper: &Path) {
    let mut c = Cluster::start(s, helper);
    let mut round = Round::default();
    let first = check_settled(&c, s, &mut round, "start");
    wait_until(10_000, || {
        c.requests_since(0).iter().any(|r| r.ok.is_some())
    })
    .expect("the client never reached VIP:16443");
    println!("vip-start settings={} holder={}", s.name, MASTERS[first].0);
    for _ in 0..rounds {
        for kind in ["crash", "haproxy", "linkcut"] {
            failure_scenario(&mut c, s, &mut round, kind);
        }
        dead_backend_scenario(&mut c, s, &mut round);
        let i = (0..3).find(|i| !c.procs.contains_key(&format!("standin{}", i + 1)));
        if let Some(i) = i {
            let (crt, key) = (c.work.join("apiserver.crt"), c.work.join("apiserver.key"));
            let ns = c.masters[i].clone();
            c.spawn(
                &format!("standin{}", i + 1),
                &ns,
                &[
                    "python3",
                    helper.to_str().unwrap(),
                    "server",
                    crt.to_str().unwrap(),
                    key.to_str().unwrap(),
                    MASTERS[i].0,
                    "6443",
                ],
            );
        }
    }
    println!(
        "vip-settled settings={} split_brain={}",
        s.name, round.split_brain
    );
    assert_eq!(
        round.split_brain, 0,
        "{}: two masters held the VIP once settled",
        s.name
    );
}

#[test]
fn vip_moves_and_clients_reconnect_with_real_keepalived_and_haproxy() {
    let test = "vip failover";
    if !require_root(test) || !require(test, &["ip", "keepalived", "haproxy", "openssl", "python3"])
    {
        return;
    }
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vip/helper.py");
    let rounds: usize = std::env::var("NODEBAKE_VIP_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let which = std::env::var("NODEBAKE_VIP_SETTINGS").unwrap_or_else(|_| "fast,default".into());
    for name in which.split(',') {
        let s = match name {
            "default" => &DEFAULT,
            "fast" => &FAST,
            other => panic!("NODEBAKE_VIP_SETTINGS: unknown `{other}`"),
        };
        run_settings(s, rounds, &helper);
    }
}
