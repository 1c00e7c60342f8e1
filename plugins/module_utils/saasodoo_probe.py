# -*- coding: utf-8 -*-
# Shared by saasodoo_http_probe and saasodoo_tcp_probe (and any runbook that measures latency).
"""Timed probes of network services, and the statistics the runbooks judge them by.

- ``percentile(values, p)`` and ``latency_summary(values)``: the percentile math, in one place.
  Percentiles are interpolated linearly between the two closest ranks (the "linear" method of
  numpy's ``percentile`` and of Excel's ``PERCENTILE.INC``): for n sorted values the p-th
  percentile sits at rank ``(n - 1) * p / 100``. p0 is the minimum, p100 the maximum, and the
  median of an even number of values is the mean of the middle two. No values give ``None``.
- ``http_once(...)``: one timed HTTP(S) request (time from the start of the TCP connection to
  the last byte of the body); ``tcp_once(...)``: one timed TCP connection, optionally with a
  request/response exchange (``PING`` / ``+PONG`` for Redis).
- ``run(fn, count, concurrency)``: repeat a probe, sequentially or with a few threads.
- ``classify_error(exc)``: a stable kind for a failure (timeout, refused, tls, dns, reset, ...).

Nothing here raises on a network failure: a failed attempt is a sample with an ``error``.
Only programming errors (bad arguments) raise ``ProbeError``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import math
import socket
import ssl
import threading
import time

try:  # Python 3
    import http.client as http_client
    from urllib.parse import urlsplit
except ImportError:  # pragma: no cover - Python 2 is not supported by the project
    import httplib as http_client  # noqa: F401
    from urlparse import urlsplit  # noqa: F401

PERCENTILES = (50, 95, 99)
MAX_BODY_BYTES = 65536
ERROR_SAMPLES = 5


class ProbeError(Exception):
    """Bad input (an URL that cannot be probed, an impossible percentile...)."""


# --------------------------------------------------------------------------------------------
# Statistics


def percentile(values, p):
    """The p-th percentile (0 <= p <= 100) of values, linearly interpolated; None when empty."""
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise ProbeError("percentile must be a number between 0 and 100, got %r" % (p,))
    if math.isnan(p) or p < 0 or p > 100:
        raise ProbeError("percentile must be between 0 and 100, got %r" % (p,))
    data = sorted(float(v) for v in values)
    if not data:
        return None
    rank = (len(data) - 1) * p / 100.0
    low = int(math.floor(rank))
    high = int(math.ceil(rank))
    if low == high:
        return data[low]
    return data[low] + (data[high] - data[low]) * (rank - low)


def _round(value, digits=1):
    return None if value is None else round(value, digits)


def latency_summary(values, percentiles=PERCENTILES):
    """{count, min, mean, p50, p95, p99, max} in the values' unit (milliseconds here), rounded to 0.1."""
    data = [float(v) for v in values]
    summary = {
        "count": len(data),
        "min": _round(min(data)) if data else None,
        "mean": _round(sum(data) / len(data)) if data else None,
        "max": _round(max(data)) if data else None,
    }
    for p in percentiles:
        key = "p%s" % (int(p) if float(p).is_integer() else p)
        summary[key] = _round(percentile(data, p))
    return summary


# --------------------------------------------------------------------------------------------
# Errors


def classify_error(exc):
    """A stable kind for a failed attempt: timeout, refused, reset, dns, unreachable, tls, protocol, other."""
    if isinstance(exc, socket.timeout) or type(exc).__name__ in ("TimeoutError", "timeout"):
        return "timeout"
    if isinstance(exc, ssl.SSLError) or isinstance(exc, getattr(ssl, "CertificateError", ssl.SSLError)):
        return "tls"
    if isinstance(exc, socket.gaierror):
        return "dns"
    if isinstance(exc, http_client.HTTPException):
        return "protocol"
    code = getattr(exc, "errno", None)
    if code == errno.ECONNREFUSED:
        return "refused"
    if code in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
        return "reset"
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable"
    if code == errno.ETIMEDOUT:
        return "timeout"
    return "other"


def error_text(exc):
    text = ("%s" % (exc,)).strip() or type(exc).__name__
    return "%s: %s" % (type(exc).__name__, text.splitlines()[0][:300])


# --------------------------------------------------------------------------------------------
# One attempt


def parse_http_url(url):
    """(scheme, host, port, path_with_query) of an http(s) URL; ProbeError when it is not one."""
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProbeError("url must be an absolute http:// or https:// URL, got %r" % (url,))
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ProbeError("url has an invalid port: %r" % (url,))
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.scheme, parts.hostname, port, path


def tls_context(validate_certs, ca_path=None):
    if validate_certs:
        ctx = ssl.create_default_context(cafile=ca_path) if ca_path else ssl.create_default_context()
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _Connection(http_client.HTTPConnection):
    """An HTTP(S) connection to host:port whose TLS name (SNI and verification) may differ from the host.

    That is how a probe reaches one ingress address for a virtual host: connect to the address,
    present server_name, and check the certificate against server_name.
    """

    def __init__(self, host, port, timeout, tls_ctx=None, server_name=None):
        http_client.HTTPConnection.__init__(self, host, port, timeout=timeout)
        self._tls_ctx = tls_ctx
        self._server_name = server_name or host
        self.connect_ms = None

    def connect(self):
        started = time.monotonic()
        http_client.HTTPConnection.connect(self)
        if self._tls_ctx is not None:
            self.sock = self._tls_ctx.wrap_socket(self.sock, server_hostname=self._server_name)
        self.connect_ms = (time.monotonic() - started) * 1000.0


def http_once(url, timeout=5.0, method="GET", headers=None, validate_certs=True, server_name=None,
              ca_path=None, read_body=True, max_body_bytes=MAX_BODY_BYTES):
    """One timed request; never raises on a network failure.

    Returns {status, ms, connect_ms, error, error_kind, body, headers}. ``ms`` is the time from the
    start of the connection to the last byte of the body (to the failure for a failed attempt);
    ``timeout`` bounds the connection and each read. Redirects are not followed.
    """
    scheme, host, port, path = parse_http_url(url)
    sent = dict(headers or {})
    if server_name and not any(k.lower() == "host" for k in sent):
        sent["Host"] = server_name if port in (80, 443) else "%s:%s" % (server_name, port)
    sent.setdefault("User-Agent", "saasodoo-runbooks-probe/1")
    sent.setdefault("Connection", "close")
    ctx = tls_context(validate_certs, ca_path) if scheme == "https" else None
    conn = _Connection(host, port, timeout, ctx, server_name)
    result = {"status": None, "ms": None, "connect_ms": None, "error": None, "error_kind": None,
              "body": None, "headers": {}}
    started = time.monotonic()
    try:
        conn.request(method, path, headers=sent)
        resp = conn.getresponse()
        data = resp.read() if method != "HEAD" else b""
        result["status"] = resp.status
        result["headers"] = dict((k.lower(), v) for k, v in resp.getheaders())
        if read_body:
            result["body"] = data[:max_body_bytes].decode("utf-8", "replace")
    except Exception as e:  # pylint: disable=broad-except  # every failure is a sample, never a traceback
        result["error"] = error_text(e)
        result["error_kind"] = classify_error(e)
    finally:
        result["ms"] = (time.monotonic() - started) * 1000.0
        result["connect_ms"] = conn.connect_ms
        try:
            conn.close()
        except Exception:  # pylint: disable=broad-except
            pass
    return result


def tcp_once(host, port, timeout=3.0, send=None, expect=None):
    """One timed TCP connection; with ``send``, also the time until ``expect`` (or any bytes) came back.

    Returns {connected, connect_ms, roundtrip_ms, ok, error, error_kind, reply}.
    """
    result = {"connected": False, "connect_ms": None, "roundtrip_ms": None, "ok": False, "error": None,
              "error_kind": None, "reply": None}
    started = time.monotonic()
    sock = None
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
        result["connected"] = True
        result["connect_ms"] = (time.monotonic() - started) * 1000.0
        if send is None:
            result["ok"] = True
            return result
        sent_at = time.monotonic()
        sock.sendall(send.encode("utf-8"))
        reply = b""
        wanted = expect.encode("utf-8") if expect else None
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
            if (wanted is None and reply) or (wanted is not None and wanted in reply) or len(reply) > 65536:
                break
        result["roundtrip_ms"] = (time.monotonic() - sent_at) * 1000.0
        result["reply"] = reply[:200].decode("utf-8", "replace")
        if wanted is not None and wanted not in reply:
            result["error"] = "unexpected reply %r (wanted %r)" % (result["reply"], expect)
            result["error_kind"] = "unexpected_reply"
        elif not reply:
            result["error"] = "the server closed the connection without answering"
            result["error_kind"] = "no_reply"
        else:
            result["ok"] = True
    except Exception as e:  # pylint: disable=broad-except  # every failure is a sample
        result["error"] = error_text(e)
        result["error_kind"] = classify_error(e)
    finally:
        if sock is not None:
            try:
                sock.close()
            except Exception:  # pylint: disable=broad-except
                pass
    return result


# --------------------------------------------------------------------------------------------
# Repetition


def run(fn, count, concurrency=1):
    """Call fn() count times (at most `concurrency` at once); the results in start order."""
    count = int(count)
    concurrency = max(1, min(int(concurrency), count)) if count > 0 else 1
    results = [None] * count
    if concurrency == 1:
        for i in range(count):
            results[i] = fn()
        return results
    lock = threading.Lock()
    index = [0]

    def worker():
        while True:
            with lock:
                i = index[0]
                if i >= count:
                    return
                index[0] += 1
            results[i] = fn()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.daemon = True
        t.start()
    for t in threads:
        t.join()
    return results


def summarize_http(samples, expected_status):
    """The module's result from the samples of http_once: status counts, error kinds, latency."""
    statuses = {}
    errors = {}
    error_samples = []
    for s in samples:
        if s["status"] is not None:
            key = "%d" % s["status"]
            statuses[key] = statuses.get(key, 0) + 1
        else:
            errors[s["error_kind"]] = errors.get(s["error_kind"], 0) + 1
            if len(error_samples) < ERROR_SAMPLES:
                error_samples.append(s["error"])
    answered = [s for s in samples if s["status"] is not None]
    expected = [s for s in answered if s["status"] in expected_status]
    total = len(samples)
    return {
        "requests": total,
        "statuses": statuses,
        "expected": len(expected),
        "unexpected": len(answered) - len(expected),
        "unanswered": total - len(answered),
        "timeouts": errors.get("timeout", 0),
        "errors": errors,
        "error_samples": error_samples,
        "success_ratio": round(len(expected) / float(total), 4) if total else None,
        "ok": total > 0 and len(expected) == total,
        "latency_ms": latency_summary([s["ms"] for s in answered]),
        "latency_all_ms": latency_summary([s["ms"] for s in samples]),
        "connect_ms": latency_summary([s["connect_ms"] for s in samples if s["connect_ms"] is not None]),
    }


def summarize_tcp(samples):
    errors = {}
    error_samples = []
    for s in samples:
        if not s["ok"]:
            errors[s["error_kind"]] = errors.get(s["error_kind"], 0) + 1
            if len(error_samples) < ERROR_SAMPLES:
                error_samples.append(s["error"])
    ok = [s for s in samples if s["ok"]]
    total = len(samples)
    return {
        "attempts": total,
        "succeeded": len(ok),
        "failures": total - len(ok),
        "errors": errors,
        "error_samples": error_samples,
        "success_ratio": round(len(ok) / float(total), 4) if total else None,
        "ok": total > 0 and len(ok) == total,
        "connect_ms": latency_summary([s["connect_ms"] for s in samples if s["connect_ms"] is not None]),
        "roundtrip_ms": latency_summary([s["roundtrip_ms"] for s in ok if s["roundtrip_ms"] is not None]),
    }
