//! The containers and the volume injection adds to a pod, and what they
//! assume of the agent's Kubernetes mode.
//!
//! The agent and its proxy run as one native sidecar (`weft-sidecar`: an
//! init container with `restartPolicy: Always`). The kubelet starts it
//! before the application's containers and holds them back until its
//! startup probe passes, and stops it only after they have exited, so the
//! application never runs without its proxy, on the way up or down.
//!
//! # What `weft agent --k8s` must do
//! - Read its service from `WEFT_SERVICE_NAME`, `WEFT_SERVICE_PORT` (absent
//!   when the pod declares no port: no inbound traffic) and
//!   `WEFT_SERVICE_UPSTREAMS` (`api:9191,db:5432`, maybe empty), its node and
//!   pod from `WEFT_NODE_NAME`, `WEFT_POD_NAME`, `WEFT_POD_NAMESPACE` and
//!   `WEFT_POD_IP`, whether traffic is redirected from
//!   `WEFT_TRANSPARENT_PROXY` (`true`/`false`), and the CA the servers'
//!   RPC certificates chain to from `WEFT_SERVER_CA_PEM` (when the servers
//!   run TLS, which they must off the host).
//! - With ACLs on (the webhook's `--acl-auth-method`), log in with the
//!   auth method in `WEFT_ACL_AUTH_METHOD`, presenting the projected
//!   service-account token in `WEFT_ACL_BEARER_TOKEN_FILE` (audience
//!   [`ACL_TOKEN_AUDIENCE`]), use the token for its service and sidecar,
//!   and log out when it stops.
//! - Keep its HTTP API on `127.0.0.1:8500`, private to the pod. The startup
//!   probe runs `weft k8s ready` in the container, which asks that API
//!   whether the service's sidecar is registered and passing its check.
//! - Run the proxy's public (inbound) listener on [`INBOUND_PORT`] and, with
//!   transparent proxying, its outbound listener on [`OUTBOUND_PORT`]; the
//!   upstreams listen on `127.0.0.1:<local port>`. It binds no other port of
//!   the pod's network namespace.
//! - Run as uid/gid [`PROXY_UID`] with a read-only root file system, writing
//!   only under [`DATA_DIR`], and without any capability.
//! - On SIGTERM (sent after the application's containers have exited),
//!   deregister and exit.
//!
//! With transparent proxying, a `weft-init` container runs first, as root
//! with `NET_ADMIN`: `weft k8s redirect-traffic` sends the pod's inbound TCP
//! to [`INBOUND_PORT`] and its outbound TCP to [`OUTBOUND_PORT`], except
//! [`PROXY_UID`]'s own and the ports the application's probes use, other
//! than the service's own port ([`crate::redirect`]).

use serde_json::{json, Value};

use crate::inject::InjectConfig;
use crate::wiring::Wiring;

/// The uid (and gid) the sidecar runs as; transparent proxying leaves its
/// own traffic alone by this uid.
pub const PROXY_UID: u32 = 5995;
/// The agent's HTTP API (on loopback; transparent proxying leaves it alone).
pub const AGENT_HTTP_PORT: u16 = 8500;
/// The proxy's public (mTLS) listener; transparent proxying redirects
/// inbound traffic here.
pub const INBOUND_PORT: u16 = 20000;
/// Where transparent proxying redirects outbound traffic.
pub const OUTBOUND_PORT: u16 = 15001;

pub const SIDECAR_CONTAINER: &str = "weft-sidecar";
pub const INIT_CONTAINER: &str = "weft-init";
pub const DATA_VOLUME: &str = "weft-data";
pub const DATA_DIR: &str = "/weft/data";
/// The projected service-account token the agent logs in with.
pub const ACL_TOKEN_VOLUME: &str = "weft-acl-token";
pub const ACL_TOKEN_DIR: &str = "/var/run/secrets/weft/serviceaccount";
/// The audience it is minted for: the auth method binds it, so no other
/// service-account token (meant for the API server) logs in.
pub const ACL_TOKEN_AUDIENCE: &str = "weft";
/// How long each projected token lives; the kubelet renews it.
const ACL_TOKEN_SECONDS: u32 = 3600;

/// The ports of the pod's network namespace the sidecar takes, and what for.
const SIDECAR_PORTS: [(u16, &str); 3] = [
    (AGENT_HTTP_PORT, "the agent's HTTP API"),
    (INBOUND_PORT, "the proxy's inbound listener"),
    (OUTBOUND_PORT, "the proxy's outbound listener"),
];

/// The startup probe's patience: checked every 2 s for up to 2 minutes,
/// after which the kubelet restarts the sidecar (and the application waits on).
const PROBE_PERIOD_SECONDS: u32 = 2;
const PROBE_FAILURE_THRESHOLD: u32 = 60;

/// What the sidecar uses `port` for, if it does.
pub fn port_taken_by(port: u16) -> Option<&'static str> {
    SIDECAR_PORTS.iter().find(|(taken, _)| *taken == port).map(|(_, taken_by)| *taken_by)
}

/// The agent and its proxy, as a native sidecar.
pub fn sidecar_container(config: &InjectConfig, wiring: &Wiring) -> Value {
    let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let value = |name: &str, value: String| json!({"name": name, "value": value});
    let mut env = vec![
        field("WEFT_POD_NAME", "metadata.name"),
        field("WEFT_POD_NAMESPACE", "metadata.namespace"),
        field("WEFT_POD_IP", "status.podIP"),
        field("WEFT_NODE_NAME", "spec.nodeName"),
        value("WEFT_SERVICE_NAME", wiring.service.to_string()),
    ];
    if let Some(port) = wiring.service_port {
        env.push(value("WEFT_SERVICE_PORT", port.to_string()));
    }
    env.push(value("WEFT_SERVICE_UPSTREAMS", wiring.upstreams.to_string()));
    env.push(value("WEFT_TRANSPARENT_PROXY", wiring.transparent_proxy.to_string()));
    if let Some(pem) = &config.server_ca_pem {
        env.push(value(crate::pod_env::SERVER_CA_PEM, pem.clone()));
    }
    let mut mounts = vec![json!({"name": DATA_VOLUME, "mountPath": DATA_DIR})];
    if let Some(method) = &config.acl_auth_method {
        env.push(value(crate::pod_env::ACL_AUTH_METHOD, method.clone()));
        env.push(value(crate::pod_env::ACL_BEARER_TOKEN_FILE, format!("{ACL_TOKEN_DIR}/token")));
        mounts.push(json!({"name": ACL_TOKEN_VOLUME, "mountPath": ACL_TOKEN_DIR, "readOnly": true}));
    }

    let mut args = vec!["agent", "--k8s", "--retry-join", &config.server_addr, "--data-dir", DATA_DIR];
    if !config.network.is_empty() {
        args.extend(["--network", config.network.as_str()]);
    }
    json!({
        "name": SIDECAR_CONTAINER,
        "image": config.agent_image,
        "args": args,
        "restartPolicy": "Always",
        "env": env,
        "startupProbe": {
            "exec": {"command": ["weft", "k8s", "ready"]},
            "periodSeconds": PROBE_PERIOD_SECONDS,
            "failureThreshold": PROBE_FAILURE_THRESHOLD,
            "timeoutSeconds": 1,
        },
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": PROXY_UID,
            "runAsGroup": PROXY_UID,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    })
}

/// The container that redirects the pod's traffic through the proxy
/// (transparent proxying); `probe_ports` stay reachable by the kubelet.
pub fn init_container(config: &InjectConfig, probe_ports: &[u16]) -> Value {
    let mut args = vec!["k8s".to_owned(), "redirect-traffic".to_owned()];
    for port in probe_ports {
        args.extend(["--exclude-inbound-port".to_owned(), port.to_string()]);
    }
    json!({
        "name": INIT_CONTAINER,
        "image": config.agent_image,
        "args": args,
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": false,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
    })
}

/// The agent's data directory: scratch space that lives as long as the pod.
pub fn data_volume() -> Value {
    json!({"name": DATA_VOLUME, "emptyDir": {}})
}

/// The pod's service-account token for the `weft` audience, which the
/// agent logs in with.
pub fn acl_token_volume() -> Value {
    json!({"name": ACL_TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
        "audience": ACL_TOKEN_AUDIENCE,
        "expirationSeconds": ACL_TOKEN_SECONDS,
        "path": "token",
    }}]}})
}
