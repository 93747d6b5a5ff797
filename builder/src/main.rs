//! `nodebake`: bakes Kubernetes node images. See `nodebake --help`.

use std::path::PathBuf;
use std::process::ExitCode;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
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
                quiet: cli.quiet,
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
