// http: the wasi:http/proxy test guest of kwasi's end-to-end suite and HTTP benchmark.
// Rebuild: tests/guests/build.sh (C bindings from wit-bindgen, component from wasm-tools).
//
//   GET  /            200 "hello from kwasi\n"
//   POST /echo        200, the request body
//   GET  /slow?ms=N   200 after sleeping N ms (default 2000)
//   GET  /trap        the guest traps
//
// Built with -DKWASI_FILES it is files.wasm, which also has:
//   GET  /files/P     200, the file /P of the component's filesystem (Spin's component
//                     files); 404 when it cannot be opened
//   PUT  /files/P     201 after writing the request body to /P; 403 when it cannot be
//                     (component files are read-only)
// Files go through wasi-libc's stdio, so files.wasm is made with the reactor adapter, which
// gives it wasi:filesystem. http.wasm keeps the proxy adapter: an instance of the reactor
// one costs about a fifth of the requests per second (httpbench, benches/README.md).
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

typedef struct {
    uint8_t *ptr;
    size_t len;
} bytes_t;

static void header(wasi_http_types_borrow_fields_t fields, const char *name, const char *value) {
    wasi_http_types_field_name_t key;
    proxy_string_set(&key, name);
    wasi_http_types_field_value_t val = {(uint8_t *)value, strlen(value)};
    wasi_http_types_header_error_t err;
    wasi_http_types_method_fields_append(fields, &key, &val, &err);
}

// Sends `status` with `body`: the response is handed over first, then the body is written in
// pieces no larger than blocking-write-and-flush accepts.
static void respond(wasi_http_types_own_response_outparam_t out, uint16_t status, bytes_t body,
                    int with_length) {
    wasi_http_types_own_fields_t headers = wasi_http_types_constructor_fields();
    wasi_http_types_borrow_fields_t h = wasi_http_types_borrow_fields(headers);
    header(h, "content-type", "text/plain");
    if (with_length) {
        char len[24];
        size_t n = body.len, i = sizeof len - 1;
        len[i] = 0;
        do {
            len[--i] = (char)('0' + n % 10);
            n /= 10;
        } while (n);
        header(h, "content-length", len + i);
    }
    wasi_http_types_own_outgoing_response_t response =
        wasi_http_types_constructor_outgoing_response(headers);
    wasi_http_types_borrow_outgoing_response_t r = wasi_http_types_borrow_outgoing_response(response);
    wasi_http_types_method_outgoing_response_set_status_code(r, status);
    wasi_http_types_own_outgoing_body_t outgoing;
    wasi_http_types_method_outgoing_response_body(r, &outgoing);

    wasi_http_types_result_own_outgoing_response_error_code_t result = {.is_err = false};
    result.val.ok = response;
    wasi_http_types_static_response_outparam_set(out, &result);

    wasi_http_types_own_output_stream_t stream;
    wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(outgoing), &stream);
    wasi_io_streams_borrow_output_stream_t s = wasi_io_streams_borrow_output_stream(stream);
    for (size_t off = 0; off < body.len;) {
        size_t n = body.len - off < 4096 ? body.len - off : 4096;
        proxy_list_u8_t piece = {body.ptr + off, n};
        wasi_io_streams_stream_error_t err;
        if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(s, &piece, &err)) break;
        off += n;
    }
    wasi_io_streams_output_stream_drop_own(stream);
    wasi_http_types_error_code_t err;
    wasi_http_types_static_outgoing_body_finish(outgoing, NULL, &err);
}

static bytes_t text(const char *s) {
    return (bytes_t){(uint8_t *)s, strlen(s)};
}

// The whole request body.
static bytes_t read_body(wasi_http_types_borrow_incoming_request_t request) {
    bytes_t all = {NULL, 0};
    wasi_http_types_own_incoming_body_t body;
    if (!wasi_http_types_method_incoming_request_consume(request, &body)) return all;
    wasi_http_types_own_input_stream_t stream;
    if (wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(body), &stream)) {
        wasi_io_streams_borrow_input_stream_t s = wasi_io_streams_borrow_input_stream(stream);
        for (;;) {
            proxy_list_u8_t chunk;
            wasi_io_streams_stream_error_t err;
            if (!wasi_io_streams_method_input_stream_blocking_read(s, 65536, &chunk, &err)) break;
            all.ptr = realloc(all.ptr, all.len + chunk.len);
            memcpy(all.ptr + all.len, chunk.ptr, chunk.len);
            all.len += chunk.len;
            proxy_list_u8_free(&chunk);
        }
        wasi_io_streams_input_stream_drop_own(stream);
    }
    wasi_http_types_future_trailers_drop_own(wasi_http_types_static_incoming_body_finish(body));
    return all;
}

#ifdef KWASI_FILES
// The whole of file `name`, or NULL.
static bytes_t *read_file(const char *name, bytes_t *all) {
    FILE *f = fopen(name, "rb");
    if (!f) return NULL;
    all->ptr = NULL;
    all->len = 0;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        all->ptr = realloc(all->ptr, all->len + n);
        memcpy(all->ptr + all->len, chunk, n);
        all->len += n;
    }
    fclose(f);
    return all;
}
#endif

static void sleep_ms(uint64_t ms) {
    wasi_io_poll_own_pollable_t timer = wasi_clocks_monotonic_clock_subscribe_duration(ms * 1000000);
    wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(timer));
    wasi_io_poll_pollable_drop_own(timer);
}

void exports_wasi_http_incoming_handler_handle(wasi_http_types_own_incoming_request_t request,
                                               wasi_http_types_own_response_outparam_t out) {
    wasi_http_types_borrow_incoming_request_t req = wasi_http_types_borrow_incoming_request(request);
    wasi_http_types_method_t method;
    wasi_http_types_method_incoming_request_method(req, &method);
    proxy_string_t target = {NULL, 0};
    wasi_http_types_method_incoming_request_path_with_query(req, &target);
    char path[256] = {0};
    memcpy(path, target.ptr, target.len < sizeof path - 1 ? target.len : sizeof path - 1);

    if (method.tag == WASI_HTTP_TYPES_METHOD_POST && !strcmp(path, "/echo")) {
        respond(out, 200, read_body(req), 1);
    } else if (!strncmp(path, "/slow", 5)) {
        const char *ms = strstr(path, "ms=");
        uint64_t wait = ms ? strtoull(ms + 3, NULL, 10) : 2000;
        sleep_ms(wait);
        respond(out, 200, text("slept\n"), 1);
#ifdef KWASI_FILES
    } else if (method.tag == WASI_HTTP_TYPES_METHOD_GET && !strncmp(path, "/files/", 7)) {
        bytes_t file;
        if (read_file(path + 6, &file)) {
            respond(out, 200, file, 1);
        } else {
            respond(out, 404, text("no such file\n"), 1);
        }
    } else if (method.tag == WASI_HTTP_TYPES_METHOD_PUT && !strncmp(path, "/files/", 7)) {
        bytes_t body = read_body(req);
        FILE *f = fopen(path + 6, "wb");
        if (f && fwrite(body.ptr, 1, body.len, f) == body.len && fclose(f) == 0) {
            respond(out, 201, text("written\n"), 1);
        } else {
            static char why[128];
            snprintf(why, sizeof why, "cannot write: %s\n", strerror(errno));
            respond(out, 403, text(why), 1);
        }
#endif
    } else if (!strcmp(path, "/trap")) {
        __builtin_trap();
    } else {
        respond(out, 200, text("hello from kwasi\n"), 1);
    }
    wasi_http_types_incoming_request_drop_own(request);
}
