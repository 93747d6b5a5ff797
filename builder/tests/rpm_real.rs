//! RPM reader against real packages built with `rpmbuild`, compared with
//! what the real `rpm`, `rpm2cpio` and `cpio` tools report.
//!
//! These tests need `rpmbuild`, `rpm`, `rpm2cpio` and `cpio` (Debian
//! packages `rpm` and `cpio`). Without them they skip with a message, except
//! under `CI=true`, where a missing tool is a failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use nodebake::rpm::{
    for_each_cpio_entry, open_rpm, tag, Hardlink, HardlinkTracker, RpmError, Structure,
};
use sha2::{Digest, Sha256};

/// True when the tools are present; false (skip) when absent outside CI;
/// panics when absent under CI=true.
fn tools_available(test: &str) -> bool {
    let missing: Vec<&str> = ["rpmbuild", "rpm", "rpm2cpio", "cpio"]
        .into_iter()
        .filter(|t| Command::new(t).arg("--version").output().is_err())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: required tools missing under CI=true: {missing:?} (install Debian packages rpm and cpio)");
    }
    eprintln!("SKIP {test}: tools not installed: {missing:?}");
    false
}

const SPEC: &str = r#"
Name: nbtest
Version: 1.2.3
Release: 4.el9
Epoch: 7
Summary: nodebake rpm reader test
License: MIT
BuildArch: noarch
%define _binary_payload @PAYLOAD@
%define __os_install_post %{nil}
%define _build_id_links none
%global debug_package %{nil}
%description
Test package.
%install
mkdir -p %{buildroot}/opt/nb/dir %{buildroot}/opt/nb/empty
echo hello > %{buildroot}/opt/nb/file.txt
ln -s file.txt %{buildroot}/opt/nb/link
ln -s ../../etc/missing %{buildroot}/opt/nb/dangling
echo hard > %{buildroot}/opt/nb/h1
ln %{buildroot}/opt/nb/h1 %{buildroot}/opt/nb/h2
echo secret > %{buildroot}/opt/nb/secret
seq 1 120000 > %{buildroot}/opt/nb/dir/big.txt
printf 'x' > %{buildroot}/opt/nb/dir/one
%files
/opt/nb/dir
/opt/nb/empty
/opt/nb/file.txt
/opt/nb/link
/opt/nb/dangling
/opt/nb/h1
/opt/nb/h2
%attr(0600,nobody,nogroup) /opt/nb/secret
%attr(4755,root,root) /opt/nb/dir/one
"#;

/// Builds the test package with `_binary_payload` = `payload` and returns
/// (tempdir guard, path of the .rpm).
fn build(payload: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("nbtest.spec");
    std::fs::write(&spec, SPEC.replace("@PAYLOAD@", payload)).unwrap();
    let top = tmp.path().join("top");
    let out = Command::new("rpmbuild")
        .arg("-bb")
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .arg("--define")
        .arg(format!("_tmppath {}", tmp.path().join("tmp").display()))
        .arg(&spec)
        .output()
        .expect("run rpmbuild");
    assert!(
        out.status.success(),
        "rpmbuild ({payload}) failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rpm = top.join("RPMS/noarch/nbtest-1.2.3-4.el9.noarch.rpm");
    assert!(rpm.is_file(), "rpmbuild produced no {}", rpm.display());
    (tmp, rpm)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What our reader sees for one payload entry.
#[derive(Debug)]
struct Got {
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: u64,
    sha256: String,
    data: Vec<u8>,
    link: Hardlink,
}

fn read_ours(path: &Path) -> Result<(nodebake::rpm::RpmHeader, Vec<(String, Got)>), RpmError> {
    let f = std::fs::File::open(path).unwrap();
    let (h, payload) = open_rpm(std::io::BufReader::new(f))?;
    let mut out = Vec::new();
    let mut tracker = HardlinkTracker::default();
    for_each_cpio_entry(payload, |e, r| {
        let mut data = Vec::new();
        r.read_to_end(&mut data).map_err(|source| RpmError::Io {
            structure: Structure::Payload,
            source,
        })?;
        out.push((
            e.name.clone(),
            Got {
                mode: e.mode,
                nlink: e.nlink,
                mtime: e.mtime,
                size: e.file_size,
                sha256: hex::encode(Sha256::digest(&data)),
                data,
                link: tracker.observe(e),
            },
        ));
        Ok::<(), RpmError>(())
    })?;
    assert!(tracker.finish().is_empty(), "incomplete hard-link sets");
    Ok((h, out))
}

fn check_package(payload: &str, compressor: &str) {
    let (_tmp, rpm) = build(payload);
    let (h, entries) = read_ours(&rpm).unwrap_or_else(|e| panic!("{payload}: {e}"));

    // Header fields against rpm's query format.
    let q = run(Command::new("rpm")
        .arg("-qp")
        .arg("--qf")
        .arg("%{NAME}|%{EPOCH}|%{VERSION}|%{RELEASE}|%{ARCH}|%{PAYLOADCOMPRESSOR}|%{PAYLOADFORMAT}")
        .arg(&rpm));
    let ours = format!(
        "{}|{}|{}|{}|{}|{}|{}",
        h.name().unwrap(),
        h.epoch().unwrap(),
        h.version().unwrap(),
        h.release().unwrap(),
        h.arch().unwrap(),
        h.payload_compressor().unwrap(),
        h.payload_format().unwrap()
    );
    assert_eq!(ours, q.trim());
    assert_eq!(h.payload_compressor(), Some(compressor));
    assert_eq!(h.string(tag::LICENSE), Some("MIT"));

    // Entry names and order against `rpm2cpio | cpio -it`.
    let cpio_list = run(Command::new("sh")
        .arg("-c")
        .arg(format!("rpm2cpio '{}' | cpio -it --quiet", rpm.display())));
    let theirs: Vec<String> = cpio_list
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .collect();
    let names: Vec<String> = entries.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, theirs, "{payload}: payload entry list");

    // Every entry against `rpm -qp --dump`:
    // path size mtime digest mode owner group isconfig isdoc rdev symlink
    let dump = run(Command::new("rpm").arg("-qp").arg("--dump").arg(&rpm));
    let by_name: BTreeMap<&str, &Got> = entries.iter().map(|(n, g)| (n.as_str(), g)).collect();
    let files: BTreeMap<String, nodebake::rpm::FileInfo> = h
        .files()
        .unwrap()
        .into_iter()
        .map(|f| (f.path.clone(), f))
        .collect();
    let mut dumped = 0;
    for line in dump.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 11, "dump line {line}");
        let path = f[0];
        let got = by_name[path.trim_start_matches('/')];
        let mode = u32::from_str_radix(f[4], 8).unwrap();
        assert_eq!(got.mode, mode, "{path} mode");
        assert_eq!(got.mtime.to_string(), f[2], "{path} mtime");
        let info = &files[path];
        assert_eq!(u32::from(info.mode), mode, "{path} header mode");
        assert_eq!(info.size.to_string(), f[1], "{path} header size");
        assert_eq!(
            (info.user.as_str(), info.group.as_str()),
            (f[5], f[6]),
            "{path} owner"
        );
        match mode & 0o170000 {
            0o100000 => {
                // Hard-link members without data: the data is on the target.
                if !matches!(got.link, Hardlink::Deferred) {
                    assert_eq!(got.size.to_string(), f[1], "{path} size");
                    assert_eq!(got.sha256, f[3], "{path} content digest");
                }
                assert_eq!(info.digest, f[3], "{path} header digest");
            }
            0o120000 => {
                assert_eq!(String::from_utf8_lossy(&got.data), f[10], "{path} symlink");
                assert_eq!(info.link_to, f[10], "{path} header link target");
            }
            0o040000 => assert_eq!(got.size, 0),
            other => panic!("unexpected type {other:o}"),
        }
        dumped += 1;
    }
    assert_eq!(dumped, entries.len());
    assert_eq!(entries.len(), 10, "all packaged paths seen");
    assert_eq!(files["/opt/nb/secret"].user, "nobody");
    assert_eq!(by_name["opt/nb/secret"].mode, 0o100600);
    assert_eq!(by_name["opt/nb/dir/one"].mode, 0o104755);

    // Link counts against `cpio -itv`, and the hard-link convention:
    // h1 is deferred, h2 carries the data and gets h1 linked to it.
    let cpio_v = run(Command::new("sh")
        .arg("-c")
        .arg(format!("rpm2cpio '{}' | cpio -itv --quiet", rpm.display())));
    for line in cpio_v.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let name = cols.iter().find(|c| c.starts_with("./")).unwrap();
        let got = by_name[name.trim_start_matches("./")];
        assert_eq!(got.nlink.to_string(), cols[1], "{name} nlink");
    }
    assert_eq!(by_name["opt/nb/h1"].nlink, 2);
    let (first, second) = (&by_name["opt/nb/h1"], &by_name["opt/nb/h2"]);
    let (data_name, deferred) = if first.size == 0 {
        ("opt/nb/h2", first)
    } else {
        ("opt/nb/h1", second)
    };
    assert_eq!(deferred.link, Hardlink::Deferred);
    let other = if data_name == "opt/nb/h2" {
        "opt/nb/h1"
    } else {
        "opt/nb/h2"
    };
    assert_eq!(
        by_name[data_name].link,
        Hardlink::Target {
            links: vec![other.to_string()]
        }
    );
    assert_eq!(by_name[data_name].data, b"hard\n");
    assert_eq!(
        by_name["opt/nb/dir/big.txt"].size, 728_895,
        "spans many buffers"
    );
}

#[test]
fn gzip_payload_matches_rpm_tools() {
    if tools_available("gzip_payload_matches_rpm_tools") {
        check_package("w9.gzdio", "gzip");
    }
}

#[test]
fn xz_payload_matches_rpm_tools() {
    if tools_available("xz_payload_matches_rpm_tools") {
        check_package("w6.xzdio", "xz");
    }
}

#[test]
fn zstd_payload_matches_rpm_tools() {
    if tools_available("zstd_payload_matches_rpm_tools") {
        check_package("w19.zstdio", "zstd");
    }
}

#[test]
fn bzip2_payload_is_refused_by_name() {
    if !tools_available("bzip2_payload_is_refused_by_name") {
        return;
    }
    let (_tmp, rpm) = build("w9.bzdio");
    let err = read_ours(&rpm).expect_err("bzip2 payload must be refused");
    assert!(
        matches!(&err, RpmError::UnsupportedCompressor(c) if c == "bzip2"),
        "{err:?}"
    );
    assert!(err.to_string().contains("bzip2"));
}

#[test]
fn truncated_and_corrupted_real_rpm_fail_cleanly() {
    if !tools_available("truncated_and_corrupted_real_rpm_fail_cleanly") {
        return;
    }
    let (tmp, rpm) = build("w9.gzdio");
    let bytes = std::fs::read(&rpm).unwrap();
    let cut_path = tmp.path().join("cut.rpm");
    // Locate the structures so the expected error can be checked.
    let sig_il = u32::from_be_bytes(bytes[104..108].try_into().unwrap()) as usize;
    let sig_dl = u32::from_be_bytes(bytes[108..112].try_into().unwrap()) as usize;
    let hdr_start = 96 + (16 + sig_il * 16 + sig_dl).div_ceil(8) * 8;
    let il = u32::from_be_bytes(bytes[hdr_start + 8..hdr_start + 12].try_into().unwrap()) as usize;
    let dl = u32::from_be_bytes(bytes[hdr_start + 12..hdr_start + 16].try_into().unwrap()) as usize;
    let payload_start = hdr_start + 16 + il * 16 + dl;
    let mut cuts = vec![
        0,
        3,
        50,
        95,
        96,
        100,
        111,
        hdr_start - 1,
        hdr_start,
        hdr_start + 10,
    ];
    cuts.extend([payload_start - 1, payload_start, payload_start + 5]);
    cuts.extend((1..12).map(|k| payload_start + (bytes.len() - payload_start) * k / 12));
    cuts.push(bytes.len() - 1);
    for &n in &cuts {
        std::fs::write(&cut_path, &bytes[..n]).unwrap();
        let err = read_ours(&cut_path)
            .err()
            .unwrap_or_else(|| panic!("cut at {n} of {} was accepted", bytes.len()));
        let want = if n < 96 {
            "lead"
        } else if n < hdr_start {
            "signature header"
        } else if n < payload_start {
            "header"
        } else {
            "payload"
        };
        let msg = err.to_string();
        if n < payload_start {
            assert!(
                matches!(err, RpmError::Truncated(_)) && msg.ends_with(&format!("in the {want}")),
                "cut at {n}: {msg}"
            );
        } else {
            assert!(
                msg.contains("payload") || msg.contains("digest"),
                "cut at {n}: {msg}"
            );
        }
    }
    // Flipped bytes in the payload are caught (gzip CRC, deflate or the
    // payload SHA-256), and in the header by the header SHA-256.
    for at in [
        payload_start + 20,
        (payload_start + bytes.len()) / 2,
        bytes.len() - 6,
        hdr_start + 16 + il * 16 + 3,
    ] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x40;
        std::fs::write(&cut_path, &bad).unwrap();
        assert!(
            read_ours(&cut_path).is_err(),
            "corruption at {at} not detected"
        );
    }
    // And the intact package still reads.
    assert!(read_ours(&rpm).is_ok());
}
