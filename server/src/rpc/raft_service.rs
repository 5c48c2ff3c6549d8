//! Serves openraft's RPCs to the local Raft node, and notes when the leader
//! was last heard from (`X-Consul-LastContact`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};
use weft_api::proto::raft::raft_server::Raft as RaftRpc;
use weft_api::proto::raft::RaftPayload;

use openraft::raft::AppendEntriesRequest;

use crate::raft::{codec_decode_request, encode, Raft, TypeConfig, RAFT_TARGET_HEADER};
use crate::telemetry::{Stage, Timers};

/// When this server last heard from a leader.
#[derive(Clone, Default)]
pub struct LastContact(Arc<Mutex<Option<Instant>>>);

impl LastContact {
    pub(crate) fn touch(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Time since the leader's last message; `None` if never heard.
    pub fn elapsed(&self) -> Option<Duration> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).map(|at| at.elapsed())
    }
}

pub struct RaftService {
    id: u64,
    raft: Raft,
    last_contact: LastContact,
    timers: Timers,
}

impl RaftService {
    pub fn new(id: u64, raft: Raft, last_contact: LastContact, timers: Timers) -> Self {
        Self { id, raft, last_contact, timers }
    }

    /// Refuses an RPC meant for another server: one that dialled an address
    /// its target had before (and this server has now).
    fn check_target<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let target = request.metadata().get(RAFT_TARGET_HEADER).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        match target {
            Some(target) if target != self.id => {
                tracing::warn!(target, "refused a Raft RPC meant for another server (an address it had before?)");
                Err(Status::failed_precondition(format!("this is server {}, not server {target}", self.id)))
            }
            _ => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_target(&request)?;
        let rpc = codec_decode_request::<AppendEntriesRequest<TypeConfig>>(&request.into_inner().data)?;
        self.last_contact.touch();
        let carries_entries = !rpc.entries.is_empty();
        let started = Instant::now();
        let result = self.raft.append_entries(rpc).await;
        if carries_entries {
            self.timers.since(Stage::AppendEntriesServe, started);
        }
        Ok(Response::new(RaftPayload { data: encode(&result) }))
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_target(&request)?;
        let rpc = codec_decode_request(&request.into_inner().data)?;
        let result = self.raft.vote(rpc).await;
        Ok(Response::new(RaftPayload { data: encode(&result) }))
    }

    async fn install_snapshot(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_target(&request)?;
        let rpc = codec_decode_request(&request.into_inner().data)?;
        self.last_contact.touch();
        let result = self.raft.install_snapshot(rpc).await;
        Ok(Response::new(RaftPayload { data: encode(&result) }))
    }
}
