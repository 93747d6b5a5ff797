//! `nodebake-firstboot`: configures a node from its metadata on first boot.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use nodebake_contract::{image::ImageMetadata, layout};

/// First-boot agent of nodebake images.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the metadata of the image this agent was baked into.
    ImageInfo {
        /// Root of the image (default: the running system).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
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
