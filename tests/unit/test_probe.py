"""saasodoo_probe (shared by saasodoo_http_probe and saasodoo_tcp_probe): the percentile math, the
summaries, and one real request/connection each against a throwaway local server."""

from __future__ import annotations

import errno
import importlib
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

probe = importlib.import_module("plugins.module_utils.saasodoo_probe")
sys.modules.setdefault("ansible.module_utils.saasodoo_probe", probe)
http_module = importlib.import_module("plugins.modules.saasodoo_http_probe")
tcp_module = importlib.import_module("plugins.modules.saasodoo_tcp_probe")


# ------------------------------------------------------------------ percentile math

@pytest.mark.parametrize("p, expected", [
    (0, 1.0), (50, 50.5), (95, 95.05), (99, 99.01), (100, 100.0), (25, 25.75),
])
def test_percentile_of_one_to_hundred_interpolates_linearly(p, expected):
    assert probe.percentile(range(1, 101), p) == pytest.approx(expected)


def test_percentile_matches_numpy_linear_method_on_small_samples():
    # numpy.percentile([15, 20, 35, 40, 50], q) with the default "linear" method.
    data = [40, 15, 50, 35, 20]
    assert probe.percentile(data, 40) == pytest.approx(29.0)
    assert probe.percentile(data, 50) == pytest.approx(35.0)
    assert probe.percentile(data, 95) == pytest.approx(48.0)


def test_median_of_even_count_is_mean_of_middle_two():
    assert probe.percentile([4, 1, 3, 2], 50) == 2.5


def test_percentile_of_one_value_is_that_value_and_of_none_is_none():
    assert probe.percentile([7.5], 0) == 7.5
    assert probe.percentile([7.5], 99) == 7.5
    assert probe.percentile([], 50) is None


def test_percentile_does_not_depend_on_order_and_does_not_mutate_input():
    data = [9, 1, 5, 3]
    assert probe.percentile(data, 75) == probe.percentile(sorted(data), 75) == pytest.approx(6.0)
    assert data == [9, 1, 5, 3]


def test_p95_of_mostly_fast_with_few_slow_is_pulled_up():
    # 19 fast answers and one 2.5 s answer: p95 sits between them, p50 stays fast.
    data = [10.0] * 19 + [2500.0]
    assert probe.percentile(data, 50) == 10.0
    assert probe.percentile(data, 95) == pytest.approx(10.0 + (2500.0 - 10.0) * 0.05)
    assert probe.percentile(data, 99) == pytest.approx(10.0 + (2500.0 - 10.0) * 0.81)


@pytest.mark.parametrize("bad", [-1, 100.5, "x", None, float("nan")])
def test_impossible_percentile_is_refused(bad):
    with pytest.raises(probe.ProbeError):
        probe.percentile([1, 2], bad)


def test_latency_summary_rounds_and_names_keys():
    summary = probe.latency_summary([1.04, 2.06, 3.0, 4.0])
    assert summary == {"count": 4, "min": 1.0, "mean": 2.5, "max": 4.0, "p50": 2.5,
                       "p95": pytest.approx(3.85, abs=0.051), "p99": pytest.approx(3.97, abs=0.051)}
    empty = probe.latency_summary([])
    assert empty == {"count": 0, "min": None, "mean": None, "max": None, "p50": None, "p95": None, "p99": None}


# ------------------------------------------------------------------ summaries

def _sample(status=None, ms=10.0, kind=None, error=None):
    return {"status": status, "ms": ms, "connect_ms": 0.5 if status else None, "error": error,
            "error_kind": kind, "body": None, "headers": {}}


def test_summarize_http_counts_statuses_errors_and_times_only_answers():
    samples = [_sample(200, 10), _sample(200, 30), _sample(503, 20),
               _sample(None, 3000, "timeout", "TimeoutError: timed out"), _sample(None, 1, "refused", "refused")]
    result = probe.summarize_http(samples, [200])
    assert result["requests"] == 5
    assert result["statuses"] == {"200": 2, "503": 1}
    assert result["expected"] == 2 and result["unexpected"] == 1 and result["unanswered"] == 2
    assert result["timeouts"] == 1
    assert result["errors"] == {"timeout": 1, "refused": 1}
    assert result["error_samples"] == ["TimeoutError: timed out", "refused"]
    assert result["success_ratio"] == 0.4
    assert result["ok"] is False
    assert result["latency_ms"]["count"] == 3 and result["latency_ms"]["p50"] == 20.0
    assert result["latency_all_ms"]["max"] == 3000.0


def test_summarize_http_all_good_is_ok():
    result = probe.summarize_http([_sample(204, 5), _sample(200, 6)], [200, 204])
    assert result["ok"] is True and result["success_ratio"] == 1.0 and result["errors"] == {}


def test_summarize_tcp():
    ok = {"connected": True, "connect_ms": 1.0, "roundtrip_ms": 0.2, "ok": True, "error": None,
          "error_kind": None, "reply": "+PONG"}
    bad = {"connected": False, "connect_ms": None, "roundtrip_ms": None, "ok": False, "error": "refused",
           "error_kind": "refused", "reply": None}
    result = probe.summarize_tcp([ok, ok, bad])
    assert result["attempts"] == 3 and result["succeeded"] == 2 and result["failures"] == 1
    assert result["errors"] == {"refused": 1}
    assert result["connect_ms"]["count"] == 2 and result["roundtrip_ms"]["p50"] == 0.2
    assert result["ok"] is False


def test_classify_error():
    assert probe.classify_error(socket.timeout("timed out")) == "timeout"
    assert probe.classify_error(ConnectionRefusedError(errno.ECONNREFUSED, "refused")) == "refused"
    assert probe.classify_error(ConnectionResetError(errno.ECONNRESET, "reset")) == "reset"
    assert probe.classify_error(socket.gaierror(-2, "Name or service not known")) == "dns"
    assert probe.classify_error(ssl.SSLCertVerificationError("certificate verify failed")) == "tls"
    assert probe.classify_error(ValueError("x")) == "other"


def test_run_keeps_order_and_respects_count_with_threads():
    counter = iter(range(100))
    lock = threading.Lock()

    def fn():
        with lock:
            return next(counter)

    assert sorted(probe.run(fn, 7, concurrency=3)) == list(range(7))
    assert probe.run(lambda: 1, 3) == [1, 1, 1]


@pytest.mark.parametrize("url", ["ftp://x/", "localhost:80", "", "http://:80/", "http://h:99999/"])
def test_bad_urls_are_refused(url):
    with pytest.raises(probe.ProbeError):
        probe.parse_http_url(url)


def test_parse_http_url_defaults():
    assert probe.parse_http_url("https://a.example") == ("https", "a.example", 443, "/")
    assert probe.parse_http_url("http://a:8080/x?y=1") == ("http", "a", 8080, "/x?y=1")


# ------------------------------------------------------------------ module input validation

def _params(**over):
    params = {"url": "http://127.0.0.1/", "count": 5, "concurrency": 1, "timeout": 5.0, "expected_status": [200],
              "method": "GET", "validate_certs": True, "ca_path": None, "server_name": None, "headers": {},
              "return_body": False, "return_samples": True}
    params.update(over)
    return params


@pytest.mark.parametrize("over, words", [
    ({"count": 0}, "count"), ({"count": 1001}, "count"), ({"concurrency": 0}, "concurrency"),
    ({"timeout": 0}, "timeout"), ({"expected_status": []}, "expected_status"),
    ({"expected_status": [42]}, "expected_status"), ({"url": "nope"}, "url"),
])
def test_http_module_refuses_bad_input(over, words):
    assert words in http_module.validate(_params(**over))


def test_http_module_accepts_good_input():
    assert http_module.validate(_params()) is None


def test_tcp_module_refuses_expect_without_send():
    params = {"host": "h", "port": 1, "count": 1, "timeout": 1.0, "send": None, "expect": "+PONG"}
    assert "expect needs send" in tcp_module.validate(params)
    assert "port" in tcp_module.validate(dict(params, port=0, expect=None))


# ------------------------------------------------------------------ real sockets

class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        body = ("host=%s path=%s" % (self.headers.get("Host"), self.path)).encode()
        self.send_response(404 if self.path == "/missing" else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()


def test_http_once_against_a_real_server_sends_host_and_reads_body(http_server):
    result = probe.http_once(http_server + "/x?y=1", timeout=2, server_name="app.example.test")
    assert result["status"] == 200 and result["error"] is None
    port = http_server.rsplit(":", 1)[1]
    assert result["body"] == "host=app.example.test:%s path=/x?y=1" % port
    assert result["ms"] > 0 and result["connect_ms"] is not None


def test_http_module_probe_counts_statuses(http_server):
    result = http_module.probe(_params(url=http_server + "/missing", count=3, concurrency=2, return_body=True))
    assert result["statuses"] == {"404": 3} and result["unexpected"] == 3 and result["ok"] is False
    assert len(result["samples"]) == 3 and result["body"].startswith("host=")


def test_http_once_refused_is_a_sample_not_an_exception():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    result = probe.http_once("http://127.0.0.1:%d/" % port, timeout=1)
    assert result["status"] is None and result["error_kind"] == "refused"


def test_http_once_times_out_on_a_silent_server():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection (backlog) but never answers
    try:
        result = probe.http_once("http://127.0.0.1:%d/" % listener.getsockname()[1], timeout=0.3)
    finally:
        listener.close()
    assert result["error_kind"] == "timeout"
    assert result["ms"] >= 250


def test_tcp_once_ping_pong_and_unexpected_reply():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]

    def serve(replies):
        for reply in replies:
            conn, _ = listener.accept()
            conn.recv(100)
            conn.sendall(reply)
            conn.close()

    thread = threading.Thread(target=serve, args=([b"+PONG\r\n", b"-ERR\r\n"],), daemon=True)
    thread.start()
    try:
        good = probe.tcp_once("127.0.0.1", port, 2, send="PING\r\n", expect="+PONG")
        bad = probe.tcp_once("127.0.0.1", port, 2, send="PING\r\n", expect="+PONG")
    finally:
        thread.join(5)
        listener.close()
    assert good["ok"] and good["roundtrip_ms"] is not None and good["reply"].startswith("+PONG")
    assert not bad["ok"] and bad["error_kind"] == "unexpected_reply"


def test_results_never_carry_a_failed_key_ansible_would_read_as_task_failure():
    http = probe.summarize_http([_sample(None, 1, "refused", "refused")], [200])
    tcp = probe.summarize_tcp([{"connected": False, "connect_ms": None, "roundtrip_ms": None, "ok": False,
                                "error": "refused", "error_kind": "refused", "reply": None}])
    assert "failed" not in http and "failed" not in tcp
    assert http["unanswered"] == 1 and tcp["failures"] == 1
