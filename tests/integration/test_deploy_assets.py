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
import re
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


# ---- Cost Management (config/costmanagement/) ----
# The documented keys, from "How to Define a Custom Cost Model" (Cost
# Management 4.1) and the GPU/NPU/vGPU pages: see config/costmanagement/README.md.
CM_COLL_KEYS = {"kind", "category", "item", "period", "usage"}      # + optional labels
CM_MAPPER_KEYS = {"name", "namespace", "cluster", "project"}
CM_DISP_KEYS = {"name", "displayname", "methods"}
CM_METHOD_KEYS = {"name", "displayname", "item", "divisor", "unit"}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                   "unless", "bool", "offset", "inf", "nan"}


def cm_queries(coll):
    """[(where, query)] of every PromQL in the collection config."""
    out = []
    for e in yaml.safe_load(coll["data"]["config"]) or []:
        for part in ("usage", "labels"):
            if isinstance(e.get(part), dict) and "query" in e[part]:
                out.append(("%s %s" % (e.get("item"), part), e[part]["query"]))
    return out


def promql_metric_names(q):
    """Metric names a PromQL expression selects: identifiers left after
    removing strings, label matchers, ranges, grouping clauses and function
    calls.  Good for the expressions we write, not a PromQL parser."""
    q = re.sub(r'"(?:[^"\\]|\\.)*"', '""', q)
    q = re.sub(r"\{[^}]*\}", "", q)
    q = re.sub(r"\[[^\]]*\]", "", q)
    q = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", q)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", q):
        if q[m.end():].lstrip().startswith("("):
            continue                                  # a function or aggregation
        if m.group(0).lower() in PROMQL_KEYWORDS:
            continue
        if m.start() > 0 and (q[m.start() - 1].isdigit() or q[m.start() - 1] == "."):
            continue                                  # 1e3, 5m inside numbers
        names.add(m.group(0))
    return names


def call_args(q, at):
    """The top-level arguments of the call whose "(" is at q[at]."""
    args, depth, cur, i, instr = [], 0, "", at + 1, False
    while i < len(q):
        ch = q[i]
        if instr:
            cur += ch
            if ch == "\\":
                cur += q[i + 1]
                i += 1
            elif ch == '"':
                instr = False
        elif ch == '"':
            instr, cur = True, cur + ch
        elif ch in "([{":
            depth, cur = depth + 1, cur + ch
        elif ch in ")]}" and depth > 0:
            depth, cur = depth - 1, cur + ch
        elif ch == ")":
            return args + [cur.strip()]
        elif ch == "," and depth == 0:
            args, cur = args + [cur.strip()], ""
        else:
            cur += ch
        i += 1
    raise ValueError("unbalanced: %s" % q)


def promql_label_names(q):
    """(labels read, labels written): read by matchers, grouping clauses and
    as label_replace's source; written as label_replace's destination."""
    read, written = set(), set()
    for m in re.finditer(r"\blabel_replace\s*\(", q):
        a = call_args(q, m.end() - 1)
        if len(a) != 5 or not all(x.startswith('"') for x in a[1:]):
            raise ValueError("label_replace with %d arguments: %s" % (len(a), q))
        written.add(a[1].strip('"'))
        read.add(a[3].strip('"'))
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', q)
    for m in re.finditer(r"\{([^}]*)\}", q):
        read |= set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", m.group(1)))
    for body in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", bare):
        read |= {x.strip() for x in body.split(",") if x.strip()}
    return read, written


def check_costmanagement(coll, disp, readme, meterd_readme):
    """Problems of the two ConfigMaps (empty: fine).  The API contract: the
    documented keys, namespaces and labels; ours: categories/items in step
    between the two and with meterd's API items, mappers naming labels the
    query keeps, only labels meterd_tokens_total has."""
    errs = []
    for cm, ns, label, other in (
            (coll, "cpaas-system", "cpaas.io/slark.collection.config",
             "cpaas.io/slark.display.config"),
            (disp, "kube-public", "cpaas.io/slark.display.config",
             "cpaas.io/slark.collection.config")):
        name = (cm.get("metadata") or {}).get("name")
        if cm.get("apiVersion") != "v1" or cm.get("kind") != "ConfigMap":
            errs.append("%s: not a v1 ConfigMap" % name)
        md = cm.get("metadata") or {}
        if md.get("namespace") != ns:
            errs.append("%s: namespace %r, the docs say %s" % (name, md.get("namespace"), ns))
        labels = md.get("labels") or {}
        if labels.get(label) != "true":
            errs.append("%s: label %s: \"true\" missing" % (name, label))
        if other in labels:
            errs.append("%s: has %s too: collection and display are separate" % (name, other))
        if set((cm.get("data") or {})) != {"config"}:
            errs.append("%s: data keys %s, the docs use one key `config`"
                        % (name, sorted(cm.get("data") or {})))
    try:
        entries = yaml.safe_load(coll["data"]["config"]) or []
        shown = yaml.safe_load(disp["data"]["config"]) or []
    except (KeyError, yaml.YAMLError) as e:
        return errs + ["config not readable: %s" % e]
    # token types: the queries, the README's table, meterd's API items
    api_types = set(re.findall(r"`tokens\.([a-z_]+)`", meterd_readme.split(
        "## Cost Management API", 1)[-1].split("\n## ", 1)[0])) - {"total"}
    table = dict(re.findall(r"^\| `tokens\.([a-z_]+)` \| `(\w+)`", readme, re.M))
    m = re.search(r"^\| `meterd_tokens_total` \| `([^`]*)` \|", meterd_readme, re.M)
    served_labels = {x.strip() for x in m.group(1).split(",")} if m else set()
    if not served_labels:
        errs.append("README.md: no label list of meterd_tokens_total")
    if not entries:
        errs.append("collection config: no entries")
    kinds, items, types = set(), {}, set()
    for e in entries:
        where = "collection entry %s" % e.get("item")
        keys = set(e)
        if not CM_COLL_KEYS <= keys or keys - CM_COLL_KEYS - {"labels"}:
            errs.append("%s: keys %s, documented %s (+ labels)" % (where, sorted(keys),
                                                                 sorted(CM_COLL_KEYS)))
            continue
        kinds.add(e["kind"])
        # issue 6: "collect meterd's /metrics as a custom `kind: Project`
        # metric"; the README documents the switch to a custom kind
        if e["kind"] != "Project":
            errs.append("%s: kind %s, issue 6 specifies Project" % (where, e["kind"]))
        if e["period"] not in ("Hourly", "Daily"):
            errs.append("%s: period %r" % (where, e["period"]))
        if e["item"] in items:
            errs.append("%s: item not unique" % where)
        items[e["item"]] = e["category"]
        for part in ("usage", "labels"):
            if part not in e:
                continue
            p = e[part]
            want = {"query", "mappers"} | ({"step"} if part == "usage" else set())
            if set(p) != want:
                errs.append("%s: %s keys %s, documented %s" % (where, part, sorted(p),
                                                             sorted(want)))
                continue
            mp = p["mappers"]
            if set(mp) != CM_MAPPER_KEYS:
                errs.append("%s: %s.mappers keys %s" % (where, part, sorted(mp)))
                continue
            if mp["cluster"] != "":
                errs.append("%s: %s.mappers.cluster must be \"\"" % (where, part))
            q = p["query"]
            grouped = set()
            for body in re.findall(r"\bby\s*\(([^)]*)\)", q):
                grouped |= {x.strip() for x in body.split(",")}
            for k in ("name", "namespace"):
                if mp[k] not in grouped:
                    errs.append("%s: %s.mappers.%s %r is not a label the query keeps"
                                % (where, part, k, mp[k]))
            if promql_metric_names(q) != {"meterd_tokens_total"}:
                errs.append("%s: %s query selects %s" % (where, part,
                                                         sorted(promql_metric_names(q))))
            read, written = promql_label_names(q)
            bad = read - served_labels - written
            if bad:
                errs.append("%s: %s query reads labels %s meterd_tokens_total has not"
                            % (where, part, sorted(bad)))
            tt = set(re.findall(r'token_type="([a-z_]+)"', q))
            if len(tt) != 1:
                errs.append("%s: %s query must select one token_type, has %s" % (
                    where, part, sorted(tt)))
            elif part == "usage":
                t = tt.pop()
                types.add(t)
                if table.get(t) != e["category"]:
                    errs.append("%s: README's table maps tokens.%s to %r, not %r" % (
                        where, t, table.get(t), e["category"]))
        if e["usage"].get("step") != "5m":
            errs.append("%s: step %r (the queries' windows are 5m)" % (where,
                                                                      e["usage"].get("step")))
    if len(kinds) > 1:
        errs.append("collection config: several kinds %s" % sorted(kinds))
    if types != api_types:
        errs.append("token types: ConfigMap %s, meterd's API items %s" % (sorted(types),
                                                                         sorted(api_types)))
    if set(table) != types:
        errs.append("README's table %s != ConfigMap %s" % (sorted(table), sorted(types)))
    method_items = {}
    for c in shown:
        if set(c) != CM_DISP_KEYS:
            errs.append("display entry %s: keys %s" % (c.get("name"), sorted(c)))
            continue
        if set(c["displayname"]) != {"zh", "en"}:
            errs.append("display entry %s: displayname needs zh and en" % c["name"])
        for mth in c["methods"]:
            if set(mth) != CM_METHOD_KEYS:
                errs.append("display %s method %s: keys %s" % (c["name"], mth.get("name"),
                                                              sorted(mth)))
                continue
            if set(mth["displayname"]) != {"zh", "en"} or set(mth["unit"]) != {"zh", "en"}:
                errs.append("display %s method %s: zh and en" % (c["name"], mth["name"]))
            if not isinstance(mth["divisor"], int) or mth["divisor"] <= 0:
                errs.append("display %s method %s: divisor %r" % (c["name"], mth["name"],
                                                                 mth["divisor"]))
            method_items[mth["item"]] = c["name"]
    if method_items != items:
        errs.append("display items->billing item %s != collection items->category %s"
                    % (method_items, items))
    return errs


def promtool_check_queries(queries):
    """promtool check rules on the queries wrapped as recording rules:
    (ok, output)."""
    rules = {"groups": [{"name": "costmanagement", "rules": [
        {"record": "costmanagement:q%d" % i, "expr": q} for i, (_, q) in enumerate(queries)]}]}
    with tempfile.TemporaryDirectory() as td:
        p = os.path.join(td, "rules.yaml")
        with open(p, "w") as f:
            yaml.safe_dump(rules, f)
        r = subprocess.run(["promtool", "check", "rules", p], capture_output=True, text=True)
    return r.returncode == 0 and "SUCCESS: %d rules found" % len(queries) in r.stdout, \
        r.stdout + r.stderr


def served_families(meterd):
    """The metric families meterd's /metrics declares (text 0.0.4)."""
    fams = set()
    for ln in meterd.get("/metrics").text.splitlines():
        if ln.startswith("# TYPE "):
            fams.add(ln.split(" ")[2])
    return fams


def test_costmanagement_configmaps():
    files = load_dir(src("config", "costmanagement"))
    assert set(files) == {"collection-configmap.yaml", "display-configmap.yaml"}, set(files)
    coll = files["collection-configmap.yaml"][0]
    disp = files["display-configmap.yaml"][0]
    with open(src("config", "costmanagement", "README.md")) as f:
        readme = f.read()
    with open(src("README.md")) as f:
        meterd_readme = f.read()
    errs = check_costmanagement(coll, disp, readme, meterd_readme)
    assert not errs, "\n".join(errs)
    for text in (readme,) + tuple(open(src("config", "costmanagement", n)).read()
                                  for n in sorted(files)):
        assert "VERIFY" not in text, "an unchecked VERIFY marker is left"
    assert "linked" in readme and "cost model" in readme
    # the documented fallback for Agents that reserve kind Project
    assert "sed -i 's/- kind: Project$/- kind: MeterdToken/'" in readme
    swapped = re.sub(r"(?m)^(\s*- kind: )Project$", r"\1MeterdToken", coll["data"]["config"])
    assert [e["kind"] for e in yaml.safe_load(swapped)] == \
        ["MeterdToken"] * len(yaml.safe_load(coll["data"]["config"]))

    # every query parses (Prometheus' own parser, offline) ...
    queries = cm_queries(coll)
    assert len(queries) == 2 * len(yaml.safe_load(coll["data"]["config"])), queries
    ok, out = promtool_check_queries(queries)
    assert ok, out
    ok, _ = promtool_check_queries(queries + [("broken", queries[0][1] + ")")])
    assert not ok, "promtool accepted a broken query"
    # ... and selects only families meterd serves
    m = harness.Meterd()
    try:
        m.start()
        fams = served_families(m)
        assert "meterd_build_info" in fams, fams       # the parse works
        for where, q in queries:
            names = promql_metric_names(q)
            assert names and names <= fams, (where, names - fams)
        assert m.stop() == 0, m.log()
    finally:
        m.cleanup()

    # the checker can fail: each broken copy is reported
    def edit(cm, fn):
        e = yaml.safe_load(cm["data"]["config"])
        fn(e)
        cm["data"]["config"] = yaml.safe_dump(e, allow_unicode=True)

    breakers = {
        "kind not Project": lambda c, d: edit(c, lambda e: e[0].__setitem__("kind",
                                                                           "MeterdToken")),
        "cluster mapper": lambda c, d: edit(c, lambda e: e[1]["usage"]["mappers"].__setitem__(
            "cluster", "cluster")),
        "mappers at entry level": lambda c, d: edit(c, lambda e: e[0].__setitem__(
            "mappers", e[0]["usage"].pop("mappers"))),
        "display label on both": lambda c, d: c["metadata"]["labels"].__setitem__(
            "cpaas.io/slark.display.config", "true"),
        "display namespace": lambda c, d: d["metadata"].__setitem__("namespace",
                                                                     "cpaas-system"),
        "data key config.yaml": lambda c, d: c.__setitem__(
            "data", {"config.yaml": c["data"]["config"]}),
        "item mismatch": lambda c, d: edit(d, lambda e: e[0]["methods"][0].__setitem__(
            "item", "tokens_input")),
        "unknown metric": lambda c, d: edit(c, lambda e: e[0]["usage"].__setitem__(
            "query", e[0]["usage"]["query"].replace("meterd_tokens_total",
                                                    "gen_ai_client_token_usage_sum"))),
        "unknown label": lambda c, d: edit(c, lambda e: e[2]["usage"].__setitem__(
            "query", e[2]["usage"]["query"].replace("by (namespace, model)",
                                                    "by (user_namespace, model)"))),
        "name mapper not grouped": lambda c, d: edit(c, lambda e: e[0]["usage"][
            "mappers"].__setitem__("name", "provider")),
        "type missing": lambda c, d: (edit(c, lambda e: e.pop()), edit(d, lambda e: e.pop())),
    }
    for name, brk in breakers.items():
        c, d = copy.deepcopy(coll), copy.deepcopy(disp)
        brk(c, d)
        assert check_costmanagement(c, d, readme, meterd_readme), \
            "breaking %r went unnoticed" % name


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
