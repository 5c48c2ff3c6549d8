//! The webhook over real TLS, fed `AdmissionReview`s shaped as the API
//! server sends them (`tests/fixtures/`). Each answered patch is applied to
//! the fixture's pod, and the tests look at the pod that would be created.

mod support;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use support::{env, fixture, init_container, inject_config, patched_pod, Http, Webhook};
use weft_k8s::{InjectConfig, WebhookConfig, WebhookError};

/// A pod the API server would accept: unique container and volume names,
/// and every mount naming a volume.
fn assert_consistent(pod: &Value) {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|list| pod["spec"][list].as_array().into_iter().flatten())
        .collect();
    let mut names: Vec<&str> = containers.iter().map(|c| c["name"].as_str().unwrap()).collect();
    names.sort();
    let count = names.len();
    names.dedup();
    assert_eq!(names.len(), count, "duplicate container names: {names:?}");

    let volumes: Vec<&str> =
        pod["spec"]["volumes"].as_array().into_iter().flatten().map(|v| v["name"].as_str().unwrap()).collect();
    for container in containers {
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            assert!(volumes.contains(&mount["name"].as_str().unwrap()), "{mount} names no volume in {volumes:?}");
        }
    }
}

fn init_container_names(pod: &Value) -> Vec<&str> {
    pod["spec"]["initContainers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect()
}

fn volume_names(pod: &Value) -> Vec<&str> {
    pod["spec"]["volumes"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect()
}

/// Asserts the review admits its pod unchanged, and returns its warnings.
fn assert_unchanged(review: &Value) -> Vec<String> {
    let response = &review["response"];
    assert_eq!(response["allowed"], json!(true), "{review}");
    assert!(response.get("patch").is_none() && response.get("patchType").is_none(), "{review}");
    response["warnings"].as_array().into_iter().flatten().map(|w| w.as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn an_annotated_deployment_pod_gets_the_sidecar_before_its_containers() {
    let webhook = Webhook::start(inject_config()).await;
    let review = webhook.review_fixture("deployment-annotated").await;

    assert_eq!(review["apiVersion"], json!("admission.k8s.io/v1"));
    assert_eq!(review["kind"], json!("AdmissionReview"));
    let response = &review["response"];
    assert_eq!(response["uid"], json!("b6f3a2c4-8e1d-4f7a-9c2b-5d0e7a1f3b64"));
    assert_eq!(response["allowed"], json!(true));
    assert_eq!(response["patchType"], json!("JSONPatch"));
    assert!(response.get("warnings").is_none());

    let original = fixture("deployment-annotated")["request"]["object"].clone();
    let pod = patched_pod("deployment-annotated", &review);
    assert_consistent(&pod);
    assert_eq!(pod["spec"]["containers"], original["spec"]["containers"], "app containers are untouched");
    assert_eq!(init_container_names(&pod), ["weft-sidecar"]);
    assert_eq!(volume_names(&pod), ["kube-api-access-8xq2d", "weft-data"]);
    assert_eq!(
        pod["metadata"]["annotations"],
        json!({
            "weft.io/connect-inject": "true",
            "weft.io/connect-service-upstreams": "api:9191,db:5432",
            "weft.io/connect-inject-status": "injected",
        })
    );

    let (_, sidecar) = init_container(&pod, "weft-sidecar").unwrap();
    assert_eq!(sidecar["restartPolicy"], json!("Always"));
    assert_eq!(sidecar["image"], json!("ghcr.io/weft/weft:0.1.0"));
    assert_eq!(
        sidecar["args"],
        json!(["agent", "--k8s", "--retry-join", "weft-server.weft.svc:8300", "--data-dir", "/weft/data"])
    );
    assert_eq!(env(sidecar, "WEFT_SERVICE_NAME"), Some(&json!("web")));
    assert_eq!(env(sidecar, "WEFT_SERVICE_PORT"), Some(&json!("8080")));
    assert_eq!(env(sidecar, "WEFT_SERVICE_UPSTREAMS"), Some(&json!("api:9191,db:5432")));
    assert_eq!(env(sidecar, "WEFT_POD_NAME"), Some(&json!({"fieldRef": {"fieldPath": "metadata.name"}})));
    assert_eq!(env(sidecar, "WEFT_POD_IP"), Some(&json!({"fieldRef": {"fieldPath": "status.podIP"}})));
    assert_eq!(sidecar["startupProbe"]["exec"]["command"], json!(["weft", "k8s", "ready"]));
    assert_eq!(sidecar["securityContext"]["runAsUser"], json!(5995));
    webhook.stop().await.unwrap();
}

#[tokio::test]
async fn a_pod_injected_once_is_not_injected_again() {
    let webhook = Webhook::start(inject_config()).await;
    let review = webhook.review_fixture("deployment-annotated").await;
    let mut again = fixture("deployment-annotated");
    again["request"]["object"] = patched_pod("deployment-annotated", &review);
    let answer = webhook.mutate(serde_json::to_vec(&again).unwrap()).await;
    assert_eq!(answer.status, StatusCode::OK);
    let warnings = assert_unchanged(&serde_json::from_slice(&answer.body).unwrap());
    assert!(warnings.is_empty(), "{warnings:?}");

    let warnings = assert_unchanged(&webhook.review_fixture("already-injected").await);
    assert!(warnings.is_empty(), "{warnings:?}");
    webhook.stop().await.unwrap();
}

#[tokio::test]
async fn a_pod_not_annotated_is_injected_only_when_injection_is_on_by_default() {
    let webhook = Webhook::start(inject_config()).await;
    let warnings = assert_unchanged(&webhook.review_fixture("not-annotated").await);
    assert!(warnings.is_empty(), "{warnings:?}");
    webhook.stop().await.unwrap();

    let webhook = Webhook::start(InjectConfig { inject_by_default: true, ..inject_config() }).await;
    let review = webhook.review_fixture("not-annotated").await;
    let pod = patched_pod("not-annotated", &review);
    assert_consistent(&pod);
    // The pod had no annotations at all: the patch added the map.
    assert_eq!(pod["metadata"]["annotations"], json!({"weft.io/connect-inject-status": "injected"}));
    let (_, sidecar) = init_container(&pod, "weft-sidecar").unwrap();
    assert_eq!(env(sidecar, "WEFT_SERVICE_NAME"), Some(&json!("checkout")));
    assert_eq!(env(sidecar, "WEFT_SERVICE_PORT"), Some(&json!("3000")));
    assert_eq!(env(sidecar, "WEFT_SERVICE_UPSTREAMS"), Some(&json!("")));
    webhook.stop().await.unwrap();
}

#[tokio::test]
async fn bad_upstreams_admit_the_pod_unchanged_with_warnings() {
    let webhook = Webhook::start(inject_config()).await;
    let review = webhook.review_fixture("bad-upstreams").await;
    assert_eq!(review["response"]["uid"], json!("e2a9c7f1-6b4d-4c8e-a3f5-0d1b2c3e4f57"));
    assert_eq!(
        assert_unchanged(&review),
        [
            "Weft sidecar not injected: weft.io/connect-service-upstreams: \"99999\" is not a port number (1-65535)",
            "Weft sidecar not injected: weft.io/connect-service-upstreams: upstream \"api\" is listed twice",
        ]
    );
    webhook.stop().await.unwrap();
}

#[tokio::test]
async fn host_network_pods_are_not_injected() {
    let webhook = Webhook::start(InjectConfig { inject_by_default: true, ..inject_config() }).await;
    let warnings = assert_unchanged(&webhook.review_fixture("host-network").await);
    assert_eq!(
        warnings,
        ["Weft sidecar not injected: a hostNetwork pod shares the node's network and cannot have a sidecar"]
    );
    webhook.stop().await.unwrap();
}

#[tokio::test]
async fn existing_init_containers_volumes_and_annotations_are_kept() {
    let webhook = Webhook::start(inject_config()).await;
    let review = webhook.review_fixture("existing-init-containers").await;
    let original = fixture("existing-init-containers")["request"]["object"].clone();
    let pod = patched_pod("existing-init-containers", &review);
    assert_consistent(&pod);
    assert_eq!(init_container_names(&pod), ["weft-sidecar", "init-permissions"]);
    assert_eq!(pod["spec"]["initContainers"][1], original["spec"]["initContainers"][0]);
    assert_eq!(volume_names(&pod), ["data", "kube-api-access-8xq2d", "weft-data"]);
    let annotations = pod["metadata"]["annotations"].as_object().unwrap();
    assert_eq!(annotations.len(), original["metadata"]["annotations"].as_object().unwrap().len() + 1);
    assert_eq!(annotations["prometheus.io/scrape"], json!("true"));
    assert_eq!(annotations["weft.io/connect-inject-status"], json!("injected"));

    // The named port, not the first container's (the exporter's 9187).
    let (_, sidecar) = init_container(&pod, "weft-sidecar").unwrap();
    assert_eq!(env(sidecar, "WEFT_SERVICE_NAME"), Some(&json!("orders-db")));
    assert_eq!(env(sidecar, "WEFT_SERVICE_PORT"), Some(&json!("5432")));
    webhook.stop().await.unwrap();
}

#[tokio::test]
async fn transparent_proxying_puts_the_redirect_first() {
    let webhook = Webhook::start(inject_config()).await;
    let review = webhook.review_fixture("transparent-proxy").await;
    let pod = patched_pod("transparent-proxy", &review);
    assert_consistent(&pod);
    assert_eq!(init_container_names(&pod), ["weft-init", "weft-sidecar"], "the redirect, then the proxy");
    let warnings = review["response"]["warnings"].as_array().cloned().unwrap_or_default();
    assert!(warnings.is_empty(), "{review}");
    let (_, init) = init_container(&pod, "weft-init").unwrap();
    assert_eq!(init["args"].as_array().unwrap()[..2], [json!("k8s"), json!("redirect-traffic")]);
    // The pod mounted no service account token, so it had no volumes.
    assert_eq!(pod["spec"]["volumes"], json!([{"name": "weft-data", "emptyDir": {}}]));
    let (_, sidecar) = init_container(&pod, "weft-sidecar").unwrap();
    assert_eq!(sidecar["securityContext"]["runAsUser"], json!(5995));
    assert_eq!(env(sidecar, "WEFT_TRANSPARENT_PROXY"), Some(&json!("true")));
    assert_eq!(env(sidecar, "WEFT_SERVICE_PORT"), Some(&json!("8443")));
    webhook.stop().await.unwrap();
}

#[tokio::test]
async fn reviews_are_served_over_http2_too() {
    let webhook = Webhook::start(inject_config()).await;
    let body = support::fixture_bytes("deployment-annotated");
    let over_h1 = webhook.request(Http::One, Method::POST, "/mutate", body.clone()).await;
    let over_h2 = webhook.request(Http::Two, Method::POST, "/mutate", body).await;
    assert_eq!(over_h2.status, StatusCode::OK);
    assert_eq!(over_h1.body, over_h2.body);
    webhook.stop().await.unwrap();
}

#[tokio::test]
async fn bodies_that_are_not_v1_reviews_are_answered_400() {
    let webhook = Webhook::start(inject_config()).await;
    let v1beta1 = {
        let mut review = fixture("deployment-annotated");
        review["apiVersion"] = json!("admission.k8s.io/v1beta1");
        review
    };
    let conversion = {
        let mut review = fixture("deployment-annotated");
        review["kind"] = json!("ConversionReview");
        review
    };
    let cases = [
        (b"{\"kind\": ".to_vec(), "not a JSON AdmissionReview"),
        (serde_json::to_vec(&v1beta1).unwrap(), "speaks admission.k8s.io/v1 only"),
        (serde_json::to_vec(&conversion).unwrap(), "expected AdmissionReview"),
        (br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#.to_vec(), "carries no request"),
    ];
    for (body, message) in cases {
        let answer = webhook.mutate(body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        let text = String::from_utf8_lossy(&answer.body);
        assert!(text.contains(message), "{text:?} should say {message:?}");
    }
    webhook.stop().await.unwrap();
}

#[tokio::test]
async fn bodies_over_the_limit_are_answered_413() {
    let webhook = Webhook::start(inject_config()).await;
    let mut review = fixture("deployment-annotated");
    review["request"]["object"]["metadata"]["annotations"]["padding"] = json!("x".repeat(5 * 1024 * 1024));
    let answer = webhook.mutate(serde_json::to_vec(&review).unwrap()).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    webhook.stop().await.unwrap();
}

#[tokio::test]
async fn health_answers_and_other_routes_do_not() {
    let webhook = Webhook::start(inject_config()).await;
    let health = webhook.request(Http::One, Method::GET, "/health", Vec::new()).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(&health.body[..], b"ok\n");
    let get_mutate = webhook.request(Http::One, Method::GET, "/mutate", Vec::new()).await;
    assert_eq!(get_mutate.status, StatusCode::METHOD_NOT_ALLOWED);
    let unknown = webhook.request(Http::One, Method::POST, "/validate", Vec::new()).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    webhook.stop().await.unwrap();
}

#[tokio::test]
async fn unusable_settings_fail_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let missing = WebhookConfig {
        tls_cert_file: dir.path().join("tls.crt"),
        tls_key_file: dir.path().join("tls.key"),
        inject: inject_config(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = weft_k8s::run(missing.clone(), listener, std::future::pending()).await.unwrap_err();
    assert!(matches!(error, WebhookError::Tls(_)), "{error:?}");
    assert!(error.to_string().contains("tls.crt"), "{error}");

    support::write_certificates(dir.path());
    std::fs::write(dir.path().join("tls.key"), "not a key").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = weft_k8s::run(missing.clone(), listener, std::future::pending()).await.unwrap_err();
    assert!(error.to_string().contains("no PEM private key"), "{error}");

    let bad_inject =
        WebhookConfig { inject: InjectConfig { server_addr: "weft-server".into(), ..inject_config() }, ..missing };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = weft_k8s::run(bad_inject, listener, std::future::pending()).await.unwrap_err();
    assert!(matches!(error, WebhookError::Config(_)), "{error:?}");
}
