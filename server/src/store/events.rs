//! User events: the last [`EVENTS_KEPT`] fired, in the order Raft applied
//! them, each with its Raft index as Consul's `LTime`.
//!
//! They are not in snapshots. In Consul each agent keeps the events it
//! received in memory only; here a server or agent that starts over from a
//! snapshot likewise holds only the events fired since.

use std::collections::VecDeque;

use weft_api::command::CommandOutcome;
use weft_api::event::UserEvent;
use weft_api::ids::RaftIndex;

use super::{Changed, Table};

/// Events kept (Consul's agents keep 256).
pub const EVENTS_KEPT: usize = 256;

/// An event, and the Raft index that fired it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FiredEvent {
    pub event: UserEvent,
    pub ltime: RaftIndex,
}

#[derive(Clone, Debug, Default)]
pub struct EventLog {
    fired: VecDeque<FiredEvent>,
}

impl EventLog {
    pub(super) fn fire(&mut self, index: RaftIndex, event: &UserEvent, changed: &mut Changed) -> CommandOutcome {
        if self.fired.len() == EVENTS_KEPT {
            self.fired.pop_front();
        }
        self.fired.push_back(FiredEvent { event: event.clone(), ltime: index });
        changed.mark(Table::Events);
        CommandOutcome::Done
    }

    /// The events kept, oldest first.
    pub fn fired(&self) -> impl Iterator<Item = &FiredEvent> {
        self.fired.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_256_are_kept_in_order() {
        let mut log = EventLog::default();
        for n in 1..=300u64 {
            let event = UserEvent { name: format!("e{n}"), ..UserEvent::default() };
            log.fire(RaftIndex(n), &event, &mut Changed::default());
        }
        let kept: Vec<u64> = log.fired().map(|f| f.ltime.get()).collect();
        assert_eq!(kept, (45..=300).collect::<Vec<_>>());
    }
}
