//! `nodebake lint --inputs-only SPEC`: the lint's requirements checked
//! against what the spec *declares* — its artifacts (RPM and DEB package
//! names and versions from their file names, file and tarball
//! destinations, image references, `images = "auto"`) and the packages
//! `[base] packages` says the base holds (which every build checks against
//! the base's package database). It needs no input at hand, so it runs on
//! specs whose digests are not pinned yet (the shipped EL specs); the build
//! then checks the real tree.

use std::collections::BTreeSet;

use anyhow::Result;
use nodebake_contract::profile::RoleProfile;

use super::{expected_images, profile_commands, HAPROXY_MIN, KEEPALIVED_MIN};
use super::{finding, how_to_add, major_minor, Finding, Findings, Options, Severity};
use crate::spec::{ArtifactKind, ImageSpec};

/// Packages (RPM or DEB names) that ship each command.
const PROVIDERS: &[(&str, &[&str])] = &[
    ("crictl", &["cri-tools", "crictl"]),
    ("conntrack", &["conntrack-tools", "conntrack"]),
    ("ip", &["iproute", "iproute2"]),
    ("tc", &["iproute-tc", "iproute2"]),
    ("iptables", &["iptables", "iptables-nft", "iptables-legacy"]),
    ("ebtables", &["ebtables", "iptables-nft", "ebtables-legacy"]),
    ("mount", &["util-linux", "util-linux-core", "mount"]),
    ("nsenter", &["util-linux", "util-linux-core"]),
    ("touch", &["coreutils", "coreutils-single"]),
    ("timeout", &["coreutils", "coreutils-single"]),
    ("ethtool", &["ethtool"]),
    ("socat", &["socat"]),
    ("kubeadm", &["kubeadm"]),
    ("kubelet", &["kubelet"]),
    ("kubectl", &["kubectl", "kubernetes-client"]),
    ("openssl", &["openssl"]),
    ("modprobe", &["kmod"]),
    ("sysctl", &["procps-ng", "procps"]),
    ("ctr", &["containerd", "containerd.io"]),
    ("etcdctl", &["etcd", "etcd-client", "etcdctl"]),
    ("keepalived", &["keepalived"]),
    ("haproxy", &["haproxy"]),
    ("chronyd", &["chrony"]),
];

/// EL7's iproute ships `tc` itself (EL8+ split it into iproute-tc).
fn el7_iproute(name: &str, version: &str) -> bool {
    name == "iproute" && major_minor(version).is_some_and(|v| v < (5, 0))
}

/// A package an artifact installs: (name, version).
fn package_of(kind: ArtifactKind, name: &str, source: &str) -> Option<(String, String)> {
    let file = source.rsplit('/').next().unwrap_or(source);
    match kind {
        ArtifactKind::Rpm => {
            // name-version-release.arch.rpm
            let stem = file.strip_suffix(".rpm")?;
            let (nvr, _arch) = stem.rsplit_once('.')?;
            let (nv, _release) = nvr.rsplit_once('-')?;
            let (n, v) = nv.rsplit_once('-')?;
            Some((n.to_string(), v.to_string()))
        }
        ArtifactKind::Deb => match file.strip_suffix(".deb")?.split('_').collect::<Vec<_>>()[..] {
            [n, v, _] => Some((n.to_string(), v.to_string())),
            _ => Some((name.to_string(), String::new())),
        },
        _ => None,
    }
}

/// Checks a spec's declared inputs; `profiles` are the spec's profiles.
pub fn lint_inputs(
    spec: &ImageSpec,
    profiles: &[RoleProfile],
    opts: &Options,
) -> Result<Vec<Finding>> {
    let k8s = &spec.kubernetes.version;
    let kminor = crate::kubeadm_images::parse_version(k8s)?.1;
    // What the inputs provide.
    let mut packages: Vec<(String, String)> = spec
        .base
        .packages
        .iter()
        .map(|p| (p.clone(), String::new()))
        .collect();
    let mut commands: BTreeSet<String> = BTreeSet::new();
    let mut artifact_names: BTreeSet<String> = BTreeSet::new();
    for a in &spec.artifacts {
        artifact_names.insert(a.name.clone());
        if let Some(p) = package_of(a.kind, &a.name, &a.source) {
            packages.push(p);
        }
        match a.kind {
            ArtifactKind::File => {
                if let Some(d) = &a.dest {
                    commands.insert(d.rsplit('/').next().unwrap_or(d).to_string());
                }
            }
            ArtifactKind::Tarball => {
                commands.insert(a.name.clone());
                // Release tarballs and what they carry.
                let carries: &[&str] = match a.name.as_str() {
                    "containerd" => &["ctr", "containerd"],
                    "etcd" | "etcd-release" => &["etcdctl"],
                    "cri-tools" | "crictl" => &["crictl"],
                    _ => &[],
                };
                commands.extend(carries.iter().map(|c| c.to_string()));
            }
            _ => {}
        }
    }
    let provides = |cmd: &str| -> bool {
        commands.contains(cmd)
            || PROVIDERS
                .iter()
                .find(|(c, _)| *c == cmd)
                .is_some_and(|(_, pkgs)| {
                    packages.iter().any(|(n, v)| {
                        pkgs.contains(&n.as_str()) || (cmd == "tc" && el7_iproute(n, v))
                    })
                })
    };
    let mut f = Findings::default();
    let missing = |cmd: &str, sev: Severity, who: String| {
        finding(
            format!("command:{cmd}"),
            sev,
            format!("no input of the spec provides `{cmd}` (nor does `[base] packages` declare a package that does)"),
            who,
            how_to_add(cmd).to_string(),
        )
    };
    for p in profiles {
        let mut need = profile_commands(p, kminor);
        need.push((
            "chronyd",
            Severity::Warning,
            "nodebake-firstboot, to apply the inventory's NTP servers".into(),
        ));
        for (cmd, sev, who) in need {
            if !provides(cmd) {
                f.add(Some(&p.name), missing(cmd, sev, who));
            }
        }
        if p.load_balancer {
            for (name, min) in [("haproxy", HAPROXY_MIN), ("keepalived", KEEPALIVED_MIN)] {
                for (n, v) in &packages {
                    if n == name && major_minor(v).is_some_and(|mm| mm < min) {
                        f.add(
                            Some(&p.name),
                            finding(
                                format!("version:{name}"),
                                Severity::Error,
                                format!("{name} {v} is older than {}.{}", min.0, min.1),
                                "the rendered load-balancer configuration".into(),
                                format!("bake {name} {}.{} or later", min.0, min.1),
                            ),
                        );
                    }
                }
            }
        }
    }
    // Kernel configuration: the kernel package carries it.
    let kernel_pkg = packages.iter().any(|(n, _)| {
        ["kernel", "kernel-core"].contains(&n.as_str()) || n.starts_with("linux-image")
    }) || spec.artifacts.iter().any(|a| {
        a.name == "kernel"
            && (a.include.is_empty() || a.include.iter().any(|i| i.contains("config")))
    });
    if !kernel_pkg {
        f.add(None, finding(
            "kernel-config".into(),
            Severity::Error,
            "no input of the spec carries a kernel with its configuration".into(),
            "kubeadm preflight's SystemVerification (fails without /boot/config-<release>)".into(),
            "add the kernel package (EL7: kernel; EL9: kernel-core and kernel-modules), keeping boot/config-*".into(),
        ));
    }
    // Images.
    let mut baked: Vec<String> = spec
        .artifacts
        .iter()
        .filter(|a| a.kind == ArtifactKind::Image)
        .filter_map(|a| a.reference.clone())
        .collect();
    if spec.kubernetes.images == crate::spec::ImagesMode::Auto {
        baked.extend(
            crate::kubeadm_images::resolve(spec)?
                .into_iter()
                .map(|i| i.reference),
        );
    }
    let baked_repo = baked
        .iter()
        .find(|r| {
            r.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("kube-apiserver:"))
        })
        .and_then(|r| r.rsplit_once('/').map(|(repo, _)| repo.to_string()));
    let repo = opts
        .image_repository
        .clone()
        .or(baked_repo)
        .or(spec.kubernetes.image_repository.clone());
    let expected = expected_images(k8s, repo.as_deref(), &mut f);
    for want in expected {
        if !baked.contains(&want.reference) {
            f.add(
                None,
                finding(
                    format!("image:{}", want.name),
                    Severity::Error,
                    format!("no input of the spec bakes `{}`", want.reference),
                    format!("kubeadm {k8s} (an air-gapped node cannot pull it)"),
                    format!(
                        "add an image artifact with reference = \"{}\", or `images = \"auto\"`",
                        want.reference
                    ),
                ),
            );
        }
    }
    // CNI plugins.
    let cni = artifact_names
        .iter()
        .any(|n| n == "cni-plugins" || n == "containernetworking-plugins")
        || packages
            .iter()
            .any(|(n, _)| n == "containernetworking-plugins");
    if !cni {
        f.add(None, finding(
            "cni:plugins".into(),
            Severity::Error,
            "no input of the spec provides the CNI plugins (loopback, bridge, host-local, portmap)".into(),
            "pod networking".into(),
            "add the cni-plugins tarball into /opt/cni/bin (or the containernetworking-plugins package)".into(),
        ));
    }
    f.finish(&opts.allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_beyond_the_image_table_is_a_warning_not_a_failure() {
        let spec: ImageSpec = toml::from_str(
            "spec_version = 1\nname = \"x\"\nversion = \"1\"\narch = \"x86_64\"\n\
             [base]\nsource = \"b.tar\"\n[kubernetes]\nversion = \"1.40.0\"\n",
        )
        .unwrap();
        let f = lint_inputs(&spec, &[], &Options::default()).unwrap();
        let images = f.iter().find(|f| f.id == "images").unwrap();
        assert_eq!(images.severity, Severity::Warning);
        assert!(images.requirement.contains("1.40.0"), "{images:?}");
        assert!(!f.iter().any(|f| f.id.starts_with("image:")), "{f:?}");
        assert!(f
            .iter()
            .any(|f| f.id == "kernel-config" && f.severity == Severity::Error));
    }

    #[test]
    fn package_names_and_versions_come_from_file_names() {
        assert_eq!(
            package_of(ArtifactKind::Rpm, "x", "https://vault.centos.org/7.9.2009/os/x86_64/Packages/haproxy-1.5.18-9.el7.x86_64.rpm"),
            Some(("haproxy".into(), "1.5.18".into()))
        );
        assert_eq!(
            package_of(
                ArtifactKind::Rpm,
                "x",
                "conntrack-tools-1.4.7-2.el9.x86_64.rpm"
            ),
            Some(("conntrack-tools".into(), "1.4.7".into()))
        );
        assert_eq!(
            package_of(
                ArtifactKind::Deb,
                "x",
                "debs/keepalived_1%3a2.2.7-1_amd64.deb"
            ),
            Some(("keepalived".into(), "1%3a2.2.7-1".into()))
        );
        assert_eq!(
            package_of(ArtifactKind::Deb, "kernel", "debs/kernel.deb"),
            Some(("kernel".into(), String::new()))
        );
        assert!(el7_iproute("iproute", "4.11.0") && !el7_iproute("iproute", "6.2.0"));
    }
}
