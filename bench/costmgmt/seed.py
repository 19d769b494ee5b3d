"""seed.py: a month of a 1,000-project installation, written with SQL into a
database meterd created (so the schema is meterd's own).

  python3 seed.py --meterd BUILD/meterd --dir WORKDIR [--projects 1000] [--days 30]

Each project (namespace proj-NNNN, department dept-NN of 50) uses two models
with three token types every hour of June 2025: projects x 2 x 3 dims and
projects x 6 x 24 x days hourly rows (1000 projects: 6,000 dims, 4,320,000
rows).  Tokens are a deterministic function of (dim, hour), so runs agree."""
import argparse
import os
import socket
import sqlite3
import subprocess
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--meterd", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--projects", type=int, default=1000)
    ap.add_argument("--days", type=int, default=30)
    a = ap.parse_args()
    db = os.path.join(a.dir, "meterd.db")
    cfg = os.path.join(a.dir, "seed.yaml")
    port = free_port()
    with open(cfg, "w") as f:
        f.write("listen: 127.0.0.1:%d\nstorage:\n  path: %s\nlog:\n  level: warn\n" % (port, db))
    p = subprocess.Popen([a.meterd, "run", "-c", cfg])
    deadline = time.monotonic() + 20
    while True:
        try:
            if urllib.request.urlopen("http://127.0.0.1:%d/readyz" % port).status == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("meterd did not become ready")
        time.sleep(0.05)
    p.terminate()
    p.wait()
    con = sqlite3.connect(db)
    t0 = time.monotonic()
    with con:
        con.execute("""
            WITH RECURSIVE p(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM p WHERE i + 1 < ?),
                 m(model) AS (VALUES ('gpt-4o'), ('gpt-4o-mini')),
                 t(tt) AS (VALUES ('input'), ('output'), ('cached_input'))
            INSERT INTO dims (cluster, namespace, department, model, provider, operation,
                              token_type)
            SELECT 'prod', printf('proj-%04d', i), printf('dept-%02d', i % 50), model,
                   'openai', 'chat', tt FROM p, m, t""", (a.projects,))
        start = 1748736000      # 2025-06-01T00:00:00Z
        con.execute("""
            WITH RECURSIVE h(s) AS (SELECT ? UNION ALL SELECT s + 3600 FROM h WHERE s + 3600 < ?)
            INSERT INTO usage_hourly (hour_s, dim_id, tokens, requests)
            SELECT s, id, 1 + ((id * 7919 + s / 3600 * 104729) % 5000),
                   CASE WHEN token_type = 'input' THEN 1 + (id + s / 3600) % 7 ELSE 0 END
            FROM h, dims ORDER BY s, id""", (start, start + a.days * 86400))
    n = con.execute("SELECT count(*) FROM usage_hourly").fetchone()[0]
    con.execute("ANALYZE")
    con.close()
    print("seeded %d hourly rows for %d projects in %.1fs" % (n, a.projects,
                                                              time.monotonic() - t0))


if __name__ == "__main__":
    main()
