//! The contract between `nodebake` (the builder) and `nodebake-firstboot`
//! (the agent that runs on every machine booted from a baked image).
//!
//! Both sides compile against these types, so what the builder writes is
//! exactly what the agent reads:
//! - [`layout`]: where things live inside a baked image;
//! - [`image`]: the image metadata file the builder writes at
//!   [`layout::IMAGE_METADATA`];
//! - [`profile`]: role profiles (`profiles/*.toml`) baked under
//!   [`layout::PROFILES_DIR`];
//! - [`node`]: the node metadata schema (NoCloud `meta-data` + `user-data`)
//!   and its validation into a [`node::NodeConfig`].

pub mod grammar;
pub mod image;
pub mod layout;
pub mod node;
pub mod profile;
pub mod state_disk;
