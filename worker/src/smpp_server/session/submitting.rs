//! Submissions: refused at once when the bind, the input, the window or
//! the rate says so; parts of long messages held until the whole message
//! is there; handed to the group commit, and answered after it.

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
            (answers, answer)
        }));
        Ok(())
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
        while let Some((answers, answer)) = self.waiting.next().await {
            self.answer(answers, answer).await?;
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
