"""test_discovery_scrape.py: meterd discovers EAIG pods through a fake
Kubernetes API server (the sidecar is a native init container) and scrapes
them; usage lands in each pod's namespace and equals the simulator's truth;
a pod that disappears stops being scraped, a pod that appears mid-way counts
in full (ledger: a target first seen after metering began)."""
import copy
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import simctl  # noqa: E402
from harness import Meterd, wait_until  # noqa: E402
from test_discovery import FakeKube, TOKEN, fixture  # noqa: E402
from test_usage_exact import usage_by  # noqa: E402


def pod(namespace, name, uid, port):
    """The fixture's EAIG pod (sidecar as a native init container), pointed at
    a simulator port on 127.0.0.1."""
    p = copy.deepcopy(fixture("podlist_mixed.json")["items"][0])
    p["metadata"]["namespace"] = namespace
    p["metadata"]["name"] = name
    p["metadata"]["uid"] = uid
    p["status"]["podIP"] = "127.0.0.1"
    p["status"]["podIPs"] = [{"ip": "127.0.0.1"}]
    for c in p["spec"]["initContainers"]:
        for prt in c.get("ports", []):
            if prt.get("name") == "aigw-admin":
                prt["containerPort"] = port
    return p


def test_discovered_pods_are_scraped_into_their_namespaces():
    sim = simctl.Sim(simctl.binary(harness.ARGS.build), targets=2, tick_ms=50, seed=9).start()
    kube = FakeKube([pod("team-x", "gw-x", "uid-x", sim.port(0))], token=TOKEN, page_size=50)
    m = Meterd()
    try:
        tok = os.path.join(m.dir, "token")
        with open(tok, "w") as f:
            f.write(TOKEN)
        m.write_config("scrape:\n  interval: 200ms\n  timeout: 200ms\n"
                       "ledger:\n  first_scrape: count\n"
                       "kubernetes:\n  enabled: true\n  api_server: %s\n  token_file: %s\n"
                       "  refresh: 1s\n" % (kube.url(), tok))
        m.start()
        wait_until(lambda: any(t["health"] == "up" for t in
                               json.loads(m.get("/api/v1/targets").body)["targets"]),
                   15, "the discovered pod is scraped")
        # a second pod appears in another namespace: it counts in full
        kube.items.append(pod("team-y", "gw-y", "uid-y", sim.port(1)))
        wait_until(lambda: len(json.loads(m.get("/api/v1/targets").body)["targets"]) == 2,
                   15, "second pod discovered")
        time.sleep(1.0)
        sim.pause()
        before = {t["port"]: t["meterd_scrapes"] for t in sim.truth()["targets"]}
        try:
            wait_until(lambda: all(t["meterd_scrapes"] >= before[t["port"]] + 2
                                   for t in sim.truth()["targets"]), 30, "two more scrapes")
        except AssertionError:
            raise AssertionError("no scrapes: targets %s sim %s log %s" % (
                m.get("/api/v1/targets").text, sim.truth()["targets"], m.log()[-3000:]))
        truth = sim.truth()
        exp = {}
        for row in truth["series"]:
            if row["excluded"] or row["overflow"]:
                continue
            ns = "team-x" if row["port"] == sim.port(0) else "team-y"
            exp[ns] = exp.get(ns, 0) + row["tokens"]
        wait_until(lambda: {k[0]: v[0] for k, v in usage_by(m, "namespace")[0].items()} == exp,
                   15, "usage per namespace == truth")
        # the first pod goes away: it stops being scraped, its usage stays
        kube.items[:] = [p for p in kube.items if p["metadata"]["name"] != "gw-x"]
        wait_until(lambda: [t["url"] for t in json.loads(m.get("/api/v1/targets").body)
                            ["targets"]] == [sim.url(1)], 15, "first pod removed")
        assert {k[0]: v[0] for k, v in usage_by(m, "namespace")[0].items()} == exp
        # the Authorization header carried the token, the path listed all pods
        assert all(r[3] == "Bearer " + TOKEN for r in kube.requests)
        assert m.stop() == 0, m.log()
        assert "kubernetes" not in [l for l in m.log().splitlines() if "level=warn" in l]
    finally:
        m.cleanup()
        kube.close()
        sim.cleanup()


if __name__ == "__main__":
    harness.main([test_discovered_pods_are_scraped_into_their_namespaces])
