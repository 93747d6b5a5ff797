//! Property test against the real consumers: node metadata with generated
//! values, valid and hostile (keepalived syntax, quotes, backslashes,
//! control characters, systemd specifiers, path components, non-ASCII),
//! for the interface, VRRP password, image repository, registry mirrors
//! and component flags. Every configuration the contract accepts renders
//! files that `keepalived -t`, `haproxy -c`, a TOML parser, `systemd-analyze
//! verify` and the real `kubeadm config validate` (v1.28.7) accept, with
//! the values read back unchanged; every refused one names its field.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixture, require, require_root, text};
use nodebake_contract::node::{parse_meta_data, parse_user_data, NodeConfig, Secret};
use nodebake_firstboot::kubeadm::config::{render_kubeadm_config, RenderOptions};
use nodebake_firstboot::steps::containerd;
use nodebake_firstboot::steps::load_balancer::{haproxy, keepalived};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Strings drawn from what a careless operator or an attacker would type.
fn hostile() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "}",
        "{",
        "\"",
        "'",
        "#",
        "!",
        ";",
        " ",
        "\t",
        "\n",
        "\r",
        "\u{b}",
        "\\",
        "%h",
        "$(reboot)",
        "..",
        ".",
        "/",
        ":",
        "@",
        "é",
        "x",
        "eth0",
        "a-b",
        "_",
        "0",
        "[x]",
        "= ",
        "]",
    ]);
    prop::collection::vec(pieces, 1..5).prop_map(|v| v.concat())
}

#[derive(Debug, Clone)]
struct Values {
    interface: String,
    vrrp_password: String,
    image_repository: String,
    mirror_host: String,
    mirror_url: String,
    etcd_flag_value: String,
}

/// Plausible values for every field; in half the cases one field (any)
/// gets a hostile value instead.
fn values() -> impl Strategy<Value = Values> {
    let plausible = (
        "[a-z][a-z0-9]{0,6}(\\.[0-9]{1,3})?",
        "[A-Za-z0-9$%&*+,./:;<=>?@^_|~()\\[\\]-]{1,8}",
        "[a-z0-9]{1,8}\\.(io|com)(/[a-z0-9]{1,6}([._-][a-z0-9]{1,4})?){0,2}",
        "[a-z0-9]{1,8}\\.(io|local)(:[1-9][0-9]{1,3})?",
        "https?://[a-z]{1,8}\\.example(/[a-z0-9._~-]{0,8})?",
        "[0-9a-z=,.-]{1,10}",
    );
    (plausible, prop::option::of((0..6usize, hostile()))).prop_map(
        |((interface, vrrp_password, image_repository, mirror_host, mirror_url, etcd), bad)| {
            let mut v = Values {
                interface,
                vrrp_password,
                image_repository,
                mirror_host,
                mirror_url,
                etcd_flag_value: etcd,
            };
            if let Some((i, s)) = bad {
                *[
                    &mut v.interface,
                    &mut v.vrrp_password,
                    &mut v.image_repository,
                    &mut v.mirror_host,
                    &mut v.mirror_url,
                    &mut v.etcd_flag_value,
                ][i] = s;
            }
            v
        },
    )
}

fn kubeadm() -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kubernetes-bin.sh");
    let o = Command::new(script).output().ok()?;
    if !o.status.success() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "real Kubernetes binaries are required in CI: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        eprintln!("SKIPPED hostile_values: no real Kubernetes binaries");
        return None;
    }
    Some(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("kubeadm"))
}

#[test]
fn every_accepted_value_renders_files_the_real_consumers_accept() {
    if !require_root("hostile_values")
        || !require(
            "hostile_values",
            &["keepalived", "haproxy", "unshare", "ip", "systemd-analyze"],
        )
    {
        return;
    }
    let Some(kubeadm) = kubeadm() else { return };
    let dir = fixture("k8s-master1");
    let meta = parse_meta_data(&std::fs::read_to_string(dir.join("meta-data")).unwrap()).unwrap();
    let base = parse_user_data(&std::fs::read_to_string(dir.join("user-data")).unwrap()).unwrap();
    let t = tempfile::tempdir().unwrap();
    let script = t.path().join("check.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    // keepalived.service as Debian ships it, for the drop-in.
    let units = t.path().join("units");
    std::fs::create_dir_all(units.join("keepalived.service.d")).unwrap();
    std::fs::write(
        units.join("keepalived.service"),
        "[Unit]\nDescription=keepalived\n[Service]\nType=simple\nExecStart=/usr/sbin/keepalived --dont-fork\n",
    )
    .unwrap();

    let (accepted, refused) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&values(), |v| {
            let mut s = base.clone();
            s.interface = v.interface.clone();
            s.secrets.vrrp_password = Some(Secret::new(v.vrrp_password.clone()));
            s.image_repository = v.image_repository.clone();
            s.registry_mirrors =
                [(v.mirror_host.clone(), vec![v.mirror_url.clone()])].into_iter().collect();
            s.kubernetes_version = "1.28.7".into();
            s.kubeadm
                .extra_args
                .etcd
                .insert("heartbeat-interval".into(), v.etcd_flag_value.clone());
            let node = match NodeConfig::from_parts(&meta, &s) {
                Ok(n) => n,
                Err(e) => {
                    refused.set(refused.get() + 1);
                    let e = e.to_string();
                    prop_assert!(
                        [
                            "interface",
                            "vrrp_password",
                            "image_repository",
                            "registry_mirrors",
                            "extra_args"
                        ]
                        .iter()
                        .any(|f| e.contains(f)),
                        "refused without naming a field: {e}"
                    );
                    prop_assert!(!e.contains('\r') && !e.contains('\u{b}'), "{e:?}");
                    return Ok(());
                }
            };
            accepted.set(accepted.get() + 1);

            // keepalived and haproxy, in a namespace that has the interface.
            let k = keepalived::render_config(&node, script.to_str().unwrap());
            let h = haproxy::render_config(&node, haproxy::CA_FILE);
            let kc = t.path().join("k.conf");
            let hc = t.path().join("h.cfg");
            std::fs::write(&kc, &k).unwrap();
            std::fs::set_permissions(&kc, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::fs::write(&hc, &h).unwrap();
            let o = Command::new("unshare")
                .args(["--net", "sh", "-c"])
                .arg(
                    "ip link add name \"$1\" type veth peer name nbpeer && ip link set dev \"$1\" up && \
                     ip link set lo up && keepalived -t -f \"$2\" && haproxy -c -q -f \"$3\"",
                )
                .args(["sh", &node.interface])
                .arg(&kc)
                .arg(&hc)
                .output()
                .unwrap();
            prop_assert!(o.status.success(), "keepalived/haproxy refuse {v:?}: {}\n{k}", text(&o));
            prop_assert!(
                k.contains(&format!("auth_pass {}\n", v.vrrp_password))
                    && k.contains(&format!("interface {}\n", v.interface)),
                "{k}"
            );

            // The drop-in, as systemd reads it.
            let d = keepalived::render_dropin(&node);
            std::fs::write(units.join("keepalived.service.d/10-nodebake.conf"), &d).unwrap();
            let o = Command::new("systemd-analyze")
                .args(["verify", "--man=no"])
                .arg(units.join("keepalived.service"))
                .env("SYSTEMD_UNIT_PATH", format!("{}:", units.display()))
                .output()
                .unwrap();
            let out = text(&o);
            prop_assert!(
                !out.contains("quoting") && !out.contains("10-nodebake.conf"),
                "systemd-analyze verify complains about the drop-in for {v:?}: {out}\n{d}"
            );

            // containerd's TOML, values read back unchanged.
            let pause = format!("{}/pause:3.9", v.image_repository);
            let c: toml::Table = toml::from_str(&containerd::render_config(&pause))
                .map_err(|e| TestCaseError::fail(format!("config.toml: {e}")))?;
            prop_assert_eq!(
                c["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"].as_str(),
                Some(pause.as_str())
            );
            let hosts: toml::Table =
                toml::from_str(&containerd::render_hosts_toml(&v.mirror_host, std::slice::from_ref(&v.mirror_url)))
                    .map_err(|e| TestCaseError::fail(format!("hosts.toml: {e}")))?;
            prop_assert!(hosts["host"].get(&v.mirror_url).is_some(), "{hosts:?}");
            prop_assert!(
                !v.mirror_host.contains(['/', '\n']) && v.mirror_host != ".." && v.mirror_host != ".",
                "a path component got through: {:?}",
                v.mirror_host
            );

            // kubeadm, the real one.
            let cfg = render_kubeadm_config(&node, &RenderOptions::for_node(&node))
                .map_err(|e| TestCaseError::fail(format!("render: {e:#}")))?;
            let f = t.path().join("kubeadm.yaml");
            std::fs::write(&f, &cfg).unwrap();
            let o = Command::new(&kubeadm)
                .args(["config", "validate", "--config"])
                .arg(&f)
                .output()
                .unwrap();
            prop_assert!(o.status.success(), "kubeadm refuses {v:?}: {}\n{cfg}", text(&o));
            Ok(())
        })
        .unwrap();
    let (accepted, refused) = (accepted.get(), refused.get());
    eprintln!("hostile_values: {accepted} accepted, {refused} refused");
    assert!(
        accepted >= 5 && refused >= 5,
        "{accepted} accepted, {refused} refused: the generator is off"
    );
}
