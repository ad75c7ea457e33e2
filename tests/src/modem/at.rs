//! The simulated modem's AT command interpreter (TS 27.007, TS 27.005 in
//! PDU mode). Results are verbose: `\r\n<line>\r\n` per line.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::pty::Terminal;
use super::{pdu, Control, State, Submitted};

const CTRL_Z: u8 = 0x1A;
const ESC: u8 = 0x1B;

/// `+CMS ERROR` for SMS commands while the SIM wants its PIN.
const SIM_PIN_REQUIRED: u16 = 311;
const INVALID_INDEX: u16 = 321;
const INVALID_PDU: u16 = 304;

pub(super) async fn run(
    terminal: Terminal,
    state: Arc<Mutex<State>>,
    mut control: mpsc::UnboundedReceiver<Control>,
    urcs: mpsc::UnboundedSender<Control>,
) {
    let mut line = Vec::new();
    // The announced length while a PDU is being typed after `>`.
    let mut pdu_length: Option<usize> = None;
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::select! {
            read = terminal.read(&mut buf) => match read {
                Ok(n) if n > 0 => n,
                _ => return,
            },
            c = control.recv() => match c {
                Some(Control::Write(bytes)) => {
                    if terminal.write_all(&bytes).await.is_err() { return }
                    continue;
                }
                Some(Control::Vanish) | None => return,
            },
        };
        let mut out = Vec::new();
        for &b in &buf[..n] {
            let (echo, stalled) = {
                let s = state.lock().unwrap();
                (s.echo, s.behaviour.stalled)
            };
            // A hung modem takes nothing in and answers nothing.
            if stalled {
                continue;
            }
            if echo {
                out.push(b);
            }
            match pdu_length {
                Some(length) => match b {
                    CTRL_Z => {
                        let hex = String::from_utf8_lossy(&line).trim().to_owned();
                        line.clear();
                        pdu_length = None;
                        let answer = submit(&state, &hex, length, &urcs);
                        respond(&mut out, answer);
                    }
                    ESC => {
                        line.clear();
                        pdu_length = None;
                        respond(&mut out, Answer::ok());
                    }
                    b'\r' | b'\n' => {}
                    _ => line.push(b),
                },
                None => match b {
                    b'\r' => {
                        let command = String::from_utf8_lossy(&line).trim().to_owned();
                        line.clear();
                        if command.is_empty() {
                            continue;
                        }
                        state.lock().unwrap().commands.push(command.clone());
                        let answer = command_answer(&state, &command);
                        if let Some(length) = answer.prompt {
                            pdu_length = Some(length);
                        }
                        respond(&mut out, answer);
                    }
                    b'\n' | ESC => {}
                    _ if line.len() < 1024 => line.push(b),
                    _ => {}
                },
            }
        }
        let delay = state.lock().unwrap().behaviour.delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if !out.is_empty() && terminal.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// What a command gets back.
struct Answer {
    lines: Vec<String>,
    /// OK, ERROR, +CMS ERROR: n ...; None after a `>` prompt.
    result: Option<String>,
    /// `AT+CMGS=<length>`: the prompt, then a PDU of that length.
    prompt: Option<usize>,
}

impl Answer {
    fn ok() -> Answer {
        Answer::lines(Vec::new())
    }

    fn lines(lines: Vec<String>) -> Answer {
        Answer {
            lines,
            result: Some("OK".into()),
            prompt: None,
        }
    }

    fn error() -> Answer {
        Answer {
            lines: Vec::new(),
            result: Some("ERROR".into()),
            prompt: None,
        }
    }

    fn cms(code: u16) -> Answer {
        Answer {
            lines: Vec::new(),
            result: Some(format!("+CMS ERROR: {code}")),
            prompt: None,
        }
    }
}

fn respond(out: &mut Vec<u8>, answer: Answer) {
    for l in &answer.lines {
        out.extend_from_slice(format!("\r\n{l}\r\n").as_bytes());
    }
    if let Some(result) = &answer.result {
        out.extend_from_slice(format!("\r\n{result}\r\n").as_bytes());
    }
    if answer.prompt.is_some() {
        out.extend_from_slice(b"\r\n> ");
    }
}

fn command_answer(state: &Mutex<State>, command: &str) -> Answer {
    let upper = command.to_ascii_uppercase();
    let Some(rest) = upper.strip_prefix("AT") else {
        return Answer::error();
    };
    let original = &command[2..];
    let mut s = state.lock().unwrap();
    let locked = s.behaviour.pin.is_some() && !s.unlocked;
    let sms_command =
        rest.starts_with("+CMG") || rest.starts_with("+CNMI") || rest.starts_with("+CPMS");
    if locked && sms_command {
        return Answer::cms(SIM_PIN_REQUIRED);
    }
    match rest {
        "" | "Z" | "&F" | "+CMEE=1" | "+CMEE=2" | "+CMGF=0" | "+CSMS=0" | "+CREG=0" | "+CREG=1" => {
            if rest == "Z" || rest == "&F" {
                s.echo = true;
            }
            Answer::ok()
        }
        "E0" => {
            s.echo = false;
            Answer::ok()
        }
        "E1" => {
            s.echo = true;
            Answer::ok()
        }
        "+CPIN?" => Answer::lines(vec![if locked {
            "+CPIN: SIM PIN".into()
        } else {
            "+CPIN: READY".into()
        }]),
        "+CREG?" => Answer::lines(vec!["+CREG: 0,1".into()]),
        "+CSQ" => Answer::lines(vec!["+CSQ: 21,99".into()]),
        "+CGMI" => Answer::lines(vec!["smsbus".into()]),
        "+CGMM" => Answer::lines(vec!["simulated modem".into()]),
        "+CSCA?" => Answer::lines(vec!["+CSCA: \"+31624000000\",145".into()]),
        _ if rest.starts_with("+CPIN=") => {
            let given = original[6..].trim_matches('"');
            if s.behaviour.pin.as_deref() == Some(given) {
                s.unlocked = true;
                Answer::ok()
            } else {
                Answer {
                    lines: Vec::new(),
                    result: Some("+CME ERROR: 16".into()),
                    prompt: None,
                }
            }
        }
        _ if rest.starts_with("+CNMI=") => {
            let fields: Vec<u8> = rest[6..]
                .split(',')
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            s.new_message_mode = fields.get(1).copied().unwrap_or(0);
            s.report_mode = fields.get(3).copied().unwrap_or(0);
            Answer::ok()
        }
        _ if rest.starts_with("+CPMS=") => {
            s.reading_reports = rest[6..].starts_with("\"SR\"");
            if s.reading_reports && !s.behaviour.reports_apart {
                s.reading_reports = false;
                return Answer::cms(302);
            }
            let used = s.selected().len();
            Answer::lines(vec![format!("+CPMS: {used},30,{used},30,{used},30")])
        }
        _ if rest.starts_with("+CMGL=") => {
            let wanted: u8 = rest[6..].parse().unwrap_or(4);
            let mut lines = Vec::new();
            for (index, m) in s.selected().iter_mut() {
                if wanted == 4 || wanted == m.stat {
                    lines.push(format!("+CMGL: {index},{},,{}", m.stat, m.length));
                    lines.push(m.pdu.clone());
                    m.stat = 1;
                }
            }
            Answer::lines(lines)
        }
        _ if rest.starts_with("+CMGR=") => match rest[6..].parse::<u16>() {
            Ok(index) => match s.selected().get_mut(&index) {
                Some(m) => {
                    let lines = vec![format!("+CMGR: {},,{}", m.stat, m.length), m.pdu.clone()];
                    m.stat = 1;
                    Answer::lines(lines)
                }
                None => Answer::cms(INVALID_INDEX),
            },
            Err(_) => Answer::error(),
        },
        _ if rest.starts_with("+CMGD=") => {
            let index = rest[6..]
                .split(',')
                .next()
                .and_then(|i| i.parse::<u16>().ok());
            match index {
                Some(i) if s.selected().remove(&i).is_some() => {
                    s.deleted.push(i);
                    Answer::ok()
                }
                Some(_) => Answer::cms(INVALID_INDEX),
                None => Answer::error(),
            }
        }
        _ if rest.starts_with("+CMGS=") => match rest[6..].parse::<usize>() {
            Ok(length) if (1..=164).contains(&length) => Answer {
                lines: Vec::new(),
                result: None,
                prompt: Some(length),
            },
            _ => Answer::cms(INVALID_PDU),
        },
        _ => Answer::error(),
    }
}

fn submit(
    state: &Arc<Mutex<State>>,
    hex: &str,
    length: usize,
    urcs: &mpsc::UnboundedSender<Control>,
) -> Answer {
    let decoded = match pdu::decode_submit(hex, length) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("modem: refusing a PDU: {e}");
            return Answer::cms(INVALID_PDU);
        }
    };
    let mut s = state.lock().unwrap();
    if s.behaviour.fail_submits > 0 {
        s.behaviour.fail_submits -= 1;
        return Answer::cms(s.behaviour.fail_code);
    }
    let reference = s.next_reference.unwrap_or(0);
    s.next_reference = Some(reference.wrapping_add(1));
    let report = s.behaviour.report_status.filter(|_| decoded.status_report);
    let recipient = decoded.to.clone();
    s.submitted.push(Submitted {
        reference,
        submit: decoded,
    });
    if let Some(status) = report {
        let (pdu, length) = pdu::encode_status_report(reference, &recipient, status);
        let state = state.clone();
        let urcs = urcs.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let urc = {
                let mut s = state.lock().unwrap();
                match s.report_mode {
                    1 => format!("\r\n+CDS: {length}\r\n{pdu}\r\n"),
                    mode => {
                        let (memory, index) = s.store_report(pdu, length);
                        if mode == 2 {
                            format!("\r\n+CDSI: \"{memory}\",{index}\r\n")
                        } else {
                            return;
                        }
                    }
                }
            };
            let _ = urcs.send(Control::Write(urc.into_bytes()));
        });
    }
    Answer::lines(vec![format!("+CMGS: {reference}")])
}
