//! nodebake builder library: image specs, the content-addressed input
//! store, payload unpackers (tar, RPM, DEB), the in-memory file tree and the
//! output writers. The `nodebake` binary is a thin CLI over it.

pub mod arch;
pub mod atomic;
pub mod blobs;
pub mod build;
pub mod bundle;
pub mod cluster;
pub mod compress;
pub mod disk;
pub mod fetch;
pub mod hashio;
pub mod inspect;
pub mod kmod;
pub mod kubeadm_images;
pub mod lint;
pub mod manifest;
pub mod names;
pub mod output;
pub mod pkgdb;
pub mod progress;
pub mod registry;
pub mod rpm;
pub mod seed;
pub mod serve;
pub mod spec;
pub mod special;
pub mod store;
pub mod tools;
pub mod tree;
pub mod unpack;
pub mod verify;
