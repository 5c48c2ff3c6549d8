//! User events (Consul's `/v1/event/*`): a name and a small opaque payload,
//! fired once and kept by every agent whose node or services the event's
//! filters select. Consul spreads them by gossip; Weft writes them through
//! Raft, so every agent receives them on its state stream.

use serde::{Deserialize, Serialize};

/// Name, payload and filters together, at most (Consul's default limit on
/// a user event).
pub const MAX_EVENT_BYTES: usize = 512;

/// The event format Consul's clients know.
pub const EVENT_VERSION: u32 = 1;

/// One user event, as fired.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEvent {
    /// A UUID, chosen by the agent the event was fired on.
    pub id: String,
    pub name: String,
    pub payload: Vec<u8>,
    /// Regular expressions: the nodes, services and service tags that
    /// receive the event (empty: any).
    pub node_filter: String,
    pub service_filter: String,
    pub tag_filter: String,
}

impl UserEvent {
    /// Consul's rules for an event, checked before it is fired.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("User event missing name".into());
        }
        if self.name.starts_with('_') {
            return Err(format!("User event name {:?} starts with '_', which is reserved", self.name));
        }
        let size = self.name.len()
            + self.payload.len()
            + self.node_filter.len()
            + self.service_filter.len()
            + self.tag_filter.len();
        if size > MAX_EVENT_BYTES {
            return Err(format!("User event exceeds the limit of {MAX_EVENT_BYTES} bytes ({size})"));
        }
        if !self.tag_filter.is_empty() && self.service_filter.is_empty() {
            return Err("Cannot provide tag filter without service filter".into());
        }
        for (what, filter) in
            [("node", &self.node_filter), ("service", &self.service_filter), ("tag", &self.tag_filter)]
        {
            regex::Regex::new(filter).map_err(|e| format!("Invalid {what} filter: {e}"))?;
        }
        Ok(())
    }

    /// Whether the agent of `node`, holding `services` (name and tags),
    /// receives the event: its node filter matches the node's name, and its
    /// service filter (with its tag filter, if any) one of the services.
    pub fn selects<'a>(&self, node: &str, mut services: impl Iterator<Item = (&'a str, &'a [String])>) -> bool {
        let matches = |filter: &str, text: &str| regex::Regex::new(filter).is_ok_and(|re| re.is_match(text));
        if !self.node_filter.is_empty() && !matches(&self.node_filter, node) {
            return false;
        }
        if self.service_filter.is_empty() {
            return true;
        }
        services.any(|(name, tags)| {
            matches(&self.service_filter, name)
                && (self.tag_filter.is_empty() || tags.iter().any(|tag| matches(&self.tag_filter, tag)))
        })
    }
}

/// Consul's index for a list of events: the newest event's ID, its two
/// 64-bit halves XORed (so a watcher tells lists apart by their newest
/// event; `consul watch -type=event` computes the same); 1 for none.
pub fn event_index(newest_id: Option<&str>) -> u64 {
    let halves = |id: &str| {
        let hex: String = id.chars().filter(|c| *c != '-').collect();
        let high = u64::from_str_radix(hex.get(..16)?, 16).ok()?;
        let low = u64::from_str_radix(hex.get(16..32)?, 16).ok()?;
        Some(high ^ low)
    };
    newest_id.and_then(halves).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str) -> UserEvent {
        UserEvent { id: "b54fe110-7af5-cafc-d1fb-afc8ba432b1c".into(), name: name.into(), ..UserEvent::default() }
    }

    #[test]
    fn names_sizes_and_filters_are_checked() {
        assert!(event("deploy").validate().is_ok());
        assert!(event("").validate().unwrap_err().contains("missing name"));
        assert!(event("_rexec").validate().unwrap_err().contains("reserved"));
        let big = UserEvent { payload: vec![b'x'; MAX_EVENT_BYTES], ..event("deploy") };
        assert!(big.validate().unwrap_err().contains("exceeds"));
        let tag_alone = UserEvent { tag_filter: "v1".into(), ..event("deploy") };
        assert!(tag_alone.validate().unwrap_err().contains("without service filter"));
        let bad = UserEvent { node_filter: "(".into(), ..event("deploy") };
        assert!(bad.validate().unwrap_err().contains("Invalid node filter"));
    }

    #[test]
    fn filters_select_nodes_services_and_tags() {
        let tags = vec!["v1".to_owned()];
        let services = || [("web", tags.as_slice())].into_iter();
        assert!(event("e").selects("vm1", services()));
        let node = UserEvent { node_filter: "^vm[0-9]$".into(), ..event("e") };
        assert!(node.selects("vm1", services()) && !node.selects("db1", services()));
        let service = UserEvent { service_filter: "^web$".into(), tag_filter: "^v1$".into(), ..event("e") };
        assert!(service.selects("vm1", services()));
        assert!(!service.selects("vm1", [("api", tags.as_slice())].into_iter()));
        let other_tag = UserEvent { tag_filter: "^v2$".into(), ..service };
        assert!(!other_tag.selects("vm1", services()));
    }

    #[test]
    fn the_index_is_consuls_xor_of_the_id_halves() {
        // 0xb54fe1107af5cafc ^ 0xd1fbafc8ba432b1c, as Consul's uuidToUint64 gives.
        assert_eq!(event_index(Some("b54fe110-7af5-cafc-d1fb-afc8ba432b1c")), 0xb54fe1107af5cafc ^ 0xd1fbafc8ba432b1c);
        assert_eq!(event_index(None), 1);
    }
}
