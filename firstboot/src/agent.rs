//! The agent's verbs: `run` (every step, journaled, run once), `plan`
//! (ordered steps with reasons, no changes) and `status` (journal).
//!
//! Everything is validated before the first change: metadata, image
//! metadata and role profile are loaded and checked, then the steps run.

use anyhow::{bail, Context, Result};
use nodebake_contract::image::ImageMetadata;
use nodebake_contract::layout;
use nodebake_contract::node::NodeConfig;
use nodebake_contract::profile::{Role, RoleProfile};

use crate::journal::{now, Journal};
use crate::metadata::{self, http::RetryPolicy, DiscoveryOptions, Metadata};
use crate::notify::notify;
use crate::root::Root;
use crate::runner::Runner;
use crate::step::{ContainerdSettings, Ctx, JoinSettings, Pending, Step};
use crate::steps;

/// Options of `run` and `plan`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Root all files are changed under.
    pub root: Root,
    /// Explicit metadata source (`--metadata`), else discovery.
    pub metadata: Option<String>,
    /// Run even when the done marker exists (every step is re-checked).
    pub again: bool,
    /// containerd location.
    pub containerd: ContainerdSettings,
    /// Waits and retries of the kubeadm steps.
    pub join: JoinSettings,
    /// HTTP retry policy.
    pub retry: RetryPolicy,
    /// Test hook: fail right after applying this step, before it is
    /// journaled, as if the agent had been killed there.
    pub fail_after: Option<String>,
}

impl RunOptions {
    /// Options for `root` with defaults.
    pub fn new(root: Root) -> Self {
        Self {
            root,
            metadata: None,
            again: false,
            containerd: ContainerdSettings::default(),
            join: JoinSettings::default(),
            retry: metadata::default_retry(),
            fail_after: None,
        }
    }
}

/// How one step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// Journaled as finished for this metadata by an earlier run.
    Journaled,
    /// Its postcondition already held.
    AlreadyInPlace,
    /// Applied; items that could not be verified because commands were
    /// skipped are listed.
    Applied {
        /// Runtime items left unverified (recording runner).
        unverified: Vec<String>,
    },
}

/// What `run` did.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Where the metadata came from (None when already complete).
    pub source: Option<String>,
    /// Each step and its outcome, in order.
    pub steps: Vec<(String, StepOutcome)>,
    /// Files changed, in order.
    pub changed: Vec<String>,
    /// Actions recorded as skipped by the runner.
    pub skipped: Vec<String>,
    /// True when the done marker was there and nothing ran.
    pub already_complete: bool,
}

/// Everything a run needs, loaded and validated before any change.
pub struct Loaded {
    /// The metadata.
    pub metadata: Metadata,
    /// The validated node.
    pub node: NodeConfig,
    /// The validated `network-config`, if any.
    pub network: Option<crate::steps::network::NetworkConfig>,
    /// Image metadata, when the root has it.
    pub image: Option<ImageMetadata>,
    /// The role profile in effect.
    pub profile: RoleProfile,
}

/// Fetches metadata (explicit source or discovery) and validates it.
pub fn load(opts: &RunOptions, live: bool) -> Result<Loaded> {
    let d = DiscoveryOptions {
        root: opts.root.clone(),
        live,
        retry: opts.retry.clone(),
    };
    let metadata = match &opts.metadata {
        Some(spec) => {
            let m = metadata::explicit(spec, &d)
                .fetch()
                .with_context(|| format!("metadata source {spec}"))?
                .with_context(|| format!("{spec} holds no metadata"))?;
            eprintln!(
                "nodebake-firstboot: metadata from {} (--metadata)",
                m.source
            );
            m
        }
        None => metadata::fetch_first(&metadata::discover(&d))?,
    };
    let node = metadata.node_config()?;
    let network = metadata.network_config()?;
    for w in &node.warnings {
        eprintln!("nodebake-firstboot: warning: {w}");
    }
    let image = load_image(&opts.root)?;
    if let Some(w) = image.as_ref().and_then(|i| version_mismatch(i, &node)) {
        eprintln!("nodebake-firstboot: warning: {w}");
    }
    let profile = load_profile(&opts.root, &node)?;
    Ok(Loaded {
        metadata,
        node,
        network,
        image,
        profile,
    })
}

/// A warning when the image was baked for another Kubernetes version than
/// the metadata asks for (kubeadm then deploys images that are not baked,
/// or refuses the version skew).
pub fn version_mismatch(image: &ImageMetadata, node: &NodeConfig) -> Option<String> {
    let baked = image.kubernetes_version.trim_start_matches('v');
    let wanted = node.kubernetes_version.to_string();
    (!baked.is_empty() && baked != wanted).then(|| {
        format!(
            "the image {} was baked with Kubernetes {baked}, the metadata asks for {wanted} \
             (kubeadm will look for images that are not baked, or refuse the skew)",
            image.name
        )
    })
}

/// Reads [`layout::IMAGE_METADATA`] under `root`, if present.
pub fn load_image(root: &Root) -> Result<Option<ImageMetadata>> {
    root.read_opt(layout::IMAGE_METADATA)?
        .map(|t| {
            serde_json::from_str(&t).with_context(|| format!("parsing {}", layout::IMAGE_METADATA))
        })
        .transpose()
}

/// The role profile: `<PROFILES_DIR>/<profile>.toml` when baked; the
/// built-in one for the role when the node names no profile of its own.
pub fn load_profile(root: &Root, node: &NodeConfig) -> Result<RoleProfile> {
    let path = format!("{}/{}.toml", layout::PROFILES_DIR, node.profile);
    let role_name = match node.role {
        Role::Master => "master",
        Role::Worker => "worker",
    };
    match root.read_opt(&path)? {
        Some(text) => {
            let p = RoleProfile::parse(&text, &node.profile).with_context(|| path.clone())?;
            if p.role != node.role {
                bail!("profile {path} is for another role than `{role_name}`");
            }
            Ok(p)
        }
        None if node.profile == role_name => Ok(RoleProfile {
            name: role_name.into(),
            role: node.role,
            description: "built-in".into(),
            kernel_modules: Vec::new(),
            firewall_ports: Vec::new(),
            enable_units: Vec::new(),
            load_balancer: node.role == Role::Master,
            bootstrap_token_ttl: None,
            keep_bootstrap_token: None,
        }),
        None => bail!(
            "field `nodebake.profile`: profile `{}` is not baked ({path} is missing)",
            node.profile
        ),
    }
}

/// One line of a plan.
#[derive(Debug, Clone)]
pub struct PlanLine {
    /// Step id.
    pub id: &'static str,
    /// What the step is for.
    pub describe: &'static str,
    /// Why it would (or would not) run.
    pub reason: String,
}

/// The ordered steps with the reason each would run. Changes nothing.
pub fn plan(
    loaded: &Loaded,
    root: &Root,
    runner: &dyn Runner,
    cs: &ContainerdSettings,
) -> Result<Vec<PlanLine>> {
    let mut journal = Journal::load(root)?;
    journal.bind_to(&loaded.metadata.digest(), &loaded.metadata.source);
    let join = JoinSettings::default();
    let cx = ctx(loaded, root, runner, cs, &join);
    let mut out = Vec::new();
    for s in steps::all_steps(&loaded.node, &loaded.profile) {
        let reason = if journal.is_done(s.id()) {
            "done (journal)".to_string()
        } else {
            let p = s.check(&cx)?;
            if p.is_empty() {
                "nothing to do: already in place".into()
            } else {
                format!(
                    "will apply: {}",
                    p.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
        };
        out.push(PlanLine {
            id: s.id(),
            describe: s.describe(),
            reason,
        });
    }
    Ok(out)
}

fn ctx<'a>(
    loaded: &'a Loaded,
    root: &'a Root,
    runner: &'a dyn Runner,
    cs: &'a ContainerdSettings,
    join: &'a JoinSettings,
) -> Ctx<'a> {
    Ctx {
        root,
        runner,
        node: &loaded.node,
        network: loaded.network.as_ref(),
        image: loaded.image.as_ref(),
        profile: &loaded.profile,
        containerd: cs,
        join,
        changed: Vec::new(),
    }
}

/// Runs one step: check, apply when pending, verify.
fn run_step(step: &dyn Step, cx: &mut Ctx<'_>) -> Result<StepOutcome> {
    let pending = step.check(cx).context("checking")?;
    if pending.is_empty() {
        return Ok(StepOutcome::AlreadyInPlace);
    }
    step.apply(cx).context("applying")?;
    let left = step.verify(cx).context("verifying")?;
    let (files, runtime): (Vec<_>, Vec<_>) = left
        .into_iter()
        .partition(|p| matches!(p, Pending::File(_)));
    if !files.is_empty() || (cx.live() && !runtime.is_empty()) {
        let all: Vec<String> = files
            .iter()
            .chain(runtime.iter())
            .map(ToString::to_string)
            .collect();
        bail!("still pending after apply: {}", all.join("; "));
    }
    Ok(StepOutcome::Applied {
        unverified: runtime.iter().map(ToString::to_string).collect(),
    })
}

/// `run`: every step, journaled; the done marker only after all succeeded.
pub fn run(opts: &RunOptions, runner: &dyn Runner) -> Result<RunReport> {
    let root = &opts.root;
    if root.exists(layout::FIRSTBOOT_DONE) && !opts.again {
        return Ok(RunReport {
            already_complete: true,
            ..RunReport::default()
        });
    }
    notify("STATUS=reading metadata");
    let loaded = load(opts, runner.is_live())?;
    let mut journal = Journal::load(root)?;
    journal.bind_to(&loaded.metadata.digest(), &loaded.metadata.source);
    let mut cx = ctx(&loaded, root, runner, &opts.containerd, &opts.join);
    let all = steps::all_steps(&loaded.node, &loaded.profile);
    let mut report = RunReport {
        source: Some(loaded.metadata.source.clone()),
        ..RunReport::default()
    };
    for (i, step) in all.iter().enumerate() {
        let id = step.id();
        notify(&format!("STATUS=step {}/{}: {id}", i + 1, all.len()));
        if journal.is_done(id) && !opts.again {
            report.steps.push((id.into(), StepOutcome::Journaled));
            continue;
        }
        let outcome = run_step(step.as_ref(), &mut cx)
            .and_then(|o| match &opts.fail_after {
                Some(f) if f == id => bail!("injected failure after applying step {id}"),
                _ => Ok(o),
            })
            .with_context(|| format!("step {id}"));
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                journal.fail(id, &e);
                journal.save(root)?;
                notify(&format!("STATUS=failed at step {id}"));
                return Err(e);
            }
        };
        let label = match outcome {
            StepOutcome::AlreadyInPlace => "already in place",
            _ => "applied",
        };
        journal.finish(id, label);
        journal.save(root)?;
        report.steps.push((id.into(), outcome));
    }
    journal.completed_at = Some(now());
    journal.save(root)?;
    root.write(
        layout::FIRSTBOOT_DONE,
        format!("metadata {}\n", loaded.metadata.digest()).as_bytes(),
        0o644,
    )?;
    notify("READY=1\nSTATUS=first boot complete");
    report.changed = cx.changed;
    report.skipped = runner.skipped();
    Ok(report)
}

/// `reconcile`: after first boot, the steps that depend on who else is in
/// the cluster — the hosts block, haproxy's backends and keepalived's
/// peers (reloaded, never restarted, while they run) and on masters the
/// etcd members of masters no longer listed — checked against the node's
/// current metadata and applied where they differ, without a reboot. The
/// metadata must describe this machine (the hostname first boot set). Not
/// journaled: the first-boot journal stays as it was.
pub fn reconcile(opts: &RunOptions, runner: &dyn Runner) -> Result<RunReport> {
    let root = &opts.root;
    if !root.exists(layout::FIRSTBOOT_DONE) {
        bail!(
            "first boot has not completed on this node ({} is absent): reconcile only converges \
             a node that joined; run `nodebake-firstboot run`",
            layout::FIRSTBOOT_DONE
        );
    }
    let loaded = load(opts, runner.is_live())?;
    if let Some(h) = root.read_opt("/etc/hostname")? {
        if h.trim() != loaded.node.hostname {
            bail!(
                "the metadata ({}) is for {}, this node is {}: nothing changed",
                loaded.metadata.source,
                loaded.node.hostname,
                h.trim()
            );
        }
    }
    let mut cx = ctx(&loaded, root, runner, &opts.containerd, &opts.join);
    let mut report = RunReport {
        source: Some(loaded.metadata.source.clone()),
        ..RunReport::default()
    };
    for step in steps::reconcile_steps() {
        let id = step.id();
        let outcome = run_step(step.as_ref(), &mut cx).with_context(|| format!("step {id}"))?;
        report.steps.push((id.into(), outcome));
    }
    report.changed = cx.changed;
    report.skipped = runner.skipped();
    Ok(report)
}

/// Where the node is on its join path, from the journaled steps.
pub fn join_phase(done: &[&str]) -> &'static str {
    let has = |id: &str| done.contains(&id);
    if has("node-ready") {
        "Ready"
    } else if has("kubeadm-init") || has("kubeadm-join") {
        "joined; waiting for the node to be Ready"
    } else if has("control-plane-endpoint") {
        "endpoint answers; joining (kubeadm join)"
    } else if has("kubeadm-config") {
        "waiting for the control-plane endpoint (or running kubeadm init on the initialiser)"
    } else {
        "preparing the host"
    }
}

/// `keep-token`: on a master, re-creates the pre-generated bootstrap
/// token when the cluster no longer has it (for a periodic timer; first
/// boot does the same in its `bootstrap-token` step). Not journaled.
pub fn keep_token(opts: &RunOptions, runner: &dyn Runner) -> Result<String> {
    let loaded = load(opts, runner.is_live())?;
    if loaded.node.role != Role::Master {
        bail!("keep-token runs on masters only (this node is a worker)");
    }
    if loaded.profile.keep_bootstrap_token == Some(false) {
        return Ok("keep_bootstrap_token = false in the role profile: nothing to do".into());
    }
    let mut cx = ctx(&loaded, &opts.root, runner, &opts.containerd, &opts.join);
    let step = steps::kubeadm::BootstrapToken;
    Ok(match run_step(&step, &mut cx)? {
        StepOutcome::AlreadyInPlace => "bootstrap token present".into(),
        _ => "bootstrap token checked (re-created if it was missing)".into(),
    })
}

/// `status`: the journal and marker as text.
pub fn status(root: &Root) -> Result<String> {
    let j = Journal::load(root)?;
    let mut s = String::new();
    s += &format!(
        "first boot: {}\n",
        if root.exists(layout::FIRSTBOOT_DONE) {
            "complete"
        } else if j.steps.is_empty() {
            "not started"
        } else {
            "incomplete"
        }
    );
    if let Some(src) = &j.metadata_source {
        s += &format!("metadata: {src}\n");
    }
    for st in &j.steps {
        s += &format!(
            "step {}: {} (at {})\n",
            st.id,
            st.result,
            crate::journal::human_time(st.finished_at)
        );
    }
    let done: Vec<&str> = j.steps.iter().map(|st| st.id.as_str()).collect();
    s += &format!("join: {}\n", join_phase(&done));
    match &j.last_error {
        Some(e) => s += &format!("last error: step {}: {}\n", e.step, e.message),
        None => s += "last error: none\n",
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubeadm::endpoint::Backoff;
    use crate::runner::{Cmd, HostnameState, Outcome};
    use crate::steps::kubeadm::join::WaitEndpoint;
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::Duration;

    #[test]
    fn an_image_baked_for_another_kubernetes_version_is_named() {
        let d = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/metadata/seed-ha/k8s-node1");
        let node = NodeConfig::from_nocloud(
            &std::fs::read_to_string(d.join("meta-data")).unwrap(),
            &std::fs::read_to_string(d.join("user-data")).unwrap(),
        )
        .unwrap();
        let image = |v: &str| -> ImageMetadata {
            serde_json::from_value(serde_json::json!({
                "schema_version": 1, "name": "el7-k8s", "version": "1", "arch": "x86_64",
                "kubernetes_version": v, "base_os": "el7", "images": [], "profiles": [],
                "cni_manifest": null, "spec_digest": "x"
            }))
            .unwrap()
        };
        let want = node.kubernetes_version.to_string();
        assert_eq!(version_mismatch(&image(&want), &node), None);
        assert_eq!(version_mismatch(&image(&format!("v{want}")), &node), None);
        let w = version_mismatch(&image("1.28.7"), &node).unwrap();
        assert!(
            w.contains("el7-k8s") && w.contains("1.28.7") && w.contains(&want),
            "{w}"
        );
    }

    /// A live runner whose endpoint probes answer from a script (true:
    /// the handshake succeeds); anything else is a test failure.
    struct ScriptedProbes(Mutex<VecDeque<bool>>);

    impl Runner for ScriptedProbes {
        fn run(&self, cmd: &Cmd) -> Result<Outcome> {
            assert!(
                cmd.program == "timeout" && cmd.args.iter().any(|a| a == "s_client"),
                "unexpected command {cmd}"
            );
            let next = self.0.lock().unwrap().pop_front();
            match next.expect("more probes than scripted") {
                true => Ok(Outcome::Ran(String::new())),
                false => bail!("`{cmd}` failed (exit status: 1): 40E7:error:0A000126:SSL routines::unexpected eof while reading"),
            }
        }
        fn set_hostname(&self, _: &str) -> Result<Outcome> {
            unreachable!()
        }
        fn query_hostname(&self) -> Result<Option<HostnameState>> {
            Ok(None)
        }
        fn is_live(&self) -> bool {
            true
        }
        fn skipped(&self) -> Vec<String> {
            Vec::new()
        }
    }

    /// The endpoint step on a worker whose probes follow `script`; what is
    /// left of the script afterwards.
    fn wait_endpoint(script: &[bool]) -> (Result<StepOutcome>, usize) {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = RunOptions::new(Root::new(dir.path()));
        opts.metadata = Some(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/fixtures/metadata/seed-ha/k8s-node1"
            )
            .into(),
        );
        let loaded = load(&opts, false).unwrap();
        let quick = |tries| Backoff {
            tries,
            initial: Duration::from_millis(1),
            max: Duration::from_millis(1),
        };
        let join = JoinSettings {
            endpoint: quick(5),
            endpoint_confirm: quick(3),
            ..JoinSettings::default()
        };
        let runner = ScriptedProbes(Mutex::new(script.iter().copied().collect()));
        let cs = ContainerdSettings::default();
        let mut cx = ctx(&loaded, &opts.root, &runner, &cs, &join);
        let out = run_step(&WaitEndpoint, &mut cx);
        let left = runner.0.lock().unwrap().len();
        (out, left)
    }

    #[test]
    fn endpoint_wait_tolerates_a_load_balancer_still_settling() {
        // Check: 3 failures (pending). Wait: fails, answers. Verify: one
        // connection lands on a master that is not up yet, the next
        // answers — the step is done, not a failed first boot.
        let (out, left) = wait_endpoint(&[false, false, false, false, true, false, true]);
        assert!(
            matches!(out, Ok(StepOutcome::Applied { ref unverified }) if unverified.is_empty()),
            "{out:?}"
        );
        assert_eq!(left, 0);
        // Answers at once: nothing to do.
        let (out, _) = wait_endpoint(&[true]);
        assert!(matches!(out, Ok(StepOutcome::AlreadyInPlace)), "{out:?}");
    }

    #[test]
    fn endpoint_that_stops_answering_for_a_while_after_the_wait_is_waited_for() {
        // Check: 3 failures. Wait: answers. Then the initialiser's API
        // server restarts: 4 failures (more than a quick look tolerates,
        // fewer than the wait's 5 tries), then it answers again.
        let (out, left) =
            wait_endpoint(&[false, false, false, true, false, false, false, false, true]);
        assert!(matches!(out, Ok(StepOutcome::Applied { .. })), "{out:?}");
        assert_eq!(left, 0);
    }

    #[test]
    fn endpoint_that_stops_answering_after_the_wait_fails_the_step() {
        // After the answer, the wait's whole patience (5 tries) in vain.
        let (out, left) =
            wait_endpoint(&[false, false, false, true, false, false, false, false, false]);
        let e = format!("{:#}", out.unwrap_err());
        assert!(e.contains("still pending after apply"), "{e}");
        assert!(e.contains("master.k8s.io:16443"), "{e}");
        assert!(e.contains("after 5 tries"), "{e}");
        assert_eq!(left, 0);
    }
}
