//! containerd: configuration (systemd cgroup driver, sandbox image pinned
//! to the baked pause image, registry mirrors), restart, then every baked
//! image archive imported into the `k8s.io` namespace and verified.

use std::collections::BTreeSet;

use anyhow::{bail, Result};
use nodebake_contract::image::BakedImage;
use nodebake_contract::node::KubeVersion;

use crate::quote::toml_string;
use crate::root::Root;
use crate::runner::{Cmd, Outcome, Runner};
use crate::step::{pending_files, write_files, Ctx, FileSpec, Pending, Step};

/// containerd's configuration file.
pub const CONFIG: &str = "/etc/containerd/config.toml";
/// Directory of per-registry `hosts.toml` files.
pub const CERTS_D: &str = "/etc/containerd/certs.d";
/// containerd namespace the CRI plugin (and so the kubelet) uses.
pub const NAMESPACE: &str = "k8s.io";

/// Configures containerd and imports the baked images.
pub struct Containerd;

/// The pause image kubeadm expects for a Kubernetes minor release.
pub fn default_pause_tag(v: KubeVersion) -> &'static str {
    match v.minor {
        0..=18 => "3.2",
        19..=20 => "3.2",
        21 => "3.4.1",
        22 => "3.5",
        23 => "3.6",
        24 => "3.7",
        25 => "3.8",
        26..=30 => "3.9",
        _ => "3.10",
    }
}

/// The sandbox image: the baked pause image when there is one, else the
/// one kubeadm would pull from the configured repository.
pub fn sandbox_image(cx: &Ctx<'_>) -> String {
    let baked = cx.image.and_then(|m| {
        m.images.iter().find(|i| {
            let name = i.reference.rsplit('/').next().unwrap_or(&i.reference);
            name.starts_with("pause:")
        })
    });
    match baked {
        Some(i) => i.reference.clone(),
        None => format!(
            "{}/pause:{}",
            cx.node.image_repository,
            default_pause_tag(cx.node.kubernetes_version)
        ),
    }
}

/// `config.toml` (format version 2, read by containerd 1.x and 2.x).
pub fn render_config(sandbox_image: &str) -> String {
    format!(
        r#"# Managed by nodebake-firstboot.
version = 2

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {sandbox_image}

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = true

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = {certs_d}
"#,
        sandbox_image = toml_string(sandbox_image),
        certs_d = toml_string(CERTS_D),
    )
}

/// `hosts.toml` for one registry and its mirrors.
pub fn render_hosts_toml(registry: &str, mirrors: &[String]) -> String {
    let server = if registry == "docker.io" {
        "https://registry-1.docker.io".to_string()
    } else {
        format!("https://{registry}")
    };
    let mut s = format!(
        "# Managed by nodebake-firstboot.\nserver = {}\n",
        toml_string(&server)
    );
    // Mirrors are tried in file order: one table each, its key quoted.
    for m in mirrors {
        s += &format!(
            "\n[host.{}]\n  capabilities = [\"pull\", \"resolve\"]\n",
            toml_string(m)
        );
    }
    s
}

fn files(cx: &Ctx<'_>) -> Vec<FileSpec> {
    let mut f = vec![FileSpec::new(CONFIG, render_config(&sandbox_image(cx)))];
    for (reg, mirrors) in &cx.node.registry_mirrors {
        f.push(FileSpec::new(
            &format!("{CERTS_D}/{reg}/hosts.toml"),
            render_hosts_toml(reg, mirrors),
        ));
    }
    f
}

/// A reference as containerd lists it (`pause:3.2` →
/// `docker.io/library/pause:3.2`).
pub fn normalize_ref(r: &str) -> String {
    let (first, rest) = match r.split_once('/') {
        Some((f, rest)) => (f, Some(rest)),
        None => (r, None),
    };
    let is_domain = rest.is_some() && (first.contains(['.', ':']) || first == "localhost");
    match (is_domain, rest) {
        (true, _) => r.to_string(),
        (false, Some(_)) => format!("docker.io/{r}"),
        (false, None) => format!("docker.io/library/{r}"),
    }
}

fn ctr(address: &str, args: &[&str]) -> Cmd {
    let mut a = vec!["--address", address, "--namespace", NAMESPACE];
    a.extend_from_slice(args);
    Cmd::new("ctr", a)
}

/// References present in the `k8s.io` namespace; `None` when the runner
/// does not look at the running system.
pub fn present_images(runner: &dyn Runner, address: &str) -> Result<Option<BTreeSet<String>>> {
    match runner.run(&ctr(address, &["images", "list", "--quiet"]))? {
        Outcome::Ran(out) => Ok(Some(out.lines().map(|l| l.trim().to_string()).collect())),
        Outcome::Skipped => Ok(None),
    }
}

/// Imports every image in `images` that is not present yet (archives are
/// read under `root`), then verifies every reference is present. Returns
/// the references it imported.
pub fn import_and_verify(
    runner: &dyn Runner,
    root: &Root,
    images: &[BakedImage],
    address: &str,
) -> Result<Vec<String>> {
    if images.is_empty() {
        return Ok(Vec::new());
    }
    let present = present_images(runner, address)?;
    let mut imported = Vec::new();
    for img in images {
        let want = normalize_ref(&img.reference);
        if present.as_ref().is_some_and(|p| p.contains(&want)) {
            continue;
        }
        let archive = root.path(&img.path);
        let archive = archive.to_string_lossy();
        runner.run(&ctr(address, &["images", "import", &archive]))?;
        imported.push(img.reference.clone());
    }
    if let Some(after) = present_images(runner, address)? {
        let missing: Vec<_> = images
            .iter()
            .filter(|i| !after.contains(&normalize_ref(&i.reference)))
            .map(|i| format!("{} (from {})", i.reference, i.path))
            .collect();
        if !missing.is_empty() {
            bail!(
                "images missing in containerd namespace {NAMESPACE} after import: {}",
                missing.join(", ")
            );
        }
    }
    Ok(imported)
}

fn baked<'a>(cx: &Ctx<'a>) -> &'a [BakedImage] {
    cx.image.map(|m| m.images.as_slice()).unwrap_or(&[])
}

impl Step for Containerd {
    fn id(&self) -> &'static str {
        "containerd"
    }

    fn describe(&self) -> &'static str {
        "containerd config (systemd cgroups, pinned pause image, mirrors), restart, import baked images"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        let mut p = pending_files(cx.root, &files(cx))?;
        if cx.live() && !baked(cx).is_empty() {
            let present = present_images(cx.runner, &cx.containerd.address)?.unwrap_or_default();
            for i in baked(cx) {
                if !present.contains(&normalize_ref(&i.reference)) {
                    p.push(Pending::Runtime(format!(
                        "image {} not imported",
                        i.reference
                    )));
                }
            }
        }
        Ok(p)
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        write_files(cx, &files(cx))?;
        cx.run(Cmd::new("systemctl", ["restart", "containerd.service"]))?;
        import_and_verify(cx.runner, cx.root, baked(cx), &cx.containerd.address)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_toml_with_systemd_cgroups() {
        let text = render_config("registry.k8s.io/pause:3.9");
        let v: toml::Value = toml::from_str(&text).unwrap();
        let cri = &v["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(
            cri["sandbox_image"].as_str(),
            Some("registry.k8s.io/pause:3.9")
        );
        assert_eq!(
            cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"].as_bool(),
            Some(true)
        );
        let h: toml::Value = toml::from_str(&render_hosts_toml(
            "docker.io",
            &["https://m.example".into()],
        ))
        .unwrap();
        assert_eq!(h["server"].as_str(), Some("https://registry-1.docker.io"));
        assert!(h["host"]["https://m.example"]["capabilities"].is_array());
    }

    #[test]
    fn normalizes_references() {
        assert_eq!(normalize_ref("pause:3.2"), "docker.io/library/pause:3.2");
        assert_eq!(
            normalize_ref("flannel/flannel:v1"),
            "docker.io/flannel/flannel:v1"
        );
        assert_eq!(
            normalize_ref("registry.k8s.io/pause:3.9"),
            "registry.k8s.io/pause:3.9"
        );
        assert_eq!(normalize_ref("localhost/x:1"), "localhost/x:1");
        assert_eq!(normalize_ref("localhost:5000/x:1"), "localhost:5000/x:1");
    }

    #[test]
    fn pause_tags_follow_kubeadm() {
        let v = |minor| KubeVersion {
            major: 1,
            minor,
            patch: 0,
        };
        assert_eq!(default_pause_tag(v(20)), "3.2");
        assert_eq!(default_pause_tag(v(28)), "3.9");
        assert_eq!(default_pause_tag(v(31)), "3.10");
    }
}
