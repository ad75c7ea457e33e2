//! smsbus-webhook-sink: a local endpoint for smsbus's webhooks, for
//! `make run` and trying things out. It answers 204 to every POST, checks
//! the `X-Smsbus-Signature` with the secret it is given, and prints one
//! line per event: its name, message id, status, and whether the
//! signature held.

use clap::Parser;
use serde_json::Value;
use smsbus_worker::webhooks::signature;

#[derive(Parser)]
#[command(about = "Receives smsbus webhooks and prints each event")]
struct Args {
    /// Where to listen, e.g. 127.0.0.1:8081.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: String,
    /// The webhook's secret, to check signatures with.
    #[arg(long)]
    secret: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = tiny_http::Server::http(&args.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    eprintln!("listening on {}", args.listen);
    for mut request in server.incoming_requests() {
        let mut body = String::new();
        // An unreadable body is printed as what it is: empty.
        let _ = request.as_reader().read_to_string(&mut body);
        let signature_header = request
            .headers()
            .iter()
            .find(|h| h.field.equiv("X-Smsbus-Signature"))
            .map(|h| h.value.to_string());
        let signed = signature_header.is_some_and(|value| {
            value
                .strip_prefix("t=")
                .and_then(|rest| rest.split(',').next())
                .and_then(|t| t.parse::<u64>().ok())
                .is_some_and(|t| signature::sign(&args.secret, t, &body) == value)
        });
        let event: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        println!(
            "{} message {} {} (signature {})",
            event["event"].as_str().unwrap_or("?"),
            event["message"]["id"],
            event["message"]["status"].as_str().unwrap_or("?"),
            if signed { "ok" } else { "WRONG" }
        );
        // A peer that hung up has nothing more to hear.
        let _ = request.respond(tiny_http::Response::empty(204));
    }
    Ok(())
}
