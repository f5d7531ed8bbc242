"""A plain WASI 0.3 HTTP component, no Spin: it exports wasi:http/handler@0.3.0 (wasi:http's
`service` world) and answers every request with `hello from WASI 0.3 at <path>`. The body is
written by a task of its own after `handle` has returned the response, as WASI 0.3 allows.
"""

import componentize_py_async_support
from componentize_py_async_support.streams import ByteStreamWriter
from componentize_py_types import Ok

import wit_world
from wit_world import exports
from wit_world.imports.wasi_http_types import Fields, Request, Response


async def write(tx: ByteStreamWriter, body: bytes) -> None:
    with tx:
        await tx.write_all(body)


class Handler(exports.Handler):
    async def handle(self, request: Request) -> Response:
        path = request.get_path_with_query() or "/"
        body = f"hello from WASI 0.3 at {path}\n".encode("utf-8")
        tx, rx = wit_world.byte_stream()
        componentize_py_async_support.spawn(write(tx, body))
        trailers = wit_world.result_option_wasi_http_types_fields_wasi_http_types_error_code_future(
            lambda: Ok(None)
        )[1]
        headers = Fields.from_list([("content-type", b"text/plain")])
        response = Response.new(headers, rx, trailers)[0]
        response.set_status_code(200)
        return response
