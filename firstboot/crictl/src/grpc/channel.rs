//! One HTTP/2 connection (the `h2` crate) to a CRI endpoint's unix socket,
//! carrying unary gRPC calls: `POST /<service>/<method>` with
//! `content-type: application/grpc` and `te: trailers`, one framed request
//! message, one framed response message and the status in the trailers.
//! The connection is opened by the first call, so a refused connection is
//! reported with the call that needed it.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use h2::RecvStream;
use http::header::{CONTENT_TYPE, TE, USER_AGENT};
use http::{Method, Request, Response, StatusCode};
use tokio::net::UnixStream;

use super::frame;
use super::status::{Code, RpcStatus};
use crate::endpoint::Endpoint;

/// A lazily connected gRPC channel to one endpoint.
pub struct Channel {
    endpoint: Endpoint,
    connect_timeout: Duration,
    debug: bool,
    sender: Option<SendRequest<Bytes>>,
}

impl Channel {
    /// A channel to `endpoint`; connecting is bounded by `connect_timeout`.
    /// With `debug`, requests and responses are printed to stderr.
    pub fn new(endpoint: Endpoint, connect_timeout: Duration, debug: bool) -> Self {
        Self {
            endpoint,
            connect_timeout,
            debug,
            sender: None,
        }
    }

    /// The endpoint this channel talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Calls the unary RPC at `path` (`/runtime.v1.RuntimeService/Status`)
    /// and waits at most `timeout` for its answer. Errors name the RPC and
    /// the endpoint; a non-OK status is an [`RpcStatus`] error.
    pub async fn unary<Q, R>(&mut self, path: &str, request: &Q, timeout: Duration) -> Result<R>
    where
        Q: prost::Message + std::fmt::Debug,
        R: prost::Message + Default + std::fmt::Debug,
    {
        self.log(path, "request", request);
        let response: R = match tokio::time::timeout(timeout, self.exchange(path, request)).await {
            Ok(result) => result,
            Err(_) => Err(deadline_exceeded(timeout)),
        }
        .with_context(|| format!("{} on {}", path.trim_start_matches('/'), self.endpoint))?;
        self.log(path, "response", &response);
        Ok(response)
    }

    /// Prints a message when debugging.
    fn log(&self, path: &str, what: &str, message: &impl std::fmt::Debug) {
        if self.debug {
            eprintln!("DEBU {path} {what}: {message:?}");
        }
    }

    /// Sends one request and reads its response.
    async fn exchange<Q, R>(&mut self, path: &str, request: &Q) -> Result<R>
    where
        Q: prost::Message + std::fmt::Debug,
        R: prost::Message + Default + std::fmt::Debug,
    {
        let sender = self.connected().await?.clone();
        let mut sender = sender
            .ready()
            .await
            .context("the HTTP/2 connection was closed")?;
        let head = request_head(path)?;
        let (response, mut body) = sender
            .send_request(head, false)
            .context("failed to send the request headers")?;
        body.send_data(frame::encode(request), true)
            .context("failed to send the request message")?;
        let response = response.await.context("the runtime sent no response")?;
        read_response(response).await
    }

    /// The connection's request handle, connecting first if needed.
    async fn connected(&mut self) -> Result<&SendRequest<Bytes>> {
        if self.sender.is_none() {
            let connect = connect(&self.endpoint);
            let sender = tokio::time::timeout(self.connect_timeout, connect)
                .await
                .map_err(|_| {
                    anyhow!(
                        "timed out after {:?} connecting to {}",
                        self.connect_timeout,
                        self.endpoint
                    )
                })??;
            self.sender = Some(sender);
        }
        Ok(self.sender.as_ref().expect("connected above"))
    }
}

/// Connects to the socket and runs the HTTP/2 handshake; the connection
/// task runs on the current runtime.
async fn connect(endpoint: &Endpoint) -> Result<SendRequest<Bytes>> {
    let io = UnixStream::connect(endpoint.socket())
        .await
        .with_context(|| format!("failed to connect to {endpoint}"))?;
    let (sender, connection) = h2::client::handshake(io)
        .await
        .with_context(|| format!("HTTP/2 handshake with {endpoint} failed"))?;
    tokio::spawn(async move {
        // Ends when the socket closes; errors surface on the calls.
        let _ = connection.await;
    });
    Ok(sender)
}

/// The headers of a gRPC request to `path`.
fn request_head(path: &str) -> Result<Request<()>> {
    Request::builder()
        .method(Method::POST)
        .uri(format!("http://localhost{path}"))
        .header(CONTENT_TYPE, "application/grpc")
        .header(TE, "trailers")
        .header(
            USER_AGENT,
            concat!("nodebake-crictl/", env!("CARGO_PKG_VERSION")),
        )
        .body(())
        .with_context(|| format!("invalid gRPC path {path:?}"))
}

/// Reads a unary gRPC response: the status from the headers (trailers-only
/// responses) or the trailers, and the one message of the body.
async fn read_response<R: prost::Message + Default>(response: Response<RecvStream>) -> Result<R> {
    let (head, mut body) = response.into_parts();
    let header_status = RpcStatus::from_headers(&head.headers)?;
    if let Some(status) = &header_status {
        status.clone().into_result()?;
    }
    if head.status != StatusCode::OK {
        bail!(
            "unexpected HTTP status {} (not a gRPC endpoint?)",
            head.status
        );
    }
    let message = read_body(&mut body).await?;
    let trailers = body
        .trailers()
        .await
        .context("failed to read the response trailers")?
        .unwrap_or_default();
    match RpcStatus::from_headers(&trailers)? {
        Some(status) => status.into_result()?,
        None if header_status.is_some() => {}
        None => bail!("the response has no grpc-status"),
    }
    frame::decode_unary(&message)
}

/// Reads a whole response body, returning flow-control capacity as it goes.
async fn read_body(body: &mut RecvStream) -> Result<Bytes> {
    let mut bytes = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.context("failed to read the response body")?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if bytes.len() + chunk.len() > frame::MAX_MESSAGE_LEN + frame::PREFIX_LEN {
            bail!(
                "the response body is larger than {} bytes",
                frame::MAX_MESSAGE_LEN
            );
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes.freeze())
}

/// The error of a call that outlived its timeout (as grpc-go reports it).
fn deadline_exceeded(timeout: Duration) -> anyhow::Error {
    RpcStatus {
        code: Code(4),
        message: format!("context deadline exceeded (no answer within {timeout:?})"),
    }
    .into()
}
