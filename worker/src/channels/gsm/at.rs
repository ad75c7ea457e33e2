//! The AT command line (3GPP TS 27.007 / 27.005) as the channel speaks it:
//! [`AtCodec`] cuts the byte stream into lines and the `>` prompt;
//! [`AtPort`] runs one command at a time, with a timeout, and sets aside
//! the unsolicited results (new message, status report) that a modem may
//! interleave with any answer.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Decoder, Encoder, Framed};

/// A longer line is garbage: it is cut and reported.
const MAX_LINE: usize = 2048;

/// What the modem said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Line(String),
    /// `> `: the modem waits for a PDU.
    Prompt,
}

#[derive(Default)]
pub struct AtCodec;

impl Decoder for AtCodec {
    type Item = Event;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, std::io::Error> {
        loop {
            // Line ends are \r\n as a rule; a lone \r or \n ends a line too.
            let skip = buf
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            buf.advance(skip);
            if buf.starts_with(b">") {
                let n = if buf.starts_with(b"> ") { 2 } else { 1 };
                buf.advance(n);
                return Ok(Some(Event::Prompt));
            }
            let end = buf.iter().position(|b| matches!(b, b'\r' | b'\n'));
            let take = match end {
                Some(end) => end,
                None if buf.len() > MAX_LINE => MAX_LINE,
                None => return Ok(None),
            };
            let line = buf.split_to(take);
            let text = String::from_utf8_lossy(&line).trim().to_owned();
            if !text.is_empty() {
                return Ok(Some(Event::Line(text)));
            }
        }
    }
}

impl Encoder<&[u8]> for AtCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: &[u8], dst: &mut BytesMut) -> Result<(), std::io::Error> {
        dst.extend_from_slice(item);
        Ok(())
    }
}

/// Why a command did not answer OK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AtError {
    #[error("no answer to {command} within {seconds} s")]
    Timeout { command: String, seconds: u64 },
    #[error("{command} answered ERROR")]
    Error { command: String },
    #[error("{command} answered +CMS ERROR: {code}")]
    Cms { command: String, code: u16 },
    #[error("{command} answered +CME ERROR: {code}")]
    Cme { command: String, code: u16 },
    #[error("the modem's port failed: {0}")]
    Port(String),
}

/// An unsolicited result, with the PDU line that follows `+CMT`/`+CDS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsolicited {
    pub line: String,
    pub pdu: Option<String>,
}

/// Results a modem sends on its own, whatever command is running.
fn is_unsolicited(line: &str) -> bool {
    [
        "+CMTI:", "+CDSI:", "+CMT:", "+CDS:", "RING", "+CRING:", "+CLIP:", "^", "+CIEV:",
    ]
    .iter()
    .any(|p| line.starts_with(p))
}

/// Unsolicited results followed by a PDU line.
fn carries_pdu(line: &str) -> bool {
    line.starts_with("+CMT:") || line.starts_with("+CDS:")
}

pub struct AtPort<T> {
    framed: Framed<T, AtCodec>,
    pending: VecDeque<Unsolicited>,
    /// A `+CMT`/`+CDS` whose PDU line is still to come.
    awaiting_pdu: Option<String>,
    /// Lines that arrived outside any command and are not unsolicited.
    stray: VecDeque<String>,
    pub round_trips: u64,
}

impl<T: AsyncRead + AsyncWrite + Unpin> AtPort<T> {
    pub fn new(io: T) -> Self {
        AtPort {
            framed: Framed::new(io, AtCodec),
            pending: VecDeque::new(),
            awaiting_pdu: None,
            stray: VecDeque::new(),
            round_trips: 0,
        }
    }

    async fn next_event(&mut self) -> Result<Event, AtError> {
        match self.framed.next().await {
            Some(Ok(event)) => Ok(event),
            Some(Err(e)) => Err(AtError::Port(e.to_string())),
            None => Err(AtError::Port("the device closed".into())),
        }
    }

    /// Writes bytes outside any command (ESC to leave a PDU prompt).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), AtError> {
        self.write(bytes).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), AtError> {
        self.framed
            .send(bytes)
            .await
            .map_err(|e| AtError::Port(e.to_string()))
    }

    /// Sends `command` and returns the lines of its answer (echo and
    /// unsolicited results taken out) once it ends in OK.
    pub async fn command(
        &mut self,
        command: &str,
        timeout: Duration,
    ) -> Result<Vec<String>, AtError> {
        self.round_trips += 1;
        self.write(format!("{command}\r").as_bytes()).await?;
        self.answer(command, timeout).await
    }

    /// `AT+CMGS=<length>`, the PDU after the prompt, and the TP-MR the
    /// network gave it.
    pub async fn send_pdu(
        &mut self,
        pdu_hex: &str,
        length: usize,
        prompt_timeout: Duration,
        send_timeout: Duration,
    ) -> Result<u8, AtError> {
        let command = format!("AT+CMGS={length}");
        self.round_trips += 1;
        self.write(format!("{command}\r").as_bytes()).await?;
        let prompted = tokio::time::timeout(prompt_timeout, async {
            loop {
                match self.next_event().await? {
                    Event::Prompt => return Ok(()),
                    Event::Line(line) => {
                        let Some(line) = self.absorb(line) else {
                            continue;
                        };
                        if let Some(e) = final_error(&command, &line) {
                            return Err(e);
                        }
                        self.stray.push_back(line);
                    }
                }
            }
        })
        .await;
        match prompted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                // Leave PDU input, if the modem is in it after all. A port
                // that cannot take this byte fails the next command too;
                // the timeout is the error worth reporting.
                let _ = self.write(&[0x1B]).await;
                return Err(AtError::Timeout {
                    command,
                    seconds: prompt_timeout.as_secs(),
                });
            }
        }
        let mut pdu = pdu_hex.as_bytes().to_vec();
        pdu.push(0x1A);
        self.write(&pdu).await?;
        let lines = self.answer(&command, send_timeout).await?;
        lines
            .iter()
            .find_map(|l| l.strip_prefix("+CMGS:"))
            .and_then(|mr| mr.split(',').next()?.trim().parse().ok())
            .ok_or_else(|| AtError::Port(format!("{command} answered OK without +CMGS: {lines:?}")))
    }

    async fn answer(&mut self, command: &str, timeout: Duration) -> Result<Vec<String>, AtError> {
        let collect = async {
            let mut lines = Vec::new();
            loop {
                let line = match self.next_event().await? {
                    Event::Line(line) => line,
                    // A prompt we did not ask for: the modem is confused.
                    Event::Prompt => continue,
                };
                let Some(line) = self.absorb(line) else {
                    continue;
                };
                if line == "OK" {
                    return Ok(lines);
                }
                if let Some(e) = final_error(command, &line) {
                    return Err(e);
                }
                if !line.eq_ignore_ascii_case(command) {
                    lines.push(line); // not the echo
                }
            }
        };
        tokio::time::timeout(timeout, collect)
            .await
            .unwrap_or_else(|_| {
                Err(AtError::Timeout {
                    command: command.to_owned(),
                    seconds: timeout.as_secs(),
                })
            })
    }

    /// Sets aside an unsolicited result (or the PDU line it announced);
    /// returns any other line.
    fn absorb(&mut self, line: String) -> Option<String> {
        if let Some(head) = self.awaiting_pdu.take() {
            self.pending.push_back(Unsolicited {
                line: head,
                pdu: Some(line),
            });
            return None;
        }
        if !is_unsolicited(&line) {
            return Some(line);
        }
        if carries_pdu(&line) {
            self.awaiting_pdu = Some(line);
        } else {
            self.pending.push_back(Unsolicited { line, pdu: None });
        }
        None
    }

    /// Reads and drops whatever the modem says for `duration`: the tail
    /// of an earlier exchange, before start-up.
    pub async fn drain(&mut self, duration: Duration) -> Result<(), AtError> {
        let deadline = tokio::time::Instant::now() + duration;
        while let Ok(event) = tokio::time::timeout_at(deadline, self.next_event()).await {
            event?;
        }
        self.pending.clear();
        self.awaiting_pdu = None;
        self.stray.clear();
        Ok(())
    }

    /// An unsolicited result set aside during a command, if any.
    pub fn take_unsolicited(&mut self) -> Option<Unsolicited> {
        self.pending.pop_front()
    }

    /// Lines that were neither answers nor unsolicited results.
    pub fn take_stray(&mut self) -> Option<String> {
        self.stray.pop_front()
    }

    /// Waits for the modem to say something on its own; cancel-safe.
    pub async fn listen(&mut self) -> Result<(), AtError> {
        if let Event::Line(line) = self.next_event().await? {
            if let Some(stray) = self.absorb(line) {
                self.stray.push_back(stray);
            }
        }
        Ok(())
    }
}

fn final_error(command: &str, line: &str) -> Option<AtError> {
    let command = command.to_owned();
    if line == "ERROR" {
        return Some(AtError::Error { command });
    }
    let code = |rest: &str| rest.trim().parse::<u16>().unwrap_or(u16::MAX);
    if let Some(rest) = line.strip_prefix("+CMS ERROR:") {
        return Some(AtError::Cms {
            command,
            code: code(rest),
        });
    }
    if let Some(rest) = line.strip_prefix("+CME ERROR:") {
        return Some(AtError::Cme {
            command,
            code: code(rest),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn decode_all(input: &[u8]) -> Vec<Event> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(e) = AtCodec.decode(&mut buf).unwrap() {
            out.push(e);
        }
        out
    }

    #[test]
    fn lines_prompts_and_garbage() {
        let events = decode_all(b"AT\r\r\nOK\r\n\r\n> 0011\xff\xfe\r\n+CMGS: 7\r\n");
        assert_eq!(
            events,
            vec![
                Event::Line("AT".into()),
                Event::Line("OK".into()),
                Event::Prompt,
                Event::Line("0011\u{FFFD}\u{FFFD}".into()),
                Event::Line("+CMGS: 7".into()),
            ]
        );
        // An endless line is cut rather than held.
        let events = decode_all(&[b'x'; MAX_LINE + 10]);
        assert_eq!(events.len(), 1);
    }

    #[tokio::test]
    async fn unsolicited_results_inside_an_answer_are_set_aside() {
        let (ours, mut modem) = tokio::io::duplex(4096);
        let mut port = AtPort::new(ours);
        modem
            .write_all(b"AT+CSQ\r\r\n+CMTI: \"SM\",3\r\n\r\n+CDS: 25\r\n0006000B91\r\n\r\n+CSQ: 20,99\r\n\r\nOK\r\n")
            .await
            .unwrap();
        let lines = port
            .command("AT+CSQ", Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(lines, vec!["+CSQ: 20,99"]);
        assert_eq!(port.take_unsolicited().unwrap().line, "+CMTI: \"SM\",3");
        let cds = port.take_unsolicited().unwrap();
        assert_eq!(cds.pdu.as_deref(), Some("0006000B91"));
        modem.write_all(b"\r\n+CMS ERROR: 321\r\n").await.unwrap();
        let err = port
            .command("AT+CMGR=9", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            AtError::Cms {
                command: "AT+CMGR=9".into(),
                code: 321
            }
        );
        let err = port
            .command("AT", Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(err, AtError::Timeout { .. }));
    }

    #[tokio::test]
    async fn a_pdu_goes_after_the_prompt() {
        let (ours, mut modem) = tokio::io::duplex(4096);
        let mut port = AtPort::new(ours);
        modem.write_all(b"\r\n> ").await.unwrap();
        modem
            .write_all(b"\r\n+CMGS: 17\r\n\r\nOK\r\n")
            .await
            .unwrap();
        let mr = port
            .send_pdu("0011", 1, Duration::from_secs(1), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(mr, 17);
        let mut written = vec![0u8; 64];
        let n = tokio::io::AsyncReadExt::read(&mut modem, &mut written)
            .await
            .unwrap();
        assert_eq!(&written[..n], b"AT+CMGS=1\r0011\x1A");
    }
}
