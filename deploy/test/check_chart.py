#!/usr/bin/env python3
"""Renders the Weft Helm chart for a set of values and checks what comes out.

Run by deploy/test/helm.sh, which builds the renderer (deploy/helm/render, a
stand-in for `helm template`) and provides a Python with PyYAML and
kubernetes-validate. Each scenario renders the chart with some overrides and
checks the facts that make the deployment work (the servers find each other,
the webhook's certificate is the one its caBundle vouches for, selectors
select, ...); then every object is validated against the Kubernetes OpenAPI
schemas in strict mode, so an unknown or misspelt field fails. Scenarios that
must be refused are checked for their error message.

With --weft, the real `weft k8s webhook` is also started with each rendered
injector's arguments and certificate, and called as the API server would
call it (TLS to the Service's name, trusting only the caBundle); and two
servers and a client agent run with the rendered servers' and mesh gateway
agent's config files and RPC TLS files, and must form a cluster over TLS.
With ACLs (the default), the rendered ACL Job's commands run against those
servers with the rendered management token, the auth method they make
fetches its keys from a local HTTPS JWKS endpoint, and the gateway's agent
logs in and enrolls with a service-account JWT signed by it, and the
gateway registers and gets its configuration with that login.

Ends with "N passed, N failed" and exits 1 if anything failed.
"""

import argparse
import base64
import http.client
import http.server
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import yaml

try:
    import kubernetes_validate
except ImportError:  # helm.sh always provides it; running by hand may not
    kubernetes_validate = None

CHART_VERSION = None  # from Chart.yaml, set in main()
APP_VERSION = None

# Kinds that live in a namespace; everything else the chart makes is cluster-scoped.
NAMESPACED = {"ConfigMap", "Deployment", "Job", "PodDisruptionBudget", "Secret", "Service",
              "ServiceAccount", "StatefulSet"}
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class CheckFailed(Exception):
    pass


def expect(cond, message):
    if not cond:
        raise CheckFailed(message)


def expect_eq(actual, wanted, what):
    if actual != wanted:
        raise CheckFailed(f"{what}: got {actual!r}, want {wanted!r}")


class Rendered:
    """The objects of one render, and lookups over them."""

    def __init__(self, objects, release, namespace):
        self.objects = objects
        self.release = release
        self.namespace = namespace

    def all(self, kind):
        return [o for o in self.objects if o["kind"] == kind]

    def find(self, kind, name=None):
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        expect(len(found) == 1, f"want exactly one {kind} {name or ''}, found {len(found)}")
        return found[0]


# ---------------------------------------------------------------- helpers

def container(workload, name):
    for c in workload["spec"]["template"]["spec"]["containers"]:
        if c["name"] == name:
            return c
    raise CheckFailed(f"{workload['kind']} {workload['metadata']['name']} has no container {name}")


def flags(args):
    """Parses `--key=value` / bare `--flag` arguments into {key: [values]}."""
    out = {}
    for a in args:
        if a.startswith("--"):
            key, _, value = a[2:].partition("=")
            out.setdefault(key, []).append(value if "=" in a else True)
    return out


def one_flag(parsed, key):
    values = parsed.get(key, [])
    expect(len(values) == 1, f"want --{key} once, found {values!r}")
    return values[0]


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def port_number(c, port):
    """Resolves a (possibly named) container port."""
    if isinstance(port, int):
        return port
    for p in c.get("ports", []):
        if p["name"] == port:
            return p["containerPort"]
    raise CheckFailed(f"container {c['name']} has no port named {port!r}")


def openssl(*args, stdin=None):
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, text=True)


# A certificate, its key, and the CA certificate that verifies it: the only
# files a pod is given from a TLS Secret. No Secret holds a CA's private key.
MOUNTABLE_SECRET_KEYS = {"ca.crt", "tls.crt", "tls.key"}

# ACLs: the Secret with the generated management token and the servers' acl
# config file holding it, which only the servers mount (and the ACL Job
# reads the token into its environment).
MANAGEMENT_TOKEN_KEYS = {"token", "acl.json"}
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
# The audience of the service-account tokens agents log in with (the
# injector's), and where they are mounted (as in injected pods).
ACL_AUDIENCE = "weft"
ACL_TOKEN_DIR = "/var/run/secrets/weft/serviceaccount"
DEFAULT_ISSUER = "https://kubernetes.default.svc.cluster.local"
IN_CLUSTER_JWKS = "https://kubernetes.default.svc/openid/v1/jwks"
# The ConfigMap Kubernetes publishes in every namespace: the cluster's CA.
KUBE_ROOT_CA = "kube-root-ca.crt"


def component(o):
    return o["metadata"].get("labels", {}).get("app.kubernetes.io/component")


def volume_sources(v):
    """The (kind, source) pairs a volume draws from: itself, or each source
    of a projected volume (kind configMap, secret or serviceAccountToken)."""
    if "projected" in v:
        return [(kind, src[kind]) for src in v["projected"]["sources"] for kind in src]
    return [(kind, v[kind]) for kind in ("configMap", "secret", "emptyDir") if kind in v]


def source_name(kind, src):
    return src.get("secretName", src.get("name")) if kind == "secret" else src.get("name")


def public_key(pem, private=False):
    """The PEM public key of a certificate or a private key (openssl)."""
    out = openssl("pkey", "-pubout", stdin=pem) if private else openssl("x509", "-noout", "-pubkey", stdin=pem)
    expect(out.returncode == 0, f"openssl cannot read {'a private key' if private else 'a certificate'}: {out.stderr}")
    return out.stdout


def check_management_secret(secret):
    """The management token's Secret: a UUIDv4, and the servers' acl config
    file making it (ACLs on, deny by default), nothing else. Returns it."""
    sname = f"Secret {secret['metadata']['name']}"
    expect_eq(secret.get("type"), "Opaque", f"{sname} type")
    data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    expect_eq(sorted(data), sorted(MANAGEMENT_TOKEN_KEYS), f"{sname} keys")
    token = data["token"]
    expect(UUID4.match(token), f"{sname}: the management token {token!r} is not a UUIDv4")
    expect_eq(json.loads(data["acl.json"]), {"acl": {
        "enabled": True, "default_policy": "deny", "enable_token_persistence": True,
        "tokens": {"initial_management": token}}}, f"{sname}: the servers' acl.json")
    return token


def check_secrets(r):
    """Every TLS Secret the chart makes holds a CA certificate, a certificate
    it signed and that certificate's own key: no CA key, nothing else; the
    only other Secret is the management token's."""
    for secret in r.all("Secret"):
        sname = f"Secret {secret['metadata']['name']}"
        if secret["metadata"]["name"].endswith("-management-token"):
            check_management_secret(secret)
            continue
        data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
        expect_eq(sorted(data), sorted(MOUNTABLE_SECRET_KEYS), f"{sname} keys")
        expect_eq(secret.get("type"), "kubernetes.io/tls", f"{sname} type")
        for key, pem in data.items():
            is_key = "PRIVATE KEY-----" in pem
            expect(is_key == (key == "tls.key"), f"{sname}: {key} {'is' if is_key else 'is not'} a private key")
        if shutil.which("openssl"):
            key_pub = public_key(data["tls.key"], private=True)
            expect_eq(key_pub, public_key(data["tls.crt"]), f"{sname}: tls.key vs tls.crt public key")
            expect(key_pub != public_key(data["ca.crt"]), f"{sname}: tls.key is the CA's key")
            with tempfile.TemporaryDirectory() as d:
                for fname in ("ca.crt", "tls.crt"):
                    with open(os.path.join(d, fname), "w") as fh:
                        fh.write(data[fname])
                v = openssl("verify", "-CAfile", os.path.join(d, "ca.crt"), os.path.join(d, "tls.crt"))
                expect(v.returncode == 0, f"{sname}: tls.crt does not verify against ca.crt: {v.stdout}{v.stderr}")


def cert_extension(pem, name):
    """The values of a certificate extension (openssl -ext), e.g. subjectAltName."""
    text = openssl("x509", "-noout", "-ext", name, stdin=pem).stdout
    return {value.strip() for line in text.splitlines()[1:] for value in line.split(",")}


def secret_files(pod, c):
    """{path in the container: (Secret name, key)} for the Secret files `c`
    mounts, from Secret volumes and the Secret sources of projected ones."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    files = {}
    for m in c.get("volumeMounts", []):
        for kind, src in volume_sources(volumes.get(m["name"], {})):
            if kind == "secret":
                for item in src["items"]:
                    files[f"{m['mountPath'].rstrip('/')}/{item['path']}"] = (source_name(kind, src), item["key"])
    return files


def token_volume(pod, c, mount_path):
    """The projected service-account token volume `c` mounts at `mount_path`
    (its serviceAccountToken source), or None."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        if m["mountPath"] == mount_path:
            sources = volume_sources(volumes.get(m["name"], {}))
            tokens = [src for kind, src in sources if kind == "serviceAccountToken"]
            expect(len(tokens) == 1 and len(sources) == 1, f"{c['name']}: {mount_path} is not one service-account token")
            expect(m.get("readOnly") is True, f"{c['name']}: {mount_path} is writable")
            return tokens[0]
    return None


# ---------------------------------------------------------------- checks

def check_common(r, image, pull_policy="IfNotPresent", external_secrets=()):
    """What every render must satisfy, whatever the values. `external_secrets`
    are Secrets the values name (existingSecret) rather than the chart makes."""
    seen = set()
    for o in r.objects:
        kind, meta = o["kind"], o["metadata"]
        name = meta["name"]
        expect((kind, name) not in seen, f"{kind} {name} rendered twice")
        seen.add((kind, name))
        expect(len(name) <= 253 and DNS1123_SUBDOMAIN.match(name), f"{kind} name {name!r} is not a DNS subdomain")
        if kind in ("Service", "StatefulSet"):
            # Service names are DNS labels; StatefulSet names become pod host names.
            expect(len(name) <= 63 and DNS1035_LABEL.match(name), f"{kind} name {name!r} is not a DNS label")
        if kind in NAMESPACED:
            expect_eq(meta.get("namespace"), r.namespace, f"{kind} {name} namespace")
        else:
            expect("namespace" not in meta, f"cluster-scoped {kind} {name} has a namespace")
        labels = meta.get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                    "app.kubernetes.io/managed-by", "helm.sh/chart"):
            expect(key in labels, f"{kind} {name} lacks label {key}")
        expect_eq(labels["app.kubernetes.io/instance"], r.release, f"{kind} {name} instance label")
        expect_eq(labels["app.kubernetes.io/version"], APP_VERSION, f"{kind} {name} version label")
        expect_eq(labels["app.kubernetes.io/managed-by"], "Helm", f"{kind} {name} managed-by label")
        expect_eq(labels["helm.sh/chart"], f"weft-{CHART_VERSION}", f"{kind} {name} chart label")
        for k, v in labels.items():
            expect(isinstance(v, str) and len(v) <= 63 and LABEL_VALUE.match(v), f"{kind} {name} label {k}={v!r} is not a valid label value")

    accounts = {o["metadata"]["name"] for o in r.all("ServiceAccount")}
    config_maps = {o["metadata"]["name"] for o in r.all("ConfigMap")}
    secrets = {o["metadata"]["name"] for o in r.all("Secret")} | set(external_secrets)
    check_secrets(r)
    management = {o["metadata"]["name"] for o in r.all("Secret") if o["metadata"]["name"].endswith("-management-token")}
    workloads = r.all("StatefulSet") + r.all("Deployment") + r.all("Job")
    for w in workloads:
        wname = f"{w['kind']} {w['metadata']['name']}"
        template = w["spec"]["template"]
        if w["kind"] != "Job":  # a Job's selector is made by Kubernetes
            expect(selects(w["spec"]["selector"]["matchLabels"], template["metadata"]["labels"]),
                   f"{wname}: selector does not select its own pods")
        pod = template["spec"]
        expect(pod.get("serviceAccountName") in accounts, f"{wname}: service account {pod.get('serviceAccountName')!r} is not rendered")
        expect(pod.get("automountServiceAccountToken") is False, f"{wname}: mounts an API token it does not need")
        expect(pod["securityContext"].get("runAsNonRoot") is True, f"{wname}: pod may run as root")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in w["spec"].get("volumeClaimTemplates", [])}
        for v in volumes.values():
            for kind, src in volume_sources(v):
                name = source_name(kind, src)
                if kind == "configMap":
                    expect(name in config_maps or name == KUBE_ROOT_CA, f"{wname}: volume {v['name']} names a ConfigMap not rendered")
                    if name == KUBE_ROOT_CA:
                        expect_eq(src.get("items"), [{"key": "ca.crt", "path": "ca.crt"}], f"{wname}: files of {KUBE_ROOT_CA}")
                if kind == "serviceAccountToken":
                    # For Weft's auth method alone: never one the API server takes.
                    expect_eq(src.get("audience"), ACL_AUDIENCE, f"{wname}: volume {v['name']} token audience")
                if kind != "secret":
                    continue
                expect(name in secrets, f"{wname}: volume {v['name']} names a Secret not rendered")
                # Only named files, so a CA key that a Secret brought by the
                # user may hold never reaches a pod.
                items = src.get("items")
                expect(items, f"{wname}: volume {v['name']} mounts every key of Secret {name}")
                allowed = MANAGEMENT_TOKEN_KEYS if name in management else MOUNTABLE_SECRET_KEYS
                for item in items:
                    expect(item["key"] in allowed,
                           f"{wname}: volume {v['name']} mounts {item['key']!r}, which is not one of {sorted(allowed)}")
                # The management token reaches the servers alone.
                expect(name not in management or component(w) == "server", f"{wname} mounts the management token")
        # Init containers (the mesh gateway's native sidecar agent) are Weft containers too.
        for c in pod.get("initContainers", []) + pod["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    expect(ref["name"] in secrets, f"{wname} container {c['name']}: env {e['name']} names a Secret not rendered")
                    # The ACL Job's token alone comes from the environment.
                    expect(ref["name"] in management and ref["key"] == "token" and component(w) == "acl",
                           f"{wname} container {c['name']}: env {e['name']} from Secret {ref['name']} key {ref['key']}")
            cname = f"{wname} container {c['name']}"
            expect_eq(c["image"], image, f"{cname} image")
            expect_eq(c["imagePullPolicy"], pull_policy, f"{cname} imagePullPolicy")
            sc = c.get("securityContext", {})
            expect(sc.get("runAsNonRoot") is True, f"{cname}: runAsNonRoot is not set")
            expect(sc.get("readOnlyRootFilesystem") is True, f"{cname}: root filesystem is writable")
            expect(sc.get("allowPrivilegeEscalation") is False, f"{cname}: privilege escalation allowed")
            expect_eq(sc.get("capabilities", {}).get("drop"), ["ALL"], f"{cname} dropped capabilities")
            expect("add" not in sc.get("capabilities", {}), f"{cname}: adds capabilities")
            expect(c.get("resources", {}).get("requests") and c["resources"].get("limits"), f"{cname}: no resource requests and limits")
            for m in c.get("volumeMounts", []):
                expect(m["name"] in volumes or m["name"] in claims, f"{cname}: mounts unknown volume {m['name']}")
            for probe in ("readinessProbe", "livenessProbe"):
                p = c.get(probe, {})
                for how in ("tcpSocket", "httpGet"):
                    if how in p:
                        port_number(c, p[how]["port"])

    # Every Service selects the pods of exactly one workload, on ports they have.
    for s in r.all("Service"):
        sname = f"Service {s['metadata']['name']}"
        matching = [w for w in workloads if selects(s["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])]
        expect(len(matching) == 1, f"{sname} selects {len(matching)} workloads")
        pod_containers = matching[0]["spec"]["template"]["spec"]["containers"]
        for p in s["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            ok = any(any(cp.get("name") == target or cp["containerPort"] == target
                         for cp in c.get("ports", []) if cp.get("protocol", "TCP") == p.get("protocol", "TCP"))
                     for c in pod_containers)
            expect(ok, f"{sname} port {p['name']}: no container port {target!r}/{p.get('protocol', 'TCP')}")


def check_servers(r, fullname, replicas, datacenter="dc1", domain="weft", anti_affinity="required",
                  pdb=True, storage_class=None, size="10Gi", verify_incoming=None, tls_secret=None, acl=True):
    """The servers; with `acl`, also their acl config file and management
    token. verify_incoming defaults to `acl`, as the chart's does."""
    if verify_incoming is None:
        verify_incoming = acl
    server = f"{fullname}-server"
    ns = r.namespace
    sts = r.find("StatefulSet", server)
    spec = sts["spec"]
    expect_eq(spec["replicas"], replicas, "StatefulSet replicas")
    expect_eq(spec["serviceName"], server, "StatefulSet serviceName")
    # OrderedReady would deadlock: server-0 is not Ready until a leader exists.
    expect_eq(spec.get("podManagementPolicy"), "Parallel", "podManagementPolicy")

    c = container(sts, "weft")
    expect_eq(c["command"], ["weft"], "server command")
    expect_eq(c["args"][:2], ["agent", "--server"], "server subcommand")
    f = flags(c["args"])
    expect_eq(one_flag(f, "bootstrap-expect"), str(replicas), "--bootstrap-expect")
    joins = f.get("retry-join", [])
    expect_eq(joins, [f"{server}-{i}.{server}.{ns}.svc:8300" for i in range(replicas)], "--retry-join list")
    expect_eq(len(joins), spec["replicas"], "retry-joins vs replicas")
    expect_eq(one_flag(f, "advertise"), "$(POD_IP)", "--advertise")
    expect_eq(one_flag(f, "bind"), "0.0.0.0", "--bind")
    expect_eq(one_flag(f, "client"), "0.0.0.0", "--client")
    expect_eq(one_flag(f, "data-dir"), "/weft/data", "--data-dir")
    expect_eq(one_flag(f, "datacenter"), datacenter, "--datacenter")
    expect_eq(one_flag(f, "domain"), domain, "--domain")
    expect_eq(one_flag(f, "node"), "$(POD_NAME)", "--node")
    env = {e["name"]: e for e in c.get("env", [])}
    expect_eq(env.get("POD_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath"), "status.podIP", "POD_IP from the Downward API")
    expect_eq(env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath"), "metadata.name", "POD_NAME from the Downward API")

    # The data directory is on the claim, the config directory holds the ConfigMap.
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    claims = {t["metadata"]["name"]: t for t in spec["volumeClaimTemplates"]}
    expect(mounts.get("/weft/data") in claims, "/weft/data is not on a volumeClaimTemplate")
    claim = claims[mounts["/weft/data"]]["spec"]
    expect_eq(claim["resources"]["requests"]["storage"], size, "data volume size")
    expect_eq(claim.get("storageClassName"), storage_class, "storageClassName")
    config_dir = one_flag(f, "config-dir")
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    expect(config_dir in mounts, "--config-dir is not mounted")
    config_volume = volumes[mounts[config_dir]]
    management = f"{fullname}-management-token"
    if acl:
        # The ConfigMap's files and the acl block, which holds the token, from its Secret.
        expect_eq(volume_sources(config_volume), [
            ("configMap", {"name": f"{server}-config"}),
            ("secret", {"name": management, "items": [{"key": "acl.json", "path": "acl.json"}]}),
        ], "--config-dir: the ConfigMap and the acl config file")
    else:
        expect_eq(volume_sources(config_volume), [("configMap", {"name": f"{server}-config"})], "--config-dir: the ConfigMap")
    cm = r.find("ConfigMap", f"{server}-config")
    expect(all(k.endswith(".json") for k in cm["data"]), "config files must be .json (or .hcl) to be read")
    expect("acl.json" not in cm["data"], "the acl config file (with the management token) is in a ConfigMap")

    # TLS on RPC: rpc-tls.json names the files of the TLS Secret, mounted
    # where it says, and the servers verify each other.
    expect("rpc-tls.json" in cm["data"], "the servers' config directory has no rpc-tls.json")
    tls = json.loads(cm["data"]["rpc-tls.json"])
    expect_eq(list(tls), ["tls"], "rpc-tls.json settings")
    defaults = tls["tls"].get("defaults", {})
    expect_eq(defaults.get("verify_incoming"), verify_incoming, "servers' tls verify_incoming")
    expect(defaults.get("verify_outgoing") is True, "servers' tls verify_outgoing is not true")
    expect(tls["tls"].get("internal_rpc", {}).get("verify_server_hostname") is True,
           "servers' tls internal_rpc verify_server_hostname is not true")
    files = secret_files(spec["template"]["spec"], c)
    secret_name = tls_secret or f"{server}-tls"
    for setting, key in (("ca_file", "ca.crt"), ("cert_file", "tls.crt"), ("key_file", "tls.key")):
        expect_eq(files.get(defaults.get(setting)), (secret_name, key), f"the file servers' tls {setting} names")
    wanted_files = [(secret_name, k) for k in ("ca.crt", "tls.crt", "tls.key")]
    token_file = env.get("WEFT_HTTP_TOKEN_FILE", {}).get("value")
    if acl:
        wanted_files += [(management, "acl.json"), (management, "token")]
        expect_eq(files.get(f"{config_dir}/acl.json"), (management, "acl.json"), "the servers' acl.json")
        # The readiness probe's list-peers (operator:read) and `kubectl
        # exec ... weft` read the management token from its file.
        expect_eq(files.get(token_file), (management, "token"), "the file WEFT_HTTP_TOKEN_FILE names")
        check_management_secret(r.find("Secret", management))
    else:
        expect(token_file is None, "WEFT_HTTP_TOKEN_FILE without ACLs")
        expect_eq([o for o in r.all("Secret") if o["metadata"]["name"] == management], [], "the management token without ACLs")
    expect_eq(sorted(files.values()), sorted(wanted_files), "Secret files the servers mount")
    if tls_secret is None:
        check_server_certificate(r.find("Secret", secret_name), f"server.{datacenter}.{domain}", server, ns)
    else:
        expect_eq([o["metadata"]["name"] for o in r.all("Secret") if o["metadata"]["name"] == f"{server}-tls"], [],
                  "generated server TLS Secrets with server.tls.existingSecret")

    expect_eq(c["readinessProbe"].get("exec", {}).get("command"),
              ["weft", "operator", "raft", "list-peers", "--http-addr", "127.0.0.1:8500"], "readiness probe")
    expect_eq(port_number(c, c["livenessProbe"]["tcpSocket"]["port"]), 8500, "liveness tcpSocket port")

    pod_labels = spec["template"]["metadata"]["labels"]
    affinity = spec["template"]["spec"].get("affinity", {}).get("podAntiAffinity", {})
    if anti_affinity == "required":
        terms = affinity.get("requiredDuringSchedulingIgnoredDuringExecution", [])
        expect(len(terms) == 1 and "preferredDuringSchedulingIgnoredDuringExecution" not in affinity, "want one required anti-affinity term")
        term = terms[0]
    elif anti_affinity == "preferred":
        terms = affinity.get("preferredDuringSchedulingIgnoredDuringExecution", [])
        expect(len(terms) == 1 and "requiredDuringSchedulingIgnoredDuringExecution" not in affinity, "want one preferred anti-affinity term")
        term = terms[0]["podAffinityTerm"]
    else:
        term = None
        expect(not affinity, "want no anti-affinity")
    if term:
        expect_eq(term["topologyKey"], "kubernetes.io/hostname", "anti-affinity topologyKey")
        expect(selects(term["labelSelector"]["matchLabels"], pod_labels), "anti-affinity does not select the servers")

    headless = r.find("Service", server)
    expect_eq(headless["spec"].get("clusterIP"), "None", "headless Service clusterIP")
    expect(headless["spec"].get("publishNotReadyAddresses") is True, "headless Service must publish not-ready servers")
    expect(any(p["port"] == 8300 for p in headless["spec"]["ports"]), "headless Service lacks RPC 8300")

    client = r.find("Service", fullname)
    expect_eq(client["spec"].get("type"), "ClusterIP", "client Service type")
    expect_eq(sorted((p["port"], p.get("protocol", "TCP")) for p in client["spec"]["ports"]),
              [(8500, "TCP"), (8600, "TCP"), (8600, "UDP")], "client Service ports")
    expect(selects(client["spec"]["selector"], pod_labels), "client Service does not select the servers")

    pdbs = r.all("PodDisruptionBudget")
    if pdb:
        expect_eq(len(pdbs), 1, "PodDisruptionBudgets")
        expect_eq(pdbs[0]["spec"].get("maxUnavailable"), 1, "PDB maxUnavailable")
        expect(selects(pdbs[0]["spec"]["selector"]["matchLabels"], pod_labels), "PDB does not select the servers")
    else:
        expect_eq(pdbs, [], "PodDisruptionBudgets")
    return cm


def check_server_certificate(secret, server_name, server, ns):
    """The generated server certificate carries the name agents and servers
    check, the servers' DNS names, and both usages: servers present it when
    they serve and when they dial each other."""
    expect_eq(secret["metadata"].get("annotations", {}).get("weft.io/server-name"), server_name,
              "the server TLS Secret's weft.io/server-name")
    if not shutil.which("openssl"):
        print("    (openssl not found: server certificate not inspected)")
        return
    crt = base64.b64decode(secret["data"]["tls.crt"]).decode()
    sans = cert_extension(crt, "subjectAltName")
    for name in (server_name, "localhost", f"{server}.{ns}.svc", f"*.{server}.{ns}.svc"):
        expect(f"DNS:{name}" in sans, f"the server certificate does not name {name}: {sorted(sans)}")
    usages = cert_extension(crt, "extendedKeyUsage")
    expect({"TLS Web Server Authentication", "TLS Web Client Authentication"} <= usages,
           f"the server certificate is not for both serverAuth and clientAuth: {sorted(usages)}")


def check_injector(r, fullname, image, transparent_proxy=False, require_label=False, inject_by_default=False,
                   network="", tls_secret=None, acl_method="k8s"):
    name = f"{fullname}-connect-injector"
    ns = r.namespace
    dep = r.find("Deployment", name)
    c = container(dep, "connect-injector")
    expect_eq(c["command"], ["weft"], "injector command")
    wanted = ["k8s", "webhook", "--listen=0.0.0.0:8443",
              "--tls-cert-file=/etc/weft/webhook/tls.crt", "--tls-key-file=/etc/weft/webhook/tls.key",
              f"--agent-image={image}", f"--server-addr={fullname}-server.{ns}.svc:8300",
              "--server-ca-file=/etc/weft/server-ca/ca.crt"]
    if transparent_proxy:
        wanted.append("--transparent-proxy")
    if inject_by_default:
        wanted.append("--inject-by-default")
    if network:
        wanted.append(f"--network={network}")
    if acl_method:
        # Injected agents log in and enroll with their service-account token.
        wanted.append(f"--acl-auth-method={acl_method}")
    expect_eq(c["args"], wanted, "injector args")
    expect_eq(port_number(c, "https"), 8443, "injector port")
    for probe in ("readinessProbe", "livenessProbe"):
        get = c[probe]["httpGet"]
        expect_eq((get["path"], get["scheme"], port_number(c, get["port"])), ("/health", "HTTPS", 8443), f"injector {probe}")

    # The files the flags name come from the Secret, mounted where they point.
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/etc/weft/webhook")
    volume = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    secret = r.find("Secret", volume["secret"]["secretName"])
    expect_eq(secret.get("type"), "kubernetes.io/tls", "webhook Secret type")
    expect_eq(sorted(i["path"] for i in volume["secret"]["items"]), ["tls.crt", "tls.key"], "mounted TLS files")
    # Its own certificate and key, and of the servers' Secret the RPC CA
    # alone (--server-ca-file), which it hands to the agents it injects.
    expect_eq(secret_files(dep["spec"]["template"]["spec"], c), {
        "/etc/weft/webhook/tls.crt": (f"{name}-tls", "tls.crt"),
        "/etc/weft/webhook/tls.key": (f"{name}-tls", "tls.key"),
        "/etc/weft/server-ca/ca.crt": (tls_secret or f"{fullname}-server-tls", "ca.crt"),
    }, "Secret files the injector mounts")

    svc = r.find("Service", name)
    expect_eq([(p["port"], port_number(c, p["targetPort"])) for p in svc["spec"]["ports"]], [(443, 8443)], "webhook Service ports")

    mwcs = r.all("MutatingWebhookConfiguration")
    expect_eq(len(mwcs), 1, "MutatingWebhookConfigurations")
    hooks = mwcs[0]["webhooks"]
    expect_eq(len(hooks), 1, "webhooks")
    hook = hooks[0]
    expect_eq(hook["admissionReviewVersions"], ["v1"], "admissionReviewVersions")
    expect_eq(hook["sideEffects"], "None", "sideEffects")
    expect_eq(hook["failurePolicy"], "Ignore", "failurePolicy")
    expect_eq(hook["timeoutSeconds"], 10, "timeoutSeconds")
    expect_eq(hook["rules"], [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                               "resources": ["pods"], "scope": "Namespaced"}], "webhook rules")
    expect_eq(hook["clientConfig"]["service"], {"name": name, "namespace": ns, "path": "/mutate", "port": 443}, "webhook service")
    exprs = hook["namespaceSelector"]["matchExpressions"]
    excluded = [e for e in exprs if e["key"] == "kubernetes.io/metadata.name"]
    expect(len(excluded) == 1 and excluded[0]["operator"] == "NotIn"
           and {"kube-system", ns} <= set(excluded[0]["values"]), "namespaceSelector must exclude kube-system and the release namespace")
    inject = [e for e in exprs if e["key"] == "weft.io/inject"]
    if require_label:
        expect_eq(inject, [{"key": "weft.io/inject", "operator": "In", "values": ["enabled"]}], "namespace opt-in")
    else:
        expect_eq(inject, [{"key": "weft.io/inject", "operator": "NotIn", "values": ["disabled"]}], "namespace opt-out")

    # The caBundle is the CA in the Secret, and that CA signed the serving
    # certificate for the name the API server dials.
    ca_b64 = hook["clientConfig"]["caBundle"]
    expect_eq(ca_b64, secret["data"]["ca.crt"], "caBundle vs the Secret's ca.crt")
    ca = base64.b64decode(ca_b64).decode()
    crt = base64.b64decode(secret["data"]["tls.crt"]).decode()
    key = base64.b64decode(secret["data"]["tls.key"]).decode()
    for what, pem in (("ca.crt", ca), ("tls.crt", crt)):
        expect(pem.startswith("-----BEGIN CERTIFICATE-----"), f"{what} is not a PEM certificate")
    expect("PRIVATE KEY-----" in key, "tls.key is not a PEM private key")
    if shutil.which("openssl"):
        with tempfile.TemporaryDirectory() as d:
            for fname, pem in (("ca.crt", ca), ("tls.crt", crt)):
                with open(os.path.join(d, fname), "w") as fh:
                    fh.write(pem)
            v = openssl("verify", "-CAfile", os.path.join(d, "ca.crt"), os.path.join(d, "tls.crt"))
            expect(v.returncode == 0, f"tls.crt does not verify against ca.crt: {v.stdout}{v.stderr}")
            text = openssl("x509", "-noout", "-ext", "subjectAltName", "-in", os.path.join(d, "tls.crt")).stdout
            sans = {san.strip() for line in text.splitlines()[1:] for san in line.split(",")}
            expect(f"DNS:{name}.{ns}.svc" in sans, f"serving certificate is not for {name}.{ns}.svc: {sorted(sans)}")
            cert_pub = openssl("x509", "-noout", "-pubkey", "-in", os.path.join(d, "tls.crt")).stdout
            key_pub = openssl("pkey", "-pubout", stdin=key).stdout
            expect(cert_pub and cert_pub == key_pub, "tls.key does not match tls.crt")
    else:
        print("    (openssl not found: certificate chain not verified)")


WEFT = None  # `weft` binary for the webhook smoke test (--weft); None skips it


def admission_review(uid, annotations):
    """What the API server sends for a Deployment's pod being created."""
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-", "namespace": "shop", "labels": {"app": "web"}, "annotations": annotations},
        "spec": {"containers": [{"name": "web", "image": "example/web:1", "ports": [{"containerPort": 8080}]}]},
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "shop", "operation": "CREATE", "object": pod}}


def named(value, name):
    """Every object named `name` in a JSON value (e.g. a container in a patch)."""
    if isinstance(value, dict):
        if value.get("name") == name:
            yield value
        for v in value.values():
            yield from named(v, name)
    elif isinstance(value, list):
        for v in value:
            yield from named(v, name)


def run_webhook(r, fullname, image, transparent_proxy=False, inject_by_default=False, acl_method="k8s"):
    """Runs the real `weft k8s webhook` with the rendered Deployment's
    arguments and the rendered Secret's files, and calls it as the API server
    would: over TLS to <service>.<namespace>.svc, trusting only the caBundle.
    With `acl_method`, the injected agent must log in with that auth method
    and a service-account token projected for Weft's audience."""
    if WEFT is None:
        return
    name = f"{fullname}-connect-injector"
    c = container(r.find("Deployment", name), "connect-injector")
    secret = r.find("Secret", f"{name}-tls")
    server_ca = base64.b64decode(r.find("Secret", f"{fullname}-server-tls")["data"]["ca.crt"]).decode()
    ca = base64.b64decode(r.all("MutatingWebhookConfiguration")[0]["webhooks"][0]["clientConfig"]["caBundle"]).decode()
    host = f"{name}.{r.namespace}.svc"
    with tempfile.TemporaryDirectory() as d:
        files = {}
        for key in ("tls.crt", "tls.key"):
            files[key] = os.path.join(d, key)
            with open(files[key], "wb") as fh:
                fh.write(base64.b64decode(secret["data"][key]))
        # The servers' ca.crt, as the injector's server-ca volume holds it.
        server_ca_file = os.path.join(d, "server-ca.crt")
        with open(server_ca_file, "w") as fh:
            fh.write(server_ca)
        with socket.socket() as probe:  # a free loopback port, instead of 0.0.0.0:8443
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        args = []
        for a in c["args"]:
            key, _, value = a.partition("=")
            if key == "--listen":
                a = f"--listen=127.0.0.1:{port}"
            elif key in ("--tls-cert-file", "--tls-key-file"):
                a = f"{key}={files[os.path.basename(value)]}"
            elif key == "--server-ca-file":
                a = f"{key}={server_ca_file}"
            args.append(a)
        log = open(os.path.join(d, "webhook.log"), "w+")
        proc = subprocess.Popen([WEFT, *args], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        context = ssl.create_default_context(cadata=ca)

        def call(method, path, body=None):
            conn = http.client.HTTPConnection(host, port, timeout=5)
            raw = socket.create_connection(("127.0.0.1", port), timeout=5)
            conn.sock = context.wrap_socket(raw, server_hostname=host)
            try:
                conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                return resp.status, resp.read()
            finally:
                conn.close()

        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    status, _ = call("GET", "/health")
                    break
                except (ConnectionError, OSError) as e:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        raise CheckFailed(f"webhook did not serve /health over TLS as {host}: {e}\n{log.read()}")
                    time.sleep(0.1)
            expect_eq(status, 200, "webhook /health status")

            def review(uid, annotations):
                status, body = call("POST", "/mutate", json.dumps(admission_review(uid, annotations)))
                expect_eq(status, 200, "webhook /mutate status")
                response = json.loads(body)["response"]
                expect(response["uid"] == uid and response["allowed"] is True, f"unexpected admission response {response}")
                review.warnings = response.get("warnings") or []
                return json.loads(base64.b64decode(response["patch"])) if "patch" in response else None

            patch = review("annotated", {"weft.io/connect-inject": "true", "weft.io/connect-service-upstreams": "api:9191"})
            expect(patch is not None, "an annotated pod was not injected")
            text = json.dumps(patch)
            expect(f'"{image}"' in text, f"the injected containers do not run {image}")
            expect(f"{fullname}-server.{r.namespace}.svc:8300" in text, "the injected agent does not join the servers")
            # The injected agent verifies the servers with their RPC CA: the
            # servers' Secret's ca.crt, in its environment.
            sidecars = list(named(patch, "weft-sidecar"))
            expect_eq(len(sidecars), 1, "injected weft-sidecar containers")
            ca_env = [e for e in sidecars[0].get("env", []) if e["name"] == "WEFT_SERVER_CA_PEM"]
            expect_eq(len(ca_env), 1, "WEFT_SERVER_CA_PEM in the injected sidecar's env")
            expect(ca_env[0].get("value") == server_ca, "the injected sidecar's WEFT_SERVER_CA_PEM is not the servers' ca.crt")
            # ACLs: the webhook took --acl-auth-method (it serves, so it
            # accepted the flag and its value), and the agent logs in, and
            # enrolls, with the pod's token for Weft's audience.
            acl_env = {e["name"]: e.get("value") for e in sidecars[0].get("env", []) if e["name"].startswith("WEFT_ACL_")}
            token_volumes = [v for v in named(patch, "weft-acl-token") if "projected" in v]
            token_mounts = [m for m in sidecars[0].get("volumeMounts", []) if m["name"] == "weft-acl-token"]
            if acl_method:
                expect_eq(acl_env, {"WEFT_ACL_AUTH_METHOD": acl_method,
                                    "WEFT_ACL_BEARER_TOKEN_FILE": f"{ACL_TOKEN_DIR}/token"}, "the injected sidecar's ACL env")
                expect_eq(len(token_volumes), 1, "injected service-account token volumes")
                expect_eq(token_volumes[0]["projected"]["sources"][0]["serviceAccountToken"].get("audience"), ACL_AUDIENCE,
                          "the injected token's audience")
                expect_eq([(m["mountPath"], m.get("readOnly")) for m in token_mounts], [(ACL_TOKEN_DIR, True)],
                          "the injected token's mount")
            else:
                expect_eq((acl_env, token_volumes, token_mounts), ({}, [], []), "ACL login injected without ACLs")
            # Transparent proxying: the redirecting init container first, and no warning.
            expect_eq('"weft-init"' in text, transparent_proxy, "a traffic redirection init container injected")
            expect_eq(review.warnings, [], "admission warnings")
            plain = review("plain", {})
            expect_eq(plain is not None, inject_by_default, "an unannotated pod injected")
            expect(review("refused", {"weft.io/connect-inject": "false"}) is None, "a pod annotated false was injected")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def materialize(r, pod, c, root, provided=None):
    """Writes what `c` mounts from ConfigMaps and Secrets under `root` (a
    mount at /x lands in root/x), and rewrites the mount paths in the config
    files to where they landed. What Kubernetes provides rather than the
    chart (the ConfigMap kube-root-ca.crt, a projected service-account token)
    comes from `provided`: {"configMap:NAME" or "serviceAccountToken":
    {file: bytes}}. Returns {mount path: local path}."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    provided = provided or {}
    local = {}
    config_files = []
    for m in c.get("volumeMounts", []):
        v = volumes.get(m["name"], {})
        path = os.path.join(root, m["mountPath"].lstrip("/"))
        local[m["mountPath"]] = path
        os.makedirs(path, exist_ok=True)
        for kind, src in volume_sources(v):
            name = source_name(kind, src)
            if kind == "configMap" and name == KUBE_ROOT_CA or kind == "serviceAccountToken":
                key = f"configMap:{name}" if kind == "configMap" else kind
                expect(key in provided, f"the test provides no {key} for {c['name']}")
                for fname, data in provided[key].items():
                    with open(os.path.join(path, fname), "wb") as fh:
                        fh.write(data)
            elif kind == "configMap":
                for fname, text in r.find("ConfigMap", name)["data"].items():
                    config_files.append(os.path.join(path, fname))
                    with open(config_files[-1], "w") as fh:
                        fh.write(text)
            elif kind == "secret":
                data = r.find("Secret", name)["data"]
                for item in src["items"]:
                    with open(os.path.join(path, item["path"]), "wb") as fh:
                        fh.write(base64.b64decode(data[item["key"]]))
    # One pass, so a path already rewritten (under /tmp) is not rewritten again.
    mounts = re.compile('"(' + "|".join(re.escape(m) for m in sorted(local, key=len, reverse=True)) + ')/')
    for fname in config_files:
        with open(fname) as fh:
            text = mounts.sub(lambda match: f'"{local[match.group(1)]}/', fh.read())
        with open(fname, "w") as fh:
            fh.write(text)
    return local


def local_path(local, path):
    """Where a path inside a container landed (materialize's mounts)."""
    for mount in sorted(local, key=len, reverse=True):
        if path.startswith(mount.rstrip("/") + "/"):
            return local[mount] + path[len(mount.rstrip("/")):]
    raise CheckFailed(f"{path} is in no mounted volume")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def openssl_ok(*args, stdin=None):
    out = subprocess.run(["openssl", *args], input=stdin, capture_output=True)
    expect(out.returncode == 0, f"openssl {' '.join(args[:2])} failed: {out.stderr.decode(errors='replace')}")
    return out.stdout


class ServiceAccountIssuer:
    """Stands in for the API server as the service-account token issuer: an
    RSA signing key whose JWKS it serves over HTTPS at /openid/v1/jwks, with
    a certificate from a CA of its own (the cluster's CA, as kube-root-ca.crt
    holds it), and projected tokens (RS256 JWTs with Kubernetes' claims)."""

    def __init__(self, d, issuer):
        self.issuer = issuer
        self.fetches = 0
        f = {name: os.path.join(d, name) for name in ("ca.key", "ca.crt", "tls.key", "tls.csr", "tls.crt", "ext", "sign.key")}
        openssl_ok("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f["ca.key"],
                   "-out", f["ca.crt"], "-subj", "/CN=test-kubernetes-ca", "-days", "1")
        openssl_ok("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f["tls.key"],
                   "-out", f["tls.csr"], "-subj", "/CN=kubernetes")
        with open(f["ext"], "w") as fh:
            fh.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
                     "subjectAltName=IP:127.0.0.1\n")
        openssl_ok("x509", "-req", "-in", f["tls.csr"], "-CA", f["ca.crt"], "-CAkey", f["ca.key"], "-CAcreateserial",
                   "-out", f["tls.crt"], "-days", "1", "-extfile", f["ext"])
        openssl_ok("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", f["sign.key"])
        self.sign_key = f["sign.key"]
        modulus = openssl_ok("rsa", "-in", f["sign.key"], "-noout", "-modulus").decode().strip().split("=", 1)[1]
        jwks = json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "sa-key-1",
                                     "n": b64url(bytes.fromhex(modulus)), "e": "AQAB"}]}).encode()
        with open(f["ca.crt"], "rb") as fh:
            self.ca_pem = fh.read()
        issuer_self = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                found = self.path == "/openid/v1/jwks"
                issuer_self.fetches += found
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(jwks) if found else 0))
                self.end_headers()
                if found:
                    self.wfile.write(jwks)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(f["tls.crt"], f["tls.key"])
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/openid/v1/jwks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def jwt(self, namespace, account, pod, audience=ACL_AUDIENCE):
        """A projected service-account token of pod `namespace`/`pod`, running as `account`."""
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": [audience], "iat": now, "nbf": now, "exp": now + 600,
                  "sub": f"system:serviceaccount:{namespace}:{account}",
                  "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": account, "uid": "sa-uid"},
                                    "pod": {"name": pod, "uid": "pod-uid"}}}
        header = {"alg": "RS256", "kid": "sa-key-1", "typ": "JWT"}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}".encode()
        return f"{signing_input.decode()}.{b64url(openssl_ok('dgst', '-sha256', '-sign', self.sign_key, stdin=signing_input))}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def clean_env(extra=None):
    """This process's environment without any Weft client setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEFT_")}
    env.update(extra or {})
    return env


def run_acl_job(r, fullname, http_addr, issuer, d, run):
    """Runs the rendered ACL Job's steps, in order, as the kubelet would: each
    container's `weft` with its arguments, its environment from the rendered
    Secret, and its mounts (the cluster's CA: `issuer`'s), against
    `http_addr` and with the JWKS at `issuer`'s URL. A failed step is
    retried alone (restartPolicy OnFailure)."""
    job = r.find("Job", f"{fullname}-acl-init")
    pod = job["spec"]["template"]["spec"]
    for c in acl_steps(job):
        local = materialize(r, pod, c, os.path.join(d, f"job-{run}", c["name"]),
                            {f"configMap:{KUBE_ROOT_CA}": {"ca.crt": issuer.ca_pem}})
        args = []
        for a in c["args"]:
            key, _, value = a.partition("=")
            if key == "--http-addr":
                a = f"{key}={http_addr}"
            elif key == "--jwks-url":
                expect_eq(value, IN_CLUSTER_JWKS, "the ACL Job's --jwks-url")
                a = f"{key}={issuer.url}"
            elif key == "--jwks-ca-cert":
                expect(value.startswith("@"), "--jwks-ca-cert does not name a file")
                a = f"{key}=@{local_path(local, value[1:])}"
            args.append(a)
        env = {}
        for e in c.get("env", []):
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = base64.b64decode(r.find("Secret", ref["name"])["data"][ref["key"]]).decode()
        for attempt in range(10):
            out = subprocess.run([WEFT, *args], capture_output=True, text=True, env=clean_env(env), stdin=subprocess.DEVNULL)
            if out.returncode == 0:
                break
            time.sleep(1)
        expect(out.returncode == 0, f"ACL Job step {c['name']} (run {run}) failed: {out.stdout}{out.stderr}")


def http_json(addr, method, path, body=None, token=None):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        headers = {"X-Consul-Token": token} if token else {}
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        resp = conn.getresponse()
        text = resp.read().decode()
        return resp.status, text
    finally:
        conn.close()


def check_logins(r, fullname, http_addr, issuer, method, gateway_service):
    """What the rendered binding rules give a login (after the Job ran twice,
    so with every rule twice): a pod its service account's service and its
    own node; the default account only its node; the mesh gateway's account
    its catalog name in the release namespace alone. A token for another
    audience is refused."""
    ns = r.namespace
    gateway_account = f"{fullname}-mesh-gateway"
    cases = [
        ("shop", "web", "web-0", ["web"]),
        ("shop", "default", "batch-0", []),
        ("other", gateway_account, "gw-x", [gateway_account]),
        (ns, gateway_account, "gw-y", sorted({gateway_account, gateway_service})),
    ]
    for namespace, account, pod, services in cases:
        status, text = http_json(http_addr, "POST", "/v1/acl/login",
                                 {"AuthMethod": method, "BearerToken": issuer.jwt(namespace, account, pod)})
        what = f"login of {namespace}/{pod} as {account}"
        expect_eq(status, 200, f"{what}: {text}")
        token = json.loads(text)
        got = sorted(i["ServiceName"] for i in token.get("ServiceIdentities") or [])
        expect_eq(got, services, f"{what}: service identities")
        nodes = [i["NodeName"] for i in token.get("NodeIdentities") or []]
        expect_eq(nodes, [pod], f"{what}: node identities")
        http_json(http_addr, "POST", "/v1/acl/logout", token=token["SecretID"])
    status, text = http_json(http_addr, "POST", "/v1/acl/login",
                             {"AuthMethod": method, "BearerToken": issuer.jwt("shop", "web", "web-1", audience="https://kubernetes.default.svc")})
    expect_eq(status, 403, f"a login with an API-server token: {text}")


def run_rpc_tls(r, fullname):
    """Runs two real servers with the rendered servers' config directory and
    TLS files, and a client agent with the mesh gateway's, on loopback: the
    servers elect a leader over TLS (each presenting the generated certificate
    as a client too) and the client agent, trusting only the RPC CA and the
    name server.<datacenter>.<domain>, follows their state; then the
    gateway runs with the rendered arguments, registers with the agent and
    turns Ready.

    With ACLs (and so verify_incoming): the servers make the rendered
    management token, which the rendered readiness probe uses; the rendered
    ACL Job runs against them (twice: it must be re-runnable) and makes the
    auth method, which fetches its keys from a stand-in issuer over HTTPS;
    the gateway's agent logs in and enrolls with a service-account token
    from that issuer for its pod, and the gateway registers and gets its
    configuration with the agent's login alone."""
    if WEFT is None:
        return
    sts = r.find("StatefulSet", f"{fullname}-server")
    server = container(sts, "weft")
    dep = r.find("Deployment", f"{fullname}-mesh-gateway")
    gateway_pod = dep["spec"]["template"]["spec"]
    agent = gateway_pod["initContainers"][0]
    gateway = container(dep, "mesh-gateway")
    sf, af, gf = flags(server["args"]), flags(agent["args"]), flags(gateway["args"])
    secrets = {o["metadata"]["name"]: o for o in r.all("Secret")}
    management = secrets.get(f"{fullname}-management-token")
    token = base64.b64decode(management["data"]["token"]).decode() if management else None
    job = r.all("Job")
    expect_eq(bool(job), bool(management), "the ACL Job rendered with the management token")
    rpc = [free_port(), free_port()]
    procs, logs = [], []
    with tempfile.TemporaryDirectory() as d:
        issuer = None
        if management:
            method_args = flags(acl_steps(job[0])[0]["args"])
            issuer = ServiceAccountIssuer(d, one_flag(method_args, "bound-issuer"))

        def start(name, container_spec, pod, args, provided=None, cmd=None):
            root = os.path.join(d, name)
            local = materialize(r, pod, container_spec, root, provided)
            f = flags(container_spec["args"])
            http = free_port()
            if cmd is None:
                cmd = [WEFT, "agent", *args, f"--node={name}", f"--data-dir={os.path.join(root, 'data')}",
                       f"--config-dir={local[one_flag(f, 'config-dir')]}",
                       f"--datacenter={one_flag(f, 'datacenter')}", f"--domain={one_flag(f, 'domain')}",
                       f"--http-addr=127.0.0.1:{http}", f"--dns-addr=127.0.0.1:{free_port()}"]
            log = open(os.path.join(d, name + ".log"), "w+")
            logs.append((name, log))
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=clean_env()))
            return f"127.0.0.1:{http}", local

        def log_tails():
            out = []
            for name, log in logs:
                log.seek(0)
                out.append(f"--- {name}:\n" + "".join(log.readlines()[-15:]))
            return "\n".join(out)

        def weft_cli(*args, token=None):
            return subprocess.run([WEFT, *args], capture_output=True, text=True,
                                  env=clean_env({"WEFT_HTTP_TOKEN": token} if token else {}))

        try:
            joins = [f"--retry-join=127.0.0.1:{p}" for p in rpc]
            s0, s0_local = start("s0", server, sts["spec"]["template"]["spec"],
                                 ["--server", "--bootstrap-expect=2", f"--rpc-addr=127.0.0.1:{rpc[0]}", *joins])
            start("s1", server, sts["spec"]["template"]["spec"],
                  ["--server", "--bootstrap-expect=2", f"--rpc-addr=127.0.0.1:{rpc[1]}", *joins])
            expect_eq(one_flag(sf, "datacenter"), one_flag(af, "datacenter"), "servers' vs gateway agent's --datacenter")

            # The rendered readiness probe, with the environment the
            # container has (with ACLs, the management token's file).
            probe = [WEFT if a == "weft" else s0 if a == "127.0.0.1:8500" else a
                     for a in server["readinessProbe"]["exec"]["command"]]
            probe_env = {e["name"]: local_path(s0_local, e["value"]) for e in server.get("env", [])
                         if e["name"] == "WEFT_HTTP_TOKEN_FILE"}
            deadline = time.monotonic() + 60
            while True:
                ready = subprocess.run(probe, capture_output=True, text=True, env=clean_env(probe_env))
                if ready.returncode == 0:
                    break
                if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                    raise CheckFailed(f"the servers' readiness probe never passed: {ready.stdout}{ready.stderr}\n{log_tails()}")
                time.sleep(0.5)
            expect("leader" in ready.stdout and "s0" in ready.stdout and "s1" in ready.stdout,
                   f"the servers are not one Raft cluster: {ready.stdout}")
            if management:
                # ACLs are on: without the token, the same call is refused.
                refused = weft_cli(*probe[1:])
                expect(refused.returncode != 0, f"list-peers without a token passed: ACLs are not on ({refused.stdout})")
                method = one_flag(method_args, "name")
                run_acl_job(r, fullname, s0, issuer, d, 1)
                run_acl_job(r, fullname, s0, issuer, d, 2)
                check_logins(r, fullname, s0, issuer, method, one_flag(gf, "service"))
                expect(issuer.fetches >= 1, "the servers never fetched the JWKS")

            provided = {"serviceAccountToken": {"token": issuer.jwt(r.namespace, gateway_pod["serviceAccountName"], "gw").encode()}} if issuer else None
            client, gw_local = start("gw", agent, gateway_pod,
                                     [f"--network={one_flag(af, 'network')}", f"--retry-join=127.0.0.1:{rpc[0]}",
                                      "--advertise=127.0.0.1"], provided)
            deadline = time.monotonic() + 60
            while True:
                members = weft_cli("members", "--http-addr", client)
                alive = {line.split()[0] for line in members.stdout.splitlines()[1:] if " alive " in line}
                if {"s0", "s1", "gw"} <= alive:
                    break
                if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                    raise CheckFailed(f"servers and client agent did not come together over TLS "
                                      f"(members: {members.stdout.strip() or members.stderr.strip()})\n{log_tails()}")
                time.sleep(0.5)
            if management:
                # It enrolled by its login: it has a client certificate.
                expect(os.path.exists(os.path.join(d, "gw", "data", "agent-cert.pem")),
                       f"the gateway's agent has no client certificate\n{log_tails()}")

            # The gateway, with the rendered arguments (the pod's addresses
            # on loopback) and no token of its own: it registers and gets its
            # configuration with the agent's default token (its login).
            admin = free_port()
            args = []
            for a in gateway["args"]:
                key, _, value = a.partition("=")
                if key == "--port":
                    a = f"--port={free_port()}"
                elif key == "--admin-bind":
                    a = f"--admin-bind=127.0.0.1:{admin}"
                elif key == "--http-addr":
                    a = f"--http-addr={client}"
                elif key == "--wan-address":
                    # Another loopback port: the rendered address is not this
                    # host's.
                    a = f"--wan-address=127.0.0.1:{free_port()}"
                args.append(a.replace("$(POD_IP)", "127.0.0.1").replace("$(HOST_IP)", "127.0.0.1"))
            start("mesh-gateway", gateway, gateway_pod, [], cmd=[WEFT, *args])
            deadline = time.monotonic() + 60
            while True:
                try:
                    status, _ = http_json(f"127.0.0.1:{admin}", "GET", "/ready")
                except OSError:
                    status = None
                if status == 200:
                    break
                if procs[-1].poll() is not None or time.monotonic() > deadline:
                    raise CheckFailed(f"the mesh gateway never turned Ready (/ready: {status})\n{log_tails()}")
                time.sleep(0.5)
            services = weft_cli("catalog", "services", "--http-addr", s0, token=token)
            expect(one_flag(gf, "service") in services.stdout.split(), f"the gateway is not in the catalog: {services.stdout}{services.stderr}")
        finally:
            for p in reversed(procs):  # the gateway first: it deregisters through its agent
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            for _, log in logs:
                log.close()
            if issuer:
                issuer.close()


def env_field(c, name):
    """The Downward API field a container's environment variable comes from."""
    for e in c.get("env", []):
        if e["name"] == name:
            return e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    return None


def expect_env_resolves(c, what):
    """Kubernetes leaves a $(VAR) it cannot resolve in the arguments as is, so
    every one referenced must be in the container's environment."""
    names = {e["name"] for e in c.get("env", [])}
    for a in c.get("args", []):
        for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a):
            expect(var in names, f"{what} argument {a!r} names ${var}, which is not in its env")


def check_flags_exist(args, subcommand, what):
    """With --weft, every --flag the chart passes is one `weft <subcommand>` has."""
    if WEFT is None:
        return
    help_text = subprocess.run([WEFT, *subcommand, "--help"], capture_output=True, text=True)
    expect(help_text.returncode == 0, f"weft {' '.join(subcommand)} --help failed: {help_text.stderr}")
    for key in flags(args):
        expect(re.search(rf"--{re.escape(key)}\b", help_text.stdout), f"{what}: weft {' '.join(subcommand)} has no --{key}")


def check_mesh_gateway(r, fullname, network, wan, port=8443, service_port=8443, host_port=None,
                       service_type="LoadBalancer", service_annotations=None, service_name="mesh-gateway",
                       replicas=1, datacenter="dc1", tls_secret=None, acl_method="k8s"):
    """The mesh gateway: a client agent in `network` joined to the servers,
    and `weft connect gateway --kind mesh` advertising `wan` to other networks.
    With `acl_method`, the agent logs in (and enrolls) with its pod's token."""
    name = f"{fullname}-mesh-gateway"
    ns = r.namespace
    dep = r.find("Deployment", name)
    expect_eq(dep["spec"]["replicas"], replicas, "mesh gateway replicas")
    pod = dep["spec"]["template"]["spec"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}

    # The agent: a native sidecar, so it starts before the gateway and stops after it.
    inits = pod.get("initContainers", [])
    expect_eq([c["name"] for c in inits], ["weft-agent"], "mesh gateway init containers")
    agent = inits[0]
    expect_eq(agent.get("restartPolicy"), "Always", "the agent is a native sidecar")
    expect_eq(agent["command"], ["weft"], "agent command")
    expect_eq(agent["args"][0], "agent", "agent subcommand")
    expect("--server" not in agent["args"], "the gateway's agent must be a client, not a server")
    f = flags(agent["args"])
    expect_eq(one_flag(f, "network"), network, "agent --network")
    expect_eq(f.get("retry-join"), [f"{fullname}-server.{ns}.svc:8300"], "agent --retry-join")
    expect_eq(one_flag(f, "node"), "$(POD_NAME)", "agent --node")
    expect_eq(one_flag(f, "advertise"), "$(POD_IP)", "agent --advertise")
    expect_eq(one_flag(f, "datacenter"), datacenter, "agent --datacenter")
    data_dir = one_flag(f, "data-dir")
    mounts = {m["mountPath"]: m["name"] for m in agent.get("volumeMounts", [])}
    expect(data_dir in mounts and "emptyDir" in volumes.get(mounts[data_dir], {}), "the agent's --data-dir is not an emptyDir")
    expect_env_resolves(agent, "agent")
    expect_eq(env_field(agent, "POD_IP"), "status.podIP", "agent POD_IP")
    expect_eq(env_field(agent, "POD_NAME"), "metadata.name", "agent POD_NAME")
    expect("startupProbe" in agent, "the agent has no startup probe to hold the gateway back")

    # TLS to the servers, verified with the RPC CA: the one file of the
    # servers' Secret the pod mounts. A client agent has no certificate of its own.
    config_dir = one_flag(f, "config-dir")
    expect(config_dir in mounts and "configMap" in volumes.get(mounts[config_dir], {}), "the agent's --config-dir is not a mounted ConfigMap")
    cm = r.find("ConfigMap", volumes[mounts[config_dir]]["configMap"]["name"])
    expect(all(k.endswith(".json") for k in cm["data"]), "config files must be .json (or .hcl) to be read")
    tls = json.loads(cm["data"]["rpc-tls.json"])["tls"]
    defaults, internal_rpc = tls.get("defaults", {}), tls.get("internal_rpc", {})
    for setting in ("cert_file", "key_file"):
        expect(setting not in defaults and setting not in internal_rpc, f"the gateway's agent has a tls {setting}")
    expect(defaults.get("verify_outgoing") is True, "the gateway's agent does not verify_outgoing")
    expect(internal_rpc.get("verify_server_hostname") is True, "the gateway's agent does not verify_server_hostname")
    expect_eq(secret_files(pod, agent), {defaults.get("ca_file"): (tls_secret or f"{fullname}-server-tls", "ca.crt")},
              "Secret files the gateway's agent mounts (its ca_file alone)")
    check_flags_exist(agent["args"], ["agent"], "agent")

    # ACLs: the agent logs in at start with its pod's service-account token,
    # projected for Weft's audience where its login reads it, and enrolls
    # with it (no join token); the ACL Job's rules give it its node and the
    # gateway's service. No secret in the ConfigMap.
    token = token_volume(pod, agent, ACL_TOKEN_DIR)
    if acl_method:
        expect_eq(sorted(cm["data"]), ["acl.json", "rpc-tls.json"], "the gateway's agent's config files")
        expect_eq(json.loads(cm["data"]["acl.json"]), {"acl": {
            "enabled": True, "default_policy": "deny",
            "login": {"auth_method": acl_method, "bearer_token_file": f"{ACL_TOKEN_DIR}/token",
                      "meta": {"deployment": f"{ns}/{name}"}}}}, "the gateway's agent's acl.json")
        expect(token is not None, f"the gateway's agent has no service-account token at {ACL_TOKEN_DIR}")
        expect_eq((token.get("audience"), token.get("path")), (ACL_AUDIENCE, "token"), "the gateway's agent's token")
        expect(isinstance(token.get("expirationSeconds"), int) and token["expirationSeconds"] >= 600,
               "the gateway's agent's token expirationSeconds")
        expect("join_token" not in json.dumps(json.loads(cm["data"]["acl.json"])), "a join token in the ConfigMap")
    else:
        expect_eq(sorted(cm["data"]), ["rpc-tls.json"], "the gateway's agent's config files without ACLs")
        expect(token is None, "a service-account token for the gateway's agent without ACLs")

    # The gateway.
    gw = container(dep, "mesh-gateway")
    expect_eq(gw["command"], ["weft"], "gateway command")
    expect_eq(gw["args"][:2], ["connect", "gateway"], "gateway subcommand")
    g = flags(gw["args"])
    expect_eq(one_flag(g, "kind"), "mesh", "gateway --kind")
    expect(one_flag(g, "register") is True, "the gateway does not --register")
    expect_eq(one_flag(g, "service"), service_name, "gateway --service")
    expect_eq(one_flag(g, "address"), "$(POD_IP)", "gateway --address")
    expect_eq(one_flag(g, "port"), str(port), "gateway --port")
    expect_eq(one_flag(g, "wan-address"), wan, "gateway --wan-address")
    expect_eq(one_flag(g, "http-addr"), "127.0.0.1:8500", "gateway --http-addr (the pod's agent)")
    expect_env_resolves(gw, "gateway")
    expect_eq(env_field(gw, "POD_IP"), "status.podIP", "gateway POD_IP")
    if "$(HOST_IP)" in wan:
        expect_eq(env_field(gw, "HOST_IP"), "status.hostIP", "gateway HOST_IP")
    check_flags_exist(gw["args"], ["connect", "gateway"], "gateway")
    expect_eq(secret_files(pod, gw), {}, "Secret files the gateway container mounts")
    expect(token_volume(pod, gw, ACL_TOKEN_DIR) is None, "the gateway container mounts the agent's login token")

    expect_eq(port_number(gw, "gateway"), port, "gateway container port")
    gateway_port = next(p for p in gw["ports"] if p["name"] == "gateway")
    expect_eq(gateway_port.get("hostPort"), host_port, "gateway hostPort")
    admin_bind = one_flag(g, "admin-bind")
    admin_port = int(admin_bind.rsplit(":", 1)[1])
    expect_eq(port_number(gw, "admin"), admin_port, "admin container port vs --admin-bind")
    expect(not admin_bind.startswith("127."), "the kubelet cannot probe an admin port on loopback")
    get = gw["readinessProbe"]["httpGet"]
    expect_eq((get["path"], port_number(gw, get["port"])), ("/ready", admin_port), "gateway readiness probe")

    # The Service in front of it, and no other Service selecting its pods.
    svc = r.find("Service", name)
    expect_eq(svc["spec"]["type"], service_type, "mesh gateway Service type")
    expect_eq(svc["metadata"].get("annotations"), service_annotations, "mesh gateway Service annotations")
    expect(selects(svc["spec"]["selector"], pod_labels), "mesh gateway Service does not select the gateway")
    expect_eq([(p["port"], port_number(gw, p["targetPort"])) for p in svc["spec"]["ports"]],
              [(service_port, port)], "mesh gateway Service ports")


def acl_steps(job):
    """The ACL Job's containers, in the order they run: the init
    containers, then the main one."""
    pod = job["spec"]["template"]["spec"]
    return pod.get("initContainers", []) + pod["containers"]


def check_acl(r, fullname, method="k8s", issuer=DEFAULT_ISSUER, jwks_url="", discovery_binding=True,
              gateway_service=None):
    """ACLs: the management token's Secret, the Job that makes the auth method
    and its binding rules with it, and the issuer-discovery binding that lets
    the servers fetch the service-account keys without credentials."""
    ns = r.namespace
    management = f"{fullname}-management-token"
    check_management_secret(r.find("Secret", management))

    name = f"{fullname}-acl-init"
    job = r.find("Job", name)
    annotations = job["metadata"].get("annotations", {})
    expect_eq(annotations.get("helm.sh/hook"), "post-install,post-upgrade", "ACL Job hook")
    expect_eq(annotations.get("helm.sh/hook-delete-policy"), "before-hook-creation,hook-succeeded", "ACL Job hook-delete-policy")
    expect(job["spec"].get("backoffLimit", 6) >= 3, "the ACL Job gives up before the servers can have elected")
    pod = job["spec"]["template"]["spec"]
    # A failed step is retried alone, in place: the ones before it are not repeated.
    expect_eq(pod.get("restartPolicy"), "OnFailure", "ACL Job restartPolicy")
    expect_eq(len(pod["containers"]), 1, "ACL Job main containers")
    expect_eq(r.find("ServiceAccount", pod["serviceAccountName"]).get("automountServiceAccountToken"), False,
              "the ACL Job's service account automounts an API token")
    http = f"--http-addr={fullname}.{ns}.svc:8500"
    svc = r.find("Service", fullname)
    expect(any(p["port"] == 8500 for p in svc["spec"]["ports"]), "the ACL Job's --http-addr is not a port of the client Service")

    kube_ca = "/var/run/secrets/kubernetes.io/serviceaccount"
    auth_method = ["acl", "auth-method", "create", "--type=jwt", f"--name={method}",
                   f"--description=Kubernetes service accounts (release {r.release}, namespace {ns})"]
    auth_method += [f"--jwks-url={jwks_url}"] if jwks_url else [
        f"--jwks-url={IN_CLUSTER_JWKS}", f"--jwks-ca-cert=@{kube_ca}/ca.crt"]
    auth_method += [f"--bound-issuer={issuer}", f"--bound-audience={ACL_AUDIENCE}",
                    "--claim-mapping=/kubernetes.io/namespace=namespace",
                    "--claim-mapping=/kubernetes.io/serviceaccount/name=service_account_name",
                    "--claim-mapping=/kubernetes.io/pod/name=pod_name", http]
    rule = ["acl", "binding-rule", "create", f"--method={method}"]
    wanted = [
        ("auth-method", auth_method),
        ("service-rule", rule + ["--description=A pod: a service identity named after its service account",
                                 "--bind-type=service", "--bind-name=${value.service_account_name}",
                                 '--selector=value.service_account_name != "default"', http]),
        ("node-rule", rule + ["--description=A pod: a node identity for its own name (its agent enrolls with it)",
                              "--bind-type=node", "--bind-name=${value.pod_name}", http]),
    ]
    if gateway_service:
        wanted.append(("mesh-gateway-rule", rule + [
            f"--description=The mesh gateway (release {r.release}): service {gateway_service}",
            "--bind-type=service", f"--bind-name={gateway_service}",
            f'--selector=value.namespace == "{ns}" and value.service_account_name == "{fullname}-mesh-gateway"', http]))
    steps = acl_steps(job)
    expect_eq([(c["name"], c["args"]) for c in steps], wanted, "the ACL Job's steps")
    for c in steps:
        cname = f"ACL Job container {c['name']}"
        expect_eq(c["command"], ["weft"], f"{cname} command (no shell)")
        expect_eq(c.get("env"), [{"name": "WEFT_HTTP_TOKEN", "valueFrom": {"secretKeyRef": {"name": management, "key": "token"}}}],
                  f"{cname} env")
        expect(not any("$(" in a for a in c["args"]), f"{cname}: an argument Kubernetes would expand")
        check_flags_exist(c["args"], c["args"][:3], cname)
    # The cluster's CA, at the path --jwks-ca-cert names, from the
    # ConfigMap Kubernetes publishes (not the API token beside it).
    ca_mounts = [(c["name"], m) for c in steps for m in c.get("volumeMounts", [])]
    if jwks_url:
        expect_eq(ca_mounts, [], "ACL Job mounts without the in-cluster JWKS")
    else:
        expect_eq([(n, m["mountPath"], m.get("readOnly")) for n, m in ca_mounts], [("auth-method", kube_ca, True)],
                  "the ACL Job's mounts")
        volume = next(v for v in pod["volumes"] if v["name"] == ca_mounts[0][1]["name"])
        expect_eq(volume_sources(volume), [("configMap", {"name": KUBE_ROOT_CA, "items": [{"key": "ca.crt", "path": "ca.crt"}]})],
                  "the ACL Job's CA volume")

    bindings = r.all("ClusterRoleBinding")
    if discovery_binding:
        expect_eq(len(bindings), 1, "ClusterRoleBindings")
        expect_eq(bindings[0]["roleRef"], {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                           "name": "system:service-account-issuer-discovery"}, "issuer discovery roleRef")
        expect_eq(bindings[0]["subjects"], [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                                             "name": "system:unauthenticated"}], "issuer discovery subjects")
        expect(ns in bindings[0]["metadata"]["name"], "the cluster-scoped binding's name lacks the namespace")
    else:
        expect_eq(bindings, [], "ClusterRoleBindings with acl.issuerDiscoveryBinding=false")


def check_no_acl(r, fullname):
    """acl.enabled=false: the chart as it was before ACLs."""
    for o in r.objects:
        expect(component(o) != "acl", f"{o['kind']} {o['metadata']['name']} rendered with ACLs off")
    for kind in ("Job", "ClusterRoleBinding"):
        expect_eq(r.all(kind), [], f"{kind}s with ACLs off")
    expect(not any(o["metadata"]["name"].endswith("-management-token") for o in r.all("Secret")), "a management token with ACLs off")
    for w in r.all("StatefulSet") + r.all("Deployment"):
        pod = w["spec"]["template"]["spec"]
        for c in pod.get("initContainers", []) + pod["containers"]:
            expect(not any(a.startswith("--acl") for a in c.get("args", [])), f"{w['metadata']['name']} {c['name']}: ACL flags with ACLs off")
            expect(token_volume(pod, c, ACL_TOKEN_DIR) is None, f"{w['metadata']['name']} {c['name']}: a login token with ACLs off")


def check_no_mesh_gateway(r):
    for o in r.objects:
        component = o["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        expect(component != "mesh-gateway", f"{o['kind']} {o['metadata']['name']} rendered with meshGateway disabled")


def check_no_injector(r, fullname):
    for o in r.objects:
        component = o["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        expect(component != "connect-injector", f"{o['kind']} {o['metadata']['name']} rendered with connectInject disabled")
    for kind in ("Deployment", "MutatingWebhookConfiguration"):
        expect_eq(r.all(kind), [], f"{kind}s with connectInject disabled")
    expect_eq(sorted(o["metadata"]["name"] for o in r.all("Secret")),
              [f"{fullname}-management-token", f"{fullname}-server-tls"], "Secrets with connectInject disabled")


# ---------------------------------------------------------------- scenarios

DEFAULT_IMAGE = None  # weft/weft:<appVersion>, set in main()


def scenario_default(r):
    check_common(r, DEFAULT_IMAGE)
    cm = check_servers(r, "prod-weft", 3)
    expect_eq(sorted(cm["data"]), ["extra-config.json", "rpc-tls.json"], "default server config files")
    expect_eq(cm["data"]["extra-config.json"], "{}", "default server extra config")
    check_acl(r, "prod-weft")
    check_injector(r, "prod-weft", DEFAULT_IMAGE)
    run_webhook(r, "prod-weft", DEFAULT_IMAGE)
    check_no_mesh_gateway(r)


def scenario_acl_disabled(r):
    # The chart as it was before ACLs: no token, Job or binding, no login
    # anywhere, and the servers accept callers without a certificate.
    check_common(r, DEFAULT_IMAGE)
    check_servers(r, "prod-weft", 3, acl=False)
    check_no_acl(r, "prod-weft")
    check_injector(r, "prod-weft", DEFAULT_IMAGE, acl_method=None)
    run_webhook(r, "prod-weft", DEFAULT_IMAGE, acl_method=None)


def scenario_acl_values(r):
    # Another method name and issuer, keys from a public JWKS (no cluster CA,
    # no issuer-discovery binding), with the mesh gateway.
    check_common(r, DEFAULT_IMAGE)
    check_servers(r, "prod-weft", 3)
    check_acl(r, "prod-weft", method="kube", issuer="https://oidc.example.com/id/7", jwks_url="https://oidc.example.com/id/7/keys",
              discovery_binding=False, gateway_service="mesh-gateway")
    check_injector(r, "prod-weft", DEFAULT_IMAGE, network="east", acl_method="kube")
    run_webhook(r, "prod-weft", DEFAULT_IMAGE, acl_method="kube")
    check_mesh_gateway(r, "prod-weft", "east", "$(HOST_IP):8443", host_port=8443, acl_method="kube")


def scenario_acl_without_verify_incoming(r):
    check_common(r, DEFAULT_IMAGE)
    check_servers(r, "prod-weft", 3, verify_incoming=False)
    check_acl(r, "prod-weft")


def scenario_replicas5(r):
    check_common(r, DEFAULT_IMAGE)
    check_servers(r, "prod-weft", 5)


def scenario_inject_disabled(r):
    check_common(r, DEFAULT_IMAGE)
    check_servers(r, "prod-weft", 3)
    check_no_injector(r, "prod-weft")
    check_acl(r, "prod-weft")


def scenario_transparent_proxy(r):
    check_common(r, DEFAULT_IMAGE)
    check_injector(r, "prod-weft", DEFAULT_IMAGE, transparent_proxy=True)
    run_webhook(r, "prod-weft", DEFAULT_IMAGE, transparent_proxy=True)


def scenario_inject_by_default(r):
    check_common(r, DEFAULT_IMAGE)
    check_injector(r, "prod-weft", DEFAULT_IMAGE, inject_by_default=True)
    run_webhook(r, "prod-weft", DEFAULT_IMAGE, inject_by_default=True)


def scenario_custom_image(r):
    image = "registry.example.com/mesh/weft:1.2.3"
    check_common(r, image, pull_policy="Always")
    check_servers(r, "prod-weft", 3)
    check_injector(r, "prod-weft", image)
    run_webhook(r, "prod-weft", image)


def scenario_fullname_override(r):
    check_common(r, DEFAULT_IMAGE)
    check_servers(r, "mesh", 3)
    check_injector(r, "mesh", DEFAULT_IMAGE)
    run_webhook(r, "mesh", DEFAULT_IMAGE)
    for o in r.objects:
        expect(o["metadata"]["name"].startswith("mesh"), f"{o['kind']} {o['metadata']['name']} ignores fullnameOverride")


def scenario_release_named_weft(r):
    # A release name containing the chart name is used alone.
    check_common(r, DEFAULT_IMAGE)
    check_servers(r, "weft", 3)
    check_injector(r, "weft", DEFAULT_IMAGE)


def scenario_name_override(r):
    check_common(r, DEFAULT_IMAGE)
    check_servers(r, "prod-edge", 3)
    for o in r.objects:
        expect_eq(o["metadata"]["labels"]["app.kubernetes.io/name"], "edge", f"{o['kind']} {o['metadata']['name']} name label")


VALUES_FILE = """\
datacenter: eu-west
domain: consul
server:
  replicas: 1
  podAntiAffinity: preferred
  storage:
    storageClass: fast-ssd
    size: 1Gi
  disruptionBudget:
    enabled: false
  extraConfig:
    log_level: debug
    recursors: ["10.0.0.2"]
  tolerations:
    - key: dedicated
      operator: Equal
      value: weft
      effect: NoSchedule
connectInject:
  requireNamespaceLabel: true
  replicas: 2
"""


def scenario_values_file(r):
    # Numbers from a values file reach templates as float64, unlike --set's int64.
    check_common(r, DEFAULT_IMAGE)
    cm = check_servers(r, "prod-weft", 1, datacenter="eu-west", domain="consul", anti_affinity="preferred",
                       pdb=False, storage_class="fast-ssd", size="1Gi")
    expect_eq(yaml.safe_load(cm["data"]["extra-config.json"]), {"log_level": "debug", "recursors": ["10.0.0.2"]}, "extraConfig")
    sts = r.find("StatefulSet", "prod-weft-server")
    expect_eq(sts["spec"]["template"]["spec"]["tolerations"][0]["key"], "dedicated", "tolerations")
    check_injector(r, "prod-weft", DEFAULT_IMAGE, require_label=True)
    expect_eq(r.find("Deployment", "prod-weft-connect-injector")["spec"]["replicas"], 2, "injector replicas")


def scenario_no_affinity(r):
    check_common(r, DEFAULT_IMAGE)
    check_servers(r, "prod-weft", 3, anti_affinity="none", storage_class="")


def scenario_gateway_node_ip(r):
    check_common(r, DEFAULT_IMAGE)
    check_servers(r, "prod-weft", 3)
    check_injector(r, "prod-weft", DEFAULT_IMAGE, network="east")
    check_mesh_gateway(r, "prod-weft", "east", "$(HOST_IP):8443", host_port=8443)
    check_acl(r, "prod-weft", gateway_service="mesh-gateway")


def scenario_gateway_static(r):
    check_common(r, DEFAULT_IMAGE)
    check_servers(r, "prod-weft", 3)
    check_mesh_gateway(r, "prod-weft", "east_2", "203.0.113.7:9443", service_type="ClusterIP", replicas=2)
    check_acl(r, "prod-weft", gateway_service="mesh-gateway")


GATEWAY_VALUES_FILE = """\
datacenter: eu-west
network: pods
meshGateway:
  enabled: true
  serviceName: k8s-gateway
  port: 8444
  wanAddress:
    source: Service
    static: "2001:db8::7"
    port: 443
  service:
    annotations:
      lb.example.com/ip: "2001:db8::7"
  tolerations:
    - key: edge
      operator: Exists
      effect: NoSchedule
"""


def scenario_gateway_service(r):
    # A values file: numbers reach the templates as float64.
    check_common(r, DEFAULT_IMAGE)
    check_servers(r, "prod-weft", 3, datacenter="eu-west")
    check_mesh_gateway(r, "prod-weft", "pods", "[2001:db8::7]:443", port=8444, service_port=443,
                       service_annotations={"lb.example.com/ip": "2001:db8::7"}, service_name="k8s-gateway",
                       datacenter="eu-west")
    dep = r.find("Deployment", "prod-weft-mesh-gateway")
    expect_eq(dep["spec"]["template"]["spec"]["tolerations"][0]["key"], "edge", "mesh gateway tolerations")
    check_acl(r, "prod-weft", gateway_service="k8s-gateway")
    run_rpc_tls(r, "prod-weft")


def scenario_gateway_service_acl_disabled(r):
    # Without ACLs: the servers accept the gateway's agent with no
    # certificate and no login, as before.
    check_common(r, DEFAULT_IMAGE)
    check_servers(r, "prod-weft", 3, datacenter="eu-west", acl=False)
    check_no_acl(r, "prod-weft")
    check_mesh_gateway(r, "prod-weft", "pods", "[2001:db8::7]:443", port=8444, service_port=443,
                       service_annotations={"lb.example.com/ip": "2001:db8::7"}, service_name="k8s-gateway",
                       datacenter="eu-west", acl_method=None)
    run_rpc_tls(r, "prod-weft")


def scenario_verify_incoming(r):
    check_common(r, DEFAULT_IMAGE)
    check_servers(r, "prod-weft", 3, verify_incoming=True, acl=False)
    check_no_acl(r, "prod-weft")


def scenario_existing_tls_secret(r):
    # The user's Secret is mounted (its three files, the CA alone in agents)
    # and none is generated.
    check_common(r, DEFAULT_IMAGE, external_secrets=["rpc-certs"])
    check_servers(r, "prod-weft", 3, tls_secret="rpc-certs")
    check_injector(r, "prod-weft", DEFAULT_IMAGE, network="east", tls_secret="rpc-certs")
    check_mesh_gateway(r, "prod-weft", "east", "$(HOST_IP):8443", host_port=8443, tls_secret="rpc-certs")


GATEWAY = "meshGateway.enabled=true"

# name, renderer arguments, check (or the error the render must fail with)
SCENARIOS = [
    ("default values", [], scenario_default),
    ("server.replicas=5", ["--set", "server.replicas=5"], scenario_replicas5),
    ("connectInject disabled", ["--set", "connectInject.enabled=false"], scenario_inject_disabled),
    ("transparent proxy", ["--set", "connectInject.transparentProxy=true"], scenario_transparent_proxy),
    ("custom image", ["--set", "image.repository=registry.example.com/mesh/weft,image.tag=1.2.3",
                      "--set", "image.pullPolicy=Always"], scenario_custom_image),
    ("fullnameOverride", ["--set", "fullnameOverride=mesh"], scenario_fullname_override),
    ("release named weft", ["--name", "weft"], scenario_release_named_weft),
    ("nameOverride", ["--set", "nameOverride=edge"], scenario_name_override),
    ("values file", ["-f", "@values"], scenario_values_file),
    ("no anti-affinity, no storage class", ["--set", "server.podAntiAffinity=none,server.storage.storageClass=-"], scenario_no_affinity),
    ("tls.enabled is refused", ["--set", "tls.enabled=true"], "tls.enabled is reserved"),
    ("connectInject.default", ["--set", "connectInject.default=true"], scenario_inject_by_default),
    ("server.replicas=0 is refused", ["--set", "server.replicas=0"], "server.replicas must be at least 1"),
    ("unknown podAntiAffinity is refused", ["--set", "server.podAntiAffinity=sometimes"], "server.podAntiAffinity must be"),
    ("Kubernetes older than kubeVersion is refused", ["--kube-version", "1.28.0"], "incompatible with Kubernetes"),
    ("mesh gateway, NodeIP", ["--set", f"network=east,{GATEWAY},meshGateway.wanAddress.source=NodeIP"], scenario_gateway_node_ip),
    ("mesh gateway, Static", ["--set", f"network=east_2,{GATEWAY},meshGateway.replicas=2",
                              "--set", "meshGateway.wanAddress.source=Static,meshGateway.wanAddress.static=203.0.113.7",
                              "--set", "meshGateway.wanAddress.port=9443,meshGateway.service.type=ClusterIP"], scenario_gateway_static),
    ("mesh gateway, Service with a static address", ["-f", "@gateway-values"], scenario_gateway_service),
    ("mesh gateway without network is refused", ["--set", GATEWAY], "meshGateway.enabled needs network"),
    ("mesh gateway, Service without static is refused", ["--set", f"network=east,{GATEWAY}"],
     "meshGateway.wanAddress.source=Service needs meshGateway.wanAddress.static"),
    ("mesh gateway, Static host name is refused",
     ["--set", f"network=east,{GATEWAY},meshGateway.wanAddress.source=Static,meshGateway.wanAddress.static=gw.example.com"],
     "meshGateway.wanAddress.static must be an IP address"),
    ("invalid network name is refused", ["--set", "network=east.1"], "must use only letters, digits"),
    ("ACLs off, server.tls.verifyIncoming=true", ["--set", "acl.enabled=false,server.tls.verifyIncoming=true"], scenario_verify_incoming),
    ("server.tls.existingSecret, with the mesh gateway",
     ["--set", f"server.tls.existingSecret=rpc-certs,network=east,{GATEWAY},meshGateway.wanAddress.source=NodeIP"],
     scenario_existing_tls_secret),
    ("server.tls.verifyIncoming not a boolean is refused", ["--set-string", "server.tls.verifyIncoming=true"],
     "server.tls.verifyIncoming must be true, false or null"),
    ("ACLs off", ["--set", "acl.enabled=false"], scenario_acl_disabled),
    ("ACLs off, mesh gateway, Service with a static address", ["-f", "@gateway-values", "--set", "acl.enabled=false"],
     scenario_gateway_service_acl_disabled),
    ("ACL values, public JWKS, with the mesh gateway",
     ["--set", "acl.authMethodName=kube,acl.boundIssuer=https://oidc.example.com/id/7",
      "--set", "acl.jwksUrl=https://oidc.example.com/id/7/keys,acl.issuerDiscoveryBinding=false",
      "--set", f"network=east,{GATEWAY},meshGateway.wanAddress.source=NodeIP"], scenario_acl_values),
    ("ACLs on, server.tls.verifyIncoming=false", ["--set", "server.tls.verifyIncoming=false"], scenario_acl_without_verify_incoming),
    ("acl.enabled not a boolean is refused", ["--set-string", "acl.enabled=true"], "acl.enabled must be true or false"),
    ("invalid acl.authMethodName is refused", ["--set", "acl.authMethodName=k8s.a"], "acl.authMethodName \"k8s.a\" must be"),
    ("empty acl.boundIssuer is refused", ["--set", "acl.boundIssuer="], "acl.boundIssuer must not be empty"),
    ("plain-HTTP acl.jwksUrl is refused", ["--set", "acl.jwksUrl=http://oidc.example.com/keys"], "acl.jwksUrl must be an https:// URL"),
    ("acl in server.extraConfig is refused", ["--set", "server.extraConfig.acl.enabled=false"],
     "server.extraConfig must not set acl with acl.enabled"),
    ("tls in server.extraConfig is refused", ["--set", "server.extraConfig.tls.defaults.verify_incoming=true"],
     "server.extraConfig must not set tls"),
    ("server.tls.certValidityDays=0 is refused", ["--set", "server.tls.certValidityDays=0"],
     "server.tls.certValidityDays must be at least 1"),
]


# ---------------------------------------------------------------- running

def validate_schemas(r, versions):
    if kubernetes_validate is None:
        raise CheckFailed("kubernetes_validate is not importable")
    for o in r.objects:
        for version in versions:
            try:
                kubernetes_validate.validate(o, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                raise CheckFailed(f"{o['kind']} {o['metadata']['name']} is invalid for Kubernetes {version}: {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                raise CheckFailed(e.message)


def render(renderer, chart, workdir, extra):
    cmd = [renderer, "--strict", "--name", "prod", "--namespace", "mesh"]
    for a in extra:
        # "@NAME": the values file NAME-override.yaml written into workdir.
        cmd.append(os.path.join(workdir, a[1:] + "-override.yaml") if a.startswith("@") else a)
    cmd.append(chart)
    return subprocess.run(cmd, capture_output=True, text=True), cmd


def main():
    global CHART_VERSION, APP_VERSION, DEFAULT_IMAGE, WEFT
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--renderer", required=True, help="the render binary built from deploy/helm/render")
    p.add_argument("--chart", required=True, help="the chart directory")
    p.add_argument("--kube-versions", default="1.34.0", help="comma-separated Kubernetes versions to validate against")
    p.add_argument("--workdir", required=True, help="where rendered manifests are written, for inspection")
    p.add_argument("--only", help="run only scenarios whose name contains this")
    p.add_argument("--weft", help="a weft binary: also run `weft k8s webhook` as each render deploys it")
    args = p.parse_args()
    versions = [v for v in args.kube_versions.split(",") if v]
    WEFT = args.weft
    if WEFT is None:
        print("(no --weft binary: the webhook is not run with the rendered certificate)")

    with open(os.path.join(args.chart, "Chart.yaml")) as fh:
        chart = yaml.safe_load(fh)
    CHART_VERSION, APP_VERSION = chart["version"], str(chart["appVersion"])
    DEFAULT_IMAGE = f"weft/weft:{APP_VERSION}"
    for fname, text in (("values", VALUES_FILE), ("gateway-values", GATEWAY_VALUES_FILE)):
        with open(os.path.join(args.workdir, fname + "-override.yaml"), "w") as fh:
            fh.write(text)

    passed = failed = 0
    for name, extra, check in SCENARIOS:
        if args.only and args.only not in name:
            continue
        result, cmd = render(args.renderer, args.chart, args.workdir, extra)
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        out = os.path.join(args.workdir, slug + ".yaml")
        with open(out, "w") as fh:
            fh.write(result.stdout)
        try:
            if isinstance(check, str):
                expect(result.returncode != 0, f"render succeeded; want it refused with {check!r}")
                expect(check in result.stderr, f"render failed for another reason: {result.stderr.strip()}")
            else:
                expect(result.returncode == 0, f"render failed: {result.stderr.strip()}")
                objects = [o for o in yaml.safe_load_all(result.stdout) if o is not None]
                expect(objects, "rendered nothing")
                release = extra[extra.index("--name") + 1] if "--name" in extra else "prod"
                r = Rendered(objects, release, "mesh")
                check(r)
                validate_schemas(r, versions)
                notes = subprocess.run(cmd[:1] + ["--notes"] + cmd[1:], capture_output=True, text=True)
                expect(notes.returncode == 0 and "list-peers" in notes.stdout, f"NOTES.txt did not render: {notes.stderr.strip()}")
                # With ACLs, how to read the management token.
                for secret in r.all("Secret"):
                    if secret["metadata"]["name"].endswith("-management-token"):
                        expect(f"get secret {secret['metadata']['name']} -o jsonpath='{{.data.token}}'" in notes.stdout,
                               "NOTES.txt does not say how to read the management token")
            passed += 1
            print(f"ok   {name}")
        except CheckFailed as e:
            failed += 1
            print(f"FAIL {name}: {e}\n     rendered with: {' '.join(cmd)}\n     output: {out}")
        except yaml.YAMLError as e:
            failed += 1
            print(f"FAIL {name}: the rendered manifests are not valid YAML: {e}\n     output: {out}")
        except (KeyError, IndexError, TypeError, StopIteration) as e:
            # A field the checks rely on is missing or has the wrong shape.
            failed += 1
            where = traceback.extract_tb(e.__traceback__)[-1]
            print(f"FAIL {name}: missing or malformed field ({type(e).__name__}: {e}) at check_chart.py:{where.lineno}: {where.line}\n     output: {out}")
        except Exception:  # a bug in a check is a failure too, with its trace
            failed += 1
            print(f"FAIL {name}: unexpected error\n{traceback.format_exc()}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
