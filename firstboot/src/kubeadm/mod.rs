//! kubeadm: the configuration a node hands to `kubeadm init` / `join`,
//! the discovery hash of the cluster CA, and the wait for the
//! control-plane endpoint.

pub mod config;
pub mod discovery;
pub mod endpoint;
pub mod etcd;
