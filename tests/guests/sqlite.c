// sqlite: a Redis-triggered Spin component that keeps each message it gets in the `default`
// SQLite database (fermyon:spin/sqlite@2.0.0) and writes the number of rows it then holds
// to the key `rows` on the Redis server at its REDIS_ADDRESS (fermyon:spin/redis@2.0.0).
// Rebuild: tests/guests/build.sh (WIT: crates/spin/spin-wit, world sqlite-guest).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlite_guest.h"

typedef fermyon_spin_2_0_0_sqlite_borrow_connection_t db_t;

// Runs `sql` with `params`; the count of the first column of the first row, or -1 on error.
static int64_t run(db_t db, const char *sql, fermyon_spin_2_0_0_sqlite_value_t *params, size_t n) {
    sqlite_guest_string_t statement;
    sqlite_guest_string_set(&statement, sql);
    fermyon_spin_2_0_0_sqlite_list_value_t list = {params, n};
    fermyon_spin_2_0_0_sqlite_query_result_t result;
    fermyon_spin_2_0_0_sqlite_error_t err;
    if (!fermyon_spin_2_0_0_sqlite_method_connection_execute(db, &statement, &list, &result, &err)) {
        fermyon_spin_2_0_0_sqlite_error_free(&err);
        return -1;
    }
    int64_t first = 0;
    if (result.rows.len > 0 && result.rows.ptr[0].values.len > 0 &&
        result.rows.ptr[0].values.ptr[0].tag == FERMYON_SPIN_2_0_0_SQLITE_VALUE_INTEGER) {
        first = result.rows.ptr[0].values.ptr[0].val.integer;
    }
    fermyon_spin_2_0_0_sqlite_query_result_free(&result);
    return first;
}

bool exports_fermyon_spin_inbound_redis_handle_message(exports_fermyon_spin_inbound_redis_payload_t *message,
                                                       exports_fermyon_spin_inbound_redis_error_t *err) {
    *err = FERMYON_SPIN_REDIS_TYPES_ERROR_ERROR;
    sqlite_guest_string_t name;
    sqlite_guest_string_set(&name, "default");
    fermyon_spin_2_0_0_sqlite_own_connection_t conn;
    fermyon_spin_2_0_0_sqlite_error_t open_err;
    if (!fermyon_spin_2_0_0_sqlite_static_connection_open(&name, &conn, &open_err)) {
        fermyon_spin_2_0_0_sqlite_error_free(&open_err);
        return false;
    }
    db_t db = fermyon_spin_2_0_0_sqlite_borrow_connection(conn);
    fermyon_spin_2_0_0_sqlite_value_t body = {.tag = FERMYON_SPIN_2_0_0_SQLITE_VALUE_TEXT};
    body.val.text.ptr = message->ptr;
    body.val.text.len = message->len;
    int64_t rows = -1;
    if (run(db, "CREATE TABLE IF NOT EXISTS messages (body TEXT NOT NULL)", NULL, 0) >= 0 &&
        run(db, "INSERT INTO messages (body) VALUES (?)", &body, 1) >= 0) {
        rows = run(db, "SELECT count(*) FROM messages", NULL, 0);
    }
    fermyon_spin_2_0_0_sqlite_connection_drop_own(conn);
    if (rows < 0) return false;

    const char *address = getenv("REDIS_ADDRESS");
    if (!address) return false;
    sqlite_guest_string_t addr;
    sqlite_guest_string_set(&addr, address);
    fermyon_spin_2_0_0_redis_own_connection_t redis;
    fermyon_spin_2_0_0_redis_error_t redis_err;
    if (!fermyon_spin_2_0_0_redis_static_connection_open(&addr, &redis, &redis_err)) {
        fermyon_spin_2_0_0_redis_error_free(&redis_err);
        return false;
    }
    char count[24];
    snprintf(count, sizeof count, "%lld", (long long)rows);
    sqlite_guest_string_t key;
    sqlite_guest_string_set(&key, "rows");
    fermyon_spin_2_0_0_redis_payload_t value = {(uint8_t *)count, strlen(count)};
    bool ok = fermyon_spin_2_0_0_redis_method_connection_set(
        fermyon_spin_2_0_0_redis_borrow_connection(redis), &key, &value, &redis_err);
    if (!ok) fermyon_spin_2_0_0_redis_error_free(&redis_err);
    fermyon_spin_2_0_0_redis_connection_drop_own(redis);
    return ok;
}
