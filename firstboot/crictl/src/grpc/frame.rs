//! gRPC message framing: each message is one byte of compressed-flag, a
//! 4-byte big-endian length, then the protobuf bytes. This client never
//! compresses and never advertises compression, so a compressed message in
//! a response is an error.

use anyhow::{bail, Result};
use bytes::{BufMut, Bytes, BytesMut};

/// Bytes before each message: the compressed flag and the length.
pub const PREFIX_LEN: usize = 5;

/// The largest response message accepted (containerd answers in KiBs; this
/// only stops a broken peer from filling memory).
pub const MAX_MESSAGE_LEN: usize = 64 << 20;

/// Frames one protobuf message for a request body.
pub fn encode(message: &impl prost::Message) -> Bytes {
    let payload = message.encode_to_vec();
    let mut out = BytesMut::with_capacity(PREFIX_LEN + payload.len());
    out.put_u8(0);
    out.put_u32(payload.len() as u32);
    out.put_slice(&payload);
    out.freeze()
}

/// Splits a whole response body into its messages.
pub fn decode_all(mut body: &[u8]) -> Result<Vec<&[u8]>> {
    let mut messages = Vec::new();
    while !body.is_empty() {
        if body.len() < PREFIX_LEN {
            bail!("truncated gRPC message prefix ({} bytes)", body.len());
        }
        let compressed = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        if compressed != 0 {
            bail!("compressed gRPC message (flag {compressed}) but no compression was negotiated");
        }
        if len > MAX_MESSAGE_LEN {
            bail!("gRPC message of {len} bytes is larger than {MAX_MESSAGE_LEN}");
        }
        let rest = &body[PREFIX_LEN..];
        if rest.len() < len {
            bail!(
                "truncated gRPC message: {len} bytes announced, {} present",
                rest.len()
            );
        }
        messages.push(&rest[..len]);
        body = &rest[len..];
    }
    Ok(messages)
}

/// Decodes the single message of a unary response body.
pub fn decode_unary<M: prost::Message + Default>(body: &[u8]) -> Result<M> {
    match decode_all(body)?.as_slice() {
        [message] => Ok(M::decode(*message)?),
        [] => bail!("the response carried no message"),
        many => bail!("a unary response carried {} messages", many.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::{ImageSpec, ImageStatusRequest};

    #[test]
    fn encodes_flag_length_and_payload() {
        let request = ImageStatusRequest {
            image: Some(ImageSpec {
                image: "registry.k8s.io/pause:3.9".into(),
                ..ImageSpec::default()
            }),
            verbose: true,
        };
        let framed = encode(&request);
        let payload = prost::Message::encode_to_vec(&request);
        assert_eq!(framed[0], 0);
        assert_eq!(&framed[1..5], &(payload.len() as u32).to_be_bytes());
        assert_eq!(&framed[5..], &payload[..]);
        // field 1 (ImageSpec, length-delimited), then field 2 (varint true)
        assert_eq!(framed[5], 0x0a);
        assert_eq!(&framed[framed.len() - 2..], &[0x10, 0x01]);
    }

    #[test]
    fn round_trips_a_unary_message() {
        let request = ImageStatusRequest {
            image: Some(ImageSpec {
                image: "x".into(),
                ..ImageSpec::default()
            }),
            verbose: false,
        };
        let decoded: ImageStatusRequest = decode_unary(&encode(&request)).unwrap();
        assert_eq!(decoded, request);
    }

    #[test]
    fn empty_messages_are_five_zero_bytes() {
        let framed = encode(&crate::cri::StatusRequest { verbose: false });
        assert_eq!(&framed[..], &[0, 0, 0, 0, 0]);
        let decoded: crate::cri::StatusRequest = decode_unary(&framed).unwrap();
        assert!(!decoded.verbose);
    }

    #[test]
    fn splits_several_messages() {
        let mut body = encode(&crate::cri::StatusRequest { verbose: true }).to_vec();
        body.extend_from_slice(&encode(&crate::cri::StatusRequest { verbose: false }));
        assert_eq!(decode_all(&body).unwrap().len(), 2);
        assert!(decode_unary::<crate::cri::StatusRequest>(&body).is_err());
    }

    #[test]
    fn rejects_broken_frames() {
        assert!(decode_all(&[0, 0, 0]).is_err());
        assert!(decode_all(&[0, 0, 0, 0, 9, 1, 2]).is_err());
        assert!(decode_all(&[1, 0, 0, 0, 0]).is_err());
        assert!(decode_all(&[0, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_unary::<crate::cri::StatusRequest>(&[]).is_err());
    }
}
