//! A GSM modem simulator on a pseudo-terminal: the channel opens its path
//! like any serial device and talks AT commands in PDU mode (3GPP TS
//! 27.005/27.007) to it.
//!
//! It answers the commands a modem channel uses (echo until `ATE0`, PIN
//! state, `+CMGF`, `+CNMI`, `+CREG`, `+CSQ`, `+CPMS`, `+CMGL`, `+CMGR`,
//! `+CMGD`, `+CMGS` with its `>` prompt), decodes the SMS-SUBMITs it is
//! given ([`pdu`], written apart from the channel's encoder) and records
//! them, sends status reports and inbound messages on request, and can be
//! told to fail submissions, stall, send garbage, or disappear.
//!
//! - [`pdu`]: the simulator's own PDU coding.
//! - [`pty`]: the pseudo-terminal pair and its async master side.
//! - [`at`]: the command interpreter.

mod at;
pub mod pdu;
mod pty;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use pdu::Coding;

/// What the simulated modem does; changed while it runs.
#[derive(Clone, Debug)]
pub struct ModemBehaviour {
    /// The SIM asks for this PIN before SMS commands work.
    pub pin: Option<String>,
    /// Answer the next N submissions with `+CMS ERROR: <code>`.
    pub fail_submits: u32,
    pub fail_code: u16,
    /// Send a status report with this TP-ST after each submission that
    /// asked for one; None sends none.
    pub report_status: Option<u8>,
    /// The first TP-MR handed out (they wrap at 256).
    pub first_reference: u8,
    /// Read commands but answer nothing (a hung modem).
    pub stalled: bool,
    /// Answer every command this much later.
    pub delay: Duration,
    /// Store status reports in a memory of their own ("SR"), readable only
    /// while it is selected with `AT+CPMS`, as some modems do.
    pub reports_apart: bool,
}

impl Default for ModemBehaviour {
    fn default() -> Self {
        ModemBehaviour {
            pin: None,
            fail_submits: 0,
            fail_code: 500,
            report_status: Some(0),
            first_reference: 1,
            stalled: false,
            delay: Duration::ZERO,
            reports_apart: false,
        }
    }
}

/// One SMS-SUBMIT the modem accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    pub reference: u8,
    pub submit: pdu::Submit,
}

/// A message stored on the simulated SIM.
#[derive(Clone, Debug)]
struct Stored {
    /// 0 received unread, 1 received read.
    stat: u8,
    pdu: String,
    length: usize,
}

/// State the interpreter and the test share.
#[derive(Default)]
struct State {
    behaviour: ModemBehaviour,
    /// Entered the right PIN since start.
    unlocked: bool,
    echo: bool,
    /// +CNMI <mt> and <ds>.
    new_message_mode: u8,
    report_mode: u8,
    storage: std::collections::BTreeMap<u16, Stored>,
    /// Status reports when they are kept apart.
    reports: std::collections::BTreeMap<u16, Stored>,
    /// The memory `AT+CPMS` selected for reading and deleting.
    reading_reports: bool,
    next_reference: Option<u8>,
    submitted: Vec<Submitted>,
    /// Every command line received, for counting round trips.
    commands: Vec<String>,
    deleted: Vec<u16>,
}

impl State {
    /// The memory commands read and delete in.
    fn selected(&mut self) -> &mut std::collections::BTreeMap<u16, Stored> {
        if self.reading_reports {
            &mut self.reports
        } else {
            &mut self.storage
        }
    }

    /// Stores a status report where this modem keeps them: its memory and
    /// index.
    fn store_report(&mut self, pdu: String, length: usize) -> (&'static str, u16) {
        if !self.behaviour.reports_apart {
            return ("SM", self.store(pdu, length));
        }
        let index = (1..).find(|i| !self.reports.contains_key(i)).unwrap();
        self.reports.insert(
            index,
            Stored {
                stat: 0,
                pdu,
                length,
            },
        );
        ("SR", index)
    }

    fn store(&mut self, pdu: String, length: usize) -> u16 {
        let index = (1..).find(|i| !self.storage.contains_key(i)).unwrap();
        self.storage.insert(
            index,
            Stored {
                stat: 0,
                pdu,
                length,
            },
        );
        index
    }
}

/// Lines to write to the terminal from outside the interpreter.
enum Control {
    Write(Vec<u8>),
    Vanish,
}

/// A running simulated modem; gone when dropped.
pub struct Modem {
    dir: PathBuf,
    link: PathBuf,
    state: Arc<Mutex<State>>,
    control: Mutex<mpsc::UnboundedSender<Control>>,
    task: Mutex<JoinHandle<()>>,
}

impl Modem {
    /// Starts a modem whose SIM already holds `stored` messages (PDU hex
    /// with SMSC address, TPDU length).
    pub fn start(behaviour: ModemBehaviour, stored: &[(String, usize)]) -> anyhow::Result<Modem> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("smsbus-modem-{}-{n}", std::process::id()));
        Modem::start_at(&dir, behaviour, stored)
    }

    /// Like [`Modem::start`], with the device at `dir/ttyGSM0`; `dir` is
    /// removed when the modem is dropped.
    pub fn start_at(
        dir: &Path,
        behaviour: ModemBehaviour,
        stored: &[(String, usize)],
    ) -> anyhow::Result<Modem> {
        let dir = dir.to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let link = dir.join("ttyGSM0");
        let mut state = State {
            echo: true,
            next_reference: Some(behaviour.first_reference),
            behaviour,
            ..State::default()
        };
        for (pdu, length) in stored {
            state.store(pdu.clone(), *length);
        }
        let state = Arc::new(Mutex::new(state));
        let (control, task) = spawn(&link, state.clone())?;
        Ok(Modem {
            dir,
            link,
            state,
            control: Mutex::new(control),
            task: Mutex::new(task),
        })
    }

    /// The device path to put in the channel's config.
    pub fn path(&self) -> &Path {
        &self.link
    }

    pub fn set_behaviour(&self, change: impl FnOnce(&mut ModemBehaviour)) {
        change(&mut self.state.lock().unwrap().behaviour);
    }

    /// The submissions accepted so far.
    pub fn submitted(&self) -> Vec<Submitted> {
        self.state.lock().unwrap().submitted.clone()
    }

    /// The texts of the messages submitted so far, concatenated parts
    /// joined in order.
    pub fn texts(&self) -> Vec<(String, String, usize)> {
        let submitted = self.submitted();
        let mut out: Vec<(String, String, usize)> = Vec::new();
        let mut partial: std::collections::HashMap<(String, u16), Vec<Option<String>>> =
            Default::default();
        for s in submitted {
            match s.submit.concat {
                None => out.push((s.submit.to, s.submit.text, 1)),
                Some((reference, total, seq)) => {
                    let parts = partial
                        .entry((s.submit.to.clone(), reference))
                        .or_insert_with(|| vec![None; total as usize]);
                    if let Some(slot) = parts.get_mut(seq as usize - 1) {
                        *slot = Some(s.submit.text);
                    }
                    if parts.iter().all(Option::is_some) {
                        let text = parts.iter().flatten().cloned().collect();
                        out.push((s.submit.to.clone(), text, total as usize));
                        partial.remove(&(s.submit.to, reference));
                    }
                }
            }
        }
        out
    }

    /// Every AT command line the modem received.
    pub fn commands(&self) -> Vec<String> {
        self.state.lock().unwrap().commands.clone()
    }

    /// Messages still stored on the SIM, and the indexes deleted so far.
    pub fn stored(&self) -> (usize, Vec<u16>) {
        let s = self.state.lock().unwrap();
        (s.storage.len() + s.reports.len(), s.deleted.clone())
    }

    /// A message from `from` arrives: stored on the SIM (one entry per
    /// part, parts in the given `order` of sequence numbers if any) and
    /// announced with `+CMTI`.
    pub fn deliver(&self, from: &str, text: &str, coding: Coding, order: Option<&[usize]>) {
        let parts = pdu::encode_deliver(from, text, coding, 0x5A);
        let order: Vec<usize> =
            order.map_or_else(|| (1..=parts.len()).collect(), <[usize]>::to_vec);
        for seq in order {
            let (pdu, length) = parts[seq - 1].clone();
            self.arrive(pdu, length);
        }
    }

    /// A raw SMS-DELIVER or status report arrives.
    pub fn arrive(&self, pdu: String, length: usize) {
        let mut s = self.state.lock().unwrap();
        let index = s.store(pdu, length);
        if s.new_message_mode == 1 {
            let line = format!("\r\n+CMTI: \"SM\",{index}\r\n");
            let _ = self
                .control
                .lock()
                .unwrap()
                .send(Control::Write(line.into_bytes()));
        }
    }

    /// Writes bytes to the line as they are: garbage, a stray result.
    pub fn write_raw(&self, bytes: &[u8]) {
        let _ = self
            .control
            .lock()
            .unwrap()
            .send(Control::Write(bytes.to_vec()));
    }

    /// The device disappears, as a USB modem unplugged: the terminal is
    /// closed and its path removed.
    pub async fn vanish(&self) {
        let _ = self.control.lock().unwrap().send(Control::Vanish);
        let _ = std::fs::remove_file(&self.link);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// The device comes back (a new terminal at the same path), with its
    /// SIM as it was.
    pub fn reappear(&self) -> anyhow::Result<()> {
        let (control, task) = spawn(&self.link, self.state.clone())?;
        *self.control.lock().unwrap() = control;
        let old = std::mem::replace(&mut *self.task.lock().unwrap(), task);
        old.abort();
        Ok(())
    }
}

impl Drop for Modem {
    fn drop(&mut self) {
        self.task.lock().unwrap().abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn(
    link: &Path,
    state: Arc<Mutex<State>>,
) -> anyhow::Result<(mpsc::UnboundedSender<Control>, JoinHandle<()>)> {
    let terminal = pty::Terminal::open()?;
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(terminal.device(), link)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(at::run(terminal, state, rx, tx.clone()));
    Ok((tx, task))
}
