//! Installed-package database readers against real data and the real tools:
//! the AlmaLinux 9 fixture's `rpmdb.sqlite` versus `rpm -qa`, Berkeley DB
//! `Packages` files (made from the same headers with `db5.3_load`, both byte
//! orders) versus rpm's own `bdb_ro` backend, and this machine's dpkg status
//! versus `dpkg-query`.
//!
//! Missing tools or fixture: skip with a message, or fail under `CI=true`.
//! Tools: `rpm`, `tar` + `xz`, `db5.3_load` (Debian `db5.3-util`),
//! `dpkg-query`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use nodebake::pkgdb::{parse_dpkg_status, read_rpmdb_bdb, read_rpmdb_sqlite, Package};

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Skips (returns false) or, under CI=true, fails when `what` is missing.
fn require(test: &str, ok: bool, what: &str) -> bool {
    if !ok {
        if ci() {
            panic!("{test}: {what} missing under CI=true");
        }
        eprintln!("SKIP {test}: {what} missing");
    }
    ok
}

fn has_tool(t: &str, arg: &str) -> bool {
    Command::new(t).arg(arg).output().is_ok()
}

/// The EL9 fixture: `$NODEBAKE_FIXTURES/el/...`, else `shared/fixtures`
/// beside the checkout, else `/work/shared/fixtures`.
fn el9_fixture() -> Option<PathBuf> {
    let rel = "el/almalinux-9-micro-aarch64.tar.xz";
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs: Vec<PathBuf> = std::env::var_os("NODEBAKE_FIXTURES")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    dirs.push(manifest.join("../../shared/fixtures"));
    dirs.push(manifest.join("../shared/fixtures"));
    dirs.push(PathBuf::from("/work/shared/fixtures"));
    dirs.into_iter().map(|d| d.join(rel)).find(|p| p.is_file())
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

/// Extracts `var/lib/rpm/` of the fixture into a tempdir (the root).
fn extract_rpmdb(test: &str) -> Option<tempfile::TempDir> {
    let fixture = el9_fixture();
    if !require(
        test,
        fixture.is_some(),
        "fixture el/almalinux-9-micro-aarch64.tar.xz",
    ) || !require(test, has_tool("rpm", "--version"), "rpm")
        || !require(test, has_tool("tar", "--version"), "tar")
    {
        return None;
    }
    let root = tempfile::tempdir().unwrap();
    run(Command::new("tar")
        .arg("-xJf")
        .arg(fixture.unwrap())
        .arg("-C")
        .arg(root.path())
        .arg("--wildcards")
        .arg("*var/lib/rpm/*"));
    Some(root)
}

/// `rpm -qa` in our format: "name epoch version release arch" lines,
/// sorted, with `(none)` for a missing epoch.
fn rpm_qa(extra: &[&str]) -> Vec<String> {
    let out = run(Command::new("rpm")
        .args(extra)
        .arg("-qa")
        .arg("--qf")
        .arg("%{NAME} %{EPOCH} %{VERSION} %{RELEASE} %{ARCH}\n"));
    let mut v: Vec<String> = out.lines().map(str::to_string).collect();
    v.sort();
    v
}

fn ours(pkgs: &[Package]) -> Vec<String> {
    let mut v: Vec<String> = pkgs
        .iter()
        .map(|p| {
            let e = p.epoch.map(|e| e.to_string()).unwrap_or("(none)".into());
            format!("{} {} {} {} {}", p.name, e, p.version, p.release, p.arch)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn el9_sqlite_rpmdb_matches_rpm_qa() {
    let Some(root) = extract_rpmdb("el9_sqlite_rpmdb_matches_rpm_qa") else {
        return;
    };
    let db = root.path().join("var/lib/rpm/rpmdb.sqlite");
    // Read-only file in a read-only directory, as in an unpacked image.
    let mut perm = std::fs::metadata(&db).unwrap().permissions();
    perm.set_readonly(true);
    std::fs::set_permissions(&db, perm).unwrap();
    let pkgs = read_rpmdb_sqlite(&db).unwrap();
    assert_eq!(pkgs.len(), 23, "{pkgs:#?}");
    assert!(pkgs.iter().all(|p| p.source == "rpmdb"));
    let mut sorted = pkgs.clone();
    sorted.sort();
    assert_eq!(pkgs, sorted, "result is sorted");
    let bash = pkgs.iter().find(|p| p.name == "bash").unwrap();
    assert_eq!(
        (bash.version.as_str(), bash.arch.as_str()),
        ("5.1.8", "aarch64")
    );
    // gpg-pubkey pseudo-packages are kept, with arch "(none)".
    assert!(pkgs
        .iter()
        .any(|p| p.name == "gpg-pubkey" && p.arch == "(none)"));
    let root_s = root.path().to_str().unwrap();
    let theirs = rpm_qa(&["--root", root_s, "--dbpath", "/var/lib/rpm"]);
    assert_eq!(ours(&pkgs), theirs);
}

/// The fixture's header blobs, by header number.
fn fixture_blobs(db: &Path) -> Vec<(u32, Vec<u8>)> {
    let conn = rusqlite::Connection::open_with_flags(
        format!("file:{}?immutable=1", db.display()),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap();
    let mut st = conn.prepare("SELECT hnum, blob FROM Packages").unwrap();
    let rows = st
        .query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// Writes a Berkeley DB hash `Packages` file with `db5.3_load`, keys in the
/// database's byte order, plus rpm's record 0 (next header number).
fn make_bdb(dir: &Path, blobs: &[(u32, Vec<u8>)], little: bool, page_size: u32) -> PathBuf {
    let key = |n: u32| {
        if little {
            n.to_le_bytes()
        } else {
            n.to_be_bytes()
        }
    };
    let esc = |b: &[u8]| {
        let mut s = String::with_capacity(b.len() * 3 + 1);
        for x in b {
            write!(s, "\\{x:02x}").unwrap();
        }
        s.push('\n');
        s
    };
    let mut text = String::new();
    let next = blobs.iter().map(|b| b.0).max().unwrap_or(0) + 1;
    text += &esc(&key(0));
    text += &esc(&key(next));
    for (h, b) in blobs {
        text += &esc(&key(*h));
        text += &esc(b);
    }
    std::fs::create_dir_all(dir).unwrap();
    let input = dir.join("load.txt");
    std::fs::write(&input, text).unwrap();
    let out = dir.join("Packages");
    let st = Command::new("db5.3_load")
        .arg("-T")
        .arg("-t")
        .arg("hash")
        .arg("-c")
        .arg(format!("db_lorder={}", if little { 1234 } else { 4321 }))
        .arg("-c")
        .arg(format!("db_pagesize={page_size}"))
        .arg(&out)
        .stdin(std::fs::File::open(&input).unwrap())
        .status()
        .unwrap();
    assert!(st.success(), "db5.3_load failed");
    out
}

#[test]
fn bdb_rpmdb_both_byte_orders_match_rpm_bdb_ro() {
    let test = "bdb_rpmdb_both_byte_orders_match_rpm_bdb_ro";
    let Some(root) = extract_rpmdb(test) else {
        return;
    };
    if !require(
        test,
        has_tool("db5.3_load", "-V"),
        "db5.3_load (Debian db5.3-util)",
    ) {
        return;
    }
    let blobs = fixture_blobs(&root.path().join("var/lib/rpm/rpmdb.sqlite"));
    let expected = ours(&read_rpmdb_sqlite(&root.path().join("var/lib/rpm/rpmdb.sqlite")).unwrap());
    for (little, page) in [(true, 4096), (false, 4096), (true, 65536), (false, 512)] {
        let dir = root.path().join(format!("bdb-{little}-{page}"));
        let file = make_bdb(&dir, &blobs, little, page);
        // The file really has the byte order asked for.
        let raw = std::fs::read(&file).unwrap();
        let magic = if little {
            [0x61, 0x15, 0x06, 0]
        } else {
            [0, 0x06, 0x15, 0x61]
        };
        assert_eq!(raw[12..16], magic);
        let pkgs = read_rpmdb_bdb(&file).unwrap_or_else(|e| panic!("{little} {page}: {e:#}"));
        assert_eq!(ours(&pkgs), expected, "little={little} page={page}");
        // rpm's own read-only BDB backend agrees.
        let theirs = rpm_qa(&[
            "--dbpath",
            dir.to_str().unwrap(),
            "--define",
            "_db_backend bdb_ro",
        ]);
        assert_eq!(
            ours(&pkgs),
            theirs,
            "rpm bdb_ro, little={little} page={page}"
        );

        // Truncations and corruption: errors, never panics.
        let cut = dir.join("cut");
        for n in [0, 100, 511, 4096, raw.len() / 2, raw.len() - 1] {
            std::fs::write(&cut, &raw[..n.min(raw.len())]).unwrap();
            assert!(read_rpmdb_bdb(&cut).is_err(), "cut at {n} accepted");
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ page as u64;
        for _ in 0..40 {
            let mut bad = raw.clone();
            for _ in 0..8 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed as usize) % bad.len();
                bad[at] = (seed >> 40) as u8;
            }
            std::fs::write(&cut, &bad).unwrap();
            let _ = read_rpmdb_bdb(&cut);
        }
    }
}

#[test]
fn dpkg_status_matches_dpkg_query() {
    let test = "dpkg_status_matches_dpkg_query";
    let status = Path::new("/var/lib/dpkg/status");
    if !require(
        test,
        status.is_file() && has_tool("dpkg-query", "--version"),
        "dpkg",
    ) {
        return;
    }
    let pkgs = parse_dpkg_status(&std::fs::read_to_string(status).unwrap()).unwrap();
    assert!(!pkgs.is_empty());
    let out = run(Command::new("dpkg-query")
        .arg("-W")
        .arg("-f")
        .arg("${db:Status-Want} ${db:Status-Status} ${Package} ${Version} ${Architecture}\n"));
    let mut theirs: Vec<String> = out
        .lines()
        .filter_map(|l| {
            let (want, rest) = l.split_once(' ')?;
            let rest = rest.strip_prefix("installed ")?;
            matches!(want, "install" | "hold").then(|| rest.to_string())
        })
        .collect();
    theirs.sort();
    let mut mine: Vec<String> = pkgs
        .iter()
        .map(|p| {
            let mut v = String::new();
            if let Some(e) = p.epoch {
                write!(v, "{e}:").unwrap();
            }
            v += &p.version;
            if !p.release.is_empty() {
                write!(v, "-{}", p.release).unwrap();
            }
            format!("{} {} {}", p.name, v, p.arch)
        })
        .collect();
    mine.sort();
    assert_eq!(mine, theirs);
}
