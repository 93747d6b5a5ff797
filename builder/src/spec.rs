//! Image specs (`images/*.toml`): the declarative description of one node
//! image. Parsing is strict (`deny_unknown_fields`, a known `spec_version`),
//! and [`ImageSpec::load`] validates everything that can be checked without
//! reading the inputs. Field-by-field documentation lives in
//! `images/README.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The only spec version this builder reads.
pub const SPEC_VERSION: u32 = 1;

/// A whole image spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// Must equal [`SPEC_VERSION`].
    pub spec_version: u32,
    /// Image name (`[a-z0-9][a-z0-9.-]*`).
    pub name: String,
    /// Image version, free form (`1.31.0-1`).
    pub version: String,
    /// Target architecture: `x86_64` or `aarch64`.
    pub arch: String,
    /// Timestamp (seconds since the epoch) given to every entry of every
    /// output. `SOURCE_DATE_EPOCH` in the environment takes precedence.
    #[serde(default)]
    pub source_date_epoch: Option<u64>,
    /// Root filesystem to start from.
    pub base: Base,
    /// Where the kernel comes from.
    #[serde(default)]
    pub kernel: Option<Kernel>,
    /// Kubernetes version and CNI.
    pub kubernetes: Kubernetes,
    /// Pinned inputs unpacked into the image, in order.
    #[serde(default, rename = "artifact")]
    pub artifacts: Vec<Artifact>,
    /// Files written from inline content.
    #[serde(default, rename = "file")]
    pub files: Vec<InlineFile>,
    /// systemd units to enable.
    #[serde(default)]
    pub systemd: Systemd,
    /// Role profiles (`profiles/<name>.toml`) to bake.
    #[serde(default)]
    pub profiles: Vec<String>,
    /// Which outputs to write.
    #[serde(default)]
    pub outputs: Outputs,
    /// Image paths (globs) where inputs may put device nodes, FIFOs and
    /// set-id files beyond the defaults (`/dev/**` for devices and FIFOs,
    /// the system program directories for set-id files); see
    /// `crate::special`.
    #[serde(default)]
    pub special_files: Vec<String>,
    /// What the end-of-build lint does with its findings.
    #[serde(default)]
    pub lint: LintSpec,
}

/// `[lint]`: the checks of `nodebake lint`, run at the end of every build.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LintSpec {
    /// `"warning"` (default): findings are printed and recorded in the
    /// manifest; `"error"`: an error finding fails the build.
    #[serde(default)]
    pub level: LintLevel,
    /// Finding ids (globs: `image:coredns`, `elf:libfoo.so.*`) the image
    /// knowingly lacks; they are reported as allowed.
    #[serde(default)]
    pub allow: Vec<String>,
    /// The cluster runs kube-proxy in IPVS mode: missing IPVS modules are
    /// errors, not warnings.
    #[serde(default)]
    pub ipvs: bool,
}

/// `[lint] level`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LintLevel {
    /// Print and record findings.
    #[default]
    Warning,
    /// Fail the build on an error finding.
    Error,
}

/// The base root filesystem.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    /// Tarball (`.tar`, `.tar.gz`, `.tar.xz`, `.tar.zst`) or directory:
    /// a path (relative to the spec file) or an `http(s)://` URL.
    pub source: String,
    /// sha256 of the tarball; required unless the source is in the spec's
    /// repository or the lock file pins it; `"locked"` defers to the lock.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Packages the base is known to hold (`coreutils-single`, `kmod`):
    /// what `nodebake lint --inputs-only` counts on besides the
    /// artifacts. Every build checks them against the base's package
    /// database and fails naming any that is not there.
    #[serde(default)]
    pub packages: Vec<String>,
}

/// Where the kernel comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// Glob of the kernel image inside the finished tree
    /// (`/boot/vmlinuz-*`); exactly one file must match.
    #[serde(default)]
    pub path: Option<String>,
    /// Name of a `file` artifact that is the kernel image.
    #[serde(default)]
    pub artifact: Option<String>,
    /// Kernel command line recorded for PXE (`console=ttyS0`).
    #[serde(default)]
    pub cmdline: Option<String>,
}

/// Kubernetes settings baked into the image.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kubernetes {
    /// Kubernetes version the binaries are (`1.31.0`).
    pub version: String,
    /// CNI name (`flannel`, `calico`, ...).
    #[serde(default)]
    pub cni: Option<String>,
    /// Name of the artifact holding the CNI manifest.
    #[serde(default)]
    pub cni_manifest: Option<String>,
    /// `"auto"`: add the control-plane images `kubeadm config images list`
    /// names for `version` (and the CNI's images) as registry artifacts.
    #[serde(default)]
    pub images: ImagesMode,
    /// Repository the control-plane images come from (kubeadm's
    /// `imageRepository`); default: kubeadm's for `version`.
    #[serde(default)]
    pub image_repository: Option<String>,
    /// Repository of the CNI's images (default: the CNI's upstream one).
    #[serde(default)]
    pub cni_image_repository: Option<String>,
    /// CNI version whose images are added (default: see
    /// `kubeadm_images::default_cni_version`).
    #[serde(default)]
    pub cni_version: Option<String>,
}

/// Whether the Kubernetes images are listed by hand or resolved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImagesMode {
    /// Only the `[[artifact]]`s of the spec (default).
    #[default]
    None,
    /// Control-plane + CNI images resolved for `kubernetes.version`.
    Auto,
}

/// `source` of an image artifact that is pulled from its registry.
pub const REGISTRY_SOURCE: &str = "registry";

/// How an artifact is unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    /// A single file copied to `dest`.
    File,
    /// A tar archive (optionally compressed) extracted under `dest`.
    Tarball,
    /// An RPM whose payload is extracted under `dest` (default `/`).
    Rpm,
    /// A Debian package whose `data.tar` is extracted under `dest`.
    Deb,
    /// A container image archive (docker-archive or OCI archive).
    Image,
}

/// A pinned input.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Unique name, used in errors and the manifest.
    pub name: String,
    /// Path (relative to the spec), `http(s)://` URL, or `"registry"`
    /// (kind `image` only: pulled from the registry of `reference`).
    pub source: String,
    /// sha256 of the source (see [`Base::sha256`]).
    #[serde(default)]
    pub sha256: Option<String>,
    /// How to unpack it.
    pub kind: ArtifactKind,
    /// Destination: a file path for `file`/`image`, a directory otherwise.
    #[serde(default)]
    pub dest: Option<String>,
    /// Mode for `file`/`image` (octal string, `"0755"`).
    #[serde(default)]
    pub mode: Option<String>,
    /// Leading path components removed from archive members (tarball,
    /// rpm, deb), after a leading `./`.
    #[serde(default)]
    pub strip_components: u32,
    /// Only members matching one of these globs are taken (matched against
    /// the member path as `tar -t` lists it, before stripping, without `./`).
    #[serde(default)]
    pub include: Vec<String>,
    /// Entries matching these globs are skipped.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Image paths (globs) this artifact may overwrite with other content.
    #[serde(default)]
    pub overwrite: Vec<String>,
    /// `image` only: the reference the archive holds.
    #[serde(default)]
    pub reference: Option<String>,
    /// `image` only: the manifest digest (`sha256:...`).
    #[serde(default)]
    pub digest: Option<String>,
}

/// A file from inline content.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineFile {
    /// Absolute path in the image.
    pub path: String,
    /// File content.
    pub content: String,
    /// Octal mode, default `"0644"`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Owner uid, default 0.
    #[serde(default)]
    pub uid: u32,
    /// Owner gid, default 0.
    #[serde(default)]
    pub gid: u32,
    /// May replace a different file at the same path.
    #[serde(default)]
    pub overwrite: bool,
}

/// systemd settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Systemd {
    /// Units enabled by `*.wants/` symlinks, as `systemctl enable` would.
    #[serde(default)]
    pub enable: Vec<String>,
}

/// Output selection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outputs {
    /// `rootfs` (root filesystem archive) and/or `pxe` (vmlinuz +
    /// initramfs.cpio.gz).
    #[serde(default = "default_formats")]
    pub formats: Vec<OutputFormat>,
    /// Compression of the rootfs archive.
    #[serde(default)]
    pub rootfs_compression: RootfsCompression,
    /// gzip level (1–9) for `.gz` outputs.
    #[serde(default = "default_gzip_level")]
    pub gzip_level: u32,
    /// `disk` output settings.
    #[serde(default)]
    pub disk: DiskSpec,
}

impl Default for Outputs {
    fn default() -> Self {
        Outputs {
            formats: default_formats(),
            rootfs_compression: RootfsCompression::default(),
            gzip_level: default_gzip_level(),
            disk: DiskSpec::default(),
        }
    }
}

/// `[outputs.disk]`: the bootable disk image (MBR, FAT boot partition with
/// syslinux, ext4 root found by label).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// Whole disk size (`"8G"`, `"1536M"`); default: the content plus
    /// `free`.
    #[serde(default)]
    pub size: Option<String>,
    /// Free space left in the root filesystem when `size` is not given.
    #[serde(default = "default_disk_free")]
    pub free: String,
    /// Size of the FAT boot partition (kernel + stage-1 initramfs).
    #[serde(default = "default_boot_size")]
    pub boot_size: String,
    /// ext4 label of the root filesystem (`root=LABEL=...`), at most 16 bytes.
    #[serde(default = "default_root_label")]
    pub root_label: String,
    /// Kernel modules the stage-1 init loads to find the root disk
    /// (dependencies are added); default: virtio, SCSI, SATA, IDE and NVMe
    /// drivers, those the kernel lacks skipped.
    #[serde(default)]
    pub modules: Option<Vec<String>>,
    /// Also write `disk.qcow2` (needs qemu-img).
    #[serde(default = "yes")]
    pub qcow2: bool,
}

impl Default for DiskSpec {
    fn default() -> Self {
        DiskSpec {
            size: None,
            free: default_disk_free(),
            boot_size: default_boot_size(),
            root_label: default_root_label(),
            modules: None,
            qcow2: true,
        }
    }
}

fn default_disk_free() -> String {
    "1G".into()
}
fn default_boot_size() -> String {
    "64M".into()
}
fn default_root_label() -> String {
    "nodebake-root".into()
}
fn yes() -> bool {
    true
}

impl DiskSpec {
    /// `size` in bytes.
    pub fn size(&self) -> Result<Option<u64>> {
        self.size
            .as_deref()
            .map(|s| parse_size(s, "outputs.disk: field `size`"))
            .transpose()
    }
    /// `free` in bytes.
    pub fn free(&self) -> Result<u64> {
        parse_size(&self.free, "outputs.disk: field `free`")
    }
    /// `boot_size` in bytes.
    pub fn boot_size(&self) -> Result<u64> {
        parse_size(&self.boot_size, "outputs.disk: field `boot_size`")
    }
    fn validate(&self) -> Result<()> {
        self.size()?;
        self.free()?;
        let b = self.boot_size()?;
        if !(16 << 20..=2 << 30).contains(&b) {
            bail!("outputs.disk: field `boot_size` must be between 16M and 2G (FAT16)");
        }
        let l = &self.root_label;
        if l.is_empty()
            || l.len() > 16
            || !l
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
        {
            bail!("outputs.disk: field `root_label` `{l}` must be 1–16 characters of A–Z, a–z, 0–9, `-`, `_`, `.`");
        }
        Ok(())
    }
}

/// Parses `"8G"`, `"512M"`, `"64K"` or a byte count; sizes are binary
/// (1K = 1024) and whole MiB multiples are not required.
pub fn parse_size(s: &str, what: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (
            &t[..i],
            match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => bail!("{what}: `{s}` has an unknown unit (use K, M, G or T)"),
            },
        ),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n > 0)
        .ok_or_else(|| anyhow!("{what}: `{s}` is not a size (like \"8G\" or \"512M\")"))
}

fn default_formats() -> Vec<OutputFormat> {
    vec![OutputFormat::Rootfs, OutputFormat::Pxe]
}

fn default_gzip_level() -> u32 {
    6
}

/// An output kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// `rootfs.tar.gz` / `rootfs.tar.zst`.
    Rootfs,
    /// `vmlinuz` + `initramfs.cpio.gz`.
    Pxe,
    /// `disk.raw` + `disk.qcow2`: bootable BIOS disk (see `[outputs.disk]`).
    Disk,
}

/// Compression of the rootfs archive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RootfsCompression {
    /// `rootfs.tar.gz`.
    #[default]
    Gzip,
    /// `rootfs.tar.zst`.
    Zstd,
}

/// Digests pinned outside the spec (`SPEC.lock`), by input name
/// (`base` or an artifact name).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    /// Lock format version (1).
    pub lock_version: u32,
    /// Pinned inputs.
    #[serde(default, rename = "input")]
    pub inputs: Vec<LockedInput>,
}

/// One pinned input of a lock file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedInput {
    /// `base` or an artifact name.
    pub name: String,
    /// Resolved source the digest was taken from.
    pub source: String,
    /// Hex sha256 (for a registry image: of the archive nodebake writes).
    pub sha256: String,
    /// Registry images: the manifest (or index) digest the reference
    /// resolved to, `sha256:<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// A spec with its location, lock and resolved sources.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    /// The parsed spec.
    pub spec: ImageSpec,
    /// Path of the spec file.
    pub path: PathBuf,
    /// `sha256:<hex>` of the spec file bytes.
    pub digest: String,
    /// Directory the spec's relative paths are resolved against.
    pub dir: PathBuf,
    /// Root of the repository holding the spec, if any (`.git` found).
    pub repo_root: Option<PathBuf>,
    /// Inputs in build order (base first).
    pub inputs: Vec<InputRef>,
}

/// Where an input comes from, after `${VAR}` expansion and lock lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local file or directory.
    Path(PathBuf),
    /// An `http(s)` URL.
    Url(String),
    /// A container image pulled from its registry (`source = "registry"`).
    Registry {
        /// The reference (`registry.k8s.io/pause:3.10`).
        reference: String,
        /// Manifest digest, from the spec or the lock (`sha256:<hex>`).
        digest: Option<String>,
    },
}

/// An input as the build reads it.
#[derive(Debug, Clone)]
pub struct InputRef {
    /// `base` or the artifact name.
    pub name: String,
    /// The source string as written in the spec (recorded in the manifest).
    pub source_text: String,
    /// Resolved source.
    pub source: Source,
    /// Expected hex sha256, when pinned.
    pub sha256: Option<String>,
    /// Kind (`None` for the base).
    pub kind: Option<ArtifactKind>,
}

impl ImageSpec {
    /// Parses spec text; `what` names the file in errors.
    pub fn parse(text: &str, what: &str) -> Result<ImageSpec> {
        // Check the version first so an unknown version is reported as
        // such, not as a pile of unknown fields.
        let raw: toml::Value =
            toml::from_str(text).with_context(|| format!("{what}: not valid TOML"))?;
        match raw.get("spec_version").and_then(|v| v.as_integer()) {
            Some(v) if v == SPEC_VERSION as i64 => {}
            Some(v) => bail!(
                "{what}: field `spec_version`: unsupported version {v} (this nodebake reads version {SPEC_VERSION})"
            ),
            None => bail!("{what}: field `spec_version` is missing (expected {SPEC_VERSION})"),
        }
        let spec: ImageSpec = toml::from_str(text).map_err(|e| anyhow!("{what}: {e}"))?;
        spec.validate().with_context(|| what.to_string())?;
        Ok(spec)
    }

    /// Checks everything that needs no input bytes.
    pub fn validate(&self) -> Result<()> {
        for g in &self.special_files {
            if !g.starts_with('/') {
                bail!("field `special_files`: `{g}` is not an absolute image path (glob)");
            }
            globset::Glob::new(g)
                .with_context(|| format!("field `special_files`: bad glob `{g}`"))?;
        }
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        {
            bail!("field `name`: `{}` must be [a-z0-9.-]+", self.name);
        }
        crate::arch::Arch::from_name(&self.arch).context("field `arch`")?;
        let mut names = BTreeSet::new();
        for (i, a) in self.artifacts.iter().enumerate() {
            let at = format!("artifact[{i}] `{}`", a.name);
            if a.name.is_empty() || a.name == "base" {
                bail!("{at}: field `name` must be non-empty and not `base`");
            }
            if !names.insert(a.name.as_str()) {
                bail!("{at}: field `name`: duplicate artifact name");
            }
            if let Some(m) = &a.mode {
                parse_mode(m).with_context(|| format!("{at}: field `mode`"))?;
            }
            if let Some(d) = &a.dest {
                check_abs_path(d).with_context(|| format!("{at}: field `dest`"))?;
            }
            for g in a.include.iter().chain(&a.exclude).chain(&a.overwrite) {
                globset::Glob::new(g).with_context(|| format!("{at}: bad glob `{g}`"))?;
            }
            match a.kind {
                ArtifactKind::Image => {
                    let Some(r) = &a.reference else {
                        bail!("{at}: field `reference` is required for kind = \"image\"");
                    };
                    if let Some(d) = &a.digest {
                        check_digest(d).with_context(|| format!("{at}: field `digest`"))?;
                    }
                    if a.source == REGISTRY_SOURCE {
                        crate::registry::ImageRef::parse(r)
                            .with_context(|| format!("{at}: field `reference`"))?;
                        if a.strip_components != 0 || !a.include.is_empty() || !a.exclude.is_empty()
                        {
                            bail!("{at}: `strip_components`/`include`/`exclude` do not apply to images");
                        }
                    }
                }
                _ => {
                    if a.reference.is_some() || a.digest.is_some() {
                        bail!("{at}: fields `reference`/`digest` are only for kind = \"image\"");
                    }
                    if a.source == REGISTRY_SOURCE {
                        bail!("{at}: field `source`: \"registry\" is only for kind = \"image\"");
                    }
                }
            }
            if let Some(s) = &a.sha256 {
                if s != "locked" {
                    check_hex_sha256(s).with_context(|| format!("{at}: field `sha256`"))?;
                }
            }
        }
        if let Some(s) = &self.base.sha256 {
            if s != "locked" {
                check_hex_sha256(s).context("base: field `sha256`")?;
            }
        }
        for (i, f) in self.files.iter().enumerate() {
            check_abs_path(&f.path).with_context(|| format!("file[{i}]: field `path`"))?;
            if let Some(m) = &f.mode {
                parse_mode(m).with_context(|| format!("file[{i}] `{}`: field `mode`", f.path))?;
            }
        }
        if let Some(k) = &self.kernel {
            match (&k.path, &k.artifact) {
                (Some(_), Some(_)) | (None, None) => {
                    bail!("kernel: set exactly one of `path` and `artifact`")
                }
                (None, Some(a)) => {
                    let art = self.artifacts.iter().find(|x| &x.name == a);
                    match art {
                        Some(x) if x.kind == ArtifactKind::File => {}
                        Some(_) => bail!(
                            "kernel: field `artifact`: `{a}` is not a kind = \"file\" artifact"
                        ),
                        None => bail!("kernel: field `artifact`: no artifact named `{a}`"),
                    }
                }
                (Some(p), None) => check_abs_path(p).context("kernel: field `path`")?,
            }
        }
        if self.outputs.formats.contains(&OutputFormat::Pxe) && self.kernel.is_none() {
            bail!("outputs: `pxe` needs a [kernel] section");
        }
        if self.outputs.formats.contains(&OutputFormat::Disk) {
            if self.kernel.is_none() {
                bail!("outputs: `disk` needs a [kernel] section");
            }
            self.outputs.disk.validate()?;
        }
        if !(1..=9).contains(&self.outputs.gzip_level) {
            bail!("outputs: field `gzip_level` must be 1..=9");
        }
        if let Some(m) = &self.kubernetes.cni_manifest {
            if !self.artifacts.iter().any(|a| &a.name == m) {
                bail!("kubernetes: field `cni_manifest`: no artifact named `{m}`");
            }
        }
        let v = &self.kubernetes.version;
        let parts: Vec<&str> = v.trim_start_matches('v').split('.').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.parse::<u32>().is_err()) {
            bail!("kubernetes: field `version`: `{v}` is not MAJOR.MINOR.PATCH");
        }
        let k = &self.kubernetes;
        for (field, repo) in [
            ("image_repository", &k.image_repository),
            ("cni_image_repository", &k.cni_image_repository),
        ] {
            if let Some(r) = repo {
                crate::registry::ImageRef::parse(&format!("{r}/x:1")).with_context(|| {
                    format!("kubernetes: field `{field}`: `{r}` is not a repository")
                })?;
            }
        }
        if let Some(v) = &k.cni_version {
            if v.is_empty() || v.contains(char::is_whitespace) {
                bail!("kubernetes: field `cni_version`: `{v}` is not a version");
            }
        }
        if k.images == ImagesMode::Auto {
            for img in
                crate::kubeadm_images::resolve(self).context("kubernetes: images = \"auto\"")?
            {
                if self.artifacts.iter().any(|a| a.name == img.name) {
                    bail!(
                        "kubernetes: images = \"auto\" adds artifact `{}`, which the spec also declares (remove one)",
                        img.name
                    );
                }
            }
        }
        for p in &self.profiles {
            if p.is_empty() || p.contains('/') {
                bail!("field `profiles`: `{p}` is not a profile name");
            }
        }
        Ok(())
    }

    /// The build timestamp: `SOURCE_DATE_EPOCH` if set, else the spec's
    /// `source_date_epoch`, else 0.
    pub fn mtime(&self) -> Result<u64> {
        if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
            return v
                .trim()
                .parse()
                .with_context(|| format!("SOURCE_DATE_EPOCH=`{v}` is not a number"));
        }
        Ok(self.source_date_epoch.unwrap_or(0))
    }
}

impl LoadedSpec {
    /// Reads, parses and resolves a spec file. `lock` is the lock file path
    /// (default `SPEC.lock` beside the spec; a missing default is fine).
    pub fn load(path: &Path, lock: Option<&Path>) -> Result<LoadedSpec> {
        LoadedSpec::load_with(path, lock, false)
    }

    /// Like [`LoadedSpec::load`]; with `allow_unpinned` an input without a
    /// digest (or `"locked"` without a lock entry) resolves with
    /// `sha256: None` instead of failing (`nodebake fetch --pin`).
    pub fn load_with(path: &Path, lock: Option<&Path>, allow_unpinned: bool) -> Result<LoadedSpec> {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading spec {}", path.display()))?;
        let text = String::from_utf8(bytes.clone())
            .with_context(|| format!("{}: not UTF-8", path.display()))?;
        let mut spec = ImageSpec::parse(&text, &path.display().to_string())?;
        if spec.kubernetes.images == ImagesMode::Auto {
            let auto = crate::kubeadm_images::resolve(&spec)?;
            spec.artifacts
                .extend(auto.into_iter().map(|i| i.into_artifact()));
        }
        let digest = format!("sha256:{}", crate::hashio::sha256_hex(&bytes));
        let dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let dir = std::fs::canonicalize(&dir).with_context(|| format!("{}", dir.display()))?;
        let repo_root = find_repo_root(&dir);
        let default_lock = PathBuf::from(format!("{}.lock", path.display()));
        let locked = match lock {
            Some(p) => read_lock(p)?,
            None if default_lock.exists() => read_lock(&default_lock)?,
            None => BTreeMap::new(),
        };
        let ctx = ResolveCtx {
            dir: &dir,
            repo_root: repo_root.as_deref(),
            locked: &locked,
            allow_unpinned,
        };
        let mut inputs = Vec::new();
        inputs.push(resolve_input(
            "base",
            &spec.base.source,
            spec.base.sha256.as_deref(),
            None,
            &ctx,
        )?);
        for a in &spec.artifacts {
            let inp = if a.source == REGISTRY_SOURCE {
                resolve_registry_input(a, &ctx)?
            } else {
                resolve_input(&a.name, &a.source, a.sha256.as_deref(), Some(a.kind), &ctx)?
            };
            inputs.push(inp);
        }
        Ok(LoadedSpec {
            spec,
            path: path.to_path_buf(),
            digest,
            dir,
            repo_root,
            inputs,
        })
    }

    /// The artifact spec of a named input.
    pub fn artifact(&self, name: &str) -> Option<&Artifact> {
        self.spec.artifacts.iter().find(|a| a.name == name)
    }
}

/// Reads and checks a lock file, by input name.
pub fn read_lock(p: &Path) -> Result<BTreeMap<String, LockedInput>> {
    let text =
        std::fs::read_to_string(p).with_context(|| format!("reading lock file {}", p.display()))?;
    let lock: LockFile =
        toml::from_str(&text).map_err(|e| anyhow!("lock file {}: {e}", p.display()))?;
    if lock.lock_version != 1 {
        bail!(
            "lock file {}: field `lock_version`: unsupported version {}",
            p.display(),
            lock.lock_version
        );
    }
    let mut m = BTreeMap::new();
    for i in lock.inputs {
        check_hex_sha256(&i.sha256).with_context(|| {
            format!(
                "lock file {}: input `{}`: field `sha256`",
                p.display(),
                i.name
            )
        })?;
        if let Some(d) = &i.digest {
            check_digest(d).with_context(|| {
                format!(
                    "lock file {}: input `{}`: field `digest`",
                    p.display(),
                    i.name
                )
            })?;
        }
        m.insert(i.name.clone(), i);
    }
    Ok(m)
}

fn find_repo_root(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .take(64)
        .find(|d| d.join(".git").exists())
        .map(Path::to_path_buf)
}

/// Expands `${VAR}` from the environment; an unset variable is an error.
pub fn expand_env(s: &str) -> Result<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let j = after
            .find('}')
            .ok_or_else(|| anyhow!("unterminated `${{` in `{s}`"))?;
        let var = &after[..j];
        let val = std::env::var(var)
            .map_err(|_| anyhow!("environment variable `{var}` used in `{s}` is not set"))?;
        out.push_str(&val);
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

struct ResolveCtx<'a> {
    dir: &'a Path,
    repo_root: Option<&'a Path>,
    locked: &'a BTreeMap<String, LockedInput>,
    allow_unpinned: bool,
}

/// A `source = "registry"` image: the archive digest comes from the spec's
/// `sha256` or the lock, the manifest digest from the spec or the lock
/// (they must agree when both are given).
fn resolve_registry_input(a: &Artifact, ctx: &ResolveCtx) -> Result<InputRef> {
    let what = format!("artifact `{}`", a.name);
    let reference = a.reference.clone().unwrap_or_default();
    let lock = ctx.locked.get(&a.name);
    if let Some(l) = lock {
        if l.source != reference {
            bail!(
                "{what}: the lock file pins `{}`, the spec asks for `{reference}` (run `nodebake fetch --pin`)",
                l.source
            );
        }
    }
    let lock_digest = lock.and_then(|l| l.digest.clone());
    let digest = match (&a.digest, &lock_digest) {
        (Some(s), Some(l)) if s != l => {
            bail!("{what}: field `digest` ({s}) disagrees with the lock file ({l})")
        }
        (Some(s), _) => Some(s.clone()),
        (None, l) => l.clone(),
    };
    let from_lock = lock.map(|l| l.sha256.clone());
    let sha = match a.sha256.as_deref() {
        Some("locked") | None => from_lock,
        Some(s) => {
            if let Some(l) = &from_lock {
                if !l.eq_ignore_ascii_case(s) {
                    bail!("{what}: field `sha256` ({s}) disagrees with the lock file ({l})");
                }
            }
            Some(s.to_ascii_lowercase())
        }
    };
    if sha.is_none() && !ctx.allow_unpinned {
        bail!(
            "{what}: image `{reference}` is not pinned: no lock entry (run `nodebake fetch --pin`)"
        );
    }
    Ok(InputRef {
        name: a.name.clone(),
        source_text: reference.clone(),
        source: Source::Registry { reference, digest },
        sha256: sha,
        kind: Some(ArtifactKind::Image),
    })
}

fn resolve_input(
    name: &str,
    source_text: &str,
    sha256: Option<&str>,
    kind: Option<ArtifactKind>,
    ctx: &ResolveCtx,
) -> Result<InputRef> {
    let (dir, repo_root, locked) = (ctx.dir, ctx.repo_root, ctx.locked);
    let what = if name == "base" {
        "base".to_string()
    } else {
        format!("artifact `{name}`")
    };
    let expanded = expand_env(source_text).with_context(|| format!("{what}: field `source`"))?;
    let source = if expanded.starts_with("http://") || expanded.starts_with("https://") {
        Source::Url(expanded)
    } else if expanded.contains("://") {
        bail!("{what}: field `source`: unsupported URL scheme in `{expanded}`");
    } else {
        Source::Path(dir.join(&expanded))
    };
    let from_lock = locked.get(name).map(|l| l.sha256.clone());
    let sha = match sha256 {
        Some("locked") if ctx.allow_unpinned => from_lock,
        Some("locked") => Some(from_lock.ok_or_else(|| {
            anyhow!("{what}: field `sha256` = \"locked\" but no lock file pins `{name}` (run `nodebake fetch --pin` or pass --lock)")
        })?),
        Some(s) => {
            if let Some(l) = &from_lock {
                if !l.eq_ignore_ascii_case(s) {
                    bail!("{what}: field `sha256` ({s}) disagrees with the lock file ({l})");
                }
            }
            Some(s.to_ascii_lowercase())
        }
        None => from_lock,
    };
    if sha.is_none() {
        let in_repo = match (&source, repo_root) {
            (Source::Path(p), Some(root)) => std::fs::canonicalize(p)
                .map(|c| c.starts_with(root))
                .unwrap_or(false),
            _ => false,
        };
        let is_dir = matches!(&source, Source::Path(p) if p.is_dir());
        if !in_repo && !is_dir && !ctx.allow_unpinned {
            bail!("{what}: field `sha256` is required for `{source_text}` (it is not inside the spec's repository)");
        }
    }
    Ok(InputRef {
        name: name.to_string(),
        source_text: source_text.to_string(),
        source,
        sha256: sha,
        kind,
    })
}

/// Parses an octal mode string (`"0755"`).
pub fn parse_mode(m: &str) -> Result<u32> {
    let v = u32::from_str_radix(m.trim_start_matches("0o"), 8)
        .map_err(|_| anyhow!("`{m}` is not an octal mode"))?;
    if v > 0o7777 {
        bail!("`{m}` has bits outside 07777");
    }
    Ok(v)
}

fn check_abs_path(p: &str) -> Result<()> {
    if !p.starts_with('/') {
        bail!("`{p}` must be an absolute path");
    }
    if p.split('/').any(|c| c == "..") {
        bail!("`{p}` must not contain `..`");
    }
    Ok(())
}

/// Checks a 64-digit lowercase or uppercase hex sha256.
pub fn check_hex_sha256(s: &str) -> Result<()> {
    if s.len() != 64 || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("`{s}` is not a sha256 (64 hex digits)");
    }
    Ok(())
}

/// Checks a `sha256:<64 hex>` digest.
pub fn check_digest(d: &str) -> Result<()> {
    let hex = d
        .strip_prefix("sha256:")
        .ok_or_else(|| anyhow!("`{d}` must start with `sha256:`"))?;
    check_hex_sha256(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
spec_version = 1
name = "t"
version = "1"
arch = "x86_64"
[base]
source = "base.tar"
[kubernetes]
version = "1.31.0"
[outputs]
formats = ["rootfs"]
"#;

    #[test]
    fn minimal_spec_parses() {
        let s = ImageSpec::parse(MIN, "t.toml").unwrap();
        assert_eq!(s.outputs.formats, vec![OutputFormat::Rootfs]);
    }

    #[test]
    fn unknown_field_is_named() {
        let e = ImageSpec::parse(&format!("{MIN}\nbogus = 1\n"), "t.toml").unwrap_err();
        assert!(format!("{e:#}").contains("bogus"), "{e:#}");
    }

    #[test]
    fn unsupported_version_is_named() {
        let e = ImageSpec::parse(
            &MIN.replace("spec_version = 1", "spec_version = 7"),
            "t.toml",
        )
        .unwrap_err();
        let s = format!("{e:#}");
        assert!(s.contains("spec_version") && s.contains('7'), "{s}");
    }

    #[test]
    fn bad_digest_mode_and_dest_are_named() {
        let art = |extra: &str| {
            format!("{MIN}\n[[artifact]]\nname = \"a\"\nsource = \"a\"\nkind = \"file\"\n{extra}\n")
        };
        let e = ImageSpec::parse(&art("sha256 = \"abc\""), "t").unwrap_err();
        assert!(format!("{e:#}").contains("sha256"));
        let e = ImageSpec::parse(&art("mode = \"999\""), "t").unwrap_err();
        assert!(format!("{e:#}").contains("mode"));
        let e = ImageSpec::parse(&art("dest = \"rel/path\""), "t").unwrap_err();
        assert!(format!("{e:#}").contains("dest"));
        let e = ImageSpec::parse(&art("reference = \"x\""), "t").unwrap_err();
        assert!(format!("{e:#}").contains("reference"));
    }

    #[test]
    fn env_expansion() {
        std::env::set_var("NODEBAKE_TEST_X", "/cache");
        assert_eq!(
            expand_env("${NODEBAKE_TEST_X}/a.deb").unwrap(),
            "/cache/a.deb"
        );
        assert!(expand_env("${NODEBAKE_TEST_UNSET_Y}/a")
            .unwrap_err()
            .to_string()
            .contains("NODEBAKE_TEST_UNSET_Y"));
    }
}

#[cfg(test)]
mod shipped_specs {
    use super::*;

    /// Every spec in images/ parses and validates, and every digest in it is
    /// either a real sha256 or explicitly deferred to a lock file.
    #[test]
    fn shipped_specs_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().map(|x| x == "toml").unwrap_or(false) {
                let text = std::fs::read_to_string(&p).unwrap();
                let spec = ImageSpec::parse(&text, &p.display().to_string()).unwrap();
                assert!(!spec.artifacts.is_empty(), "{}", p.display());
                n += 1;
            }
        }
        assert!(
            n >= 3,
            "demo, el7 and el9 specs expected in {}",
            dir.display()
        );
    }
}
