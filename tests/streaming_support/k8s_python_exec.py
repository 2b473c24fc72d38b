#!/usr/bin/python3
"""One streaming Exec through the `kubernetes` Python package's WebSocket client (Debian's
python3-kubernetes, hack/install-deps), a client nobody in this project wrote.

    k8s_python_exec.py URL [STDIN-LINE]

URL is the http:// (or https://) URL a CRI Exec returned; the client speaks v4.channel.k8s.io
over ws:// (wss://). Writes STDIN-LINE and a newline to stdin when given (v4 has no way to close
stdin, so the command reads a line), waits until the server closes, and prints one JSON object:
{"stdout": ..., "stderr": ..., "returncode": ..., "status": <error channel text>}.
Verification of the server's certificate is off: the tests make their own.
"""
import json
import sys

from kubernetes.client import Configuration
from kubernetes.stream.ws_client import ERROR_CHANNEL, WSClient

TIMEOUT = 60


def main() -> int:
    url = sys.argv[1]
    ws_url = "ws" + url[len("http"):] if url.startswith("http") else url
    conf = Configuration()
    conf.verify_ssl = False
    client = WSClient(conf, ws_url, headers=None, capture_all=True)
    if len(sys.argv) > 2:
        client.write_stdin(sys.argv[2] + "\n")
    client.run_forever(timeout=TIMEOUT)
    if client.is_open():
        client.close()
        print(f"exec not finished after {TIMEOUT} s", file=sys.stderr)
        return 1
    # Buffered per channel while it ran; returncode parses (and consumes) the error channel,
    # so it is peeked at first.
    stdout = client.read_stdout()
    stderr = client.read_stderr()
    status = client.peek_channel(ERROR_CHANNEL)
    result = {"stdout": stdout, "stderr": stderr, "status": status, "returncode": client.returncode}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
