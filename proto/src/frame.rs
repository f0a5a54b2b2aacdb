//! Framing of the agent <-> intercept messages on a stream socket: a 4-byte little-endian
//! length, then that many bytes of one encoded message.

use prost::Message;

/// Largest frame either side accepts. Real messages are a few dozen bytes; anything near
/// this is a broken or hostile peer.
pub const MAX_FRAME: usize = 64 * 1024;

/// Length of the frame header.
pub const HEADER_LEN: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {len} exceeds the limit of {MAX_FRAME} bytes")]
    TooLarge { len: usize },
    #[error("malformed message: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Encodes `msg` as one frame.
pub fn encode<M: Message>(msg: &M) -> Result<Vec<u8>, FrameError> {
    let len = msg.encoded_len();
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge { len });
    }
    let mut buf = Vec::with_capacity(HEADER_LEN + len);
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    msg.encode(&mut buf)
        .expect("a Vec grows to fit, so encoding cannot run out of space");
    Ok(buf)
}

/// Reads the body length from a frame header, refusing oversized frames before any
/// allocation.
pub fn body_len(header: [u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge { len });
    }
    Ok(len)
}

/// Decodes one frame body (without its header).
pub fn decode<M: Message + Default>(body: &[u8]) -> Result<M, FrameError> {
    Ok(M::decode(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intercept::{Admit, Request, Resource, request::Body};

    #[test]
    fn round_trip() {
        let req = Request {
            seq: 7,
            body: Some(Body::Admit(Admit {
                resource: Resource::Qp as i32,
                max_send_wr: 128,
                ..Default::default()
            })),
        };
        let frame = encode(&req).unwrap();
        let len = body_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, frame.len() - HEADER_LEN);
        let back: Request = decode(&frame[HEADER_LEN..]).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn oversized_header_is_refused() {
        let header = ((MAX_FRAME + 1) as u32).to_le_bytes();
        assert!(
            matches!(body_len(header), Err(FrameError::TooLarge { len }) if len == MAX_FRAME + 1)
        );
    }

    #[test]
    fn garbage_body_is_an_error_not_a_panic() {
        assert!(decode::<Request>(&[0xff, 0xff, 0xff]).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// The decoder either decodes or errs on any input; it never panics, and whatever it
        /// decodes re-encodes within the frame limit.
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            if bytes.len() >= HEADER_LEN {
                let _ = body_len(bytes[..HEADER_LEN].try_into().unwrap());
            }
            if let Ok(req) = decode::<Request>(&bytes) {
                proptest::prop_assert!(encode(&req).is_ok());
            }
            let _ = decode::<crate::intercept::Response>(&bytes);
        }
    }
}
