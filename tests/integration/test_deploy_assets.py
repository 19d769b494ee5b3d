"""test_deploy_assets.py: the files operators apply, checked offline.

- config/kubernetes/*.yaml: a schema check of our own (no API server here;
  `kubectl apply --dry-run=client` needs one for discovery): apiVersion/kind
  pairs, required fields, label selectors that really select the pods, port
  names and probe paths that exist, volumes, RBAC for pod discovery, the
  PodMonitor's honorLabels, and the ConfigMap's meterd.yaml through
  `meterd check-config`.  The checker is itself tested: broken copies of the
  manifests must be reported.
- config/systemd/meterd.service through `systemd-analyze verify`.
- config/costmanagement/*.yaml: the settings Cost Management needs.
- dashboards/: JSON valid, one datasource convention, identical to what
  dashboards/generate.py writes; alerts through `promtool check rules`.
Uses python3-yaml (scripts/deps.sh test)."""
import copy
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

KINDS = {  # kind -> (apiVersion, namespaced)
    "Namespace": ("v1", False),
    "ServiceAccount": ("v1", True),
    "ConfigMap": ("v1", True),
    "Service": ("v1", True),
    "PersistentVolumeClaim": ("v1", True),
    "Deployment": ("apps/v1", True),
    "ClusterRole": ("rbac.authorization.k8s.io/v1", False),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io/v1", False),
    "Role": ("rbac.authorization.k8s.io/v1", True),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", True),
    "PodMonitor": ("monitoring.coreos.com/v1", True),
    "Kustomization": ("kustomize.config.k8s.io/v1beta1", False),
}


def src(*p):
    return os.path.join(harness.ARGS.source, *p)


def load_dir(d):
    """{filename: [documents]}"""
    out = {}
    for f in sorted(glob.glob(os.path.join(d, "*.yaml"))):
        with open(f) as fh:
            out[os.path.basename(f)] = [x for x in yaml.safe_load_all(fh) if x is not None]
    return out


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_manifests(files, meterd):
    """Returns a list of problems (empty: fine)."""
    errs = []
    objs = []
    for fname, docs in files.items():
        for d in docs:
            objs.append((fname, d))
    by_kind = {}
    for fname, d in objs:
        kind, api = d.get("kind"), d.get("apiVersion")
        if kind not in KINDS:
            errs.append("%s: unknown kind %r" % (fname, kind))
            continue
        if KINDS[kind][0] != api:
            errs.append("%s: %s needs apiVersion %s, has %r" % (fname, kind, KINDS[kind][0], api))
        if kind == "Kustomization":
            by_kind.setdefault(kind, []).append(d)
            continue
        md = d.get("metadata") or {}
        if not md.get("name"):
            errs.append("%s: %s without metadata.name" % (fname, kind))
        if KINDS[kind][1] and not md.get("namespace"):
            errs.append("%s: namespaced %s %s without metadata.namespace" % (
                fname, kind, md.get("name")))
        if not KINDS[kind][1] and md.get("namespace"):
            errs.append("%s: cluster-scoped %s has a namespace" % (fname, kind))
        by_kind.setdefault(kind, []).append(d)

    def named(kind, name, ns=None):
        return [o for o in by_kind.get(kind, []) if o["metadata"]["name"] == name and
                (ns is None or o["metadata"].get("namespace") == ns)]

    namespaces = {o["metadata"]["name"] for o in by_kind.get("Namespace", [])}
    for fname, d in objs:
        ns = (d.get("metadata") or {}).get("namespace")
        if ns and ns not in namespaces:
            errs.append("%s: namespace %r is not created by the manifests" % (fname, ns))

    deps = by_kind.get("Deployment", [])
    if len(deps) != 1:
        errs.append("expected one Deployment, found %d" % len(deps))
        return errs
    dep = deps[0]
    dns = dep["metadata"]["namespace"]
    spec = dep.get("spec") or {}
    tmpl = spec.get("template") or {}
    pod_labels = (tmpl.get("metadata") or {}).get("labels") or {}
    pod = tmpl.get("spec") or {}
    if not selects((spec.get("selector") or {}).get("matchLabels"), pod_labels):
        errs.append("Deployment selector does not select its pod template labels")
    if spec.get("replicas") != 1 or (spec.get("strategy") or {}).get("type") != "Recreate":
        errs.append("Deployment: SQLite has one writer: replicas 1 and strategy Recreate")
    if not isinstance(pod.get("terminationGracePeriodSeconds"), int) or \
            pod["terminationGracePeriodSeconds"] < 30:
        errs.append("Deployment: terminationGracePeriodSeconds missing or under 30")
    psc = pod.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True:
        errs.append("Deployment: pod securityContext.runAsNonRoot must be true")
    sa = pod.get("serviceAccountName")
    if not sa or not named("ServiceAccount", sa, dns):
        errs.append("Deployment: serviceAccountName %r has no ServiceAccount" % sa)
    containers = pod.get("containers") or []
    if len(containers) != 1:
        errs.append("Deployment: expected one container")
        return errs
    c = containers[0]
    for k in ("name", "image"):
        if not c.get(k):
            errs.append("container without %s" % k)
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    csc = c.get("securityContext") or {}
    if csc.get("allowPrivilegeEscalation") is not False or \
            csc.get("readOnlyRootFilesystem") is not True:
        errs.append("container securityContext: allowPrivilegeEscalation false and "
                    "readOnlyRootFilesystem true expected")
    want_probe = {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    for probe, path in want_probe.items():
        hg = (c.get(probe) or {}).get("httpGet") or {}
        if hg.get("path") != path:
            errs.append("%s path %r, want %s" % (probe, hg.get("path"), path))
        if hg.get("port") not in ports and hg.get("port") not in ports.values():
            errs.append("%s port %r is not a container port" % (probe, hg.get("port")))
    vols = {v["name"]: v for v in pod.get("volumes") or []}
    mounts = {m["name"]: m for m in c.get("volumeMounts") or []}
    for m in mounts:
        if m not in vols:
            errs.append("volumeMount %r has no volume" % m)
    for name, v in vols.items():
        if "configMap" in v and not named("ConfigMap", v["configMap"]["name"], dns):
            errs.append("volume %r: ConfigMap %r missing" % (name, v["configMap"]["name"]))
        if "persistentVolumeClaim" in v and not named(
                "PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"], dns):
            errs.append("volume %r: PVC missing" % name)
    if not any("persistentVolumeClaim" in v for v in vols.values()):
        errs.append("Deployment: the database needs a PersistentVolumeClaim volume")

    # the configuration: args point at the mounted file; it validates
    args = c.get("args") or []
    cfg_path = args[args.index("-c") + 1] if "-c" in args else None
    if not args or args[0] != "run" or cfg_path is None:
        errs.append("container args must be: run -c FILE")
    cfg_mount = next((m for m in mounts.values()
                      if cfg_path and cfg_path.startswith(m["mountPath"].rstrip("/") + "/")), None)
    if cfg_mount is None or "configMap" not in vols.get(cfg_mount["name"], {}):
        errs.append("config file %r is not on a ConfigMap mount" % cfg_path)
    else:
        cm = named("ConfigMap", vols[cfg_mount["name"]]["configMap"]["name"], dns)[0]
        key = os.path.basename(cfg_path)
        text = (cm.get("data") or {}).get(key)
        if text is None:
            errs.append("ConfigMap has no key %r" % key)
        else:
            with tempfile.TemporaryDirectory() as td:
                p = os.path.join(td, key)
                with open(p, "w") as f:
                    f.write(text)
                r = subprocess.run([meterd, "check-config", "-c", p], capture_output=True,
                                   text=True)
                if r.returncode != 0:
                    errs.append("meterd check-config: %s%s" % (r.stdout, r.stderr))
            conf = yaml.safe_load(text)
            if conf.get("listen") != "0.0.0.0:9180":
                errs.append("meterd.yaml listen %r, want 0.0.0.0:9180" % conf.get("listen"))
            elif int(conf["listen"].rsplit(":", 1)[1]) not in ports.values():
                errs.append("listen port is not a container port")
            if (conf.get("kubernetes") or {}).get("enabled") is not True:
                errs.append("meterd.yaml: kubernetes.enabled must be true")
            db = (conf.get("storage") or {}).get("path", "")
            pvc_mounts = [m["mountPath"] for n, m in mounts.items()
                          if "persistentVolumeClaim" in vols.get(n, {})]
            if not any(db.startswith(mp.rstrip("/") + "/") for mp in pvc_mounts):
                errs.append("storage.path %r is not on the PVC" % db)

    # Service
    for s in by_kind.get("Service", []):
        if not selects((s.get("spec") or {}).get("selector"), pod_labels):
            errs.append("Service %s selects no meterd pod" % s["metadata"]["name"])
        for p in s["spec"].get("ports") or []:
            tp = p.get("targetPort")
            if tp not in ports and tp not in ports.values():
                errs.append("Service targetPort %r is not a container port" % tp)
    # PodMonitor
    pms = by_kind.get("PodMonitor", [])
    if not pms:
        errs.append("no PodMonitor")
    for pm in pms:
        ps = pm.get("spec") or {}
        if not selects((ps.get("selector") or {}).get("matchLabels"), pod_labels):
            errs.append("PodMonitor selects no meterd pod")
        nsel = (ps.get("namespaceSelector") or {}).get("matchNames")
        if nsel is not None and dns not in nsel:
            errs.append("PodMonitor namespaceSelector misses %s" % dns)
        for ep in ps.get("podMetricsEndpoints") or []:
            if ep.get("port") not in ports:
                errs.append("PodMonitor port %r is not a container port name" % ep.get("port"))
            if ep.get("path", "/metrics") != "/metrics":
                errs.append("PodMonitor path %r" % ep.get("path"))
            if ep.get("honorLabels") is not True:
                errs.append("PodMonitor needs honorLabels: true (meterd's namespace label)")
    # RBAC: the service account may list and watch pods
    ok = False
    for b in by_kind.get("ClusterRoleBinding", []) + by_kind.get("RoleBinding", []):
        ref = b.get("roleRef") or {}
        roles = named(ref.get("kind"), ref.get("name"))
        if not roles:
            errs.append("%s %s: roleRef %s/%s missing" % (b["kind"], b["metadata"]["name"],
                                                         ref.get("kind"), ref.get("name")))
            continue
        subj = [x for x in b.get("subjects") or [] if x.get("kind") == "ServiceAccount" and
                x.get("name") == sa and x.get("namespace") == dns]
        for r in roles[0].get("rules") or []:
            if subj and "" in r.get("apiGroups", []) and "pods" in r.get("resources", []) and \
                    {"list", "watch"} <= set(r.get("verbs", [])):
                ok = True
    if not ok:
        errs.append("no binding lets the ServiceAccount list and watch pods")
    # kustomization lists every manifest
    for k in by_kind.get("Kustomization", []):
        listed = set(k.get("resources") or [])
        present = set(files) - {"kustomization.yaml"}
        if listed != present:
            errs.append("kustomization resources %s != files %s" % (sorted(listed),
                                                                    sorted(present)))
    return errs


def test_kubernetes_manifests():
    files = load_dir(src("config", "kubernetes"))
    assert len(files) >= 8, files.keys()
    errs = check_manifests(files, harness.ARGS.meterd)
    assert errs == [], "\n".join(errs)


def test_checker_catches_mistakes():
    """The schema check can fail: each broken copy is reported."""
    base = load_dir(src("config", "kubernetes"))

    def dep(f):
        return f["deployment.yaml"][0]

    def cm(f):
        return f["configmap.yaml"][0]

    breakers = {
        "service selector": lambda f: f["service.yaml"][0]["spec"].__setitem__(
            "selector", {"app.kubernetes.io/name": "other"}),
        "probe path": lambda f: dep(f)["spec"]["template"]["spec"]["containers"][0][
            "readinessProbe"]["httpGet"].__setitem__("path", "/ready"),
        "podmonitor port": lambda f: f["podmonitor.yaml"][0]["spec"][
            "podMetricsEndpoints"][0].__setitem__("port", "metrics"),
        "honorLabels": lambda f: f["podmonitor.yaml"][0]["spec"][
            "podMetricsEndpoints"][0].pop("honorLabels"),
        "rbac verbs": lambda f: f["rbac.yaml"][0]["rules"][0].__setitem__("verbs", ["get"]),
        "apiVersion": lambda f: dep(f).__setitem__("apiVersion", "extensions/v1beta1"),
        "bad meterd.yaml": lambda f: cm(f)["data"].__setitem__(
            "meterd.yaml", cm(f)["data"]["meterd.yaml"] + "bogus_key: 1\n"),
        "grace period": lambda f: dep(f)["spec"]["template"]["spec"].pop(
            "terminationGracePeriodSeconds"),
        "missing namespace": lambda f: f["service.yaml"][0]["metadata"].pop("namespace"),
    }
    for name, brk in breakers.items():
        f = copy.deepcopy(base)
        brk(f)
        errs = check_manifests(f, harness.ARGS.meterd)
        assert errs, "breaking %r went unnoticed" % name


def test_systemd_unit():
    unit = src("config", "systemd", "meterd.service")
    with open(unit) as f:
        text = f.read()
    assert "ExecStart=/usr/bin/meterd run -c /etc/meterd/meterd.yaml" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text
    assert "StateDirectory=meterd" in text
    if shutil.which("systemd-analyze") is None:
        raise AssertionError("systemd-analyze missing (Debian package systemd)")
    with tempfile.TemporaryDirectory() as td:
        p = os.path.join(td, "meterd.service")
        with open(p, "w") as f:
            f.write(text.replace("/usr/bin/meterd", os.path.abspath(harness.ARGS.meterd)))
        r = subprocess.run(["systemd-analyze", "verify", "--man=no", p], capture_output=True,
                           text=True)
        assert r.returncode == 0 and "meterd.service" not in r.stderr, r.stderr


def test_costmanagement_configmaps():
    files = load_dir(src("config", "costmanagement"))
    coll = files["collection-configmap.yaml"][0]
    disp = files["display-configmap.yaml"][0]
    for cm in (coll, disp):
        assert cm["apiVersion"] == "v1" and cm["kind"] == "ConfigMap", cm
    assert disp["metadata"]["labels"].get("cpaas.io/slark.display.config") == "true"
    assert "cpaas.io/slark.display.config" not in coll["metadata"]["labels"]
    entries = yaml.safe_load(coll["data"]["config.yaml"])
    assert len(entries) >= 2
    items = set()
    for e in entries:
        assert e["kind"] == "Project", e
        assert e["mappers"]["cluster"] == "", e
        assert "meterd_tokens_total" in e["usage"]["query"], e
        assert "by (namespace)" in e["usage"]["query"], e
        items.add(e["item"])
    shown = {i["item"] for c in yaml.safe_load(disp["data"]["config.yaml"]) for i in c["items"]}
    assert shown == items, (shown, items)
    with open(src("config", "costmanagement", "README.md")) as f:
        readme = f.read()
    assert "linked" in readme and "cost model" in readme


def test_dashboards_and_rules():
    boards = sorted(glob.glob(src("dashboards", "*.json")))
    assert len(boards) == 3, boards
    titles = set()
    with tempfile.TemporaryDirectory() as td:
        r = subprocess.run([sys.executable, src("dashboards", "generate.py"), td],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        for b in boards:
            with open(b) as f:
                doc = json.load(f)
            with open(os.path.join(td, os.path.basename(b))) as f:
                assert json.load(f) == doc, "%s differs from generate.py's output" % b
            titles.add(doc["title"])
            assert doc["__inputs"][0]["pluginId"] == "prometheus"
            var = [v for v in doc["templating"]["list"] if v["name"] == "datasource"]
            assert var and var[0]["type"] == "datasource" and var[0]["query"] == "prometheus"
            assert doc["panels"], b
            for p in doc["panels"]:
                assert p["datasource"]["uid"] == "${datasource}", (b, p["title"])
                assert p["targets"], (b, p["title"])
                for t in p["targets"]:
                    assert t["datasource"]["uid"] == "${datasource}"
                    assert t["expr"].strip()
    assert titles == {"AI token usage", "Chargeback", "meterd health"}, titles
    r = subprocess.run(["promtool", "check", "rules", src("dashboards", "alerts.yaml")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    with open(src("dashboards", "alerts.yaml")) as f:
        names = {r["alert"] for g in yaml.safe_load(f)["groups"] for r in g["rules"]}
    for want in ("MeterdTargetDown", "MeterdSamplesDropped", "MeterdOverflowSeries",
                 "MeterdUnpricedUsage", "MeterdConfigReloadFailed", "MeterdStoreErrors"):
        assert want in names, (want, names)


if __name__ == "__main__":
    harness.main([test_kubernetes_manifests, test_checker_catches_mistakes, test_systemd_unit,
                  test_costmanagement_configmaps, test_dashboards_and_rules])
