//! Sessions (`/v1/session/*`): what Consul users build locks and leader
//! election on. A session belongs to a node and is bound to health checks
//! on it; it ends when it is destroyed, when its TTL runs out without a
//! renewal, or when its node goes away or one of its checks turns
//! critical. A KV key acquired with a session (`?acquire=`) is held until
//! the session releases it or ends; then, per the session's `Behavior`,
//! the key is released or deleted, and for `LockDelay` no session may
//! acquire it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::{CheckId, Indexes, NodeName};

/// The lock delay when none is given (Consul's).
pub const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);
/// The longest lock delay (Consul's `MaxLockDelay`).
pub const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);
/// The shortest and longest TTL (Consul's `session_ttl_min` and its maximum).
pub const MIN_TTL: Duration = Duration::from_secs(10);
pub const MAX_TTL: Duration = Duration::from_secs(86_400);
/// A session with a TTL ends this many TTLs after its last renewal
/// (Consul's `SessionTTLMultiplier`: the grace that absorbs a late renewal).
pub const TTL_MULTIPLIER: u32 = 2;
/// The check a session is bound to when none is named: the node's liveness.
pub const DEFAULT_NODE_CHECK: &str = "serfHealth";

/// What happens to the keys a session holds when it ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Behavior {
    /// They are released (their `Session` cleared), and kept.
    #[default]
    Release,
    /// They are deleted.
    Delete,
}

impl Behavior {
    pub fn as_str(self) -> &'static str {
        match self {
            Behavior::Release => "release",
            Behavior::Delete => "delete",
        }
    }

    /// Consul's names; empty is the default.
    pub fn parse(text: &str) -> Option<Behavior> {
        match text {
            "" | "release" => Some(Behavior::Release),
            "delete" => Some(Behavior::Delete),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// A UUID, made by the agent that took the request.
    pub id: String,
    pub name: String,
    pub node: NodeName,
    /// Node-level checks it is bound to.
    pub node_checks: Vec<CheckId>,
    /// Service checks (on the same node) it is bound to.
    pub service_checks: Vec<CheckId>,
    pub lock_delay_ms: u64,
    pub behavior: Behavior,
    /// Zero: no TTL.
    pub ttl_ms: u64,
    pub indexes: Indexes,
}

impl Session {
    pub fn ttl(&self) -> Option<Duration> {
        (self.ttl_ms > 0).then(|| Duration::from_millis(self.ttl_ms))
    }

    pub fn lock_delay(&self) -> Duration {
        Duration::from_millis(self.lock_delay_ms)
    }

    /// Every check it is bound to.
    pub fn checks(&self) -> impl Iterator<Item = &CheckId> {
        self.node_checks.iter().chain(&self.service_checks)
    }

    /// Consul's rules for a new session's settings: a TTL between
    /// [`MIN_TTL`] and [`MAX_TTL`], a lock delay up to [`MAX_LOCK_DELAY`].
    pub fn validate(&self) -> Result<(), String> {
        crate::catalog::validate_name("Node", self.node.as_str())?;
        if let Some(ttl) = self.ttl() {
            if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
                return Err(format!(
                    "Invalid Session TTL '{}', must be between [{}={}]",
                    crate::duration::format(ttl),
                    crate::duration::format(MIN_TTL),
                    crate::duration::format(MAX_TTL)
                ));
            }
        }
        if self.lock_delay() > MAX_LOCK_DELAY {
            return Err(format!(
                "Invalid LockDelay '{}', must be at most {}",
                crate::duration::format(self.lock_delay()),
                crate::duration::format(MAX_LOCK_DELAY)
            ));
        }
        if self.id.is_empty() {
            return Err("a session needs an ID".into());
        }
        Ok(())
    }
}
