//! `crictl info`: the runtime's Status (verbose unless `-q`) as one JSON
//! object — `"status"` (its conditions) and every key of the `info` map
//! (containerd: `config`, `cniconfig`, `golang`...) — printed as JSON,
//! YAML or through `--template` with `-o go-template`. kubeadm runs it to
//! check that the runtime is up and to read `{{.config.sandboxImage}}`.

use anyhow::{Context, Result};

use crate::cli::InfoArgs;
use crate::cri::RuntimeClient;
use crate::output::json::{self, Format};
use crate::settings::Settings;

/// Runs `crictl info`.
pub async fn info(settings: &Settings, args: InfoArgs) -> Result<()> {
    let mut client = RuntimeClient::new(settings);
    let response = client
        .status(!args.quiet)
        .await
        .context("getting status of runtime")?;
    let Some(format) = Format::parse(&args.output) else {
        // crictl prints this and still exits 0.
        println!("Don't support {:?} format", args.output);
        return Ok(());
    };
    let text = json::status_info(&response.status, &response.info)
        .and_then(|object| json::render(&object, format, &args.template))
        .context("getting status of runtime")?;
    println!("{text}");
    Ok(())
}
