"""uvicorn's httptools protocol with its one own answer, the ``400`` for a request its parser refuses (a malformed
request line or header, a bad chunk size), in the API's JSON error form instead of ``text/plain``.

What no HTTP server can answer in JSON: a TLS handshake that fails (there is no HTTP yet), and a connection the
client or the kernel drops before a whole request arrived; those are closed.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

BAD_REQUEST = json.dumps({"error": {"code": "bad_request", "message": "malformed HTTP request"}}).encode()


class JsonErrorsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        content = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"cache-control: no-store\r\n",
                b"content-length: " + str(len(BAD_REQUEST)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                BAD_REQUEST,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()
