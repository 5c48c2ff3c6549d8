//! The iptables rules of transparent proxying (`weft k8s redirect-traffic`,
//! run by the injected `weft-init` container, as root, before anything
//! else in the pod): the pod's outbound TCP goes to the proxy's outbound
//! listener, its inbound TCP to the proxy's inbound listener.
//!
//! Left alone: the proxy's own traffic (by its uid: it must reach the real
//! destinations), loopback (the agent's API, explicit upstreams), and the
//! ports and networks excluded by flag (the kubelet's probes of the
//! application's ports, say). The rules live in two chains of the `nat`
//! table, `WEFT_OUTPUT` and `WEFT_INBOUND`, flushed and refilled on every
//! run, so running twice leaves the same rules.

use std::fmt;

use crate::sidecar::{INBOUND_PORT, OUTBOUND_PORT, PROXY_UID};

pub const OUTPUT_CHAIN: &str = "WEFT_OUTPUT";
pub const INBOUND_CHAIN: &str = "WEFT_INBOUND";

/// What to redirect where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// The proxy's uid: its connections are not redirected.
    pub proxy_uid: u32,
    pub inbound_port: u16,
    pub outbound_port: u16,
    /// Inbound ports that reach the application directly.
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound ports left alone.
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destinations (CIDRs) left alone.
    pub exclude_outbound_cidrs: Vec<String>,
}

impl Default for Redirect {
    fn default() -> Self {
        Redirect {
            proxy_uid: PROXY_UID,
            inbound_port: INBOUND_PORT,
            outbound_port: OUTBOUND_PORT,
            exclude_inbound_ports: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            exclude_outbound_cidrs: Vec::new(),
        }
    }
}

/// One `iptables` invocation, as its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule(pub Vec<String>);

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "iptables {}", self.0.join(" "))
    }
}

fn rule(words: &[&str]) -> Rule {
    Rule(words.iter().map(|w| (*w).to_owned()).collect())
}

impl Redirect {
    /// The chains' rules, in order (after the chains exist and are empty).
    pub fn chain_rules(&self) -> Vec<Rule> {
        let uid = self.proxy_uid.to_string();
        let mut rules = vec![
            rule(&["-t", "nat", "-A", OUTPUT_CHAIN, "-m", "owner", "--uid-owner", &uid, "-j", "RETURN"]),
            rule(&["-t", "nat", "-A", OUTPUT_CHAIN, "-d", "127.0.0.0/8", "-j", "RETURN"]),
        ];
        let skip_port = |chain: &str, port: &u16| {
            rule(&["-t", "nat", "-A", chain, "-p", "tcp", "--dport", &port.to_string(), "-j", "RETURN"])
        };
        rules.extend(self.exclude_outbound_ports.iter().map(|port| skip_port(OUTPUT_CHAIN, port)));
        for cidr in &self.exclude_outbound_cidrs {
            rules.push(rule(&["-t", "nat", "-A", OUTPUT_CHAIN, "-d", cidr, "-j", "RETURN"]));
        }
        let outbound = self.outbound_port.to_string();
        rules.push(rule(&["-t", "nat", "-A", OUTPUT_CHAIN, "-p", "tcp", "-j", "REDIRECT", "--to-ports", &outbound]));
        let inbound = self.inbound_port.to_string();
        let inbound_skipped = std::iter::once(&self.inbound_port).chain(&self.exclude_inbound_ports);
        rules.extend(inbound_skipped.map(|port| skip_port(INBOUND_CHAIN, port)));
        rules.push(rule(&["-t", "nat", "-A", INBOUND_CHAIN, "-p", "tcp", "-j", "REDIRECT", "--to-ports", &inbound]));
        rules
    }
}

/// The jumps from the built-in chains into ours: (built-in, ours).
pub const JUMPS: [(&str, &str); 2] = [("OUTPUT", OUTPUT_CHAIN), ("PREROUTING", INBOUND_CHAIN)];

/// A jump's rule with `action`: `-C` to check that it is there, `-A` to add it.
pub fn jump(action: &str, (builtin, ours): (&str, &str)) -> Rule {
    rule(&["-t", "nat", action, builtin, "-p", "tcp", "-j", ours])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_goes_to_the_proxy_except_its_own_loopback_and_exclusions_and_inbound_to_its_listener() {
        let redirect = Redirect {
            exclude_inbound_ports: vec![8080],
            exclude_outbound_ports: vec![53],
            exclude_outbound_cidrs: vec!["10.96.0.1/32".into()],
            ..Redirect::default()
        };
        let rules: Vec<String> = redirect.chain_rules().iter().map(ToString::to_string).collect();
        assert_eq!(
            rules,
            [
                "iptables -t nat -A WEFT_OUTPUT -m owner --uid-owner 5995 -j RETURN",
                "iptables -t nat -A WEFT_OUTPUT -d 127.0.0.0/8 -j RETURN",
                "iptables -t nat -A WEFT_OUTPUT -p tcp --dport 53 -j RETURN",
                "iptables -t nat -A WEFT_OUTPUT -d 10.96.0.1/32 -j RETURN",
                "iptables -t nat -A WEFT_OUTPUT -p tcp -j REDIRECT --to-ports 15001",
                "iptables -t nat -A WEFT_INBOUND -p tcp --dport 20000 -j RETURN",
                "iptables -t nat -A WEFT_INBOUND -p tcp --dport 8080 -j RETURN",
                "iptables -t nat -A WEFT_INBOUND -p tcp -j REDIRECT --to-ports 20000",
            ]
        );
    }
}
