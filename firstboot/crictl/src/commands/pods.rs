//! Pod sandboxes: `crictl pods` (ListPodSandbox), `crictl stopp`
//! (StopPodSandbox) and `crictl rmp` (RemovePodSandbox). kubeadm runs
//! `pods -q` to find the sandboxes of a node it resets, then `stopp` and
//! `rmp` for each.

use std::time::SystemTime;

use anyhow::{anyhow, bail, Context, Result};

use super::{keep_newest, parse_labels, truncated_id};
use crate::cli::{self, PodsArgs, RmpArgs, StoppArgs};
use crate::cri::{
    ListPodSandboxResponse, PodSandbox, PodSandboxFilter, PodSandboxState, PodSandboxStateValue,
    RuntimeClient,
};
use crate::output::human::{ago, go_time_utc};
use crate::output::json::render_message;
use crate::output::table::Table;
use crate::settings::Settings;

/// Runs `crictl pods`.
pub async fn list(settings: &Settings, args: PodsArgs) -> Result<()> {
    let filter = PodSandboxFilter {
        id: args.id.clone().unwrap_or_default(),
        state: args.state.as_deref().map(parse_state).transpose()?,
        label_selector: parse_labels(&args.labels)?,
    };
    let mut client = RuntimeClient::new(settings);
    let mut pods = client
        .list_pod_sandbox(filter)
        .await
        .context("listing pod sandboxes")?;
    pods.sort_by_key(|p| std::cmp::Reverse(p.created_at));
    keep_newest(&mut pods, args.latest, args.last);
    match args.output.as_str() {
        "table" => print!("{}", render_pods(&pods, &args)),
        format => {
            let response = ListPodSandboxResponse { items: pods };
            println!(
                "{}",
                render_message(&response, format).context("listing pod sandboxes")?
            );
        }
    }
    Ok(())
}

/// `--state ready|notready` as a filter.
fn parse_state(state: &str) -> Result<PodSandboxStateValue> {
    let state = match state.to_lowercase().as_str() {
        "ready" => PodSandboxState::SandboxReady,
        "notready" => PodSandboxState::SandboxNotready,
        _ => bail!("--state should be ready or notready"),
    };
    Ok(PodSandboxStateValue {
        state: state as i32,
    })
}

/// The text of `pods` without `-o`: IDs (`-q`), details (`-v`) or a table.
fn render_pods(pods: &[PodSandbox], args: &PodsArgs) -> String {
    if args.quiet {
        return pods.iter().map(|p| format!("{}\n", p.id)).collect();
    }
    if args.verbose {
        return pods.iter().map(describe_pod).collect();
    }
    let mut table = Table::new();
    table.add_row([
        "POD ID",
        "CREATED",
        "STATE",
        "NAME",
        "NAMESPACE",
        "ATTEMPT",
        "RUNTIME",
    ]);
    let now = SystemTime::now();
    for pod in pods {
        let id = if args.no_trunc {
            pod.id.clone()
        } else {
            truncated_id(&pod.id, "")
        };
        let metadata = pod.metadata.clone().unwrap_or_default();
        table.add_row([
            id,
            ago(pod.created_at, now),
            state_name(pod.state).to_string(),
            metadata.name,
            metadata.namespace,
            metadata.attempt.to_string(),
            runtime_handler(pod).to_string(),
        ]);
    }
    table.render()
}

/// `pods -v` for one pod.
fn describe_pod(pod: &PodSandbox) -> String {
    let mut out = format!("ID: {}\n", pod.id);
    if let Some(m) = &pod.metadata {
        for (label, value) in [
            ("Name", &m.name),
            ("UID", &m.uid),
            ("Namespace", &m.namespace),
        ] {
            if !value.is_empty() {
                out.push_str(&format!("{label}: {value}\n"));
            }
        }
        if m.attempt != 0 {
            out.push_str(&format!("Attempt: {}\n", m.attempt));
        }
    }
    out.push_str(&format!("Status: {}\n", state_name(pod.state)));
    out.push_str(&format!("Created: {}\n", go_time_utc(pod.created_at)));
    for (title, map) in [("Labels", &pod.labels), ("Annotations", &pod.annotations)] {
        if !map.is_empty() {
            out.push_str(&format!("{title}:\n"));
            for (k, v) in map {
                out.push_str(&format!("\t{k} -> {v}\n"));
            }
        }
    }
    out.push_str(&format!("Runtime: {}\n\n", runtime_handler(pod)));
    out
}

/// `Ready` or `NotReady`.
fn state_name(state: i32) -> &'static str {
    match PodSandboxState::try_from(state) {
        Ok(PodSandboxState::SandboxReady) => "Ready",
        Ok(PodSandboxState::SandboxNotready) => "NotReady",
        Err(_) => "Unknown",
    }
}

/// The runtime handler, `(default)` when empty.
fn runtime_handler(pod: &PodSandbox) -> &str {
    if pod.runtime_handler.is_empty() {
        "(default)"
    } else {
        &pod.runtime_handler
    }
}

/// Runs `crictl stopp`: stops each pod in turn; the first failure ends it.
pub async fn stop(settings: &Settings, args: StoppArgs) -> Result<()> {
    if args.ids.is_empty() {
        cli::print_subcommand_help("stopp");
        return Ok(());
    }
    let mut client = RuntimeClient::new(settings);
    for id in &args.ids {
        stop_one(&mut client, id)
            .await
            .with_context(|| format!("stopping the pod sandbox {id:?}"))?;
    }
    Ok(())
}

/// Stops one pod and says so.
async fn stop_one(client: &mut RuntimeClient, id: &str) -> Result<()> {
    if id.is_empty() {
        bail!("ID cannot be empty");
    }
    client.stop_pod_sandbox(id).await?;
    println!("Stopped sandbox {id}");
    Ok(())
}

/// Runs `crictl rmp`: removes each pod (stopping it first with `-f`),
/// carries on past failures and fails if any pod failed.
pub async fn remove(settings: &Settings, args: RmpArgs) -> Result<()> {
    let mut client = RuntimeClient::new(settings);
    let ids = if args.all {
        let pods = client
            .list_pod_sandbox(PodSandboxFilter::default())
            .await
            .context("listing pod sandboxes")?;
        pods.into_iter().map(|p| p.id).collect()
    } else {
        args.ids.clone()
    };
    if ids.is_empty() {
        if args.all {
            eprintln!("No pods to remove");
        } else {
            cli::print_subcommand_help("rmp");
        }
        return Ok(());
    }
    let mut errors = Vec::new();
    for id in &ids {
        if let Err(e) = remove_one(&mut client, id, args.force).await {
            errors.push(format!("{e:#}"));
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(anyhow!(errors.remove(0))),
        _ => Err(anyhow!("[{}]", errors.join(", "))),
    }
}

/// Removes one pod, refusing a running one unless `force` (then stopping
/// it first).
async fn remove_one(client: &mut RuntimeClient, id: &str, force: bool) -> Result<()> {
    if id.is_empty() {
        bail!("ID cannot be empty");
    }
    let status = client
        .pod_sandbox_status(id)
        .await
        .with_context(|| format!("getting sandbox status of pod {id:?}"))?;
    let ready = status
        .status
        .is_some_and(|s| s.state == PodSandboxState::SandboxReady as i32);
    if ready {
        if !force {
            bail!("pod sandbox {id:?} is running, please stop it first");
        }
        stop_one(client, id)
            .await
            .with_context(|| format!("stopping the pod sandbox {id:?} failed"))?;
    }
    client
        .remove_pod_sandbox(id)
        .await
        .with_context(|| format!("removing the pod sandbox {id:?}"))?;
    println!("Removed sandbox {id}");
    Ok(())
}
