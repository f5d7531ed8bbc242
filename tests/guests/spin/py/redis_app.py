"""A Spin app's Redis-triggered component built with Spin's Python SDK (spin-sdk 5, WASI 0.3): it
exports spin:redis/inbound-redis@3.0.0 and, like tests/guests/redis.c, writes each message back
to the server at $REDIS_ADDRESS through spin:redis@3.0.0: the key `last-message` gets the
message and `messages` counts them. The message `fail` is refused with an error instead. The
message `slow` sets the key `started` first, then takes two seconds (a busy loop) before it is
written back: the app must let it finish when it is told to stop.
"""

import os
import time

from componentize_py_types import Err
from spin_sdk import redis
from spin_sdk.wit import exports
from spin_sdk.wit.imports.spin_redis_redis_3_0_0 import Error_Other


class RedisHandler(exports.RedisHandler):
    async def handle_message(self, message: bytes) -> None:
        if message == b"fail":
            raise Err(Error_Other("refusing the message fail"))
        with await redis.open(os.environ["REDIS_ADDRESS"]) as conn:
            if message == b"slow":
                await conn.set("started", message)
                deadline = time.monotonic() + 2
                while time.monotonic() < deadline:
                    pass
            await conn.set("last-message", message)
            await conn.incr("messages")
