//! Just enough of the DNS wire format (RFC 1035) to ask a server for the A
//! records of a name over UDP and read the answer: a hand-built query and a
//! reply parser that follows name compression. No EDNS, no TCP fallback
//! (the answers asked for here are far below 512 bytes).

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use tokio::net::UdpSocket;

/// QTYPE and CLASS of an IPv4 address record.
const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
const HEADER_LEN: usize = 12;

/// A reply's header fields and its A records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub id: u16,
    /// RCODE: 0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED, ...
    pub rcode: u8,
    pub truncated: bool,
    /// The answer section's A records (IN class), in order.
    pub a_records: Vec<Ipv4Addr>,
}

/// A standard query with recursion desired for `name`'s A records.
pub fn build_query(id: u16, name: &str) -> anyhow::Result<Vec<u8>> {
    let mut packet = Vec::with_capacity(HEADER_LEN + name.len() + 6);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&0x0100u16.to_be_bytes()); // QUERY, RD
    packet.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    packet.extend_from_slice(&[0; 6]); // ANCOUNT, NSCOUNT, ARCOUNT
    let name = name.trim_end_matches('.');
    ensure!(!name.is_empty() && name.len() <= 253, "DNS name {name:?} is empty or too long");
    for label in name.split('.') {
        ensure!((1..=63).contains(&label.len()), "DNS name {name:?} has an empty or over-long label");
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.push(0);
    packet.extend_from_slice(&TYPE_A.to_be_bytes());
    packet.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(packet)
}

/// Parses a reply (any QR=1 message): header, then the A records of the answer section.
pub fn parse_reply(packet: &[u8]) -> anyhow::Result<Reply> {
    ensure!(packet.len() >= HEADER_LEN, "DNS reply of {} bytes is shorter than a header", packet.len());
    let u16_at = |at: usize| -> anyhow::Result<u16> {
        let bytes = packet.get(at..at + 2).context("DNS reply is cut short")?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    };
    let id = u16_at(0)?;
    let flags = u16_at(2)?;
    ensure!(flags & 0x8000 != 0, "DNS message {id} is a query, not a reply");
    let questions = u16_at(4)?;
    let answers = u16_at(6)?;
    let mut at = HEADER_LEN;
    for _ in 0..questions {
        at = skip_name(packet, at)? + 4; // QTYPE, QCLASS
    }
    let mut a_records = Vec::new();
    for _ in 0..answers {
        at = skip_name(packet, at)?;
        let (rtype, class) = (u16_at(at)?, u16_at(at + 2)?);
        let len = usize::from(u16_at(at + 8)?); // after TYPE, CLASS and TTL
        let rdata = packet.get(at + 10..at + 10 + len).context("DNS reply record is cut short")?;
        if rtype == TYPE_A && class == CLASS_IN && len == 4 {
            a_records.push(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]));
        }
        at += 10 + len;
    }
    Ok(Reply { id, rcode: (flags & 0x000f) as u8, truncated: flags & 0x0200 != 0, a_records })
}

/// The offset just past the (possibly compressed) name starting at `at`.
fn skip_name(packet: &[u8], mut at: usize) -> anyhow::Result<usize> {
    // A name has at most 127 labels; more means a malformed packet.
    for _ in 0..128 {
        let len = *packet.get(at).context("DNS name runs past the end of the reply")?;
        match len {
            0 => return Ok(at + 1),
            l if l & 0xc0 == 0xc0 => {
                ensure!(at + 1 < packet.len(), "DNS name pointer runs past the end of the reply");
                return Ok(at + 2);
            }
            l if l & 0xc0 != 0 => bail!("DNS name label type {l:#x} is not supported"),
            l => at += 1 + usize::from(l),
        }
    }
    bail!("DNS name has too many labels")
}

/// Sends `query` (whose ID is `id`) on the connected `socket` and waits up to
/// `timeout` for the reply with that ID; replies to earlier queries that
/// arrive late are skipped. `Ok(None)`: no reply in time.
pub async fn ask(socket: &UdpSocket, id: u16, query: &[u8], timeout: Duration) -> anyhow::Result<Option<Reply>> {
    socket.send(query).await.context("could not send a DNS query")?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        let received = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            Err(_) => return Ok(None),
            Ok(received) => received.context("could not receive a DNS reply")?,
        };
        // Anything unparsable, or answering another ID, is not the reply we wait for.
        if let Ok(reply) = parse_reply(&buf[..received]) {
            if reply.id == id {
                return Ok(Some(reply));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_wire_format() -> anyhow::Result<()> {
        let query = build_query(0x1234, "web.service.weft.")?;
        let mut expected = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        expected.extend_from_slice(b"\x03web\x07service\x04weft\x00\x00\x01\x00\x01");
        assert_eq!(query, expected);
        assert!(build_query(1, "").is_err());
        assert!(build_query(1, "a..b").is_err());
        assert!(build_query(1, &"x".repeat(64)).is_err());
        Ok(())
    }

    #[test]
    fn reply_with_compressed_answers() -> anyhow::Result<()> {
        let mut reply = build_query(7, "web.service.weft")?;
        reply[2] = 0x85; // QR, AA, RD
        reply[3] = 0x80; // RA, NOERROR
        reply[7] = 2; // ANCOUNT
        for ip in [[10, 0, 0, 1], [10, 0, 0, 2]] {
            reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]); // name -> question, A IN TTL 0
            reply.extend_from_slice(&ip);
        }
        let parsed = parse_reply(&reply)?;
        assert_eq!(parsed.id, 7);
        assert_eq!(parsed.rcode, 0);
        assert!(!parsed.truncated);
        assert_eq!(parsed.a_records, vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]);
        Ok(())
    }

    #[test]
    fn negative_and_malformed_replies() -> anyhow::Result<()> {
        let mut nxdomain = build_query(9, "nope.service.weft")?;
        nxdomain[2] = 0x84;
        nxdomain[3] = 0x03;
        let parsed = parse_reply(&nxdomain)?;
        assert_eq!((parsed.rcode, parsed.a_records.len()), (3, 0));
        let query = build_query(9, "nope.service.weft")?;
        assert!(parse_reply(&query).is_err(), "a query is not a reply");
        let mut cut = nxdomain.clone();
        cut[7] = 1; // claims an answer that is not there
        assert!(parse_reply(&cut).is_err());
        assert!(parse_reply(&nxdomain[..5]).is_err());
        Ok(())
    }

    #[tokio::test]
    async fn ask_skips_stale_replies_and_times_out() -> anyhow::Result<()> {
        let server = UdpSocket::bind("127.0.0.1:0").await?;
        let client = UdpSocket::bind("127.0.0.1:0").await?;
        client.connect(server.local_addr()?).await?;
        let query = build_query(2, "web.service.weft")?;
        let answer = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (len, from) = server.recv_from(&mut buf).await?;
            let mut stale = buf[..len].to_vec();
            stale[1] = 1; // ID 1: an earlier query's late reply
            stale[2] |= 0x80;
            server.send_to(&stale, from).await?;
            let mut reply = buf[..len].to_vec();
            reply[2] |= 0x80;
            reply[3] = 3;
            server.send_to(&reply, from).await?;
            anyhow::Ok(server)
        });
        let reply = ask(&client, 2, &query, Duration::from_secs(5)).await?.context("no reply")?;
        assert_eq!((reply.id, reply.rcode), (2, 3));
        let _server = answer.await??; // kept open, silent
        assert_eq!(ask(&client, 3, &build_query(3, "x.weft")?, Duration::from_millis(50)).await?, None);
        Ok(())
    }
}
