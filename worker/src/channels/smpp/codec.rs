//! SMPP framing that survives a bad PDU.
//!
//! rusmpp's codec decodes the body; this wrapper frames by command_length
//! first, so a PDU rusmpp cannot decode costs that one PDU — answered with
//! generic_nack or an error response by the session — and not the
//! connection. Only a command_length that cannot be framed (under 16, or
//! over [`MAX_PDU`]) ends the connection: after it the byte stream cannot be
//! resynchronised.

use bytes::{Buf, BytesMut};
use rusmpp::tokio_codec::{CommandCodec, EncodeError};
use rusmpp::Command;
use tokio_util::codec::{Decoder, Encoder};

/// Largest PDU accepted; a submit_sm with a full message_payload is well
/// under this.
pub const MAX_PDU: usize = 64 * 1024;
const HEADER: usize = 16;

/// One PDU from the peer.
#[derive(Debug)]
pub enum Frame {
    Command(Box<Command>),
    /// A PDU whose header was read but whose body rusmpp refused.
    Malformed {
        command_id: u32,
        sequence: u32,
        error: String,
    },
}

#[derive(Default)]
pub struct SmppCodec {
    inner: CommandCodec,
}

impl SmppCodec {
    pub fn new() -> SmppCodec {
        SmppCodec {
            inner: CommandCodec::new().with_max_length(MAX_PDU),
        }
    }
}

impl Decoder for SmppCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        if src.len() < 4 {
            return Ok(None);
        }
        let length = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if !(HEADER..=MAX_PDU).contains(&length) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("command_length {length} is out of range (16..={MAX_PDU}): the stream cannot be framed"),
            ));
        }
        if src.len() < length {
            src.reserve(length - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(length);
        let command_id = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let sequence = u32::from_be_bytes([frame[12], frame[13], frame[14], frame[15]]);
        let mut codec = CommandCodec::new().with_max_length(MAX_PDU);
        let decoded = codec.decode(&mut frame);
        match decoded {
            Ok(Some(command)) if !frame.has_remaining() => {
                Ok(Some(Frame::Command(Box::new(command))))
            }
            Ok(Some(_)) => Ok(Some(Frame::Malformed {
                command_id,
                sequence,
                error: format!("{} octets after the PDU's last field", frame.remaining()),
            })),
            Ok(None) => Ok(Some(Frame::Malformed {
                command_id,
                sequence,
                error: "PDU shorter than its fields".into(),
            })),
            Err(e) => Ok(Some(Frame::Malformed {
                command_id,
                sequence,
                error: e.to_string(),
            })),
        }
    }
}

impl Encoder<Command> for SmppCodec {
    type Error = std::io::Error;

    fn encode(&mut self, command: Command, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        self.inner.encode(command, dst).map_err(|e| match e {
            EncodeError::Io(e) => e,
            other => std::io::Error::other(other.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusmpp::{CommandStatus, Pdu};

    fn encoded(command: Command) -> BytesMut {
        let mut buf = BytesMut::new();
        SmppCodec::new().encode(command, &mut buf).unwrap();
        buf
    }

    #[test]
    fn a_bad_body_costs_one_pdu_not_the_stream() {
        let mut buf = BytesMut::new();
        // generic framing, command_id 0x00000004 (submit_sm), a body that
        // ends in the middle of its first field.
        buf.extend_from_slice(&[
            0, 0, 0, 19, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 7, b'a', b'b', b'c',
        ]);
        buf.extend_from_slice(&encoded(Command::new(
            CommandStatus::EsmeRok,
            8,
            Pdu::EnquireLink,
        )));
        let mut codec = SmppCodec::new();
        match codec.decode(&mut buf).unwrap() {
            Some(Frame::Malformed {
                command_id,
                sequence,
                ..
            }) => {
                assert_eq!((command_id, sequence), (4, 7));
            }
            other => panic!("expected a malformed frame, got {other:?}"),
        }
        match codec.decode(&mut buf).unwrap() {
            Some(Frame::Command(c)) => assert_eq!(c.sequence_number(), 8),
            other => panic!("expected enquire_link, got {other:?}"),
        }
    }

    #[test]
    fn an_unframeable_length_is_an_error() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 3, 1, 2, 3][..]);
        assert!(SmppCodec::new().decode(&mut buf).is_err());
        let mut buf = BytesMut::from(&[0x7Fu8, 0, 0, 0][..]);
        assert!(SmppCodec::new().decode(&mut buf).is_err());
    }

    #[test]
    fn waits_for_a_whole_pdu() {
        let full = encoded(Command::new(CommandStatus::EsmeRok, 1, Pdu::EnquireLink));
        let mut buf = BytesMut::from(&full[..10]);
        assert!(SmppCodec::new().decode(&mut buf).unwrap().is_none());
    }
}
