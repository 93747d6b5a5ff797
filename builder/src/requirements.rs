//! What the image's role profiles need on the node, checked at bake time:
//! the commands kubeadm's preflight requires for a containerd node (its
//! `[ERROR FileExisting-*]` list, and the ones it only warns about), the
//! kernel configuration its `SystemVerification` reads, what the
//! first-boot agent itself runs, and keepalived + haproxy where a profile
//! carries the VIP. Every finding names the profile and the missing file;
//! the build prints them as warnings, so an image that cannot pass
//! preflight is known before a node boots.

use nodebake_contract::profile::{Role, RoleProfile};

use crate::tree::{Kind, Tree};

/// Directories searched for commands, as a node's `PATH`.
const PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Commands kubeadm preflight fails without (containerd runtime).
const KUBEADM_ERRORS: &[&str] = &[
    "kubeadm",
    "kubelet",
    "crictl",
    "conntrack",
    "ip",
    "iptables",
    "mount",
    "nsenter",
    "touch",
];

/// Commands kubeadm preflight only warns about.
const KUBEADM_WARNINGS: &[&str] = &["ethtool", "socat", "tc", "ebtables"];

/// Commands nodebake-firstboot runs on every node.
const AGENT: &[&str] = &["kubectl", "openssl", "timeout", "modprobe", "sysctl", "ctr"];

/// Commands the agent runs on masters (a rebuilt master's stale etcd member
/// is removed with etcdctl).
const MASTER_AGENT: &[&str] = &["etcdctl"];

/// Commands a profile with `load_balancer = true` needs.
const LOAD_BALANCER: &[&str] = &["keepalived", "haproxy"];

/// One missing requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The profile that needs it.
    pub profile: String,
    /// What is missing and who needs it.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "profile `{}`: {}", self.profile, self.message)
    }
}

/// Whether `cmd` is an executable file (through symlinks) on the node's PATH.
fn has_command(tree: &Tree, cmd: &str) -> bool {
    PATH.iter().any(|dir| {
        let Ok(p) = tree.resolve(&format!("{dir}/{cmd}"), true) else {
            return false;
        };
        matches!(tree.get(&p), Some(e) if matches!(e.kind, Kind::File(_)) && e.mode & 0o111 != 0)
    })
}

/// Whether the kernel configuration of `release` (or of any kernel, when
/// the release is unknown) is in the image where kubeadm looks for it.
fn has_kernel_config(tree: &Tree, release: Option<&str>) -> bool {
    let matches = |p: &str| match release {
        Some(r) => {
            p == format!("boot/config-{r}")
                || p == format!("usr/lib/modules/{r}/config")
                || p == format!("lib/modules/{r}/config")
        }
        None => {
            (p.starts_with("boot/config-") && !p[12..].contains('/'))
                || (p.contains("lib/modules/") && p.ends_with("/config"))
        }
    };
    tree.iter()
        .any(|(p, e)| matches!(e.kind, Kind::File(_)) && matches(p))
}

/// Every requirement of `profiles` the image in `tree` lacks.
/// `kernel_release` is the release of the image's kernel, when it has one.
pub fn check_profiles(
    tree: &Tree,
    profiles: &[RoleProfile],
    kernel_release: Option<&str>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in profiles {
        let mut need = |cmds: &[&str], who: &str| {
            for c in cmds {
                if !has_command(tree, c) {
                    out.push(Finding {
                        profile: p.name.clone(),
                        message: format!("`{c}` is not in the image ({who})"),
                    });
                }
            }
        };
        need(KUBEADM_ERRORS, "kubeadm preflight fails without it");
        need(KUBEADM_WARNINGS, "kubeadm preflight warns without it");
        need(AGENT, "nodebake-firstboot runs it");
        if p.role == Role::Master {
            need(MASTER_AGENT, "nodebake-firstboot runs it on masters");
        }
        if p.load_balancer {
            need(
                LOAD_BALANCER,
                "the profile carries the VIP and load balancer",
            );
        }
        if !has_kernel_config(tree, kernel_release) {
            out.push(Finding {
                profile: p.name.clone(),
                message: format!(
                    "no kernel configuration (/boot/config-{}): kubeadm preflight's \
                     SystemVerification fails without it (keep boot/config-* of the kernel package)",
                    kernel_release.unwrap_or("<release>")
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blobs::BlobId;
    use crate::tree::Entry;

    const NO: &dyn Fn(&str) -> bool = &|_| false;

    fn exe(n: u8) -> Entry {
        Entry {
            kind: Kind::File(BlobId {
                sha: [n; 32],
                size: 1,
            }),
            mode: 0o755,
            uid: 0,
            gid: 0,
            origin: 0,
        }
    }

    fn profile(name: &str, lb: bool) -> RoleProfile {
        RoleProfile {
            name: name.into(),
            role: if lb { Role::Master } else { Role::Worker },
            description: String::new(),
            kernel_modules: vec![],
            firewall_ports: vec![],
            enable_units: vec![],
            load_balancer: lb,
            bootstrap_token_ttl: None,
            keep_bootstrap_token: None,
        }
    }

    fn full_tree() -> Tree {
        let mut t = Tree::new();
        t.insert(
            "/usr/bin",
            Entry {
                kind: Kind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                origin: 0,
            },
            NO,
        )
        .unwrap();
        t.insert(
            "/bin",
            Entry {
                kind: Kind::Symlink("usr/bin".into()),
                mode: 0o777,
                uid: 0,
                gid: 0,
                origin: 0,
            },
            NO,
        )
        .unwrap();
        let all = KUBEADM_ERRORS
            .iter()
            .chain(KUBEADM_WARNINGS)
            .chain(AGENT)
            .chain(MASTER_AGENT)
            .chain(LOAD_BALANCER);
        for (i, c) in all.enumerate() {
            // Through the usrmerge link, as EL and Debian have them.
            t.insert(&format!("/bin/{c}"), exe(i as u8), NO).unwrap();
        }
        t.insert("/boot/config-6.1.0-cloud", exe(200), NO).unwrap();
        t
    }

    #[test]
    fn a_complete_image_has_no_findings() {
        let t = full_tree();
        let p = [profile("master", true), profile("worker", false)];
        assert_eq!(check_profiles(&t, &p, Some("6.1.0-cloud")), vec![]);
        assert_eq!(check_profiles(&t, &p, None), vec![]);
    }

    #[test]
    fn every_missing_requirement_is_named_with_its_profile() {
        let mut t = Tree::new();
        t.insert("/usr/sbin/haproxy", exe(1), NO).unwrap();
        let mut noexec = exe(2);
        noexec.mode = 0o644;
        t.insert("/usr/bin/crictl", noexec, NO).unwrap();
        let f = check_profiles(&t, &[profile("master", true)], Some("6.1.0-cloud"));
        let text: Vec<String> = f.iter().map(|f| f.to_string()).collect();
        for want in [
            "profile `master`: `crictl` is not in the image (kubeadm preflight fails without it)",
            "`socat` is not in the image (kubeadm preflight warns without it)",
            "`keepalived` is not in the image",
            "/boot/config-6.1.0-cloud",
        ] {
            assert!(text.iter().any(|t| t.contains(want)), "{want}: {text:#?}");
        }
        assert!(!text.iter().any(|t| t.contains("`haproxy`")), "{text:#?}");
        assert!(text.iter().any(|t| t.contains("`etcdctl`")), "{text:#?}");
        let w = check_profiles(&t, &[profile("worker", false)], None);
        assert!(!w
            .iter()
            .any(|f| f.message.contains("keepalived") || f.message.contains("etcdctl")));
        // A kernel config of another release does not count.
        t.insert("/boot/config-5.10", exe(3), NO).unwrap();
        let f = check_profiles(&t, &[profile("worker", false)], Some("6.1.0-cloud"));
        assert!(f.iter().any(|f| f.message.contains("kernel configuration")));
    }
}
