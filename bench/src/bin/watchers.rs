//! `watchers`: how long one write takes to wake many blocking queries on one
//! Weft agent (driven by `bench/agents.sh`).
//!
//! Opens W HTTP/1.1 connections to the agent (one hyper client connection
//! per watcher) and, in each of R rounds: every watcher sends
//! `GET /v1/health/service/<name>?index=<X>&wait=<wait>` with the service's
//! current `X-Consul-Index`; after all are sent and `--settle` has passed,
//! one write registers a new instance of the service (`PUT
//! /v1/catalog/register`); each watcher notes when it has the whole answer
//! that contains the new instance. The figures are the times from sending
//! the write to the first, median and last watcher woken. A watcher answered
//! without the new instance (another change, or `wait` running out) asks
//! again with the newer index and counts as a spurious wake. The agent's RSS
//! (`--pid`) is read before the connections are opened, with all watchers
//! blocked (round 1, just before the write), and after they are closed.
//!
//! Every step is bounded: opening and arming by `--open-timeout`, the wait
//! for the watchers after a write by `--round-timeout`; only loopback
//! addresses are accepted.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use weft_api::client::HttpClient;
use weft_bench::args::{parse_duration, Format};
use weft_bench::latency::{fmt_ms, Latencies};
use weft_bench::net::resolve_loopback;
use weft_bench::proc::status_kib;

/// Time limit of the control requests (reading the index, the write).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
/// A watcher gives up on one blocking request this long after `--wait`.
const WAIT_SLACK: Duration = Duration::from_secs(10);
/// Pause after closing the connections before the last RSS reading.
const AFTER_CLOSE_PAUSE: Duration = Duration::from_secs(1);

/// Holds many blocking queries open on one agent and times how fast one write wakes them.
#[derive(Debug, Parser)]
#[command(name = "watchers", version)]
struct Args {
    /// HTTP address (HOST:PORT) of the agent the watchers block on.
    #[arg(long, value_name = "HOST:PORT")]
    addr: String,

    /// HTTP address the write goes to (default: --addr).
    #[arg(long, value_name = "HOST:PORT")]
    write_addr: Option<String>,

    /// The service watched and written to (letters, digits, '-', '_').
    #[arg(long, default_value = "watched")]
    service: String,

    /// Number of concurrent watchers, each on its own connection.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    watchers: u32,

    /// Write-and-wake rounds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,

    /// The blocking queries' `?wait=` (keep it well above --settle plus --round-timeout).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    wait: Duration,

    /// Pause between the last watcher sending its query and the write, so the
    /// agent has read and parked them all.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    settle: Duration,

    /// How long after the write to wait for every watcher to be woken; those
    /// not woken by then count as missed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    round_timeout: Duration,

    /// Limit on opening all connections, and on arming all watchers in a round.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    open_timeout: Duration,

    /// Connections being opened at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connect_concurrency: u32,

    /// PID of the agent, to report its RSS (VmRSS from /proc/<pid>/status).
    #[arg(long)]
    pid: Option<u32>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// What the controller tells every watcher: block past `index` until the
/// answer holds `marker` (round 0: nothing yet).
#[derive(Clone, Debug, Default)]
struct Arm {
    round: u32,
    index: u64,
    marker: String,
}

/// What a watcher tells the controller.
#[derive(Debug)]
enum Event {
    /// Its blocking query of this round was handed to its connection.
    Armed { round: u32 },
    /// It has an answer holding this round's new instance.
    Woke { round: u32, at: Instant },
    /// It was answered without the new instance and asked again.
    Spurious { round: u32 },
    /// Its connection failed; it takes no further part.
    Failed { round: u32, error: String },
}

/// One round's figures.
#[derive(Debug, Serialize)]
struct RoundReport {
    kind: &'static str,
    round: u32,
    /// Watchers whose query was sent before the write.
    armed: u64,
    woken: u64,
    missed: u64,
    spurious: u64,
    failed: u64,
    write_status: Option<u16>,
    /// Time for the write's own HTTP answer.
    write_ms: Option<f64>,
    first_ms: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    last_ms: Option<f64>,
}

/// The whole run.
#[derive(Debug, Serialize)]
struct Summary {
    kind: &'static str,
    addr: String,
    write_addr: String,
    watchers: u32,
    rounds: u32,
    /// The worst round's time to the last watcher woken, and the sum of missed ones.
    worst_last_ms: Option<f64>,
    median_p50_ms: Option<f64>,
    missed_total: u64,
    failed_total: u64,
    rss_before_kib: Option<u64>,
    rss_open_kib: Option<u64>,
    rss_after_kib: Option<u64>,
    rss_peak_kib: Option<u64>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("watchers: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.service.is_empty() || !args.service.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        bail!("--service must be letters, digits, '-' or '_', not {:?}", args.service);
    }
    let addr = resolve_loopback("--addr", &args.addr).await?;
    let write_addr = match &args.write_addr {
        Some(write) => resolve_loopback("--write-addr", write).await?,
        None => addr,
    };
    let control = HttpClient::new(&addr.to_string(), None).with_timeout(CONTROL_TIMEOUT);
    let writer = HttpClient::new(&write_addr.to_string(), None).with_timeout(CONTROL_TIMEOUT);
    let health_path = format!("/v1/health/service/{}", args.service);
    current_index(&control, &health_path).await.context("probe of the watched agent failed")?;
    // Warms the writer's keep-alive connection, so round 1's write does not pay for a connect.
    writer.get("/v1/status/leader").await.map_err(|e| anyhow::anyhow!("probe of --write-addr failed: {e}"))?;

    let rss = |field: &str| args.pid.and_then(|pid| status_kib(pid, field));
    let rss_before = rss("VmRSS");

    let senders = open_connections(addr, &args).await?;
    let (arm_tx, arm_rx) = watch::channel(Arm::default());
    let (event_tx, mut events) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    let query_wait = weft_api::duration::format(args.wait);
    for sender in senders {
        let watcher = Watcher {
            sender,
            arm: arm_rx.clone(),
            events: event_tx.clone(),
            path: health_path.clone(),
            host: addr.to_string(),
            wait: query_wait.clone(),
            limit: args.wait + WAIT_SLACK,
        };
        tasks.spawn(watcher.run());
    }
    drop(event_tx);

    // A per-process tag keeps reruns against the same agent apart.
    let nonce = std::process::id();
    let mut live = u64::from(args.watchers);
    let mut reports = Vec::new();
    let mut rss_open = None;
    for round in 1..=args.rounds {
        let index = current_index(&control, &health_path).await?;
        let id = format!("{}-{nonce}-r{round}", args.service);
        arm_tx.send_replace(Arm { round, index, marker: format!("\"{id}\"") });
        let mut report = RoundReport {
            kind: "round",
            round,
            armed: 0,
            woken: 0,
            missed: 0,
            spurious: 0,
            failed: 0,
            write_status: None,
            write_ms: None,
            first_ms: None,
            p50_ms: None,
            p99_ms: None,
            last_ms: None,
        };

        // Every live watcher sends its query, then the agent gets time to park them.
        let arm_deadline = Instant::now() + args.open_timeout;
        while report.armed < live {
            let Ok(Some(event)) = tokio::time::timeout_at(arm_deadline, events.recv()).await else { break };
            count(&event, round, &mut report, &mut live, None);
        }
        let settle_end = Instant::now() + args.settle;
        while let Ok(Some(event)) = tokio::time::timeout_at(settle_end, events.recv()).await {
            count(&event, round, &mut report, &mut live, None);
        }
        if round == 1 {
            rss_open = rss("VmRSS");
        }

        let body = serde_json::json!({
            "Node": format!("{}-{nonce}", args.service),
            "Address": "10.2.0.1",
            "Service": { "ID": id, "Service": args.service, "Port": 8000 + round },
        })
        .to_string();
        let written = Instant::now();
        let write = writer.put("/v1/catalog/register", body).await;
        let write_ms = written.elapsed().as_secs_f64() * 1000.0;
        match &write {
            Ok(response) => {
                report.write_status = Some(response.status);
                report.write_ms = Some(write_ms);
                if response.status != 200 {
                    eprintln!(
                        "watchers: round {round}: the write was refused: HTTP {}: {}",
                        response.status,
                        response.text().trim()
                    );
                }
            }
            Err(error) => eprintln!("watchers: round {round}: the write failed: {error}"),
        }

        let mut wakes = Latencies::new()?;
        let mut first: Option<Duration> = None;
        let mut last: Option<Duration> = None;
        if matches!(&write, Ok(response) if response.status == 200) {
            let wake_deadline = written + args.round_timeout;
            while report.woken < report.armed.min(live) {
                let Ok(Some(event)) = tokio::time::timeout_at(wake_deadline, events.recv()).await else { break };
                if let Some(after) = count(&event, round, &mut report, &mut live, Some(written)) {
                    wakes.record(after);
                    first = Some(first.map_or(after, |f| f.min(after)));
                    last = Some(last.map_or(after, |l| l.max(after)));
                }
            }
        }
        report.missed = report.armed.saturating_sub(report.woken + report.failed);
        let summary = wakes.summary();
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        report.first_ms = ms(first);
        report.p50_ms = summary.p50_ms;
        report.p99_ms = summary.p99_ms;
        report.last_ms = ms(last);
        reports.push(report);
        if live == 0 {
            eprintln!("watchers: every watcher's connection failed; stopping");
            break;
        }
    }

    // Closing: stop the watchers, which drops (and so closes) their connections.
    drop(arm_tx);
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    tokio::time::sleep(AFTER_CLOSE_PAUSE).await;
    let rss_after = rss("VmRSS");
    let rss_peak = rss("VmHWM");

    let mut p50s: Vec<f64> = reports.iter().filter_map(|r| r.p50_ms).collect();
    p50s.sort_by(f64::total_cmp);
    let summary = Summary {
        kind: "summary",
        addr: addr.to_string(),
        write_addr: write_addr.to_string(),
        watchers: args.watchers,
        rounds: reports.len() as u32,
        worst_last_ms: reports.iter().filter_map(|r| r.last_ms).max_by(f64::total_cmp),
        median_p50_ms: p50s.get(p50s.len() / 2).copied(),
        missed_total: reports.iter().map(|r| r.missed).sum(),
        failed_total: reports.iter().map(|r| r.failed).sum(),
        rss_before_kib: rss_before,
        rss_open_kib: rss_open,
        rss_after_kib: rss_after,
        rss_peak_kib: rss_peak,
    };
    match args.format {
        Format::Table => print!("{}", table(&summary, &reports, &args)),
        Format::Json => {
            for report in &reports {
                println!("{}", serde_json::to_string(report).context("could not encode a round")?);
            }
            println!("{}", serde_json::to_string(&summary).context("could not encode the summary")?);
        }
    }
    if reports.iter().all(|r| r.woken == 0) {
        eprintln!("watchers: no watcher was ever woken by a write");
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

/// Tallies one event into `report`; returns the wake time (since `written`)
/// of a watcher woken in this round after the write.
fn count(
    event: &Event,
    round: u32,
    report: &mut RoundReport,
    live: &mut u64,
    written: Option<Instant>,
) -> Option<Duration> {
    match event {
        Event::Armed { round: r } if *r == round => report.armed += 1,
        Event::Spurious { round: r } if *r == round => report.spurious += 1,
        Event::Failed { round: r, error } => {
            *live = live.saturating_sub(1);
            if *r == round {
                report.failed += 1;
            }
            if report.failed == 1 {
                eprintln!("watchers: round {round}: a watcher failed: {error}");
            }
        }
        Event::Woke { round: r, at } if *r == round => {
            report.woken += 1;
            // A wake before the write would mean the marker was there already.
            return Some(written.map_or(Duration::ZERO, |w| at.saturating_duration_since(w)));
        }
        _ => {} // a straggler from an earlier round
    }
    None
}

/// The service's current `X-Consul-Index`.
async fn current_index(client: &HttpClient, path: &str) -> anyhow::Result<u64> {
    let response = client.get(path).await.map_err(|e| anyhow::anyhow!("GET {path}: {e}"))?;
    if response.status != 200 {
        bail!("GET {path} on {}: HTTP {}: {}", client.addr(), response.status, response.text().trim());
    }
    response.consul_index().with_context(|| format!("GET {path} on {}: no X-Consul-Index header", client.addr()))
}

/// Opens `--watchers` HTTP/1.1 connections, `--connect-concurrency` at a
/// time, all within `--open-timeout`; any failure fails the run (fewer
/// watchers than asked would be a different benchmark).
async fn open_connections(addr: SocketAddr, args: &Args) -> anyhow::Result<Vec<SendRequest<Empty<Bytes>>>> {
    let gate = Arc::new(Semaphore::new(args.connect_concurrency as usize));
    let mut opening = JoinSet::new();
    for _ in 0..args.watchers {
        let gate = Arc::clone(&gate);
        opening.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
            // The connection task ends when its sender is dropped (the watcher ends).
            tokio::spawn(connection);
            anyhow::Ok(sender)
        });
    }
    let deadline = Instant::now() + args.open_timeout;
    let mut senders = Vec::with_capacity(args.watchers as usize);
    let mut first_error = None;
    let mut failed = 0;
    loop {
        match tokio::time::timeout_at(deadline, opening.join_next()).await {
            Ok(None) => break,
            Ok(Some(Ok(Ok(sender)))) => senders.push(sender),
            Ok(Some(Ok(Err(error)))) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{error:#}"));
            }
            Ok(Some(Err(join))) => bail!("a connecting task failed: {join}"),
            Err(_) => {
                opening.abort_all();
                bail!(
                    "opened only {} of {} connections to {addr} in {:?}",
                    senders.len(),
                    args.watchers,
                    args.open_timeout
                );
            }
        }
    }
    if let Some(error) = first_error {
        bail!(
            "{failed} of {} connections to {addr} failed (first: {error}); \
             is the open-files limit (ulimit -n) high enough for the watchers and the agent?",
            args.watchers
        );
    }
    Ok(senders)
}

/// One watcher: its connection and what it needs to send blocking queries.
struct Watcher {
    sender: SendRequest<Empty<Bytes>>,
    arm: watch::Receiver<Arm>,
    events: mpsc::UnboundedSender<Event>,
    path: String,
    host: String,
    wait: String,
    /// Time limit of one blocking request.
    limit: Duration,
}

impl Watcher {
    async fn run(mut self) {
        let mut done_round = 0;
        loop {
            // The next round's orders (the channel closes when the run ends).
            let arm = match self.arm.wait_for(|arm| arm.round > done_round).await {
                Ok(arm) => arm.clone(),
                Err(_) => return,
            };
            done_round = arm.round;
            let mut index = arm.index;
            let mut armed = false;
            let events = self.events.clone();
            loop {
                let answer = self.ask(index, || {
                    if !armed {
                        armed = true;
                        let _ = events.send(Event::Armed { round: arm.round });
                    }
                });
                let (at, new_index, body) = match answer.await {
                    Ok(answer) => answer,
                    Err(error) => {
                        let _ = self.events.send(Event::Failed { round: arm.round, error: format!("{error:#}") });
                        return;
                    }
                };
                if self.arm.borrow().round != arm.round {
                    break; // a later round has started: this answer is stale
                }
                if memchr_contains(&body, arm.marker.as_bytes()) {
                    let _ = self.events.send(Event::Woke { round: arm.round, at });
                    break;
                }
                let _ = self.events.send(Event::Spurious { round: arm.round });
                index = index.max(new_index);
            }
        }
    }

    /// One blocking query past `index`; `sent` is called once the request
    /// is handed to the connection. Returns when the whole answer is read,
    /// its `X-Consul-Index` and body.
    async fn ask(&mut self, index: u64, sent: impl FnOnce()) -> anyhow::Result<(Instant, u64, Bytes)> {
        self.sender.ready().await.context("the connection closed")?;
        let request = Request::get(format!("{}?index={index}&wait={}", self.path, self.wait))
            .header(hyper::header::HOST, &self.host)
            .body(Empty::<Bytes>::new())
            .context("could not build the request")?;
        let response = self.sender.send_request(request);
        sent();
        let exchange = async {
            let response = response.await.context("the blocking query failed")?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.context("could not read the answer")?.to_bytes();
            anyhow::Ok((parts, body))
        };
        let (parts, body) = tokio::time::timeout(self.limit, exchange)
            .await
            .map_err(|_| anyhow::anyhow!("no answer to a blocking query within {:?}", self.limit))??;
        let at = Instant::now();
        if parts.status != 200 {
            bail!("HTTP {}: {}", parts.status, String::from_utf8_lossy(&body).trim());
        }
        let new_index = parts
            .headers
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .context("an answer without X-Consul-Index")?;
        Ok((at, new_index, body))
    }
}

fn memchr_contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn table(summary: &Summary, reports: &[RoundReport], args: &Args) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "  {} watchers on {} (GET /v1/health/service/{}?index=..&wait={}), write to {}, settle {:?}\n",
        summary.watchers,
        summary.addr,
        args.service,
        weft_api::duration::format(args.wait),
        summary.write_addr,
        args.settle
    ));
    out.push_str(&format!(
        "  {:>5}  {:>7}  {:>7}  {:>6}  {:>8}  {:>6}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}\n",
        "round", "armed", "woken", "missed", "spurious", "failed", "write", "first", "p50", "p99", "last"
    ));
    for r in reports {
        out.push_str(&format!(
            "  {:>5}  {:>7}  {:>7}  {:>6}  {:>8}  {:>6}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}\n",
            r.round,
            r.armed,
            r.woken,
            r.missed,
            r.spurious,
            r.failed,
            fmt_ms(r.write_ms),
            fmt_ms(r.first_ms),
            fmt_ms(r.p50_ms),
            fmt_ms(r.p99_ms),
            fmt_ms(r.last_ms)
        ));
    }
    let mib = |kib: Option<u64>| kib.map_or_else(|| "-".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    if args.pid.is_some() {
        out.push_str(&format!(
            "  agent RSS: before {}, with the watchers open {}, after closing them {} (peak {})\n",
            mib(summary.rss_before_kib),
            mib(summary.rss_open_kib),
            mib(summary.rss_after_kib),
            mib(summary.rss_peak_kib)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_have_the_issue_defaults() {
        let args = Args::try_parse_from(["watchers", "--addr", "127.0.0.1:1"]).expect("valid arguments");
        assert_eq!((args.watchers, args.rounds), (2000, 5));
        assert_eq!(args.wait, Duration::from_secs(60));
        assert!(Args::try_parse_from(["watchers", "--addr", "x", "--watchers", "0"]).is_err());
    }

    #[test]
    fn events_are_counted_per_round() {
        let mut report = RoundReport {
            kind: "round",
            round: 2,
            armed: 0,
            woken: 0,
            missed: 0,
            spurious: 0,
            failed: 0,
            write_status: None,
            write_ms: None,
            first_ms: None,
            p50_ms: None,
            p99_ms: None,
            last_ms: None,
        };
        let mut live = 3;
        let written = Instant::now();
        assert_eq!(count(&Event::Armed { round: 2 }, 2, &mut report, &mut live, None), None);
        assert_eq!(count(&Event::Armed { round: 1 }, 2, &mut report, &mut live, None), None);
        let at = written + Duration::from_millis(7);
        assert_eq!(
            count(&Event::Woke { round: 2, at }, 2, &mut report, &mut live, Some(written)),
            Some(Duration::from_millis(7))
        );
        assert_eq!(count(&Event::Woke { round: 1, at }, 2, &mut report, &mut live, Some(written)), None);
        count(&Event::Failed { round: 2, error: "reset".into() }, 2, &mut report, &mut live, None);
        assert_eq!((report.armed, report.woken, report.failed, live), (1, 1, 1, 2));
    }

    #[test]
    fn finds_the_marker() {
        assert!(memchr_contains(br#"[{"ID":"watched-1-r2"}]"#, br#""watched-1-r2""#));
        assert!(!memchr_contains(br#"[{"ID":"watched-1-r21"}]"#, br#""watched-1-r2""#));
        assert!(!memchr_contains(b"", b""));
    }
}
