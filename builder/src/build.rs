//! `nodebake build`: spec + inputs → tree → outputs, atomically.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::arch::{elf_info, Arch};
use crate::blobs::{BlobId, BlobStore};
use crate::compress::Encoder;
use crate::hashio::{sha256_file, sha256_hex, HashingReader};
use crate::manifest::{self, BaseInfo, ImageInfo, InputInfo, KernelInfo, Manifest};
use crate::output::{self, OutputFile};
use crate::pkgdb::{self, Package};
use crate::progress::Progress;
use crate::spec::{ArtifactKind, InputRef, LoadedSpec, OutputFormat, RootfsCompression, Source};
use crate::store::InputStore;
use crate::tree::{Entry, Kind, Tree};
use crate::unpack::{self, globset, Placement, Sink};
use nodebake_contract::image::{BakedImage, ImageMetadata, IMAGE_METADATA_VERSION};
use nodebake_contract::layout;
use nodebake_contract::profile::RoleProfile;

/// Version string recorded in manifests.
pub const BUILDER: &str = concat!("nodebake ", env!("CARGO_PKG_VERSION"));

/// Where the first-boot agent binary comes from.
#[derive(Debug, Clone)]
pub enum FirstbootSource {
    /// `$NODEBAKE_FIRSTBOOT`, else next to the running `nodebake`, else
    /// the static build under `target/x86_64-unknown-linux-gnu/release`.
    Auto,
    /// An explicit path.
    Path(PathBuf),
    /// Do not bake it (inspection-only builds of foreign bases).
    Without,
}

/// Build options.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Spec file.
    pub spec: PathBuf,
    /// Output directory (replaced atomically).
    pub out: PathBuf,
    /// Lock file (default `SPEC.lock` if present).
    pub lock: Option<PathBuf>,
    /// Input store root.
    pub store: PathBuf,
    /// Refuse network access.
    pub offline: bool,
    /// First-boot agent source.
    pub firstboot: FirstbootSource,
    /// Profiles directory (default `<spec dir>/../profiles`).
    pub profiles_dir: Option<PathBuf>,
    /// Skip the finished-build cache.
    pub no_cache: bool,
    /// Replace `out` even when it is not an earlier nodebake output.
    pub force: bool,
    /// Quiet progress.
    pub quiet: bool,
    /// Stop after the lint (`nodebake lint SPEC`), with these choices
    /// added to the spec's `[lint]`: no outputs are written, lint errors
    /// do not fail, the report is returned.
    pub lint_only: Option<crate::lint::Options>,
}

/// What a build produced.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    /// Output directory.
    pub out: PathBuf,
    /// Whether the outputs came from the build cache.
    pub cached: bool,
    /// Output files with digests.
    pub outputs: Vec<OutputFile>,
    /// Paths in the image.
    pub files: usize,
    /// Packages in the SBOM.
    pub packages: usize,
    /// Wall time.
    pub seconds: f64,
    /// The lint's report (not for a build restored from the cache).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lint: Option<crate::lint::Report>,
}

/// Runs a build.
pub fn build(opts: &BuildOptions) -> Result<BuildReport> {
    let start = Instant::now();
    let progress = Progress::new(opts.quiet);
    if opts.lint_only.is_none() {
        check_out_dir(&opts.out, opts.force)?;
    }
    let loaded = LoadedSpec::load(&opts.spec, opts.lock.as_deref())?;
    let spec = &loaded.spec;
    let arch = Arch::from_name(&spec.arch)?;
    let mtime = spec.mtime()?;
    let store = InputStore::open(&opts.store, opts.offline)?;
    if opts.offline {
        check_offline_inputs(&loaded, &store)?;
    }

    let firstboot = load_firstboot(&opts.firstboot, arch)?;
    let profiles_dir = opts.profiles_dir.clone().unwrap_or_else(|| {
        // A spec may keep its profiles beside it; in a repository
        // images/ and profiles/ are siblings.
        let sibling = loaded.dir.join("..").join("profiles");
        let beside = loaded.dir.join("profiles");
        if beside.is_dir() {
            beside
        } else {
            sibling
        }
    });
    let profiles = load_profiles(&profiles_dir, &spec.profiles)?;

    // Digests of every input, known up front when the build is cacheable.
    let mut digests: Vec<Option<String>> = Vec::new();
    for inp in &loaded.inputs {
        digests.push(match (&inp.sha256, &inp.source) {
            (Some(s), _) => Some(s.clone()),
            (None, Source::Path(p)) if p.is_file() => Some(local_digest(&store, p)?),
            _ => None,
        });
    }
    let want_disk = spec.outputs.formats.contains(&OutputFormat::Disk);
    if want_disk && firstboot.is_none() && opts.lint_only.is_none() {
        bail!("outputs: `disk` needs the static nodebake-firstboot (it is the disk's stage-1 init); pass --firstboot");
    }
    // Every host tool the outputs need, checked before any slow work and
    // listed together (depmod: a kernel package without module indexes).
    {
        use crate::tools::*;
        let mut needed = Vec::new();
        let mut data: Vec<(&[&str], &str)> = Vec::new();
        if spec
            .outputs
            .formats
            .iter()
            .any(|f| *f != OutputFormat::Rootfs)
        {
            needed.push(DEPMOD);
        }
        if want_disk {
            needed.extend([MKE2FS, DEBUGFS, MKFS_FAT, MCOPY, SYSLINUX]);
            if spec.outputs.disk.qcow2 {
                needed.push(QEMU_IMG);
            }
            data.push((SYSLINUX_MBR, SYSLINUX_MBR_PACKAGES));
        }
        if opts.lint_only.is_none() {
            require_all(&needed, &data)?;
        }
    }
    let key = cache_key(&loaded, mtime, &digests, &firstboot, &profiles, want_disk);
    if let (Some(key), false) = (&key, opts.no_cache || opts.lint_only.is_some()) {
        if let Some(outputs) = restore_cached(&store, key, &opts.out)? {
            progress.phase(&format!(
                "outputs restored from the build cache ({})",
                &key[..16]
            ));
            return Ok(BuildReport {
                out: opts.out.clone(),
                cached: true,
                files: 0,
                packages: 0,
                outputs,
                seconds: start.elapsed().as_secs_f64(),
                lint: None,
            });
        }
    }

    let parent = out_parent(&opts.out)?;
    for (dir, bytes) in remove_stale_work_dirs(&parent) {
        progress.phase(&format!(
            "removed {} ({} MiB), left by a build that was killed",
            dir.display(),
            bytes >> 20
        ));
    }
    let work = tempfile::Builder::new()
        .prefix(WORK_PREFIX)
        .tempdir_in(&parent)
        .with_context(|| format!("creating a work directory in {}", parent.display()))?;
    // Held until the build ends (however it ends: the kernel drops the
    // lock of a killed process), so the next build knows a stale one.
    let _work_lock = lock_work_dir(work.path())?;
    let blobs = BlobStore::new(&work.path().join("blobs"))?;
    let mut tree = Tree::new();
    let mut inputs_info = Vec::new();
    let mut packages: Vec<Package> = Vec::new();
    let mut images = Vec::new();

    for (inp, digest) in loaded.inputs.iter().zip(&digests) {
        let art = loaded.artifact(&inp.name);
        progress.phase(&format!("unpacking {} ({})", inp.name, inp.source_text));
        let actual = unpack_input(
            &store,
            &progress,
            &mut tree,
            &blobs,
            arch,
            inp,
            art,
            &mut packages,
            &mut images,
        )?;
        if let (Some(actual), Source::Path(p)) = (&actual, &inp.source) {
            store.record_digest(p, actual).ok();
        }
        inputs_info.push(InputInfo {
            name: inp.name.clone(),
            source: inp.source_text.clone(),
            sha256: actual.or_else(|| digest.clone()),
            kind: art.map(|a| kind_name(a.kind)).unwrap_or("base").to_string(),
        });
        if inp.name == "base" && tree.is_empty() {
            bail!("base: `{}` holds no files", inp.source_text);
        }
    }
    let base_info = detect_base(&tree, &blobs)?;

    add_inline_files(&mut tree, &blobs, arch, &loaded)?;
    if let Some((bytes, source)) = &firstboot {
        add_firstboot(&mut tree, &blobs, arch, bytes)?;
        inputs_info.push(InputInfo {
            name: "firstboot".into(),
            source: source.clone(),
            sha256: Some(sha256_hex(bytes)),
            kind: "firstboot".into(),
        });
    }
    add_profiles(&mut tree, &blobs, arch, &profiles, &mut inputs_info)?;
    enable_units(&mut tree, &blobs, &spec.systemd.enable, firstboot.is_some())?;
    let cni_manifest = match &spec.kubernetes.cni_manifest {
        Some(name) => Some(artifact_dest(&loaded, name)?),
        None => None,
    };
    let meta = ImageMetadata {
        schema_version: IMAGE_METADATA_VERSION,
        name: spec.name.clone(),
        version: spec.version.clone(),
        arch: arch.name().to_string(),
        kubernetes_version: spec.kubernetes.version.clone(),
        base_os: format!("{} {}", base_info.id, base_info.version_id),
        images: images.clone(),
        profiles: spec.profiles.clone(),
        cni_manifest,
        spec_digest: loaded.digest.clone(),
    };
    {
        let mut s = Sink::new(&mut tree, &blobs, arch, "image-metadata", None);
        let json = serde_json::to_vec_pretty(&meta)?;
        s.file(layout::IMAGE_METADATA, &mut &json[..], 0o644, 0, 0)?;
    }

    let want_pxe = spec.outputs.formats.contains(&OutputFormat::Pxe);
    let kernel = select_kernel(&tree, &loaded)?;
    // Module indexes (the kernel package's postinst would have run depmod);
    // without them udev loads no driver on the booted node.
    let release = kernel
        .as_ref()
        .and_then(|(path, _)| crate::kmod::release(&tree, path));
    if let Some(rel) = &release {
        if crate::kmod::index(&mut tree, &blobs, arch, rel, work.path())? {
            progress.phase(&format!("indexed the kernel modules of {rel} with depmod"));
        }
    }
    if want_pxe {
        add_pxe_essentials(&mut tree, &blobs, arch)?;
    }
    // Device nodes, FIFOs and set-id files: refused where the image may
    // not hold them, before anything is written.
    let setid_files = crate::special::check(&tree, &spec.special_files)
        .with_context(|| format!("{}: special files", loaded.path.display()))?;
    let (db_name, mut base_pkgs) = read_package_db(&tree, &blobs)?;
    let undeclared: Vec<&str> = spec
        .base
        .packages
        .iter()
        .filter(|p| !base_pkgs.iter().any(|b| &b.name == *p))
        .map(String::as_str)
        .collect();
    if !undeclared.is_empty() {
        bail!(
            "{}: [base] packages: the base `{}` does not hold {} (its package database: {db_name}); add them as artifacts instead",
            loaded.path.display(),
            spec.base.source,
            undeclared.join(", ")
        );
    }
    base_pkgs.append(&mut packages);
    base_pkgs.sort();
    let base_info = BaseInfo {
        package_db: db_name,
        ..base_info
    };
    // What the profiles need and the image lacks, before anything is written.
    let report = crate::lint::lint(
        &crate::lint::Image {
            tree: &tree,
            blobs: &blobs,
            arch,
            packages: &base_pkgs,
            origins: None,
        },
        &crate::lint::Options {
            ipvs: spec.lint.ipvs || opts.lint_only.as_ref().is_some_and(|o| o.ipvs),
            image_repository: opts
                .lint_only
                .as_ref()
                .and_then(|o| o.image_repository.clone()),
            allow: spec
                .lint
                .allow
                .iter()
                .chain(opts.lint_only.iter().flat_map(|o| o.allow.iter()))
                .cloned()
                .collect(),
        },
    )
    .with_context(|| format!("{}: lint", loaded.path.display()))?;
    for f in report
        .findings
        .iter()
        .filter(|f| f.severity != crate::lint::Severity::Allowed)
    {
        eprintln!("nodebake: lint: {f}");
    }
    if opts.lint_only.is_some() {
        return Ok(BuildReport {
            out: opts.out.clone(),
            cached: false,
            outputs: Vec::new(),
            files: tree.len(),
            packages: base_pkgs.len(),
            seconds: start.elapsed().as_secs_f64(),
            lint: Some(report),
        });
    }
    if spec.lint.level == crate::spec::LintLevel::Error && report.errors() > 0 {
        bail!(
            "{}: the image fails lint with {} errors (listed above; `[lint] level = \"error\"` in the spec; allow a finding by its id in `[lint] allow`)",
            loaded.path.display(),
            report.errors()
        );
    }

    // Outputs.
    let tmp_out = work.path().join("out");
    std::fs::create_dir(&tmp_out)?;
    progress.phase(&format!("writing outputs ({} paths)", tree.len()));
    let disk_input = match (&kernel, &firstboot) {
        (Some((_, id)), Some((fb, _))) if want_disk => Some(crate::disk::DiskInput {
            tree: &tree,
            blobs: &blobs,
            arch,
            mtime,
            kernel: *id,
            release: release.clone(),
            firstboot: fb,
            cmdline: spec
                .kernel
                .as_ref()
                .and_then(|k| k.cmdline.clone())
                .unwrap_or_default(),
            spec: &spec.outputs.disk,
            seed: &loaded.digest,
        }),
        _ => None,
    };
    // The disk (mostly external tools and I/O) alongside the archives
    // (mostly one gzip thread each).
    let (mut outputs, disk_info) = std::thread::scope(|scope| -> Result<_> {
        let disk = disk_input
            .as_ref()
            .map(|d| scope.spawn(|| crate::disk::write(d, work.path(), &tmp_out)));
        let archives = write_archives(&tree, &blobs, mtime, &tmp_out, spec, want_pxe);
        let disk = match disk {
            Some(h) => Some(
                h.join()
                    .map_err(|_| anyhow!("the disk writer panicked"))??,
            ),
            None => None,
        };
        let mut outputs = archives?;
        let info = disk.map(|(files, info)| {
            outputs.extend(files);
            info
        });
        Ok((outputs, info))
    })?;
    let kernel_info = match &kernel {
        Some((path, id)) => {
            if want_pxe {
                outputs.push(output::write_blob(&blobs, id, &tmp_out.join("vmlinuz"))?);
            }
            Some(KernelInfo {
                path: path.clone(),
                sha256: id.hex(),
                cmdline: spec.kernel.as_ref().and_then(|k| k.cmdline.clone()),
            })
        }
        None => None,
    };
    outputs.sort_by(|a, b| a.name.cmp(&b.name));
    let manifest = Manifest {
        manifest_version: manifest::MANIFEST_VERSION,
        builder: BUILDER.to_string(),
        image: ImageInfo {
            name: spec.name.clone(),
            version: spec.version.clone(),
            arch: arch.name().to_string(),
            kubernetes_version: spec.kubernetes.version.clone(),
            cni: spec.kubernetes.cni.clone(),
            source_date_epoch: mtime,
            spec: loaded
                .path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            spec_digest: loaded.digest.clone(),
        },
        base: base_info,
        kernel: kernel_info,
        disk: disk_info,
        inputs: inputs_info,
        packages: base_pkgs,
        images,
        profiles: spec.profiles.clone(),
        lint: report.findings.clone(),
        lint_allow: spec.lint.allow.clone(),
        missing_requirements: Vec::new(),
        setid_files,
        outputs: outputs.clone(),
        files: manifest::file_list(&tree),
    };
    let mut json = serde_json::to_vec_pretty(&manifest)?;
    json.push(b'\n');
    let mut all = outputs.clone();
    all.push(output::write_bytes(&json, &tmp_out.join("manifest.json"))?);
    all.sort_by(|a, b| a.name.cmp(&b.name));
    output::write_bytes(sha256sums(&all).as_bytes(), &tmp_out.join("SHA256SUMS"))?;
    crate::atomic::sync_dir(&tmp_out)?;
    crate::atomic::replace_dir(&tmp_out, &opts.out)?;
    if let Some(key) = &key {
        if let Err(e) = save_cached(&store, key, &opts.out) {
            progress.phase(&format!("warning: could not fill the build cache: {e:#}"));
        }
    }
    Ok(BuildReport {
        out: opts.out.clone(),
        cached: false,
        outputs: all,
        files: tree.len(),
        packages: manifest.packages.len(),
        seconds: start.elapsed().as_secs_f64(),
        lint: Some(report),
    })
}

fn kind_name(k: ArtifactKind) -> &'static str {
    match k {
        ArtifactKind::File => "file",
        ArtifactKind::Tarball => "tarball",
        ArtifactKind::Rpm => "rpm",
        ArtifactKind::Deb => "deb",
        ArtifactKind::Image => "image",
    }
}

/// Prefix of the work directories beside `--out`.
pub const WORK_PREFIX: &str = ".nodebake-work-";
/// The lock file inside a work directory.
const WORK_LOCK: &str = ".lock";

/// `out` is replaced as a whole, so it must be absent, empty, or an
/// earlier nodebake output (a `manifest.json` written by nodebake) unless
/// `force`; never a symbolic link or a file.
fn check_out_dir(out: &Path, force: bool) -> Result<()> {
    let meta = match std::fs::symlink_metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("--out {}", out.display())),
        Ok(m) => m,
    };
    if meta.file_type().is_symlink() {
        bail!(
            "--out {}: is a symbolic link; name the directory itself",
            out.display()
        );
    }
    if !meta.is_dir() {
        bail!("--out {}: exists and is not a directory", out.display());
    }
    let empty = std::fs::read_dir(out)
        .with_context(|| format!("--out {}", out.display()))?
        .next()
        .is_none();
    if force || empty || is_nodebake_output(out) {
        return Ok(());
    }
    bail!(
        "--out {}: not empty and not an earlier nodebake output (no nodebake manifest.json); \
         a build replaces the whole directory: choose another --out, or pass --force",
        out.display()
    )
}

/// Whether `dir/manifest.json` was written by nodebake.
fn is_nodebake_output(dir: &Path) -> bool {
    use std::io::Read;
    let Ok(f) = std::fs::File::open(dir.join("manifest.json")) else {
        return false;
    };
    let mut text = Vec::new();
    // A manifest lists every file of the image: generous, but bounded.
    if f.take(256 << 20).read_to_end(&mut text).is_err() {
        return false;
    }
    serde_json::from_slice::<serde_json::Value>(&text).is_ok_and(|v| {
        v.get("manifest_version").is_some_and(|m| m.is_u64())
            && v.get("builder")
                .and_then(|b| b.as_str())
                .is_some_and(|b| b.starts_with("nodebake "))
    })
}

/// Creates and locks (`flock`, exclusive) the work directory's lock file.
fn lock_work_dir(work: &Path) -> Result<std::fs::File> {
    let p = work.join(WORK_LOCK);
    let f = std::fs::File::create(&p).with_context(|| format!("creating {}", p.display()))?;
    if !try_flock(&f) {
        bail!("{} is locked by another build", p.display());
    }
    Ok(f)
}

/// `flock(LOCK_EX | LOCK_NB)`: whether the lock was taken.
fn try_flock(f: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; flock has no memory arguments.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Removes the work directories in `parent` whose build is gone: their
/// lock file can be locked (a running build holds it; a killed one's lock
/// went with it). A directory without a lock file is stale once it is a
/// minute old (a build creates the lock right after the directory).
/// Returns each removed directory with its size.
pub fn remove_stale_work_dirs(parent: &Path) -> Vec<(PathBuf, u64)> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return removed;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.as_encoded_bytes().starts_with(WORK_PREFIX.as_bytes()) {
            continue;
        }
        let dir = e.path();
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let stale = match std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(WORK_LOCK))
        {
            Ok(f) => try_flock(&f),
            Err(_) => e
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() >= 60),
        };
        if stale {
            let bytes = dir_size(&dir);
            if std::fs::remove_dir_all(&dir).is_ok() {
                removed.push((dir, bytes));
            }
        }
    }
    removed
}

/// Bytes in the files under `dir` (symbolic links not followed).
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => {}
            }
        }
    }
    total
}

fn out_parent(out: &Path) -> Result<PathBuf> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    Ok(parent.to_path_buf())
}

/// The `SHA256SUMS` text (`sha256sum -c` format).
pub fn sha256sums(files: &[OutputFile]) -> String {
    files
        .iter()
        .map(|f| format!("{}  {}\n", f.sha256, f.name))
        .collect()
}

fn local_digest(store: &InputStore, p: &Path) -> Result<String> {
    if let Some(d) = store.cached_digest(p) {
        return Ok(d);
    }
    let (d, _) = sha256_file(p).with_context(|| format!("reading {}", p.display()))?;
    store.record_digest(p, &d).ok();
    Ok(d)
}

type Firstboot = Option<(Vec<u8>, String)>;

fn load_firstboot(src: &FirstbootSource, arch: Arch) -> Result<Firstboot> {
    let path = match src {
        FirstbootSource::Without => return Ok(None),
        FirstbootSource::Path(p) => p.clone(),
        FirstbootSource::Auto => find_firstboot()?,
    };
    let bytes =
        std::fs::read(&path).with_context(|| format!("firstboot binary {}", path.display()))?;
    let info = elf_info(&bytes).ok_or_else(|| {
        anyhow!(
            "firstboot binary {}: not a 64-bit ELF executable",
            path.display()
        )
    })?;
    if info.arch != Some(arch) {
        bail!(
            "firstboot binary {}: built for {} but the image is {}",
            path.display(),
            info.arch
                .map(|a| a.name())
                .unwrap_or("an unknown architecture"),
            arch.name()
        );
    }
    if info.dynamic {
        bail!(
            "firstboot binary {}: dynamically linked; it must be static to run on every EL release \
             (scripts/build-firstboot-static.sh)",
            path.display()
        );
    }
    Ok(Some((bytes, "nodebake-firstboot".to_string())))
}

fn find_firstboot() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("NODEBAKE_FIRSTBOOT") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [
        dir.join("nodebake-firstboot-static"),
        dir.join("../x86_64-unknown-linux-gnu/release/nodebake-firstboot"),
        dir.join("../../x86_64-unknown-linux-gnu/release/nodebake-firstboot"),
        PathBuf::from("/usr/lib/nodebake/bin/nodebake-firstboot"),
    ];
    candidates
        .iter()
        .find(|c| c.is_file())
        .cloned()
        .ok_or_else(|| anyhow!("no static nodebake-firstboot found (set NODEBAKE_FIRSTBOOT or pass --firstboot; looked in {})", dir.display()))
}

pub fn load_profiles(dir: &Path, names: &[String]) -> Result<Vec<(RoleProfile, Vec<u8>)>> {
    let mut out = Vec::new();
    for n in names {
        let p = dir.join(format!("{n}.toml"));
        let bytes =
            std::fs::read(&p).with_context(|| format!("profile `{n}`: reading {}", p.display()))?;
        let text = String::from_utf8(bytes.clone())
            .with_context(|| format!("profile {}: not UTF-8", p.display()))?;
        let prof =
            RoleProfile::parse(&text, n).with_context(|| format!("profile {}", p.display()))?;
        out.push((prof, bytes));
    }
    Ok(out)
}

fn cache_key(
    loaded: &LoadedSpec,
    mtime: u64,
    digests: &[Option<String>],
    firstboot: &Firstboot,
    profiles: &[(RoleProfile, Vec<u8>)],
    disk: bool,
) -> Option<String> {
    let mut h = String::new();
    // Host tools whose output lands in the image: a different version must
    // not be served from the cache.
    let mut host_tools = vec![crate::tools::DEPMOD];
    if disk {
        use crate::tools::*;
        host_tools.extend([MKE2FS, DEBUGFS, MKFS_FAT, MCOPY, SYSLINUX, QEMU_IMG]);
    }
    for t in host_tools {
        if let Ok(p) = t.path() {
            h.push_str(&format!("tool {} {}\n", t.program, sha256_file(&p).ok()?.0));
        }
    }
    h.push_str(BUILDER);
    h.push_str(&format!("\nspec {}\nmtime {mtime}\n", loaded.digest));
    for (inp, d) in loaded.inputs.iter().zip(digests) {
        h.push_str(&format!("input {} {}\n", inp.name, d.as_ref()?));
    }
    if let Some((b, _)) = firstboot {
        h.push_str(&format!("firstboot {}\n", sha256_hex(b)));
    }
    for (p, b) in profiles {
        h.push_str(&format!("profile {} {}\n", p.name, sha256_hex(b)));
    }
    // The builder binary itself: a rebuilt builder must not reuse outputs.
    let exe = std::env::current_exe()
        .ok()
        .and_then(|e| sha256_file(&e).ok())?;
    h.push_str(&format!("builder {}\n", exe.0));
    Some(sha256_hex(h.as_bytes()))
}

fn parse_sums(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            l.split_once("  ")
                .map(|(d, n)| (d.to_string(), n.to_string()))
        })
        .collect()
}

/// Restores a cached build into `out`, verifying every file's digest.
fn restore_cached(store: &InputStore, key: &str, out: &Path) -> Result<Option<Vec<OutputFile>>> {
    let dir = store.build_dir(key);
    let Ok(sums) = std::fs::read_to_string(dir.join("SHA256SUMS")) else {
        return Ok(None);
    };
    let parent = out_parent(out)?;
    let tmp = tempfile::Builder::new()
        .prefix(".nodebake-cached-")
        .tempdir_in(&parent)?;
    let mut files = Vec::new();
    for (digest, name) in parse_sums(&sums) {
        let src = dir.join(&name);
        let dst = tmp.path().join(&name);
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst)?;
        }
        let (actual, size) = sha256_file(&dst)?;
        if actual != digest {
            // A damaged cache entry is dropped, never served.
            let _ = std::fs::remove_dir_all(&dir);
            return Ok(None);
        }
        files.push(OutputFile {
            name,
            size,
            sha256: actual,
        });
    }
    std::fs::copy(dir.join("SHA256SUMS"), tmp.path().join("SHA256SUMS"))?;
    let tmp = tmp.keep();
    crate::atomic::replace_dir(&tmp, out)?;
    Ok(Some(files))
}

/// Keeps a copy (hard links) of a finished build; at most a few builds
/// are kept, oldest dropped first.
fn save_cached(store: &InputStore, key: &str, out: &Path) -> Result<()> {
    let dir = store.build_dir(key);
    if dir.exists() {
        return Ok(());
    }
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempdir_in(store.root().join("builds"))?;
    for e in std::fs::read_dir(out)? {
        let e = e?;
        let dst = tmp.path().join(e.file_name());
        if std::fs::hard_link(e.path(), &dst).is_err() {
            std::fs::copy(e.path(), &dst)?;
        }
    }
    std::fs::rename(tmp.keep(), &dir)?;
    let mut builds: Vec<(std::time::SystemTime, PathBuf)> =
        std::fs::read_dir(store.root().join("builds"))?
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
    builds.sort();
    while builds.len() > 4 {
        let (_, p) = builds.remove(0);
        let _ = std::fs::remove_dir_all(p);
    }
    Ok(())
}

/// `--offline`: every network input must already be in the store; names
/// all that are not.
fn check_offline_inputs(loaded: &LoadedSpec, store: &InputStore) -> Result<()> {
    let missing: Vec<String> = loaded
        .inputs
        .iter()
        .filter(|i| match &i.source {
            Source::Url(_) | Source::Registry { .. } => {
                !i.sha256.as_deref().is_some_and(|d| store.has(d))
            }
            Source::Path(p) => !p.exists() && !i.sha256.as_deref().is_some_and(|d| store.has(d)),
        })
        .map(|i| {
            format!(
                "{} ({}, sha256 {})",
                if i.name == "base" {
                    "base".to_string()
                } else {
                    format!("artifact `{}`", i.name)
                },
                i.source_text,
                i.sha256.as_deref().unwrap_or("unpinned")
            )
        })
        .collect();
    if !missing.is_empty() {
        bail!(
            "--offline forbids the network and the store {} lacks: {} (run `nodebake fetch` or `nodebake bundle import` first)",
            store.root().display(),
            missing.join(", ")
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn unpack_input(
    store: &InputStore,
    progress: &Progress,
    tree: &mut Tree,
    blobs: &BlobStore,
    arch: Arch,
    inp: &InputRef,
    art: Option<&crate::spec::Artifact>,
    packages: &mut Vec<Package>,
    images: &mut Vec<BakedImage>,
) -> Result<Option<String>> {
    let what = if inp.name == "base" {
        "base".to_string()
    } else {
        format!("artifact `{}`", inp.name)
    };
    // Directory base: walk it.
    if let Source::Path(p) = &inp.source {
        if p.is_dir() {
            if art.is_some() {
                bail!(
                    "{what}: `{}` is a directory; only the base may be one",
                    p.display()
                );
            }
            let mut sink = Sink::new(tree, blobs, arch, &inp.name, None);
            unpack_dir(&mut sink, p)?;
            return Ok(None);
        }
    }
    let (file, size) = match &inp.source {
        Source::Url(u) => {
            let d = store.fetch_url(&what, u, inp.sha256.as_deref())?;
            let f = store.open_object(&d)?;
            let size = f.metadata()?.len();
            (f, size)
        }
        Source::Registry { reference, .. } => {
            let Some(d) = inp.sha256.as_deref().filter(|d| store.has(d)) else {
                bail!(
                    "{what}: image `{reference}` (archive sha256 {}) is not in the store {}; run `nodebake fetch` (or `nodebake bundle import`) first",
                    inp.sha256.as_deref().unwrap_or("unpinned"),
                    store.root().display()
                );
            };
            let f = store.open_object(d)?;
            let size = f.metadata()?.len();
            (f, size)
        }
        // A pinned local file that is not there (a spec unpacked from a
        // bundle): the store holds it under its digest.
        Source::Path(p) if !p.exists() && inp.sha256.as_deref().is_some_and(|d| store.has(d)) => {
            let f = store.open_object(inp.sha256.as_deref().unwrap_or_default())?;
            let size = f.metadata()?.len();
            (f, size)
        }
        Source::Path(p) => {
            let f = std::fs::File::open(p)
                .with_context(|| format!("{what}: cannot open {}", p.display()))?;
            let size = f.metadata()?.len();
            (f, size)
        }
    };
    let raw = progress.reader(&inp.name, size, BufReader::with_capacity(1 << 20, file));
    let mut hr = HashingReader::new(raw);
    let overwrite = match art {
        Some(a) => globset(&a.overwrite)?,
        None => None,
    };
    let mut sink = Sink::new(tree, blobs, arch, &inp.name, overwrite);
    let result = (|| -> Result<()> {
        match art {
            None => unpack::unpack_tar(&mut sink, &mut hr, &Placement::at("/")),
            Some(a) => {
                let dest = a.dest.clone();
                match a.kind {
                    ArtifactKind::File => {
                        let dest = dest.ok_or_else(|| {
                            anyhow!("field `dest` is required for kind = \"file\"")
                        })?;
                        let mode = file_mode(a)?;
                        sink.file(&dest, &mut hr, mode, 0, 0).map(|_| ())
                    }
                    ArtifactKind::Tarball => {
                        unpack::unpack_tar(&mut sink, &mut hr, &archive_placement(a)?)
                    }
                    ArtifactKind::Rpm | ArtifactKind::Deb => {
                        let place = archive_placement(a)?;
                        let pkg = if a.kind == ArtifactKind::Rpm {
                            unpack::unpack_rpm(&mut sink, &mut hr, &place)?
                        } else {
                            unpack::unpack_deb(&mut sink, &mut hr, &place)?
                        };
                        packages.push(pkg);
                        Ok(())
                    }
                    ArtifactKind::Image => {
                        let dest = dest
                            .unwrap_or_else(|| format!("{}/{}.tar", layout::IMAGES_DIR, a.name));
                        let mode = file_mode(a)?;
                        let id = sink.file(&dest, &mut hr, mode, 0, 0)?;
                        let format = unpack::image_archive_format(blobs, &id)?;
                        let pinned = match &inp.source {
                            Source::Registry { digest, .. } => digest.clone(),
                            _ => None,
                        };
                        images.push(BakedImage {
                            reference: a.reference.clone().unwrap_or_default(),
                            digest: a.digest.clone().or(pinned),
                            path: dest,
                            format: format.to_string(),
                        });
                        Ok(())
                    }
                }
            }
        }
    })();
    // Read to the end so the digest covers the whole input, then check it
    // before reporting any content error: a wrong download is the cause.
    let (actual, _) = hr
        .finish()
        .with_context(|| format!("{what}: reading {}", inp.source_text))?;
    if let Some(expected) = &inp.sha256 {
        if !expected.eq_ignore_ascii_case(&actual) {
            bail!(
                "{what}: digest mismatch for `{}`: expected sha256 {expected}, got {actual}",
                inp.source_text
            );
        }
    }
    result.with_context(|| format!("{what} ({})", inp.source_text))?;
    Ok(Some(actual))
}

/// Where an archive artifact's members go.
fn archive_placement(a: &crate::spec::Artifact) -> Result<Placement> {
    Ok(Placement {
        dest: a.dest.clone().unwrap_or_else(|| "/".into()),
        strip: a.strip_components,
        include: globset(&a.include)?,
        exclude: globset(&a.exclude)?,
    })
}

/// Mode of a single-file artifact (`file`, `image`), default 0644.
fn file_mode(a: &crate::spec::Artifact) -> Result<u32> {
    Ok(a.mode
        .as_deref()
        .map(crate::spec::parse_mode)
        .transpose()?
        .unwrap_or(0o644))
}

fn unpack_dir(sink: &mut Sink, root: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut stack = vec![PathBuf::new()];
    let mut seen = 0u64;
    while let Some(rel) = stack.pop() {
        seen += 1;
        if seen > 50_000_000 {
            bail!("base directory {} is too large", root.display());
        }
        let full = root.join(&rel);
        let md = std::fs::symlink_metadata(&full)
            .with_context(|| format!("base: {}", full.display()))?;
        let path = format!(
            "/{}",
            crate::names::from_bytes(rel.as_os_str().as_bytes(), "base file name")?
        );
        let (mode, uid, gid) = (md.mode() & 0o7777, md.uid(), md.gid());
        let ft = md.file_type();
        if ft.is_dir() {
            if !rel.as_os_str().is_empty() {
                sink.dir(&path, mode, uid, gid)?;
            }
            let mut names: Vec<_> = std::fs::read_dir(&full)
                .with_context(|| format!("base: listing {}", full.display()))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()?;
            names.sort();
            for n in names.into_iter().rev() {
                stack.push(rel.join(n));
            }
        } else if ft.is_file() {
            let mut f = std::fs::File::open(&full)
                .with_context(|| format!("base: cannot read {}", full.display()))?;
            sink.file(&path, &mut f, mode, uid, gid)?;
        } else if ft.is_symlink() {
            let t = std::fs::read_link(&full)?;
            let t = crate::names::from_bytes(t.as_os_str().as_bytes(), "symlink target")
                .with_context(|| format!("base: {path}"))?;
            sink.symlink(&path, &t, uid, gid)?;
        } else if ft.is_char_device() || ft.is_block_device() {
            let rdev = md.rdev();
            let (ma, mi) = (libc::major(rdev), libc::minor(rdev));
            let k = if ft.is_char_device() {
                Kind::CharDev(ma, mi)
            } else {
                Kind::BlockDev(ma, mi)
            };
            sink.special(&path, k, mode, uid, gid)?;
        } else if ft.is_fifo() {
            sink.special(&path, Kind::Fifo, mode, uid, gid)?;
        }
    }
    Ok(())
}

fn os_release_field(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
        .unwrap_or_default()
}

fn read_file(tree: &Tree, blobs: &BlobStore, path: &str) -> Option<Vec<u8>> {
    match tree.lookup(path)? {
        (
            _,
            Entry {
                kind: Kind::File(id),
                ..
            },
        ) => blobs.read(id).ok(),
        _ => None,
    }
}

fn detect_base(tree: &Tree, blobs: &BlobStore) -> Result<BaseInfo> {
    let text = read_file(tree, blobs, "/etc/os-release")
        .or_else(|| read_file(tree, blobs, "/usr/lib/os-release"))
        .ok_or_else(|| {
            anyhow!("base: no /etc/os-release or /usr/lib/os-release; cannot tell the distribution")
        })?;
    let text = String::from_utf8_lossy(&text);
    Ok(BaseInfo {
        id: os_release_field(&text, "ID"),
        version_id: os_release_field(&text, "VERSION_ID"),
        pretty_name: os_release_field(&text, "PRETTY_NAME"),
        package_db: String::new(),
    })
}

fn read_package_db(tree: &Tree, blobs: &BlobStore) -> Result<(String, Vec<Package>)> {
    if let Some((
        _,
        Entry {
            kind: Kind::File(id),
            ..
        },
    )) = tree.lookup("/var/lib/rpm/rpmdb.sqlite")
    {
        let pkgs = pkgdb::read_rpmdb_sqlite(&blobs.path(id))
            .context("base: reading /var/lib/rpm/rpmdb.sqlite")?;
        return Ok(("rpmdb.sqlite".into(), pkgs));
    }
    if let Some((
        _,
        Entry {
            kind: Kind::File(id),
            ..
        },
    )) = tree.lookup("/var/lib/rpm/Packages")
    {
        return match pkgdb::read_rpmdb_bdb(&blobs.path(id)) {
            Ok(p) => Ok(("rpmdb (Berkeley DB)".into(), p)),
            Err(e) => Ok((format!("not read: {e:#}"), Vec::new())),
        };
    }
    if let Some(bytes) = read_file(tree, blobs, "/var/lib/dpkg/status") {
        let pkgs = pkgdb::parse_dpkg_status(&String::from_utf8_lossy(&bytes))
            .context("base: reading /var/lib/dpkg/status")?;
        return Ok(("dpkg".into(), pkgs));
    }
    Ok(("none found".into(), Vec::new()))
}

fn add_inline_files(
    tree: &mut Tree,
    blobs: &BlobStore,
    arch: Arch,
    loaded: &LoadedSpec,
) -> Result<()> {
    for f in &loaded.spec.files {
        let ow = if f.overwrite {
            globset(std::slice::from_ref(&f.path))?
        } else {
            None
        };
        let mut s = Sink::new(tree, blobs, arch, &format!("file {}", f.path), ow);
        let mode = f
            .mode
            .as_deref()
            .map(crate::spec::parse_mode)
            .transpose()?
            .unwrap_or(0o644);
        s.file(&f.path, &mut f.content.as_bytes(), mode, f.uid, f.gid)?;
    }
    Ok(())
}

fn add_firstboot(tree: &mut Tree, blobs: &BlobStore, arch: Arch, bytes: &[u8]) -> Result<()> {
    let mut s = Sink::new(tree, blobs, arch, "firstboot", None);
    s.file(layout::FIRSTBOOT_BIN, &mut &bytes[..], 0o755, 0, 0)?;
    s.symlink(layout::FIRSTBOOT_BIN_LINK, layout::FIRSTBOOT_BIN, 0, 0)?;
    let unit = layout::firstboot_unit();
    s.file(layout::FIRSTBOOT_UNIT, &mut unit.as_bytes(), 0o644, 0, 0)?;
    let keep = layout::keep_token_service();
    s.file(layout::KEEP_TOKEN_UNIT, &mut keep.as_bytes(), 0o644, 0, 0)?;
    let timer = layout::keep_token_timer();
    s.file(layout::KEEP_TOKEN_TIMER, &mut timer.as_bytes(), 0o644, 0, 0)?;
    let reconcile = layout::reconcile_service();
    s.file(
        layout::RECONCILE_UNIT,
        &mut reconcile.as_bytes(),
        0o644,
        0,
        0,
    )?;
    let timer = layout::reconcile_timer();
    s.file(layout::RECONCILE_TIMER, &mut timer.as_bytes(), 0o644, 0, 0)?;
    let state = layout::state_disk_unit();
    s.file(layout::STATE_DISK_UNIT, &mut state.as_bytes(), 0o644, 0, 0)?;
    let dropin = layout::kubelet_state_dropin();
    s.file(
        layout::KUBELET_STATE_DROPIN,
        &mut dropin.as_bytes(),
        0o644,
        0,
        0,
    )?;
    s.dir(layout::ETC_DIR, 0o755, 0, 0)?;
    Ok(())
}

fn add_profiles(
    tree: &mut Tree,
    blobs: &BlobStore,
    arch: Arch,
    profiles: &[(RoleProfile, Vec<u8>)],
    inputs: &mut Vec<InputInfo>,
) -> Result<()> {
    for (p, bytes) in profiles {
        let mut s = Sink::new(tree, blobs, arch, &format!("profile:{}", p.name), None);
        s.file(
            &format!("{}/{}.toml", layout::PROFILES_DIR, p.name),
            &mut &bytes[..],
            0o644,
            0,
            0,
        )?;
        inputs.push(InputInfo {
            name: format!("profile:{}", p.name),
            source: format!("profiles/{}.toml", p.name),
            sha256: Some(sha256_hex(bytes)),
            kind: "profile".into(),
        });
    }
    Ok(())
}

/// Unit directories searched, in systemd's order of precedence.
const UNIT_DIRS: [&str; 3] = [
    "/etc/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// Enables units as `systemctl enable` would: `*.wants/`/`*.requires/`
/// links for `WantedBy=`/`RequiredBy=` and links for `Alias=`.
fn enable_units(
    tree: &mut Tree,
    blobs: &BlobStore,
    units: &[String],
    firstboot: bool,
) -> Result<()> {
    let mut all: Vec<String> = units.to_vec();
    if firstboot {
        all.push(layout::FIRSTBOOT_UNIT_NAME.to_string());
        all.push(layout::KEEP_TOKEN_TIMER_NAME.to_string());
        all.push(layout::RECONCILE_TIMER_NAME.to_string());
        all.push(layout::STATE_DISK_UNIT_NAME.to_string());
    }
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    for u in &all {
        let found = UNIT_DIRS.iter().find_map(|d| {
            let p = format!("{d}/{u}");
            match tree.lookup(&p) {
                Some((
                    real,
                    Entry {
                        kind: Kind::File(id),
                        ..
                    },
                )) => Some((p, real, *id)),
                _ => None,
            }
        });
        let (path, real, id) = found.ok_or_else(|| {
            anyhow!(
                "systemd: field `enable`: unit `{u}` not found in {}",
                UNIT_DIRS.join(", ")
            )
        })?;
        let text = String::from_utf8_lossy(&blobs.read(&id)?).into_owned();
        let install = install_section(&text);
        if install.is_empty() {
            bail!("systemd: field `enable`: unit `{u}` ({path}) has no [Install] section");
        }
        for (k, v) in install {
            for target in v.split_whitespace() {
                let link = match k.as_str() {
                    "WantedBy" => format!("/etc/systemd/system/{target}.wants/{u}"),
                    "RequiredBy" => format!("/etc/systemd/system/{target}.requires/{u}"),
                    "Alias" => format!("/etc/systemd/system/{target}"),
                    _ => continue,
                };
                // Already enabled (e.g. by a package's postinst in the
                // base), through any path that leads to the same unit.
                if tree.lookup(&link).is_some_and(|(r, _)| r == real) {
                    continue;
                }
                links.insert(link, path.clone());
            }
        }
    }
    let mut s = Sink::new(tree, blobs, Arch::X86_64, "systemd-enable", None);
    for (link, target) in links {
        s.symlink(&link, &target, 0, 0)?;
    }
    Ok(())
}

fn install_section(text: &str) -> Vec<(String, String)> {
    let mut in_install = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_install = l == "[Install]";
        } else if in_install {
            if let Some((k, v)) = l.split_once('=') {
                out.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    out
}

fn artifact_dest(loaded: &LoadedSpec, name: &str) -> Result<String> {
    let a = loaded
        .artifact(name)
        .ok_or_else(|| anyhow!("no artifact `{name}`"))?;
    a.dest
        .clone()
        .filter(|_| a.kind == ArtifactKind::File)
        .ok_or_else(|| anyhow!("kubernetes: field `cni_manifest`: artifact `{name}` must be kind = \"file\" with a `dest`"))
}

fn select_kernel(tree: &Tree, loaded: &LoadedSpec) -> Result<Option<(String, BlobId)>> {
    let Some(k) = &loaded.spec.kernel else {
        return Ok(None);
    };
    let pattern = match (&k.path, &k.artifact) {
        (Some(p), _) => p.clone(),
        (None, Some(a)) => artifact_dest(loaded, a)
            .map_err(|_| anyhow!("kernel: artifact `{a}` needs a `dest`"))?,
        (None, None) => unreachable!("validated"),
    };
    let hits: Vec<(String, BlobId)> = tree
        .glob(&pattern)?
        .into_iter()
        .filter_map(|p| match tree.lookup(&p) {
            Some((
                _,
                Entry {
                    kind: Kind::File(id),
                    ..
                },
            )) => Some((p, *id)),
            _ => None,
        })
        .collect();
    match hits.len() {
        1 => Ok(hits.into_iter().next()),
        0 => bail!("kernel: `{pattern}` matches no file in the image"),
        _ => bail!(
            "kernel: `{pattern}` matches {} files ({}); make it match exactly one",
            hits.len(),
            hits.iter()
                .map(|h| h.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// What the kernel needs in an initramfs that boots the whole system from
/// RAM: `/init` (→ `/sbin/init`, i.e. systemd) and `/dev/console`.
fn add_pxe_essentials(tree: &mut Tree, blobs: &BlobStore, arch: Arch) -> Result<()> {
    match tree.lookup("/sbin/init") {
        Some((
            _,
            Entry {
                kind: Kind::File(_),
                ..
            },
        )) => {}
        _ => bail!("outputs: `pxe` needs /sbin/init (systemd-sysv) in the image; it is missing"),
    }
    let mut s = Sink::new(tree, blobs, arch, "pxe", None);
    if s.tree.get("init").is_none() {
        s.symlink("/init", "/sbin/init", 0, 0)?;
    }
    s.dir("/dev", 0o755, 0, 0)?;
    if s.tree.get("dev/console").is_none() {
        s.special("/dev/console", Kind::CharDev(5, 1), 0o600, 0, 0)?;
    }
    Ok(())
}

fn write_archives(
    tree: &Tree,
    blobs: &BlobStore,
    mtime: u64,
    out: &Path,
    spec: &crate::spec::ImageSpec,
    want_pxe: bool,
) -> Result<Vec<OutputFile>> {
    let want_rootfs = spec.outputs.formats.contains(&OutputFormat::Rootfs);
    let level = spec.outputs.gzip_level;
    let comp = spec.outputs.rootfs_compression;
    std::thread::scope(|scope| {
        let rootfs = want_rootfs.then(|| {
            scope.spawn(move || {
                let (name, enc): (
                    &str,
                    Box<dyn FnOnce(_) -> std::io::Result<Encoder<_>> + Send>,
                ) = match comp {
                    RootfsCompression::Gzip => (
                        "rootfs.tar.gz",
                        Box::new(move |w| Ok(Encoder::gzip(w, level))),
                    ),
                    RootfsCompression::Zstd => {
                        ("rootfs.tar.zst", Box::new(|w| Encoder::zstd(w, 9)))
                    }
                };
                output::write_rootfs(tree, blobs, mtime, &out.join(name), enc)
            })
        });
        let initramfs = want_pxe.then(|| {
            scope.spawn(move || {
                output::write_initramfs(tree, blobs, mtime, &out.join("initramfs.cpio.gz"), level)
            })
        });
        let mut v = Vec::new();
        for h in [rootfs, initramfs].into_iter().flatten() {
            v.push(
                h.join()
                    .map_err(|_| anyhow!("an output writer panicked"))??,
            );
        }
        Ok(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A unit a package's postinst already enabled in the base (its link
    /// through `/lib`, merged into `/usr/lib`) is enabled, not refused as
    /// a conflicting link; a unit nobody enabled gets its link.
    #[test]
    fn enabling_what_the_base_enabled_adds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::new(dir.path()).unwrap();
        let mut tree = Tree::new();
        let unit = "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n";
        let mut s = Sink::new(&mut tree, &blobs, Arch::X86_64, "base", None);
        s.symlink("/lib", "usr/lib", 0, 0).unwrap();
        for u in ["ssh.service", "other.service"] {
            s.file(
                &format!("/usr/lib/systemd/system/{u}"),
                &mut unit.as_bytes(),
                0o644,
                0,
                0,
            )
            .unwrap();
        }
        let link = "/etc/systemd/system/multi-user.target.wants/ssh.service";
        s.symlink(link, "/lib/systemd/system/ssh.service", 0, 0)
            .unwrap();
        enable_units(
            &mut tree,
            &blobs,
            &["ssh.service".into(), "other.service".into()],
            false,
        )
        .unwrap();
        assert_eq!(
            tree.get(link).map(|e| e.kind.clone()),
            Some(Kind::Symlink("/lib/systemd/system/ssh.service".into()))
        );
        assert_eq!(
            tree.get("/etc/systemd/system/multi-user.target.wants/other.service")
                .map(|e| e.kind.clone()),
            Some(Kind::Symlink(
                "/usr/lib/systemd/system/other.service".into()
            ))
        );
    }

    #[test]
    fn install_section_parsing() {
        let s = install_section(
            "[Unit]\nWantedBy=no\n[Install]\nWantedBy=multi-user.target\nAlias=x.service\n",
        );
        assert_eq!(
            s,
            vec![
                ("WantedBy".into(), "multi-user.target".into()),
                ("Alias".into(), "x.service".into())
            ]
        );
    }
}
