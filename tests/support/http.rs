//! Plain HTTP/1.1 on both ends of a mesh test: a keep-alive test app whose
//! answers the test decides, and one request over any stream (TCP, TLS).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// A request's head, as a test app sees it.
pub struct Head {
    pub method: String,
    pub path: String,
    /// The whole head, request line and headers.
    pub text: String,
}

impl Head {
    /// Whether the head has exactly this header line (any case).
    pub fn has_line(&self, line: &str) -> bool {
        self.text.lines().any(|l| l.eq_ignore_ascii_case(line))
    }
}

/// Starts an HTTP/1.1 keep-alive app on loopback answering each request
/// (without a body) with `answer`'s (status line, body); honours
/// `Connection: close`. Returns its port.
pub async fn http_app<F, Fut>(answer: F) -> u16
where
    F: Fn(Head) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = (&'static str, String)> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buffer = [0u8; 4096];
                loop {
                    let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buffer[..n]),
                        }
                        continue;
                    };
                    let text = String::from_utf8_lossy(&pending[..end]).into_owned();
                    pending.drain(..end + 4);
                    let mut words = text.split_whitespace();
                    let (method, path) = (words.next().unwrap_or("").to_owned(), words.next().unwrap_or("").to_owned());
                    let head = Head { method, path, text };
                    let close = head.has_line("connection: close");
                    let (status, body) = answer(head).await;
                    let response = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                    if socket.write_all(response.as_bytes()).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// One `method path` for `host` over `stream` (closed after it): (status,
/// body), or `None` if no answer came within 20 s.
pub async fn http_exchange<S>(
    mut stream: S,
    method: &str,
    host: &str,
    path: &str,
    user_agent: &str,
) -> Option<(u16, String)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    // A TLS peer may close without close_notify once the body is sent: keep what came.
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response)).await.ok()?;
    let response = String::from_utf8_lossy(&response);
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Some((status, body))
}
