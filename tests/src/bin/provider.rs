//! `smsbus-provider`: the REST provider simulator as a program, for `make
//! run` and trying an HTTP channel by hand. It speaks one preset's API
//! (Twilio, Vonage, Infobip or Kannel generic), takes what a channel sends,
//! and posts a signed delivery report for each message to the webhook URL
//! the request names. `--print-config` prints the channel config that
//! reaches it.

use clap::Parser;
use smsbus_tests::providers::{Preset, Provider};

#[derive(Parser)]
#[command(name = "smsbus-provider", about = "A REST SMS provider simulator")]
struct Args {
    /// twilio, vonage, infobip or generic.
    #[arg(long, default_value = "twilio")]
    preset: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: String,
    /// smsbus's HTTP API as the simulator reaches it (for --print-config).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    webhook_url: String,
    /// Print the config of a channel sending here, and go on.
    #[arg(long)]
    print_config: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let Some(preset) = Preset::named(&args.preset) else {
        eprintln!("smsbus-provider: --preset must be twilio, vonage, infobip or generic");
        return std::process::ExitCode::from(2);
    };
    let provider = Provider::start_on(preset, &args.listen).await;
    if args.print_config {
        println!(
            "{}",
            provider.channel_config(&args.webhook_url, serde_json::json!({}))
        );
    }
    eprintln!("smsbus-provider: {} API on {}", preset.name(), provider.url);
    // Serves until killed.
    std::future::pending::<()>().await;
    std::process::ExitCode::SUCCESS
}
