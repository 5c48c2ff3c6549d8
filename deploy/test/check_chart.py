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

Ends with "N passed, N failed" and exits 1 if anything failed.
"""

import argparse
import base64
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
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
NAMESPACED = {"ConfigMap", "Deployment", "PodDisruptionBudget", "Secret", "Service",
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
# files a pod is given from a Secret. No Secret holds a CA's private key.
MOUNTABLE_SECRET_KEYS = {"ca.crt", "tls.crt", "tls.key"}


def public_key(pem, private=False):
    """The PEM public key of a certificate or a private key (openssl)."""
    out = openssl("pkey", "-pubout", stdin=pem) if private else openssl("x509", "-noout", "-pubkey", stdin=pem)
    expect(out.returncode == 0, f"openssl cannot read {'a private key' if private else 'a certificate'}: {out.stderr}")
    return out.stdout


def check_secrets(r):
    """Every Secret the chart makes holds a CA certificate, a certificate it
    signed and that certificate's own key: no CA key, nothing else."""
    for secret in r.all("Secret"):
        sname = f"Secret {secret['metadata']['name']}"
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
    """{path in the container: (Secret name, key)} for the Secret files `c` mounts."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    files = {}
    for m in c.get("volumeMounts", []):
        secret = volumes.get(m["name"], {}).get("secret")
        if secret:
            for item in secret["items"]:
                files[f"{m['mountPath'].rstrip('/')}/{item['path']}"] = (secret["secretName"], item["key"])
    return files


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
    workloads = r.all("StatefulSet") + r.all("Deployment")
    for w in workloads:
        wname = f"{w['kind']} {w['metadata']['name']}"
        template = w["spec"]["template"]
        expect(selects(w["spec"]["selector"]["matchLabels"], template["metadata"]["labels"]),
               f"{wname}: selector does not select its own pods")
        pod = template["spec"]
        expect(pod.get("serviceAccountName") in accounts, f"{wname}: service account {pod.get('serviceAccountName')!r} is not rendered")
        expect(pod.get("automountServiceAccountToken") is False, f"{wname}: mounts an API token it does not need")
        expect(pod["securityContext"].get("runAsNonRoot") is True, f"{wname}: pod may run as root")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in w["spec"].get("volumeClaimTemplates", [])}
        for v in volumes.values():
            if "configMap" in v:
                expect(v["configMap"]["name"] in config_maps, f"{wname}: volume {v['name']} names a ConfigMap not rendered")
            if "secret" in v:
                expect(v["secret"]["secretName"] in secrets, f"{wname}: volume {v['name']} names a Secret not rendered")
                # Only named files, so a CA key that a Secret brought by the
                # user may hold never reaches a pod.
                items = v["secret"].get("items")
                expect(items, f"{wname}: volume {v['name']} mounts every key of Secret {v['secret']['secretName']}")
                for item in items:
                    expect(item["key"] in MOUNTABLE_SECRET_KEYS,
                           f"{wname}: volume {v['name']} mounts {item['key']!r}, which is not one of {sorted(MOUNTABLE_SECRET_KEYS)}")
        # Init containers (the mesh gateway's native sidecar agent) are Weft containers too.
        for c in pod.get("initContainers", []) + pod["containers"]:
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
                  pdb=True, storage_class=None, size="10Gi", verify_incoming=False, tls_secret=None):
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
    expect(config_dir in mounts and "configMap" in volumes[mounts[config_dir]], "--config-dir is not the mounted ConfigMap")
    cm = r.find("ConfigMap", volumes[mounts[config_dir]]["configMap"]["name"])
    expect(all(k.endswith(".json") for k in cm["data"]), "config files must be .json (or .hcl) to be read")

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
    expect_eq(sorted(files.values()), [(secret_name, k) for k in ("ca.crt", "tls.crt", "tls.key")], "Secret files the servers mount")
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
                   network="", tls_secret=None):
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


def run_webhook(r, fullname, image, transparent_proxy=False, inject_by_default=False):
    """Runs the real `weft k8s webhook` with the rendered Deployment's
    arguments and the rendered Secret's files, and calls it as the API server
    would: over TLS to <service>.<namespace>.svc, trusting only the caBundle."""
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


def materialize(r, pod, c, root):
    """Writes what `c` mounts from ConfigMaps and Secrets under `root` (a
    mount at /x lands in root/x), and rewrites the mount paths in the config
    files to where they landed. Returns {mount path: local path}."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    local = {}
    config_files = []
    for m in c.get("volumeMounts", []):
        v = volumes.get(m["name"], {})
        path = os.path.join(root, m["mountPath"].lstrip("/"))
        local[m["mountPath"]] = path
        os.makedirs(path, exist_ok=True)
        if "configMap" in v:
            for fname, text in r.find("ConfigMap", v["configMap"]["name"])["data"].items():
                config_files.append(os.path.join(path, fname))
                with open(config_files[-1], "w") as fh:
                    fh.write(text)
        elif "secret" in v:
            data = r.find("Secret", v["secret"]["secretName"])["data"]
            for item in v["secret"]["items"]:
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


def run_rpc_tls(r, fullname):
    """Runs two real servers with the rendered servers' config directory and
    TLS files, and a client agent with the mesh gateway's, on loopback: the
    servers elect a leader over TLS (each presenting the generated certificate
    as a client too) and the client agent, trusting only the RPC CA and the
    name server.<datacenter>.<domain>, follows their state."""
    if WEFT is None:
        return
    sts = r.find("StatefulSet", f"{fullname}-server")
    server = container(sts, "weft")
    dep = r.find("Deployment", f"{fullname}-mesh-gateway")
    agent = dep["spec"]["template"]["spec"]["initContainers"][0]
    sf, af = flags(server["args"]), flags(agent["args"])
    rpc = [free_port(), free_port()]
    procs, logs = [], []
    with tempfile.TemporaryDirectory() as d:
        def start(name, container_spec, pod, args):
            root = os.path.join(d, name)
            local = materialize(r, pod, container_spec, root)
            f = flags(container_spec["args"])
            http = free_port()
            cmd = [WEFT, "agent", *args, f"--node={name}", f"--data-dir={os.path.join(root, 'data')}",
                   f"--config-dir={local[one_flag(f, 'config-dir')]}",
                   f"--datacenter={one_flag(f, 'datacenter')}", f"--domain={one_flag(f, 'domain')}",
                   f"--http-addr=127.0.0.1:{http}", f"--dns-addr=127.0.0.1:{free_port()}"]
            log = open(os.path.join(d, name + ".log"), "w+")
            logs.append((name, log))
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            return f"127.0.0.1:{http}"

        def log_tails():
            out = []
            for name, log in logs:
                log.seek(0)
                out.append(f"--- {name}:\n" + "".join(log.readlines()[-15:]))
            return "\n".join(out)

        try:
            joins = [f"--retry-join=127.0.0.1:{p}" for p in rpc]
            s0 = start("s0", server, sts["spec"]["template"]["spec"],
                       ["--server", "--bootstrap-expect=2", f"--rpc-addr=127.0.0.1:{rpc[0]}", *joins])
            start("s1", server, sts["spec"]["template"]["spec"],
                  ["--server", "--bootstrap-expect=2", f"--rpc-addr=127.0.0.1:{rpc[1]}", *joins])
            client = start("gw", agent, dep["spec"]["template"]["spec"],
                           [f"--network={one_flag(af, 'network')}", f"--retry-join=127.0.0.1:{rpc[0]}",
                            "--advertise=127.0.0.1"])
            expect_eq(one_flag(sf, "datacenter"), one_flag(af, "datacenter"), "servers' vs gateway agent's --datacenter")
            deadline = time.monotonic() + 60
            while True:
                members = subprocess.run([WEFT, "members", "--http-addr", client], capture_output=True, text=True)
                alive = {line.split()[0] for line in members.stdout.splitlines()[1:] if " alive " in line}
                if {"s0", "s1", "gw"} <= alive:
                    break
                if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                    raise CheckFailed(f"servers and client agent did not come together over TLS "
                                      f"(members: {members.stdout.strip() or members.stderr.strip()})\n{log_tails()}")
                time.sleep(0.5)
            peers = subprocess.run([WEFT, "operator", "raft", "list-peers", "--http-addr", s0], capture_output=True, text=True)
            expect(peers.returncode == 0 and "leader" in peers.stdout and "s0" in peers.stdout and "s1" in peers.stdout,
                   f"the servers are not one Raft cluster: {peers.stdout}{peers.stderr}")
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            for _, log in logs:
                log.close()


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
                       replicas=1, datacenter="dc1", tls_secret=None):
    """The mesh gateway: a client agent in `network` joined to the servers,
    and `weft connect gateway --kind mesh` advertising `wan` to other networks."""
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
    expect_eq([o["metadata"]["name"] for o in r.all("Secret")], [f"{fullname}-server-tls"], "Secrets with connectInject disabled")


# ---------------------------------------------------------------- scenarios

DEFAULT_IMAGE = None  # weft/weft:<appVersion>, set in main()


def scenario_default(r):
    check_common(r, DEFAULT_IMAGE)
    cm = check_servers(r, "prod-weft", 3)
    expect_eq(sorted(cm["data"]), ["extra-config.json", "rpc-tls.json"], "default server config files")
    expect_eq(cm["data"]["extra-config.json"], "{}", "default server extra config")
    check_injector(r, "prod-weft", DEFAULT_IMAGE)
    run_webhook(r, "prod-weft", DEFAULT_IMAGE)
    check_no_mesh_gateway(r)


def scenario_replicas5(r):
    check_common(r, DEFAULT_IMAGE)
    check_servers(r, "prod-weft", 5)


def scenario_inject_disabled(r):
    check_common(r, DEFAULT_IMAGE)
    check_servers(r, "prod-weft", 3)
    check_no_injector(r, "prod-weft")


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


def scenario_gateway_static(r):
    check_common(r, DEFAULT_IMAGE)
    check_servers(r, "prod-weft", 3)
    check_mesh_gateway(r, "prod-weft", "east_2", "203.0.113.7:9443", service_type="ClusterIP", replicas=2)


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
    run_rpc_tls(r, "prod-weft")


def scenario_verify_incoming(r):
    check_common(r, DEFAULT_IMAGE)
    check_servers(r, "prod-weft", 3, verify_incoming=True)


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
    ("server.tls.verifyIncoming=true", ["--set", "server.tls.verifyIncoming=true"], scenario_verify_incoming),
    ("server.tls.existingSecret, with the mesh gateway",
     ["--set", f"server.tls.existingSecret=rpc-certs,network=east,{GATEWAY},meshGateway.wanAddress.source=NodeIP"],
     scenario_existing_tls_secret),
    ("server.tls.verifyIncoming not a boolean is refused", ["--set-string", "server.tls.verifyIncoming=true"],
     "server.tls.verifyIncoming must be true or false"),
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
