//! The GSM modem channel's own cost per message, against the modem
//! simulator (in this process, on a pseudo-terminal) answering at once:
//! messages/s from a bulk insert to `delivered` (status reports on, each
//! read from the SIM and deleted), and the AT round trips per message.
//! A real modem takes seconds per message on the air; this measures what
//! smsbus adds to that.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};
use smsbus_tests::modem::{Modem, ModemBehaviour};
use tokio_postgres::Client;

use crate::end_to_end::{wait_connected, WorkerProcess};

pub struct Figures {
    pub messages: usize,
    pub rate: f64,
    pub round_trips_per_message: f64,
}

impl Figures {
    pub fn to_json(&self) -> Value {
        json!({
            "messages": self.messages,
            "delivered_msg_per_s": self.rate,
            "at_round_trips_per_message": self.round_trips_per_message,
        })
    }
}

pub async fn run(control: &Client, conninfo: &str, messages: usize) -> Result<Figures> {
    let modem = Modem::start(ModemBehaviour::default(), &[])?;
    // The other scenarios' channels stay out of the way.
    control
        .execute("UPDATE smsbus.channel SET enabled = false", &[])
        .await?;
    let config = json!({"device": modem.path().to_string_lossy(), "poll_interval_s": 5});
    control
        .execute(
            "INSERT INTO smsbus.channel (name, kind, config) VALUES ('gsm', 'gsm', $1)",
            &[&config],
        )
        .await?;
    let _worker = WorkerProcess::start(conninfo)?;
    wait_connected(control, "gsm").await?;
    let before = modem.commands().len();
    let started = Instant::now();
    control
        .execute(
            "INSERT INTO smsbus.message (to_address, body, channel)
             SELECT '+3162' || lpad(g::text, 7, '0'), 'through the modem ' || g, 'gsm'
             FROM generate_series(1, $1::int) g",
            &[&(messages as i32)],
        )
        .await?;
    let deadline = started + Duration::from_secs(300);
    loop {
        let active: i64 = control
            .query_one(
                "SELECT count(*) FROM smsbus.message WHERE channel = 'gsm' AND status IN ('queued', 'sending', 'sent')",
                &[],
            )
            .await?
            .get(0);
        if active == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{active} of {messages} messages not delivered through the modem in 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rate = messages as f64 / started.elapsed().as_secs_f64();
    let round_trips = modem.commands().len() - before;
    control
        .execute("DELETE FROM smsbus.channel WHERE name = 'gsm'", &[])
        .await?;
    control
        .execute("UPDATE smsbus.channel SET enabled = true", &[])
        .await?;
    Ok(Figures {
        messages,
        rate,
        round_trips_per_message: round_trips as f64 / messages as f64,
    })
}
