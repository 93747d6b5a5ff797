//! The CRI v1 API (`runtime.v1`, k8s.io/cri-api `pkg/apis/runtime/v1/api.proto`
//! as of Kubernetes 1.28): the messages this crictl sends and reads
//! ([`runtime`], [`image`]), written by hand with `prost` derives and the
//! proto's field numbers and types, and typed clients for the two services
//! ([`client`]). Messages that are printed also derive `Serialize` with the
//! JSON that crictl prints (protobuf JSON: camelCase names, 64-bit integers
//! as strings, enums by name, every field present).

pub mod client;
pub mod image;
mod json;
pub mod runtime;

pub use client::{ImageClient, RuntimeClient};
pub use image::*;
pub use runtime::*;
