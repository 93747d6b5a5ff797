//! `nodebake`: bakes Kubernetes node images. See `nodebake --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use nodebake::build::{build, BuildOptions, FirstbootSource};
use nodebake::store::InputStore;

/// Bake immutable Kubernetes node images from a declarative spec.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Print a machine-readable JSON summary on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// No progress output.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from SPEC into an output directory (replaced atomically):
    /// rootfs.tar.gz|zst, vmlinuz, initramfs.cpio.gz, manifest.json, SHA256SUMS.
    Build {
        /// Image spec (images/*.toml).
        spec: PathBuf,
        /// Output directory [default: out/<spec name>].
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Lock file pinning digests [default: SPEC.lock when it exists].
        #[arg(long)]
        lock: Option<PathBuf>,
        /// Input store [default: $NODEBAKE_STORE or ~/.cache/nodebake/store].
        #[arg(long)]
        store: Option<PathBuf>,
        /// Never touch the network; name any input missing from the store.
        #[arg(long)]
        offline: bool,
        /// Static nodebake-firstboot binary to bake [default: found next to nodebake].
        #[arg(long, conflicts_with = "without_firstboot")]
        firstboot: Option<PathBuf>,
        /// Do not bake the first-boot agent (inspection-only images).
        #[arg(long)]
        without_firstboot: bool,
        /// Directory of role profiles [default: <spec dir>/profiles if present, else <spec dir>/../profiles].
        #[arg(long)]
        profiles_dir: Option<PathBuf>,
        /// Rebuild even if the build cache holds these exact outputs.
        #[arg(long)]
        no_cache: bool,
        /// Replace --out even when it is a non-empty directory that is not
        /// an earlier nodebake output.
        #[arg(long)]
        force: bool,
    },
    /// Download every URL and registry input of SPEC into the store,
    /// verified by sha256; refuses unpinned inputs unless --pin.
    Fetch {
        /// Image spec (images/*.toml).
        spec: PathBuf,
        /// Record every digest in the lock file (written atomically) and show them.
        #[arg(long)]
        pin: bool,
        /// Lock file [default: SPEC.lock].
        #[arg(long)]
        lock: Option<PathBuf>,
        /// Input store [default: $NODEBAKE_STORE or ~/.cache/nodebake/store].
        #[arg(long)]
        store: Option<PathBuf>,
        /// Parallel downloads (1-16).
        #[arg(long, short = 'j', default_value_t = 4)]
        jobs: usize,
        /// Seconds a request may wait for data before the attempt fails.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Attempts per download (with backoff between them).
        #[arg(long, default_value_t = 4)]
        tries: u32,
    },
    /// One-file bundles for air-gapped machines.
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// The images `kubeadm config images list` names for a Kubernetes version.
    Images {
        /// Kubernetes version (`1.31.1`).
        #[arg(long)]
        kubernetes_version: String,
        /// Image repository [default: kubeadm's for the version].
        #[arg(long)]
        image_repository: Option<String>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell) for nodebake on stdout.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (nodebake.1 and one per subcommand) into DIR.
    Man {
        /// Output directory (created if missing).
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Cluster inventories: secrets and per-node NoCloud metadata.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Serve iPXE scripts, the image's kernel + initramfs and each
    /// machine's metadata by MAC over HTTP.
    Serve {
        /// Cluster directory written by `cluster init`.
        dir: PathBuf,
        /// Built image output directory (vmlinuz, initramfs.cpio.gz, manifest.json).
        #[arg(long)]
        image: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: String,
        /// Base URL machines reach this server at [default: http://<Host header>].
        #[arg(long)]
        advertise: Option<String>,
        /// Runtime worker threads (connections are tasks, not threads).
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// Connections served at once; beyond that, 503 at once.
        #[arg(long, default_value_t = 4096)]
        max_connections: usize,
    },
    /// Re-check an output directory against SHA256SUMS and manifest.json.
    Verify {
        /// Output directory.
        dir: PathBuf,
    },
    /// Summarise what an output directory holds.
    Inspect {
        /// Output directory.
        dir: PathBuf,
    },
    /// Check that an image can form the cluster its role profiles describe
    /// (kubeadm preflight's commands for its Kubernetes version, the
    /// agent's tools, kernel config and modules, every image kubeadm asks
    /// for, CNI plugins, shared-library and package closure); exits 1 on
    /// an error finding. TARGET is an output directory, or a spec, which
    /// is built first (offline, into a temporary directory).
    Lint {
        /// Output directory or image spec.
        target: PathBuf,
        /// Inventory whose choices apply (image repository, kube-proxy mode).
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// kube-proxy runs in IPVS mode (missing IPVS modules are errors).
        #[arg(long)]
        ipvs: bool,
        /// Finding ids (globs) to report as allowed.
        #[arg(long)]
        allow: Vec<String>,
        /// Input store, for a spec [default: as `build`].
        #[arg(long)]
        store: Option<PathBuf>,
        /// Lock file, for a spec [default: SPEC.lock when it exists].
        #[arg(long)]
        lock: Option<PathBuf>,
        /// Directory of role profiles, for a spec [default: as `build`].
        #[arg(long)]
        profiles_dir: Option<PathBuf>,
        /// For a spec: check only what its inputs declare (package names
        /// and versions, destinations, image references, `[base]
        /// packages`), without building; works before digests are pinned.
        #[arg(long)]
        inputs_only: bool,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Validate INVENTORY, generate the secrets once (kept on re-runs) and
    /// write DIR/nodes/<hostname>/{meta-data,user-data,network-config,seed.iso}.
    Init {
        /// Inventory (see examples/README.md).
        inventory: PathBuf,
        /// Cluster directory.
        #[arg(long, short)]
        out: PathBuf,
        /// Regenerate every secret (new CAs: existing nodes no longer match).
        #[arg(long)]
        rotate: bool,
        /// Also write a FAT seed `seed.img` per node (needs mkfs.vfat and mcopy).
        #[arg(long)]
        vfat: bool,
    },
    /// Print (or write 0600) a kubeconfig whose client certificate the
    /// cluster CA of DIR signs, for the control-plane endpoint: cluster
    /// admin by default (group system:masters).
    Kubeconfig {
        /// Cluster directory written by `cluster init`.
        dir: PathBuf,
        /// User name (certificate CN).
        #[arg(long, default_value = "kubernetes-admin")]
        user: String,
        /// Group (certificate O).
        #[arg(long, default_value = "system:masters")]
        group: String,
        /// Validity of the client certificate in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// API server URL [default: https://<VIP>:<port> of the endpoint].
        #[arg(long)]
        server: Option<String>,
        /// Write the kubeconfig here (0600, atomically) instead of stdout.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BundleCommand {
    /// Write SPEC, a lock pinning every input, its profiles and every input
    /// (from the store) into one file with a checksum manifest.
    Create {
        /// Image spec.
        spec: PathBuf,
        /// Bundle file to write (atomically).
        #[arg(long, short)]
        out: PathBuf,
        /// Lock file [default: SPEC.lock when it exists].
        #[arg(long)]
        lock: Option<PathBuf>,
        /// Input store [default: $NODEBAKE_STORE or ~/.cache/nodebake/store].
        #[arg(long)]
        store: Option<PathBuf>,
        /// Directory of role profiles [default: as `build`].
        #[arg(long)]
        profiles_dir: Option<PathBuf>,
    },
    /// Verify every member of a bundle, then add its inputs to the store.
    Import {
        /// Bundle file.
        file: PathBuf,
        /// Input store [default: $NODEBAKE_STORE or ~/.cache/nodebake/store].
        #[arg(long)]
        store: Option<PathBuf>,
        /// Also write the spec, its lock and profiles into this directory.
        #[arg(long)]
        spec_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // With --json the error is JSON on stdout too: scripts read one
            // stream whatever the outcome.
            if json {
                let causes: Vec<String> = e.chain().map(ToString::to_string).collect();
                println!(
                    "{}",
                    serde_json::json!({ "ok": false, "error": format!("{e:#}"), "causes": causes })
                );
            }
            eprintln!("nodebake: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Build {
            spec,
            out,
            lock,
            store,
            offline,
            firstboot,
            without_firstboot,
            profiles_dir,
            no_cache,
            force,
        } => {
            let out = out.unwrap_or_else(|| {
                PathBuf::from("out")
                    .join(spec.file_stem().map(|s| s.to_owned()).unwrap_or_default())
            });
            let opts = BuildOptions {
                spec,
                out,
                lock,
                store: store.unwrap_or_else(InputStore::default_root),
                offline,
                firstboot: match (firstboot, without_firstboot) {
                    (Some(p), _) => FirstbootSource::Path(p),
                    (None, true) => FirstbootSource::Without,
                    (None, false) => FirstbootSource::Auto,
                },
                profiles_dir,
                no_cache,
                force,
                quiet: cli.quiet,
                lint_only: None,
            };
            let report = build(&opts)?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                eprintln!(
                    "nodebake: built {} in {:.1}s{}",
                    report.out.display(),
                    report.seconds,
                    if report.cached {
                        " (from the build cache)"
                    } else {
                        ""
                    }
                );
                for o in &report.outputs {
                    println!("{}  {}", o.sha256, o.name);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cluster {
            command:
                ClusterCommand::Init {
                    inventory,
                    out,
                    rotate,
                    vfat,
                },
        } => {
            let r = nodebake::cluster::init(&inventory, &out, rotate, vfat)?;
            for w in &r.warnings {
                eprintln!("nodebake: warning: {w}");
            }
            for s in &r.stale {
                eprintln!("nodebake: warning: nodes/{s} is not in the inventory (left in place)");
            }
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                eprintln!(
                    "nodebake: secrets {} ({}), {} nodes, {} files changed",
                    r.secrets,
                    out.join("secrets").display(),
                    r.nodes.len(),
                    r.changed.len()
                );
                for c in &r.changed {
                    eprintln!("  wrote {c}");
                }
                println!("ca-cert-hash: {}", r.ca_cert_hash);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            if cli.json {
                bail!("--json does not apply to `completions`: its output is a {shell} script");
            }
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "nodebake",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { out } => {
            use clap::CommandFactory;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            clap_mangen::generate_to(Cli::command(), &out)
                .with_context(|| format!("writing man pages into {}", out.display()))?;
            if cli.json {
                let mut pages: Vec<String> = std::fs::read_dir(&out)?
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("nodebake") && n.ends_with(".1"))
                    .collect();
                pages.sort();
                println!(
                    "{}",
                    serde_json::json!({ "ok": true, "out": out, "pages": pages })
                );
            } else {
                eprintln!("nodebake: man pages in {}", out.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cluster {
            command:
                ClusterCommand::Kubeconfig {
                    dir,
                    user,
                    group,
                    days,
                    server,
                    out,
                },
        } => {
            let req = nodebake::cluster::kubeconfig::KubeconfigRequest {
                user,
                group,
                days,
                server,
            };
            let text = nodebake::cluster::kubeconfig::render(&dir, &req)?;
            match out {
                Some(p) => {
                    nodebake::atomic::write_file(&p, text.as_bytes(), 0o600)?;
                    if cli.json {
                        println!(
                            "{}",
                            serde_json::json!({ "ok": true, "out": p, "mode": "0600" })
                        );
                    } else {
                        eprintln!("nodebake: wrote {} (0600)", p.display());
                    }
                }
                // kubectl reads a kubeconfig in JSON as well as YAML.
                None if cli.json => {
                    let v: serde_json::Value = serde_yaml::from_str(&text)
                        .context("re-reading the rendered kubeconfig")?;
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            dir,
            image,
            listen,
            advertise,
            threads,
            max_connections,
        } => {
            let server = nodebake::serve::Server::new(nodebake::serve::ServeOptions {
                cluster_dir: dir,
                image_dir: image,
                listen,
                advertise,
                threads,
                max_connections,
                json: cli.json,
            })?;
            server.run()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Fetch {
            spec,
            pin,
            lock,
            store,
            jobs,
            timeout,
            tries,
        } => {
            let opts = nodebake::fetch::FetchOptions {
                spec,
                lock,
                store: store.unwrap_or_else(InputStore::default_root),
                pin,
                jobs,
                read_timeout: std::time::Duration::from_secs(timeout.max(1)),
                tries,
                quiet: cli.quiet,
            };
            let report = nodebake::fetch::fetch(&opts)?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for i in &report.inputs {
                    match &i.digest {
                        Some(d) => println!("{}  {}  {} ({d})", i.sha256, i.name, i.source),
                        None => println!("{}  {}  {}", i.sha256, i.name, i.source),
                    }
                }
                if let Some(l) = &report.lock_written {
                    eprintln!(
                        "nodebake: pinned {} inputs in {}",
                        report.inputs.len(),
                        l.display()
                    );
                }
                eprintln!(
                    "nodebake: {} inputs in the store {} ({:.1}s)",
                    report.inputs.len(),
                    opts.store.display(),
                    report.seconds
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bundle { command } => match command {
            BundleCommand::Create {
                spec,
                out,
                lock,
                store,
                profiles_dir,
            } => {
                let r = nodebake::bundle::create(
                    &spec,
                    lock.as_deref(),
                    &store.unwrap_or_else(InputStore::default_root),
                    profiles_dir.as_deref(),
                    &out,
                )?;
                if cli.json {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    println!("{}  {}", r.sha256, r.file.display());
                    eprintln!("nodebake: bundle of {} inputs, {} bytes", r.inputs, r.size);
                }
                Ok(ExitCode::SUCCESS)
            }
            BundleCommand::Import {
                file,
                store,
                spec_dir,
            } => {
                let store = store.unwrap_or_else(InputStore::default_root);
                let r = nodebake::bundle::import(&file, &store, spec_dir.as_deref())?;
                if cli.json {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    eprintln!(
                        "nodebake: {} verified; {} inputs added to {}, {} already there",
                        file.display(),
                        r.added,
                        store.display(),
                        r.present
                    );
                    if let Some(s) = &r.spec {
                        println!("{}", s.display());
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Images {
            kubernetes_version,
            image_repository,
        } => {
            let images = nodebake::kubeadm_images::kubeadm_images(
                &kubernetes_version,
                image_repository.as_deref(),
            )?;
            if cli.json {
                let list: Vec<_> = images
                    .iter()
                    .map(|i| serde_json::json!({ "name": i.name, "reference": i.reference }))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "kubernetes_version": kubernetes_version,
                        "images": list,
                    }))?
                );
            } else {
                for i in images {
                    println!("{}", i.reference);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { dir } => {
            let problems = nodebake::verify::verify(&dir)?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({ "dir": dir, "ok": problems.is_empty(), "problems": problems })
                );
            }
            if problems.is_empty() {
                if !cli.json {
                    println!("{}: OK", dir.display());
                }
                Ok(ExitCode::SUCCESS)
            } else {
                for p in &problems {
                    eprintln!("nodebake: verify: {}: {p}", dir.display());
                }
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Lint {
            target,
            inventory,
            ipvs,
            allow,
            store,
            lock,
            profiles_dir,
            inputs_only,
        } => {
            let mut opts = nodebake::lint::Options {
                ipvs,
                image_repository: None,
                allow,
            };
            if let Some(inv) = &inventory {
                let i = nodebake::cluster::inventory::load(inv)?.inventory;
                opts.image_repository = Some(i.image_repository());
                opts.ipvs |= i.cluster.kube_proxy_mode == "ipvs";
            }
            let report = if target.is_dir() {
                nodebake::lint::lint_output(&target, &opts)?
            } else if inputs_only {
                lint_inputs(&target, lock, profiles_dir, &opts)?
            } else {
                lint_spec(&target, store, lock, profiles_dir, &opts)?
            };
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(if report.errors() > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Inspect { dir } => {
            let s = nodebake::inspect::inspect(&dir)?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", nodebake::inspect::render(&s));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `nodebake lint SPEC`: the build's own lint on the finished tree, with
/// no outputs written (inputs from the store, offline).
fn lint_spec(
    spec: &std::path::Path,
    store: Option<PathBuf>,
    lock: Option<PathBuf>,
    profiles_dir: Option<PathBuf>,
    opts: &nodebake::lint::Options,
) -> anyhow::Result<nodebake::lint::Report> {
    let report = build(&BuildOptions {
        spec: spec.to_path_buf(),
        out: std::env::temp_dir().join("nodebake-lint-unused"),
        lock,
        store: store.unwrap_or_else(InputStore::default_root),
        offline: true,
        // The agent is a static binary of its own: lint does not need it.
        firstboot: FirstbootSource::Without,
        profiles_dir,
        no_cache: true,
        force: false,
        quiet: true,
        lint_only: Some(opts.clone()),
    })?;
    report
        .lint
        .ok_or_else(|| anyhow::anyhow!("{}: the build returned no lint report", spec.display()))
}

/// `nodebake lint --inputs-only SPEC`: what the spec's inputs declare.
fn lint_inputs(
    spec: &std::path::Path,
    lock: Option<PathBuf>,
    profiles_dir: Option<PathBuf>,
    opts: &nodebake::lint::Options,
) -> anyhow::Result<nodebake::lint::Report> {
    let loaded = nodebake::spec::LoadedSpec::load_with(spec, lock.as_deref(), true)?;
    let dir = profiles_dir.unwrap_or_else(|| {
        let beside = loaded.dir.join("profiles");
        if beside.is_dir() {
            beside
        } else {
            loaded.dir.join("..").join("profiles")
        }
    });
    let profiles: Vec<_> = nodebake::build::load_profiles(&dir, &loaded.spec.profiles)?
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let mut opts = opts.clone();
    opts.allow.extend(loaded.spec.lint.allow.iter().cloned());
    let findings = nodebake::lint::inputs::lint_inputs(&loaded.spec, &profiles, &opts)?;
    Ok(nodebake::lint::Report {
        image: format!(
            "{} {} (inputs of {})",
            loaded.spec.name,
            loaded.spec.version,
            spec.display()
        ),
        kubernetes_version: loaded.spec.kubernetes.version.clone(),
        profiles: loaded.spec.profiles.clone(),
        kernels: Vec::new(),
        elf_checked: 0,
        packages_checked: 0,
        findings,
    })
}
