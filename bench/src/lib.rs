//! Pieces shared by the benchmark commands (`kv-load`, `propagation`,
//! `watchers`, `http-backend`, `http-load`): their common flags,
//! loopback-only target addresses, a latency histogram, a raw DNS query
//! over UDP, and reading a process's memory use from `/proc`.

pub mod args;
pub mod dnswire;
pub mod latency;
pub mod net;
pub mod proc;
