//! Unary gRPC calls by hand: length-prefixed messages ([`frame`]), the
//! `grpc-status` / `grpc-message` outcome ([`status`]) and an HTTP/2
//! connection over a unix socket that carries them ([`channel`]).

pub mod channel;
pub mod frame;
pub mod status;

pub use channel::Channel;
pub use status::{Code, RpcStatus};
