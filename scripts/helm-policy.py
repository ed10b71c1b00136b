#!/usr/bin/env python3
"""Checks the objects the Helm chart renders (helm template output).

  helm-policy.py [--external-secret NAME]... RENDERED.yaml...
                                         schema validation and policy
  helm-policy.py [--external-secret NAME]... --self-test RENDERED.yaml
                                         each policy, shown to catch a
                                         broken copy of the objects

Schemas: every object is validated, strictly (unknown fields are errors),
against the Kubernetes JSON schemas kubernetes-validate ships, for the
oldest version the chart supports and the newest the package has. Objects
of CRDs (the Prometheus Operator's ServiceMonitor) have no schema there and
are checked by hand.

Policy: every container has gRPC readiness and liveness probes on its own
port and service name, memory requests and limits and a CPU request, and
the restricted security context (non-root, read-only root filesystem, no
privilege escalation, all capabilities dropped, seccomp RuntimeDefault);
every Secret, ConfigMap, PersistentVolumeClaim and ServiceAccount a pod
names is rendered too; each service is the right kind of workload, with a
Service, a PodDisruptionBudget and a NetworkPolicy selecting it; and the
NetworkPolicies allow exactly the pipeline's edges between the services;
trailhound.toml in the ConfigMap is TOML with only trailhound's sections.
With TLS (a [tls] section): every service mounts its own certificate where
[tls] names it (a cert-manager Certificate whose first DNS name is the
service's, when the chart renders them), is probed by `trailhound probe`
(the kubelet's gRPC probe speaks no TLS), and reads a configuration that
requires client certificates everywhere but health's dashboard; [auth]
without client certificates is refused.
"""

import copy
import sys
import tomllib

import kubernetes_validate
import yaml

# The oldest Kubernetes the chart supports, and the newest the package has.
VERSIONS = ["1.33.0", kubernetes_validate.utils.latest_version()]

SERVICES = ["ingest", "enrich", "detect", "insights", "notify", "health"]
PORTS = dict(zip(SERVICES, range(50051, 50057)))
KINDS = {
    "ingest": "Deployment",
    "enrich": "Deployment",
    "health": "Deployment",
    "detect": "StatefulSet",
    "insights": "StatefulSet",
    "notify": "StatefulSet",
}
# Who may open connections to whom: the pipeline, and health to all.
EDGES = {("ingest", "enrich"), ("enrich", "detect"), ("detect", "insights"), ("notify", "insights")}
EDGES |= {("health", s) for s in SERVICES if s != "health"}
CRD_GROUPS = {"monitoring.coreos.com", "cert-manager.io"}
# The sections trailhound.toml may have.
SECTIONS = {"aws", "opensearch", "tls", "auth", "limits", *SERVICES}
CONFIG_DIR = "/etc/trailhound/config/"


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def name(doc):
    return f"{doc['kind']}/{doc['metadata']['name']}"


def component(labels):
    return (labels or {}).get("app.kubernetes.io/component")


def selects(selector, labels):
    match = (selector or {}).get("matchLabels", {})
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def schema_problems(docs):
    problems = []
    for doc in docs:
        group = doc["apiVersion"].split("/")[0]
        if group in CRD_GROUPS:
            spec = doc.get("spec", {})
            if doc["kind"] == "Certificate":
                dns = spec.get("dnsNames") or []
                if not spec.get("secretName") or not spec.get("issuerRef", {}).get("name"):
                    problems.append(f"{name(doc)}: a Certificate needs a secretName and an issuerRef")
                if not dns or dns[0] not in SERVICES:
                    problems.append(f"{name(doc)}: the first DNS name is not a service's name: {dns}")
                if "127.0.0.1" not in (spec.get("ipAddresses") or []):
                    problems.append(f"{name(doc)}: no 127.0.0.1, which its own probe connects to")
                if "client auth" not in (spec.get("usages") or []):
                    problems.append(f"{name(doc)}: not usable as a client certificate (mTLS)")
            elif not spec.get("selector") or not spec.get("endpoints"):
                problems.append(f"{name(doc)}: a ServiceMonitor needs a selector and endpoints")
            continue
        for version in VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = "/".join(str(p) for p in e.path)
                problems.append(f"{name(doc)} (Kubernetes {version}): {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                problems.append(f"{name(doc)}: {e.message}")
    return problems


def shard_problems(where, pod, n, deployments):
    """Sharded detect: each pod owns share I of N (--shard from its
    pod-index label), and enrich sends to every pod, in shard order."""
    problems = []
    c = pod["containers"][0]
    args = c.get("args", [])
    want = f"$(TRAILHOUND_POD_INDEX)/{n}"
    if "--shard" not in args or args[args.index("--shard") + 1:][:1] != [want]:
        problems.append(f"{where}: {n} replicas of a store without --shard {want}")
    env = {e["name"]: e for e in c.get("env", [])}
    field = env.get("TRAILHOUND_POD_INDEX", {}).get("valueFrom", {}).get("fieldRef", {})
    if field.get("fieldPath") != "metadata.labels['apps.kubernetes.io/pod-index']":
        problems.append(f"{where}: TRAILHOUND_POD_INDEX is not the pod-index label")
    name = where.split("/")[-1]
    for d in deployments:
        ca = d["spec"]["template"]["spec"]["containers"][0].get("args", [])
        if "--detect-endpoint" not in ca:
            continue
        eps = ca[ca.index("--detect-endpoint") + 1].split(",")
        expected = [f"{name}-{i}.{name}-headless." for i in range(n)]
        if len(eps) != n or any(e not in ep for e, ep in zip(expected, eps)):
            problems.append(f"{where}: enrich's --detect-endpoint {eps} is not its {n} pods in order")
    return problems


def container_problems(where, c, pod, service):
    problems = []
    sc = c.get("securityContext", {})
    psc = pod.get("securityContext", {})
    port = PORTS[service]
    grpc_name = f"trailhound.{service}.v1.{service.capitalize()}Service"
    exec_probe = ["/usr/local/bin/trailhound", "probe", "--service", service, f"127.0.0.1:{port}"]
    for probe in ("readinessProbe", "livenessProbe"):
        p = c.get(probe, {}).get("grpc")
        command = c.get(probe, {}).get("exec", {}).get("command")
        if command is not None:
            if command != exec_probe:
                problems.append(f"{where}: {probe} runs {command}, not {exec_probe}")
        elif not p:
            problems.append(f"{where}: no gRPC {probe}")
        elif p.get("port") != port or p.get("service") != grpc_name:
            problems.append(f"{where}: {probe} checks {p}, not port {port} service {grpc_name}")
    res = c.get("resources", {})
    for kind, what in (("limits", "memory"), ("requests", "memory"), ("requests", "cpu")):
        if not res.get(kind, {}).get(what):
            problems.append(f"{where}: no {what} {kind}")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation is not false")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: the root filesystem is writable")
    if sc.get("privileged"):
        problems.append(f"{where}: privileged")
    caps = sc.get("capabilities", {})
    if "ALL" not in caps.get("drop", []) or caps.get("add"):
        problems.append(f"{where}: capabilities not all dropped")
    if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")) or sc.get("runAsUser") == 0:
        problems.append(f"{where}: may run as root")
    seccomp = sc.get("seccompProfile") or psc.get("seccompProfile") or {}
    if seccomp.get("type") != "RuntimeDefault":
        problems.append(f"{where}: seccomp is not RuntimeDefault")
    if c.get("image", "").endswith(":latest") or ":" not in c.get("image", ""):
        problems.append(f"{where}: image {c.get('image')!r} has no pinned tag")
    return problems


def reference_problems(where, pod, rendered, external_secrets):
    problems = []

    def need(kind, ref):
        if ref and ref not in rendered[kind] and not (kind == "Secret" and ref in external_secrets):
            problems.append(f"{where}: {kind} {ref} is referenced but not rendered")

    need("ServiceAccount", pod.get("serviceAccountName"))
    for s in pod.get("imagePullSecrets", []):
        need("Secret", s.get("name"))
    for v in pod.get("volumes", []):
        need("Secret", v.get("secret", {}).get("secretName"))
        need("ConfigMap", v.get("configMap", {}).get("name"))
        need("PersistentVolumeClaim", v.get("persistentVolumeClaim", {}).get("claimName"))
        for src in v.get("projected", {}).get("sources", []):
            need("Secret", src.get("secret", {}).get("name"))
            need("ConfigMap", src.get("configMap", {}).get("name"))
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        for e in c.get("envFrom", []):
            need("Secret", e.get("secretRef", {}).get("name"))
            need("ConfigMap", e.get("configMapRef", {}).get("name"))
        for e in c.get("env", []):
            vf = e.get("valueFrom", {})
            need("Secret", vf.get("secretKeyRef", {}).get("name"))
            need("ConfigMap", vf.get("configMapKeyRef", {}).get("name"))
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: mounts a Kubernetes API token it never uses")
    return problems


def network_problems(policies):
    problems = []
    ingress, egress = set(), set()
    for np in policies:
        spec = np["spec"]
        target = component(spec["podSelector"].get("matchLabels"))
        for rule in spec.get("ingress", []):
            if not rule.get("from"):
                problems.append(f"{name(np)}: an ingress rule open to everyone")
            for peer in rule.get("from", []):
                src = component(peer.get("podSelector", {}).get("matchLabels"))
                if src:
                    ingress.add((src, target))
            for p in rule.get("ports", []):
                if p.get("port") != PORTS.get(target):
                    problems.append(f"{name(np)}: ingress on port {p.get('port')}, not {target}'s")
        if "Egress" in spec.get("policyTypes", []):
            for rule in spec.get("egress", []):
                for peer in rule.get("to", []):
                    dst = component(peer.get("podSelector", {}).get("matchLabels"))
                    if dst:
                        egress.add((target, dst))
    if ingress != EDGES:
        problems.append(
            f"NetworkPolicies let in {sorted(ingress - EDGES)} beyond the pipeline's edges"
            f" and miss {sorted(EDGES - ingress)}"
        )
    if egress and egress != EDGES:
        problems.append(
            f"NetworkPolicies let out {sorted(egress - EDGES)} beyond the pipeline's edges"
            f" and miss {sorted(EDGES - egress)}"
        )
    return problems


def env_value(c, key):
    return next((e.get("value") for e in c.get("env", []) if e.get("name") == key), None)


def tls_problems(where, service, pod, configs, certificates):
    """What [tls] and [auth] ask of one workload."""
    problems = []
    c = pod["containers"][0]
    path = env_value(c, "TRAILHOUND_CONFIG") or ""
    key = path[len(CONFIG_DIR):] if path.startswith(CONFIG_DIR) else None
    config = configs.get(key)
    if config is None:
        return [f"{where}: TRAILHOUND_CONFIG {path!r} is no rendered configuration"]
    tls, auth = config.get("tls"), config.get("auth", {})
    if auth.get("mode", "none") != "none" and not (tls or {}).get("client_ca"):
        problems.append(f"{where}: [auth] without client certificates ([tls] client_ca): "
                        "the services could not tell each other apart")
    if not tls:
        return problems
    if not tls.get("cert") or not tls.get("key"):
        problems.append(f"{where}: [tls] without cert and key")
        return problems
    if tls.get("client_cert_optional") and service != "health":
        problems.append(f"{where}: takes callers without a client certificate")
    directory = tls["cert"].rsplit("/", 1)[0]
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    volume = volumes.get(mounts.get(directory), {})
    secret = volume.get("secret", {}).get("secretName")
    if not secret:
        problems.append(f"{where}: nothing mounted at {directory}, where [tls] cert is")
    elif certificates and certificates.get(secret) != service:
        problems.append(f"{where}: mounts certificate {secret}, which is "
                        f"{certificates.get(secret) or 'no Certificate'}'s, not {service}'s")
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if "grpc" in c.get(probe, {}):
            problems.append(f"{where}: a gRPC {probe} against a TLS port (the kubelet's speaks no TLS)")
    return problems


def policy_problems(docs, external_secrets=()):
    problems = []
    certificates = {d["spec"].get("secretName"): (d["spec"].get("dnsNames") or [None])[0]
                    for d in docs if d["kind"] == "Certificate"}
    external_secrets = set(external_secrets) | set(certificates)
    configs = {}
    for d in docs:
        if d["kind"] == "ConfigMap":
            for k, v in (d.get("data") or {}).items():
                if k.endswith(".toml"):
                    try:
                        configs[k] = tomllib.loads(v)
                    except tomllib.TOMLDecodeError:
                        pass  # reported below
    rendered = {}
    for d in docs:
        rendered.setdefault(d["kind"], set()).add(d["metadata"]["name"])
    for kind in ("Secret", "ConfigMap", "PersistentVolumeClaim", "ServiceAccount"):
        rendered.setdefault(kind, set())
    by_kind = lambda kind: [d for d in docs if d["kind"] == kind]  # noqa: E731
    workloads = by_kind("Deployment") + by_kind("StatefulSet")
    services = by_kind("Service")
    seen = set()
    for w in workloads:
        pod = w["spec"]["template"]["spec"]
        labels = w["spec"]["template"]["metadata"].get("labels", {})
        service = component(labels)
        where = name(w)
        if service not in KINDS:
            problems.append(f"{where}: not one of the six services")
            continue
        seen.add(service)
        if w["kind"] != KINDS[service]:
            problems.append(f"{where}: {service} should be a {KINDS[service]}")
        if not selects(w["spec"]["selector"], labels):
            problems.append(f"{where}: its selector does not match its pods")
        for c in pod.get("containers", []):
            problems += container_problems(f"{where} container {c['name']}", c, pod, service)
        problems += reference_problems(where, pod, rendered, external_secrets)
        problems += tls_problems(where, service, pod, configs, certificates)
        if w["kind"] == "StatefulSet":
            replicas = w["spec"].get("replicas")
            if service == "detect" and isinstance(replicas, int) and replicas > 1:
                problems += shard_problems(where, pod, replicas, by_kind("Deployment"))
            elif replicas != 1:
                problems.append(f"{where}: an embedded store needs exactly one replica")
            headless = [s for s in services if s["metadata"]["name"] == w["spec"].get("serviceName")]
            if not headless or headless[0]["spec"].get("clusterIP") != "None":
                problems.append(f"{where}: serviceName is not a rendered headless Service")
            claims = [t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])]
            if "data" not in claims:
                problems.append(f"{where}: no PersistentVolumeClaim for its store")
        if not any(selects({"matchLabels": s["spec"].get("selector", {})}, labels)
                   and s["spec"].get("clusterIP") != "None" for s in services):
            problems.append(f"{where}: no Service reaches it")
        if not any(selects(p["spec"]["selector"], labels) for p in by_kind("PodDisruptionBudget")):
            problems.append(f"{where}: no PodDisruptionBudget")
        if not any(selects(n["spec"]["podSelector"], labels) for n in by_kind("NetworkPolicy")):
            problems.append(f"{where}: no NetworkPolicy")
    for missing in sorted(set(SERVICES) - seen):
        problems.append(f"no workload for {missing}")
    problems += network_problems(by_kind("NetworkPolicy"))
    for cm in by_kind("ConfigMap"):
        for key, text in (cm.get("data") or {}).items():
            if not key.endswith(".toml"):
                continue
            try:
                unknown = set(tomllib.loads(text)) - SECTIONS
            except tomllib.TOMLDecodeError as e:
                problems.append(f"{name(cm)}: {key} is not TOML: {e}")
                continue
            if unknown:
                problems.append(f"{name(cm)}: {key} has unknown sections {sorted(unknown)}")
    return problems


# Breakages each check must catch: (what, how to break a copy).
def _containers(docs, service):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet") and \
                component(d["spec"]["template"]["metadata"]["labels"]) == service:
            return d, d["spec"]["template"]["spec"]["containers"][0]
    raise SystemExit(f"self-test: no {service} workload to break")


def _break(docs, what):
    docs = copy.deepcopy(docs)
    w, c = _containers(docs, "detect")
    if what == "no readiness probe":
        del c["readinessProbe"]
    elif what == "liveness probe on another service":
        if "exec" in c["livenessProbe"]:
            c["livenessProbe"]["exec"]["command"][3] = "ingest"
        else:
            c["livenessProbe"]["grpc"]["service"] = "trailhound.ingest.v1.IngestService"
    elif what == "a gRPC probe against TLS":
        c["readinessProbe"] = {"grpc": {"port": 50053, "service": "trailhound.detect.v1.DetectService"}}
    elif what == "another service's certificate":
        for v in w["spec"]["template"]["spec"]["volumes"]:
            if v["name"] == "tls":
                v["secret"]["secretName"] = v["secret"]["secretName"].replace("detect", "ingest")
    elif what == "auth without client certificates":
        for d in docs:
            if d["kind"] == "ConfigMap" and "trailhound.toml" in d["data"]:
                d["data"]["trailhound.toml"] = d["data"]["trailhound.toml"].replace("client_ca", "# client_ca")
    elif what == "a Certificate that is no service's":
        for d in docs:
            if d["kind"] == "Certificate":
                d["spec"]["dnsNames"][0] = "example.com"
                break
    elif what == "writable root filesystem":
        c["securityContext"]["readOnlyRootFilesystem"] = False
    elif what == "no memory limit":
        del c["resources"]["limits"]["memory"]
    elif what == "a capability added":
        c["securityContext"]["capabilities"]["add"] = ["NET_ADMIN"]
    elif what == "a missing Secret":
        c.setdefault("envFrom", []).append({"secretRef": {"name": "nowhere"}})
    elif what == "two replicas of a store":
        w["spec"]["replicas"] = 2
    elif what == "no PodDisruptionBudget":
        docs = [d for d in docs if not (d["kind"] == "PodDisruptionBudget"
                                        and d["metadata"]["name"] == w["metadata"]["name"])]
    elif what == "an edge outside the pipeline":
        for d in docs:
            if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == w["metadata"]["name"]:
                d["spec"]["ingress"][0]["from"].append({"podSelector": {"matchLabels": {
                    **d["spec"]["podSelector"]["matchLabels"], "app.kubernetes.io/component": "ingest"}}})
    elif what == "broken TOML":
        for d in docs:
            if d["kind"] == "ConfigMap" and "trailhound.toml" in d["data"]:
                d["data"]["trailhound.toml"] += "\n[detect\n"
    elif what == "an unknown field":
        c["readinessProbe"]["grpcc"] = {}
    else:
        raise SystemExit(f"self-test: unknown breakage {what}")
    return docs


BREAKAGES = [
    "no readiness probe", "liveness probe on another service", "writable root filesystem",
    "no memory limit", "a capability added", "a missing Secret", "two replicas of a store",
    "no PodDisruptionBudget", "an edge outside the pipeline", "broken TOML", "an unknown field",
]
# More, for objects rendered with TLS and auth.
TLS_BREAKAGES = [
    "a gRPC probe against TLS", "another service's certificate", "auth without client certificates",
    "a Certificate that is no service's",
]


def self_test(path, external=()):
    docs = load(path)
    clean = policy_problems(docs, external) + schema_problems(docs)
    if clean:
        raise SystemExit("self-test: the unbroken objects fail:\n  " + "\n  ".join(clean))
    missed = []
    tls = any(d["kind"] == "Certificate" for d in docs)
    for what in BREAKAGES + (TLS_BREAKAGES if tls else []):
        broken = _break(docs, what)
        schema = what in ("an unknown field", "a Certificate that is no service's")
        found = policy_problems(broken, external) + (schema_problems(broken) if schema else [])
        if not found:
            missed.append(what)
        else:
            print(f"self-test: {what}: caught ({found[0]})")
    if missed:
        raise SystemExit(f"self-test: not caught: {missed}")


def main(argv):
    # Secrets the values name but the chart leaves to you (an OIDC client
    # secret, notify.existingSecret): --external-secret NAME, repeatable.
    external = []
    while argv[:1] == ["--external-secret"]:
        external.append(argv[1])
        argv = argv[2:]
    if argv[:1] == ["--self-test"]:
        for path in argv[1:]:
            self_test(path, external)
        return
    failed = False
    for path in argv:
        docs = load(path)
        problems = schema_problems(docs) + policy_problems(docs, external)
        for p in problems:
            print(f"{path}: {p}", file=sys.stderr)
        failed |= bool(problems)
        print(f"{path}: {len(docs)} objects valid for Kubernetes {', '.join(VERSIONS)}; policy holds"
              if not problems else f"{path}: {len(problems)} problems")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
