//! `kv-load`: a bounded KV write load generator, to compare Weft's replicated
//! KV store with etcd on the same machine (driven by `bench/raft-kv.sh`).
//!
//! C clients, spread round-robin over the given addresses, each send one PUT
//! at a time (each on its own keep-alive connection) until the duration ends
//! (or, with `--count`, until that many writes succeeded), then the tool
//! prints writes/s, latency quantiles and errors. Every request is cut off at
//! the hard stop (duration plus grace), so a run always ends by itself; and
//! only loopback addresses are accepted as targets. With `--ca-file` the
//! clients speak HTTPS (etcd with client TLS), otherwise plain HTTP; with
//! `--token` or `--token-file` every request carries that ACL token as
//! `X-Consul-Token` (Weft with ACLs on).

mod https;
mod stats;
mod workload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser;
use hyper::header::HeaderValue;
use hyper::Method;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use weft_api::client::{ClientError, HttpClient, Response};
use weft_bench::args::{parse_duration, Format};
use weft_bench::net::resolve_loopback;

use crate::https::HttpsClient;
use crate::stats::{Report, RunInfo, Tally};
use crate::workload::{Target, Workload};

/// The run time when `--duration` is not given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// The safety cap on a `--count` run when `--duration` is not given.
const DEFAULT_COUNT_DURATION: Duration = Duration::from_secs(600);
/// Pause after a transport error, so a dead server is not hammered in a tight loop.
const TRANSPORT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Runs concurrent KV writers against Weft or etcd and reports throughput and latency.
#[derive(Debug, Parser)]
#[command(name = "kv-load", version)]
struct Args {
    /// The system under test.
    #[arg(long, value_enum)]
    target: Target,

    /// HTTP address (HOST:PORT) of a server; repeat it (or separate with
    /// commas) to spread clients round-robin. Only loopback addresses are accepted.
    #[arg(long = "addr", value_name = "HOST:PORT", required = true, value_delimiter = ',')]
    addrs: Vec<String>,

    /// Number of concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    clients: u32,

    /// How long to send writes ("10s", "1m30s", or plain seconds). Default 10s,
    /// or 600s as a safety cap with --count.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,

    /// Stop after this many successful writes across all clients (or at the
    /// end of --duration, whichever comes first).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,

    /// Size of each value in bytes.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(0..=1_048_576))]
    value_size: u64,

    /// Keys are `<prefix>/<client>/<n>`.
    #[arg(long, default_value = "bench")]
    key_prefix: String,

    /// Time limit of one request.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    request_timeout: Duration,

    /// How long requests still in flight at the end of the duration may take
    /// before they are cut off (and not counted).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    grace: Duration,

    /// Speak HTTPS to the addresses, verifying their certificates against
    /// this CA (PEM) and the address's IP (e.g. etcd started with
    /// --cert-file). Default: plain HTTP.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,

    /// ACL token sent as X-Consul-Token with every request (Weft with ACLs
    /// on). Default: none.
    #[arg(long, value_name = "SECRET", conflicts_with = "token_file")]
    token: Option<String>,

    /// A file holding the ACL token (surrounding whitespace trimmed), so it
    /// stays out of the process list; as --token otherwise.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// One load client's connection: plain HTTP (weft_api's client, boxed: it
/// is much the larger) or HTTPS.
enum Client {
    Http(Box<HttpClient>),
    Https(HttpsClient),
}

impl Client {
    fn new(addr: &SocketAddr, tls: Option<&TlsConnector>, timeout: Duration, token: Option<&str>) -> Self {
        let token = token.map(str::to_owned);
        match tls {
            None => Client::Http(Box::new(HttpClient::new(&addr.to_string(), token).with_timeout(timeout))),
            Some(connector) => Client::Https(HttpsClient::new(*addr, connector.clone(), timeout, token)),
        }
    }

    fn addr(&self) -> &str {
        match self {
            Client::Http(client) => client.addr(),
            Client::Https(client) => client.addr(),
        }
    }

    async fn request(&mut self, method: Method, path: &str, body: Vec<u8>) -> Result<Response, ClientError> {
        match self {
            Client::Http(client) => client.request(method, path, Some(body)).await,
            Client::Https(client) => client.request(method, path, body).await,
        }
    }
}

/// What every client shares.
struct Shared {
    workload: Workload,
    key_prefix: String,
    /// No new request starts after this.
    deadline: Instant,
    /// Requests still in flight are abandoned at this point.
    hard_stop: Instant,
    budget: WriteBudget,
    acks: Acks,
}

/// When writes were last acknowledged, by any client, and the longest time
/// without one: what a leader failover stalls the writers for.
struct Acks {
    start: Instant,
    last_ns: AtomicU64,
    longest_ns: AtomicU64,
}

impl Acks {
    fn new(start: Instant) -> Self {
        Acks { start, last_ns: AtomicU64::new(0), longest_ns: AtomicU64::new(0) }
    }

    fn ack(&self) {
        let now = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let previous = self.last_ns.fetch_max(now, Ordering::SeqCst);
        self.longest_ns.fetch_max(now.saturating_sub(previous), Ordering::SeqCst);
    }

    fn longest_ms(&self) -> f64 {
        self.longest_ns.load(Ordering::SeqCst) as f64 / 1e6
    }
}

/// The `--count` limit: a client claims a slot before each write and gives it
/// back if the write fails, so exactly `limit` writes succeed (unless time runs out).
struct WriteBudget {
    limit: Option<u64>,
    claimed: AtomicU64,
}

impl WriteBudget {
    fn claim(&self) -> bool {
        let Some(limit) = self.limit else { return true };
        self.claimed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |claimed| (claimed < limit).then_some(claimed + 1))
            .is_ok()
    }

    fn release(&self) {
        if self.limit.is_some() {
            self.claimed.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("kv-load: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let value_size = usize::try_from(args.value_size).context("--value-size is too large")?;
    if args.key_prefix.is_empty() || args.key_prefix.starts_with('/') {
        bail!("--key-prefix must be non-empty and must not start with '/'");
    }
    let requested =
        args.duration.unwrap_or(if args.count.is_some() { DEFAULT_COUNT_DURATION } else { DEFAULT_DURATION });
    if requested.is_zero() {
        bail!("--duration must be more than zero");
    }

    let mut addrs = Vec::with_capacity(args.addrs.len());
    for addr in &args.addrs {
        addrs.push(resolve_loopback("--addr", addr).await?);
    }
    let tls = args.ca_file.as_deref().map(https::connector).transpose()?;
    let token = read_token(args.token.as_deref(), args.token_file.as_deref())?;
    let token = token.as_deref();
    let workload = Workload::new(args.target, value_size);
    for addr in &addrs {
        probe(&workload, Client::new(addr, tls.as_ref(), args.request_timeout, token), &args.key_prefix).await?;
    }

    let clients = usize::try_from(args.clients).context("--clients is too large")?;
    let start = Instant::now();
    let deadline = start + requested;
    let shared = Arc::new(Shared {
        workload,
        key_prefix: args.key_prefix.clone(),
        deadline,
        hard_stop: deadline + args.grace,
        budget: WriteBudget { limit: args.count, claimed: AtomicU64::new(0) },
        acks: Acks::new(start),
    });
    let mut tasks = Vec::with_capacity(clients);
    for id in 0..clients {
        let addr = &addrs[id % addrs.len()];
        // One client (and so one connection pool) per task: each task keeps
        // its own keep-alive connection, as an independent client would.
        let client = Client::new(addr, tls.as_ref(), args.request_timeout, token);
        let tally = Tally::new()?;
        tasks.push(tokio::spawn(run_client(id, client, Arc::clone(&shared), tally)));
    }

    let mut total = Tally::new()?;
    // Every request is bounded by `hard_stop`, so the tasks end by then; the
    // extra second only guards against a bug, and stragglers are aborted.
    let give_up = shared.hard_stop + Duration::from_secs(1);
    for task in tasks {
        let handle = task.abort_handle();
        match tokio::time::timeout_at(give_up, task).await {
            Ok(Ok(tally)) => total.merge(tally)?,
            Ok(Err(join_error)) => bail!("a load client failed: {join_error}"),
            Err(_) => {
                handle.abort();
                total.cut_off += 1;
            }
        }
    }
    let elapsed = start.elapsed();

    let info = RunInfo {
        target: args.target,
        // `https://` marks the addresses spoken to over TLS (in the table and the JSON).
        addrs: addrs
            .iter()
            .map(|addr| if tls.is_some() { format!("https://{addr}") } else { addr.to_string() })
            .collect(),
        clients,
        value_size,
        requested,
        count: args.count,
    };
    let mut report = Report::new(info, total, elapsed);
    report.longest_stall_ms = (report.writes > 0).then(|| shared.acks.longest_ms());
    match args.format {
        Format::Table => print!("{}", report.table()),
        Format::Json => println!("{}", report.json()?),
    }
    if report.writes == 0 {
        eprintln!("kv-load: no write succeeded");
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

/// The ACL token from `--token` or `--token-file` (trimmed), if any; one
/// that cannot go in an HTTP header is refused before the run.
fn read_token(token: Option<&str>, file: Option<&Path>) -> anyhow::Result<Option<String>> {
    let token = match (token, file) {
        (Some(token), _) => token.trim().to_owned(),
        (None, Some(path)) => {
            std::fs::read_to_string(path).with_context(|| format!("--token-file {}", path.display()))?.trim().to_owned()
        }
        (None, None) => return Ok(None),
    };
    if token.is_empty() {
        bail!("the ACL token is empty (--token or --token-file)");
    }
    HeaderValue::from_str(&token).context("the ACL token cannot be sent as an HTTP header")?;
    Ok(Some(token))
}

/// Sends one write to `addr` before the timed run, so a wrong address or a
/// cluster without a leader fails fast with the server's own answer.
async fn probe(workload: &Workload, mut client: Client, key_prefix: &str) -> anyhow::Result<()> {
    let addr = client.addr().to_owned();
    let request = workload.request(&format!("{key_prefix}/probe"));
    let response = client.request(request.method, &request.path, request.body).await.map_err(|error| {
        anyhow::anyhow!("probe write to {:?} at {addr} failed: {}", workload.target(), describe(&error))
    })?;
    workload.check(&response).map_err(|rejection| {
        anyhow::anyhow!("probe write to {addr} ({:?}) was refused: {}", workload.target(), rejection.detail)
    })
}

/// A transport error in words that fit either target (the client's own
/// `Display` assumes it is talking to a Weft agent).
fn describe(error: &ClientError) -> String {
    match error {
        ClientError::Unreachable { addr, reason } => format!("could not reach {addr}: {reason}"),
        ClientError::TimedOut { url, after } => format!("{url} timed out after {after:?}"),
        ClientError::InvalidRequest { url, reason } => {
            format!("invalid request to {url}: {reason}")
        }
    }
}

/// One client: sequential writes until the deadline or the budget runs out.
async fn run_client(id: usize, mut client: Client, shared: Arc<Shared>, mut tally: Tally) -> Tally {
    let mut n: u64 = 0;
    while Instant::now() < shared.deadline && shared.budget.claim() {
        let request = shared.workload.request(&format!("{}/{id}/{n}", shared.key_prefix));
        n += 1;
        let started = Instant::now();
        let outcome =
            tokio::time::timeout_at(shared.hard_stop, client.request(request.method, &request.path, request.body))
                .await;
        let latency = started.elapsed();
        match outcome {
            Err(_) => {
                shared.budget.release();
                tally.cut_off += 1;
                break;
            }
            Ok(Ok(response)) => match shared.workload.check(&response) {
                Ok(()) => {
                    shared.acks.ack();
                    tally.success(latency);
                }
                Err(rejection) => {
                    shared.budget.release();
                    tally.error(&rejection.kind, || format!("{}: {}", client.addr(), rejection.detail));
                }
            },
            Ok(Err(error)) => {
                shared.budget.release();
                let kind = match &error {
                    ClientError::TimedOut { .. } => "timeout",
                    ClientError::Unreachable { .. } => "transport",
                    ClientError::InvalidRequest { .. } => "invalid_request",
                };
                tally.error(kind, || describe(&error));
                if matches!(error, ClientError::Unreachable { .. }) {
                    tokio::time::sleep_until((Instant::now() + TRANSPORT_ERROR_BACKOFF).min(shared.deadline)).await;
                }
            }
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_hands_out_exactly_the_limit() {
        let budget = WriteBudget { limit: Some(2), claimed: AtomicU64::new(0) };
        assert!(budget.claim());
        assert!(budget.claim());
        assert!(!budget.claim());
        budget.release();
        assert!(budget.claim());
        let unlimited = WriteBudget { limit: None, claimed: AtomicU64::new(0) };
        assert!((0..10).all(|_| unlimited.claim()));
    }

    #[test]
    fn args_parse_repeated_and_comma_addrs() {
        let args = Args::try_parse_from([
            "kv-load",
            "--target",
            "etcd",
            "--addr",
            "127.0.0.1:1",
            "--addr",
            "127.0.0.1:2,127.0.0.1:3",
            "--duration",
            "3s",
            "--format",
            "json",
        ])
        .expect("valid arguments");
        assert_eq!(args.addrs.len(), 3);
        assert_eq!(args.duration, Some(Duration::from_secs(3)));
        assert_eq!(args.format, Format::Json);
        assert!(Args::try_parse_from(["kv-load", "--target", "weft", "--addr", "x", "--clients", "0"]).is_err());
        assert!(Args::try_parse_from(["kv-load", "--target", "weft", "--addr", "x", "--duration", "ten"]).is_err());
        let both_tokens = ["kv-load", "--target", "weft", "--addr", "x", "--token", "t", "--token-file", "f"];
        assert!(Args::try_parse_from(both_tokens).is_err());
    }

    #[test]
    fn the_token_comes_trimmed_from_the_flag_or_the_file() {
        assert_eq!(read_token(None, None).unwrap(), None);
        assert_eq!(read_token(Some(" abc\n"), None).unwrap().as_deref(), Some("abc"));
        let path = std::env::temp_dir().join(format!("kv-load-token-test-{}", std::process::id()));
        std::fs::write(&path, "s3cret\n").expect("write the test file");
        let from_file = read_token(None, Some(&path)).map_err(|e| e.to_string());
        std::fs::write(&path, "\n").expect("write the test file");
        let empty = read_token(None, Some(&path)).is_err();
        std::fs::remove_file(&path).ok();
        assert_eq!(from_file.unwrap().as_deref(), Some("s3cret"));
        assert!(empty, "an empty token file is refused");
        assert!(read_token(Some("bad\u{1}token"), None).is_err(), "not a header value");
        assert!(read_token(None, Some(Path::new("/nonexistent/token"))).is_err());
    }
}
