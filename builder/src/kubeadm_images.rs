//! The container images a Kubernetes version needs, resolved the way
//! `kubeadm config images list` does (kube-apiserver, kube-controller-manager,
//! kube-scheduler, kube-proxy tagged `v<version>`; pause, etcd and coredns
//! with their version-specific tags), plus the CNI's images, so a spec with
//! `kubernetes.images = "auto"` needs no image list.
//!
//! Sources of the table: the per-release output of `kubeadm config images
//! list` recorded in minikube's `pkg/minikube/constants/
//! constants_kubeadm_images.go` (releases up to 1.31.2, 1.30.6, 1.29.10,
//! 1.28.15, ...), cross-checked with kubeadm's `constants.go` defaults for
//! each minor's `.0`. A patch newer than the last recorded one reuses the
//! last row of its minor. Flannel image tags come from the releases'
//! `kube-flannel.yml`.

use anyhow::{anyhow, bail, Result};

use crate::spec::{Artifact, ArtifactKind, ImageSpec, REGISTRY_SOURCE};

/// One image of the resolved list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// Artifact name (`kube-apiserver`, `pause`, `flannel`, ...).
    pub name: String,
    /// Full reference (`registry.k8s.io/pause:3.10`).
    pub reference: String,
}

impl ResolvedImage {
    /// The `[[artifact]]` this image stands for (`source = "registry"`,
    /// digests from the lock file).
    pub fn into_artifact(self) -> Artifact {
        Artifact {
            name: self.name,
            source: REGISTRY_SOURCE.to_string(),
            sha256: None,
            kind: ArtifactKind::Image,
            dest: None,
            mode: None,
            strip_components: 0,
            include: Vec::new(),
            exclude: Vec::new(),
            overwrite: Vec::new(),
            reference: Some(self.reference),
            digest: None,
        }
    }
}

/// pause, etcd and coredns tags of a minor release from a patch on.
struct Row {
    minor: u32,
    from_patch: u32,
    pause: &'static str,
    etcd: &'static str,
    coredns: &'static str,
}

/// The table, by minor then first patch release (ascending).
static TABLE: &[Row] = &[
    Row {
        minor: 20,
        from_patch: 0,
        pause: "3.2",
        etcd: "3.4.13-0",
        coredns: "1.7.0",
    },
    Row {
        minor: 21,
        from_patch: 0,
        pause: "3.4.1",
        etcd: "3.4.13-0",
        coredns: "v1.8.0",
    },
    Row {
        minor: 22,
        from_patch: 0,
        pause: "3.5",
        etcd: "3.5.0-0",
        coredns: "v1.8.4",
    },
    Row {
        minor: 22,
        from_patch: 17,
        pause: "3.5",
        etcd: "3.5.6-0",
        coredns: "v1.8.4",
    },
    Row {
        minor: 23,
        from_patch: 0,
        pause: "3.6",
        etcd: "3.5.1-0",
        coredns: "v1.8.6",
    },
    Row {
        minor: 23,
        from_patch: 14,
        pause: "3.6",
        etcd: "3.5.5-0",
        coredns: "v1.8.6",
    },
    Row {
        minor: 23,
        from_patch: 15,
        pause: "3.6",
        etcd: "3.5.6-0",
        coredns: "v1.8.6",
    },
    Row {
        minor: 24,
        from_patch: 0,
        pause: "3.7",
        etcd: "3.5.3-0",
        coredns: "v1.8.6",
    },
    Row {
        minor: 24,
        from_patch: 8,
        pause: "3.7",
        etcd: "3.5.5-0",
        coredns: "v1.8.6",
    },
    Row {
        minor: 24,
        from_patch: 9,
        pause: "3.7",
        etcd: "3.5.6-0",
        coredns: "v1.8.6",
    },
    Row {
        minor: 25,
        from_patch: 0,
        pause: "3.8",
        etcd: "3.5.4-0",
        coredns: "v1.9.3",
    },
    Row {
        minor: 25,
        from_patch: 4,
        pause: "3.8",
        etcd: "3.5.5-0",
        coredns: "v1.9.3",
    },
    Row {
        minor: 25,
        from_patch: 5,
        pause: "3.8",
        etcd: "3.5.6-0",
        coredns: "v1.9.3",
    },
    Row {
        minor: 25,
        from_patch: 15,
        pause: "3.8",
        etcd: "3.5.9-0",
        coredns: "v1.9.3",
    },
    Row {
        minor: 26,
        from_patch: 0,
        pause: "3.9",
        etcd: "3.5.6-0",
        coredns: "v1.9.3",
    },
    Row {
        minor: 26,
        from_patch: 10,
        pause: "3.9",
        etcd: "3.5.9-0",
        coredns: "v1.9.3",
    },
    Row {
        minor: 26,
        from_patch: 13,
        pause: "3.9",
        etcd: "3.5.10-0",
        coredns: "v1.9.3",
    },
    Row {
        minor: 27,
        from_patch: 0,
        pause: "3.9",
        etcd: "3.5.7-0",
        coredns: "v1.10.1",
    },
    Row {
        minor: 27,
        from_patch: 7,
        pause: "3.9",
        etcd: "3.5.9-0",
        coredns: "v1.10.1",
    },
    Row {
        minor: 27,
        from_patch: 10,
        pause: "3.9",
        etcd: "3.5.10-0",
        coredns: "v1.10.1",
    },
    Row {
        minor: 27,
        from_patch: 12,
        pause: "3.9",
        etcd: "3.5.12-0",
        coredns: "v1.10.1",
    },
    Row {
        minor: 28,
        from_patch: 0,
        pause: "3.9",
        etcd: "3.5.9-0",
        coredns: "v1.10.1",
    },
    Row {
        minor: 28,
        from_patch: 6,
        pause: "3.9",
        etcd: "3.5.10-0",
        coredns: "v1.10.1",
    },
    Row {
        minor: 28,
        from_patch: 8,
        pause: "3.9",
        etcd: "3.5.12-0",
        coredns: "v1.10.1",
    },
    Row {
        minor: 28,
        from_patch: 14,
        pause: "3.9",
        etcd: "3.5.15-0",
        coredns: "v1.10.1",
    },
    Row {
        minor: 29,
        from_patch: 0,
        pause: "3.9",
        etcd: "3.5.10-0",
        coredns: "v1.11.1",
    },
    Row {
        minor: 29,
        from_patch: 3,
        pause: "3.9",
        etcd: "3.5.12-0",
        coredns: "v1.11.1",
    },
    Row {
        minor: 29,
        from_patch: 9,
        pause: "3.9",
        etcd: "3.5.15-0",
        coredns: "v1.11.1",
    },
    Row {
        minor: 30,
        from_patch: 0,
        pause: "3.9",
        etcd: "3.5.12-0",
        coredns: "v1.11.1",
    },
    Row {
        minor: 30,
        from_patch: 5,
        pause: "3.9",
        etcd: "3.5.15-0",
        coredns: "v1.11.3",
    },
    Row {
        minor: 31,
        from_patch: 0,
        pause: "3.10",
        etcd: "3.5.15-0",
        coredns: "v1.11.1",
    },
    Row {
        minor: 31,
        from_patch: 1,
        pause: "3.10",
        etcd: "3.5.15-0",
        coredns: "v1.11.3",
    },
];

/// kubeadm's default image repository: `k8s.gcr.io` before 1.25,
/// `registry.k8s.io` from 1.25 on.
pub fn default_repository(minor: u32) -> &'static str {
    if minor < 25 {
        "k8s.gcr.io"
    } else {
        "registry.k8s.io"
    }
}

/// Parses `MAJOR.MINOR.PATCH` (an optional leading `v`).
pub fn parse_version(v: &str) -> Result<(u32, u32, u32)> {
    let parts: Vec<u32> = v
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse::<u32>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow!("`{v}` is not MAJOR.MINOR.PATCH"))?;
    match parts.as_slice() {
        [a, b, c] => Ok((*a, *b, *c)),
        _ => bail!("`{v}` is not MAJOR.MINOR.PATCH"),
    }
}

/// `kubeadm config images list --kubernetes-version <version>
/// [--image-repository <repository>]`.
pub fn kubeadm_images(version: &str, repository: Option<&str>) -> Result<Vec<ResolvedImage>> {
    let (major, minor, patch) = parse_version(version)?;
    let r = TABLE
        .iter()
        .rev()
        .find(|r| major == 1 && r.minor == minor && r.from_patch <= patch)
        .ok_or_else(|| {
            anyhow!("Kubernetes {version}: image tags are known for 1.20 to 1.31 only; list the images as artifacts")
        })?;
    let repo = repository
        .unwrap_or(default_repository(minor))
        .trim_end_matches('/');
    let tag = format!("v{major}.{minor}.{patch}");
    let mut out: Vec<ResolvedImage> = [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kube-proxy",
    ]
    .iter()
    .map(|n| ResolvedImage {
        name: n.to_string(),
        reference: format!("{repo}/{n}:{tag}"),
    })
    .collect();
    out.push(ResolvedImage {
        name: "pause".into(),
        reference: format!("{repo}/pause:{}", r.pause),
    });
    out.push(ResolvedImage {
        name: "etcd".into(),
        reference: format!("{repo}/etcd:{}", r.etcd),
    });
    // From 1.21 the image is coredns/coredns (tag with `v`) in the default
    // repository; kubeadm keeps a flat `coredns` under any other one.
    let coredns = if minor >= 21 && repo == default_repository(minor) {
        format!("{repo}/coredns/coredns:{}", r.coredns)
    } else {
        format!("{repo}/coredns:{}", r.coredns)
    };
    out.push(ResolvedImage {
        name: "coredns".into(),
        reference: coredns,
    });
    Ok(out)
}

/// The flannel version used when `cni_version` is not given: v0.12.0 (the
/// seed's) before Kubernetes 1.22, v0.25.6 after.
pub fn default_cni_version(cni: &str, minor: u32) -> Option<&'static str> {
    match cni {
        "flannel" if minor < 22 => Some("v0.12.0"),
        "flannel" => Some("v0.25.6"),
        _ => None,
    }
}

/// The images of a CNI at a version for an architecture (`amd64`,
/// `arm64`); `repository` replaces the upstream repository.
pub fn cni_images(
    cni: &str,
    version: &str,
    arch: &str,
    repository: Option<&str>,
) -> Result<Vec<ResolvedImage>> {
    if cni != "flannel" {
        bail!("the images of CNI `{cni}` are not known to nodebake; list them as artifacts");
    }
    let one = |repo: &str, name: &str, tag: &str| ResolvedImage {
        name: name.to_string(),
        reference: format!("{}/{name}:{tag}", repository.unwrap_or(repo)),
    };
    Ok(match version {
        // Per-architecture tags on quay.io, no separate CNI plugin image.
        "v0.12.0" => vec![one("quay.io/coreos", "flannel", &format!("{version}-{arch}"))],
        "v0.25.6" | "v0.25.7" => vec![
            one("docker.io/flannel", "flannel", version),
            one("docker.io/flannel", "flannel-cni-plugin", "v1.5.1-flannel2"),
        ],
        _ => bail!("flannel {version}: its image tags are not known to nodebake (known: v0.12.0, v0.25.6, v0.25.7); list the images as artifacts"),
    })
}

/// Every image `kubernetes.images = "auto"` adds to `spec`.
pub fn resolve(spec: &ImageSpec) -> Result<Vec<ResolvedImage>> {
    let k = &spec.kubernetes;
    let (_, minor, _) = parse_version(&k.version)?;
    let mut out = kubeadm_images(&k.version, k.image_repository.as_deref())?;
    if let Some(cni) = &k.cni {
        let version = match &k.cni_version {
            Some(v) => v.as_str(),
            None => default_cni_version(cni, minor).ok_or_else(|| {
                anyhow!(
                    "the images of CNI `{cni}` are not known to nodebake; list them as artifacts"
                )
            })?,
        };
        let arch = crate::registry::oci_arch(&spec.arch)?;
        out.extend(cni_images(
            cni,
            version,
            arch,
            k.cni_image_repository.as_deref(),
        )?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &str, repo: Option<&str>) -> Vec<String> {
        kubeadm_images(v, repo)
            .unwrap()
            .into_iter()
            .map(|i| i.reference)
            .collect()
    }

    #[test]
    fn k8s_1_20_matches_kubeadm() {
        assert_eq!(
            refs("1.20.0", None),
            [
                "k8s.gcr.io/kube-apiserver:v1.20.0",
                "k8s.gcr.io/kube-controller-manager:v1.20.0",
                "k8s.gcr.io/kube-scheduler:v1.20.0",
                "k8s.gcr.io/kube-proxy:v1.20.0",
                "k8s.gcr.io/pause:3.2",
                "k8s.gcr.io/etcd:3.4.13-0",
                "k8s.gcr.io/coredns:1.7.0",
            ]
        );
    }

    #[test]
    fn seed_mirror_repository() {
        let r = refs("1.20.0", Some("registry.aliyuncs.com/google_containers"));
        assert_eq!(r[4], "registry.aliyuncs.com/google_containers/pause:3.2");
        assert_eq!(
            r[6],
            "registry.aliyuncs.com/google_containers/coredns:1.7.0"
        );
        let r = refs("1.31.2", Some("registry.aliyuncs.com/google_containers/"));
        assert_eq!(
            r[6],
            "registry.aliyuncs.com/google_containers/coredns:v1.11.3"
        );
    }

    #[test]
    fn k8s_1_31_matches_kubeadm() {
        let r = refs("1.31.1", None);
        assert_eq!(r[0], "registry.k8s.io/kube-apiserver:v1.31.1");
        assert_eq!(r[4], "registry.k8s.io/pause:3.10");
        assert_eq!(r[5], "registry.k8s.io/etcd:3.5.15-0");
        assert_eq!(r[6], "registry.k8s.io/coredns/coredns:v1.11.3");
        // 1.31.0 itself shipped with coredns v1.11.1.
        assert_eq!(
            refs("1.31.0", None)[6],
            "registry.k8s.io/coredns/coredns:v1.11.1"
        );
    }

    #[test]
    fn patch_rows_and_registry_switch() {
        assert_eq!(refs("1.21.3", None)[6], "k8s.gcr.io/coredns/coredns:v1.8.0");
        assert_eq!(refs("1.24.0", None)[5], "k8s.gcr.io/etcd:3.5.3-0");
        assert_eq!(refs("1.24.17", None)[5], "k8s.gcr.io/etcd:3.5.6-0");
        assert_eq!(refs("1.25.0", None)[4], "registry.k8s.io/pause:3.8");
        assert_eq!(refs("1.28.15", None)[5], "registry.k8s.io/etcd:3.5.15-0");
        assert_eq!(
            refs("1.30.4", None)[6],
            "registry.k8s.io/coredns/coredns:v1.11.1"
        );
        assert!(kubeadm_images("1.19.0", None).is_err());
        assert!(kubeadm_images("1.32.0", None).is_err());
    }

    #[test]
    fn flannel_images() {
        let f = cni_images("flannel", "v0.12.0", "amd64", None).unwrap();
        assert_eq!(f[0].reference, "quay.io/coreos/flannel:v0.12.0-amd64");
        let f = cni_images("flannel", "v0.25.6", "arm64", Some("127.0.0.1:5000/fl")).unwrap();
        assert_eq!(f[0].reference, "127.0.0.1:5000/fl/flannel:v0.25.6");
        assert_eq!(
            f[1].reference,
            "127.0.0.1:5000/fl/flannel-cni-plugin:v1.5.1-flannel2"
        );
        assert!(cni_images("calico", "v3", "amd64", None).is_err());
    }
}
