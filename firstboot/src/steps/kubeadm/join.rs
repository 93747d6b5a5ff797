//! `kubeadm init` on the initialiser; on every other node the wait for the
//! control-plane endpoint, then `kubeadm join`. Both retry a bounded
//! number of times with `kubeadm reset -f` of the partial state between.

use std::path::PathBuf;

use anyhow::{bail, Result};

use super::{
    arg_path, effective_path, joined, kubeadm, reset_partial_state, KUBEADM_CONFIG, PKI_DIR,
};
use crate::kubeadm::config::{endpoint, uses_shared_ca, JoinPath};
use crate::kubeadm::endpoint::{probe, probe_command, wait_for_endpoint, Backoff, Probe};
use crate::kubeadm::etcd::{
    mint_client_cert, remove_stale_etcd_member, wait_for_join_turn, EtcdAccess,
};
use crate::runner::{Cmd, Outcome};
use crate::step::{Ctx, Pending, Step};
use nodebake_contract::node::NodeConfig;
use nodebake_contract::profile::Role;

/// Where the rebuild path keeps its etcd client certificate (0700).
pub const ETCD_CLIENT_DIR: &str = "/etc/nodebake/etcd-client";

fn not_joined(cx: &Ctx<'_>, what: &str) -> Vec<Pending> {
    if joined(cx) {
        Vec::new()
    } else {
        vec![Pending::Runtime(format!(
            "{what} (kubeadm's files are not there yet)"
        ))]
    }
}

/// kubeadm's refusal to join under the name of a Node that is Ready
/// (`a Node with name "x" and status "Ready" already exists in the
/// cluster`): on a rebuild, the old machine's Node until the node
/// lifecycle controller notices its kubelet is gone.
pub fn is_ready_node_refusal(error: &str) -> bool {
    error.contains("already exists in the cluster") && error.contains("status \"Ready\"")
}

/// Runs `cmd` up to `cx.join.attempts.tries` times (the metadata's
/// `kubeadm.attempts` when set), resetting the partial
/// state after each failure. A refusal because a Node of this name is
/// still Ready is not counted as an attempt: it is waited out within
/// `cx.join.stale_node` (the old machine's Node on a rebuild goes
/// NotReady once the control plane notices), then named as the culprit.
fn run_with_retries(
    cx: &mut Ctx<'_>,
    cmd: Cmd,
    what: &str,
    before: fn(&mut Ctx<'_>) -> Result<()>,
) -> Result<()> {
    let mut b = cx.join.attempts.clone();
    if let Some(n) = cx.node.kubeadm.attempts {
        b.tries = n;
    }
    let stale = cx.join.stale_node.clone();
    let tries = b.tries.max(1);
    let mut last = String::new();
    let (mut n, mut waits) = (1, 0);
    while n <= tries {
        before(cx)?;
        eprintln!("nodebake-firstboot: {what}: attempt {n}/{tries}: {cmd}");
        let e = match cx.run(cmd.clone()) {
            Ok(_) => return Ok(()),
            Err(e) => format!("{e:#}"),
        };
        reset_partial_state(cx)?;
        if is_ready_node_refusal(&e) {
            waits += 1;
            if waits > stale.tries {
                let name = &cx.node.hostname;
                bail!(
                    "{what}: a Node named {name} stayed Ready for {waits} tries: another machine is \
                     running as {name}, or no controller-manager marks a silent Node NotReady; \
                     stop that machine or `kubectl delete node {name}` (kubeadm: {e})"
                );
            }
            eprintln!(
                "nodebake-firstboot: {what}: a Node named {} is still Ready (the machine this one \
                 replaces, until the control plane notices it is gone); waiting {}/{} before \
                 trying again",
                cx.node.hostname, waits, stale.tries
            );
            std::thread::sleep(stale.pause(waits));
            continue;
        }
        eprintln!("nodebake-firstboot: {what}: attempt {n}/{tries} failed: {e}");
        last = e;
        if n < tries {
            std::thread::sleep(b.pause(n));
        }
        n += 1;
    }
    bail!("{what} failed {tries} times; last: {last}")
}

/// etcd's data directory (kubeadm's default `dataDir`).
pub const ETCD_DATA_DIR: &str = "/var/lib/etcd";

/// Refuses `what` on a master whose etcd data directory holds a member
/// while kubeadm's own files are gone (a state disk that kept etcd but
/// lost /etc/kubernetes, or data restored by hand): `kubeadm init` would
/// start a second cluster over it, and the reset between attempts would
/// delete it. The operator decides; nothing is changed.
fn refuse_over_etcd_data(cx: &Ctx<'_>, what: &str) -> Result<()> {
    let member = format!("{ETCD_DATA_DIR}/member");
    if cx.root.exists(&member) {
        bail!(
            "{what}: {member} holds an etcd member's data but this node has no kubeadm state              (/etc/kubernetes): refusing to run kubeadm over it (an init would start a second              cluster, a failed attempt's reset would delete the data). Restore /etc/kubernetes              with it, or, if this data may go, remove {ETCD_DATA_DIR}/member (on a PXE node:              wipe its state disk) and run again"
        );
    }
    Ok(())
}

/// `kubeadm init --config` (+ `--upload-certs` without shared CA material).
pub struct KubeadmInit;

impl Step for KubeadmInit {
    fn id(&self) -> &'static str {
        "kubeadm-init"
    }

    fn describe(&self) -> &'static str {
        "kubeadm init from the rendered configuration (initialiser)"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        if effective_path(cx)? != JoinPath::Init {
            return Ok(Vec::new());
        }
        Ok(not_joined(cx, "kubeadm init"))
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        let mut args = vec![
            "init".to_string(),
            "--config".into(),
            arg_path(cx, KUBEADM_CONFIG),
        ];
        if !uses_shared_ca(cx.node) {
            args.push("--upload-certs".into());
        }
        refuse_over_etcd_data(cx, "kubeadm init")?;
        check_baked_images(cx)?;
        run_with_retries(cx, kubeadm(args), "kubeadm init", |_| Ok(()))
    }
}

/// With `kubeadm.image_pull_policy: Never` kubeadm pulls nothing, so
/// before it runs every image this node will run must be in containerd
/// (else its pods fail with ErrImageNeverPull long after). The list is
/// kubeadm's own (`kubeadm config images list` for the node's version and
/// repository) without the images of skipped addons; a worker runs only
/// kube-proxy and the pause image. Each is looked up with `crictl
/// inspecti`; every missing one is named.
fn check_baked_images(cx: &mut Ctx<'_>) -> Result<()> {
    if cx.node.kubeadm.image_pull_policy.as_deref() != Some("Never") {
        return Ok(());
    }
    let list = kubeadm([
        "config".to_string(),
        "images".into(),
        "list".into(),
        "--kubernetes-version".into(),
        format!("v{}", cx.node.kubernetes_version),
        "--image-repository".into(),
        cx.node.image_repository.clone(),
    ]);
    let Outcome::Ran(out) = cx.run(list)? else {
        return Ok(());
    };
    let needed = images_this_node_runs(cx.node, &out);
    let mut missing = Vec::new();
    for image in &needed {
        let inspect = Cmd::new(
            "crictl",
            [
                "-r".to_string(),
                format!("unix://{}", cx.containerd.address),
                "inspecti".into(),
                image.clone(),
            ],
        );
        if cx.run(inspect).is_err() {
            missing.push(image.clone());
        }
    }
    if !missing.is_empty() {
        bail!(
            "`nodebake.kubeadm.image_pull_policy` is Never but {} image(s) this node runs are not \
             in containerd: {} (bake them: `images = \"auto\"` in the image spec, or allow pulls)",
            missing.len(),
            missing.join(", ")
        );
    }
    eprintln!(
        "nodebake-firstboot: all {} images kubeadm will run here are in containerd (image pull policy Never)",
        needed.len()
    );
    Ok(())
}

/// The images of `kubeadm config images list` output `node` runs.
pub fn images_this_node_runs(node: &NodeConfig, list: &str) -> Vec<String> {
    let skipped = |addon: &str| {
        node.kubeadm
            .skip_phases
            .iter()
            .any(|p| p == "addon" || p == &format!("addon/{addon}"))
    };
    let name = |image: &str| {
        let last = image.rsplit('/').next().unwrap_or(image);
        last.split(':').next().unwrap_or(last).to_string()
    };
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|i| !(name(i) == "coredns" && skipped("coredns")))
        .filter(|i| !(name(i) == "kube-proxy" && skipped("kube-proxy")))
        .filter(|i| {
            node.role == Role::Master || ["kube-proxy", "pause"].contains(&name(i).as_str())
        })
        .map(str::to_string)
        .collect()
}

/// Waits until the endpoint answers TLS with a certificate of the cluster
/// CA (masters with shared CA material verify the chain; workers, which
/// only have the discovery hash, wait for a handshake and let kubeadm's
/// discovery pin the CA).
pub struct WaitEndpoint;

fn endpoint_probe(cx: &Ctx<'_>) -> Cmd {
    let target = cx
        .join
        .endpoint_target
        .clone()
        .unwrap_or_else(|| endpoint(cx.node));
    let ca: Option<PathBuf> = (cx.node.role == Role::Master && uses_shared_ca(cx.node))
        .then(|| cx.root.path(&format!("{PKI_DIR}/ca.crt")));
    probe_command(&target, &cx.node.endpoint.dns_name, ca.as_deref())
}

impl Step for WaitEndpoint {
    fn id(&self) -> &'static str {
        "control-plane-endpoint"
    }

    fn describe(&self) -> &'static str {
        "wait (bounded, backoff) until the control-plane endpoint answers TLS with the cluster CA"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        if joined(cx) || effective_path(cx)? == JoinPath::Init {
            return Ok(Vec::new());
        }
        // A few quick probes, not one: right after the wait answered, a
        // single probe through a load balancer that still sends some
        // connections to masters that are not up yet could fail and fail
        // the whole first boot.
        if cx.live() && endpoint_answers(cx, &cx.join.endpoint_confirm) {
            return Ok(Vec::new());
        }
        Ok(vec![Pending::Runtime(format!(
            "waiting for the control-plane endpoint {}",
            endpoint(cx.node)
        ))])
    }

    /// With the wait's whole patience: an endpoint that answered once can
    /// stop answering for a while (the initialiser's kubelet restarting its
    /// API server while `kubeadm init` finishes, as the real e2e saw on a
    /// busy host); that is no reason to fail a first boot.
    fn verify(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        if joined(cx) || effective_path(cx)? == JoinPath::Init {
            return Ok(Vec::new());
        }
        if !cx.live() {
            return self.check(cx);
        }
        let what = format!("control-plane endpoint {} (again)", endpoint(cx.node));
        Ok(
            match wait_for_endpoint(cx.runner, &endpoint_probe(cx), &what, &cx.join.endpoint) {
                Ok(_) => Vec::new(),
                Err(e) => vec![Pending::Runtime(format!("{e:#}"))],
            },
        )
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        let what = format!("control-plane endpoint {}", endpoint(cx.node));
        wait_for_endpoint(cx.runner, &endpoint_probe(cx), &what, &cx.join.endpoint)?;
        Ok(())
    }
}

/// Whether the endpoint answers now, within `b.tries` quick probes: the
/// endpoint step's check, and the initialiser telling a fresh cluster from
/// its own rebuild.
pub fn endpoint_answers(cx: &Ctx<'_>, b: &Backoff) -> bool {
    let cmd = endpoint_probe(cx);
    let tries = b.tries.max(1);
    for n in 1..=tries {
        match probe(cx.runner, &cmd) {
            Probe::Ok => return true,
            Probe::Skipped => return false,
            Probe::Failed(_) if n < tries => std::thread::sleep(b.pause(n)),
            Probe::Failed(_) => {}
        }
    }
    false
}

/// `kubeadm join --config` (the configuration says control plane or
/// worker).
pub struct KubeadmJoin;

impl Step for KubeadmJoin {
    fn id(&self) -> &'static str {
        "kubeadm-join"
    }

    fn describe(&self) -> &'static str {
        "kubeadm join from the rendered configuration (control plane or worker)"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        if effective_path(cx)? == JoinPath::Init {
            return Ok(Vec::new());
        }
        Ok(not_joined(cx, "kubeadm join"))
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        let args = vec![
            "join".to_string(),
            "--config".into(),
            arg_path(cx, KUBEADM_CONFIG),
        ];
        if cx.node.role == Role::Master {
            refuse_over_etcd_data(cx, "kubeadm join --control-plane")?;
        }
        check_baked_images(cx)?;
        run_with_retries(
            cx,
            kubeadm(args),
            "kubeadm join",
            prepare_control_plane_join,
        )
    }
}

/// Before every control-plane join attempt (a rebuilt master, or a retry
/// after a join that added its member and failed): remove any etcd member
/// with this node's peer URL through a healthy member, with a client
/// certificate minted from the shared etcd CA. Without shared CA material
/// there is no etcd CA to mint from: logged and skipped.
fn prepare_control_plane_join(cx: &mut Ctx<'_>) -> Result<()> {
    if cx.node.role != Role::Master {
        return Ok(());
    }
    if !uses_shared_ca(cx.node) {
        eprintln!(
            "nodebake-firstboot: no shared etcd CA in the metadata: a stale etcd member of this node \
             cannot be removed automatically"
        );
        return Ok(());
    }
    let etcd_ca = arg_path(cx, &format!("{PKI_DIR}/etcd/ca.crt"));
    let etcd_key = arg_path(cx, &format!("{PKI_DIR}/etcd/ca.key"));
    let (cert, key) = mint_client_cert(
        cx.runner,
        &cx.root.path(ETCD_CLIENT_DIR),
        "etcd-client",
        &etcd_ca,
        &etcd_key,
        "nodebake-firstboot-rebuild",
        None,
    )?;
    let me = cx.node.node_ip.addr;
    let access = EtcdAccess {
        endpoints: cx
            .node
            .masters
            .iter()
            .filter(|m| m.ip != me)
            .map(|m| format!("https://{}:{}", m.ip, cx.join.etcd_client_port))
            .collect(),
        cacert: etcd_ca,
        cert,
        key,
    };
    let peer = |ip| format!("https://{ip}:{}", cx.join.etcd_peer_port);
    let peer_url = peer(me);
    // Join order: the initialiser, then the masters in metadata order.
    let mut order: Vec<_> = cx.node.masters.iter().collect();
    order.sort_by_key(|m| m.name != cx.node.initialiser);
    let earlier: Vec<String> = order
        .iter()
        .take_while(|m| m.ip != me)
        .map(|m| peer(m.ip))
        .collect();
    remove_stale_etcd_member(cx.runner, &access, &peer_url, &cx.join.etcd)?;
    wait_for_join_turn(cx.runner, &access, &earlier, &peer_url, &cx.join.turn)?;
    delete_not_ready_node(cx)
}

/// A rebuilt master's old Node object: deleted when it is NotReady, or
/// Ready with a Lease that no kubelet renews any more, through the
/// endpoint with a `system:masters` client certificate minted from the
/// cluster CA. A Ready Node whose Lease moves is left alone (another
/// machine holds the name; kubeadm refuses and the join waits, see
/// `run_with_retries`). Failures to ask are logged, not fatal.
fn delete_not_ready_node(cx: &mut Ctx<'_>) -> Result<()> {
    let ca = arg_path(cx, &format!("{PKI_DIR}/ca.crt"));
    let (cert, key) = mint_client_cert(
        cx.runner,
        &cx.root.path(ETCD_CLIENT_DIR),
        "apiserver-client",
        &ca,
        &arg_path(cx, &format!("{PKI_DIR}/ca.key")),
        "nodebake-firstboot-rebuild",
        Some("system:masters"),
    )?;
    let server = format!(
        "https://{}",
        cx.join
            .endpoint_target
            .clone()
            .unwrap_or_else(|| endpoint(cx.node))
    );
    let kubectl = |args: &[&str]| {
        let mut all = vec![
            format!("--server={server}"),
            format!("--certificate-authority={ca}"),
            format!("--client-certificate={cert}"),
            format!("--client-key={key}"),
            format!("--tls-server-name={}", cx.node.endpoint.dns_name),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        Cmd::new("kubectl", all)
    };
    let name = cx.node.hostname.clone();
    let ready = kubectl(&[
        "get",
        "node",
        &name,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    match cx.run(ready) {
        Ok(Outcome::Skipped) => Ok(()),
        Ok(Outcome::Ran(s)) if s.trim() == "True" => {
            // Ready only because the node lifecycle controller has not yet
            // noticed? The kubelet renews its Lease every 10 s: one that
            // does not move for longer belongs to a machine that is gone.
            // No clocks compared (this node's may not be set yet).
            let lease = kubectl(&[
                "get",
                "lease",
                "-n",
                "kube-node-lease",
                &name,
                "-o",
                "jsonpath={.spec.renewTime}",
            ]);
            let first = cx.run(lease.clone());
            std::thread::sleep(cx.join.lease_watch);
            let second = cx.run(lease);
            match (first, second) {
                (Ok(Outcome::Ran(a)), Ok(Outcome::Ran(b))) if a == b && !a.trim().is_empty() => {
                    eprintln!(
                        "nodebake-firstboot: deleting the stale Node {name}: Ready, but its Lease was \
                         not renewed in {} s (its kubelet is gone)",
                        cx.join.lease_watch.as_secs()
                    );
                    cx.run(kubectl(&["delete", "node", &name]))?;
                }
                (Ok(Outcome::Ran(_)), Ok(Outcome::Ran(_))) => eprintln!(
                    "nodebake-firstboot: a Ready Node named {name} renews its Lease: another machine \
                     runs as {name}; kubeadm will refuse until it stops"
                ),
                (a, b) => eprintln!(
                    "nodebake-firstboot: could not read the Lease of Node {name}: {}",
                    a.and(b).err().map(|e| format!("{e:#}")).unwrap_or_default()
                ),
            }
            Ok(())
        }
        Ok(Outcome::Ran(s)) => {
            eprintln!(
                "nodebake-firstboot: deleting the stale Node {name} (Ready={})",
                s.trim()
            );
            cx.run(kubectl(&["delete", "node", &name]))?;
            Ok(())
        }
        Err(e) if format!("{e:#}").contains("NotFound") => Ok(()),
        Err(e) => {
            eprintln!("nodebake-firstboot: could not look up Node {name}: {e:#}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_ready_node_refusal;

    #[test]
    fn knows_real_kubeadms_refusal_of_a_ready_name() {
        // kubeadm v1.28.7's words, from a rebuilt worker's console.
        let real = "`kubeadm join --config /etc/nodebake/kubeadm.yaml` failed (exit status: 1): \
                    error execution phase kubelet-start: a Node with name \"k8s-node1\" and status \
                    \"Ready\" already exists in the cluster. You must delete the existing Node or \
                    change the name of this new joining Node";
        assert!(is_ready_node_refusal(real));
        assert!(!is_ready_node_refusal(
            &real.replace("\"Ready\"", "\"NotReady\"")
        ));
        assert!(!is_ready_node_refusal(
            "error execution phase kubelet-start: timed out waiting for the condition"
        ));
    }
}
