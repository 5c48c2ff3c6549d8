//! Addresses as text: `host:port` with IPv6 hosts in brackets, the one
//! way Weft joins and splits them (tagged addresses, listeners, probes);
//! and an IP address spelled as one DNS label of hex digits (8 for IPv4,
//! 32 for IPv6): Consul's `<hex>.addr.<dc>.<domain>` names, and the
//! instance Weft's sidecars name in their SNI for mesh gateways.

use std::net::IpAddr;

/// `host:port`, an IPv6 host in brackets (`[2001:db8::7]:443`), so that
/// it parses back as a socket address.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The host (without brackets) and port of `host:port`; port 0 when there
/// is none.
pub fn split_host_port(text: &str) -> (&str, u16) {
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && (!host.contains(':') || host.starts_with('[')) => {
            (host.trim_start_matches('[').trim_end_matches(']'), port.parse().unwrap_or(0))
        }
        _ => (text.trim_start_matches('[').trim_end_matches(']'), 0),
    }
}

/// `ip` as a hex label.
pub fn hex_label(ip: IpAddr) -> String {
    let octets = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    octets.iter().map(|b| format!("{b:02x}")).collect()
}

/// The address a hex label spells.
pub fn parse_hex_label(label: &str) -> Option<IpAddr> {
    let digits = |n: usize| -> Option<Vec<u8>> {
        (label.len() == n * 2)
            .then(|| (0..n).map(|i| u8::from_str_radix(label.get(i * 2..i * 2 + 2)?, 16).ok()).collect())
            .flatten()
    };
    if let Some(v4) = digits(4) {
        return Some(IpAddr::from(<[u8; 4]>::try_from(v4).ok()?));
    }
    Some(IpAddr::from(<[u8; 16]>::try_from(digits(16)?).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_join_and_split_with_ipv6_in_brackets() {
        assert_eq!(join_host_port("2001:db8::7", 443), "[2001:db8::7]:443");
        assert_eq!(join_host_port("10.0.0.1", 80), "10.0.0.1:80");
        assert_eq!(split_host_port("[2001:db8::7]:443"), ("2001:db8::7", 443));
        assert_eq!(split_host_port("10.0.0.1:80"), ("10.0.0.1", 80));
        assert_eq!(split_host_port("example.com"), ("example.com", 0));
        assert_eq!(split_host_port("2001:db8::7"), ("2001:db8::7", 0));
        let joined = join_host_port("2001:db8::7", 443);
        assert!(joined.parse::<std::net::SocketAddr>().is_ok());
    }

    #[test]
    fn labels_round_trip() {
        for ip in ["198.18.2.10", "2001:db8::7"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(parse_hex_label(&hex_label(ip)), Some(ip));
        }
        assert_eq!(hex_label("10.0.0.1".parse().unwrap()), "0a000001");
        assert_eq!(parse_hex_label("0a0000"), None);
        assert_eq!(parse_hex_label("zz000001"), None);
    }
}
