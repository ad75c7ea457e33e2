//! Submissions: refused at once when the bind, the input, the window or
//! the rate says so; parts of long messages held until the whole message
//! is there; handed to the group commit, and answered after it.

use rusmpp::pdus::SubmitMultiResp;
use rusmpp::values::{Npi, Ton, UnsuccessSme};

use super::*;

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    pub(super) async fn submit(
        &mut self,
        sequence: u32,
        reply: Reply,
        read: Result<Submission, Refusal>,
    ) -> std::io::Result<()> {
        let Some((bind, bind_type)) = self.bind.clone() else {
            return self
                .refuse(sequence, reply, CommandStatus::EsmeRinvbndsts)
                .await;
        };
        if !bind_type.transmits() {
            return self
                .refuse(sequence, reply, CommandStatus::EsmeRinvbndsts)
                .await;
        }
        let account = bind.account.name.as_str();
        let submission = match read {
            Ok(s) => s,
            Err(refusal) => {
                tracing::info!(account, peer = %self.peer, status = ?refusal.status, "smpp server: submission refused: {refusal}");
                bind.counters.refused.fetch_add(1, Ordering::Relaxed);
                ::metrics::counter!(metrics::SMPP_SERVER_REFUSED, "account" => account.to_owned())
                    .increment(1);
                return self.refuse(sequence, reply, refusal.status).await;
            }
        };
        let in_window = self.waiting.len() + self.parts.held();
        if in_window >= self.ctx.settings.submit_window || !bind.rate.take(Instant::now()) {
            bind.counters.throttled.fetch_add(1, Ordering::Relaxed);
            ::metrics::counter!(metrics::SMPP_SERVER_THROTTLED, "account" => account.to_owned())
                .increment(1);
            return self
                .refuse(sequence, reply, CommandStatus::EsmeRthrottled)
                .await;
        }
        let (whole, answers) = match submission.part {
            None => (submission, vec![(sequence, reply)]),
            Some(part) => match self
                .parts
                .add((sequence, reply), submission, part, Instant::now())
            {
                Added::Held => {
                    bind.counters
                        .window
                        .store((in_window + 1) as i32, Ordering::Relaxed);
                    return Ok(());
                }
                Added::Duplicate((sequence, reply)) => {
                    let reason = format!(
                        "part {} of {} (reference {}) came twice",
                        part.seq, part.total, part.reference
                    );
                    return self.part_refused(sequence, reply, &reason).await;
                }
                Added::Complete { whole, parts } => (whole, parts),
            },
        };
        let answer: oneshot::Receiver<Answer> =
            self.ctx.accepter.submit(bind.account.clone(), whole).await;
        bind.counters
            .window
            .store((in_window + 1) as i32, Ordering::Relaxed);
        self.waiting.push(Box::pin(async move {
            let answer = answer.await.unwrap_or_else(|_| {
                Err(Refusal {
                    status: CommandStatus::EsmeRsyserr,
                    reason: "the writer stopped before answering".into(),
                })
            });
            Waited::One(answers, answer)
        }));
        Ok(())
    }

    /// submit_multi: each destination a message of its own, all answered
    /// in one submit_multi_resp once every one is committed or refused.
    pub(super) async fn submit_multi(
        &mut self,
        sequence: u32,
        destinations: Vec<submission::MultiDestination>,
    ) -> std::io::Result<()> {
        let bind = match &self.bind {
            Some((bind, bind_type)) if bind_type.transmits() => bind.clone(),
            _ => {
                return self
                    .send(Command::new(
                        CommandStatus::EsmeRinvbndsts,
                        sequence,
                        SubmitMultiResp::builder().build(),
                    ))
                    .await
            }
        };
        if self.waiting.len() + self.parts.held() >= self.ctx.settings.submit_window {
            bind.counters.throttled.fetch_add(1, Ordering::Relaxed);
            return self
                .send(Command::new(
                    CommandStatus::EsmeRthrottled,
                    sequence,
                    SubmitMultiResp::builder().build(),
                ))
                .await;
        }
        let mut pending = Vec::with_capacity(destinations.len());
        for d in destinations {
            let destination = Destination {
                ton: d.ton,
                npi: d.npi,
                address: d.address,
            };
            let answer = match d.read {
                Err(refusal) => Ok(Err(refusal)),
                // Each destination is a submission against the rate.
                Ok(_) if !bind.rate.take(Instant::now()) => {
                    bind.counters.throttled.fetch_add(1, Ordering::Relaxed);
                    Ok(Err(Refusal {
                        status: CommandStatus::EsmeRthrottled,
                        reason: "over the account's throughput".into(),
                    }))
                }
                Ok(submission) => Err(self
                    .ctx
                    .accepter
                    .submit(bind.account.clone(), submission)
                    .await),
            };
            pending.push((destination, answer));
        }
        self.waiting.push(Box::pin(async move {
            let mut destinations = Vec::with_capacity(pending.len());
            for (destination, answer) in pending {
                let answer = match answer {
                    Ok(refused) => refused,
                    Err(committing) => committing.await.unwrap_or_else(|_| {
                        Err(Refusal {
                            status: CommandStatus::EsmeRsyserr,
                            reason: "the writer stopped before answering".into(),
                        })
                    }),
                };
                destinations.push((destination, answer));
            }
            Waited::Multi {
                sequence,
                destinations,
            }
        }));
        Ok(())
    }

    /// Sends what a committed submission answers.
    pub(super) async fn answer_waited(&mut self, waited: Waited) -> std::io::Result<()> {
        match waited {
            Waited::One(answers, answer) => self.answer(answers, answer).await,
            Waited::Multi {
                sequence,
                destinations,
            } => self.answer_multi(sequence, destinations).await,
        }
    }

    /// submit_multi_resp: the first accepted message's id, and every
    /// destination refused with its status. When none was accepted, the
    /// command fails with the first refusal's status.
    async fn answer_multi(
        &mut self,
        sequence: u32,
        destinations: Vec<(Destination, Answer)>,
    ) -> std::io::Result<()> {
        let Some((bind, _)) = self.bind.clone() else {
            return Ok(());
        };
        let account = &bind.account;
        let mut first_id = None;
        let mut unsuccessful = Vec::new();
        for (destination, answer) in destinations {
            match answer {
                Ok(accepted) => {
                    bind.counters.submitted.fetch_add(1, Ordering::Relaxed);
                    ::metrics::counter!(metrics::SMPP_SERVER_SUBMITTED, "account" => account.name.clone()).increment(1);
                    first_id.get_or_insert(accepted.id);
                }
                Err(refusal) => {
                    tracing::info!(account = %account.name, peer = %self.peer, status = ?refusal.status,
                        destination = %destination.address, "smpp server: submit_multi destination refused: {refusal}");
                    bind.counters.refused.fetch_add(1, Ordering::Relaxed);
                    ::metrics::counter!(metrics::SMPP_SERVER_REFUSED, "account" => account.name.clone()).increment(1);
                    unsuccessful.push(UnsuccessSme::new(
                        Ton::from(destination.ton),
                        Npi::from(destination.npi),
                        COctetString::from_str(&destination.address).unwrap_or_default(),
                        refusal.status,
                    ));
                }
            }
        }
        let (status, id) = match first_id {
            Some(id) => (CommandStatus::EsmeRok, account.message_id(id)),
            None => (
                unsuccessful
                    .first()
                    .map_or(CommandStatus::EsmeRinvnumdests, |u| u.error_status_code),
                String::new(),
            ),
        };
        let pdu = SubmitMultiResp::builder()
            .message_id(COctetString::from_str(&id).expect("an id is a valid C-Octet String"))
            .unsuccess_sme(unsuccessful)
            .build();
        self.send(Command::new(status, sequence, pdu)).await
    }

    /// Refuses a part of a long message that cannot be put together.
    pub(super) async fn part_refused(
        &mut self,
        sequence: u32,
        reply: Reply,
        reason: &str,
    ) -> std::io::Result<()> {
        if let Some((bind, _)) = &self.bind {
            tracing::info!(account = %bind.account.name, peer = %self.peer,
                "smpp server: part refused: {reason}");
            bind.counters.refused.fetch_add(1, Ordering::Relaxed);
        }
        self.refuse(sequence, reply, CommandStatus::EsmeRsubmitfail)
            .await
    }

    /// Sends a committed submission's answer to each PDU it answers (every
    /// part of a long message is told the one message's id).
    pub(super) async fn answer(
        &mut self,
        answers: Vec<(u32, Reply)>,
        answer: Answer,
    ) -> std::io::Result<()> {
        let Some((bind, _)) = self.bind.clone() else {
            return Ok(());
        };
        bind.counters.window.store(
            (self.waiting.len() + self.parts.held()) as i32,
            Ordering::Relaxed,
        );
        let account = &bind.account;
        match answer {
            Ok(accepted) => {
                bind.counters.submitted.fetch_add(1, Ordering::Relaxed);
                ::metrics::counter!(metrics::SMPP_SERVER_SUBMITTED, "account" => account.name.clone()).increment(1);
                let id = COctetString::from_str(&account.message_id(accepted.id))
                    .expect("an id is a valid C-Octet String");
                for (sequence, reply) in answers {
                    let pdu: Pdu = match reply {
                        Reply::SubmitSm => SubmitSmResp::builder()
                            .message_id(id.clone())
                            .build()
                            .into(),
                        Reply::DataSm => {
                            DataSmResp::builder().message_id(id.clone()).build().into()
                        }
                    };
                    self.send(Command::new(CommandStatus::EsmeRok, sequence, pdu))
                        .await?;
                }
                Ok(())
            }
            Err(refusal) => {
                tracing::info!(account = %account.name, peer = %self.peer, status = ?refusal.status,
                    "smpp server: submission refused: {refusal}");
                bind.counters.refused.fetch_add(1, Ordering::Relaxed);
                ::metrics::counter!(metrics::SMPP_SERVER_REFUSED, "account" => account.name.clone()).increment(1);
                for (sequence, reply) in answers {
                    self.refuse(sequence, reply, refusal.status).await?;
                }
                Ok(())
            }
        }
    }

    pub(super) async fn refuse(
        &mut self,
        sequence: u32,
        reply: Reply,
        status: CommandStatus,
    ) -> std::io::Result<()> {
        let pdu: Pdu = match reply {
            Reply::SubmitSm => SubmitSmResp::builder().build().into(),
            Reply::DataSm => DataSmResp::builder().build().into(),
        };
        self.send(Command::new(status, sequence, pdu)).await
    }

    /// Sends every answer still committing, and refuses the parts whose
    /// siblings did not come.
    pub(super) async fn drain(&mut self) -> std::io::Result<()> {
        while let Some(waited) = self.waiting.next().await {
            self.answer_waited(waited).await?;
        }
        for (sequence, reply) in self.parts.drain() {
            self.part_refused(
                sequence,
                reply,
                "the session ended before its other parts came",
            )
            .await?;
        }
        Ok(())
    }
}
