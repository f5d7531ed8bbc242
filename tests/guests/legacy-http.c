// legacy-http: a Spin HTTP component of the legacy interface (it exports
// fermyon:spin/inbound-http, as Spin 1's SDKs built them), answering every request with
//   200, content-type text/plain, x-legacy: yes, and the body
//   method=<0-6>\nuri=<uri>\nspin-path-info=<header>\nbody=<request body>\n
// Rebuild: tests/guests/build.sh (WIT: crates/spin/spin-wit, world legacy-http-guest).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "legacy_http_guest.h"

typedef legacy_http_guest_string_t string_t;

static string_t copy(const char *s) {
    string_t out = {(uint8_t *)strdup(s), strlen(s)};
    return out;
}

void exports_fermyon_spin_inbound_http_handle_request(exports_fermyon_spin_inbound_http_request_t *req,
                                                      exports_fermyon_spin_inbound_http_response_t *ret) {
    const char *path_info = "";
    char header[256] = "";
    for (size_t i = 0; i < req->headers.len; i++) {
        string_t name = req->headers.ptr[i].f0, value = req->headers.ptr[i].f1;
        if (name.len == 14 && !memcmp(name.ptr, "spin-path-info", 14)) {
            size_t n = value.len < sizeof header - 1 ? value.len : sizeof header - 1;
            memcpy(header, value.ptr, n);
            header[n] = 0;
            path_info = header;
        }
    }
    size_t body_len = req->body.is_some ? req->body.val.len : 0;
    size_t size = 64 + req->uri.len + strlen(path_info) + body_len;
    char *text = malloc(size);
    int n = snprintf(text, size, "method=%d\nuri=%.*s\nspin-path-info=%s\nbody=", req->method,
                     (int)req->uri.len, (const char *)req->uri.ptr, path_info);
    if (body_len) memcpy(text + n, req->body.val.ptr, body_len);
    text[n + body_len] = '\n';

    legacy_http_guest_tuple2_string_string_t *headers = malloc(2 * sizeof *headers);
    headers[0].f0 = copy("content-type");
    headers[0].f1 = copy("text/plain");
    headers[1].f0 = copy("x-legacy");
    headers[1].f1 = copy("yes");
    ret->status = 200;
    ret->headers.is_some = true;
    ret->headers.val.ptr = headers;
    ret->headers.val.len = 2;
    ret->body.is_some = true;
    ret->body.val.ptr = (uint8_t *)text;
    ret->body.val.len = n + body_len + 1;
    exports_fermyon_spin_inbound_http_request_free(req);
}
