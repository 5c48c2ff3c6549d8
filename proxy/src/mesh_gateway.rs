//! A mesh gateway (`weft connect gateway --kind mesh`): the one way into a
//! network from the others. A sidecar whose upstream instance is in another
//! network connects to that network's gateway and names the instance in its
//! TLS SNI ([`crate::tls::server_name`]); the gateway reads the ClientHello,
//! checks that the name is a healthy sidecar of its own network, and relays
//! the connection's bytes to it.
//!
//! The gateway never terminates the TLS it relays: it holds no key that
//! could read the traffic, and the destination sidecar sees the caller's
//! own certificate, so intentions are still judged end to end. It relays
//! only to the sidecars its snapshot lists, so it is not an open proxy into
//! its network.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::server::Acceptor;

use crate::accept::{accept_until, ListenerSet};
use crate::metrics::{Direction, Metrics, Outcome};
use crate::runtime::{current, RuntimeWatch};
use crate::tls::instance_of_server_name;

/// A caller has this long to send its ClientHello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A ClientHello larger than this is refused (a real one is a few hundred bytes).
const MAX_HELLO_BYTES: usize = 16 * 1024;
/// How long connecting to a sidecar of this network may take.
const SIDECAR_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Relays connections on the current snapshot's listeners until `shutdown`
/// resolves.
pub async fn serve(mut runtime: RuntimeWatch, metrics: Metrics, shutdown: impl std::future::Future<Output = ()>) {
    let mut listeners = ListenerSet::default();
    tokio::pin!(shutdown);
    loop {
        let wanted = current(&runtime)
            .and_then(|now| now.snapshot.mesh_gateway.as_ref().map(|g| g.listeners.clone()))
            .unwrap_or_default();
        listeners
            .reconcile(
                "mesh-gateway",
                &wanted,
                |_| true,
                |socket, _, stopped| {
                    let (runtime, metrics) = (runtime.clone(), metrics.clone());
                    async move {
                        accept_until(
                            &socket,
                            "mesh-gateway",
                            async move { drop(stopped.await) },
                            move |stream, peer| relay(stream, peer, runtime.clone(), metrics.clone()),
                        )
                        .await
                    }
                },
            )
            .await;
        tokio::select! {
            _ = &mut shutdown => break,
            changed = runtime.changed() => if changed.is_err() { break },
        }
    }
}

/// One relayed connection, from its ClientHello to its end.
async fn relay(mut caller: TcpStream, peer: SocketAddr, runtime: RuntimeWatch, metrics: Metrics) {
    let _open = metrics.open(Direction::Inbound);
    let _ = caller.set_nodelay(true);
    let relayed = async {
        let (hello, name) = tokio::time::timeout(HELLO_TIMEOUT, read_client_hello(&mut caller))
            .await
            .map_err(|_| format!("no ClientHello within {HELLO_TIMEOUT:?}"))??;
        let (address, service) = instance_of_server_name(&name)
            .ok_or_else(|| format!("SNI {name:?} names no sidecar (expected <hex IP>-<port>.<service>.svc.weft)"))?;
        let allowed = current(&runtime).is_some_and(|now| {
            let sidecars = now.snapshot.mesh_gateway.as_ref().and_then(|g| g.sidecars.get(&service));
            sidecars.is_some_and(|addresses| addresses.contains(&address))
        });
        if !allowed {
            return Err(format!("{address} is not a healthy sidecar of {service} in this gateway's network"));
        }
        let mut sidecar = tokio::time::timeout(SIDECAR_CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| format!("connect to {address} timed out"))?
            .map_err(|e| format!("connect to {address}: {e}"))?;
        let _ = sidecar.set_nodelay(true);
        sidecar.write_all(&hello).await.map_err(|e| format!("relay to {address}: {e}"))?;
        tracing::debug!(%peer, %address, %service, "relaying");
        let (received, sent) = tokio::io::copy_bidirectional(&mut caller, &mut sidecar).await.unwrap_or_default();
        metrics.bytes(Direction::Inbound, received + hello.len() as u64, sent);
        Ok(())
    };
    match relayed.await {
        Ok(()) => metrics.connection(Direction::Inbound, Outcome::Served),
        Err(reason) => {
            metrics.connection(Direction::Inbound, Outcome::Failed);
            tracing::info!(%peer, %reason, "mesh gateway refused a connection");
        }
    }
}

/// Reads the caller's first TLS flight up to its ClientHello and returns
/// every byte read (to be relayed as is) and the SNI it names.
async fn read_client_hello(caller: &mut (impl AsyncRead + Unpin)) -> Result<(Vec<u8>, String), String> {
    let mut acceptor = Acceptor::default();
    let mut hello = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = caller.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if read == 0 {
            return Err("the caller closed before its ClientHello".into());
        }
        hello.extend_from_slice(&chunk[..read]);
        if hello.len() > MAX_HELLO_BYTES {
            return Err(format!("no ClientHello in the first {MAX_HELLO_BYTES} bytes"));
        }
        let mut fresh = &chunk[..read];
        while !fresh.is_empty() {
            acceptor.read_tls(&mut fresh).map_err(|e| format!("not TLS: {e}"))?;
        }
        match acceptor.accept() {
            Ok(None) => continue,
            Ok(Some(accepted)) => {
                let name = accepted.client_hello().server_name().map(str::to_owned);
                return Ok((hello, name.ok_or("the ClientHello has no SNI")?));
            }
            Err((error, _)) => return Err(format!("not a TLS ClientHello: {error}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn the_client_hello_gives_its_server_name_and_every_byte_read() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let config = tokio_rustls::rustls::ClientConfig::builder()
                .with_root_certificates(tokio_rustls::rustls::RootCertStore::empty())
                .with_no_client_auth();
            let tcp = TcpStream::connect(address).await.unwrap();
            let name = crate::tls::server_name(&"api".into(), "10.0.0.1:21000".parse().unwrap()).unwrap();
            // The handshake fails (nobody answers it); only the hello matters.
            let _ = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await;
        });
        let (mut stream, _) = listener.accept().await.unwrap();
        let (hello, name) = read_client_hello(&mut stream).await.unwrap();
        assert_eq!(name, "0a000001-21000.api.svc.weft");
        assert_eq!(hello[0], 0x16, "a TLS handshake record");
        drop(stream);
        client.await.unwrap();

        let (mut plain, mut other) = tokio::io::duplex(64);
        other.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let refused = read_client_hello(&mut plain).await.unwrap_err();
        assert!(refused.starts_with("not"), "plain HTTP is refused: {refused}");
    }
}
