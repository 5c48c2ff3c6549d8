//! A small linearizability checker for histories of a key-value store.
//!
//! # Why
//!
//! A store that claims linearizability promises that every operation appears to take effect atomically at some
//! instant between its invocation and its completion. Tests of such a store (Jepsen-style) record a *history* of
//! concurrent client operations with their real-time intervals and results; this crate decides whether some
//! sequential order of those operations, consistent with real time, explains every observed result.
//!
//! # What
//!
//! Every key is an independent register (initially absent) supporting `Put`, `Get`, `Cas` and `Delete`.
//! Linearizability is *local* (Herlihy & Wing, 1990; "P-compositionality" in Horn & Kroening, 2015): a history is
//! linearizable iff its restriction to each key is, so every key is checked separately, which keeps the search small.
//!
//! Outcomes of operations come in three kinds:
//! * [`Outcome::Returned`]: the operation happened and returned that result;
//! * [`Outcome::Failed`]: the operation certainly did not take effect; it is dropped from the history;
//! * [`Outcome::Unknown`]: the client gave up (timeout, lost connection). The operation may have taken effect at any
//!   instant after its invocation, or never. Its completion is treated as +infinity and it is *optional*: the search
//!   may linearize it or leave it out. An unknown `Get` has no effect and no observed result, so it is dropped.
//!
//! Two operations are ordered in real time only if one's completion is *strictly* before the other's invocation;
//! equal timestamps count as concurrent (as in porcupine), so coarse clocks never cause false alarms.
//!
//! # How
//!
//! The per-key search is the algorithm of Wing & Gong (1993) as improved by Lowe ("Testing for linearizability",
//! 2017) with memoization, i.e. the algorithm used by Knossos and by porcupine
//! (<https://github.com/anishathalye/porcupine>):
//!
//! 1. Turn the operations into a list of call and return events sorted by time (calls first on ties).
//! 2. Walk the list from its head. At a call, try to linearize that operation now: if the sequential model accepts
//!    its result, and the pair (set of linearized operations, model state) was never seen before, remember it, push
//!    the choice on a stack, unlink the call and its return from the list ("lift") and restart from the head.
//! 3. Reaching the return of an operation that is not linearized yet means the choices so far cannot be extended:
//!    pop the last choice, relink its events ("unlift"), restore the state and continue after that call.
//! 4. The key is linearizable as soon as every operation with a definite outcome is linearized; it is not once the
//!    stack is empty and backtracking is needed again.
//!
//! Unknown operations have a call event but no return event: nothing ever forces them to be linearized, and they can
//! be linearized at any point after their invocation. The search is bounded by a budget of explored states per key;
//! exceeding it gives [`Verdict::Inconclusive`] rather than a guess.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// The values stored under keys.
pub type Value = u64;

/// An operation on a single key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Store a value; returns [`Ret::Ok`].
    Put(Value),
    /// Read the current value; returns [`Ret::Value`] (`None` when the key is absent).
    Get,
    /// Store `new` iff the current value equals `expected` (`None`: the key is absent); returns [`Ret::Cas`].
    Cas { expected: Option<Value>, new: Value },
    /// Remove the key; returns [`Ret::Ok`].
    Delete,
}

/// The result an operation returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ret {
    /// Result of [`Op::Put`] and [`Op::Delete`].
    Ok,
    /// Result of [`Op::Get`].
    Value(Option<Value>),
    /// Result of [`Op::Cas`]: whether the swap happened.
    Cas(bool),
}

/// What the client learned about an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The operation took effect and returned this result.
    Returned(Ret),
    /// The operation certainly did not take effect.
    Failed,
    /// The operation may or may not have taken effect, at any time after its invocation.
    Unknown,
}

/// One recorded operation. Times are nanoseconds from a common monotonic origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub client: u32,
    pub key: String,
    pub invoked: u64,
    /// Completion time; ignored unless the outcome is [`Outcome::Returned`].
    pub completed: u64,
    pub op: Op,
    pub outcome: Outcome,
}

/// The result of [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's history is linearizable.
    Linearizable,
    /// The history of `key` has no linearization; `detail` lists the operations involved.
    NotLinearizable { key: String, detail: String },
    /// The search for `key` exceeded its budget (and no key was found non-linearizable).
    Inconclusive { key: String },
    /// An event is inconsistent (result of the wrong kind, completion before invocation); nothing was checked.
    Malformed { key: String, detail: String },
}

/// Checks whether `history` is linearizable, exploring at most `budget_per_key` search states for each key.
///
/// Keys are checked in lexicographic order. A non-linearizable key is reported as soon as it is found, even if an
/// earlier key was inconclusive; otherwise the first inconclusive key is reported.
///
/// ```
/// use weft_lincheck::{check, Event, Op, Outcome, Ret, Verdict};
///
/// let event = |client, invoked, completed, op, ret| {
///     Event { client, key: "k".to_owned(), invoked, completed, op, outcome: Outcome::Returned(ret) }
/// };
/// // A put that completed before a get started, yet the get saw nothing: a stale read.
/// let history = [event(1, 0, 10, Op::Put(1), Ret::Ok), event(2, 20, 30, Op::Get, Ret::Value(None))];
/// assert!(matches!(check(&history, 10_000), Verdict::NotLinearizable { .. }));
/// ```
#[must_use]
pub fn check(history: &[Event], budget_per_key: usize) -> Verdict {
    let keys = match split_by_key(history) {
        Ok(keys) => keys,
        Err(malformed) => return malformed,
    };
    let mut inconclusive = None;
    for (key, ops) in keys {
        match check_key(&ops, budget_per_key) {
            KeyVerdict::Linearizable => {}
            KeyVerdict::NotLinearizable(detail) => return Verdict::NotLinearizable { key: key.to_owned(), detail },
            KeyVerdict::Inconclusive => {
                inconclusive.get_or_insert(key);
            }
        }
    }
    inconclusive.map_or(Verdict::Linearizable, |key| Verdict::Inconclusive { key: key.to_owned() })
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Put(value) => write!(f, "put({value})"),
            Op::Get => write!(f, "get"),
            Op::Cas { expected, new } => write!(f, "cas({} -> {new})", OptionalValue(*expected)),
            Op::Delete => write!(f, "delete"),
        }
    }
}

impl fmt::Display for Ret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ret::Ok => write!(f, "ok"),
            Ret::Value(value) => write!(f, "{}", OptionalValue(*value)),
            Ret::Cas(swapped) => write!(f, "{swapped}"),
        }
    }
}

/// Displays a register value, `absent` for `None`.
struct OptionalValue(Option<Value>);

impl fmt::Display for OptionalValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => write!(f, "{value}"),
            None => write!(f, "absent"),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Sequential specification of one key.
// ---------------------------------------------------------------------------------------------------------------

/// The state of one key: its value, or `None` when absent.
type State = Option<Value>;

/// Applies `op` to `state` sequentially, giving the next state and the result the op must return.
fn apply(state: State, op: Op) -> (State, Ret) {
    match op {
        Op::Put(value) => (Some(value), Ret::Ok),
        Op::Get => (state, Ret::Value(state)),
        Op::Cas { expected, new } if state == expected => (Some(new), Ret::Cas(true)),
        Op::Cas { .. } => (state, Ret::Cas(false)),
        Op::Delete => (None, Ret::Ok),
    }
}

/// The next state if `op` can take effect in `state` and return `ret` (`None`: unknown, anything goes).
fn step(state: State, op: Op, ret: Option<Ret>) -> Option<State> {
    let (next, expected_ret) = apply(state, op);
    match ret {
        Some(ret) if ret != expected_ret => None,
        _ => Some(next),
    }
}

/// Whether `ret` is the kind of result that `op` returns.
fn ret_fits_op(op: Op, ret: Ret) -> bool {
    matches!((op, ret), (Op::Put(_) | Op::Delete, Ret::Ok) | (Op::Get, Ret::Value(_)) | (Op::Cas { .. }, Ret::Cas(_)))
}

// ---------------------------------------------------------------------------------------------------------------
// Preparing the per-key histories.
// ---------------------------------------------------------------------------------------------------------------

/// An operation of a single key's history, as the search sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeyOp {
    client: u32,
    invoked: u64,
    /// `None` for an operation with an unknown outcome (completion at +infinity).
    completed: Option<u64>,
    op: Op,
    /// `None` for an operation with an unknown outcome.
    ret: Option<Ret>,
}

impl KeyOp {
    /// Whether the operation certainly took effect, so that a linearization must include it.
    fn is_definite(&self) -> bool {
        self.ret.is_some()
    }
}

impl fmt::Display for KeyOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {}: {}", self.client, self.op)?;
        match (self.ret, self.completed) {
            (Some(ret), Some(completed)) => write!(f, " -> {ret} [{}, {completed}]", self.invoked),
            _ => write!(f, " -> ? [{}, ...)", self.invoked),
        }
    }
}

/// Groups the relevant operations by key (in key order), each group sorted by invocation time.
fn split_by_key(history: &[Event]) -> Result<BTreeMap<&str, Vec<KeyOp>>, Verdict> {
    let mut keys: BTreeMap<&str, Vec<KeyOp>> = BTreeMap::new();
    for event in history {
        if let Some(op) = to_key_op(event)? {
            keys.entry(event.key.as_str()).or_default().push(op);
        }
    }
    for ops in keys.values_mut() {
        ops.sort_by_key(|op| (op.invoked, op.completed.is_none(), op.completed, op.client));
    }
    Ok(keys)
}

/// Converts an event for the search; `None` if it cannot matter (failed ops, gets with unknown outcome).
fn to_key_op(event: &Event) -> Result<Option<KeyOp>, Verdict> {
    let malformed = |detail: String| Verdict::Malformed { key: event.key.clone(), detail };
    let (completed, ret) = match event.outcome {
        Outcome::Failed => return Ok(None),
        Outcome::Unknown if event.op == Op::Get => return Ok(None),
        Outcome::Unknown => (None, None),
        Outcome::Returned(ret) if !ret_fits_op(event.op, ret) => {
            return Err(malformed(format!("client {}: {} cannot return {ret}", event.client, event.op)));
        }
        Outcome::Returned(_) if event.completed < event.invoked => {
            let times = format!("completed at {} before its invocation at {}", event.completed, event.invoked);
            return Err(malformed(format!("client {}: {} {times}", event.client, event.op)));
        }
        Outcome::Returned(ret) => (Some(event.completed), Some(ret)),
    };
    Ok(Some(KeyOp { client: event.client, invoked: event.invoked, completed, op: event.op, ret }))
}

// ---------------------------------------------------------------------------------------------------------------
// The event list: a doubly linked list of call/return events that supports lifting and unlifting in LIFO order.
// ---------------------------------------------------------------------------------------------------------------

/// Whether a node of the [`EventList`] is the call or the return of its operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    Call,
    Return,
}

/// A doubly linked list of events with a sentinel head at index 0, stored in vectors.
///
/// Unlinked nodes keep their own links, so relinking them in the reverse order of unlinking restores the list
/// ("dancing links").
#[derive(Debug)]
struct EventList {
    /// The operation (index into the key's ops) of each node; unused for the head.
    op: Vec<usize>,
    kind: Vec<EventKind>,
    prev: Vec<usize>,
    next: Vec<Option<usize>>,
    /// The return node of each operation (`None` for unknown outcomes, which never return).
    return_node: Vec<Option<usize>>,
}

const HEAD: usize = 0;

impl EventList {
    /// Builds the list of events of `ops` in time order: calls before returns at equal times, so that operations
    /// which touch are concurrent.
    fn new(ops: &[KeyOp]) -> Self {
        let mut events: Vec<(u64, EventKind, usize)> = Vec::with_capacity(2 * ops.len());
        for (index, op) in ops.iter().enumerate() {
            events.push((op.invoked, EventKind::Call, index));
            if let Some(completed) = op.completed {
                events.push((completed, EventKind::Return, index));
            }
        }
        events.sort_by_key(|&(time, kind, index)| (time, kind == EventKind::Return, index));

        let nodes = events.len() + 1;
        let mut list = EventList {
            op: vec![usize::MAX; nodes],
            kind: vec![EventKind::Call; nodes],
            prev: (0..nodes).map(|node| node.saturating_sub(1)).collect(),
            next: (1..=nodes).map(|node| Some(node).filter(|&node| node < nodes)).collect(),
            return_node: vec![None; ops.len()],
        };
        for (position, &(_, kind, index)) in events.iter().enumerate() {
            let node = position + 1;
            list.op[node] = index;
            list.kind[node] = kind;
            if kind == EventKind::Return {
                list.return_node[index] = Some(node);
            }
        }
        list
    }

    fn first(&self) -> Option<usize> {
        self.next[HEAD]
    }

    fn next(&self, node: usize) -> Option<usize> {
        self.next[node]
    }

    /// Removes the call `node` and the return event of its operation from the list.
    fn lift(&mut self, node: usize) {
        self.unlink(node);
        if let Some(return_node) = self.return_node[self.op[node]] {
            self.unlink(return_node);
        }
    }

    /// Undoes the most recent [`EventList::lift`], which must have been of `node`.
    fn unlift(&mut self, node: usize) {
        if let Some(return_node) = self.return_node[self.op[node]] {
            self.relink(return_node);
        }
        self.relink(node);
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if let Some(next) = next {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = Some(node);
        if let Some(next) = next {
            self.prev[next] = node;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The search.
// ---------------------------------------------------------------------------------------------------------------

/// A set of operations, as a bitset over their indices.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct OpSet(Vec<u64>);

impl OpSet {
    fn with_capacity(ops: usize) -> Self {
        OpSet(vec![0; ops.div_ceil(64)])
    }

    fn insert(&mut self, op: usize) {
        self.0[op / 64] |= 1 << (op % 64);
    }

    fn remove(&mut self, op: usize) {
        self.0[op / 64] &= !(1 << (op % 64));
    }
}

/// The verdict for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyVerdict {
    Linearizable,
    NotLinearizable(String),
    Inconclusive,
}

/// Runs the WGL search on the operations of one key, sorted by invocation time.
fn check_key(ops: &[KeyOp], budget: usize) -> KeyVerdict {
    Search::new(ops).run(budget)
}

/// A choice on the search stack: the call node linearized and the model state before it.
#[derive(Debug, Clone, Copy)]
struct Choice {
    node: usize,
    op: usize,
    state_before: State,
}

/// The state of the WGL search over one key's history.
struct Search<'a> {
    ops: &'a [KeyOp],
    list: EventList,
    state: State,
    linearized: OpSet,
    stack: Vec<Choice>,
    /// Every (linearized set, state) pair reached so far; reaching one again cannot lead anywhere new.
    seen: HashSet<(OpSet, State)>,
    /// Operations with a definite outcome that are not linearized yet.
    definite_left: usize,
    failure: FailureTrace,
}

/// What is remembered of failed branches, to explain a negative verdict.
#[derive(Debug, Default)]
struct FailureTrace {
    /// The latest completion time at which a branch got stuck (`u64::MAX`: the list ran out).
    stuck_until: u64,
    /// The longest sequence of operations linearized by any branch.
    longest: Vec<usize>,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [KeyOp]) -> Self {
        Search {
            ops,
            list: EventList::new(ops),
            state: None,
            linearized: OpSet::with_capacity(ops.len()),
            stack: Vec::new(),
            seen: HashSet::new(),
            definite_left: ops.iter().filter(|op| op.is_definite()).count(),
            failure: FailureTrace::default(),
        }
    }

    fn run(mut self, budget: usize) -> KeyVerdict {
        let mut cursor = self.list.first();
        while self.definite_left > 0 {
            if self.seen.len() > budget {
                return KeyVerdict::Inconclusive;
            }
            let advanced = match cursor {
                Some(node) if self.list.kind[node] == EventKind::Call => Some(self.try_linearize(node)),
                stuck_at => {
                    self.note_stuck(stuck_at);
                    self.backtrack()
                }
            };
            match advanced {
                Some(next) => cursor = next,
                None => return KeyVerdict::NotLinearizable(self.explain()),
            }
        }
        KeyVerdict::Linearizable
    }

    /// Tries to linearize the operation called at `node` next; returns where the walk continues.
    fn try_linearize(&mut self, node: usize) -> Option<usize> {
        let op = self.list.op[node];
        let Some(next_state) = step(self.state, self.ops[op].op, self.ops[op].ret) else {
            return self.list.next(node);
        };
        self.linearized.insert(op);
        if !self.seen.insert((self.linearized.clone(), next_state)) {
            self.linearized.remove(op);
            return self.list.next(node);
        }
        self.stack.push(Choice { node, op, state_before: self.state });
        self.state = next_state;
        self.list.lift(node);
        self.definite_left -= usize::from(self.ops[op].is_definite());
        self.note_progress();
        self.list.first()
    }

    /// Undoes the latest choice; returns where the walk continues, or `None` if there is no choice left to undo.
    fn backtrack(&mut self) -> Option<Option<usize>> {
        let choice = self.stack.pop()?;
        self.list.unlift(choice.node);
        self.linearized.remove(choice.op);
        self.state = choice.state_before;
        self.definite_left += usize::from(self.ops[choice.op].is_definite());
        Some(self.list.next(choice.node))
    }

    fn note_progress(&mut self) {
        if self.stack.len() > self.failure.longest.len() {
            self.failure.longest = self.stack.iter().map(|choice| choice.op).collect();
        }
    }

    /// Records that a branch is stuck at the return event `node` (`None`: at the end of the list).
    fn note_stuck(&mut self, node: Option<usize>) {
        let time = node.and_then(|node| self.ops[self.list.op[node]].completed).unwrap_or(u64::MAX);
        self.failure.stuck_until = self.failure.stuck_until.max(time);
    }

    /// Describes why the key is not linearizable.
    ///
    /// Every branch of the search got stuck at a return event no later than `stuck_until`, so no branch ever looked
    /// at an operation invoked after it: the operations invoked by then already form a non-linearizable history.
    fn explain(&self) -> String {
        let until = self.failure.stuck_until;
        let prefix: Vec<&KeyOp> = self.ops.iter().filter(|op| op.invoked <= until).collect();
        let mut detail = match until {
            u64::MAX => format!("the {} operations on this key are not linearizable:", prefix.len()),
            _ => format!("the {} operations invoked at or before {until} are already not linearizable:", prefix.len()),
        };
        push_lines(&mut detail, prefix.iter().map(|op| op.to_string()));
        let longest = &self.failure.longest;
        detail.push_str(&format!("\nlongest partial linearization ({} operations):", longest.len()));
        push_lines(&mut detail, longest.iter().map(|&op| self.ops[op].to_string()));
        detail
    }
}

/// At most this many lines of operations are listed in an explanation.
const MAX_LISTED: usize = 24;

/// Appends the last [`MAX_LISTED`] of `lines`, each on its own indented line, noting how many were omitted.
fn push_lines(detail: &mut String, lines: impl ExactSizeIterator<Item = String>) {
    let omitted = lines.len().saturating_sub(MAX_LISTED);
    if omitted > 0 {
        detail.push_str(&format!("\n  ... {omitted} earlier operations omitted"));
    }
    for line in lines.skip(omitted) {
        detail.push_str("\n  ");
        detail.push_str(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Instant;

    const BUDGET: usize = 1_000_000;

    fn event(client: u32, interval: (u64, u64), op: Op, outcome: Outcome) -> Event {
        Event { client, key: "k".to_owned(), invoked: interval.0, completed: interval.1, op, outcome }
    }

    fn put(client: u32, interval: (u64, u64), value: Value) -> Event {
        event(client, interval, Op::Put(value), Outcome::Returned(Ret::Ok))
    }

    fn get(client: u32, interval: (u64, u64), value: Option<Value>) -> Event {
        event(client, interval, Op::Get, Outcome::Returned(Ret::Value(value)))
    }

    fn cas(client: u32, interval: (u64, u64), expected: Option<Value>, new: Value, swapped: bool) -> Event {
        event(client, interval, Op::Cas { expected, new }, Outcome::Returned(Ret::Cas(swapped)))
    }

    fn delete(client: u32, interval: (u64, u64)) -> Event {
        event(client, interval, Op::Delete, Outcome::Returned(Ret::Ok))
    }

    fn with_outcome(mut event: Event, outcome: Outcome) -> Event {
        event.outcome = outcome;
        event
    }

    fn on_key(mut event: Event, key: &str) -> Event {
        event.key = key.to_owned();
        event
    }

    fn assert_linearizable(history: &[Event]) {
        assert_eq!(check(history, BUDGET), Verdict::Linearizable);
    }

    /// Asserts that `history` is rejected and returns the explanation.
    fn assert_not_linearizable(history: &[Event]) -> String {
        match check(history, BUDGET) {
            Verdict::NotLinearizable { detail, .. } => detail,
            other => panic!("expected NotLinearizable, got {other:?}"),
        }
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_linearizable(&[]);
    }

    #[test]
    fn sequential_history_is_linearizable() {
        assert_linearizable(&[
            get(1, (0, 1), None),
            put(1, (2, 3), 1),
            get(2, (4, 5), Some(1)),
            cas(2, (6, 7), Some(1), 2, true),
            cas(1, (8, 9), Some(1), 3, false),
            delete(1, (10, 11)),
            get(2, (12, 13), None),
        ]);
    }

    #[test]
    fn stale_read_is_rejected() {
        assert_not_linearizable(&[put(1, (0, 10), 1), get(2, (11, 20), None)]);
    }

    #[test]
    fn read_of_value_never_written_is_rejected() {
        assert_not_linearizable(&[put(1, (0, 10), 1), get(2, (5, 20), Some(2))]);
    }

    #[test]
    fn reads_of_concurrent_puts_in_both_orders_are_rejected() {
        let puts = [put(1, (0, 10), 1), put(2, (0, 10), 2)];
        let mut history = puts.to_vec();
        history.extend([get(3, (20, 30), Some(2)), get(3, (40, 50), Some(1))]);
        assert_not_linearizable(&history);

        let mut history = puts.to_vec();
        history.extend([get(3, (20, 30), Some(2)), get(4, (40, 50), Some(2))]);
        assert_linearizable(&history);
    }

    #[test]
    fn two_successful_cas_from_absent_are_rejected() {
        assert_not_linearizable(&[cas(1, (0, 10), None, 1, true), cas(2, (0, 10), None, 2, true)]);
    }

    #[test]
    fn one_successful_and_one_failed_cas_are_accepted() {
        assert_linearizable(&[
            cas(1, (0, 10), None, 1, false),
            cas(2, (0, 10), None, 2, true),
            get(3, (11, 12), Some(2)),
        ]);
    }

    #[test]
    fn lost_write_is_rejected() {
        assert_not_linearizable(&[put(1, (0, 10), 1), get(2, (20, 30), Some(1)), get(3, (40, 50), None)]);
    }

    #[test]
    fn unknown_put_that_becomes_visible_is_accepted() {
        let unknown_put = with_outcome(put(1, (0, 10), 5), Outcome::Unknown);
        assert_linearizable(&[unknown_put, get(2, (100, 110), Some(5))]);
    }

    #[test]
    fn unknown_put_that_never_becomes_visible_is_accepted() {
        let unknown_put = with_outcome(put(1, (0, 10), 5), Outcome::Unknown);
        assert_linearizable(&[unknown_put, get(2, (100, 110), None), get(2, (200, 210), None)]);
    }

    #[test]
    fn unknown_put_may_take_effect_long_after_its_timeout() {
        let unknown_put = with_outcome(put(1, (0, 10), 5), Outcome::Unknown);
        assert_linearizable(&[unknown_put, get(2, (100, 110), None), get(2, (200, 210), Some(5))]);
    }

    #[test]
    fn unknown_put_visible_then_invisible_is_rejected() {
        let unknown_put = with_outcome(put(1, (0, 10), 5), Outcome::Unknown);
        assert_not_linearizable(&[unknown_put, get(2, (100, 110), Some(5)), get(2, (200, 210), None)]);
    }

    #[test]
    fn unknown_put_cannot_take_effect_before_its_invocation() {
        let unknown_put = with_outcome(put(1, (50, 60), 5), Outcome::Unknown);
        assert_not_linearizable(&[get(2, (0, 10), Some(5)), unknown_put]);
    }

    #[test]
    fn unknown_cas_may_or_may_not_take_effect() {
        let unknown_cas = with_outcome(cas(1, (10, 20), Some(1), 2, true), Outcome::Unknown);
        let took_effect = [put(1, (0, 5), 1), unknown_cas.clone(), get(2, (30, 40), Some(2))];
        let did_not = [put(1, (0, 5), 1), unknown_cas, get(2, (30, 40), Some(1))];
        assert_linearizable(&took_effect);
        assert_linearizable(&did_not);
    }

    #[test]
    fn unknown_get_is_ignored() {
        let unknown_get = with_outcome(get(1, (0, 10), None), Outcome::Unknown);
        assert_linearizable(&[put(2, (0, 5), 1), unknown_get, get(2, (20, 30), Some(1))]);
    }

    #[test]
    fn failed_operations_never_take_effect() {
        let failed_put = with_outcome(put(1, (0, 10), 7), Outcome::Failed);
        assert_linearizable(&[failed_put.clone(), get(2, (20, 30), None)]);
        assert_not_linearizable(&[failed_put, get(2, (20, 30), Some(7))]);
    }

    #[test]
    fn overlapping_operations_may_be_reordered() {
        assert_linearizable(&[
            put(1, (0, 100), 1),
            put(2, (5, 50), 2),
            get(3, (10, 20), None),
            get(3, (30, 40), Some(1)),
            get(4, (60, 70), Some(1)),
        ]);
    }

    #[test]
    fn read_concurrent_with_put_may_see_old_or_new_value() {
        let put_two = put(1, (10, 20), 2);
        assert_linearizable(&[put(1, (0, 5), 1), put_two.clone(), get(2, (12, 18), Some(1))]);
        assert_linearizable(&[put(1, (0, 5), 1), put_two, get(2, (12, 18), Some(2))]);
    }

    #[test]
    fn operations_touching_at_one_instant_are_concurrent() {
        assert_linearizable(&[put(1, (0, 10), 1), get(2, (10, 20), None)]);
    }

    #[test]
    fn delete_then_cas_from_absent_is_accepted() {
        assert_linearizable(&[
            put(1, (0, 10), 1),
            delete(1, (20, 30)),
            cas(2, (40, 50), None, 3, true),
            get(2, (60, 70), Some(3)),
        ]);
    }

    #[test]
    fn cas_expecting_a_deleted_value_is_rejected() {
        assert_not_linearizable(&[put(1, (0, 10), 1), delete(1, (20, 30)), cas(2, (40, 50), Some(1), 3, true)]);
    }

    #[test]
    fn keys_are_independent_registers() {
        let good = [on_key(put(1, (0, 10), 1), "a"), on_key(get(2, (20, 30), Some(1)), "a")];
        let cross_key_read = on_key(get(2, (20, 30), Some(1)), "b");
        assert_linearizable(&good);
        let mut history = good.to_vec();
        history.push(cross_key_read);
        match check(&history, BUDGET) {
            Verdict::NotLinearizable { key, .. } => assert_eq!(key, "b"),
            other => panic!("expected NotLinearizable on key b, got {other:?}"),
        }
    }

    #[test]
    fn explanation_lists_the_failing_prefix_only() {
        let detail = assert_not_linearizable(&[
            put(1, (0, 10), 1),
            get(2, (20, 30), None),
            put(3, (40, 50), 2),
            get(4, (60, 70), Some(2)),
        ]);
        assert!(detail.contains("the 2 operations invoked at or before 30"), "{detail}");
        assert!(detail.contains("client 2: get -> absent [20, 30]"), "{detail}");
        assert!(!detail.contains("client 3"), "{detail}");
    }

    #[test]
    fn exhausted_budget_is_inconclusive() {
        let history = [put(1, (0, 10), 1), get(2, (20, 30), Some(1))];
        assert_eq!(check(&history, 0), Verdict::Inconclusive { key: "k".to_owned() });
        assert_eq!(check(&history, 2), Verdict::Linearizable);
    }

    #[test]
    fn malformed_events_are_reported() {
        let wrong_ret = event(1, (0, 10), Op::Put(1), Outcome::Returned(Ret::Cas(true)));
        assert!(matches!(check(&[wrong_ret], BUDGET), Verdict::Malformed { .. }));
        let backwards = put(1, (10, 5), 1);
        assert!(matches!(check(&[backwards], BUDGET), Verdict::Malformed { .. }));
    }

    /// A seeded generator, so a history that fails can be made again.
    struct Seeded(rand::rngs::StdRng);

    impl Seeded {
        fn new(seed: u64) -> Seeded {
            Seeded(rand::SeedableRng::seed_from_u64(seed))
        }

        fn below(&mut self, bound: u64) -> u64 {
            rand::Rng::gen_range(&mut self.0, 0..bound)
        }

        fn chance(&mut self, per_mille: u64) -> bool {
            self.below(1000) < per_mille
        }
    }

    const KEYS: [&str; 3] = ["x", "y", "z"];

    /// Parameters of a simulated history.
    struct Simulation {
        seed: u64,
        clients: u32,
        ops_per_client: usize,
        /// How many of [`KEYS`] are used.
        keys: usize,
        /// Probability (per mille) that an operation goes wrong: it fails, or times out before or after its effect.
        faulty_per_mille: u64,
    }

    /// An operation taking effect on the simulated store at instant `at`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    struct Effect {
        at: u64,
        index: usize,
        /// Whether the client learns the result (otherwise its outcome stays unknown).
        reported: bool,
    }

    impl Simulation {
        /// Simulates clients running random operations against a real sequential store. Each operation takes effect
        /// at a random instant of its interval; a timed-out one takes effect at a random instant after invocation,
        /// or never, and a failed one never does.
        fn run(&self) -> Vec<Event> {
            let mut rng = Seeded::new(self.seed);
            let mut history = Vec::new();
            let mut effects = Vec::new();
            for client in 0..self.clients {
                let mut now = rng.below(10);
                for _ in 0..self.ops_per_client {
                    let invoked = now + rng.below(20);
                    let completed = invoked + 1 + rng.below(100);
                    let key = KEYS[rng.below(self.keys as u64) as usize].to_owned();
                    let (index, op) = (history.len(), random_op(&mut rng));
                    let mut outcome = Outcome::Unknown;
                    match (rng.chance(self.faulty_per_mille), rng.below(3)) {
                        (false, _) => {
                            let at = invoked + rng.below(completed - invoked + 1);
                            effects.push(Effect { at, index, reported: true });
                        }
                        (true, 0) => outcome = Outcome::Failed,
                        (true, 1) => effects.push(Effect { at: invoked + rng.below(1000), index, reported: false }),
                        (true, _) => {}
                    }
                    history.push(Event { client, key, invoked, completed, op, outcome });
                    now = completed + 1;
                }
            }
            apply_effects(&mut history, effects);
            history
        }
    }

    fn random_op(rng: &mut Seeded) -> Op {
        let value = 1 + rng.below(4);
        match rng.below(10) {
            0..=2 => Op::Put(value),
            3..=5 => Op::Get,
            6 | 7 => Op::Cas { expected: Some(1 + rng.below(4)).filter(|_| rng.chance(700)), new: value },
            _ => Op::Delete,
        }
    }

    /// Applies the operations in the order of their effect instants to a sequential store, recording the results
    /// that are reported.
    fn apply_effects(history: &mut [Event], mut effects: Vec<Effect>) {
        effects.sort_unstable();
        let mut store: HashMap<String, Option<Value>> = HashMap::new();
        for effect in effects {
            let event = &mut history[effect.index];
            let ret = reference_apply(store.entry(event.key.clone()).or_default(), event.op);
            if effect.reported {
                event.outcome = Outcome::Returned(ret);
            }
        }
    }

    /// The sequential register, written independently of the checker's model.
    fn reference_apply(register: &mut Option<Value>, op: Op) -> Ret {
        match op {
            Op::Put(value) => {
                *register = Some(value);
                Ret::Ok
            }
            Op::Get => Ret::Value(*register),
            Op::Cas { expected, new } => {
                let swapped = *register == expected;
                if swapped {
                    *register = Some(new);
                }
                Ret::Cas(swapped)
            }
            Op::Delete => {
                *register = None;
                Ret::Ok
            }
        }
    }

    fn simulate(seed: u64, faulty_per_mille: u64) -> Vec<Event> {
        Simulation { seed, clients: 8, ops_per_client: 200, keys: KEYS.len(), faulty_per_mille }.run()
    }

    #[test]
    fn random_history_is_linearizable() {
        let history = simulate(0x9E37_79B9_7F4A_7C15, 0);
        let start = Instant::now();
        let verdict = check(&history, BUDGET);
        let elapsed = start.elapsed();
        eprintln!("random 8x200 history on 3 keys checked in {elapsed:?}");
        assert_eq!(verdict, Verdict::Linearizable);
        assert!(elapsed.as_secs_f64() < 1.0, "too slow: {elapsed:?}");
    }

    #[test]
    fn random_history_with_failed_and_unknown_outcomes_is_linearizable() {
        for seed in 1..=5 {
            let history = simulate(seed, 100);
            assert!(history.iter().any(|event| event.outcome == Outcome::Unknown));
            assert!(history.iter().any(|event| event.outcome == Outcome::Failed));
            assert_eq!(check(&history, BUDGET), Verdict::Linearizable, "seed {seed}");
        }
    }

    #[test]
    fn corrupted_random_history_is_rejected() {
        let mut history = simulate(0x2545_F491_4F6C_DD1D, 0);
        let gets: Vec<usize> = (0..history.len()).filter(|&index| history[index].op == Op::Get).collect();
        let corrupted = gets[gets.len() / 2];
        history[corrupted].outcome = Outcome::Returned(Ret::Value(Some(1_000_000)));
        match check(&history, BUDGET) {
            Verdict::NotLinearizable { key, detail } => {
                assert_eq!(key, history[corrupted].key);
                assert!(detail.contains("-> 1000000"), "{detail}");
            }
            other => panic!("expected NotLinearizable, got {other:?}"),
        }
    }

    /// Decides linearizability of a single-key history by trying every order of every admissible subset of its
    /// operations: a slow oracle that shares no code with the checker.
    fn brute_force(history: &[Event]) -> bool {
        let ops: Vec<&Event> = history.iter().filter(|event| event.outcome != Outcome::Failed).collect();
        extend_order(&ops, &mut vec![false; ops.len()], None)
    }

    /// Whether the order chosen so far (`taken`, ending in `register`) extends to a linearization.
    fn extend_order(ops: &[&Event], taken: &mut [bool], register: Option<Value>) -> bool {
        let definite = |index: usize| matches!(ops[index].outcome, Outcome::Returned(_));
        let open: Vec<usize> = (0..ops.len()).filter(|&index| !taken[index]).collect();
        if !open.iter().any(|&index| definite(index)) {
            return true;
        }
        for &next in &open {
            let must_wait = open.iter().any(|&other| definite(other) && ops[other].completed < ops[next].invoked);
            let mut after = register;
            let ret = reference_apply(&mut after, ops[next].op);
            let result_fits = match ops[next].outcome {
                Outcome::Returned(observed) => observed == ret,
                _ => true,
            };
            if must_wait || !result_fits {
                continue;
            }
            taken[next] = true;
            let found = extend_order(ops, taken, after);
            taken[next] = false;
            if found {
                return true;
            }
        }
        false
    }

    /// Replaces one reported result of `history` by a random result of the same kind.
    fn perturb(history: &mut [Event], rng: &mut Seeded) {
        let index = rng.below(history.len() as u64) as usize;
        let small_value = |rng: &mut Seeded| Some(1 + rng.below(3)).filter(|_| rng.chance(700));
        if let Outcome::Returned(ret) = &mut history[index].outcome {
            *ret = match ret {
                Ret::Ok => Ret::Ok,
                Ret::Value(_) => Ret::Value(small_value(rng)),
                Ret::Cas(_) => Ret::Cas(rng.chance(500)),
            };
        }
    }

    #[test]
    fn agrees_with_brute_force_on_small_histories() {
        let mut rng = Seeded::new(0xD1B5_4A32_D192_ED03);
        let (mut accepted, mut rejected) = (0, 0);
        for seed in 1..=2000 {
            let simulation = Simulation { seed, clients: 3, ops_per_client: 2, keys: 1, faulty_per_mille: 250 };
            let mut history = simulation.run();
            perturb(&mut history, &mut rng);
            let expected = brute_force(&history);
            let verdict = check(&history, BUDGET);
            assert_eq!(verdict == Verdict::Linearizable, expected, "{history:#?}\n{verdict:?}");
            if expected {
                accepted += 1;
            } else {
                rejected += 1;
            }
        }
        assert!(accepted > 200 && rejected > 200, "accepted {accepted}, rejected {rejected}");
    }
}
