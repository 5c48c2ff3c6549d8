//! Access logs (proxy-defaults' `AccessLogs`): one line per HTTP request
//! and per TCP connection, in the entry's JSON or text format.
//!
//! Lines are rendered where the traffic is and handed to one writer task
//! through a bounded queue, so a slow disk never holds up a request: when
//! the queue is full the line is dropped and counted
//! (`weft_proxy_access_log_dropped_lines`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use hyper::body::{Bytes, Frame, SizeHint};
use hyper::header::HeaderMap;
use hyper::{Request, Response};
use prometheus_client::metrics::counter::Counter;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use weft_api::access_log::{AccessLogSink, CompiledFormat, Operator};

use crate::http::{Body, ERROR_HEADER};

/// Lines waiting for the writer; beyond this they are dropped.
const QUEUE: usize = 4096;

/// A compiled `AccessLogs`: where lines go and how they look.
pub struct AccessLogConfig {
    pub sink: AccessLogSink,
    pub format: CompiledFormat,
    pub listener_logs: bool,
}

/// The sidecar's access log writer. Cheap to clone; the writer task starts
/// with the first line.
#[derive(Clone, Default)]
pub struct AccessLog {
    queue: Arc<OnceLock<mpsc::Sender<(AccessLogSink, String)>>>,
    pub dropped: Counter,
}

impl AccessLog {
    fn write(&self, sink: &AccessLogSink, line: String) {
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(QUEUE);
            tokio::spawn(write_lines(receiver));
            sender
        });
        if queue.try_send((sink.clone(), line)).is_err() {
            self.dropped.inc();
        }
    }

    /// Logs one finished exchange or connection.
    pub fn log(&self, config: &AccessLogConfig, entry: &Entry) {
        self.write(&config.sink, config.format.line(&|op| entry.value(op)));
    }
}

async fn write_lines(mut lines: mpsc::Receiver<(AccessLogSink, String)>) {
    let mut files: HashMap<String, tokio::fs::File> = HashMap::new();
    let (mut stdout, mut stderr) = (tokio::io::stdout(), tokio::io::stderr());
    while let Some((sink, line)) = lines.recv().await {
        let written = match &sink {
            AccessLogSink::Stdout => stdout.write_all(line.as_bytes()).await,
            AccessLogSink::Stderr => stderr.write_all(line.as_bytes()).await,
            AccessLogSink::File(path) => {
                if !files.contains_key(path) {
                    let opened = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await;
                    match opened {
                        Ok(file) => {
                            files.insert(path.clone(), file);
                        }
                        Err(error) => {
                            tracing::warn!(%path, %error, "cannot open the access log");
                            continue;
                        }
                    }
                }
                match files.get_mut(path) {
                    Some(file) => file.write_all(line.as_bytes()).await,
                    None => continue,
                }
            }
        };
        if let Err(error) = written {
            tracing::warn!(%sink, %error, "cannot write the access log");
            if let AccessLogSink::File(path) = &sink {
                files.remove(path); // reopened with the next line
            }
        }
    }
}

/// What one log line can say.
#[derive(Default)]
pub struct Entry {
    pub start: Option<SystemTime>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub authority: Option<String>,
    pub protocol: Option<&'static str>,
    pub request_headers: HeaderMap,
    pub response_headers: HeaderMap,
    pub status: Option<u16>,
    /// Why the sidecar refused or answered itself.
    pub flags: Option<String>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: Option<u128>,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<String>,
    pub downstream_remote: Option<SocketAddr>,
    pub downstream_local: Option<SocketAddr>,
    pub peer_uri_san: Option<String>,
}

impl Entry {
    fn value(&self, op: &Operator) -> Option<String> {
        match op {
            Operator::StartTime => self.start.map(rfc3339),
            Operator::RequestHeader(names) => names.iter().find_map(|name| match name.as_str() {
                ":method" => self.method.clone(),
                ":path" => self.path.clone(),
                ":authority" => self.authority.clone(),
                header => self.request_headers.get(header).and_then(|v| v.to_str().ok()).map(str::to_owned),
            }),
            Operator::ResponseHeader(name) => {
                self.response_headers.get(name.as_str()).and_then(|v| v.to_str().ok()).map(str::to_owned)
            }
            Operator::Protocol => self.protocol.map(str::to_owned),
            Operator::ResponseCode => Some(self.status.unwrap_or(0).to_string()),
            Operator::ResponseFlags => self.flags.clone(),
            Operator::BytesReceived => Some(self.bytes_received.to_string()),
            Operator::BytesSent => Some(self.bytes_sent.to_string()),
            Operator::Duration => self.duration_ms.map(|ms| ms.to_string()),
            Operator::UpstreamHost => self.upstream_host.map(|a| a.to_string()),
            Operator::UpstreamCluster => self.upstream_cluster.clone(),
            Operator::DownstreamRemoteAddress => self.downstream_remote.map(|a| a.to_string()),
            Operator::DownstreamLocalAddress => self.downstream_local.map(|a| a.to_string()),
            Operator::DownstreamPeerUriSan => self.peer_uri_san.clone(),
        }
    }
}

fn rfc3339(time: SystemTime) -> String {
    let format = time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from(time).format(&format).unwrap_or_default()
}

/// A TCP connection being logged: timed from [`TcpSession::begin`].
pub struct TcpSession {
    start: SystemTime,
    started: Instant,
}

impl TcpSession {
    pub fn begin() -> TcpSession {
        TcpSession { start: SystemTime::now(), started: Instant::now() }
    }

    /// The connection's line: `base` (its two ends) with the bytes each way.
    pub fn entry(&self, received: u64, sent: u64, base: Entry) -> Entry {
        Entry {
            start: Some(self.start),
            protocol: Some("tcp"),
            bytes_received: received,
            bytes_sent: sent,
            duration_ms: Some(self.started.elapsed().as_millis()),
            ..base
        }
    }
}

/// The endpoint a response came from (set by the outbound path), for
/// `%UPSTREAM_HOST%`.
#[derive(Clone, Copy, Debug)]
pub struct UpstreamHost(pub SocketAddr);

/// An HTTP exchange being logged: made from the request, finished with
/// the response. The line is written when the response body ends (or is
/// dropped), so `%DURATION%` and `%BYTES_SENT%` cover the whole body.
pub struct Exchange {
    entry: Entry,
    started: Instant,
    received: Arc<AtomicU64>,
}

impl Exchange {
    /// Starts logging `request`; its body is counted from here on.
    pub fn begin(request: Request<Body>, base: Entry) -> (Exchange, Request<Body>) {
        let received = Arc::new(AtomicU64::new(0));
        let entry =
            Entry {
                start: Some(SystemTime::now()),
                method: Some(request.method().to_string()),
                path: Some(request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned()),
                authority: request.uri().authority().map(|a| a.to_string()).or_else(|| {
                    request.headers().get(hyper::header::HOST).and_then(|h| h.to_str().ok()).map(Into::into)
                }),
                protocol: Some(version_name(request.version())),
                request_headers: request.headers().clone(),
                ..base
            };
        let counted = received.clone();
        let request =
            request.map(|body| http_body_util::BodyExt::boxed(Counted { inner: body, count: counted, done: None }));
        (Exchange { entry, started: Instant::now(), received }, request)
    }

    /// Finishes with `response`: the line is written once its body ends.
    pub fn finish(self, response: Response<Body>, log: AccessLog, config: Arc<AccessLogConfig>) -> Response<Body> {
        let Exchange { mut entry, started, received } = self;
        entry.status = Some(response.status().as_u16());
        entry.response_headers = response.headers().clone();
        entry.flags = response.headers().get(ERROR_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        if let Some(UpstreamHost(host)) = response.extensions().get::<UpstreamHost>() {
            entry.upstream_host = Some(*host);
        }
        let done: Done = Box::new(move |sent| {
            entry.bytes_sent = sent;
            entry.bytes_received = received.load(Ordering::Relaxed);
            entry.duration_ms = Some(started.elapsed().as_millis());
            log.log(&config, &entry);
        });
        response.map(|body| {
            http_body_util::BodyExt::boxed(Counted {
                inner: body,
                count: Arc::new(AtomicU64::new(0)),
                done: Some(done),
            })
        })
    }
}

fn version_name(version: hyper::Version) -> &'static str {
    match version {
        hyper::Version::HTTP_10 => "HTTP/1.0",
        hyper::Version::HTTP_11 => "HTTP/1.1",
        hyper::Version::HTTP_2 => "HTTP/2",
        hyper::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/0.9",
    }
}

/// Called with the bytes a body carried, when it ends or is dropped.
type Done = Box<dyn FnOnce(u64) + Send + Sync>;

/// A body that counts the bytes passing through it.
struct Counted {
    inner: Body,
    count: Arc<AtomicU64>,
    done: Option<Done>,
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(None) => self.end(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Counted {
    fn end(&mut self) {
        if let Some(done) = self.done.take() {
            done(self.count.load(Ordering::Relaxed));
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.end();
    }
}
