#!/usr/bin/env python3
"""fuzz_cpu.py NAME FUZZER SEED_CORPUS CPU_SECONDS [WORKDIR]: run a libFuzzer
target (fork mode, one job, nice 19) until its whole process tree has used
CPU_SECONDS of CPU (issue 7 scenario 5 counts CPU minutes, and on a shared
machine wall time says little); record the CPU time measured from /proc,
wall time, executions, corpus size and every artifact in WORKDIR/result.json
(default WORKDIR: /tmp/fuzz-cpu/NAME).  Crashes, leaks and out-of-memory stop
the run (-ignore_crashes=0 -ignore_ooms=0); inputs slower than 1 s are kept as
timeout-* artifacts and the run goes on (-ignore_timeouts=1), so that a load
spike on a shared machine does not end it: re-run each with
`FUZZER -runs=3 ARTIFACT` to tell a real hang from the machine's load.
Example (the ASan/UBSan build of scripts/test.sh):
  python3 tests/fuzz/fuzz_cpu.py expfmt build-asan/tests/fuzz_expfmt tests/fuzz/corpus/expfmt 1800"""
import os, sys, time, subprocess, signal, json, glob
name, binp, seed, budget = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
work = sys.argv[5] if len(sys.argv) > 5 else f"/tmp/fuzz-cpu/{name}"
os.makedirs(f"{work}/corpus", exist_ok=True)
os.makedirs(f"{work}/artifacts", exist_ok=True)
tck = os.sysconf("SC_CLK_TCK")
env = dict(os.environ, ASAN_OPTIONS="quarantine_size_mb=16")
log = open(f"{work}/fuzz.log", "ab")
cmd = ["nice", "-n", "19", binp, "-fork=1", "-ignore_timeouts=1", "-ignore_ooms=0",
       "-ignore_crashes=0", "-timeout=1", "-rss_limit_mb=256", "-max_len=65536",
       f"-artifact_prefix={work}/artifacts/", "-print_final_stats=1",
       f"{work}/corpus", seed]
t0 = time.time()
p = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, start_new_session=True)
def tree_cpu(pgid):
    tot = 0
    for d in os.listdir("/proc"):
        if not d.isdigit(): continue
        try:
            st = open(f"/proc/{d}/stat").read()
        except OSError: continue
        f = st[st.rindex(")")+2:].split()
        if int(f[2]) != pgid: continue   # field 5: pgrp
        tot += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])  # utime stime cutime cstime
    return tot / tck
cpu = 0.0; peak = 0
while p.poll() is None:
    time.sleep(5)
    try:
        cpu = max(cpu, tree_cpu(p.pid))
    except Exception: pass
    if cpu >= budget:
        os.killpg(p.pid, signal.SIGINT); time.sleep(5)
        try: os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError: pass
        break
rc = p.wait()
wall = time.time() - t0
corpus = glob.glob(f"{work}/corpus/*")
execs = 0
for line in open(f"{work}/fuzz.log", errors="replace"):
    if line.startswith("#") and ":" in line:
        try:
            execs = max(execs, int(line[1:line.index(":")]))
        except ValueError:
            pass
res = dict(name=name, rc=rc, cpu_s=round(cpu), wall_s=round(wall), execs=execs,
           corpus_n=len(corpus),
           corpus_bytes=sum(os.path.getsize(c) for c in corpus),
           artifacts=sorted(os.path.basename(a) for a in glob.glob(f"{work}/artifacts/*")))
open(f"{work}/result.json", "w").write(json.dumps(res) + "\n")
print(json.dumps(res))
