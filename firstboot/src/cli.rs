//! Command line: `run`, `plan`, `kubeadm-config`, `keep-token`,
//! `reconcile`, `state-disk`, `status`, `image-info`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use nodebake_contract::{image::ImageMetadata, layout};

use crate::agent::{self, RunOptions, StepOutcome};
use crate::kubeadm::config::{render_kubeadm_config, render_token_config, JoinPath, RenderOptions};
use crate::root::Root;
use crate::runner::{RecordingRunner, Runner, SystemRunner};

/// First-boot agent of nodebake images.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Configure this node from its metadata (once; resumable).
    Run {
        /// Work on this root instead of the running system. No command
        /// that changes the running host is executed; such commands are
        /// listed as skipped.
        #[arg(long)]
        root: Option<PathBuf>,
        /// Metadata source: http(s) URL, NoCloud directory, seed image or
        /// device, or local file. Default: search the documented sources.
        #[arg(long)]
        metadata: Option<String>,
        /// Show what would be done and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Run even though the done marker exists (re-checks every step).
        #[arg(long)]
        again: bool,
    },
    /// Print the ordered steps the agent would take, with reasons.
    Plan {
        /// Root to inspect (default: the running system).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Metadata source (as for `run`).
        #[arg(long)]
        metadata: Option<String>,
    },
    /// Print the kubeadm configuration (multi-document YAML) this node
    /// would use. It holds the bootstrap token (and the certificate key on
    /// the upload-certs path): printed to stdout on request only.
    KubeadmConfig {
        /// Root whose role profile applies (default: the running system).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Metadata source (as for `run`).
        #[arg(long)]
        metadata: Option<String>,
        /// Render for this join path instead of the node's own (a rebuilt
        /// initialiser takes `control-plane-join`).
        #[arg(long, value_enum)]
        path: Option<JoinPath>,
        /// Print the token-only configuration `kubeadm token create
        /// --config` reads (the bootstrap token keep-alive) instead.
        #[arg(long, conflicts_with = "path")]
        token_config: bool,
        /// Also write the node's kubeadm patches into this directory
        /// (created if missing; other files in it are left alone) and point
        /// the configuration's `patches.directory` at it, to try them with
        /// `kubeadm init --dry-run` off the node.
        #[arg(long, value_name = "DIR", conflicts_with = "token_config")]
        patches_dir: Option<PathBuf>,
    },
    /// On a master: re-create the pre-generated bootstrap token if the
    /// cluster no longer has it (for a periodic timer).
    KeepToken {
        /// Root to work on (default: the running system).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Metadata source (as for `run`).
        #[arg(long)]
        metadata: Option<String>,
    },
    /// After first boot: bring the membership-dependent parts of this node
    /// (hosts block, haproxy backends, keepalived peers; on masters the
    /// etcd members of masters no longer listed) in line with its current
    /// metadata, without a reboot. For a timer and on demand.
    Reconcile {
        /// Root to work on (default: the running system).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Metadata source (as for `run`).
        #[arg(long)]
        metadata: Option<String>,
    },
    /// Mount this node's state disk (PXE nodes): format it when blank,
    /// mount it and bind-mount /etc/kubernetes, /var/lib/etcd and
    /// /var/lib/kubelet from it. The device comes from `--device` or the
    /// kernel command line's `nodebake.state=`; with neither, nothing is
    /// done. A disk holding anything else is refused, never formatted.
    StateDisk {
        /// Root to work under (default: the running system).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// The device (default: `nodebake.state=` from --cmdline).
        #[arg(long)]
        device: Option<String>,
        /// The kernel command line to read.
        #[arg(long, default_value = "/proc/cmdline")]
        cmdline: PathBuf,
        /// How long to wait for the device to appear, in seconds.
        #[arg(long, default_value_t = 120)]
        wait_s: u64,
    },
    /// Print the journal: finished steps and the last error.
    Status {
        /// Root to inspect (default: the running system).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Print the metadata of the image this agent was baked into.
    ImageInfo {
        /// Root of the image (default: the running system).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
}

/// Parses the process arguments.
pub fn parse_args() -> Cli {
    Cli::parse()
}

fn runner_for(root: &Option<PathBuf>) -> (Root, Box<dyn Runner>) {
    match root {
        Some(r) => (Root::new(r), Box::new(RecordingRunner::default())),
        None => (Root::new("/"), Box::new(SystemRunner::default())),
    }
}

fn print_plan(opts: &RunOptions, runner: &dyn Runner) -> Result<()> {
    let loaded = agent::load(opts, runner.is_live())?;
    println!("metadata: {}", loaded.metadata.source);
    println!(
        "node: {} ({:?}{})",
        loaded.node.hostname,
        loaded.node.role,
        if loaded.node.is_initialiser() {
            ", initialiser"
        } else {
            ""
        }
    );
    println!(
        "join path: {}",
        crate::kubeadm::config::join_path_summary(&loaded.node)
    );
    for (i, l) in agent::plan(&loaded, &opts.root, runner, &opts.containerd)?
        .iter()
        .enumerate()
    {
        println!(
            "{:>2}. {:<15} {}\n    {}",
            i + 1,
            l.id,
            l.describe,
            l.reason
        );
    }
    Ok(())
}

impl Cli {
    /// Runs the parsed command.
    pub fn run(self) -> Result<()> {
        match self.command {
            Command::Run {
                root,
                metadata,
                dry_run,
                again,
            } => {
                let (r, runner) = runner_for(&root);
                let mut opts = RunOptions::new(r);
                opts.metadata = metadata;
                opts.again = again;
                if dry_run {
                    println!("dry run: nothing will be changed");
                    return print_plan(&opts, runner.as_ref());
                }
                let report = agent::run(&opts, runner.as_ref())?;
                if report.already_complete {
                    println!(
                        "first boot already complete ({} exists); nothing to do (use --again to re-check)",
                        layout::FIRSTBOOT_DONE
                    );
                    return Ok(());
                }
                print_report(&report);
                println!("first boot complete");
                Ok(())
            }
            Command::Reconcile { root, metadata } => {
                let (r, runner) = runner_for(&root);
                let mut opts = RunOptions::new(r);
                opts.metadata = metadata;
                let report = agent::reconcile(&opts, runner.as_ref())?;
                print_report(&report);
                println!(
                    "reconciled: {}",
                    if report.changed.is_empty()
                        && report
                            .steps
                            .iter()
                            .all(|(_, o)| matches!(o, StepOutcome::AlreadyInPlace))
                    {
                        "nothing to change"
                    } else {
                        "changes applied"
                    }
                );
                Ok(())
            }
            Command::Plan { root, metadata } => {
                let (r, runner) = runner_for(&root);
                let mut opts = RunOptions::new(r);
                opts.metadata = metadata;
                print_plan(&opts, runner.as_ref())
            }
            Command::KubeadmConfig {
                root,
                metadata,
                path,
                token_config,
                patches_dir,
            } => {
                let (r, runner) = runner_for(&root);
                let mut opts = RunOptions::new(r);
                opts.metadata = metadata;
                let loaded = agent::load(&opts, runner.is_live())?;
                let mut o = RenderOptions::from_profile(&loaded.node, &loaded.profile);
                if token_config {
                    print!("{}", render_token_config(&loaded.node, &o.token_ttl)?);
                    return Ok(());
                }
                o.path = path.unwrap_or(o.path);
                if let Some(dir) = patches_dir {
                    write_patches(&loaded.node, &dir)?;
                    o.patches_dir = std::path::absolute(&dir)
                        .with_context(|| format!("{}", dir.display()))?
                        .display()
                        .to_string();
                }
                print!("{}", render_kubeadm_config(&loaded.node, &o)?);
                Ok(())
            }
            Command::KeepToken { root, metadata } => {
                let (r, runner) = runner_for(&root);
                let mut opts = RunOptions::new(r);
                opts.metadata = metadata;
                println!("{}", agent::keep_token(&opts, runner.as_ref())?);
                Ok(())
            }
            Command::StateDisk {
                root,
                device,
                cmdline,
                wait_s,
            } => {
                let device = match device {
                    Some(d) => d,
                    None => {
                        let text = std::fs::read_to_string(&cmdline)
                            .with_context(|| format!("reading {}", cmdline.display()))?;
                        match crate::state_disk::device_from_cmdline(&text) {
                            Some(d) => d,
                            None => {
                                println!(
                                    "no state disk ({}= is not on the kernel command line): kubeadm's state lives on the root",
                                    nodebake_contract::state_disk::CMDLINE_PARAM
                                );
                                return Ok(());
                            }
                        }
                    }
                };
                let r = crate::state_disk::setup(
                    &Root::new(root),
                    &device,
                    std::time::Duration::from_secs(wait_s),
                )?;
                println!(
                    "state disk {} {} on {}: {}",
                    r.device,
                    if r.formatted {
                        "formatted and mounted"
                    } else {
                        "mounted"
                    },
                    nodebake_contract::state_disk::MOUNT_POINT,
                    r.directories.join(", ")
                );
                Ok(())
            }
            Command::Status { root } => {
                print!("{}", agent::status(&Root::new(root))?);
                Ok(())
            }
            Command::ImageInfo { root } => {
                let path = root.join(layout::IMAGE_METADATA.trim_start_matches('/'));
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let meta: ImageMetadata = serde_json::from_str(&text)
                    .with_context(|| format!("parsing {}", path.display()))?;
                println!("{}", serde_json::to_string_pretty(&meta)?);
                Ok(())
            }
        }
    }
}

/// Writes `node`'s kubeadm patches into `dir` (each atomically).
fn write_patches(node: &nodebake_contract::node::NodeConfig, dir: &std::path::Path) -> Result<()> {
    let root = crate::root::Root::new(dir);
    for (name, content) in crate::kubeadm::config::patch_files(node) {
        root.write(&format!("/{name}"), content.as_bytes(), 0o644)
            .with_context(|| format!("writing patch {name} into {}", dir.display()))?;
    }
    Ok(())
}

/// The steps, changed files and skipped actions of a run or reconcile.
fn print_report(report: &agent::RunReport) {
    if let Some(s) = &report.source {
        println!("metadata: {s}");
    }
    for (id, o) in &report.steps {
        match o {
            StepOutcome::Journaled => println!("step {id}: done (journal)"),
            StepOutcome::AlreadyInPlace => println!("step {id}: already in place"),
            StepOutcome::Applied { unverified } if unverified.is_empty() => {
                println!("step {id}: applied")
            }
            StepOutcome::Applied { unverified } => println!(
                "step {id}: applied (not verifiable with skipped commands: {})",
                unverified.join("; ")
            ),
        }
    }
    for c in &report.changed {
        println!("changed: {c}");
    }
    if !report.skipped.is_empty() {
        println!(
            "skipped {} command(s) and host action(s) (--root: nothing runs on the running host):",
            report.skipped.len()
        );
        for s in &report.skipped {
            println!("  skipped: {s}");
        }
    }
}
