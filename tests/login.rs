//! Workload login end to end, through the real binary and its CLI, with
//! ACLs on and `default_policy = "deny"`:
//! - a JWT signed by the auth method's key logs in (`weft login`, through a
//!   client agent, whose server checks it) and gets exactly its service
//!   identity: it registers `web` and gets a leaf for `web`, not `payments`;
//!   `weft logout` deletes the token, which is refused at once;
//! - expired, not-yet-valid, wrong-audience, wrong-issuer, foreign-key,
//!   HS256-with-the-public-key and tampered JWTs, a JWT no binding rule
//!   selects and one whose claims make an invalid service name are each
//!   refused with the reason, and no token is made;
//! - a method's keys come from a JWKS URL, fetched once for many logins and
//!   again when a JWT names a key the set lacks (rotation);
//! - deleting the method deletes its rules and its logins' tokens;
//! - an agent logs in as it starts and out as it stops; one without a join
//!   token enrolls with its JWT (a pod's agent), for the node its binding
//!   rules name and no other.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::http::http_app;
use support::{eventually, weft, Cluster};
use weft_api::client::HttpClient;

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A P-256 key pair: (signer, public key PEM, its JWK with `kid`).
fn key_pair(kid: &str) -> (EncodingKey, String, Value) {
    let pair = rcgen::KeyPair::generate().unwrap();
    let raw = pair.public_key_raw();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let jwk = json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
        "x": b64(&raw[1..33]), "y": b64(&raw[33..65])});
    (EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(), pair.public_key_pem(), jwk)
}

/// A projected service-account token's claims for `namespace`/`account`.
fn claims(namespace: &str, account: &str) -> Value {
    json!({
        "iss": ISSUER, "aud": ["weft"], "iat": now(), "nbf": now(), "exp": now() + 600,
        "sub": format!("system:serviceaccount:{namespace}:{account}"),
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": account, "uid": "u-1"},
            "pod": {"name": format!("{account}-0"), "uid": "p-1"}},
    })
}

fn sign(key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let header = Header { kid: kid.map(str::to_owned), ..Header::new(Algorithm::ES256) };
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

async fn acl_ready(cluster: &Cluster) {
    eventually("the ACL built-ins", Duration::from_secs(30), || async {
        let response = cluster.client(0).get("/v1/acl/token/self").await.ok()?;
        (response.status == 200).then_some(())
    })
    .await;
}

async fn put_ok(client: &HttpClient, path: &str, body: Value) -> Value {
    let response = client.put(path, body.to_string()).await.unwrap();
    assert_eq!(response.status, 200, "PUT {path}: {}", response.text());
    serde_json::from_slice(&response.body).unwrap()
}

/// The method's config for Kubernetes service-account tokens, with `keys`.
fn k8s_config(keys: Value) -> Value {
    let mut config = json!({
        "BoundIssuer": ISSUER, "BoundAudiences": ["weft"],
        "ClaimMappings": {
            "/kubernetes.io/namespace": "namespace",
            "/kubernetes.io/serviceaccount/name": "service_account_name",
            "/kubernetes.io/pod/name": "pod_name",
        },
    });
    config.as_object_mut().unwrap().extend(keys.as_object().unwrap().clone());
    config
}

async fn login(client: &HttpClient, method: &str, jwt: &str) -> (u16, String) {
    let body = json!({"AuthMethod": method, "BearerToken": jwt}).to_string();
    let response = client.post("/v1/acl/login", body).await.unwrap();
    (response.status, response.text())
}

async fn logins_of(management: &HttpClient, method: &str) -> usize {
    let response = management.get(&format!("/v1/acl/tokens?authmethod={method}")).await.unwrap();
    serde_json::from_slice::<Vec<Value>>(&response.body).unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_logs_in_as_its_service_and_nothing_else() {
    let mut cluster = Cluster::with_acl(1).await;
    acl_ready(&cluster).await;
    let vm1 = cluster.add_client("vm1", &[]);
    cluster.wait_ready(vm1).await;
    let management = cluster.client(0);
    let (signer, public_pem, _) = key_pair("k1");
    let method = json!({"Name": "k8s", "Type": "jwt", "MaxTokenTTL": "1h",
        "Config": k8s_config(json!({"JWTValidationPubKeys": [public_pem.clone()]}))});
    let created = put_ok(&management, "/v1/acl/auth-method", method).await;
    assert_eq!(created["Type"], "jwt");
    assert_eq!(created["Config"]["BoundAudiences"], json!(["weft"]));
    let rule = json!({"AuthMethod": "k8s", "BindType": "service", "BindName": "${value.service_account_name}",
        "Selector": "value.namespace == default"});
    let rule = put_ok(&management, "/v1/acl/binding-rule", rule).await;
    assert_eq!(rule["BindType"], "service");

    // `weft login` through the client agent, as a pod's init would.
    let dir = tempfile::tempdir().unwrap();
    let (jwt_file, sink) = (dir.path().join("jwt"), dir.path().join("token"));
    std::fs::write(&jwt_file, sign(&signer, None, &claims("default", "web"))).unwrap();
    let vm1_http = cluster.specs[vm1].http_addr.clone();
    let started = std::time::Instant::now();
    let (code, _, stderr) = weft(&[
        "login",
        "-method",
        "k8s",
        "-bearer-token-file",
        jwt_file.to_str().unwrap(),
        "-token-sink-file",
        sink.to_str().unwrap(),
        "-meta",
        "pod=default/web-0",
        "-http-addr",
        &vm1_http,
    ]);
    assert_eq!(code, 0, "weft login: {stderr}");
    println!("weft login through a client agent: {:?}", started.elapsed());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&sink).unwrap().permissions().mode() & 0o777, 0o600);
    let secret = std::fs::read_to_string(&sink).unwrap();
    let web = HttpClient::new(&vm1_http, Some(secret.clone())).with_timeout(Duration::from_secs(30));
    let own: Value = serde_json::from_slice(&web.get("/v1/acl/token/self").await.unwrap().body).unwrap();
    assert_eq!(own["AuthMethod"], "k8s", "{own}");
    assert_eq!(own["ServiceIdentities"], json!([{"ServiceName": "web"}]), "{own}");
    assert_eq!(own["Description"], r#"token created via login: {"pod":"default/web-0"}"#);
    assert!(own["ExpirationTime"].is_string(), "MaxTokenTTL sets an expiry: {own}");

    // Its service identity, and nothing more.
    let register = |name: &str| json!({"Name": name, "Port": 8080}).to_string();
    let response = web.put("/v1/agent/service/register", register("web")).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let response = web.put("/v1/agent/service/register", register("payments")).await.unwrap();
    assert_eq!(response.status, 403, "{}", response.text());
    assert!(response.text().contains("service:write"), "{}", response.text());
    let leaf = web.get("/v1/agent/connect/ca/leaf/web").await.unwrap();
    assert_eq!(leaf.status, 200, "{}", leaf.text());
    assert_eq!(web.get("/v1/agent/connect/ca/leaf/payments").await.unwrap().status, 403);

    // What must not log in, each refused with its reason, through the
    // client agent (whose server decides) and the server agent alike.
    let (stranger, _, _) = key_pair("k2");
    let expired = json!({"iat": now() - 7200, "nbf": now() - 7200, "exp": now() - 3600});
    let early = json!({"iat": now(), "nbf": now() + 3600, "exp": now() + 7200});
    let with = |changes: Value| {
        let mut c = claims("default", "web");
        c.as_object_mut().unwrap().extend(changes.as_object().unwrap().clone());
        c
    };
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("default", "web"),
        &EncodingKey::from_secret(public_pem.as_bytes()),
    )
    .unwrap();
    let good = sign(&signer, None, &claims("default", "web"));
    let (head, rest) = good.split_once('.').unwrap();
    let (_, signature) = rest.rsplit_once('.').unwrap();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims("default", "admin").to_string());
    let tampered = format!("{head}.{payload}.{signature}");
    let attempts = [
        ("expired", sign(&signer, None, &with(expired)), "token is expired (exp)"),
        ("not yet valid", sign(&signer, None, &with(early)), "token not valid yet (nbf)"),
        ("for another audience", sign(&signer, None, &with(json!({"aud": "vault"}))), "aud claim does not match"),
        ("from another issuer", sign(&signer, None, &with(json!({"iss": "https://evil"}))), "invalid issuer claim"),
        ("signed by another key", sign(&stranger, None, &claims("default", "web")), "no known key"),
        ("HS256 keyed with the public key", confused, "HS256 is not allowed"),
        ("with its claims changed", tampered, "no known key"),
        ("that no rule selects", sign(&signer, None, &claims("kube-system", "web")), "Permission denied"),
        ("naming an invalid service", sign(&signer, None, &claims("default", "a.b")), "invalid bind name"),
    ];
    for (agent, client) in
        [("vm1", HttpClient::new(&vm1_http, None)), ("server", HttpClient::new(&cluster.specs[0].http_addr, None))]
    {
        for (what, jwt, reason) in &attempts {
            let (status, text) = login(&client, "k8s", jwt).await;
            assert_eq!(status, 403, "a JWT {what} through {agent}: {text}");
            assert!(text.contains(reason), "a JWT {what} through {agent}: {text}");
            println!("login with a JWT {what} through {agent}: {status} {text}");
        }
        let (status, text) = login(&client, "nope", &good).await;
        assert_eq!((status, text.as_str()), (403, r#"ACL not found: auth method "nope" not found"#));
    }
    assert_eq!(logins_of(&management, "k8s").await, 1, "no refused login made a token");

    // The management token is no login's: logout refuses it.
    let (code, _, stderr) = weft(&["logout", "-http-addr", &vm1_http, "-token", support::MANAGEMENT_TOKEN]);
    assert_ne!(code, 0);
    assert!(stderr.contains("token wasn't created via login"), "{stderr}");
    // `weft logout` with the sink file: the token is gone, refused at once.
    let (code, _, stderr) = weft(&["logout", "-http-addr", &vm1_http, "-token-file", sink.to_str().unwrap()]);
    assert_eq!(code, 0, "weft logout: {stderr}");
    assert_eq!(web.get("/v1/acl/token/self").await.unwrap().status, 403);
    assert_eq!(web.put("/v1/agent/service/register", register("web")).await.unwrap().status, 403);

    // Deleting the method takes its rules and its logins' tokens.
    let (status, text) = login(&HttpClient::new(&vm1_http, None), "k8s", &good).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(logins_of(&management, "k8s").await, 1);
    assert_eq!(management.delete("/v1/acl/auth-method/k8s").await.unwrap().status, 200);
    assert_eq!(logins_of(&management, "k8s").await, 0);
    let rules: Vec<Value> =
        serde_json::from_slice(&management.get("/v1/acl/binding-rules").await.unwrap().body).unwrap();
    assert!(rules.is_empty(), "{rules:?}");
    let (status, _) = login(&HttpClient::new(&vm1_http, None), "k8s", &good).await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_come_from_a_jwks_url_fetched_once_and_again_on_rotation() {
    let cluster = Cluster::with_acl(1).await;
    acl_ready(&cluster).await;
    let management = cluster.client(0);
    let (first, _, first_jwk) = key_pair("k1");
    let (second, _, second_jwk) = key_pair("k2");
    // The issuer's JWKS endpoint: counts fetches; the test rotates its keys.
    let jwks = Arc::new(Mutex::new(json!({"keys": [first_jwk]})));
    let fetches = Arc::new(AtomicUsize::new(0));
    let port = {
        let (jwks, fetches) = (jwks.clone(), fetches.clone());
        http_app(move |head| {
            let (jwks, fetches) = (jwks.clone(), fetches.clone());
            async move {
                assert_eq!(head.path, "/openid/v1/jwks");
                fetches.fetch_add(1, Ordering::SeqCst);
                ("200 OK", jwks.lock().unwrap().to_string())
            }
        })
        .await
    };
    // Made with the CLI's flags, as the Helm chart's job makes it.
    let http = cluster.specs[0].http_addr.clone();
    let jwks_url = format!("http://127.0.0.1:{port}/openid/v1/jwks");
    let (code, out, err) = weft(&[
        "acl",
        "auth-method",
        "create",
        "-type",
        "jwt",
        "-name",
        "k8s",
        "-jwks-url",
        &jwks_url,
        "-bound-issuer",
        ISSUER,
        "-bound-audience",
        "weft",
        "-claim-mapping",
        "/kubernetes.io/namespace=namespace",
        "-claim-mapping",
        "/kubernetes.io/serviceaccount/name=service_account_name",
        "-http-addr",
        &http,
        "-token",
        support::MANAGEMENT_TOKEN,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Name:          k8s"), "{out}");
    let (code, _, err) = weft(&[
        "acl",
        "binding-rule",
        "create",
        "-method",
        "k8s",
        "-bind-type",
        "service",
        "-bind-name",
        "${value.service_account_name}",
        "-http-addr",
        &http,
        "-token",
        support::MANAGEMENT_TOKEN,
    ]);
    assert_eq!(code, 0, "{err}");
    let method: Value = serde_json::from_slice(&management.get("/v1/acl/auth-method/k8s").await.unwrap().body).unwrap();
    assert_eq!(method["Config"]["ClaimMappings"]["/kubernetes.io/namespace"], "namespace", "{method}");

    let anonymous = HttpClient::new(&cluster.specs[0].http_addr, None);
    for i in 0..5 {
        let (status, text) =
            login(&anonymous, "k8s", &sign(&first, Some("k1"), &claims("default", &format!("app{i}")))).await;
        assert_eq!(status, 200, "{text}");
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "five logins, one fetch");
    // The issuer rotates: a JWT names a key the cached set lacks. Within
    // the refetch interval it is refused without a fetch; after it, the set
    // is fetched again and the login works.
    *jwks.lock().unwrap() = json!({"keys": [second_jwk]});
    let rotated = sign(&second, Some("k2"), &claims("default", "web"));
    let (status, text) = login(&anonymous, "k8s", &rotated).await;
    assert_eq!(status, 403, "{text}");
    let accepted = eventually("the rotated key to be fetched", Duration::from_secs(30), || async {
        let (status, text) = login(&anonymous, "k8s", &rotated).await;
        (status == 200).then_some(text)
    })
    .await;
    let token: Value = serde_json::from_str(&accepted).unwrap();
    assert_eq!(token["ServiceIdentities"], json!([{"ServiceName": "web"}]));
    let fetched = fetches.load(Ordering::SeqCst);
    assert!((2..=4).contains(&fetched), "fetched {fetched} times");
    println!("JWKS: 5 logins on one fetch; rotation picked up with {fetched} fetches in all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_logs_in_when_it_starts_and_out_when_it_stops() {
    // As a pod's agent does (the injector's `--acl-auth-method` sets it up
    // from the pod's environment): `acl { login { ... } }` in its config.
    let mut cluster = Cluster::with_acl(1).await;
    acl_ready(&cluster).await;
    let management = cluster.client(0);
    let (signer, public_pem, _) = key_pair("k1");
    let method = json!({"Name": "k8s", "Type": "jwt",
        "Config": k8s_config(json!({"JWTValidationPubKeys": [public_pem]}))});
    put_ok(&management, "/v1/acl/auth-method", method).await;
    let rule = json!({"AuthMethod": "k8s", "BindType": "service", "BindName": "${value.service_account_name}"});
    put_ok(&management, "/v1/acl/binding-rule", rule).await;

    let dir = tempfile::tempdir().unwrap();
    let jwt_file = dir.path().join("token");
    std::fs::write(&jwt_file, sign(&signer, None, &claims("default", "web"))).unwrap();
    let config = dir.path().join("pod.hcl");
    let hcl = format!(
        "acl {{\n  enabled = true\n  default_policy = \"deny\"\n  login {{\n    auth_method = \"k8s\"\n    bearer_token_file = {:?}\n    meta {{\n      pod = \"default/web-0\"\n    }}\n  }}\n}}\nservice {{\n  name = \"web\"\n  port = 8080\n}}\n",
        jwt_file.to_str().unwrap()
    );
    std::fs::write(&config, hcl).unwrap();
    let pod = cluster.add_client("web-0", &["--config-file", config.to_str().unwrap()]);
    cluster.wait_ready(pod).await;
    let tokens: Vec<Value> =
        serde_json::from_slice(&management.get("/v1/acl/tokens?authmethod=k8s").await.unwrap().body).unwrap();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0]["Description"], r#"token created via login: {"pod":"default/web-0"}"#);
    // The login's token is the agent's default: its own service's leaf
    // without a token, not another's.
    let local = HttpClient::new(&cluster.specs[pod].http_addr, None).with_timeout(Duration::from_secs(30));
    let leaf = local.get("/v1/agent/connect/ca/leaf/web").await.unwrap();
    assert_eq!(leaf.status, 200, "{}", leaf.text());
    assert_eq!(local.get("/v1/agent/connect/ca/leaf/payments").await.unwrap().status, 403);
    eventually("web registered from the config", Duration::from_secs(30), || async {
        let response = management.get("/v1/catalog/service/web").await.ok()?;
        let instances: Vec<Value> = serde_json::from_slice(&response.body).ok()?;
        (instances.len() == 1).then_some(())
    })
    .await;

    assert!(cluster.stop(pod), "the agent exits on SIGTERM");
    assert_eq!(logins_of(&management, "k8s").await, 0, "the agent logged out as it stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_s_agent_enrolls_with_its_jwt_for_its_own_node_only() {
    let mut cluster = Cluster::with_acl(1).await;
    acl_ready(&cluster).await;
    let management = cluster.client(0);
    let (signer, public_pem, _) = key_pair("k1");
    let jwt = sign(&signer, None, &claims("default", "web"));

    // The pod's agent: the servers' CA, its JWT, no join token. It starts
    // before the auth method exists (a Helm chart's job makes it after the
    // pods start), and waits for it.
    let dir = tempfile::tempdir().unwrap();
    let jwt_file = dir.path().join("token");
    std::fs::write(&jwt_file, &jwt).unwrap();
    let config = dir.path().join("pod.hcl");
    let hcl = format!(
        "acl {{\n  enabled = true\n  default_policy = \"deny\"\n  login {{\n    auth_method = \"k8s\"\n    bearer_token_file = {:?}\n  }}\n}}\nservice {{\n  name = \"web\"\n  port = 8080\n}}\n",
        jwt_file.to_str().unwrap()
    );
    std::fs::write(&config, hcl).unwrap();
    let pod = cluster.add_client_without_token("web-0", &["--config-file", config.to_str().unwrap()]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(cluster.is_running(pod), "the agent waits for the auth method");

    let method = json!({"Name": "k8s", "Type": "jwt",
        "Config": k8s_config(json!({"JWTValidationPubKeys": [public_pem]}))});
    put_ok(&management, "/v1/acl/auth-method", method).await;
    for (bind_type, bind_name) in [("service", "${value.service_account_name}"), ("node", "${value.pod_name}")] {
        let rule = json!({"AuthMethod": "k8s", "BindType": bind_type, "BindName": bind_name});
        put_ok(&management, "/v1/acl/binding-rule", rule).await;
    }

    // Anyone holding web-0's JWT may enroll web-0, and nothing else.
    let mut anonymous = cluster.rpc_client(0, None);
    let redeem = |node: &str, bearer: &str| weft_api::proto::cluster::RedeemLoginRequest {
        auth_method: "k8s".into(),
        bearer_token: bearer.into(),
        node: node.into(),
        credential_sha256: "ab".repeat(32),
    };
    for (what, node, bearer) in [
        ("a server's node", "s1", jwt.as_str()),
        ("another pod's node", "api-0", jwt.as_str()),
        ("its node with a forged JWT", "web-0", "e30.e30.e30"),
    ] {
        let refused = anonymous.redeem_login(redeem(node, bearer)).await.expect_err(what);
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{what}: {refused:?}");
        println!("enrolling {what} by login: {}", refused.message());
    }

    cluster.wait_ready(pod).await;
    assert!(cluster.data_dir(pod).join("agent-cert.pem").exists(), "the agent has its own certificate");
    let enrollments = |body: Vec<u8>| serde_json::from_slice::<Vec<Value>>(&body).unwrap();
    let listed = enrollments(management.get("/v1/operator/enrollment").await.unwrap().body);
    assert!(listed.iter().any(|e| e["Node"] == "web-0"), "{listed:?}");
    assert!(listed.iter().all(|e| e["Node"] != "s1" && e["Node"] != "api-0"), "{listed:?}");
    // It writes its own node's entries with that certificate.
    eventually("web-0 and its service registered", Duration::from_secs(30), || async {
        let response = management.get("/v1/catalog/service/web").await.ok()?;
        let instances: Vec<Value> = serde_json::from_slice(&response.body).ok()?;
        (instances.first()?["Node"] == "web-0").then_some(())
    })
    .await;
}
