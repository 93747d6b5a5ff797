//! `crictl ps`: ListContainers, running ones unless `-a`, `-s`, `-l` or
//! `-n`, newest first.

use std::time::SystemTime;

use anyhow::{bail, Context, Result};

use super::{keep_newest, parse_labels, truncated_id};
use crate::cli::PsArgs;
use crate::cri::{
    Container, ContainerFilter, ContainerState, ContainerStateValue, ListContainersResponse,
    RuntimeClient,
};
use crate::output::human::ago;
use crate::output::json::render_message;
use crate::output::table::Table;
use crate::settings::Settings;

/// The label kubelet puts the pod name in.
const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";

/// Runs `crictl ps`.
pub async fn list(settings: &Settings, args: PsArgs) -> Result<()> {
    let filter = ContainerFilter {
        id: args.id.clone().unwrap_or_default(),
        state: state_filter(&args)?,
        pod_sandbox_id: args.pod.clone().unwrap_or_default(),
        label_selector: parse_labels(&args.labels)?,
    };
    let mut client = RuntimeClient::new(settings);
    let mut containers = client
        .list_containers(filter)
        .await
        .context("listing containers")?;
    containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    keep_newest(&mut containers, args.latest, args.last);
    match args.output.as_str() {
        "table" => print!("{}", render_containers(&containers, &args)),
        format => {
            let response = ListContainersResponse { containers };
            println!(
                "{}",
                render_message(&response, format).context("listing containers")?
            );
        }
    }
    Ok(())
}

/// The state to filter on: `--state`, else running only unless `-a`;
/// none with `-l` or `-n`.
fn state_filter(args: &PsArgs) -> Result<Option<ContainerStateValue>> {
    if args.latest || args.last > 0 {
        return Ok(None);
    }
    let state = match args.state.as_deref().map(str::to_lowercase).as_deref() {
        None if args.all => return Ok(None),
        None | Some("running") => ContainerState::ContainerRunning,
        Some("created") => ContainerState::ContainerCreated,
        Some("exited") => ContainerState::ContainerExited,
        Some("unknown") => ContainerState::ContainerUnknown,
        Some(_) => bail!("--state should be one of created, running, exited or unknown"),
    };
    Ok(Some(ContainerStateValue {
        state: state as i32,
    }))
}

/// The text of `ps` without `-o`: IDs (`-q`), details (`-v`) or a table.
fn render_containers(containers: &[Container], args: &PsArgs) -> String {
    if args.quiet {
        return containers.iter().map(|c| format!("{}\n", c.id)).collect();
    }
    let now = SystemTime::now();
    if args.verbose {
        return containers
            .iter()
            .map(|c| describe_container(c, now))
            .collect();
    }
    let mut table = Table::new();
    table.add_row([
        "CONTAINER",
        "IMAGE",
        "CREATED",
        "STATE",
        "NAME",
        "ATTEMPT",
        "POD ID",
        "POD",
    ]);
    for c in containers {
        let image = c
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let (id, image, pod_id) = if args.no_trunc {
            (c.id.clone(), image, c.pod_sandbox_id.clone())
        } else {
            (
                truncated_id(&c.id, ""),
                truncate_digest(&image),
                truncated_id(&c.pod_sandbox_id, ""),
            )
        };
        let metadata = c.metadata.clone().unwrap_or_default();
        let pod_name = c
            .labels
            .get(POD_NAME_LABEL)
            .map_or("unknown", String::as_str);
        table.add_row([
            id,
            image,
            ago(c.created_at, now),
            state_name(c.state).to_string(),
            metadata.name,
            metadata.attempt.to_string(),
            pod_id,
            pod_name.to_string(),
        ]);
    }
    table.render()
}

/// An image that is a digest (`sha256:<hex>`, kubelet's image IDs) cut to
/// 13 hex digits; anything else unchanged.
fn truncate_digest(image: &str) -> String {
    match image.split_once(':') {
        Some((algorithm, hex))
            if !algorithm.is_empty()
                && algorithm
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && hex.len() >= 32
                && hex.chars().all(|c| c.is_ascii_hexdigit()) =>
        {
            truncated_id(image, &format!("{algorithm}:"))
        }
        _ => image.to_string(),
    }
}

/// `ps -v` for one container.
fn describe_container(c: &Container, now: SystemTime) -> String {
    let mut out = format!("ID: {}\nPodID: {}\n", c.id, c.pod_sandbox_id);
    if let Some(m) = &c.metadata {
        if !m.name.is_empty() {
            out.push_str(&format!("Name: {}\n", m.name));
        }
        out.push_str(&format!("Attempt: {}\n", m.attempt));
    }
    out.push_str(&format!("State: {}\n", state_name(c.state)));
    if let Some(image) = &c.image {
        out.push_str(&format!("Image: {}\n", image.image));
    }
    out.push_str(&format!("Created: {}\n", ago(c.created_at, now)));
    for (title, map) in [("Labels", &c.labels), ("Annotations", &c.annotations)] {
        if !map.is_empty() {
            out.push_str(&format!("{title}:\n"));
            for (k, v) in map {
                out.push_str(&format!("\t{k} -> {v}\n"));
            }
        }
    }
    out.push('\n');
    out
}

/// `Created`, `Running`, `Exited` or `Unknown`.
fn state_name(state: i32) -> &'static str {
    match ContainerState::try_from(state) {
        Ok(ContainerState::ContainerCreated) => "Created",
        Ok(ContainerState::ContainerRunning) => "Running",
        Ok(ContainerState::ContainerExited) => "Exited",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_digest_images_only() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(truncate_digest(&digest), "ababababababa");
        assert_eq!(
            truncate_digest("registry.k8s.io/pause:3.9"),
            "registry.k8s.io/pause:3.9"
        );
    }
}
