//! Paths inside a baked image. All are absolute paths in the image's root;
//! the builder and the agent join them onto whatever root they work on.
//!
//! Read-only, baked content lives under `/usr/lib/nodebake`; operator
//! overrides live under `/etc/nodebake`; state the agent writes lives under
//! `/var/lib/nodebake`.

/// Root of everything the builder bakes for the agent.
pub const LIB_DIR: &str = "/usr/lib/nodebake";
/// The first-boot agent binary (static, runs on every supported EL release).
pub const FIRSTBOOT_BIN: &str = "/usr/lib/nodebake/bin/nodebake-firstboot";
/// Convenience symlink on `$PATH` pointing at [`FIRSTBOOT_BIN`].
pub const FIRSTBOOT_BIN_LINK: &str = "/usr/bin/nodebake-firstboot";
/// Image metadata written by the builder ([`crate::image::ImageMetadata`]).
pub const IMAGE_METADATA: &str = "/usr/lib/nodebake/image.json";
/// Role profiles (`<name>.toml`, [`crate::profile::RoleProfile`]).
pub const PROFILES_DIR: &str = "/usr/lib/nodebake/profiles";
/// Container image archives (docker-archive or OCI archive) to import.
pub const IMAGES_DIR: &str = "/usr/lib/nodebake/images";
/// Kubernetes manifests baked for first boot (e.g. the CNI manifest).
pub const MANIFESTS_DIR: &str = "/usr/lib/nodebake/manifests";
/// The first-boot systemd unit.
pub const FIRSTBOOT_UNIT: &str = "/usr/lib/systemd/system/nodebake-firstboot.service";
/// Unit name of the first-boot service.
pub const FIRSTBOOT_UNIT_NAME: &str = "nodebake-firstboot.service";
/// Operator configuration directory.
pub const ETC_DIR: &str = "/etc/nodebake";
/// Local metadata override read when no other source yields.
pub const LOCAL_METADATA: &str = "/etc/nodebake/node.yaml";
/// Agent state directory (journal, marker).
pub const STATE_DIR: &str = "/var/lib/nodebake";
/// Marker written only after every first-boot step succeeded.
pub const FIRSTBOOT_DONE: &str = "/var/lib/nodebake/firstboot.done";
/// Journal of finished steps.
pub const STATE_JOURNAL: &str = "/var/lib/nodebake/state.json";

/// The first-boot unit as baked into every image. It runs once: only while
/// [`FIRSTBOOT_DONE`] is absent, after the network and containerd. It is
/// not ordered before the kubelet: `kubeadm init`/`join` run inside it and
/// `systemctl restart kubelet`, a job that would wait for this unit to
/// finish starting (a deadlock until kubeadm's own timeout). A kubelet
/// started earlier only waits for its configuration, restarting.
pub fn firstboot_unit() -> String {
    format!(
        "[Unit]
Description=nodebake first boot: configure this node and join the cluster
Documentation=https://github.com/nodebake/nodebake
Wants=network-online.target
After=network-online.target containerd.service systemd-hostnamed.service
ConditionPathExists=!{done}

[Service]
Type=notify
NotifyAccess=main
ExecStart={bin} run
RemainAfterExit=yes
TimeoutStartSec=1h
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
",
        done = FIRSTBOOT_DONE,
        bin = FIRSTBOOT_BIN
    )
}
