//! `smsbus-smsc`: the SMSC simulator as a program, for `make run`, `make
//! bench` and trying a channel by hand. It accepts binds, answers
//! submit_sm, sends delivery receipts and, on request, originates inbound
//! messages.

use std::time::Duration;

use clap::Parser;
use smsbus_tests::smsc::{Behaviour, IdFormat, InboundText, Smsc};

#[derive(Parser)]
#[command(name = "smsbus-smsc", about = "An SMPP 3.4 SMSC simulator")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2775")]
    listen: String,
    #[arg(long, default_value = "smsbus")]
    system_id: String,
    #[arg(long, default_value = "secret")]
    password: String,
    /// Milliseconds between accepting a message and its receipt.
    #[arg(long, default_value_t = 200)]
    report_delay_ms: u64,
    /// Every Nth message is reported undeliverable (0: none).
    #[arg(long, default_value_t = 0)]
    undeliverable_every: u64,
    /// Message ids in decimal instead of hexadecimal.
    #[arg(long)]
    decimal_ids: bool,
    /// Send an inbound message "FROM TO TEXT" (split on the first two
    /// spaces) this many seconds after the first bind.
    #[arg(long, value_name = "FROM TO TEXT")]
    inbound: Option<String>,
    #[arg(long, default_value_t = 3.0)]
    inbound_after_s: f64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let behaviour = Behaviour {
        report_delay: Duration::from_millis(args.report_delay_ms),
        undeliverable_every: args.undeliverable_every,
        id_format: if args.decimal_ids {
            IdFormat::Decimal
        } else {
            IdFormat::Hex
        },
        ..Behaviour::default()
    };
    let smsc = match Smsc::start_on(&args.listen, &args.system_id, &args.password, behaviour).await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("smsbus-smsc: cannot listen on {}: {e}", args.listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!("smsbus-smsc: listening on {}", smsc.addr());
    if let Some(inbound) = args.inbound {
        let mut fields = inbound.splitn(3, ' ');
        let (from, to, text) = (
            fields.next().unwrap_or_default(),
            fields.next().unwrap_or_default(),
            fields.next().unwrap_or_default(),
        );
        while smsc.bound_sessions() == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs_f64(args.inbound_after_s)).await;
        match smsc
            .deliver(&InboundText::new(from, to, text), Duration::from_secs(10))
            .await
        {
            Ok(statuses) => eprintln!("smsbus-smsc: inbound message delivered: {statuses:?}"),
            Err(e) => eprintln!("smsbus-smsc: inbound message not delivered: {e}"),
        }
    }
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let received = smsc.received().len();
        if received != last {
            eprintln!(
                "smsbus-smsc: {received} messages received, {} sessions bound",
                smsc.bound_sessions()
            );
            last = received;
        }
    }
}
