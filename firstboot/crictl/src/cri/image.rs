//! Messages of `runtime.v1.ImageService` used here: ListImages,
//! ImageStatus and PullImage.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::json::int_as_string;

/// `ImageSpec`.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// Image reference or ID.
    #[prost(string, tag = "1")]
    pub image: String,
    /// Annotations.
    #[prost(btree_map = "string, string", tag = "2")]
    pub annotations: BTreeMap<String, String>,
    /// The reference the user gave, when `image` is an ID.
    #[prost(string, tag = "18")]
    pub user_specified_image: String,
}

/// `Int64Value`.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct Int64Value {
    /// The value.
    #[prost(int64, tag = "1")]
    #[serde(serialize_with = "int_as_string")]
    pub value: i64,
}

/// `Image`.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// Image ID (`sha256:...`).
    #[prost(string, tag = "1")]
    pub id: String,
    /// Tags: `repo:tag`.
    #[prost(string, repeated, tag = "2")]
    pub repo_tags: Vec<String>,
    /// Digests: `repo@sha256:...`.
    #[prost(string, repeated, tag = "3")]
    pub repo_digests: Vec<String>,
    /// Size in bytes.
    #[prost(uint64, tag = "4")]
    #[serde(serialize_with = "int_as_string")]
    pub size: u64,
    /// UID the image runs as, when numeric.
    #[prost(message, optional, tag = "5")]
    pub uid: Option<Int64Value>,
    /// User name the image runs as, when not numeric.
    #[prost(string, tag = "6")]
    pub username: String,
    /// The image's spec.
    #[prost(message, optional, tag = "7")]
    pub spec: Option<ImageSpec>,
    /// Whether the runtime never garbage-collects it.
    #[prost(bool, tag = "8")]
    pub pinned: bool,
}

/// `ImageFilter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageFilter {
    /// Only images matching this spec.
    #[prost(message, optional, tag = "1")]
    pub image: Option<ImageSpec>,
}

/// `ListImagesRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListImagesRequest {
    /// Optional filter.
    #[prost(message, optional, tag = "1")]
    pub filter: Option<ImageFilter>,
}

/// `ListImagesResponse`.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct ListImagesResponse {
    /// The images.
    #[prost(message, repeated, tag = "1")]
    pub images: Vec<Image>,
}

/// `ImageStatusRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageStatusRequest {
    /// The image to look up.
    #[prost(message, optional, tag = "1")]
    pub image: Option<ImageSpec>,
    /// Ask for extra information.
    #[prost(bool, tag = "2")]
    pub verbose: bool,
}

/// `ImageStatusResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageStatusResponse {
    /// The image; absent when the runtime does not have it.
    #[prost(message, optional, tag = "1")]
    pub image: Option<Image>,
    /// Extra information, each value JSON text (verbose only).
    #[prost(btree_map = "string, string", tag = "2")]
    pub info: BTreeMap<String, String>,
}

/// `AuthConfig`: registry credentials. Its `Debug` hides the secrets.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct AuthConfig {
    /// User name.
    #[prost(string, tag = "1")]
    pub username: String,
    /// Password.
    #[prost(string, tag = "2")]
    pub password: String,
    /// base64 of `username:password`.
    #[prost(string, tag = "3")]
    pub auth: String,
    /// Registry address.
    #[prost(string, tag = "4")]
    pub server_address: String,
    /// Identity token.
    #[prost(string, tag = "5")]
    pub identity_token: String,
    /// Registry token.
    #[prost(string, tag = "6")]
    pub registry_token: String,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("server_address", &self.server_address)
            .finish_non_exhaustive()
    }
}

/// `PullImageRequest`, without `sandbox_config` (3), which this crictl
/// never sends.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PullImageRequest {
    /// The image to pull.
    #[prost(message, optional, tag = "1")]
    pub image: Option<ImageSpec>,
    /// Registry credentials.
    #[prost(message, optional, tag = "2")]
    pub auth: Option<AuthConfig>,
}

/// `PullImageResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PullImageResponse {
    /// The pulled image's reference (its ID, for containerd).
    #[prost(string, tag = "1")]
    pub image_ref: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn image_json_is_protobuf_json() {
        let image = Image {
            id: "sha256:ab".into(),
            repo_tags: vec!["registry.k8s.io/pause:3.9".into()],
            size: 321,
            uid: Some(Int64Value { value: 65535 }),
            ..Image::default()
        };
        let json = serde_json::to_string(&image).unwrap();
        assert_eq!(
            json,
            r#"{"id":"sha256:ab","repoTags":["registry.k8s.io/pause:3.9"],"repoDigests":[],"size":"321","uid":{"value":"65535"},"username":"","spec":null,"pinned":false}"#
        );
    }

    #[test]
    fn spec_field_18_is_encoded_with_a_two_byte_key() {
        let spec = ImageSpec {
            user_specified_image: "x".into(),
            ..ImageSpec::default()
        };
        // (18 << 3) | 2 = 146 = varint 0x92 0x01
        assert_eq!(spec.encode_to_vec(), [0x92, 0x01, 0x01, b'x']);
    }

    #[test]
    fn auth_debug_hides_secrets() {
        let auth = AuthConfig {
            username: "u".into(),
            password: "hunter2".into(),
            ..AuthConfig::default()
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
    }
}
