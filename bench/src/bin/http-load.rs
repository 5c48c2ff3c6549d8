//! `http-load`: an HTTP/1.1 load generator for the mesh data-plane benchmark
//! (driven by `bench/mesh.sh`), sending the same requests through every
//! chain (straight to the backend, through two Weft sidecars, through two
//! HAProxy instances) so their figures compare.
//!
//! Four modes, one per figure the benchmark prints:
//!
//! - `rate`: open loop. Requests are scheduled at a fixed rate and spread
//!   over C keep-alive connections (request i on connection i mod C, at
//!   `start + i / rate`). A request's latency counts from its scheduled
//!   time, so a slow answer that delays the next requests on its connection
//!   shows in theirs too (no coordinated omission). The one thing taken
//!   out is the tool's own lateness: tokio's timers fire on a 1 ms tick, so
//!   a request may leave up to ~1 ms after it could have; that lag (from the
//!   later of the scheduled time and its connection being free, to the send)
//!   is reported apart, not counted as the target's latency.
//! - `max`: closed loop, C keep-alive connections each sending the next
//!   request as soon as the previous answer is read: the most the target
//!   serves at that concurrency.
//! - `connect`: closed loop, C at a time, each request on a new connection
//!   (`Connection: close`, read to the end). Through a TCP proxy chain every
//!   one is a new TLS handshake between the proxies. The raw request keeps
//!   the server (the backend, then each proxy in turn) the side that closes
//!   first, so the tool does not pile up its own ports in TIME_WAIT.
//! - `hold`: opens N keep-alive connections, sends one request on each (so
//!   the whole chain behind it is set up) and holds them while it reads the
//!   resident memory (VmRSS, and its anonymous part RssAnon) of the given
//!   processes; then closes them all.
//!
//! Every response must be `200` with `--expect-bytes` of body (when given);
//! anything else is an error, counted by kind. Every run is bounded: no
//! request starts after the warm-up plus `--duration`, and every request is
//! cut off after `--request-timeout` and at the hard stop (the end plus
//! `--request-timeout`). Only loopback targets are accepted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::HOST;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use weft_bench::args::{parse_duration, Format};
use weft_bench::latency::{fmt_ms, Latencies};
use weft_bench::net::resolve_loopback;
use weft_bench::proc::status_kib;

/// Pause after a failed request in the closed-loop modes, so a dead target
/// is not hammered in a tight loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// The first scheduled request leaves this long after the workers are spawned.
const START_DELAY: Duration = Duration::from_millis(20);
/// Pause after closing the held connections before the last RSS reading.
const AFTER_CLOSE_PAUSE: Duration = Duration::from_secs(1);
/// Bytes of an unexpected answer quoted in an error.
const QUOTED_BYTES: usize = 200;

/// Sends HTTP/1.1 load to one loopback address: at a fixed rate, as fast as
/// it goes, on a new connection per request, or holding many connections open.
#[derive(Debug, Parser)]
#[command(name = "http-load", version)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Open loop: a fixed request rate over keep-alive connections; latency
    /// from each request's scheduled send time.
    Rate(RateArgs),
    /// Closed loop: C keep-alive connections, each sending its next request
    /// as soon as it has the previous answer.
    Max(MaxArgs),
    /// Closed loop, C at a time, every request on a new connection.
    Connect(ConnectArgs),
    /// Holds N connections open (one request each) and reads processes' RSS.
    Hold(HoldArgs),
}

/// What every mode shares: the target and the requests.
#[derive(Debug, clap::Args)]
struct TargetArgs {
    /// Target (HOST:PORT, a loopback address).
    #[arg(long, value_name = "HOST:PORT")]
    addr: String,

    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,

    /// The `Host` header sent.
    #[arg(long, default_value = "bench")]
    host: String,

    /// A 200 answer whose body is not this many bytes counts as an error.
    #[arg(long, value_name = "BYTES")]
    expect_bytes: Option<usize>,

    /// Time limit of one request (connecting included).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    request_timeout: Duration,

    /// A name echoed in the report (e.g. the chain measured).
    #[arg(long)]
    label: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// How long a load mode runs.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Measured time, after the warm-up.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,

    /// Load sent first and not counted (connections warm, caches filled).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
}

#[derive(Debug, clap::Args)]
struct RateArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    run: RunArgs,

    /// Requests per second.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    rate: u32,

    /// Keep-alive connections the requests are spread over.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connections: u32,
}

#[derive(Debug, clap::Args)]
struct MaxArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    run: RunArgs,

    /// Keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connections: u32,
}

#[derive(Debug, clap::Args)]
struct ConnectArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    run: RunArgs,

    /// Connections in progress at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
}

#[derive(Debug, clap::Args)]
struct HoldArgs {
    #[command(flatten)]
    target: TargetArgs,

    /// Connections to open and hold.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    connections: u32,

    /// Connections being opened at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connect_concurrency: u32,

    /// Limit on opening all connections (and their first requests).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    open_timeout: Duration,

    /// Pause with every connection open before reading the RSS.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    settle: Duration,

    /// A process whose RSS (VmRSS from /proc/<pid>/status) to report (repeatable).
    #[arg(long = "pid")]
    pids: Vec<u32>,
}

/// The figures of a `rate`, `max` or `connect` run.
#[derive(Debug, Serialize)]
struct LoadReport {
    kind: &'static str,
    label: Option<String>,
    addr: String,
    /// Keep-alive connections (`rate`, `max`) or connections at once (`connect`).
    connections: u32,
    requested_rate: Option<u32>,
    /// The measured window (warm-up excluded).
    duration_s: f64,
    /// Requests answered as expected in the window (`connect`: connections).
    completed: u64,
    per_sec: f64,
    /// Requests answered as expected over the whole run, warm-up included
    /// (to set against CPU time measured around the whole run).
    total_completed: u64,
    p50_ms: Option<f64>,
    p90_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    mean_ms: Option<f64>,
    /// `rate`: the tool's own send lateness (not counted in the latencies).
    lag_p50_ms: Option<f64>,
    lag_p99_ms: Option<f64>,
    errors: u64,
    error_kinds: BTreeMap<String, u64>,
    first_error: Option<String>,
    /// `rate`: scheduled requests of the window not answered by the hard stop.
    unfinished: u64,
}

/// One process's memory around a `hold` run, in KiB.
#[derive(Debug, Serialize)]
struct RssReport {
    kind: &'static str,
    pid: u32,
    before_kib: Option<u64>,
    open_kib: Option<u64>,
    after_kib: Option<u64>,
    peak_kib: Option<u64>,
    /// The anonymous part (heap, stacks) of `before` and `open`: what the
    /// process itself allocated, without the pages of its executable and
    /// libraries (which processes of the same binary share).
    before_anon_kib: Option<u64>,
    open_anon_kib: Option<u64>,
}

/// A `hold` run.
#[derive(Debug, Serialize)]
struct HoldReport {
    kind: &'static str,
    label: Option<String>,
    addr: String,
    asked: u32,
    opened: u64,
    failed: u64,
    first_error: Option<String>,
    open_s: f64,
}

/// A request that did not get the expected answer.
#[derive(Debug)]
struct Failure {
    kind: String,
    detail: String,
}

impl Failure {
    fn new(kind: impl Into<String>, detail: impl ToString) -> Failure {
        Failure { kind: kind.into(), detail: detail.to_string() }
    }
}

/// What one worker (or all of them, merged) saw.
struct Tally {
    latencies: Latencies,
    lags: Latencies,
    completed: u64,
    /// Answered as expected, warm-up included.
    total_completed: u64,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
    unfinished: u64,
}

impl Tally {
    fn new() -> anyhow::Result<Tally> {
        Ok(Tally {
            latencies: Latencies::new()?,
            lags: Latencies::new()?,
            completed: 0,
            total_completed: 0,
            errors: BTreeMap::new(),
            first_error: None,
            unfinished: 0,
        })
    }

    fn success(&mut self, latency: Duration) {
        self.latencies.record(latency);
        self.completed += 1;
    }

    /// Counts one closed-loop exchange that ran from `started` to `done`,
    /// timed only if it ended within `window`; whether it failed.
    fn closed_loop(
        &mut self,
        result: Result<(), Failure>,
        started: Instant,
        done: Instant,
        window: std::ops::RangeInclusive<Instant>,
    ) -> bool {
        let failed = result.is_err();
        self.total_completed += u64::from(!failed);
        if window.contains(&done) {
            match result {
                Ok(()) => self.success(done - started),
                Err(failure) => self.error(failure),
            }
        }
        failed
    }

    fn error(&mut self, failure: Failure) {
        if self.first_error.is_none() {
            self.first_error = Some(format!("{}: {}", failure.kind, failure.detail));
        }
        *self.errors.entry(failure.kind).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        self.latencies.merge(&other.latencies)?;
        self.lags.merge(&other.lags)?;
        self.completed += other.completed;
        self.total_completed += other.total_completed;
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.unfinished += other.unfinished;
        Ok(())
    }

    fn report(self, kind: &'static str, target: &Target, connections: u32, window: Duration) -> LoadReport {
        let latency = self.latencies.summary();
        let lag = if kind == "rate" { self.lags.summary() } else { Default::default() };
        let secs = window.as_secs_f64();
        LoadReport {
            kind,
            label: target.label.clone(),
            addr: target.addr.to_string(),
            connections,
            requested_rate: None,
            duration_s: secs,
            completed: self.completed,
            per_sec: if secs > 0.0 { self.completed as f64 / secs } else { 0.0 },
            total_completed: self.total_completed,
            p50_ms: latency.p50_ms,
            p90_ms: latency.p90_ms,
            p99_ms: latency.p99_ms,
            max_ms: latency.max_ms,
            mean_ms: latency.mean_ms,
            lag_p50_ms: lag.p50_ms,
            lag_p99_ms: lag.p99_ms,
            errors: self.errors.values().sum(),
            error_kinds: self.errors,
            first_error: self.first_error,
            unfinished: self.unfinished,
        }
    }
}

/// The target and the request every mode sends.
struct Target {
    addr: SocketAddr,
    path: String,
    host: String,
    expect_bytes: Option<usize>,
    timeout: Duration,
    label: Option<String>,
    /// The whole request of `connect` mode.
    close_request: Vec<u8>,
}

type Sender = SendRequest<Empty<Bytes>>;

impl Target {
    async fn new(args: &TargetArgs) -> anyhow::Result<Target> {
        let addr = resolve_loopback("--addr", &args.addr).await?;
        if !args.path.starts_with('/') || args.path.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            bail!("--path must start with '/' and hold no spaces, not {:?}", args.path);
        }
        if args.host.is_empty() || args.host.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            bail!("--host must be a non-empty name without spaces, not {:?}", args.host);
        }
        let close_request =
            format!("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", args.path, args.host).into_bytes();
        Ok(Target {
            addr,
            path: args.path.clone(),
            host: args.host.clone(),
            expect_bytes: args.expect_bytes,
            timeout: args.request_timeout,
            label: args.label.clone(),
            close_request,
        })
    }

    /// A new keep-alive connection.
    async fn open(&self) -> Result<Sender, Failure> {
        let stream = TcpStream::connect(self.addr).await.map_err(|e| Failure::new("connect", e))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            http1::handshake(TokioIo::new(stream)).await.map_err(|e| Failure::new("connect", e))?;
        // Ends when the sender is dropped or the peer closes.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// One request on `connection` (opened first if there is none), ended
    /// by `--request-timeout` or `hard_stop`. A connection that failed is
    /// dropped, so the next request opens a new one.
    async fn exchange(&self, connection: &mut Option<Sender>, hard_stop: Instant) -> Result<(), Failure> {
        let limit = (Instant::now() + self.timeout).min(hard_stop);
        let result = match tokio::time::timeout_at(limit, self.exchange_on(connection)).await {
            Ok(result) => result,
            Err(_) => Err(Failure::new("timeout", format!("no answer within {:?}", self.timeout))),
        };
        if result.is_err() {
            *connection = None;
        }
        result
    }

    async fn exchange_on(&self, connection: &mut Option<Sender>) -> Result<(), Failure> {
        let sender = match connection {
            Some(sender) if !sender.is_closed() => sender,
            _ => connection.insert(self.open().await?),
        };
        sender.ready().await.map_err(|e| Failure::new("closed", e))?;
        let request = Request::get(self.path.as_str())
            .header(HOST, self.host.as_str())
            .body(Empty::<Bytes>::new())
            .map_err(|e| Failure::new("request", e))?;
        let response = sender.send_request(request).await.map_err(|e| Failure::new("send", e))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| Failure::new("body", e))?.to_bytes();
        self.check(status.as_u16(), &body)
    }

    /// One request on a new connection, read to the end (the server closes).
    async fn fresh_exchange(&self, hard_stop: Instant) -> Result<(), Failure> {
        let limit = (Instant::now() + self.timeout).min(hard_stop);
        let exchange = async {
            let mut stream = TcpStream::connect(self.addr).await.map_err(|e| Failure::new("connect", e))?;
            let _ = stream.set_nodelay(true);
            stream.write_all(&self.close_request).await.map_err(|e| Failure::new("send", e))?;
            let mut answer = Vec::with_capacity(2048);
            stream.read_to_end(&mut answer).await.map_err(|e| Failure::new("body", e))?;
            let (status, body) = parse_answer(&answer)?;
            self.check(status, body)
        };
        match tokio::time::timeout_at(limit, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Failure::new("timeout", format!("no whole answer within {:?}", self.timeout))),
        }
    }

    fn check(&self, status: u16, body: &[u8]) -> Result<(), Failure> {
        if status != 200 {
            return Err(Failure::new(format!("http_{status}"), quote(body)));
        }
        match self.expect_bytes {
            Some(expected) if body.len() != expected => {
                Err(Failure::new("size", format!("a {}-byte body, expected {expected}", body.len())))
            }
            _ => Ok(()),
        }
    }
}

/// The status and body of a whole HTTP/1.1 answer read to the end of its
/// connection (its `Content-Length` is not checked: the size check is).
fn parse_answer(answer: &[u8]) -> Result<(u16, &[u8]), Failure> {
    let Some(head_end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err(Failure::new("parse", format!("no HTTP answer: {}", quote(answer))));
    };
    let head = String::from_utf8_lossy(&answer[..head_end]);
    let status = head
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| Failure::new("parse", format!("no status line: {}", quote(answer))))?;
    Ok((status, &answer[head_end + 4..]))
}

fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(QUOTED_BYTES)]);
    text.trim().replace(['\r', '\n'], " ")
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args.mode).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("http-load: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(mode: Mode) -> anyhow::Result<ExitCode> {
    let (report, format) = match mode {
        Mode::Rate(args) => (rate(&args).await?, args.target.format),
        Mode::Max(args) => (max(&args).await?, args.target.format),
        Mode::Connect(args) => (connect(&args).await?, args.target.format),
        Mode::Hold(args) => return hold(&args).await,
    };
    match format {
        Format::Table => print!("{}", load_table(&report)),
        Format::Json => println!("{}", serde_json::to_string(&report).context("could not encode the report")?),
    }
    if report.completed == 0 {
        eprintln!("http-load: no request was answered as expected in the measured time");
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

/// Fails early, with the reason, if the target does not answer one request.
async fn probe(target: &Target) -> anyhow::Result<()> {
    let mut connection = None;
    target
        .exchange(&mut connection, Instant::now() + target.timeout)
        .await
        .map_err(|f| anyhow::anyhow!("probe request to {} failed: {}: {}", target.addr, f.kind, f.detail))
}

/// Opens `count` keep-alive connections (64 at a time, within the request timeout).
async fn open_connections(target: &Arc<Target>, count: u32) -> anyhow::Result<Vec<Sender>> {
    let gate = Arc::new(Semaphore::new(64));
    let mut opening = JoinSet::new();
    for _ in 0..count {
        let (gate, target) = (gate.clone(), target.clone());
        opening.spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| Failure::new("connect", e))?;
            tokio::time::timeout(target.timeout, target.open())
                .await
                .unwrap_or_else(|_| Err(Failure::new("connect", "timed out")))
        });
    }
    let mut senders = Vec::with_capacity(count as usize);
    while let Some(opened) = opening.join_next().await {
        match opened.context("a connecting task failed")? {
            Ok(sender) => senders.push(sender),
            Err(failure) => {
                bail!("could not open connections to {}: {}: {}", target.addr, failure.kind, failure.detail)
            }
        }
    }
    Ok(senders)
}

/// Waits for the workers; any still running a second past the hard stop
/// (which bounds every request, so only a bug) is aborted.
async fn join_workers(workers: JoinSet<anyhow::Result<Tally>>, hard_stop: Instant) -> anyhow::Result<Tally> {
    let mut workers = workers;
    let mut total = Tally::new()?;
    let give_up = hard_stop + Duration::from_secs(1);
    loop {
        match tokio::time::timeout_at(give_up, workers.join_next()).await {
            Ok(None) => return Ok(total),
            Ok(Some(joined)) => total.merge(joined.context("a load worker failed")??)?,
            Err(_) => {
                workers.abort_all();
                bail!("load workers still running a second after the hard stop");
            }
        }
    }
}

/// The schedule of a `rate` run.
struct Schedule {
    start: Instant,
    measure_from: Instant,
    rate: f64,
    /// Requests in the warm-up and the measured window together.
    total: u64,
    /// No request is sent, or waited for, past this.
    hard_stop: Instant,
}

impl Schedule {
    fn at(&self, request: u64) -> Instant {
        self.start + Duration::from_secs_f64(request as f64 / self.rate)
    }
}

async fn rate(args: &RateArgs) -> anyhow::Result<LoadReport> {
    let target = Arc::new(Target::new(&args.target).await?);
    probe(&target).await?;
    let senders = open_connections(&target, args.connections).await?;
    let start = Instant::now() + START_DELAY;
    let run = args.run.warmup + args.run.duration;
    let schedule = Arc::new(Schedule {
        start,
        measure_from: start + args.run.warmup,
        rate: f64::from(args.rate),
        total: (run.as_secs_f64() * f64::from(args.rate)).round() as u64,
        hard_stop: start + run + target.timeout,
    });
    let mut workers = JoinSet::new();
    for (index, sender) in senders.into_iter().enumerate() {
        let (target, schedule) = (target.clone(), schedule.clone());
        workers.spawn(rate_worker(index as u64, u64::from(args.connections), sender, target, schedule));
    }
    let tally = join_workers(workers, schedule.hard_stop).await?;
    let mut report = tally.report("rate", &target, args.connections, args.run.duration);
    report.requested_rate = Some(args.rate);
    Ok(report)
}

/// Sends requests `first`, `first + step`, ... of the schedule on one connection.
async fn rate_worker(
    first: u64,
    step: u64,
    sender: Sender,
    target: Arc<Target>,
    schedule: Arc<Schedule>,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    let mut connection = Some(sender);
    let mut free_at = schedule.start;
    let mut request = first;
    while request < schedule.total {
        let scheduled = schedule.at(request);
        tokio::time::sleep_until(scheduled).await;
        let sent = Instant::now();
        if sent >= schedule.hard_stop {
            // Out of time: what is left of the window is unfinished.
            let left = (request..schedule.total).step_by(step as usize);
            tally.unfinished += left.filter(|&r| schedule.at(r) >= schedule.measure_from).count() as u64;
            break;
        }
        let result = target.exchange(&mut connection, schedule.hard_stop).await;
        let done = Instant::now();
        // The earliest this request could have left: its time, or when the
        // connection was free again if the previous answer came later.
        let ready = scheduled.max(free_at);
        free_at = done;
        tally.total_completed += u64::from(result.is_ok());
        if scheduled >= schedule.measure_from {
            match result {
                Ok(()) => {
                    tally.success((done - sent) + (ready - scheduled));
                    tally.lags.record(sent.saturating_duration_since(ready));
                }
                Err(failure) => tally.error(failure),
            }
        }
        request += step;
    }
    Ok(tally)
}

async fn max(args: &MaxArgs) -> anyhow::Result<LoadReport> {
    let target = Arc::new(Target::new(&args.target).await?);
    probe(&target).await?;
    let senders = open_connections(&target, args.connections).await?;
    let measure_from = Instant::now() + args.run.warmup;
    let end = measure_from + args.run.duration;
    let hard_stop = end + target.timeout;
    let mut workers = JoinSet::new();
    for sender in senders {
        let target = target.clone();
        workers.spawn(async move {
            let mut tally = Tally::new()?;
            let mut connection = Some(sender);
            loop {
                let sent = Instant::now();
                if sent >= end {
                    return Ok(tally);
                }
                let result = target.exchange(&mut connection, hard_stop).await;
                let done = Instant::now();
                if tally.closed_loop(result, sent, done, measure_from..=end) {
                    tokio::time::sleep_until((done + ERROR_BACKOFF).min(end)).await;
                }
            }
        });
    }
    let tally = join_workers(workers, hard_stop).await?;
    Ok(tally.report("max", &target, args.connections, args.run.duration))
}

async fn connect(args: &ConnectArgs) -> anyhow::Result<LoadReport> {
    let target = Arc::new(Target::new(&args.target).await?);
    target
        .fresh_exchange(Instant::now() + target.timeout)
        .await
        .map_err(|f| anyhow::anyhow!("probe connection to {} failed: {}: {}", target.addr, f.kind, f.detail))?;
    let measure_from = Instant::now() + args.run.warmup;
    let end = measure_from + args.run.duration;
    let hard_stop = end + target.timeout;
    let mut workers = JoinSet::new();
    for _ in 0..args.concurrency {
        let target = target.clone();
        workers.spawn(async move {
            let mut tally = Tally::new()?;
            loop {
                let started = Instant::now();
                if started >= end {
                    return Ok(tally);
                }
                let result = target.fresh_exchange(hard_stop).await;
                let done = Instant::now();
                if tally.closed_loop(result, started, done, measure_from..=end) {
                    tokio::time::sleep_until((done + ERROR_BACKOFF).min(end)).await;
                }
            }
        });
    }
    let tally = join_workers(workers, hard_stop).await?;
    Ok(tally.report("connect", &target, args.concurrency, args.run.duration))
}

async fn hold(args: &HoldArgs) -> anyhow::Result<ExitCode> {
    let target = Arc::new(Target::new(&args.target).await?);
    probe(&target).await?;
    let rss = |pid: u32, field: &str| status_kib(pid, field);
    let before: Vec<Option<u64>> = args.pids.iter().map(|&pid| rss(pid, "VmRSS")).collect();
    let before_anon: Vec<Option<u64>> = args.pids.iter().map(|&pid| rss(pid, "RssAnon")).collect();

    let started = Instant::now();
    let deadline = started + args.open_timeout;
    let gate = Arc::new(Semaphore::new(args.connect_concurrency as usize));
    let mut opening = JoinSet::new();
    for _ in 0..args.connections {
        let (gate, target) = (gate.clone(), target.clone());
        opening.spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| Failure::new("connect", e))?;
            let mut connection = None;
            target.exchange(&mut connection, deadline).await?;
            connection.ok_or_else(|| Failure::new("closed", "the connection closed after its request"))
        });
    }
    let mut held = Vec::with_capacity(args.connections as usize);
    let (mut failed, mut first_error) = (0u64, None);
    loop {
        match tokio::time::timeout_at(deadline + Duration::from_secs(1), opening.join_next()).await {
            Ok(None) => break,
            Ok(Some(Ok(Ok(sender)))) => held.push(sender),
            Ok(Some(Ok(Err(failure)))) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{}: {}", failure.kind, failure.detail));
            }
            Ok(Some(Err(join))) => bail!("a connecting task failed: {join}"),
            Err(_) => {
                opening.abort_all();
                failed = u64::from(args.connections) - held.len() as u64;
                first_error.get_or_insert_with(|| format!("timeout: not all open within {:?}", args.open_timeout));
                break;
            }
        }
    }
    let open_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(args.settle).await;
    // Connections the peer closed meanwhile are not held.
    let opened = held.iter().filter(|sender| !sender.is_closed()).count() as u64;
    let open: Vec<Option<u64>> = args.pids.iter().map(|&pid| rss(pid, "VmRSS")).collect();
    let open_anon: Vec<Option<u64>> = args.pids.iter().map(|&pid| rss(pid, "RssAnon")).collect();
    drop(held);
    tokio::time::sleep(AFTER_CLOSE_PAUSE).await;

    let report = HoldReport {
        kind: "hold",
        label: target.label.clone(),
        addr: target.addr.to_string(),
        asked: args.connections,
        opened,
        failed,
        first_error,
        open_s,
    };
    let readings: Vec<RssReport> = args
        .pids
        .iter()
        .enumerate()
        .map(|(i, &pid)| RssReport {
            kind: "rss",
            pid,
            before_kib: before[i],
            open_kib: open[i],
            after_kib: rss(pid, "VmRSS"),
            peak_kib: rss(pid, "VmHWM"),
            before_anon_kib: before_anon[i],
            open_anon_kib: open_anon[i],
        })
        .collect();
    match args.target.format {
        Format::Table => print!("{}", hold_table(&report, &readings)),
        Format::Json => {
            for reading in &readings {
                println!("{}", serde_json::to_string(reading).context("could not encode a reading")?);
            }
            println!("{}", serde_json::to_string(&report).context("could not encode the report")?);
        }
    }
    if report.opened == 0 {
        eprintln!("http-load: no connection could be held open");
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

fn load_table(report: &LoadReport) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| out.push_str(&format!("  {label:<11} {value}\n"));
    let what = match (report.kind, report.requested_rate) {
        ("rate", Some(rate)) => format!("{rate} req/s (open loop) over {} keep-alive connections", report.connections),
        ("connect", _) => format!("a new connection per request, {} at a time", report.connections),
        _ => format!("closed loop on {} keep-alive connections", report.connections),
    };
    let label = report.label.as_deref().map(|l| format!(" ({l})")).unwrap_or_default();
    line("target", format!("{}{label}: {what}", report.addr));
    line("measured", format!("{:.1} s", report.duration_s));
    line("completed", format!("{} ({:.1}/s)", report.completed, report.per_sec));
    line(
        "latency",
        format!(
            "p50 {}, p90 {}, p99 {}, max {}, mean {}",
            fmt_ms(report.p50_ms),
            fmt_ms(report.p90_ms),
            fmt_ms(report.p99_ms),
            fmt_ms(report.max_ms),
            fmt_ms(report.mean_ms)
        ),
    );
    if report.kind == "rate" {
        line(
            "send lag",
            format!(
                "p50 {}, p99 {} (the tool's own timer lateness, not counted above)",
                fmt_ms(report.lag_p50_ms),
                fmt_ms(report.lag_p99_ms)
            ),
        );
    }
    let kinds: Vec<String> = report.error_kinds.iter().map(|(kind, n)| format!("{kind}={n}")).collect();
    line("errors", if kinds.is_empty() { "0".to_owned() } else { format!("{} ({})", report.errors, kinds.join(", ")) });
    if report.unfinished > 0 {
        line("unfinished", format!("{} (not answered by the hard stop)", report.unfinished));
    }
    if let Some(first) = &report.first_error {
        line("first error", first.clone());
    }
    out
}

fn hold_table(report: &HoldReport, readings: &[RssReport]) -> String {
    let mib = |kib: Option<u64>| kib.map_or_else(|| "-".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    let mut out = format!(
        "  held {} of {} connections to {} (opened in {:.1} s, {} failed)\n",
        report.opened, report.asked, report.addr, report.open_s, report.failed
    );
    if let Some(first) = &report.first_error {
        out.push_str(&format!("  first error: {first}\n"));
    }
    for r in readings {
        out.push_str(&format!(
            "  pid {}: RSS before {} (anon {}), with the connections open {} (anon {}), after closing them {} (peak {})\n",
            r.pid,
            mib(r.before_kib),
            mib(r.before_anon_kib),
            mib(r.open_kib),
            mib(r.open_anon_kib),
            mib(r.after_kib),
            mib(r.peak_kib)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_have_the_benchmark_defaults() {
        let Args { mode: Mode::Rate(rate) } =
            Args::try_parse_from(["http-load", "rate", "--addr", "127.0.0.1:1"]).expect("valid arguments")
        else {
            panic!("not the rate mode");
        };
        assert_eq!((rate.rate, rate.connections), (1000, 10));
        assert_eq!(rate.run.warmup, Duration::from_secs(1));
        assert!(Args::try_parse_from(["http-load", "rate", "--addr", "x", "--rate", "0"]).is_err());
        assert!(Args::try_parse_from(["http-load", "hold", "--addr", "x", "--pid", "1", "--pid", "2"]).is_ok());
    }

    #[test]
    fn the_schedule_spreads_requests_evenly() {
        let start = Instant::now();
        let schedule = Schedule { start, measure_from: start, rate: 1000.0, total: 2000, hard_stop: start };
        assert_eq!(schedule.at(0), start);
        assert_eq!(schedule.at(1500) - start, Duration::from_millis(1500));
    }

    #[test]
    fn answers_are_parsed_and_checked() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc";
        let (status, body) = parse_answer(answer).expect("an answer");
        assert_eq!((status, body), (200, &b"abc"[..]));
        assert_eq!(parse_answer(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").map(|(s, _)| s).ok(), Some(503));
        assert_eq!(parse_answer(b"garbage").err().map(|f| f.kind), Some("parse".to_owned()));
    }

    #[tokio::test]
    async fn tallies_merge_and_report_rates() -> anyhow::Result<()> {
        let args = TargetArgs {
            addr: "127.0.0.1:9".into(),
            path: "/".into(),
            host: "bench".into(),
            expect_bytes: Some(3),
            request_timeout: Duration::from_secs(1),
            label: Some("direct".into()),
            format: Format::Json,
        };
        let target = Target::new(&args).await?;
        assert_eq!(target.check(200, b"abc").ok(), Some(()));
        assert_eq!(target.check(200, b"ab").err().map(|f| f.kind), Some("size".to_owned()));
        let (mut a, mut b) = (Tally::new()?, Tally::new()?);
        for ms in 1..=10 {
            a.success(Duration::from_millis(ms));
            b.success(Duration::from_millis(ms + 10));
        }
        b.error(Failure::new("http_502", "bad gateway"));
        a.merge(b)?;
        let report = a.report("max", &target, 2, Duration::from_secs(2));
        assert_eq!((report.completed, report.errors), (20, 1));
        assert!((report.per_sec - 10.0).abs() < 1e-9);
        assert_eq!(report.first_error.as_deref(), Some("http_502: bad gateway"));
        assert!(serde_json::to_string(&report)?.contains(r#""label":"direct""#));
        Ok(())
    }
}
