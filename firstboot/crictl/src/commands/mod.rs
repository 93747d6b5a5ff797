//! The subcommands: each one calls the CRI and prints what crictl prints.
//! Runtime status: [`info`], [`version`]; pods: [`pods`] (`pods`, `stopp`,
//! `rmp`); images: [`images`] (`pull`, `inspecti`, `images`); containers:
//! [`containers`] (`ps`).

pub mod containers;
pub mod images;
pub mod info;
pub mod pods;
pub mod version;

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use crate::cli::{self, Command};
use crate::settings::Settings;

/// Length of an ID in tables unless `--no-trunc`.
pub const TRUNCATED_ID_LEN: usize = 13;

/// Runs `command` (none prints the help).
pub async fn run(settings: &Settings, command: Option<Command>) -> Result<()> {
    let Some(command) = command else {
        cli::print_help();
        return Ok(());
    };
    match command {
        Command::Info(args) => info::info(settings, args).await,
        Command::Pods(args) => pods::list(settings, args).await,
        Command::Stopp(args) => pods::stop(settings, args).await,
        Command::Rmp(args) => pods::remove(settings, args).await,
        Command::Pull(args) => images::pull(settings, args).await,
        Command::Inspecti(args) => images::inspect(settings, args).await,
        Command::Images(args) => images::list(settings, args).await,
        Command::Ps(args) => containers::list(settings, args).await,
        Command::Version => version::version(settings).await,
    }
}

/// Parses `--label key=value` filters.
pub fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>> {
    labels
        .iter()
        .map(|label| match label.split('=').collect::<Vec<_>>()[..] {
            [key, value] => Ok((key.to_string(), value.to_string())),
            _ => bail!("incorrectly specified label: {label}"),
        })
        .collect()
}

/// `id` without `prefix`, cut to [`TRUNCATED_ID_LEN`] characters.
pub fn truncated_id(id: &str, prefix: &str) -> String {
    let id = id.strip_prefix(prefix).unwrap_or(id);
    id.chars().take(TRUNCATED_ID_LEN).collect()
}

/// Keeps the newest `latest ? 1 : last` items (all when `last` is 0 and
/// not `latest`) of a list sorted newest first.
pub fn keep_newest<T>(items: &mut Vec<T>, latest: bool, last: usize) {
    let keep = if last > 0 {
        last
    } else if latest {
        1
    } else {
        items.len()
    };
    items.truncate(keep);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels() {
        let labels = parse_labels(&[
            "a=b".into(),
            "io.kubernetes.pod.namespace=kube-system".into(),
        ])
        .unwrap();
        assert_eq!(labels["io.kubernetes.pod.namespace"], "kube-system");
        assert!(parse_labels(&["novalue".into()]).is_err());
        assert!(parse_labels(&["a=b=c".into()]).is_err());
    }

    #[test]
    fn truncates_ids() {
        assert_eq!(
            truncated_id("sha256:0123456789abcdef", "sha256:"),
            "0123456789abc"
        );
        assert_eq!(truncated_id("short", ""), "short");
    }

    #[test]
    fn keeps_the_newest() {
        let mut items = vec![3, 2, 1];
        keep_newest(&mut items, false, 0);
        assert_eq!(items, [3, 2, 1]);
        keep_newest(&mut items, false, 2);
        assert_eq!(items, [3, 2]);
        keep_newest(&mut items, true, 0);
        assert_eq!(items, [3]);
    }
}
