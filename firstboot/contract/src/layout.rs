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
/// The bootstrap token keep-alive service (`nodebake-firstboot keep-token`).
pub const KEEP_TOKEN_UNIT: &str = "/usr/lib/systemd/system/nodebake-keep-token.service";
/// The timer that starts [`KEEP_TOKEN_UNIT`].
pub const KEEP_TOKEN_TIMER: &str = "/usr/lib/systemd/system/nodebake-keep-token.timer";
/// Unit name of the keep-alive timer (enabled in every image).
pub const KEEP_TOKEN_TIMER_NAME: &str = "nodebake-keep-token.timer";
/// The reconcile service (`nodebake-firstboot reconcile`).
pub const RECONCILE_UNIT: &str = "/usr/lib/systemd/system/nodebake-reconcile.service";
/// The timer that starts [`RECONCILE_UNIT`].
pub const RECONCILE_TIMER: &str = "/usr/lib/systemd/system/nodebake-reconcile.timer";
/// Unit name of the reconcile timer (enabled in every image).
pub const RECONCILE_TIMER_NAME: &str = "nodebake-reconcile.timer";
/// The state disk service (`nodebake-firstboot state-disk`).
pub const STATE_DISK_UNIT: &str = "/usr/lib/systemd/system/nodebake-state.service";
/// Unit name of the state disk service (enabled in every image; it runs
/// only when the kernel command line names a state disk).
pub const STATE_DISK_UNIT_NAME: &str = "nodebake-state.service";
/// The kubelet drop-in that orders the kubelet after the state disk.
pub const KUBELET_STATE_DROPIN: &str =
    "/usr/lib/systemd/system/kubelet.service.d/05-nodebake-state.conf";
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
Requires={state}
After=network-online.target containerd.service systemd-hostnamed.service {state}
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
        bin = FIRSTBOOT_BIN,
        state = STATE_DISK_UNIT_NAME,
    )
}

/// The state disk service ([`crate::state_disk`]): on a kernel command
/// line with `nodebake.state=DEV`, formats DEV when blank, mounts it and
/// bind-mounts kubeadm's, etcd's and the kubelet's directories from it,
/// before the first-boot agent and the kubelet start (both require it:
/// when the disk cannot be used, neither runs, rather than a master
/// starting over in RAM). Without the parameter the unit is skipped.
pub fn state_disk_unit() -> String {
    format!(
        "[Unit]
Description=nodebake: mount this node's state disk (kernel command line {param}=)
Documentation=https://github.com/nodebake/nodebake
DefaultDependencies=no
ConditionKernelCommandLine={param}
Wants=systemd-udev-trigger.service
After=systemd-udev-trigger.service systemd-remount-fs.service
Before=local-fs.target {FIRSTBOOT_UNIT_NAME} kubelet.service
Conflicts=shutdown.target
Before=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={FIRSTBOOT_BIN} state-disk
TimeoutStartSec=10min
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=local-fs.target
",
        param = crate::state_disk::CMDLINE_PARAM,
    )
}

/// The kubelet drop-in: a kubelet started before the state disk is
/// mounted would write its state into RAM under the mount.
pub fn kubelet_state_dropin() -> String {
    format!("[Unit]\nRequires={STATE_DISK_UNIT_NAME}\nAfter={STATE_DISK_UNIT_NAME}\n")
}

/// A oneshot service running `nodebake-firstboot <command>` once first
/// boot completed (and every path in `also` exists).
fn agent_service(description: &str, command: &str, also: &[&str]) -> String {
    let mut conditions = format!("ConditionPathExists={FIRSTBOOT_DONE}\n");
    for p in also {
        conditions += &format!("ConditionPathExists={p}\n");
    }
    format!(
        "[Unit]
Description=nodebake: {description}
Documentation=https://github.com/nodebake/nodebake
After=network-online.target {FIRSTBOOT_UNIT_NAME}
{conditions}
[Service]
Type=oneshot
ExecStart={FIRSTBOOT_BIN} {command}
TimeoutStartSec=30min
"
    )
}

/// A timer enabled in `timers.target`: `on_boot` after boot, then every
/// `every`, spread over `spread` so nodes do not all act at once.
fn timer(description: &str, on_boot: &str, every: &str, spread: &str) -> String {
    format!(
        "[Unit]
Description=nodebake: {description}
Documentation=https://github.com/nodebake/nodebake

[Timer]
OnBootSec={on_boot}
OnUnitActiveSec={every}
RandomizedDelaySec={spread}

[Install]
WantedBy=timers.target
"
    )
}

/// The bootstrap token keep-alive service: on a master whose first boot
/// completed (its admin kubeconfig exists), `nodebake-firstboot keep-token`
/// re-creates the pre-generated token when the cluster no longer has it
/// (expired after its TTL, or deleted), so a node rebuilt months later
/// still joins with its original metadata. Skipped on workers and before
/// first boot completes; the role profile's `keep_bootstrap_token = false`
/// makes it a no-op.
pub fn keep_token_service() -> String {
    agent_service(
        "keep the pre-generated bootstrap token present (masters)",
        "keep-token",
        &["/etc/kubernetes/admin.conf"],
    )
}

/// The timer of [`keep_token_service`]: 15 minutes after boot, then every
/// hour (well inside the token's default 24 h TTL), spread over 10 minutes.
pub fn keep_token_timer() -> String {
    timer(
        "re-check the bootstrap token every hour (masters)",
        "15min",
        "1h",
        "10min",
    )
}

/// The reconcile service: once first boot completed, `nodebake-firstboot
/// reconcile` brings the hosts block, haproxy backends, keepalived peers
/// and (masters) etcd members in line with the node's current metadata.
pub fn reconcile_service() -> String {
    agent_service(
        "converge this node with its current metadata (hosts, load balancer, etcd members)",
        "reconcile",
        &[],
    )
}

/// The timer of [`reconcile_service`]: 5 minutes after boot, then every
/// 15 minutes (spread over 2), so a membership change published in the
/// metadata (e.g. by `nodebake serve`) reaches every node without a reboot.
pub fn reconcile_timer() -> String {
    timer(
        "converge this node with its metadata every 15 minutes",
        "5min",
        "15min",
        "2min",
    )
}
