//! The state store: every replicated table, held in memory, changed only by
//! applying Raft commands.
//!
//! [`Tables`] is plain data with a pure `apply`: given the same commands at the
//! same indexes it reaches the same state on every server (no clock, no
//! randomness, no I/O). [`StateStore`] wraps it for sharing between the Raft
//! state machine (the only writer) and readers, wakes blocking queries when a
//! table they read changes, and feeds every change to subscribers (client
//! agents keep their copy of the state from that feed).

mod acl;
mod catalog;
mod config_entries;
mod discovery_chain;
mod events;
#[cfg(test)]
mod golden;
mod inbound_policy;
mod ingress_gateway;
mod intentions;
mod join;
mod kv;
mod mesh;
mod restore;
mod service_intentions;
mod sessions;
mod snapshot;
mod upstream_config;

use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use weft_api::command::{Command, CommandOutcome};
use weft_api::ids::RaftIndex;

pub use acl::{AclData, AclTables};
pub use catalog::{NodeServices, ServiceHealth, ServiceInstance};
pub use config_entries::{
    effective_protocol, resolver_load_balancer, resolver_subsets, validate_config_entry, validate_kind,
    validate_kind_and_name, EffectiveProtocol, ProtocolSource, CONFIG_ENTRY_KINDS, INGRESS_GATEWAY, PROXY_DEFAULTS,
    PROXY_DEFAULTS_NAME, SERVICE_DEFAULTS, SERVICE_INTENTIONS, SERVICE_RESOLVER, SERVICE_ROUTER, SERVICE_SPLITTER,
};
pub use discovery_chain::{compile as compile_discovery_chain, DEFAULT_CONNECT_TIMEOUT_MS};
pub use events::{EventLog, FiredEvent, EVENTS_KEPT};
pub use inbound_policy::{access_logs, inbound_policy, ALLOW_PERMISSIVE_FIELD};
pub use ingress_gateway::{gateways_exposing, ingress_listeners, ExposedService, IngressListenerConfig};
pub use intentions::{
    evaluation_order, is_wildcard, precedence, rule_of, validate_intention, validate_name, DEFAULT_ACTION_FIELD,
    MESH_CONFIG_KIND, MESH_CONFIG_NAME, WILDCARD,
};
pub use join::Redemption;
pub use kv::KvTable;
pub use restore::PendingRestore;
pub use sessions::SessionTable;
pub use snapshot::{SnapshotError, StoreData};
pub use upstream_config::{upstream_config, UpstreamConfig};

/// The replicated tables. Each tracks the highest Raft index that changed it,
/// so a blocking query waits on exactly the tables it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Nodes,
    Services,
    Checks,
    Kv,
    Intentions,
    ConfigEntries,
    Ca,
    /// Join tokens and agent credentials.
    Join,
    /// ACL tokens, policies and roles.
    Acl,
    /// User events (not in snapshots: see `events`).
    Events,
    Sessions,
}

impl Table {
    pub const ALL: [Table; 11] = [
        Table::Nodes,
        Table::Services,
        Table::Checks,
        Table::Kv,
        Table::Intentions,
        Table::ConfigEntries,
        Table::Ca,
        Table::Join,
        Table::Acl,
        Table::Events,
        Table::Sessions,
    ];

    fn slot(self) -> usize {
        self as usize
    }
}

/// All replicated state. Mutated only through [`Tables::apply`].
#[derive(Clone, Debug, Default)]
pub struct Tables {
    catalog: catalog::Catalog,
    kv: kv::KvTable,
    mesh: mesh::MeshTables,
    join: join::JoinTables,
    acl: acl::AclTables,
    events: events::EventLog,
    sessions: sessions::SessionTable,
    table_indexes: [RaftIndex; Table::ALL.len()],
    /// The index of the last snapshot restore: no read may report an index
    /// below it, so blocking clients notice that everything may have changed.
    restore_index: RaftIndex,
    /// A snapshot restore arriving in parts (see [`restore`]).
    pending_restore: Option<restore::PendingRestore>,
}

/// What one `apply` changed: which tables, and what the state store keeps
/// beside them by its own clock (not replicated, so not decided in
/// `apply`): the keys whose lock delay started, and the sessions renewed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    tables: Vec<Table>,
    /// A key released by an ended session, and its lock delay in ms.
    lock_delays: Vec<(String, u64)>,
    /// Sessions made or renewed.
    renewed: Vec<String>,
}

impl Changed {
    fn mark(&mut self, table: Table) {
        if !self.tables.contains(&table) {
            self.tables.push(table);
        }
    }

    pub fn tables(&self) -> &[Table] {
        &self.tables
    }
}

/// Checks what `command` must satisfy on its own, before it is proposed:
/// every write enters Raft through `Server::write` or the leader's `Apply`
/// RPC, and both ask this first, so a command that fails it never reaches
/// the log. What it checks (a config entry's body: field types, regexes,
/// weights) `Tables::apply` then trusts and does not check again: its
/// outcome may depend on a library's version (the regex crate's grammar),
/// and the same log must give every server the same state. What depends on
/// the intentions and config entries the leader checks next, against its
/// tables ([`Tables::check_mesh_rules`]), and proposes the command as a
/// [`Command::Checked`]; so no one else may send one, and such a write
/// travels alone, never in a batch.
pub fn check_proposal(command: &Command) -> Result<(), String> {
    match command {
        Command::ConfigEntryUpsert(entry) => config_entries::check_alone(entry),
        Command::ConfigEntryCas { kind, name, body: Some(body), .. } => {
            config_entries::check_alone(&mesh::entry_of(kind, name, body))
        }
        Command::IntentionUpsert(intention) => intentions::check_intention_alone(intention),
        Command::Register(registration) => check_registration(registration),
        Command::Batch(commands) => match commands.iter().find(|c| is_mesh_checked(c)) {
            Some(command) => Err(format!("a {} write travels alone, not in a batch", command.kind())),
            None => commands.iter().try_for_each(check_proposal),
        },
        Command::FireEvent(event) => event.validate(),
        Command::Txn(ops) => weft_api::txn::validate(ops).map_err(|refusal| refusal.to_string()),
        Command::SessionCreate(session) => session.validate(),
        Command::KvAcquire { session, .. } | Command::KvRelease { session, .. } if session.is_empty() => {
            Err("missing session".into())
        }
        Command::Checked { .. } => Err("only the leader checks a write against its tables".into()),
        _ => Ok(()),
    }
}

/// Whether the leader checks `command` against the intentions and config
/// entries and proposes it as a [`Command::Checked`].
pub fn is_mesh_checked(command: &Command) -> bool {
    matches!(
        command,
        Command::ConfigEntryUpsert(_) | Command::ConfigEntryCas { body: Some(_), .. } | Command::IntentionUpsert(_)
    )
}

/// A registration's names and metadata, against Consul's limits.
fn check_registration(registration: &weft_api::catalog::Registration) -> Result<(), String> {
    use weft_api::catalog::{validate_meta, validate_name};
    validate_name("Node", registration.node.name.as_str())?;
    validate_meta("NodeMeta", &registration.node.meta)?;
    if let Some(service) = &registration.service {
        validate_name("Service", service.name.as_str())?;
        validate_meta("ServiceMeta", &service.meta)?;
    }
    Ok(())
}

impl Tables {
    /// Applies one command written at `index`. Deterministic: reads nothing
    /// but `self`, `index` and `command`; commands were checked on their own
    /// before they were proposed ([`check_proposal`]).
    pub fn apply(&mut self, index: RaftIndex, command: &Command) -> (CommandOutcome, Changed) {
        let mut changed = Changed::default();
        let outcome = match command {
            Command::Batch(commands) => CommandOutcome::Batch(
                commands
                    .iter()
                    .map(|command| match command {
                        Command::Batch(_)
                        | Command::Checked { .. }
                        | Command::Restore { .. }
                        | Command::RestoreBegin { .. }
                        | Command::RestoreChunk { .. }
                        | Command::RestoreFinish { .. } => CommandOutcome::Rejected(
                            "a batch may not hold a batch, a restore or a checked write".into(),
                        ),
                        command => self.apply_one(index, command, &mut changed),
                    })
                    .collect(),
            ),
            command => self.apply_one(index, command, &mut changed),
        };
        // A session lives only while its node and checks allow it.
        let catalog_changed =
            changed.tables().iter().any(|t| matches!(t, Table::Nodes | Table::Services | Table::Checks));
        if catalog_changed && !self.sessions.is_empty() {
            self.end_unhealthy_sessions(index, &mut changed);
        }
        for table in changed.tables() {
            self.table_indexes[table.slot()] = index;
        }
        (outcome, changed)
    }

    fn apply_one(&mut self, index: RaftIndex, command: &Command, changed: &mut Changed) -> CommandOutcome {
        match command {
            Command::Batch(_) => unreachable!("batches are unpacked by Tables::apply"),
            Command::KvSet { key, value, flags, cas } => self.kv.set(index, key, value, *flags, *cas, changed),
            Command::KvDelete { key, recurse, cas } => self.kv.delete(key, *recurse, *cas, changed),
            Command::Register(registration) => self.catalog.register(index, registration, changed),
            Command::Deregister(deregistration) => self.catalog.deregister(deregistration, changed),
            Command::IntentionUpsert(intention) => self.mesh.upsert_intention(index, intention, changed),
            Command::IntentionDelete { id } => self.mesh.delete_intention(id, changed),
            Command::ConfigEntryUpsert(entry) => self.mesh.upsert_config_entry(index, entry, changed),
            Command::ConfigEntryDelete { kind, name } => self.mesh.delete_config_entry(kind, name, changed),
            Command::CaSetState(state) => self.mesh.set_ca_state(index, state, changed),
            Command::ConfigEntryCas { kind, name, cas, body } => {
                self.mesh.cas_config_entry(index, (kind, name), *cas, body.as_deref(), changed)
            }
            Command::NodeLeave(node) => self.catalog.leave(index, node, changed),
            Command::JoinTokenCreate(token) => self.join.create(index, token, changed),
            Command::JoinTokenDelete { id } => self.join.delete(id, changed),
            Command::AgentCaSet(ca) => self.join.set_agent_ca(ca, changed),
            Command::AgentCredentialDelete { node } => self.join.revoke(node, changed),
            Command::AgentCredentialSet(credential) => self.join.set_credential(index, credential, changed),
            Command::FireEvent(event) => self.events.fire(index, event, changed),
            Command::Txn(ops) => self.kv.txn(index, ops, &self.sessions, changed),
            Command::SessionCreate(session) => self.create_session(index, session, changed),
            Command::SessionDestroy { id } => self.destroy_session(index, id, changed),
            Command::SessionRenew { id } => self.renew_session(id, changed),
            // Only an acquire needs the session to exist: a release by an
            // unknown session just finds the key not held by it, as in Consul.
            Command::KvAcquire { key, value, flags, session, cas } => {
                self.kv.acquire(index, (key, value, *flags), session, (*cas, &self.sessions), changed)
            }
            Command::KvRelease { key, value, flags, session, cas } => {
                self.kv.release(index, (key, value, *flags), session, *cas, changed)
            }
            // The whole of the decision: were the tables it was checked
            // against changed since?
            Command::Checked { mesh_index, .. } if *mesh_index != self.mesh_index() => CommandOutcome::Outdated,
            Command::Checked { command, .. } => match &**command {
                Command::ConfigEntryUpsert(entry) => self.mesh.put_config_entry(index, entry, changed),
                Command::ConfigEntryCas { kind, name, cas, body: Some(body) } => {
                    self.mesh.cas_put_config_entry(index, mesh::entry_of(kind, name, body), *cas, changed)
                }
                Command::IntentionUpsert(intention) => self.mesh.put_intention(index, intention, changed),
                other => {
                    CommandOutcome::Rejected(format!("a {} write is not checked against the tables", other.kind()))
                }
            },
            Command::AclBootstrap { token, reset_index } => self.acl.bootstrap(index, token, *reset_index, changed),
            Command::AclTokenSet(token) => self.acl.set_token(index, token, changed),
            Command::AclTokenDelete { accessor_id } => self.acl.delete_token(accessor_id, changed),
            Command::AclPolicySet(policy) => self.acl.set_policy(index, policy, changed),
            Command::AclPolicyDelete { id } => self.acl.delete_policy(id, changed),
            Command::AclRoleSet(role) => self.acl.set_role(index, role, changed),
            Command::AclRoleDelete { id } => self.acl.delete_role(id, changed),
            Command::AclAuthMethodSet(method) => self.acl.set_auth_method(index, method, changed),
            Command::AclAuthMethodDelete { name } => self.acl.delete_auth_method(name, changed),
            Command::AclBindingRuleSet(rule) => self.acl.set_binding_rule(index, rule, changed),
            Command::AclBindingRuleDelete { id } => self.acl.delete_binding_rule(id, changed),
            Command::JoinTokenRedeem { secret_sha256, credential, now } => {
                self.join.redeem(index, secret_sha256, credential, *now, changed)
            }
            Command::Restore { snapshot } => self.restore_from(index, snapshot, changed),
            Command::RestoreBegin { id, total, sha256 } => {
                restore::begin(&mut self.pending_restore, id, *total, sha256)
            }
            Command::RestoreChunk { id, offset, bytes } => {
                restore::chunk(&mut self.pending_restore, id, *offset, bytes)
            }
            Command::RestoreFinish { id } => match restore::finish(&mut self.pending_restore, id) {
                Ok(snapshot) => self.restore_from(index, &snapshot, changed),
                Err(refused) => refused,
            },
        }
    }

    /// Replaces every table with `snapshot`'s.
    fn restore_from(&mut self, index: RaftIndex, snapshot: &[u8], changed: &mut Changed) -> CommandOutcome {
        match StoreData::decode(snapshot) {
            Ok(data) => {
                *self = Tables::from_data(data);
                self.restore_index = index;
                for table in Table::ALL {
                    changed.mark(table);
                }
                CommandOutcome::Done
            }
            Err(error) => CommandOutcome::Rejected(error.to_string()),
        }
    }

    /// The last index that changed the intentions or the config entries:
    /// what a [`Command::Checked`] was checked at.
    pub fn mesh_index(&self) -> RaftIndex {
        self.index(Table::Intentions).max(self.index(Table::ConfigEntries))
    }

    /// Checks a write ([`is_mesh_checked`]) against the rules that tie the
    /// intentions and config entries together, as these tables hold them:
    /// what a leader asks before it proposes the write as a [`Command::Checked`].
    pub fn check_mesh_rules(&self, command: &Command) -> Result<(), String> {
        match command {
            Command::ConfigEntryUpsert(entry) => config_entries::check_against(&self.mesh, entry),
            Command::ConfigEntryCas { kind, name, body: Some(body), .. } => {
                config_entries::check_against(&self.mesh, &mesh::entry_of(kind, name, body))
            }
            Command::IntentionUpsert(intention) => self.mesh.check_intention(intention),
            _ => Ok(()),
        }
    }

    /// The highest index that changed `table` (0 if none has).
    pub fn index(&self, table: Table) -> RaftIndex {
        self.table_indexes[table.slot()]
    }

    /// The floor for any record-level index a read reports (see `restore_index`).
    pub fn restore_index(&self) -> RaftIndex {
        self.restore_index
    }

    /// The highest index over several tables.
    pub fn max_index(&self, tables: &[Table]) -> RaftIndex {
        tables.iter().map(|t| self.index(*t)).max().unwrap_or_default()
    }

    pub fn catalog(&self) -> &catalog::Catalog {
        &self.catalog
    }

    pub fn kv(&self) -> &KvTable {
        &self.kv
    }

    pub fn sessions(&self) -> &SessionTable {
        &self.sessions
    }

    pub fn mesh(&self) -> &mesh::MeshTables {
        &self.mesh
    }

    pub fn join(&self) -> &join::JoinTables {
        &self.join
    }

    pub fn acl(&self) -> &acl::AclTables {
        &self.acl
    }

    pub fn events(&self) -> &events::EventLog {
        &self.events
    }
}

/// The shared, observable state store.
///
/// One writer (the Raft state machine on a server, the state stream on a
/// client agent) and many readers (HTTP handlers, DNS). Readers never hold
/// the lock across an await.
pub struct StateStore {
    tables: RwLock<Tables>,
    table_watches: [watch::Sender<RaftIndex>; Table::ALL.len()],
    applied: watch::Sender<RaftIndex>,
    /// Set when the server shuts down: blocking reads return at once.
    closed: watch::Sender<bool>,
    feed: broadcast::Sender<StoreEvent>,
    /// What this server keeps by its own clock beside the tables.
    clocked: std::sync::Mutex<Clocked>,
}

/// Kept by each server's clock, not replicated (see [`Changed`]): when each
/// released key's lock delay ends, and when each session was last made or
/// renewed here. A new leader that never saw a session renewed counts from
/// when it first looks (Consul's leaders reset every session's timer too).
#[derive(Debug, Default)]
struct Clocked {
    lock_delays: std::collections::HashMap<String, std::time::Instant>,
    renewed: std::collections::HashMap<String, std::time::Instant>,
}

/// One change to the store, as [`StateStore::subscribe`] delivers it.
#[derive(Clone, Debug)]
pub enum StoreEvent {
    /// `command` was applied at `index`.
    Command { index: RaftIndex, command: Arc<Command> },
    /// The log is applied up to this index.
    Applied(RaftIndex),
    /// All state was replaced (a snapshot was installed): subscribe again.
    Reset,
}

/// A consistent start for a copy of the store: the state, the index it is
/// applied to, and every change after it.
pub struct Subscription {
    pub data: StoreData,
    pub applied: RaftIndex,
    pub events: broadcast::Receiver<StoreEvent>,
}

/// Changes a subscriber may fall behind by before it must start over.
const FEED_CAPACITY: usize = 16 * 1024;

/// A read's result and the index a blocking query should compare against.
#[derive(Debug, Clone)]
pub struct Indexed<T> {
    pub value: T,
    /// Never 0: Consul clients treat 0 as "no index".
    pub index: RaftIndex,
}

impl StateStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            tables: RwLock::new(Tables::default()),
            table_watches: std::array::from_fn(|_| watch::Sender::new(RaftIndex::ZERO)),
            applied: watch::Sender::new(RaftIndex::ZERO),
            closed: watch::Sender::new(false),
            feed: broadcast::Sender::new(FEED_CAPACITY),
            clocked: Default::default(),
        })
    }

    /// How long `key` stays in the lock delay a session's end started, if
    /// it is in one: no session may acquire it until then.
    pub fn lock_delay_left(&self, key: &str) -> Option<Duration> {
        let clocked = self.clocked.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        clocked.lock_delays.get(key).filter(|until| **until > now).map(|until| until.duration_since(now))
    }

    /// When session `id` was last made or renewed, as this server saw it;
    /// `now` (noted) if it never saw either.
    pub fn session_renewed_at(&self, id: &str, now: std::time::Instant) -> std::time::Instant {
        let mut clocked = self.clocked.lock().unwrap_or_else(|p| p.into_inner());
        *clocked.renewed.entry(id.to_owned()).or_insert(now)
    }

    /// Notes what `changed` says by this server's clock, and forgets what
    /// no longer counts: the renewals of sessions `tables` no longer holds,
    /// lock delays that have passed. Called with the tables still locked.
    fn note_clocked(&self, changed: &Changed, tables: &Tables) {
        let sessions_changed = changed.tables().contains(&Table::Sessions);
        if changed.lock_delays.is_empty() && changed.renewed.is_empty() && !sessions_changed {
            return;
        }
        let now = std::time::Instant::now();
        let mut clocked = self.clocked.lock().unwrap_or_else(|p| p.into_inner());
        if !changed.lock_delays.is_empty() {
            clocked.lock_delays.retain(|_, until| *until > now);
        }
        for (key, delay_ms) in &changed.lock_delays {
            clocked.lock_delays.insert(key.clone(), now + Duration::from_millis(*delay_ms));
        }
        if sessions_changed {
            clocked.renewed.retain(|id, _| tables.sessions().get(id).is_some());
        }
        for id in &changed.renewed {
            clocked.renewed.insert(id.clone(), now);
        }
    }

    /// Applies a committed command (called by the Raft state machine, or by
    /// a client agent's state stream, only).
    pub fn apply(&self, index: RaftIndex, command: &Command) -> CommandOutcome {
        let mut tables = self.write();
        let (outcome, changed) = tables.apply(index, command);
        // Sent under the lock, so `subscribe` sees each change either in its
        // copy or in its feed, never both or neither. A restore sent in
        // parts replaced everything: subscribers start over from a copy.
        if self.feed.receiver_count() > 0 {
            let event = match (command, &outcome) {
                (Command::RestoreFinish { .. }, CommandOutcome::Done) => StoreEvent::Reset,
                _ => StoreEvent::Command { index, command: Arc::new(command.clone()) },
            };
            let _ = self.feed.send(event);
        }
        self.note_clocked(&changed, &tables);
        drop(tables);
        for table in changed.tables() {
            self.table_watches[table.slot()].send_replace(index);
        }
        outcome
    }

    /// Records that the log up to `index` is applied (including entries that
    /// carry no command, such as membership changes).
    pub fn mark_applied(&self, index: RaftIndex) {
        self.applied.send_replace(index);
        if self.feed.receiver_count() > 0 {
            let _ = self.feed.send(StoreEvent::Applied(index));
        }
    }

    /// A copy of the state and the changes that follow it, in order.
    pub fn subscribe(&self) -> Subscription {
        let tables = self.read();
        let events = self.feed.subscribe();
        Subscription { data: tables.to_data(), applied: self.applied_index(), events }
    }

    pub fn applied_index(&self) -> RaftIndex {
        *self.applied.borrow()
    }

    /// Waits until the local state has applied `index`, up to `timeout`.
    /// Returns whether it got there.
    pub async fn wait_applied(&self, index: RaftIndex, timeout: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(timeout, applied.wait_for(|at| *at >= index)).await.is_ok_and(|r| r.is_ok())
    }

    /// Ends every blocking read now (with the data as it is) and any that
    /// starts later, so shutting down never waits out a client's `?wait`.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Resolves once [`close`](Self::close) has been called.
    pub async fn closed(&self) {
        let _ = self.closed.subscribe().wait_for(|closed| *closed).await;
    }

    /// Replaces all state (snapshot install or start-up).
    pub fn restore(&self, data: StoreData) {
        let mut tables = self.write();
        *tables = Tables::from_data(data);
        let _ = self.feed.send(StoreEvent::Reset);
        drop(tables);
        let tables = self.read();
        for table in Table::ALL {
            self.table_watches[table.slot()].send_replace(tables.index(table));
        }
    }

    /// A consistent copy of all state, for snapshots.
    pub fn export(&self) -> StoreData {
        self.read().to_data()
    }

    pub fn read(&self) -> RwLockReadGuard<'_, Tables> {
        self.tables.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Tables> {
        self.tables.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `read` now and, while its index is not above `min_index`, again
    /// each time one of `tables` changes, until `wait` runs out. This is
    /// Consul's blocking query: it returns as soon as the data `read` looks at
    /// changes, and wakes (but does not return) on unrelated writes to the
    /// same tables.
    pub async fn blocking_read<T>(
        &self,
        tables: &[Table],
        min_index: RaftIndex,
        wait: Duration,
        read: impl Fn(&Tables) -> (T, RaftIndex),
    ) -> Indexed<T> {
        let moved = |index: RaftIndex| min_index == RaftIndex::ZERO || index > min_index;
        self.read_until(tables, wait, read, moved).await
    }

    /// Like [`blocking_read`](Self::blocking_read), for an index that is
    /// not a Raft index and need not grow (Consul's user events: a hash of
    /// the newest event's ID): returns once `moved` holds for `read`'s index.
    pub async fn read_until<T>(
        &self,
        tables: &[Table],
        wait: Duration,
        read: impl Fn(&Tables) -> (T, RaftIndex),
        moved: impl Fn(RaftIndex) -> bool,
    ) -> Indexed<T> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut watches: Vec<_> = tables.iter().map(|t| self.table_watches[t.slot()].subscribe()).collect();
        let mut closed = self.closed.subscribe();
        loop {
            for watch in &mut watches {
                watch.borrow_and_update();
            }
            let (value, index) = read(&self.read());
            let index = index.max(RaftIndex(1));
            let done = moved(index) || *closed.borrow_and_update();
            if done || tokio::time::Instant::now() >= deadline {
                return Indexed { value, index };
            }
            let any_change = futures::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
            tokio::select! {
                _ = any_change => {}
                _ = closed.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}
