//! `propagation`: how long a service registered on one Weft agent takes to
//! be answered by another agent's DNS (driven by `bench/agents.sh`).
//!
//! For i in 0..N, one after the other: register `<prefix>-<i>` through agent
//! A's HTTP API (`PUT /v1/agent/service/register`; A syncs it to the catalog
//! by itself, the call does not wait for that), and at the same time ask
//! agent B's DNS for `<prefix>-<i>.service.<domain>` A records every
//! `--poll-interval` until one comes back. The figure is the time from just
//! before the PUT to the first positive answer. A registration that is not
//! answered within `--timeout`, or whose PUT fails, is a failure, counted and
//! reported; the run stops early at `--max-time`. Only loopback addresses are
//! accepted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::time::Instant;
use weft_api::client::{ClientError, HttpClient};
use weft_bench::args::{parse_duration, Format};
use weft_bench::dnswire::{ask, build_query, Reply};
use weft_bench::latency::{fmt_ms, Latencies, Summary};
use weft_bench::net::resolve_loopback;

/// How long the start-up checks (an HTTP request to A, a DNS query to B) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Registers services on agent A and times until agent B's DNS answers for them.
#[derive(Debug, Parser)]
#[command(name = "propagation", version)]
struct Args {
    /// HTTP address (HOST:PORT) of agent A, where services are registered.
    #[arg(long, value_name = "HOST:PORT")]
    register_addr: String,

    /// DNS address (HOST:PORT, UDP) of agent B, which is polled.
    #[arg(long, value_name = "HOST:PORT")]
    dns_addr: String,

    /// Number of registrations, one after the other.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    count: u32,

    /// Services are named `<prefix>-<i>` (a DNS label: letters, digits, '-').
    #[arg(long, default_value = "prop")]
    prefix: String,

    /// The agents' DNS domain.
    #[arg(long, default_value = "weft")]
    domain: String,

    /// How long one registration may take to show up in B's DNS before it
    /// counts as a failure.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,

    /// Pause between a negative DNS answer and the next query.
    #[arg(long, default_value = "1ms", value_parser = parse_duration)]
    poll_interval: Duration,

    /// How long to wait for the reply to one DNS query before sending the
    /// next (an unanswered query is counted as lost).
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    query_timeout: Duration,

    /// Stop starting registrations after this long (a safety cap on the run).
    #[arg(long, default_value = "600s", value_parser = parse_duration)]
    max_time: Duration,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// What the run saw.
#[derive(Debug, Serialize)]
struct Report {
    register_addr: String,
    dns_addr: String,
    requested: u32,
    /// Registrations started (fewer than requested if `--max-time` cut the run short).
    attempted: u32,
    /// Registrations B's DNS answered for in time.
    visible: u64,
    elapsed_s: f64,
    /// Time from the PUT to B's first positive answer, of the visible ones.
    p50_ms: Option<f64>,
    p90_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    mean_ms: Option<f64>,
    /// Latency of A's answer to the PUT itself.
    put_p50_ms: Option<f64>,
    put_p99_ms: Option<f64>,
    failures: u64,
    /// Failures by kind: `timeout`, `already_present`, `register_http_<status>`, `register_transport`.
    failure_kinds: BTreeMap<String, u64>,
    first_failure: Option<String>,
    /// DNS queries sent to B while polling, queries with no reply within
    /// `--query-timeout`, and negative answers by response code.
    dns_queries: u64,
    dns_lost: u64,
    negative_answers: BTreeMap<String, u64>,
    stopped_early: bool,
}

struct Tally {
    visible: Latencies,
    put: Latencies,
    failures: BTreeMap<String, u64>,
    first_failure: Option<String>,
    dns_queries: u64,
    dns_lost: u64,
    negative: BTreeMap<String, u64>,
}

impl Tally {
    fn failure(&mut self, kind: &str, detail: impl FnOnce() -> String) {
        *self.failures.entry(kind.to_owned()).or_default() += 1;
        if self.first_failure.is_none() {
            self.first_failure = Some(detail());
        }
    }

    fn negative(&mut self, reply: &Reply) {
        *self.negative.entry(rcode_name(reply.rcode)).or_default() += 1;
    }
}

fn rcode_name(rcode: u8) -> String {
    match rcode {
        0 => "NOERROR".to_owned(),
        2 => "SERVFAIL".to_owned(),
        3 => "NXDOMAIN".to_owned(),
        5 => "REFUSED".to_owned(),
        other => format!("RCODE{other}"),
    }
}

/// The DNS side: one UDP socket connected to B, and the next query ID.
struct Prober {
    socket: UdpSocket,
    next_id: u16,
    query_timeout: Duration,
}

impl Prober {
    /// One query; `None` when no reply came within the query timeout (or `limit`).
    async fn ask(&mut self, name: &str, limit: Duration) -> anyhow::Result<Option<Reply>> {
        self.next_id = self.next_id.wrapping_add(1);
        let query = build_query(self.next_id, name)?;
        ask(&self.socket, self.next_id, &query, self.query_timeout.min(limit)).await
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("propagation: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let label_ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !label_ok(&args.prefix) || args.prefix.len() > 50 {
        bail!("--prefix must be 1 to 50 letters, digits or '-', not {:?}", args.prefix);
    }
    if args.timeout.is_zero() || args.query_timeout.is_zero() {
        bail!("--timeout and --query-timeout must be more than zero");
    }
    let register_addr = resolve_loopback("--register-addr", &args.register_addr).await?;
    let dns_addr = resolve_loopback("--dns-addr", &args.dns_addr).await?;
    let client = HttpClient::new(&register_addr.to_string(), None).with_timeout(args.timeout);
    let socket = UdpSocket::bind(SocketAddr::new(dns_addr.ip(), 0)).await.context("could not open a UDP socket")?;
    socket.connect(dns_addr).await.with_context(|| format!("could not connect a UDP socket to {dns_addr}"))?;
    let mut prober = Prober { socket, next_id: 0, query_timeout: args.query_timeout };
    probe(&client, &mut prober, &args).await?;

    let mut tally = Tally {
        visible: Latencies::new()?,
        put: Latencies::new()?,
        failures: BTreeMap::new(),
        first_failure: None,
        dns_queries: 0,
        dns_lost: 0,
        negative: BTreeMap::new(),
    };
    let start = Instant::now();
    let stop_at = start + args.max_time;
    let mut attempted = 0;
    for i in 0..args.count {
        if Instant::now() >= stop_at {
            break;
        }
        attempted += 1;
        register_and_wait(i, &args, &client, &mut prober, &mut tally).await?;
    }
    let elapsed = start.elapsed();

    let visible: Summary = tally.visible.summary();
    let put = tally.put.summary();
    let report = Report {
        register_addr: register_addr.to_string(),
        dns_addr: dns_addr.to_string(),
        requested: args.count,
        attempted,
        visible: visible.count,
        elapsed_s: elapsed.as_secs_f64(),
        p50_ms: visible.p50_ms,
        p90_ms: visible.p90_ms,
        p99_ms: visible.p99_ms,
        max_ms: visible.max_ms,
        mean_ms: visible.mean_ms,
        put_p50_ms: put.p50_ms,
        put_p99_ms: put.p99_ms,
        failures: tally.failures.values().sum(),
        failure_kinds: tally.failures,
        first_failure: tally.first_failure,
        dns_queries: tally.dns_queries,
        dns_lost: tally.dns_lost,
        negative_answers: tally.negative,
        stopped_early: attempted < args.count,
    };
    match args.format {
        Format::Table => print!("{}", table(&report, &args)),
        Format::Json => println!("{}", serde_json::to_string(&report).context("could not encode the report")?),
    }
    if report.visible == 0 {
        eprintln!("propagation: no registration became visible");
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

/// Fails fast, before the timed run, when A's HTTP API or B's DNS does not answer.
async fn probe(client: &HttpClient, prober: &mut Prober, args: &Args) -> anyhow::Result<()> {
    let response = tokio::time::timeout(PROBE_TIMEOUT, client.get("/v1/agent/self"))
        .await
        .map_err(|_| anyhow::anyhow!("agent A at {} did not answer GET /v1/agent/self in time", client.addr()))?
        .map_err(|e| anyhow::anyhow!("agent A: {}", describe(&e)))?;
    if response.status != 200 {
        bail!("agent A at {} answered GET /v1/agent/self with HTTP {}", client.addr(), response.status);
    }
    let name = format!("{}-probe.service.{}", args.prefix, args.domain);
    for _ in 0..5 {
        if prober.ask(&name, PROBE_TIMEOUT).await?.is_some() {
            return Ok(());
        }
    }
    bail!("agent B's DNS at {} did not answer 5 queries for {name}", args.dns_addr)
}

fn describe(error: &ClientError) -> String {
    match error {
        ClientError::Unreachable { addr, reason } => format!("could not reach {addr}: {reason}"),
        ClientError::TimedOut { url, after } => format!("{url} timed out after {after:?}"),
        ClientError::InvalidRequest { url, reason } => format!("invalid request to {url}: {reason}"),
    }
}

/// One registration: PUT on A (in its own task) while polling B's DNS.
async fn register_and_wait(
    i: u32,
    args: &Args,
    client: &HttpClient,
    prober: &mut Prober,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let service = format!("{}-{i}", args.prefix);
    let name = format!("{service}.service.{}", args.domain);

    // A name that already resolves (a rerun against the same agents) would
    // measure nothing: count it and move on.
    if let Some(reply) = prober.ask(&name, args.query_timeout).await? {
        if !reply.a_records.is_empty() {
            tally.failure("already_present", || format!("{name} already resolved before it was registered"));
            return Ok(());
        }
    }

    let body = serde_json::json!({ "Name": service, "Port": 8080 }).to_string();
    let put_failed = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let put = {
        let client = client.clone();
        let put_failed = Arc::clone(&put_failed);
        tokio::spawn(async move {
            let result = client.put("/v1/agent/service/register", body).await;
            let latency = started.elapsed();
            if !matches!(&result, Ok(r) if r.status == 200) {
                put_failed.store(true, Ordering::SeqCst);
            }
            (result, latency)
        })
    };

    let deadline = started + args.timeout;
    let mut seen = None;
    while !put_failed.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tally.dns_queries += 1;
        match prober.ask(&name, deadline - now).await? {
            Some(reply) if !reply.a_records.is_empty() => {
                seen = Some(started.elapsed());
                break;
            }
            Some(reply) => tally.negative(&reply),
            None => tally.dns_lost += 1,
        }
        let pause = args.poll_interval.min(deadline.saturating_duration_since(Instant::now()));
        tokio::time::sleep(pause).await;
    }

    // The client's own timeout (--timeout) bounds the PUT.
    let (result, put_latency) = put.await.context("the registering task failed")?;
    match result {
        Ok(response) if response.status == 200 => tally.put.record(put_latency),
        Ok(response) => {
            let kind = format!("register_http_{}", response.status);
            let text = response.text();
            tally.failure(&kind, || format!("PUT {service} on A: HTTP {}: {}", response.status, text.trim()));
            return Ok(());
        }
        Err(error) => {
            tally.failure("register_transport", || format!("PUT {service} on A: {}", describe(&error)));
            return Ok(());
        }
    }
    match seen {
        Some(latency) => tally.visible.record(latency),
        None => tally.failure("timeout", || format!("{name} not answered by B within {:?}", args.timeout)),
    }
    Ok(())
}

fn table(report: &Report, args: &Args) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| out.push_str(&format!("  {label:<18} {value}\n"));
    line("register on (A)", format!("{} (PUT /v1/agent/service/register)", report.register_addr));
    line("poll DNS of (B)", format!("{} every {:?}", report.dns_addr, args.poll_interval));
    let early =
        if report.stopped_early { format!(" (stopped early at --max-time {:?})", args.max_time) } else { "".into() };
    line("registrations", format!("{} of {} attempted{early}", report.attempted, report.requested));
    line("visible in time", format!("{} (timeout {:?})", report.visible, args.timeout));
    line("elapsed", format!("{:.2} s", report.elapsed_s));
    line("p50", fmt_ms(report.p50_ms));
    line("p90", fmt_ms(report.p90_ms));
    line("p99", fmt_ms(report.p99_ms));
    line("max", fmt_ms(report.max_ms));
    line("mean", fmt_ms(report.mean_ms));
    line("PUT p50/p99", format!("{} / {}", fmt_ms(report.put_p50_ms), fmt_ms(report.put_p99_ms)));
    let kinds: Vec<String> = report.failure_kinds.iter().map(|(k, n)| format!("{k}={n}")).collect();
    line(
        "failures",
        if kinds.is_empty() { "0".to_owned() } else { format!("{} ({})", report.failures, kinds.join(", ")) },
    );
    if let Some(first) = &report.first_failure {
        line("first failure", first.clone());
    }
    let negative: Vec<String> = report.negative_answers.iter().map(|(k, n)| format!("{k}={n}")).collect();
    line(
        "DNS queries",
        format!("{} (lost {}, negative answers: {})", report.dns_queries, report.dns_lost, negative.join(", ")),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_have_the_issue_defaults() {
        let args = Args::try_parse_from(["propagation", "--register-addr", "127.0.0.1:1", "--dns-addr", "127.0.0.1:2"])
            .expect("valid arguments");
        assert_eq!(args.count, 500);
        assert_eq!(args.timeout, Duration::from_secs(5));
        assert_eq!(args.poll_interval, Duration::from_millis(1));
        assert!(
            Args::try_parse_from(["propagation", "--register-addr", "x", "--dns-addr", "y", "--count", "0"]).is_err()
        );
    }

    #[test]
    fn rcodes_have_names() {
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(rcode_name(9), "RCODE9");
    }
}
