"""A Spin app's HTTP component built with Spin's Python SDK (spin-sdk 5, WASI 0.3): it exports
wasi:http/handler@0.3.0 and reads Spin's host interfaces of the spin:*@3.0.0 generation.

  /py/hello   a greeting, with the path it was asked for
  /py/count   counts its requests in the default key-value store (spin:key-value@3.0.0)
  /py/var     the component's variable `greeting` (spin:variables@3.0.0)
  /py/config  the same variable through wasi:config/store
  /py/fetch   fetches the URL of its query's url= (wasi:http/client@0.3.0), as Spin lets it
  /py/sqlite  adds a row to a table of the default database and answers the rows' count and
              the new row's id (spin:sqlite@3.1.0, the rows read from a stream)
  /py/redis   increments the key `hits` on the Redis server of its query's addr=, then reads it
              back (spin:redis@3.0.0)
  /py/wasi-kv counts its requests with wasi:keyvalue's atomics in the default store, sets and
              gets keys in a batch, and swaps a value in (wasi:keyvalue@0.2.0-draft2)
  /py/mysql   calls an interface the host may not provide (spin:mysql@3.0.0)
"""

from urllib.parse import parse_qs, urlparse

from spin_sdk import http, key_value, redis, sqlite, variables
from spin_sdk.http import Request, Response
from spin_sdk.wit.imports import wasi_config_store_0_2_0_draft_2024_09_27 as config
from spin_sdk.wit.imports import wasi_keyvalue_atomics_0_2_0_draft2 as atomics
from spin_sdk.wit.imports import wasi_keyvalue_batch_0_2_0_draft2 as batch
from spin_sdk.wit.imports import wasi_keyvalue_store_0_2_0_draft2 as wasi_kv


def text(status: int, body: str) -> Response:
    return Response(status, {"content-type": "text/plain"}, body.encode("utf-8"))


async def rows(db: sqlite.Connection, statement: str, params: list) -> list:
    """Runs `statement`: every row of its stream, once the statement has succeeded."""
    _columns, stream, result = await db.execute(statement, params)
    got = []
    with stream:
        while not stream.writer_dropped:
            got.extend(await stream.read(16))
    with result:
        await result.read()
    return got


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
        if path.endswith("/sqlite"):
            with await sqlite.Connection.open_default() as db:
                await rows(db, "CREATE TABLE IF NOT EXISTS hits (at TEXT)", [])
                await rows(db, "INSERT INTO hits VALUES (?)", [sqlite.Value_Text(path)])
                rowid = await db.last_insert_rowid()
                counted = await rows(db, "SELECT COUNT(*) FROM hits", [])
            return text(200, f"rows {counted[0].values[0].value}, last id {rowid}")
        if path.endswith("/redis"):
            addr = parse_qs(uri.query).get("addr", [""])[0]
            with await redis.open(f"redis://{addr}") as conn:
                hits = await conn.incr("hits")
                again = await conn.get("hits")
            return text(200, f"hits {hits}, read back {(again or b'').decode('utf-8')}")
        if path.endswith("/wasi-kv"):
            with wasi_kv.open("default") as bucket:
                hits = atomics.increment(bucket, "wasi-hits", 1)
                batch.set_many(bucket, [("a", b"1"), ("b", b"2")])
                got = batch.get_many(bucket, ["a", "b", "c"])
                atomics.swap(atomics.Cas.new(bucket, "greeting"), b"swapped")
                greeting = bucket.get("greeting") or b""
            pairs = ",".join(f"{k}={(v or b'-').decode('utf-8')}" for k, v in got)
            return text(200, f"hits {hits}, batch {pairs}, {greeting.decode('utf-8')}")
        if path.endswith("/mysql"):
            from spin_sdk.wit.imports import spin_mysql_mysql_3_0_0 as mysql
            await mysql.Connection.open("mysql://127.0.0.1/db")
            return text(200, "connected")
        return text(404, "no such path")
