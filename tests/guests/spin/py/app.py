"""A Spin app's HTTP component built with Spin's Python SDK (spin-sdk 5, WASI 0.3): it exports
wasi:http/handler@0.3.0 and reads Spin's host interfaces of the spin:*@3.0.0 generation.

  /py/hello   a greeting, with the path it was asked for
  /py/count   counts its requests in the default key-value store (spin:key-value@3.0.0)
  /py/var     the component's variable `greeting` (spin:variables@3.0.0)
  /py/config  the same variable through wasi:config/store
  /py/fetch   fetches the URL of its query's url= (wasi:http/client@0.3.0), as Spin lets it
  /py/mysql   calls an interface the host may not provide (spin:mysql@3.0.0)
"""

from urllib.parse import parse_qs, urlparse

from spin_sdk import http, key_value, variables
from spin_sdk.http import Request, Response
from spin_sdk.wit.imports import wasi_config_store_0_2_0_draft_2024_09_27 as config


def text(status: int, body: str) -> Response:
    return Response(status, {"content-type": "text/plain"}, body.encode("utf-8"))


class HttpHandler(http.Handler):
    async def handle_request(self, request: Request) -> Response:
        uri = urlparse(request.uri)
        path = uri.path
        if path.endswith("/hello"):
            return text(200, f"Hello from Python at {path}")
        if path.endswith("/count"):
            store = await key_value.open_default()
            count = int((await store.get("count")) or b"0") + 1
            await store.set("count", str(count).encode("utf-8"))
            return text(200, f"count {count}")
        if path.endswith("/var"):
            return text(200, await variables.get("greeting"))
        if path.endswith("/config"):
            return text(200, str(config.get("greeting")))
        if path.endswith("/fetch"):
            url = parse_qs(uri.query).get("url", [""])[0]
            try:
                got = await http.send(Request("GET", url, {}, None))
            except Exception as err:
                return text(502, f"refused: {err!r}")
            return text(200, f"fetched {got.status}: {(got.body or b'').decode('utf-8')}")
        if path.endswith("/mysql"):
            from spin_sdk.wit.imports import spin_mysql_mysql_3_0_0 as mysql
            await mysql.Connection.open("mysql://127.0.0.1/db")
            return text(200, "connected")
        return text(404, "no such path")
