//! What the provider delivers (deliver_sm, data_sm): a receipt goes to
//! the inbox as a report, anything else as an inbound message. Each is
//! answered only after the database has it — with a temporary error when
//! it could not be recorded, so the provider sends it again.

use std::sync::Arc;

use rusmpp::pdus::{DataSm, DataSmResp, DeliverSm, DeliverSmResp};
use rusmpp::{Command, CommandStatus, Pdu};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::carried::Carried;
use super::receipt::{self, ReportStatus};
use super::{inbound, Channel};
use crate::channels::inbox::{Inbound, Part, Report};

/// A PDU the provider delivers with.
pub(super) enum Delivered {
    DeliverSm(DeliverSm),
    DataSm(DataSm),
}

impl Delivered {
    fn carried(&self) -> Carried<'_> {
        match self {
            Delivered::DeliverSm(p) => Carried::from(p),
            Delivered::DataSm(p) => Carried::from(p),
        }
    }
}

/// Records `pdu` in the background and queues its answer on `answers`;
/// `slot` is held until then (the session's backpressure).
pub(super) fn spawn(
    channel: Arc<Channel>,
    answers: mpsc::UnboundedSender<Command>,
    sequence: u32,
    pdu: Delivered,
    slot: OwnedSemaphorePermit,
) {
    tokio::spawn(async move {
        let _slot = slot;
        let carried = pdu.carried();
        let status = if receipt::is_receipt(carried.esm_class) {
            take_receipt(&channel, &carried).await
        } else {
            take_inbound(&channel, &carried).await
        };
        let answer: Pdu = match pdu {
            Delivered::DeliverSm(_) => DeliverSmResp::default().into(),
            Delivered::DataSm(_) => DataSmResp::default().into(),
        };
        if answers
            .send(Command::new(status, sequence, answer))
            .is_err()
        {
            // The link it came on is gone; a delivery left unanswered
            // is delivered again by the provider.
            tracing::debug!(channel = %channel.ctx.row.name, sequence,
                "the link closed before a delivery could be answered");
        }
    });
}

async fn take_receipt(channel: &Channel, pdu: &Carried<'_>) -> CommandStatus {
    let name = &channel.ctx.row.name;
    let receipt = match receipt::parse(pdu, channel.config.dlr_id_format) {
        Ok(r) => r,
        Err(e) => {
            // Refusing it would only make the provider send it again.
            tracing::warn!(channel = %name, "unreadable delivery receipt, acknowledged and dropped: {e}");
            return CommandStatus::EsmeRok;
        }
    };
    let report = Report {
        reference: receipt.reference,
        alternate: receipt.alternate,
        status: receipt.status.as_str(),
        detail: receipt.detail,
    };
    if receipt.status == ReportStatus::Enroute {
        tracing::debug!(channel = %name, reference = %report.reference, "intermediate receipt");
    }
    match channel.inbox.report(report).await {
        Ok(()) => CommandStatus::EsmeRok,
        Err(e) => {
            tracing::warn!(channel = %name, "cannot record a receipt, asking the provider to send it again: {e}");
            CommandStatus::EsmeRxTAppn
        }
    }
}

async fn take_inbound(channel: &Channel, pdu: &Carried<'_>) -> CommandStatus {
    let name = &channel.ctx.row.name;
    let decoded = match inbound::decode(pdu) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(channel = %name, "refusing an unreadable inbound message: {e}");
            return CommandStatus::EsmeRxPAppn;
        }
    };
    let mut custom = serde_json::Map::new();
    custom.insert("data_coding".into(), decoded.data_coding.into());
    if decoded.binary {
        custom.insert("binary".into(), true.into());
    }
    let message = Inbound {
        from: decoded.from,
        to: decoded.to,
        body: decoded.text,
        reference: None,
        custom: Some(custom.into()),
        part: decoded.part.map(|p| Part {
            reference: i32::from(p.reference),
            total: i32::from(p.total),
            seq: i32::from(p.seq),
        }),
    };
    match channel.inbox.inbound(message).await {
        Ok(_) => CommandStatus::EsmeRok,
        Err(e) => {
            tracing::warn!(channel = %name, "cannot record an inbound message, asking the provider to send it again: {e}");
            CommandStatus::EsmeRxTAppn
        }
    }
}
