//! The outcome of a gRPC call: `grpc-status` (a code) and `grpc-message`
//! (percent-encoded text), found in the trailers, or in the headers of a
//! trailers-only response. Errors print as grpc-go prints them
//! (`rpc error: code = NotFound desc = ...`), the text crictl shows.

use std::fmt;

use anyhow::{bail, Context, Result};
use http::HeaderMap;
use percent_encoding::percent_decode_str;

/// A gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code(pub u32);

impl Code {
    /// Success.
    pub const OK: Code = Code(0);
    /// The named entity was not found.
    pub const NOT_FOUND: Code = Code(5);

    /// The name grpc-go prints for this code.
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 17] = [
            "OK",
            "Canceled",
            "Unknown",
            "InvalidArgument",
            "DeadlineExceeded",
            "NotFound",
            "AlreadyExists",
            "PermissionDenied",
            "ResourceExhausted",
            "FailedPrecondition",
            "Aborted",
            "OutOfRange",
            "Unimplemented",
            "Internal",
            "Unavailable",
            "DataLoss",
            "Unauthenticated",
        ];
        NAMES.get(self.0 as usize).copied().unwrap_or("Unknown")
    }
}

/// A call's status as the server reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcStatus {
    /// `grpc-status`.
    pub code: Code,
    /// `grpc-message`, percent-decoded.
    pub message: String,
}

impl RpcStatus {
    /// Reads the status from response headers or trailers; `Ok(None)` when
    /// they carry no `grpc-status`.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>> {
        let Some(code) = headers.get("grpc-status") else {
            return Ok(None);
        };
        let code = code
            .to_str()
            .ok()
            .and_then(|c| c.trim().parse().ok())
            .with_context(|| format!("invalid grpc-status {code:?}"))?;
        let message = headers
            .get("grpc-message")
            .map(|m| decode_message(&String::from_utf8_lossy(m.as_bytes())))
            .unwrap_or_default();
        Ok(Some(Self {
            code: Code(code),
            message,
        }))
    }

    /// `Ok(())` for status OK, else this status as an error.
    pub fn into_result(self) -> Result<()> {
        if self.code == Code::OK {
            return Ok(());
        }
        bail!(self)
    }
}

impl fmt::Display for RpcStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rpc error: code = {} desc = {}",
            self.code.name(),
            self.message
        )
    }
}

impl std::error::Error for RpcStatus {}

/// Decodes a percent-encoded `grpc-message` (invalid UTF-8 is replaced).
pub fn decode_message(raw: &str) -> String {
    percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn reads_an_error_status_with_a_percent_encoded_message() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("5"));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static("an image with name \"x\" not found: 100%25 %E2%9C%93"),
        );
        let status = RpcStatus::from_headers(&headers).unwrap().unwrap();
        assert_eq!(status.code, Code::NOT_FOUND);
        assert_eq!(
            status.message,
            "an image with name \"x\" not found: 100% \u{2713}"
        );
        let error = status.into_result().unwrap_err();
        assert_eq!(
            error.to_string(),
            "rpc error: code = NotFound desc = an image with name \"x\" not found: 100% \u{2713}"
        );
        assert!(error.downcast_ref::<RpcStatus>().is_some());
    }

    #[test]
    fn ok_and_missing_statuses() {
        let mut headers = HeaderMap::new();
        assert_eq!(RpcStatus::from_headers(&headers).unwrap(), None);
        headers.insert("grpc-status", HeaderValue::from_static("0"));
        let status = RpcStatus::from_headers(&headers).unwrap().unwrap();
        assert!(status.into_result().is_ok());
        headers.insert("grpc-status", HeaderValue::from_static("bogus"));
        assert!(RpcStatus::from_headers(&headers).is_err());
    }

    #[test]
    fn names_codes_like_grpc_go() {
        assert_eq!(Code(14).name(), "Unavailable");
        assert_eq!(Code(12).name(), "Unimplemented");
        assert_eq!(Code(99).name(), "Unknown");
    }
}
