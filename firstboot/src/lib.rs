//! `nodebake-firstboot`: the first-boot agent of nodebake images.
//!
//! It reads this machine's metadata ([`metadata`]), validates it into a
//! [`nodebake_contract::node::NodeConfig`] before changing anything, then
//! runs the host [`steps`] in order. Each step checks its postcondition,
//! applies only what is missing and is verified and journaled
//! ([`journal`]); a run killed anywhere resumes. Every file goes through a
//! [`root::Root`] (`--root` in tests) and every command or hostname change
//! through a [`runner::Runner`], so tests run the real code against a
//! temporary directory without touching the host.
//!
//! The same binary is also the `/init` of a disk image's initramfs
//! ([`stage1`]): it loads the modules the root disk needs and switches root.

pub mod agent;
pub mod cli;
pub mod hostnamed;
pub mod journal;
pub mod kubeadm;
pub mod metadata;
pub mod notify;
pub mod quote;
pub mod root;
pub mod runner;
pub mod stage1;
pub mod state_disk;
pub mod step;
pub mod steps;
pub mod yaml;
