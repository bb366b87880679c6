#!/usr/bin/env bash
# Screenshots of the Ray dashboard while the demo's generate stage runs as a Ray job, into docs/:
#   docs/dashboard-job.png     the job page: status, Ray Data operators (one per MoA layer), tasks
#   docs/dashboard-actors.png  the Actors page: one engine pool per model, actors named <model>/<replica>
#
# It starts a Ray head of its own on 127.0.0.1 (free ports, its own --temp-dir) and stops only that
# one at exit: other local clusters are left alone (no `ray stop`). Needs headless Chromium (Debian:
# `apt-get install -y chromium`) and the project's .venv (scripts/install.sh). OUT=DIR writes elsewhere.
#
# Token auth is OFF for this cluster (RAY_AUTH_MODE=disabled), unlike the README's cluster block: the
# dashboard listens on loopback only, lives as long as this script, and headless Chromium has no token
# to log in with. Never do this on a cluster that others can reach.
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0 DS_ACCELERATOR=cpu
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export RAY_AUTH_MODE=disabled RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0
export PATH="$PWD/.venv/bin:$PATH" # the job's `python` is the one `ray start` finds on PATH
unset RAY_ADDRESS
OUT=${OUT:-docs}
CHROMIUM=${CHROMIUM:-chromium}
mkdir -p "$OUT"

TMP=$(mktemp -d /tmp/moaa-dashboard-XXXX) # short: Ray's socket paths must stay short
HEAD_PID=
cleanup() {
    if [[ -n $HEAD_PID ]]; then
        kill "$HEAD_PID" 2>/dev/null || true # `ray start --block` stops its cluster on SIGTERM
        wait "$HEAD_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

free_ports() { # COUNT: ports free on loopback now
    python -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])' "$1"
}

wait_until() { # SECONDS WHAT COMMAND...: poll the command until it succeeds
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { echo "timed out waiting for $what" >&2; exit 1; }
        sleep 1
    done
}

data_is_flowing() { # JOB: blocks of the job's Ray Data have gone through a first MoA layer
    python - "$DASHBOARD" "$1" <<'EOF'
import json, sys, urllib.request

dashboard, job = sys.argv[1:]
job_id = json.load(urllib.request.urlopen(f"{dashboard}/api/jobs/{job}"))["job_id"]
data = json.load(urllib.request.urlopen(f"{dashboard}/api/data/datasets/{job_id}"))
operators = [o for d in data["datasets"] for o in d["operators"] if o["name"] != "Input"]
sys.exit(0 if sum(1 for o in operators if o["progress"]) >= 2 else 1)
EOF
}

# Photograph dashboard pages with headless Chromium, driven over the DevTools protocol (the dashboard
# is a React app; some sections start collapsed). Arguments, four per page: URL PNG TEXT SECTION,
# where the page is shot once TEXT shows and after opening SECTION (with its datasets), if not "".
shoot() {
    python - "$CHROMIUM" "$TMP/chromium" "$@" <<'EOF'
import asyncio, base64, itertools, json, socket, subprocess, sys, time
import aiohttp

chromium, profile, *pages = sys.argv[1:]
OPEN = """(async title => {
  [...document.querySelectorAll("h4")].find(e => e.textContent.trim() === title).click();
  await new Promise(done => setTimeout(done, 3000));
  for (const icon of document.querySelectorAll("svg title"))
    if (icon.textContent.startsWith("Expand Dataset"))
      icon.closest("svg").dispatchEvent(new MouseEvent("click", {bubbles: true}));
})"""


async def shoot(http, port, url, png, text, section):
    """Open ``url`` in a new tab, wait for ``text``, open ``section``, write a PNG."""
    async with http.put(f"http://127.0.0.1:{port}/json/new?about:blank") as response:
        tab = await response.json()
    async with http.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as ws:
        ids = itertools.count(1)

        async def cdp(method, **params):
            call = next(ids)
            await ws.send_json({"id": call, "method": method, "params": params})
            async for message in ws:
                answer = json.loads(message.data)
                if answer.get("id") == call:
                    return answer.get("result", {})

        async def js(expression):
            result = await cdp("Runtime.evaluate", expression=expression, awaitPromise=True)
            return result.get("result", {}).get("value")

        await cdp("Page.navigate", url=url)
        deadline = time.monotonic() + 60
        while not await js(f"document.body.innerText.includes({json.dumps(text)})"):
            if time.monotonic() > deadline:
                sys.exit(f"{url}: {text!r} never showed")
            await asyncio.sleep(1)
        if section:
            await js(f"{OPEN}({json.dumps(section)})")
        await asyncio.sleep(3)  # the opened tables and progress bars render
        shot = await cdp("Page.captureScreenshot", format="png")
    with open(png, "wb") as out:
        out.write(base64.b64decode(shot["data"]))
    print(f"wrote {png}")


async def main():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    browser = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={profile}", "--window-size=1400,1250",
         f"--remote-debugging-port={port}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(120):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/json/version"):
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.5)
            for i in range(0, len(pages), 4):
                await shoot(http, port, *pages[i : i + 4])
    finally:
        browser.terminate()
        browser.wait()


asyncio.run(main())
EOF
}

read -r GCS DASH CLIENT AGENT AGENT_GRPC METRICS < <(free_ports 6)
DASHBOARD=http://127.0.0.1:$DASH
ray start --head --block --node-ip-address=127.0.0.1 --dashboard-host=127.0.0.1 --port="$GCS" \
    --dashboard-port="$DASH" --ray-client-server-port="$CLIENT" --dashboard-agent-listen-port="$AGENT" \
    --dashboard-agent-grpc-port="$AGENT_GRPC" --metrics-export-port="$METRICS" --temp-dir="$TMP/ray" \
    >"$TMP/head.log" 2>&1 &
HEAD_PID=$!
wait_until 120 "the dashboard at $DASHBOARD" curl -sf "$DASHBOARD/api/version"
echo "Ray head up, dashboard $DASHBOARD"

# The demo's generate stage, with longer answers and smaller batches than the demo's, so that its
# Ray Data operators run long enough (about 40 s on 2 CPU cores) to be photographed mid-way.
JOB=moaa-generate-$(date +%s)
ray job submit --address "$DASHBOARD" --submission-id "$JOB" --no-wait --working-dir . -- \
    python jobs/generate.py --config configs/demo.yaml --run-dir "$TMP/run" \
    generate.sampling.max_new_tokens=96 generate.batch_size=4 2>&1 | grep "submitted"
wait_until 300 "the job's Ray Data operators" data_is_flowing "$JOB"
shoot "$DASHBOARD/#/jobs/$JOB" "$OUT/dashboard-job.png" "Ray Data Overview" "Ray Data Overview" \
    "$DASHBOARD/#/actors" "$OUT/dashboard-actors.png" "EngineActor" ""

ray job logs --address "$DASHBOARD" --follow "$JOB" 2>/dev/null | tail -n 6
STATUS=$(ray job status --address "$DASHBOARD" "$JOB" 2>&1)
[[ $STATUS == *"'$JOB' succeeded"* ]] || { echo "job $JOB did not succeed: $STATUS" >&2; exit 1; }
echo "job $JOB succeeded; screenshots in $OUT/"
