//! Messages of `runtime.v1.RuntimeService` used here: Version, Status,
//! ListPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus and
//! ListContainers. Fields this crictl never sends or reads are left out
//! (noted where they are); protobuf skips unknown fields when decoding, so
//! the wire format is unchanged.

use std::collections::BTreeMap;

use serde::Serialize;

use super::image::ImageSpec;
use super::json::{enum_name, int_as_string, ProtoName};

/// `VersionRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionRequest {
    /// The CRI API version of the client ("v1").
    #[prost(string, tag = "1")]
    pub version: String,
}

/// `VersionResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionResponse {
    /// Version of the kubelet runtime API.
    #[prost(string, tag = "1")]
    pub version: String,
    /// Name of the container runtime.
    #[prost(string, tag = "2")]
    pub runtime_name: String,
    /// Version of the container runtime.
    #[prost(string, tag = "3")]
    pub runtime_version: String,
    /// API version of the container runtime.
    #[prost(string, tag = "4")]
    pub runtime_api_version: String,
}

/// `StatusRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {
    /// Ask for extra information (containerd: its config, CNI config...).
    #[prost(bool, tag = "1")]
    pub verbose: bool,
}

/// `StatusResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusResponse {
    /// The runtime's conditions.
    #[prost(message, optional, tag = "1")]
    pub status: Option<RuntimeStatus>,
    /// Extra information, each value JSON text (verbose only).
    #[prost(btree_map = "string, string", tag = "2")]
    pub info: BTreeMap<String, String>,
}

/// `RuntimeStatus`.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct RuntimeStatus {
    /// RuntimeReady, NetworkReady and any others.
    #[prost(message, repeated, tag = "1")]
    pub conditions: Vec<RuntimeCondition>,
}

/// `RuntimeCondition`.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct RuntimeCondition {
    /// The condition, e.g. `RuntimeReady`.
    #[prost(string, tag = "1")]
    #[serde(rename = "type")]
    pub r#type: String,
    /// Whether it holds.
    #[prost(bool, tag = "2")]
    pub status: bool,
    /// Machine-readable reason when it does not.
    #[prost(string, tag = "3")]
    pub reason: String,
    /// Human-readable message when it does not.
    #[prost(string, tag = "4")]
    pub message: String,
}

/// `PodSandboxState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PodSandboxState {
    /// Ready.
    SandboxReady = 0,
    /// Not ready (stopped).
    SandboxNotready = 1,
}

impl ProtoName for PodSandboxState {
    fn proto_name(&self) -> &'static str {
        match self {
            Self::SandboxReady => "SANDBOX_READY",
            Self::SandboxNotready => "SANDBOX_NOTREADY",
        }
    }
}

/// `PodSandboxMetadata`.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct PodSandboxMetadata {
    /// Pod name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Pod UID.
    #[prost(string, tag = "2")]
    pub uid: String,
    /// Pod namespace.
    #[prost(string, tag = "3")]
    pub namespace: String,
    /// Attempt number of the sandbox.
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
}

/// `PodSandboxStateValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStateValue {
    /// The state.
    #[prost(enumeration = "PodSandboxState", tag = "1")]
    pub state: i32,
}

/// `PodSandboxFilter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxFilter {
    /// Sandbox ID (or a unique prefix).
    #[prost(string, tag = "1")]
    pub id: String,
    /// Sandbox state.
    #[prost(message, optional, tag = "2")]
    pub state: Option<PodSandboxStateValue>,
    /// Labels that must all match.
    #[prost(btree_map = "string, string", tag = "3")]
    pub label_selector: BTreeMap<String, String>,
}

/// `ListPodSandboxRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPodSandboxRequest {
    /// Optional filter.
    #[prost(message, optional, tag = "1")]
    pub filter: Option<PodSandboxFilter>,
}

/// `PodSandbox`.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSandbox {
    /// Sandbox ID.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Pod metadata.
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<PodSandboxMetadata>,
    /// Sandbox state.
    #[prost(enumeration = "PodSandboxState", tag = "3")]
    #[serde(serialize_with = "enum_name::<PodSandboxState, _>")]
    pub state: i32,
    /// Creation time, nanoseconds since the epoch.
    #[prost(int64, tag = "4")]
    #[serde(serialize_with = "int_as_string")]
    pub created_at: i64,
    /// Labels.
    #[prost(btree_map = "string, string", tag = "5")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[prost(btree_map = "string, string", tag = "6")]
    pub annotations: BTreeMap<String, String>,
    /// Runtime handler ("" is the default).
    #[prost(string, tag = "7")]
    pub runtime_handler: String,
}

/// `ListPodSandboxResponse`.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct ListPodSandboxResponse {
    /// The sandboxes.
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<PodSandbox>,
}

/// `StopPodSandboxRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StopPodSandboxRequest {
    /// Sandbox ID.
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

/// `StopPodSandboxResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StopPodSandboxResponse {}

/// `RemovePodSandboxRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RemovePodSandboxRequest {
    /// Sandbox ID.
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

/// `RemovePodSandboxResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RemovePodSandboxResponse {}

/// `PodSandboxStatusRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatusRequest {
    /// Sandbox ID.
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
    /// Ask for extra information.
    #[prost(bool, tag = "2")]
    pub verbose: bool,
}

/// `PodSandboxStatus`, without `network` (5) and `linux` (6).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatus {
    /// Sandbox ID.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Pod metadata.
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<PodSandboxMetadata>,
    /// Sandbox state.
    #[prost(enumeration = "PodSandboxState", tag = "3")]
    pub state: i32,
    /// Creation time, nanoseconds since the epoch.
    #[prost(int64, tag = "4")]
    pub created_at: i64,
    /// Labels.
    #[prost(btree_map = "string, string", tag = "7")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[prost(btree_map = "string, string", tag = "8")]
    pub annotations: BTreeMap<String, String>,
    /// Runtime handler.
    #[prost(string, tag = "9")]
    pub runtime_handler: String,
}

/// `PodSandboxStatusResponse`, without `containers_statuses` (3).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatusResponse {
    /// The sandbox's status.
    #[prost(message, optional, tag = "1")]
    pub status: Option<PodSandboxStatus>,
    /// Extra information (verbose only).
    #[prost(btree_map = "string, string", tag = "2")]
    pub info: BTreeMap<String, String>,
    /// Time of the status, nanoseconds since the epoch.
    #[prost(int64, tag = "4")]
    pub timestamp: i64,
}

/// `ContainerState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ContainerState {
    /// Created, not started.
    ContainerCreated = 0,
    /// Running.
    ContainerRunning = 1,
    /// Exited.
    ContainerExited = 2,
    /// Unknown.
    ContainerUnknown = 3,
}

impl ProtoName for ContainerState {
    fn proto_name(&self) -> &'static str {
        match self {
            Self::ContainerCreated => "CONTAINER_CREATED",
            Self::ContainerRunning => "CONTAINER_RUNNING",
            Self::ContainerExited => "CONTAINER_EXITED",
            Self::ContainerUnknown => "CONTAINER_UNKNOWN",
        }
    }
}

/// `ContainerMetadata`.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct ContainerMetadata {
    /// Container name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Attempt number of the container.
    #[prost(uint32, tag = "2")]
    pub attempt: u32,
}

/// `ContainerStateValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStateValue {
    /// The state.
    #[prost(enumeration = "ContainerState", tag = "1")]
    pub state: i32,
}

/// `ContainerFilter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerFilter {
    /// Container ID (or a unique prefix).
    #[prost(string, tag = "1")]
    pub id: String,
    /// Container state.
    #[prost(message, optional, tag = "2")]
    pub state: Option<ContainerStateValue>,
    /// Sandbox ID.
    #[prost(string, tag = "3")]
    pub pod_sandbox_id: String,
    /// Labels that must all match.
    #[prost(btree_map = "string, string", tag = "4")]
    pub label_selector: BTreeMap<String, String>,
}

/// `ListContainersRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListContainersRequest {
    /// Optional filter.
    #[prost(message, optional, tag = "1")]
    pub filter: Option<ContainerFilter>,
}

/// `Container`.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// Container ID.
    #[prost(string, tag = "1")]
    pub id: String,
    /// ID of its sandbox.
    #[prost(string, tag = "2")]
    pub pod_sandbox_id: String,
    /// Container metadata.
    #[prost(message, optional, tag = "3")]
    pub metadata: Option<ContainerMetadata>,
    /// The image it was created from.
    #[prost(message, optional, tag = "4")]
    pub image: Option<ImageSpec>,
    /// The image's ID.
    #[prost(string, tag = "5")]
    pub image_ref: String,
    /// Container state.
    #[prost(enumeration = "ContainerState", tag = "6")]
    #[serde(serialize_with = "enum_name::<ContainerState, _>")]
    pub state: i32,
    /// Creation time, nanoseconds since the epoch.
    #[prost(int64, tag = "7")]
    #[serde(serialize_with = "int_as_string")]
    pub created_at: i64,
    /// Labels.
    #[prost(btree_map = "string, string", tag = "8")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[prost(btree_map = "string, string", tag = "9")]
    pub annotations: BTreeMap<String, String>,
}

/// `ListContainersResponse`.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct ListContainersResponse {
    /// The containers.
    #[prost(message, repeated, tag = "1")]
    pub containers: Vec<Container>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn wire_format_matches_the_proto_field_numbers() {
        let request = StopPodSandboxRequest {
            pod_sandbox_id: "abc".into(),
        };
        assert_eq!(request.encode_to_vec(), b"\x0a\x03abc");
        let filter = ContainerFilter {
            state: Some(ContainerStateValue {
                state: ContainerState::ContainerRunning as i32,
            }),
            ..ContainerFilter::default()
        };
        // field 2, length 2: { field 1 varint 1 }
        assert_eq!(filter.encode_to_vec(), [0x12, 0x02, 0x08, 0x01]);
    }

    #[test]
    fn decodes_a_sandbox_and_prints_protobuf_json() {
        let sandbox = PodSandbox {
            id: "f00d".into(),
            metadata: Some(PodSandboxMetadata {
                name: "etcd-m1".into(),
                namespace: "kube-system".into(),
                ..PodSandboxMetadata::default()
            }),
            state: PodSandboxState::SandboxNotready as i32,
            created_at: 1_700_000_000_000_000_000,
            ..PodSandbox::default()
        };
        let decoded = PodSandbox::decode(&sandbox.encode_to_vec()[..]).unwrap();
        assert_eq!(decoded, sandbox);
        let json = serde_json::to_string(&decoded).unwrap();
        assert_eq!(
            json,
            r#"{"id":"f00d","metadata":{"name":"etcd-m1","uid":"","namespace":"kube-system","attempt":0},"state":"SANDBOX_NOTREADY","createdAt":"1700000000000000000","labels":{},"annotations":{},"runtimeHandler":""}"#
        );
    }
}
