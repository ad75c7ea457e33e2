//! What a bound client asks beyond submitting: query_sm, cancel_sm and
//! replace_sm ([`queries`](super::super::queries)), and the delivery
//! receipts that go out to a receiving bind
//! ([`deliveries`](super::super::deliveries)).

use rusmpp::pdus::{CancelSm, ReplaceSm};

use super::*;

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    /// The account of a bind that may submit (and so query, cancel and
    /// replace).
    fn transmitting_account(&self) -> Option<Arc<account::Account>> {
        match &self.bind {
            Some((bind, bind_type)) if bind_type.transmits() => Some(bind.account.clone()),
            _ => None,
        }
    }

    /// Answers query_sm: the state of one of the account's messages.
    pub(super) async fn query(&mut self, sequence: u32, message_id: &str) -> std::io::Result<()> {
        let account = match self.transmitting_account() {
            Some(account) => account,
            None => {
                return self
                    .send(Command::new(
                        CommandStatus::EsmeRinvbndsts,
                        sequence,
                        QuerySmResp::builder().build(),
                    ))
                    .await
            }
        };
        let (status, pdu) = match queries::query_sm(&self.ctx.pool, &account, message_id).await {
            Ok(answer) => (CommandStatus::EsmeRok, answer),
            Err(status) => (status, QuerySmResp::builder().build()),
        };
        self.send(Command::new(status, sequence, pdu)).await
    }

    /// Records the client's answers to receipts and sends the next ones.
    pub(super) async fn deliver(&mut self) -> std::io::Result<()> {
        let Some(deliveries) = self.deliveries.as_mut() else {
            return Ok(());
        };
        deliveries.settle().await;
        let outgoing = deliveries.claim().await;
        let long = match &self.bind {
            Some((bind, _)) => bind.account.long_message,
            None => return Ok(()),
        };
        for item in outgoing {
            let mut sequences = Vec::new();
            for pdu in item.pdus(long) {
                let sequence = self.next_sequence();
                self.send(Command::new(
                    CommandStatus::EsmeRok,
                    sequence,
                    Pdu::DeliverSm(pdu),
                ))
                .await?;
                sequences.push(sequence);
            }
            if let Some(deliveries) = self.deliveries.as_mut() {
                deliveries.sent(&sequences, &item);
            }
        }
        Ok(())
    }

    /// A deliver_sm_resp: what the client made of a receipt.
    pub(super) fn receipt_answered(&mut self, sequence: u32, status: CommandStatus) {
        let (Some(deliveries), Some((bind, _))) = (self.deliveries.as_mut(), &self.bind) else {
            return;
        };
        match deliveries.answered(sequence, status) {
            Answered::Acknowledged => {
                bind.counters.delivered.fetch_add(1, Ordering::Relaxed);
                ::metrics::counter!(metrics::SMPP_SERVER_RECEIPTS, "account" => bind.account.name.clone())
                    .increment(1);
            }
            Answered::Refused => {
                tracing::info!(account = %bind.account.name, peer = %self.peer, ?status,
                    "smpp server: the client refused a receipt; it is sent again later");
            }
            Answered::Part => {}
            Answered::Unknown => {
                tracing::debug!(account = %bind.account.name, peer = %self.peer, sequence,
                    "smpp server: deliver_sm_resp for no receipt in flight (late, after its timeout)");
            }
        }
    }

    /// Answers cancel_sm: messages of the account no channel claimed yet.
    pub(super) async fn cancel(&mut self, sequence: u32, cancel: &CancelSm) -> std::io::Result<()> {
        let Some(account) = self.transmitting_account() else {
            return self
                .send(Command::new(
                    CommandStatus::EsmeRinvbndsts,
                    sequence,
                    Pdu::CancelSmResp,
                ))
                .await;
        };
        let status = match queries::cancel_sm(
            &self.ctx.pool,
            &account,
            cancel.message_id.as_str(),
            (
                cancel.source_addr.as_str(),
                u8::from(cancel.source_addr_ton),
            ),
            (
                cancel.destination_addr.as_str(),
                u8::from(cancel.dest_addr_ton),
            ),
        )
        .await
        {
            Ok(_) => CommandStatus::EsmeRok,
            Err(status) => status,
        };
        self.send(Command::new(status, sequence, Pdu::CancelSmResp))
            .await
    }

    /// Answers replace_sm: a new text, validity, schedule or receipt request
    /// for a message no channel claimed yet.
    pub(super) async fn replace(
        &mut self,
        sequence: u32,
        replace: &ReplaceSm,
    ) -> std::io::Result<()> {
        let Some(account) = self.transmitting_account() else {
            return self
                .send(Command::new(
                    CommandStatus::EsmeRinvbndsts,
                    sequence,
                    Pdu::ReplaceSmResp,
                ))
                .await;
        };
        let replacement = queries::Replacement {
            message_id: replace.message_id.as_str(),
            short_message: replace.short_message().as_ref(),
            tlvs: replace
                .message_payload_tlv()
                .map_or(&[], std::slice::from_ref),
            schedule: replace.schedule_delivery_time.as_ref(),
            validity: replace.validity_period.as_ref(),
            registered_delivery: u8::from(replace.registered_delivery),
        };
        let status = match queries::replace_sm(&self.ctx.pool, &account, &replacement).await {
            Ok(()) => CommandStatus::EsmeRok,
            Err(status) => status,
        };
        self.send(Command::new(status, sequence, Pdu::ReplaceSmResp))
            .await
    }
}
