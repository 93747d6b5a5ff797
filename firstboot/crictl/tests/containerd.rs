//! The crictl binary against a real, private containerd (Debian's
//! containerd and runc, CRI plugin on): every command kubeadm 1.28 runs —
//! `info`, `info -o go-template --template {{.config.sandboxImage}}`,
//! `pods -q`, `stopp`, `rmp`, `pull`, `inspecti` — with the exit codes
//! kubeadm relies on, plus `images`, `ps`, `version`, the config file and
//! the environment. Images are made by scripts/mkimage.py and imported
//! with `ctr`; `pull` fetches from Debian's docker-registry on loopback.
//! Skipped with a printed reason when not root or a tool is missing,
//! except in CI (CI=true), where that fails.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use nodebake_crictl::endpoint::Endpoint;
use nodebake_crictl::grpc::Channel;
use serde_json::Value;
use support::{crictl, crictl_with, prerequisites, Containerd, Registry, SANDBOX_IMAGE};

/// Parses crictl's JSON output.
fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn kubeadm_runtime_checks_and_image_commands() {
    if !prerequisites(&["containerd", "runc", "ctr", "python3"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let containerd = Containerd::start(dir.path());

    // kubeadm's IsRunning: `crictl -r SOCK -i SOCK info`, exit 0.
    let info = crictl(&containerd, &["info"]);
    assert_eq!(info.code(), 0, "{}", info.stderr);
    let info = json(&info.stdout);
    let conditions = info["status"]["conditions"].as_array().expect("conditions");
    assert!(conditions
        .iter()
        .any(|c| c["type"] == "RuntimeReady" && c["status"] == true));
    assert_eq!(info["config"]["sandboxImage"], SANDBOX_IMAGE);
    assert!(info["golang"].is_string(), "{info}");

    // kubeadm's SandboxImage.
    let sandbox = crictl(
        &containerd,
        &[
            "-D=false",
            "info",
            "-o",
            "go-template",
            "--template",
            "{{.config.sandboxImage}}",
        ],
    );
    assert_eq!(sandbox.code(), 0, "{}", sandbox.stderr);
    assert_eq!(sandbox.stdout, format!("{SANDBOX_IMAGE}\n"));

    // kubeadm's ListKubeContainers on a fresh node: nothing.
    let pods = crictl(&containerd, &["-D=false", "pods", "-q"]);
    assert_eq!(
        (pods.code(), pods.stdout.as_str()),
        (0, ""),
        "{}",
        pods.stderr
    );

    // kubeadm's ImageExists for an absent image: exit 1.
    let missing = crictl(&containerd, &["inspecti", SANDBOX_IMAGE]);
    assert_eq!(missing.code(), 1);
    assert!(
        missing.stderr.contains("no such image"),
        "{}",
        missing.stderr
    );

    // An imported image is found by its reference and listed.
    let reference = "example.local/nodebake/hello:1";
    containerd.import(&support::small_image(dir.path(), reference));
    let found = crictl(&containerd, &["inspecti", reference]);
    assert_eq!(found.code(), 0, "{}", found.stderr);
    let found = json(&found.stdout);
    assert_eq!(found["status"]["repoTags"][0], reference);
    let id = found["status"]["id"]
        .as_str()
        .expect("image id")
        .to_string();
    assert!(id.starts_with("sha256:"), "{id}");
    assert!(
        found["status"]["size"].is_string(),
        "int64 as string: {found}"
    );
    assert!(found.get("info").is_some(), "verbose info: {found}");

    let images = crictl(&containerd, &["images"]);
    assert_eq!(images.code(), 0, "{}", images.stderr);
    let lines: Vec<&str> = images.stdout.lines().collect();
    assert!(
        lines[0].starts_with("IMAGE ") && lines[0].contains("IMAGE ID"),
        "{lines:?}"
    );
    let row: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with("example.local/nodebake/hello "))
        .expect("image row")
        .split_whitespace()
        .collect();
    assert_eq!(&row[..3], ["example.local/nodebake/hello", "1", &id[7..20]]);
    let quiet = crictl(&containerd, &["images", "-q"]);
    assert!(quiet.stdout.lines().any(|l| l == id), "{}", quiet.stdout);
    let templated = crictl(
        &containerd,
        &[
            "inspecti",
            "-o",
            "go-template",
            "--template",
            "{{.status.id}}",
            reference,
        ],
    );
    assert_eq!(templated.stdout, format!("{id}\n"));

    // Operators' commands.
    let version = crictl(&containerd, &["version"]);
    assert_eq!(version.code(), 0, "{}", version.stderr);
    assert!(
        version.stdout.contains("RuntimeName:  containerd\n"),
        "{}",
        version.stdout
    );
    assert!(
        version.stdout.contains("RuntimeApiVersion:  v1\n"),
        "{}",
        version.stdout
    );
    let ps = crictl(&containerd, &["ps", "-a"]);
    assert_eq!(ps.code(), 0, "{}", ps.stderr);
    assert!(ps.stdout.starts_with("CONTAINER "), "{}", ps.stdout);
    let ps_json = crictl(&containerd, &["ps", "-a", "-o", "json"]);
    assert_eq!(json(&ps_json.stdout), serde_json::json!({"containers": []}));
}

#[test]
fn endpoints_from_config_file_and_environment_and_errors() {
    if !prerequisites(&["containerd", "runc", "ctr"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let containerd = Containerd::start(dir.path());
    let endpoint = containerd.endpoint();

    let config = dir.path().join("crictl.yaml");
    std::fs::write(
        &config,
        format!("runtime-endpoint: {endpoint}\ntimeout: 5\ndebug: false\n"),
    )
    .unwrap();
    let from_file = crictl_with(&["-c", config.to_str().unwrap(), "version"], &[]);
    assert_eq!(from_file.code(), 0, "{}", from_file.stderr);
    assert!(from_file.stdout.contains("RuntimeName:  containerd"));

    let from_env = crictl_with(&["version"], &[("CONTAINER_RUNTIME_ENDPOINT", &endpoint)]);
    assert_eq!(from_env.code(), 0, "{}", from_env.stderr);
    let bare_path = crictl_with(
        &["-r", containerd.socket.to_str().unwrap(), "pods", "-q"],
        &[],
    );
    assert_eq!(bare_path.code(), 0, "{}", bare_path.stderr);

    // Errors name the RPC and the endpoint, and exit 1.
    let down = crictl_with(&["-r", "unix:///nonexistent/crictl-test.sock", "info"], &[]);
    assert_eq!(down.code(), 1);
    assert!(
        down.stderr.contains("runtime.v1.RuntimeService/Status"),
        "{}",
        down.stderr
    );
    assert!(
        down.stderr.contains("unix:///nonexistent/crictl-test.sock"),
        "{}",
        down.stderr
    );

    let unsupported = crictl(
        &containerd,
        &[
            "info",
            "-o",
            "go-template",
            "--template",
            "{{json .config}}",
        ],
    );
    assert_eq!(unsupported.code(), 1);
    assert!(
        unsupported.stderr.contains("supports only field paths"),
        "{}",
        unsupported.stderr
    );
    let missing_key = crictl(
        &containerd,
        &[
            "info",
            "-o",
            "go-template",
            "--template",
            "{{.config.nope}}",
        ],
    );
    assert_eq!(missing_key.code(), 1);
    assert!(
        missing_key
            .stderr
            .contains("map has no entry for key \"nope\""),
        "{}",
        missing_key.stderr
    );

    let stop_missing = crictl(&containerd, &["stopp", "0123456789abcdef"]);
    assert_eq!(stop_missing.code(), 1);
    assert!(
        stop_missing
            .stderr
            .contains("RuntimeService/StopPodSandbox"),
        "{}",
        stop_missing.stderr
    );
    assert!(
        stop_missing.stderr.contains("code = NotFound"),
        "{}",
        stop_missing.stderr
    );

    let bad_flag = crictl(&containerd, &["pods", "--bogus"]);
    assert_eq!(bad_flag.code(), 1);
}

/// Test-only CRI messages for RunPodSandbox (crictl has no `runp` here):
/// field numbers as in api.proto, only what a host-network pod needs.
mod runp {
    use std::collections::BTreeMap;

    /// `RunPodSandboxRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RunPodSandboxRequest {
        #[prost(message, optional, tag = "1")]
        pub config: Option<PodSandboxConfig>,
    }

    /// `RunPodSandboxResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RunPodSandboxResponse {
        #[prost(string, tag = "1")]
        pub pod_sandbox_id: String,
    }

    /// `PodSandboxConfig`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxConfig {
        #[prost(message, optional, tag = "1")]
        pub metadata: Option<nodebake_crictl::cri::PodSandboxMetadata>,
        #[prost(btree_map = "string, string", tag = "6")]
        pub labels: BTreeMap<String, String>,
        #[prost(message, optional, tag = "8")]
        pub linux: Option<LinuxPodSandboxConfig>,
    }

    /// `LinuxPodSandboxConfig`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LinuxPodSandboxConfig {
        #[prost(message, optional, tag = "2")]
        pub security_context: Option<LinuxSandboxSecurityContext>,
    }

    /// `LinuxSandboxSecurityContext`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LinuxSandboxSecurityContext {
        #[prost(message, optional, tag = "1")]
        pub namespace_options: Option<NamespaceOption>,
    }

    /// `NamespaceOption`; 2 is `NODE`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamespaceOption {
        #[prost(int32, tag = "1")]
        pub network: i32,
        #[prost(int32, tag = "2")]
        pub pid: i32,
        #[prost(int32, tag = "3")]
        pub ipc: i32,
    }

    /// `NamespaceMode.NODE`.
    pub const NODE: i32 = 2;
}

/// Runs a host-network pod sandbox through the CRI and returns its ID.
fn run_pod_sandbox(containerd: &Containerd, name: &str) -> String {
    use nodebake_crictl::cri::PodSandboxMetadata;
    let request = runp::RunPodSandboxRequest {
        config: Some(runp::PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "kube-system".into(),
                attempt: 0,
            }),
            labels: BTreeMap::from([("io.kubernetes.pod.name".into(), name.into())]),
            linux: Some(runp::LinuxPodSandboxConfig {
                security_context: Some(runp::LinuxSandboxSecurityContext {
                    namespace_options: Some(runp::NamespaceOption {
                        network: runp::NODE,
                        pid: 0,
                        ipc: 0,
                    }),
                }),
            }),
        }),
    };
    let endpoint = Endpoint::parse(&containerd.endpoint()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let response: runp::RunPodSandboxResponse = runtime
        .block_on(async {
            let mut channel = Channel::new(endpoint, Duration::from_secs(10), false);
            channel
                .unary(
                    "/runtime.v1.RuntimeService/RunPodSandbox",
                    &request,
                    Duration::from_secs(60),
                )
                .await
        })
        .unwrap_or_else(|e| panic!("RunPodSandbox failed: {e:#}\n{}", containerd.log_text()));
    response.pod_sandbox_id
}

#[test]
fn kubeadm_reset_stops_and_removes_pod_sandboxes() {
    if !prerequisites(&["containerd", "runc", "ctr", "python3", "ldd"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let containerd = Containerd::start(dir.path());
    containerd.import(&support::pause_image(dir.path(), SANDBOX_IMAGE));
    let pod = run_pod_sandbox(&containerd, "etcd-m1");

    // kubeadm's ListKubeContainers.
    let pods = crictl(&containerd, &["-D=false", "pods", "-q"]);
    assert_eq!(
        (pods.code(), pods.stdout.clone()),
        (0, format!("{pod}\n")),
        "{}",
        pods.stderr
    );
    let table = crictl(&containerd, &["pods"]);
    let row = table.stdout.lines().nth(1).expect("a pod row").to_string();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[0], &pod[..13]);
    assert!(
        row.contains(" Ready ") && row.contains("etcd-m1") && row.contains("kube-system"),
        "{row}"
    );
    assert!(row.ends_with("(default)"), "{row}");

    // crictl refuses to remove a running pod.
    let running = crictl(&containerd, &["rmp", &pod]);
    assert_eq!(running.code(), 1);
    assert!(
        running.stderr.contains("is running, please stop it first"),
        "{}",
        running.stderr
    );

    // kubeadm's RemoveContainers: stopp, then rmp.
    let stopped = crictl(&containerd, &["stopp", &pod]);
    assert_eq!(stopped.code(), 0, "{}", stopped.stderr);
    assert_eq!(stopped.stdout, format!("Stopped sandbox {pod}\n"));
    let table = crictl(&containerd, &["pods", "--no-trunc"]);
    assert!(
        table.stdout.contains(&pod) && table.stdout.contains("NotReady"),
        "{}",
        table.stdout
    );
    let removed = crictl(&containerd, &["rmp", &pod]);
    assert_eq!(removed.code(), 0, "{}", removed.stderr);
    assert_eq!(removed.stdout, format!("Removed sandbox {pod}\n"));

    let pods = crictl(&containerd, &["-D=false", "pods", "-q"]);
    assert_eq!(
        (pods.code(), pods.stdout.as_str()),
        (0, ""),
        "{}",
        pods.stderr
    );
}

#[test]
fn kubeadm_pulls_missing_images_from_a_registry() {
    if !prerequisites(&[
        "containerd",
        "runc",
        "ctr",
        "python3",
        "docker-registry",
        "skopeo",
    ]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path());
    let containerd = Containerd::start(dir.path());
    let archive = support::small_image(dir.path(), "example.local/nodebake/pulled:1");
    registry.push(&archive, "nodebake/pulled:1");
    let reference = format!("{}/nodebake/pulled:1", registry.address);

    // kubeadm: ImageExists (absent), then PullImage, then ImageExists.
    assert_eq!(crictl(&containerd, &["inspecti", &reference]).code(), 1);
    let pulled = crictl(&containerd, &["pull", &reference]);
    assert_eq!(pulled.code(), 0, "{}", pulled.stderr);
    let image_ref = pulled
        .stdout
        .strip_prefix("Image is up to date for ")
        .expect("crictl's pull message")
        .trim()
        .to_string();
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    let found = crictl(&containerd, &["inspecti", &reference]);
    assert_eq!(found.code(), 0, "{}", found.stderr);
    assert_eq!(json(&found.stdout)["status"]["id"], image_ref.as_str());

    let absent = crictl(
        &containerd,
        &["pull", &format!("{}/nodebake/absent:1", registry.address)],
    );
    assert_eq!(absent.code(), 1);
    assert!(
        absent.stderr.contains("runtime.v1.ImageService/PullImage"),
        "{}",
        absent.stderr
    );
}
