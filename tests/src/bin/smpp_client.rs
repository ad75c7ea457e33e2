//! `smsbus-smpp-client`: an application binding to an SMPP server (smsbus's
//! own, or any SMSC) to send messages and take their delivery receipts.
//!
//!     smsbus-smpp-client --addr 127.0.0.1:2775 --system-id acme --password secret1 \
//!         --to +31612345678 --text "Hello" --count 3 --receipts

use anyhow::{bail, Result};
use clap::Parser;
use smsbus_tests::smpp_client::{text_submit, BindKind, Client};

#[derive(Parser, Debug)]
#[command(
    name = "smsbus-smpp-client",
    about = "Send SMS over SMPP and wait for their receipts"
)]
struct Args {
    /// host:port of the SMPP server.
    #[arg(long, default_value = "127.0.0.1:2775")]
    addr: String,
    #[arg(long)]
    system_id: String,
    #[arg(long, env = "SMSBUS_SMPP_PASSWORD")]
    password: String,
    /// The recipient, international (+31612345678).
    #[arg(long)]
    to: String,
    #[arg(long, default_value = "smsbus")]
    from: String,
    /// The text (GSM 7-bit); with --count, each gets its number appended.
    #[arg(long, default_value = "Hello from smsbus-smpp-client")]
    text: String,
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Submissions in flight at once.
    #[arg(long, default_value_t = 10)]
    window: usize,
    /// Ask for delivery receipts and wait for one per message.
    #[arg(long)]
    receipts: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut client = Client::connect(&args.addr).await?;
    client
        .bind(BindKind::Transceiver, &args.system_id, &args.password)
        .await?;
    println!("bound to {} as {}", args.addr, args.system_id);
    let pdus = (1..=args.count)
        .map(|n| {
            let text = if args.count == 1 {
                args.text.clone()
            } else {
                format!("{} {n}", args.text)
            };
            text_submit(&args.from, &args.to, &text, args.receipts)
        })
        .collect::<Result<Vec<_>>>()?;
    let wanted = if args.receipts { args.count } else { 0 };
    let run = client.run(pdus, args.window, None, wanted).await?;
    for (n, id) in run.accepted.iter().enumerate() {
        match id {
            Some(id) => println!("message {}: accepted, id {id}", n + 1),
            None => println!("message {}: refused", n + 1),
        }
    }
    for (status, n) in &run.refused {
        println!("refused {n}: {status}");
    }
    for receipt in &run.receipts {
        println!("receipt for {}: {}", receipt.message_id, receipt.text);
    }
    client.unbind().await?;
    if !run.refused.is_empty() {
        bail!("{} submissions refused", run.refused.values().sum::<u64>());
    }
    Ok(())
}
