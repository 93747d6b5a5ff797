//! The steps of first boot, in the order they run: the host steps, then
//! the kubeadm join path ([`kubeadm::join_steps`]).

pub mod chrony;
pub mod containerd;
pub mod firewalld;
pub mod hostname;
pub mod hosts;
pub mod kubeadm;
pub mod kubelet;
pub mod load_balancer;
pub mod modules;
pub mod network;
pub mod selinux;
pub mod state;
pub mod swap;
pub mod sysctl;
pub mod users;

use nodebake_contract::node::NodeConfig;
use nodebake_contract::profile::RoleProfile;

use crate::step::Step;

/// Every host-preparation step, in order: the address first (it checks
/// the image can apply network-config before anything changes), identity, then kernel
/// settings (modules before the sysctls that need them), then services;
/// on masters haproxy, then keepalived (its track script checks haproxy).
pub fn host_steps() -> Vec<Box<dyn Step>> {
    vec![
        Box::new(network::Network),
        Box::new(hostname::Hostname),
        Box::new(hosts::Hosts),
        Box::new(users::Users),
        Box::new(swap::Swap),
        Box::new(modules::KernelModules),
        Box::new(sysctl::Sysctl),
        Box::new(selinux::Selinux),
        Box::new(firewalld::Firewalld),
        Box::new(chrony::Chrony),
        Box::new(containerd::Containerd),
        Box::new(kubelet::Kubelet),
        Box::new(load_balancer::Haproxy),
        Box::new(load_balancer::Keepalived),
    ]
}

/// The steps `reconcile` re-checks after first boot: those that depend on
/// the cluster's membership.
pub fn reconcile_steps() -> Vec<Box<dyn Step>> {
    vec![
        Box::new(hosts::Hosts),
        Box::new(users::Users),
        Box::new(load_balancer::Haproxy),
        Box::new(load_balancer::Keepalived),
        Box::new(kubeadm::EtcdMembers),
    ]
}

/// Every step for `node`: its state disk when it has one, the host steps,
/// then its kubeadm join path.
pub fn all_steps(node: &NodeConfig, profile: &RoleProfile) -> Vec<Box<dyn Step>> {
    let mut s: Vec<Box<dyn Step>> = Vec::new();
    if node.state_disk.is_some() {
        s.push(Box::new(state::StateDisk));
    }
    s.extend(host_steps());
    s.extend(kubeadm::join_steps(node, profile));
    s
}
