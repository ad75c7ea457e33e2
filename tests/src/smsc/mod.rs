//! An SMSC simulator: an SMPP 3.4 server over TCP, built on rusmpp's codec
//! (not on the worker's SMPP code, so a mistake in one is caught by the
//! other).
//!
//! It authenticates binds, answers `submit_sm` with message ids (hex or
//! decimal), sends delivery receipts after a delay, originates inbound
//! messages (single and concatenated, in any order), injects faults on
//! request, and records everything it received, decoded and reassembled,
//! for tests to assert on.
//!
//! - [`behaviour`]: what the simulator does (ids, reports, faults); can be
//!   changed while it runs.
//! - [`session`]: one bound connection.
//! - [`text`]: decoding and encoding short messages (data coding, UDH, SAR).
//! - [`record`]: what was received, with multipart reassembly.
//! - [`tls`]: a throwaway CA and server certificate for the TLS listener.

pub mod behaviour;
pub mod record;
mod session;
pub mod text;
pub(crate) mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusmpp::CommandStatus;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use behaviour::{Behaviour, IdFormat, ReportOutcome};
pub use record::{Received, SubmittedPart};
use session::Outgoing;
pub use text::{Concat, InboundText};

/// A running simulator; stops when dropped.
pub struct Smsc {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
    tls: Option<tls::Tls>,
}

/// State shared by the accept loop and every session.
struct Shared {
    system_id: String,
    password: String,
    behaviour: Mutex<Behaviour>,
    record: Mutex<record::Record>,
    sessions: Mutex<Vec<SessionHandle>>,
    next_session: AtomicU64,
    /// submit_sm PDUs received, across sessions (faults count on it).
    submits: AtomicU64,
    /// Message ids handed out.
    next_message_id: AtomicU64,
    /// Binds refused, connections accepted.
    binds_refused: AtomicU64,
    connections: AtomicU64,
}

#[derive(Clone)]
struct SessionHandle {
    id: u64,
    /// Bound as receiver or transceiver: may be sent deliver_sm.
    receives: bool,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    /// deliver_sm/data_sm sent and not yet answered, at most
    /// [`DELIVER_WINDOW`], as an SMSC keeps a window of its own.
    window: Arc<tokio::sync::Semaphore>,
}

/// Unanswered deliver_sm per session.
const DELIVER_WINDOW: usize = 100;

impl SessionHandle {
    /// Sends a deliver_sm or data_sm within the window; the status of its
    /// answer, or None when none came in `timeout` or the session ended.
    async fn request(&self, pdu: rusmpp::Pdu, timeout: Duration) -> Option<CommandStatus> {
        let _slot = self.window.clone().acquire_owned().await.ok()?;
        let (answer, waiting) = tokio::sync::oneshot::channel();
        self.outgoing.send(Outgoing::Request(pdu, answer)).ok()?;
        tokio::time::timeout(timeout, waiting).await.ok()?.ok()
    }
}

impl Smsc {
    /// Starts a simulator on 127.0.0.1 (any free port) that accepts binds
    /// with `system_id` and `password`.
    pub async fn start(system_id: &str, password: &str, behaviour: Behaviour) -> Smsc {
        Smsc::start_on("127.0.0.1:0", system_id, password, behaviour)
            .await
            .expect("start the SMSC simulator")
    }

    /// Like [`Smsc::start`], speaking TLS with a certificate for
    /// `localhost` and `127.0.0.1` from a throwaway CA, whose PEM file is
    /// [`Smsc::ca_file`].
    pub async fn start_tls(system_id: &str, password: &str, behaviour: Behaviour) -> Smsc {
        let tls = tls::Tls::generate().expect("a test certificate");
        let mut smsc = Smsc::start_with(
            "127.0.0.1:0",
            system_id,
            password,
            behaviour,
            Some(tls.acceptor.clone()),
        )
        .await
        .expect("start the SMSC simulator");
        smsc.tls = Some(tls);
        smsc
    }

    /// The CA file a client must trust (TLS simulators only).
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.tls.as_ref().map(|t| t.ca_file.as_path())
    }

    pub async fn start_on(
        addr: &str,
        system_id: &str,
        password: &str,
        behaviour: Behaviour,
    ) -> std::io::Result<Smsc> {
        Smsc::start_with(addr, system_id, password, behaviour, None).await
    }

    async fn start_with(
        addr: &str,
        system_id: &str,
        password: &str,
        behaviour: Behaviour,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<Smsc> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            system_id: system_id.to_owned(),
            password: password.to_owned(),
            behaviour: Mutex::new(behaviour),
            record: Mutex::new(record::Record::default()),
            sessions: Mutex::new(Vec::new()),
            next_session: AtomicU64::new(1),
            submits: AtomicU64::new(0),
            next_message_id: AtomicU64::new(0x1000),
            binds_refused: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        });
        let accepting = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                accepting.connections.fetch_add(1, Ordering::Relaxed);
                let shared = accepting.clone();
                match tls.clone() {
                    None => {
                        tokio::spawn(session::run(shared, stream));
                    }
                    Some(acceptor) => {
                        tokio::spawn(async move {
                            match acceptor.accept(stream).await {
                                Ok(stream) => session::run(shared, stream).await,
                                Err(e) => eprintln!("smsc: TLS handshake failed: {e}"),
                            }
                        });
                    }
                }
            }
        });
        Ok(Smsc {
            addr,
            shared,
            accept,
            tls: None,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes what the simulator does from now on.
    pub fn set_behaviour(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.shared.behaviour.lock().unwrap());
    }

    /// Every submit_sm part received, in order of arrival.
    pub fn parts(&self) -> Vec<SubmittedPart> {
        self.shared.record.lock().unwrap().parts.clone()
    }

    /// Every complete message received (parts reassembled).
    pub fn received(&self) -> Vec<Received> {
        self.shared.record.lock().unwrap().messages.clone()
    }

    /// How many submit_sm PDUs arrived, accepted or not.
    pub fn submit_count(&self) -> u64 {
        self.shared.submits.load(Ordering::Relaxed)
    }

    pub fn connection_count(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    pub fn binds_refused(&self) -> u64 {
        self.shared.binds_refused.load(Ordering::Relaxed)
    }

    /// Sessions bound right now.
    pub fn bound_sessions(&self) -> usize {
        self.shared.sessions.lock().unwrap().len()
    }

    /// Closes every connection at once, as a provider restarting would.
    pub fn drop_connections(&self) {
        for s in self.shared.sessions.lock().unwrap().drain(..) {
            let _ = s.outgoing.send(Outgoing::Close);
        }
    }

    /// Sends raw bytes to every bound session (malformed PDUs, garbage).
    pub fn send_raw(&self, bytes: &[u8]) -> usize {
        let sessions = self.shared.sessions.lock().unwrap().clone();
        for s in &sessions {
            let _ = s.outgoing.send(Outgoing::Raw(bytes.to_vec()));
        }
        sessions.len()
    }

    /// Originates an inbound (mobile-originated) message to a bound
    /// receiver: one deliver_sm per part, in the order given. Returns the
    /// command status of each deliver_sm_resp, or an error when no receiver
    /// is bound or a response does not come within `timeout`.
    pub async fn deliver(
        &self,
        message: &InboundText,
        timeout: Duration,
    ) -> Result<Vec<CommandStatus>, String> {
        let pdus = if message.data_sm {
            vec![message.data_sm()?.into()]
        } else {
            message.deliver_sms()?.into_iter().map(Into::into).collect()
        };
        self.deliver_pdus(pdus, timeout).await
    }

    /// Sends deliver_sm/data_sm PDUs as given (e.g. an incomplete set of
    /// parts).
    pub async fn deliver_pdus(
        &self,
        pdus: Vec<rusmpp::Pdu>,
        timeout: Duration,
    ) -> Result<Vec<CommandStatus>, String> {
        let handle = self
            .shared
            .sessions
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.receives)
            .cloned()
            .ok_or("no receiver bound")?;
        let mut statuses = Vec::new();
        for pdu in pdus {
            match handle.request(pdu, timeout).await {
                Some(status) => statuses.push(status),
                None => return Err("no deliver_sm_resp in time".into()),
            }
        }
        Ok(statuses)
    }
}

impl Drop for Smsc {
    fn drop(&mut self) {
        self.accept.abort();
        self.drop_connections();
    }
}

impl Shared {
    fn register(&self, handle: SessionHandle) {
        self.sessions.lock().unwrap().push(handle);
    }

    fn unregister(&self, id: u64) {
        self.sessions.lock().unwrap().retain(|s| s.id != id);
    }

    /// The session a receipt for a message submitted on `origin` goes to:
    /// that session if it receives, else any receiver.
    fn report_route(&self, origin: u64) -> Option<SessionHandle> {
        let sessions = self.sessions.lock().unwrap();
        sessions
            .iter()
            .find(|s| s.id == origin && s.receives)
            .or_else(|| sessions.iter().find(|s| s.receives))
            .cloned()
    }
}
