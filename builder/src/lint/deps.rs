//! Package dependency closure: every `Requires` of every RPM (the base's
//! rpm database and the RPM artifacts) and every `Depends`/`Pre-Depends`
//! of every Debian package (dpkg status and the DEB artifacts) must be
//! satisfied inside the image, by a package's name or `Provides` (sonames,
//! capabilities, virtual packages) or, for a path, by a file of the image.
//! Versions are not compared: a dependency is met by name. RPM rich
//! dependencies (`(a or b)`) are reported as unsupported, not guessed.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::rpm::{tag, RpmHeader};
use crate::tree::{Kind, Tree};

/// Where the builder records the dependencies of RPM and DEB artifacts
/// (they are unpacked, not installed, so no package database lists them):
/// one `<artifact>.json` per package.
pub const ARTIFACT_DEPS_DIR: &str = "/usr/lib/nodebake/package-deps";

/// `RPMSENSE_RPMLIB`: a requirement on rpm's own features.
const RPMSENSE_RPMLIB: u32 = 1 << 24;
/// `RPMSENSE_MISSINGOK`: a weak requirement.
const RPMSENSE_MISSINGOK: u32 = 1 << 19;
/// `RPMTAG_REQUIREFLAGS`.
const REQUIREFLAGS: u32 = 1048;

/// The dependencies of one package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageDeps {
    /// `name-version-release.arch` (RPM) or `name version` (DEB).
    pub package: String,
    /// `rpm` or `deb`.
    pub format: String,
    /// Where it came from: `rpmdb`, `dpkg` or `artifact:<name>`.
    pub source: String,
    /// Each requirement as its alternatives (RPM: always one).
    pub requires: Vec<Vec<String>>,
    /// The package's own name and what it provides.
    pub provides: Vec<String>,
}

/// The dependencies of an RPM header.
pub fn from_rpm_header(h: &RpmHeader, source: &str) -> PackageDeps {
    let names = h.string_array(tag::REQUIRENAME).unwrap_or(&[]);
    let flags = h.int32_array(REQUIREFLAGS).unwrap_or(&[]);
    let requires = names
        .iter()
        .enumerate()
        .filter(|(i, n)| {
            let f = flags.get(*i).copied().unwrap_or(0);
            f & (RPMSENSE_RPMLIB | RPMSENSE_MISSINGOK) == 0 && !n.starts_with("rpmlib(")
        })
        .map(|(_, n)| vec![n.clone()])
        .collect();
    let mut provides: Vec<String> = h.string_array(tag::PROVIDENAME).unwrap_or(&[]).to_vec();
    if let Some(n) = h.name() {
        provides.push(n.to_string());
    }
    PackageDeps {
        package: h.nevra(),
        format: "rpm".into(),
        source: source.into(),
        requires,
        provides,
    }
}

/// A Debian relationship field (`a (>= 1), b | c:any`) as alternatives of
/// bare names.
fn deb_relations(v: &str) -> Vec<Vec<String>> {
    v.split(',')
        .map(|alts| {
            alts.split('|')
                .map(|a| {
                    let a = a.trim();
                    let name = a.split([' ', '(', '[', '<']).next().unwrap_or("");
                    name.split(':').next().unwrap_or("").to_string()
                })
                .filter(|n| !n.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|a: &Vec<String>| !a.is_empty())
        .collect()
}

/// The dependencies of one Debian control paragraph (a `.deb`'s control
/// file or a dpkg status entry).
pub fn from_deb_control(text: &str, source: &str) -> Option<PackageDeps> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = fields.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            fields.push((k.to_string(), v.trim().to_string()));
        }
    }
    let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
    let name = get("Package")?.to_string();
    let mut requires = deb_relations(get("Depends").unwrap_or(""));
    requires.extend(deb_relations(get("Pre-Depends").unwrap_or("")));
    let mut provides: Vec<String> = deb_relations(get("Provides").unwrap_or(""))
        .into_iter()
        .flatten()
        .collect();
    provides.push(name.clone());
    Some(PackageDeps {
        package: format!("{name} {}", get("Version").unwrap_or("")),
        format: "deb".into(),
        source: source.into(),
        requires,
        provides,
    })
}

/// Every installed package of a dpkg status file.
pub fn from_dpkg_status(text: &str) -> Vec<PackageDeps> {
    text.split("\n\n")
        .filter(|p| {
            p.lines().any(|l| {
                l.strip_prefix("Status:").is_some_and(|s| {
                    s.trim().ends_with(" installed") && !s.contains("not-installed")
                })
            })
        })
        .filter_map(|p| from_deb_control(p, "dpkg"))
        .collect()
}

/// One unmet dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmet {
    /// The package that requires it.
    pub package: String,
    /// Where that package came from.
    pub source: String,
    /// The requirement (alternatives joined with ` | `).
    pub requirement: String,
    /// A rich (boolean) RPM dependency, which is not evaluated.
    pub unsupported: bool,
}

/// The dependencies of `packages` that nothing in the image satisfies.
pub fn unmet(tree: &Tree, packages: &[PackageDeps]) -> Vec<Unmet> {
    let provided: HashSet<&str> = packages
        .iter()
        .flat_map(|p| p.provides.iter().map(String::as_str))
        .collect();
    let is_file = |p: &str| {
        tree.lookup(p)
            .is_some_and(|(_, e)| !matches!(e.kind, Kind::Dir))
    };
    let mut out = Vec::new();
    for p in packages {
        for alts in &p.requires {
            let met = alts
                .iter()
                .any(|r| provided.contains(r.as_str()) || (r.starts_with('/') && is_file(r)));
            if met {
                continue;
            }
            out.push(Unmet {
                package: p.package.clone(),
                source: p.source.clone(),
                requirement: alts.join(" | "),
                unsupported: alts.iter().any(|r| r.starts_with('(')),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_relations_keep_alternatives_and_drop_versions_and_qualifiers() {
        let d = from_deb_control(
            "Package: keepalived\nVersion: 1:2.2.7-1\nDepends: iproute2, libc6 (>= 2.34),\n libnl-3-200 (>= 3.2.7) | libnl3, python3:any\nPre-Depends: init-system-helpers (>= 1.54~)\nProvides: vrrpd\n",
            "artifact:keepalived",
        )
        .unwrap();
        assert_eq!(
            d.requires,
            vec![
                vec!["iproute2".to_string()],
                vec!["libc6".into()],
                vec!["libnl-3-200".into(), "libnl3".into()],
                vec!["python3".into()],
                vec!["init-system-helpers".into()],
            ]
        );
        assert_eq!(d.provides, vec!["vrrpd".to_string(), "keepalived".into()]);
    }

    #[test]
    fn unmet_names_the_package_and_files_count() {
        let mut t = Tree::new();
        let e = crate::tree::Entry {
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            origin: 0,
        };
        t.insert("/bin", e.clone(), &|_| false).unwrap();
        let mut f = e;
        f.kind = Kind::Symlink("bash".into());
        t.insert("/bin/sh", f, &|_| false).unwrap();
        let pkgs = vec![
            PackageDeps {
                package: "a-1-1.x86_64".into(),
                format: "rpm".into(),
                source: "rpmdb".into(),
                requires: vec![
                    vec!["libb.so.1()(64bit)".into()],
                    vec!["/bin/sh".into()],
                    vec!["/bin/ksh".into()],
                    vec!["(c or d)".into()],
                ],
                provides: vec!["a".into()],
            },
            PackageDeps {
                package: "b-1-1.x86_64".into(),
                format: "rpm".into(),
                source: "artifact:b".into(),
                requires: vec![vec!["nothing-provides-this".into()]],
                provides: vec!["b".into(), "libb.so.1()(64bit)".into()],
            },
        ];
        let u = unmet(&t, &pkgs);
        let reqs: Vec<&str> = u.iter().map(|u| u.requirement.as_str()).collect();
        // /bin/sh is a dangling symlink: not a file of the image either.
        assert_eq!(
            reqs,
            vec!["/bin/sh", "/bin/ksh", "(c or d)", "nothing-provides-this"]
        );
        assert!(u[2].unsupported && !u[0].unsupported);
        assert_eq!(u[3].source, "artifact:b");
    }
}
