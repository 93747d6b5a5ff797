//! Helpers shared by the integration and end-to-end tests in `tests/`:
//! locating the built binaries, running them, requiring tools, and making
//! small fixture inputs.

use std::path::{Path, PathBuf};
pub mod guest;

use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>` of the running test binary (`target/debug/deps/..`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// Path of a workspace binary built by the same `cargo test` run.
pub fn bin(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.is_file(),
        "{} not built: run the tests with `cargo test --workspace`",
        p.display()
    );
    p
}

/// The static `nodebake-firstboot` (built by scripts/build-firstboot-static.sh).
pub fn static_firstboot() -> PathBuf {
    let root = target_dir().parent().expect("target").to_path_buf();
    for profile in ["release", "debug"] {
        let p = root
            .join("x86_64-unknown-linux-gnu")
            .join(profile)
            .join("nodebake-firstboot");
        if p.is_file() {
            return p;
        }
    }
    panic!("no static nodebake-firstboot under {}/x86_64-unknown-linux-gnu: run scripts/build-firstboot-static.sh", root.display());
}

/// Whether we run in CI, where missing tools are failures, not skips.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// Returns true when every tool is on PATH. When one is missing: panics in
/// CI, otherwise prints why the test is skipped and returns false.
pub fn require_tools(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {t}"))
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    if in_ci() {
        panic!("required tools missing in CI: {}", missing.join(", "));
    }
    eprintln!("SKIPPED: missing tools {}", missing.join(", "));
    false
}

/// Runs a command and returns its output, panicking if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let o = run(cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Hex sha256 of a file.
pub fn sha256_file(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    hex::encode(Sha256::digest(bytes))
}

/// A cache directory outside the repository for downloaded test inputs
/// (`$NODEBAKE_TEST_CACHE`, else `~/.cache/nodebake/test`).
pub fn cache_dir() -> PathBuf {
    let d = std::env::var_os("NODEBAKE_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                .join(".cache/nodebake/test")
        });
    std::fs::create_dir_all(&d).expect("cache dir");
    d
}

/// Downloads Debian packages with `apt-get download` into the test cache
/// (once) and returns their paths, named `<package>.deb`.
pub fn debian_packages(names: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
    let dir = cache_dir().join("debs");
    std::fs::create_dir_all(&dir)?;
    let mut out = Vec::new();
    for n in names {
        let dest = dir.join(format!("{n}.deb"));
        if !dest.is_file() {
            let tmp = tempfile::tempdir_in(&dir)?;
            let o = Command::new("apt-get")
                .arg("download")
                .arg("-q")
                .arg(n)
                .current_dir(tmp.path())
                .output()?;
            anyhow::ensure!(
                o.status.success(),
                "apt-get download {n}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let deb = std::fs::read_dir(tmp.path())?
                .filter_map(|e| e.ok())
                .find(|e| e.path().extension().map(|x| x == "deb").unwrap_or(false))
                .ok_or_else(|| anyhow::anyhow!("apt-get download {n} wrote no .deb"))?;
            std::fs::rename(deb.path(), &dest)?;
        }
        out.push(dest);
    }
    Ok(out)
}

/// One member of a fixture tarball.
pub enum Member<'a> {
    /// Directory.
    Dir(&'a str, u32),
    /// Regular file with content, mode, uid, gid.
    File(&'a str, &'a [u8], u32, u32, u32),
    /// Symlink `path -> target`.
    Symlink(&'a str, &'a str),
    /// Hard link `path => target`.
    Hardlink(&'a str, &'a str),
    /// Character device with major, minor, mode.
    CharDev(&'a str, u32, u32, u32),
    /// FIFO with mode.
    Fifo(&'a str, u32),
}

/// Writes an uncompressed or gzip tarball with exactly these members. Names
/// are written raw (no validation), so tests can make hostile archives.
pub fn write_tar(path: &Path, members: &[Member], gzip: bool) {
    let mut buf = Vec::new();
    {
        let mut b = tar::Builder::new(&mut buf);
        for m in members {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(1_700_000_000);
            let (name, data): (&str, &[u8]) = match m {
                Member::Dir(n, mode) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_size(0);
                    (n, &[])
                }
                Member::File(n, d, mode, uid, gid) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_uid(*uid as u64);
                    h.set_gid(*gid as u64);
                    h.set_size(d.len() as u64);
                    (n, d)
                }
                Member::Symlink(n, t) | Member::Hardlink(n, t) => {
                    h.set_entry_type(if matches!(m, Member::Symlink(..)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    });
                    h.set_mode(0o777);
                    h.set_size(0);
                    let l = &mut h.as_gnu_mut().unwrap().linkname;
                    l[..t.len()].copy_from_slice(t.as_bytes());
                    (n, &[])
                }
                Member::CharDev(n, major, minor, mode) => {
                    h.set_entry_type(tar::EntryType::Char);
                    h.set_mode(*mode);
                    h.set_size(0);
                    h.set_device_major(*major).unwrap();
                    h.set_device_minor(*minor).unwrap();
                    (n, &[])
                }
                Member::Fifo(n, mode) => {
                    h.set_entry_type(tar::EntryType::Fifo);
                    h.set_mode(*mode);
                    h.set_size(0);
                    (n, &[])
                }
            };
            let raw = &mut h.as_gnu_mut().unwrap().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.finish().unwrap();
    }
    let bytes = if gzip {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&buf).unwrap();
        e.finish().unwrap()
    } else {
        buf
    };
    std::fs::write(path, bytes).unwrap();
}

/// An x86_64 ELF executable from the host, to stand in for real binaries.
pub fn host_elf() -> Vec<u8> {
    std::fs::read("/bin/true").expect("/bin/true")
}

/// A small EL-like base: usrmerge links, os-release, passwd/group, an ELF.
pub fn write_small_base(path: &Path) {
    let elf = host_elf();
    write_tar(
        path,
        &[
            Member::Dir("etc/", 0o755),
            Member::File("etc/os-release", b"NAME=\"Test EL\"\nID=\"testel\"\nVERSION_ID=\"9.9\"\nPRETTY_NAME=\"Test EL 9.9\"\n", 0o644, 0, 0),
            Member::File("etc/passwd", b"root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:Kernel Overflow User:/:/sbin/nologin\n", 0o644, 0, 0),
            Member::File("etc/group", b"root:x:0:\nnobody:x:65534:\n", 0o644, 0, 0),
            Member::File("etc/shadow", b"root:!!:19000::::::\n", 0o000, 0, 0),
            Member::Dir("usr/", 0o755),
            Member::Dir("usr/bin/", 0o755),
            Member::Dir("usr/sbin/", 0o755),
            Member::Dir("usr/lib/", 0o755),
            Member::File("usr/bin/true", &elf, 0o755, 0, 0),
            Member::File("usr/sbin/init", &elf, 0o755, 0, 0),
            Member::Hardlink("usr/bin/true2", "usr/bin/true"),
            Member::Symlink("bin", "usr/bin"),
            Member::Symlink("sbin", "usr/sbin"),
            Member::Symlink("lib", "usr/lib"),
            Member::Dir("boot/", 0o555),
            Member::File("boot/vmlinuz-9.9.0", b"not really a kernel", 0o644, 0, 0),
            Member::Dir("var/", 0o755),
            Member::Dir("var/tmp/", 0o1777),
        ],
        true,
    );
}

/// Hex sha256 of bytes.
pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(b))
}

/// A hash of every file, link and mode under a directory (for "nothing
/// changed" assertions).
pub fn tree_digest(dir: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let mut lines = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if md.is_dir() {
                stack.push(p.clone());
                lines.push(format!("d {rel} {:o}", md.mode()));
            } else if md.file_type().is_symlink() {
                lines.push(format!(
                    "l {rel} {}",
                    std::fs::read_link(&p).unwrap().display()
                ));
            } else {
                lines.push(format!("f {rel} {:o} {}", md.mode(), sha256_file(&p)));
            }
        }
    }
    lines.sort();
    sha256_hex(lines.join("\n").as_bytes())
}

/// The directory of the real Kubernetes v1.28.7 binaries (kubeadm, kubelet,
/// kubectl, control plane), unpacked from `../shared/kubernetes` by
/// `scripts/kubernetes-bin.sh` on first use. `None` (with a printed reason)
/// when the distribution is not there; in CI that is a failure.
pub fn real_kubernetes() -> Option<PathBuf> {
    let out = Command::new(repo().join("scripts/kubernetes-bin.sh"))
        .output()
        .expect("running scripts/kubernetes-bin.sh");
    if out.status.success() {
        return Some(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ));
    }
    let why = String::from_utf8_lossy(&out.stderr);
    if in_ci() {
        panic!("real Kubernetes binaries are required in CI: {why}");
    }
    eprintln!("SKIPPED: no real Kubernetes binaries: {why}");
    None
}

/// The real EL9 root filesystem fixture (aarch64): `$NODEBAKE_FIXTURES/el/`
/// or `../shared/fixtures/el/` beside the repository.
pub fn el9_fixture() -> PathBuf {
    [
        std::env::var_os("NODEBAKE_FIXTURES")
            .map(|d| PathBuf::from(d).join("el/almalinux-9-micro-aarch64.tar.xz")),
        Some(repo().join("../shared/fixtures/el/almalinux-9-micro-aarch64.tar.xz")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.is_file())
    .unwrap_or_else(|| panic!("EL9 fixture not found (set NODEBAKE_FIXTURES)"))
}
