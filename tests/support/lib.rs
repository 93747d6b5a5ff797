//! Helpers shared by the integration and end-to-end tests in `tests/`:
//! locating the built binaries, running them, requiring tools, and making
//! small fixture inputs.

use std::path::{Path, PathBuf};
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
