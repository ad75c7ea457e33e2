//! `smsbus-modem`: the GSM modem simulator as a program, for `make run` and
//! trying a channel by hand. It creates a pseudo-terminal, links it at
//! `<dir>/ttyGSM0`, answers AT commands in PDU mode, sends status reports
//! and, on request, an inbound message.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use smsbus_tests::modem::{Coding, Modem, ModemBehaviour};

#[derive(Parser)]
#[command(
    name = "smsbus-modem",
    about = "A GSM modem simulator on a pseudo-terminal"
)]
struct Args {
    /// Directory for the device link `ttyGSM0`.
    #[arg(long)]
    dir: PathBuf,
    /// Send an inbound message "FROM TEXT" (split on the first space) this
    /// many seconds after start.
    #[arg(long, value_name = "FROM TEXT")]
    inbound: Option<String>,
    #[arg(long, default_value_t = 5.0)]
    inbound_after_s: f64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let modem = match Modem::start_at(&args.dir, ModemBehaviour::default(), &[]) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("smsbus-modem: cannot create the terminal: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!("smsbus-modem: device {}", modem.path().display());
    if let Some((from, text)) = args.inbound.as_deref().and_then(|i| i.split_once(' ')) {
        tokio::time::sleep(Duration::from_secs_f64(args.inbound_after_s)).await;
        let coding = if text
            .chars()
            .all(|c| smsbus_core::gsm7::septets(c).is_some())
        {
            Coding::Gsm7
        } else {
            Coding::Ucs2
        };
        modem.deliver(from, text, coding, None);
    }
    let mut last = 0;
    let Ok(mut terminate) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return std::process::ExitCode::FAILURE;
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let submitted = modem.submitted();
        for s in &submitted[last..] {
            eprintln!(
                "smsbus-modem: to {} (TP-MR {}): {}",
                s.submit.to, s.reference, s.submit.text
            );
        }
        last = submitted.len();
    }
    std::process::ExitCode::SUCCESS
}
