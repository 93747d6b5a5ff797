//! `crictl version`: the runtime's Version answer.

use anyhow::{Context, Result};

use crate::cri::RuntimeClient;
use crate::settings::Settings;

/// Runs `crictl version`.
pub async fn version(settings: &Settings) -> Result<()> {
    let mut client = RuntimeClient::new(settings);
    let response = client
        .version()
        .await
        .context("getting the runtime version")?;
    println!("Version:  {}", response.version);
    println!("RuntimeName:  {}", response.runtime_name);
    println!("RuntimeVersion:  {}", response.runtime_version);
    println!("RuntimeApiVersion:  {}", response.runtime_api_version);
    Ok(())
}
