//! Typed clients of `runtime.v1.RuntimeService` and
//! `runtime.v1.ImageService`: one method per RPC, each bounded by the
//! configured timeout (a pull by at least [`MIN_PULL_TIMEOUT`]).

use std::time::Duration;

use anyhow::Result;

use super::image::*;
use super::runtime::*;
use crate::grpc::Channel;
use crate::settings::{Settings, MIN_PULL_TIMEOUT};

/// The runtime service's gRPC name.
pub const RUNTIME_SERVICE: &str = "runtime.v1.RuntimeService";
/// The image service's gRPC name.
pub const IMAGE_SERVICE: &str = "runtime.v1.ImageService";
/// The CRI API version this client speaks.
pub const CRI_API_VERSION: &str = "v1";

/// A client of `runtime.v1.RuntimeService`.
pub struct RuntimeClient {
    channel: Channel,
    timeout: Duration,
}

impl RuntimeClient {
    /// A client of the runtime endpoint in `settings` (connected on first
    /// use).
    pub fn new(settings: &Settings) -> Self {
        Self {
            channel: Channel::new(
                settings.runtime_endpoint.clone(),
                settings.timeout,
                settings.debug,
            ),
            timeout: settings.timeout,
        }
    }

    /// Calls `method` of the runtime service.
    async fn call<Q, R>(&mut self, method: &str, request: &Q) -> Result<R>
    where
        Q: prost::Message + std::fmt::Debug,
        R: prost::Message + Default + std::fmt::Debug,
    {
        let path = format!("/{RUNTIME_SERVICE}/{method}");
        self.channel.unary(&path, request, self.timeout).await
    }

    /// `Version`.
    pub async fn version(&mut self) -> Result<VersionResponse> {
        let request = VersionRequest {
            version: CRI_API_VERSION.into(),
        };
        self.call("Version", &request).await
    }

    /// `Status`.
    pub async fn status(&mut self, verbose: bool) -> Result<StatusResponse> {
        self.call("Status", &StatusRequest { verbose }).await
    }

    /// `ListPodSandbox`.
    pub async fn list_pod_sandbox(&mut self, filter: PodSandboxFilter) -> Result<Vec<PodSandbox>> {
        let request = ListPodSandboxRequest {
            filter: Some(filter),
        };
        let response: ListPodSandboxResponse = self.call("ListPodSandbox", &request).await?;
        Ok(response.items)
    }

    /// `StopPodSandbox`.
    pub async fn stop_pod_sandbox(&mut self, id: &str) -> Result<()> {
        let request = StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        let _: StopPodSandboxResponse = self.call("StopPodSandbox", &request).await?;
        Ok(())
    }

    /// `RemovePodSandbox`.
    pub async fn remove_pod_sandbox(&mut self, id: &str) -> Result<()> {
        let request = RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        let _: RemovePodSandboxResponse = self.call("RemovePodSandbox", &request).await?;
        Ok(())
    }

    /// `PodSandboxStatus`.
    pub async fn pod_sandbox_status(&mut self, id: &str) -> Result<PodSandboxStatusResponse> {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        };
        self.call("PodSandboxStatus", &request).await
    }

    /// `ListContainers`.
    pub async fn list_containers(&mut self, filter: ContainerFilter) -> Result<Vec<Container>> {
        let request = ListContainersRequest {
            filter: Some(filter),
        };
        let response: ListContainersResponse = self.call("ListContainers", &request).await?;
        Ok(response.containers)
    }
}

/// A client of `runtime.v1.ImageService`.
pub struct ImageClient {
    channel: Channel,
    timeout: Duration,
}

impl ImageClient {
    /// A client of the image endpoint in `settings` (connected on first
    /// use).
    pub fn new(settings: &Settings) -> Self {
        Self {
            channel: Channel::new(
                settings.image_endpoint.clone(),
                settings.timeout,
                settings.debug,
            ),
            timeout: settings.timeout,
        }
    }

    /// Calls `method` of the image service within `timeout`.
    async fn call<Q, R>(&mut self, method: &str, request: &Q, timeout: Duration) -> Result<R>
    where
        Q: prost::Message + std::fmt::Debug,
        R: prost::Message + Default + std::fmt::Debug,
    {
        let path = format!("/{IMAGE_SERVICE}/{method}");
        self.channel.unary(&path, request, timeout).await
    }

    /// `ListImages`, optionally only those matching `image`.
    pub async fn list_images(&mut self, image: Option<&str>) -> Result<Vec<Image>> {
        let request = ListImagesRequest {
            filter: Some(ImageFilter {
                image: Some(spec(image.unwrap_or_default())),
            }),
        };
        let response: ListImagesResponse = self.call("ListImages", &request, self.timeout).await?;
        Ok(response.images)
    }

    /// `ImageStatus`.
    pub async fn image_status(
        &mut self,
        image: &str,
        verbose: bool,
    ) -> Result<ImageStatusResponse> {
        let request = ImageStatusRequest {
            image: Some(spec(image)),
            verbose,
        };
        self.call("ImageStatus", &request, self.timeout).await
    }

    /// `PullImage`; returns the image reference.
    pub async fn pull_image(&mut self, image: &str, auth: Option<AuthConfig>) -> Result<String> {
        let request = PullImageRequest {
            image: Some(spec(image)),
            auth,
        };
        let timeout = self.timeout.max(MIN_PULL_TIMEOUT);
        let response: PullImageResponse = self.call("PullImage", &request, timeout).await?;
        Ok(response.image_ref)
    }
}

/// An image spec naming `image`.
fn spec(image: &str) -> ImageSpec {
    ImageSpec {
        image: image.into(),
        ..ImageSpec::default()
    }
}
