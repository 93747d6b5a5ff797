//! The grammars of the programs that read node metadata values.
//!
//! A value reaches keepalived.conf, a systemd drop-in, containerd's TOML
//! files, a file path or a kubeadm YAML document. Each check below accepts
//! only what every consumer of that value reads back as the same value,
//! so a value can neither break the file nor add to it; renderers quote
//! on top of that (TOML and YAML by their serializers). Every error says
//! what the consumer needs; none echoes a secret.

use std::net::Ipv4Addr;

/// A network interface name: the kernel's rule (1–15 bytes, not `.` or
/// `..`, no `/`, `:` or white space), narrowed to what keepalived.conf and
/// a systemd `ExecStopPost=` line carry verbatim: `A-Z a-z 0-9 . _ -`
/// (every name udev, NetworkManager and VLAN/bond/bridge tools make).
pub fn interface_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not an interface name (1-15 bytes of A-Z, a-z, 0-9, `.`, `_`, `-`; not `.` or `..`)",
            shown(s)
        ))
    }
}

/// keepalived's `auth_pass`: 1–8 bytes (keepalived truncates longer ones
/// silently, and counts bytes) of printable ASCII without what its config
/// parser treats specially: white space, `#` and `!` (comments), `"`
/// and `'` (quoting), `\`, `{` and `}` (blocks). No part of the value is
/// shown.
pub fn vrrp_password(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 8 {
        return Err(format!(
            "must be 1-8 bytes (keepalived truncates longer passwords); it has {}",
            s.len()
        ));
    }
    if s.chars()
        .any(|c| !c.is_ascii_graphic() || matches!(c, '#' | '!' | '"' | '\'' | '\\' | '{' | '}'))
    {
        // Which character is not said: it is part of a secret.
        return Err(
            "holds a character keepalived cannot read: use printable ASCII without \
             white space, # ! \" ' \\ { }"
                .into(),
        );
    }
    Ok(())
}

/// A registry host as image references and containerd's `certs.d/HOST`
/// directories name it: a DNS name (labels of `A-Z a-z 0-9 -`, not
/// starting or ending with `-`, each 1–63 bytes, 253 in all) or an IPv4
/// address, with an optional `:PORT` (1–65535). Never `.`, `..` or a path.
pub fn registry_host(s: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "{} is not a registry host (a DNS name or IPv4 address, optional :port)",
            shown(s)
        ))
    };
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if let Some(p) = port {
        if !p.bytes().all(|b| b.is_ascii_digit()) || !matches!(p.parse::<u16>(), Ok(1..)) {
            return bad();
        }
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    let labels_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if labels_ok {
        Ok(())
    } else {
        bad()
    }
}

/// One path component of an image reference (the distribution grammar):
/// lowercase letters and digits, separated by `.`, `_`, `__` or dashes.
fn path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let sep = match b[i] {
            b'.' => 1,
            b'_' if b.get(i + 1) == Some(&b'_') => 2,
            b'_' => 1,
            b'-' => b[i..].iter().take_while(|&&c| c == b'-').count(),
            _ => return false,
        };
        i += sep;
        if !b.get(i).copied().is_some_and(alnum) {
            return false;
        }
    }
    true
}

/// An image repository prefix (`registry.k8s.io`,
/// `registry.aliyuncs.com/google_containers`, `localhost:5000/k8s`): an
/// optional registry host (a first component with `.` or `:`, or
/// `localhost`), then path components as image references allow them.
pub fn image_repository(s: &str) -> Result<(), String> {
    let mut parts = s.split('/');
    let first = parts.next().unwrap_or_default();
    let host_first = first.contains(['.', ':']) || first == "localhost";
    let ok = if host_first {
        registry_host(first).is_ok()
    } else {
        path_component(first)
    } && parts.all(path_component);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not an image repository (registry host, then `/`-separated lowercase path \
             components; no scheme, tag or digest)",
            shown(s)
        ))
    }
}

/// A registry mirror endpoint: `http://` or `https://`, a registry host,
/// then an optional path of URL-safe characters (`A-Z a-z 0-9 - . _ ~ /`
/// and `%XX` escapes). No query, fragment, quotes or backslashes.
pub fn mirror_url(s: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "{} is not a mirror URL (http(s)://host[:port][/path], path of A-Z a-z 0-9 - . _ ~ / %XX)",
            shown(s)
        ))
    };
    let Some(rest) = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
    else {
        return bad();
    };
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if registry_host(host).is_err() {
        return bad();
    }
    let p = path.as_bytes();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'%' if p.len() > i + 2
                && p[i + 1].is_ascii_hexdigit()
                && p[i + 2].is_ascii_hexdigit() =>
            {
                i += 3
            }
            c if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'/') => {
                i += 1
            }
            _ => return bad(),
        }
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return bad();
    }
    Ok(())
}

/// `s` as an error message may show it: in backquotes, with control and
/// non-ASCII characters escaped (a value cannot forge a line of output).
pub fn shown(s: &str) -> String {
    format!("`{}`", s.escape_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        for ok in [
            "ens33",
            "eth0.100",
            "br-lan",
            "bond_0",
            "enp0s31f6",
            "a23456789012345",
        ] {
            interface_name(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "a234567890123456",
            "eth 0",
            "e/th",
            "eth0:1",
            "}{\"#;",
            "eth\r",
            "eth\x0b",
            "%h",
            "$(reboot)",
            "eth\n0",
            "ëth0",
        ] {
            assert!(interface_name(bad).is_err(), "{bad:?}");
        }
        let e = interface_name("a\nb").unwrap_err();
        assert!(e.contains("`a\\nb`") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn vrrp_passwords_count_bytes_and_refuse_keepalived_syntax() {
        for ok in ["k8s", "12345678", "a-b_c.d", "Ab9$%&*+"] {
            vrrp_password(ok).unwrap();
        }
        for bad in [
            "",
            "123456789",
            "ab}\n{x",
            "#abc",
            "ab cd",
            "ab!c",
            "a\"b",
            "a'b",
            "a\\b",
            "a{b",
            "a\tb",
            "éééé",
            "a\u{7f}",
        ] {
            let e = vrrp_password(bad).unwrap_err();
            // The message never shows the password.
            assert!(bad.len() < 3 || !e.contains(bad), "{e}");
        }
        // Bytes, not characters: four 2-byte characters are 8 bytes but
        // not ASCII; five are 10 bytes.
        assert!(vrrp_password("ééééé").unwrap_err().contains("1-8 bytes"));
    }

    #[test]
    fn registry_hosts() {
        for ok in [
            "docker.io",
            "registry.k8s.io",
            "localhost",
            "10.0.0.1:5000",
            "my-reg.local:443",
            "REG.example",
        ] {
            registry_host(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "a..b",
            "-a.io",
            "a-.io",
            "a/b",
            "a b",
            "reg.io:0",
            "reg.io:99999",
            "reg.io:",
            "reg.io\n[x]",
            "a_b.io",
            "reg.io:80:80",
        ] {
            assert!(registry_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn image_repositories() {
        for ok in [
            "registry.k8s.io",
            "k8s.gcr.io",
            "registry.aliyuncs.com/google_containers",
            "localhost:5000/k8s",
            "localhost/a__b/c-d/e.f",
            "library",
        ] {
            image_repository(ok).unwrap();
        }
        for bad in [
            "",
            "https://registry.k8s.io",
            "registry.k8s.io/",
            "registry.k8s.io//x",
            "reg.io/Upper",
            "reg.io/a\"b",
            "reg.io/a:tag",
            "reg.io/a@sha256",
            "reg.io/_a",
            "reg.io/a-",
            "reg.io/a b",
        ] {
            assert!(image_repository(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mirror_urls() {
        for ok in [
            "https://mirror.example",
            "http://10.0.0.1:5000",
            "https://m.io/v2/x%2Fy",
            "https://m.io/",
        ] {
            mirror_url(ok).unwrap();
        }
        for bad in [
            "mirror.example",
            "ftp://m.io",
            "https://",
            "https://m.io\\",
            "https://m.io/a\\",
            "https://m.io/\"]\n[x]",
            "https://m.io/a b",
            "https://m.io/?q=1",
            "https://m.io/%zz",
            "https://m.io/../x",
            "https://u@m.io",
        ] {
            assert!(mirror_url(bad).is_err(), "{bad:?}");
        }
    }
}
