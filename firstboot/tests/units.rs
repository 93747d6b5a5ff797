//! The systemd units baked into every image (first boot, the bootstrap
//! token keep-alive service and its timer) as the real `systemd-analyze
//! verify` sees them inside a root that has them at their image paths, the
//! agent binary they start, and the host's targets.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::require;
use nodebake_contract::layout;

fn put(root: &Path, abs: &str, content: &str, mode: u32) {
    let p = root.join(abs.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `systemd-analyze verify --root=ROOT UNITS`: its complaints (empty when
/// it has none; it exits 0 on some of them).
fn verify(root: &Path, units: &[&str]) -> String {
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(units)
        .output()
        .unwrap();
    let mut s = String::from_utf8_lossy(&o.stderr).into_owned();
    s += &String::from_utf8_lossy(&o.stdout);
    if !o.status.success() {
        s += &format!("\n(exit {})", o.status);
    }
    s
}

#[test]
fn baked_units_verify_clean_and_the_timers_run_the_agent() {
    if !require("units", &["systemd-analyze"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    // The targets the units are ordered against, as the host ships them.
    for dir in ["/usr/lib/systemd/system", "/lib/systemd/system"] {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".target") && e.path().is_file() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                put(
                    root,
                    &format!("/usr/lib/systemd/system/{name}"),
                    &text,
                    0o644,
                );
            }
        }
    }
    put(root, layout::FIRSTBOOT_BIN, "#!/bin/sh\nexit 0\n", 0o755);
    put(
        root,
        layout::FIRSTBOOT_UNIT,
        &layout::firstboot_unit(),
        0o644,
    );
    put(
        root,
        layout::KEEP_TOKEN_UNIT,
        &layout::keep_token_service(),
        0o644,
    );
    put(
        root,
        layout::KEEP_TOKEN_TIMER,
        &layout::keep_token_timer(),
        0o644,
    );
    put(
        root,
        layout::RECONCILE_UNIT,
        &layout::reconcile_service(),
        0o644,
    );
    put(
        root,
        layout::RECONCILE_TIMER,
        &layout::reconcile_timer(),
        0o644,
    );
    put(
        root,
        layout::STATE_DISK_UNIT,
        &layout::state_disk_unit(),
        0o644,
    );
    // A kubelet unit as packages ship it, with the baked drop-in.
    put(root, "/usr/bin/kubelet", "#!/bin/sh\nexit 0\n", 0o755);
    put(
        root,
        "/usr/lib/systemd/system/kubelet.service",
        "[Unit]\nDescription=kubelet\n\n[Service]\nExecStart=/usr/bin/kubelet\nRestart=always\n\n[Install]\nWantedBy=multi-user.target\n",
        0o644,
    );
    put(
        root,
        layout::KUBELET_STATE_DROPIN,
        &layout::kubelet_state_dropin(),
        0o644,
    );
    let units = [
        layout::FIRSTBOOT_UNIT,
        layout::KEEP_TOKEN_UNIT,
        layout::KEEP_TOKEN_TIMER,
        layout::RECONCILE_UNIT,
        layout::RECONCILE_TIMER,
        layout::STATE_DISK_UNIT,
        "/usr/lib/systemd/system/kubelet.service",
    ];
    let out = verify(root, &units);
    assert!(out.trim().is_empty(), "systemd-analyze verify: {out}");

    // The check can fail: a broken timer value is reported.
    let broken =
        layout::keep_token_timer().replace("OnUnitActiveSec=1h", "OnUnitActiveSec=1 fortnight");
    put(root, layout::KEEP_TOKEN_TIMER, &broken, 0o644);
    let out = verify(root, &[layout::KEEP_TOKEN_TIMER]);
    assert!(
        out.contains("OnUnitActiveSec") || out.contains("timer value"),
        "{out}"
    );

    // What the timer starts: the agent's keep-token, only on a node whose
    // first boot completed and that has the admin kubeconfig (a master).
    let svc = layout::keep_token_service();
    assert!(
        svc.contains(&format!("ExecStart={} keep-token\n", layout::FIRSTBOOT_BIN)),
        "{svc}"
    );
    assert!(svc.contains(&format!("ConditionPathExists={}\n", layout::FIRSTBOOT_DONE)));
    assert!(svc.contains("ConditionPathExists=/etc/kubernetes/admin.conf\n"));
    let timer = layout::keep_token_timer();
    assert!(timer.contains("WantedBy=timers.target"), "{timer}");
    let svc = layout::reconcile_service();
    assert!(
        svc.contains(&format!("ExecStart={} reconcile\n", layout::FIRSTBOOT_BIN)),
        "{svc}"
    );
    assert!(svc.contains(&format!("ConditionPathExists={}\n", layout::FIRSTBOOT_DONE)));
    assert!(layout::reconcile_timer().contains("WantedBy=timers.target"));

    // The state disk: only with `nodebake.state=` on the command line,
    // before the agent and the kubelet, both of which require it.
    let state = layout::state_disk_unit();
    assert!(
        state.contains("ConditionKernelCommandLine=nodebake.state\n"),
        "{state}"
    );
    assert!(
        state.contains(&format!("ExecStart={} state-disk\n", layout::FIRSTBOOT_BIN)),
        "{state}"
    );
    let fb = layout::firstboot_unit();
    assert!(fb.contains("Requires=nodebake-state.service\n"), "{fb}");
    let o = Command::new("systemd-analyze")
        .arg(format!("--root={}", root.display()))
        .args([
            "cat-config",
            "systemd/system/kubelet.service.d/05-nodebake-state.conf",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("After=nodebake-state.service"),
        "the drop-in is where systemd reads it: {text} {}",
        String::from_utf8_lossy(&o.stderr)
    );
}
