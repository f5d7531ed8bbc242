// redis: a Redis-triggered Spin component (it exports fermyon:spin/inbound-redis, as Spin's
// Rust SDK builds one) that writes back through outbound Redis (fermyon:spin/redis@2.0.0):
// for each message, on the server at its REDIS_ADDRESS environment variable, it sets the key
// `last-message` to the message and increments `messages`. A message `fail` makes it return
// an error. Rebuild: tests/guests/build.sh (WIT: crates/spin/spin-wit, world redis-guest).
#include <stdlib.h>
#include <string.h>

#include "redis_guest.h"

typedef fermyon_spin_2_0_0_redis_own_connection_t connection_t;

bool exports_fermyon_spin_inbound_redis_handle_message(exports_fermyon_spin_inbound_redis_payload_t *message,
                                                       exports_fermyon_spin_inbound_redis_error_t *err) {
    *err = FERMYON_SPIN_REDIS_TYPES_ERROR_ERROR;
    if (message->len == 4 && !memcmp(message->ptr, "fail", 4)) return false;
    const char *address = getenv("REDIS_ADDRESS");
    if (!address) return false;

    redis_guest_string_t addr;
    redis_guest_string_set(&addr, address);
    connection_t conn;
    fermyon_spin_2_0_0_redis_error_t redis_err;
    if (!fermyon_spin_2_0_0_redis_static_connection_open(&addr, &conn, &redis_err)) {
        fermyon_spin_2_0_0_redis_error_free(&redis_err);
        return false;
    }
    fermyon_spin_2_0_0_redis_borrow_connection_t c = fermyon_spin_2_0_0_redis_borrow_connection(conn);

    redis_guest_string_t key;
    redis_guest_string_set(&key, "last-message");
    fermyon_spin_2_0_0_redis_payload_t value = {message->ptr, message->len};
    bool ok = fermyon_spin_2_0_0_redis_method_connection_set(c, &key, &value, &redis_err);
    if (ok) {
        redis_guest_string_t counter;
        redis_guest_string_set(&counter, "messages");
        int64_t count;
        ok = fermyon_spin_2_0_0_redis_method_connection_incr(c, &counter, &count, &redis_err);
    }
    if (!ok) fermyon_spin_2_0_0_redis_error_free(&redis_err);
    fermyon_spin_2_0_0_redis_connection_drop_own(conn);
    exports_fermyon_spin_inbound_redis_payload_free(message);
    return ok;
}
