//! keepalived and haproxy as static pods in `/etc/kubernetes/manifests`
//! (the variant of kubeadm's HA guide): the kubelet runs them from the same
//! configuration files the host services would use, mounted read-only.

use nodebake_contract::node::NodeConfig;

use super::{haproxy, keepalived};

/// Directory the kubelet reads static pods from.
pub const MANIFESTS: &str = "/etc/kubernetes/manifests";
/// keepalived's static pod.
pub const KEEPALIVED_POD: &str = "/etc/kubernetes/manifests/keepalived.yaml";
/// haproxy's static pod.
pub const HAPROXY_POD: &str = "/etc/kubernetes/manifests/haproxy.yaml";

/// keepalived pod: host network, NET_ADMIN/NET_BROADCAST/NET_RAW, the
/// configuration and the track-script directory from the host.
pub fn render_keepalived_pod(node: &NodeConfig) -> String {
    format!(
        "# Managed by nodebake-firstboot.
apiVersion: v1
kind: Pod
metadata:
  name: keepalived
  namespace: kube-system
spec:
  hostNetwork: true
  priorityClassName: system-node-critical
  containers:
  - name: keepalived
    image: {image}
    args: [\"--copy-service\"]
    securityContext:
      capabilities:
        add: [NET_ADMIN, NET_BROADCAST, NET_RAW]
    volumeMounts:
    - name: config
      mountPath: /usr/local/etc/keepalived/keepalived.conf
      readOnly: true
    - name: scripts
      mountPath: {dir}
      readOnly: true
  volumes:
  - name: config
    hostPath:
      path: {conf}
      type: File
  - name: scripts
    hostPath:
      path: {dir}
      type: Directory
",
        image = node.load_balancer.keepalived_image,
        conf = keepalived::CONFIG,
        dir = keepalived::SCRIPT_DIR,
    )
}

/// haproxy pod: host network, liveness on the frontend port.
pub fn render_haproxy_pod(node: &NodeConfig) -> String {
    let ca = if node.load_balancer.verify_apiserver_ca {
        format!(
            "    - name: ca
      mountPath: {ca}
      readOnly: true
",
            ca = haproxy::CA_FILE
        )
    } else {
        String::new()
    };
    let ca_vol = if node.load_balancer.verify_apiserver_ca {
        format!(
            "  - name: ca
    hostPath:
      path: {ca}
      type: File
",
            ca = haproxy::CA_FILE
        )
    } else {
        String::new()
    };
    format!(
        "# Managed by nodebake-firstboot.
apiVersion: v1
kind: Pod
metadata:
  name: haproxy
  namespace: kube-system
spec:
  hostNetwork: true
  priorityClassName: system-node-critical
  containers:
  - name: haproxy
    image: {image}
    livenessProbe:
      tcpSocket:
        host: 127.0.0.1
        port: {port}
      periodSeconds: 5
      failureThreshold: 3
    volumeMounts:
    - name: config
      mountPath: /usr/local/etc/haproxy/haproxy.cfg
      readOnly: true
{ca}  volumes:
  - name: config
    hostPath:
      path: {conf}
      type: File
{ca_vol}",
        image = node.load_balancer.haproxy_image,
        port = node.endpoint.port,
        conf = haproxy::CONFIG,
    )
}
