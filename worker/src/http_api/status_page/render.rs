//! The status page's HTML. maud escapes every value it is given, so a
//! message's address, an error text or an account name shows as text and
//! never as markup.

use maud::{html, Markup, DOCTYPE};

use super::snapshot::{Bind, Channel, Depth, Recent, Snapshot, Webhook};
use super::throughput::{Bucket, Counts, BUCKET};

/// Milliseconds between the page's refreshes.
const REFRESH_MS: u32 = 3000;

/// The whole page: its frame and the sections.
pub fn page(snapshot: &Snapshot, series: &[Bucket]) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "smsbus status" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/status/status.css";
                script src="/status/status.js" defer {}
            }
            body {
                header {
                    h1 { "smsbus" }
                    span #connection {}
                }
                main #sections data-refresh=(REFRESH_MS) { (sections(snapshot, series)) }
            }
        }
    }
}

/// What the page's script puts in place at each refresh.
pub fn sections(snapshot: &Snapshot, series: &[Bucket]) -> Markup {
    html! {
        p #updated data-taken=(snapshot.taken_at) { "Updated " (snapshot.taken_at) " UTC" }
        (throughput(series))
        (channels(&snapshot.channels))
        (queue(&snapshot.queue))
        (messages(&snapshot.messages))
        (webhooks(&snapshot.webhooks))
        (binds(&snapshot.binds))
    }
}

/// What a series counts of a bucket.
type Measure = fn(&Counts) -> i64;

/// The four series, with the colour each is drawn in.
const SERIES: [(&str, &str, Measure); 4] = [
    ("submitted", "#2563eb", |c| c.submitted),
    ("sent", "#7c3aed", |c| c.sent),
    ("delivered", "#16a34a", |c| c.delivered),
    ("failed", "#dc2626", |c| c.failed),
];

const CHART_WIDTH: f64 = 720.0;
const CHART_HEIGHT: f64 = 160.0;

fn throughput(series: &[Bucket]) -> Markup {
    let per_second = |count: i64| count as f64 / BUCKET as f64;
    let peak = series
        .iter()
        .flat_map(|b| SERIES.iter().map(|(_, _, of)| per_second(of(&b.counts))))
        .fold(1.0_f64, f64::max);
    // The bucket before now's: complete, so its rate is not a fraction.
    let last = series.len().checked_sub(2).and_then(|i| series.get(i));
    let step = CHART_WIDTH / (series.len().max(2) - 1) as f64;
    html! {
        section #throughput {
            h2 { "Messages a second, last hour" }
            svg #chart viewBox={ "0 0 " (CHART_WIDTH) " " (CHART_HEIGHT + 12.0) }
                role="img" aria-label="messages a second over the last hour" data-peak=(peak) {
                line x1="0" y1=(CHART_HEIGHT) x2=(CHART_WIDTH) y2=(CHART_HEIGHT) stroke="#9ca3af" {}
                text x="2" y="10" font-size="10" fill="#6b7280" { (format!("{peak:.1}/s")) }
                text x="2" y=(CHART_HEIGHT + 11.0) font-size="10" fill="#6b7280" { "-60 min" }
                text x=(CHART_WIDTH - 24.0) y=(CHART_HEIGHT + 11.0) font-size="10" fill="#6b7280" { "now" }
                @for (name, colour, of) in SERIES {
                    polyline id={ "series-" (name) } fill="none" stroke=(colour) stroke-width="1.5"
                        points=(points(series, step, peak, |b| per_second(of(&b.counts)))) {}
                }
            }
            ul .legend {
                @for (name, _, of) in SERIES {
                    li {
                        span class={ "swatch " (name) } {}
                        (name) ": "
                        span id={ "rate-" (name) } {
                            (format!("{:.1}", last.map_or(0.0, |b| per_second(of(&b.counts)))))
                        }
                        "/s"
                    }
                }
            }
        }
    }
}

fn points(series: &[Bucket], step: f64, peak: f64, value: impl Fn(&Bucket) -> f64) -> String {
    let mut points = String::with_capacity(series.len() * 12);
    for (i, bucket) in series.iter().enumerate() {
        let y = CHART_HEIGHT - value(bucket) / peak * (CHART_HEIGHT - 14.0);
        points.push_str(&format!("{:.1},{:.1} ", i as f64 * step, y));
    }
    points.truncate(points.trim_end().len());
    points
}

fn channels(channels: &[Channel]) -> Markup {
    html! {
        section #channels {
            h2 { "Channels" }
            @if channels.is_empty() { p .empty { "No channels." } } @else {
                table {
                    thead { tr {
                        th { "Channel" } th { "Kind" } th { "Link" } th { "Since" } th { "Owner" }
                        th .n { "Rate/s" } th .n { "Window" } th .n { "Queued" } th .n { "Sending" }
                        th .n { "Sent" } th .n { "Failed" } th .n { "Reports" } th .n { "Inbound" }
                        th { "Last error" }
                    } }
                    tbody {
                        @for c in channels {
                            tr data-channel=(c.name) {
                                td { (c.name) @if !c.enabled { " (disabled)" } }
                                td { (c.kind) }
                                td { span class={ "link " (c.link) } data-link=(c.link) { (c.link) } }
                                td { (c.since.as_deref().unwrap_or("")) }
                                td { (c.owner.as_deref().unwrap_or("")) }
                                td .n { (format!("{:.1}", c.rate)) }
                                td .n { (c.window_in_use) }
                                td .n { (c.queued) }
                                td .n { (c.sending) }
                                td .n { (c.sent) }
                                td .n { (c.failed) }
                                td .n { (c.reports) }
                                td .n { (c.inbound) }
                                td .error { (c.last_error.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn queue(queue: &[Depth]) -> Markup {
    html! {
        section #queue {
            h2 { "Queue" }
            @if queue.is_empty() { p .empty { "Nothing waits." } } @else {
                table {
                    thead { tr { th { "Channel" } th { "Status" } th .n { "Messages" } th { "Oldest" } } }
                    tbody {
                        @for d in queue {
                            tr {
                                td { (d.channel.as_deref().unwrap_or("(none)")) }
                                td { (d.status) }
                                td .n { (d.messages) }
                                td { (d.oldest) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn messages(messages: &[Recent]) -> Markup {
    html! {
        section #messages {
            h2 { "Last messages" }
            @if messages.is_empty() { p .empty { "No messages yet." } } @else {
                table {
                    thead { tr {
                        th .n { "Id" } th { "Created" } th { "Dir" } th { "From" } th { "To" }
                        th { "Account" } th { "Channel" } th .n { "Parts" } th { "Status" } th { "Trace" }
                    } }
                    tbody {
                        @for m in messages {
                            tr data-message=(m.id) {
                                td .n { (m.id) }
                                td { (m.created_at) }
                                td { (m.direction) }
                                td { (m.from_address.as_deref().unwrap_or("")) }
                                td { (m.to_address.as_deref().unwrap_or("")) }
                                td { (m.account.as_deref().unwrap_or("")) }
                                td { (m.channel.as_deref().unwrap_or("")) }
                                td .n { (m.segments) }
                                td { span class={ "status " (m.status) } { (m.status) } }
                                td {
                                    ol .trace {
                                        @for s in &m.trace {
                                            li {
                                                (s.at) " "
                                                @if let Some(from) = &s.from_status { (from) " → " }
                                                b { (s.to_status) } " by " (s.actor)
                                                @if let Some(detail) = &s.detail { ": " (detail) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn webhooks(webhooks: &[Webhook]) -> Markup {
    html! {
        section #webhooks {
            h2 { "Webhooks" }
            @if webhooks.is_empty() { p .empty { "No webhooks." } } @else {
                table {
                    thead { tr {
                        th .n { "Id" } th { "Account" } th { "Endpoint" } th .n { "Waiting" }
                        th .n { "In flight" } th .n { "Dead" } th { "Oldest" } th { "Last error" }
                    } }
                    tbody {
                        @for w in webhooks {
                            tr data-webhook=(w.id) {
                                td .n { (w.id) }
                                td { (w.account) }
                                td { (w.endpoint) @if !w.enabled { " (disabled)" } }
                                td .n { (w.waiting) }
                                td .n { (w.in_flight) }
                                td .n { (w.dead) }
                                td { (w.oldest.as_deref().unwrap_or("")) }
                                td .error { (w.last_error.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn binds(binds: &[Bind]) -> Markup {
    html! {
        section #binds {
            h2 { "SMPP binds" }
            @if binds.is_empty() { p .empty { "No account is bound." } } @else {
                table {
                    thead { tr {
                        th { "Account" } th { "Server" } th { "Worker" } th { "Bind" } th { "Peer" }
                        th { "Since" } th .n { "Submitted" } th .n { "Refused" } th .n { "Throttled" }
                        th .n { "Delivered" } th .n { "Window" }
                    } }
                    tbody {
                        @for b in binds {
                            tr {
                                td { (b.account) } td { (b.server) } td { (b.worker) }
                                td { (b.bind_type) } td { (b.peer) } td { (b.since) }
                                td .n { (b.submitted) } td .n { (b.refused) } td .n { (b.throttled) }
                                td .n { (b.delivered) } td .n { (b.window_in_use) }
                            }
                        }
                    }
                }
            }
        }
    }
}
