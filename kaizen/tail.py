"""`kaizen tail` / `kaizen produce`: read or write any topic from the shell (kcat-like, on aiokafka)."""

from __future__ import annotations

import asyncio
import sys
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


async def tail(bootstrap: str, topic: str, from_beginning: bool = True, idle_exit: float | None = None,
               show_key: bool = True) -> int:
    """Print every record of every partition (key TAB value); stop after `idle_exit` quiet seconds."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    n = 0
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer.topics()
            parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            raise ValueError(f"topic {topic!r} does not exist on {bootstrap}")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        last = time.monotonic()
        while idle_exit is None or time.monotonic() - last < idle_exit:
            batch = await consumer.getmany(timeout_ms=250)
            for msgs in batch.values():
                for m in msgs:
                    key = m.key.decode(errors="backslashreplace") if m.key else ""
                    val = m.value.decode(errors="backslashreplace") if m.value else ""
                    sys.stdout.write(f"{key}\t{val}\n" if show_key else f"{val}\n")
                    n += 1
                    last = time.monotonic()
            sys.stdout.flush()
    finally:
        await consumer.stop()
    return n


async def produce(bootstrap: str, topic: str, key: str | None) -> int:
    """Send each stdin line as one message (one record or an envelope), keyed by `key`."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    n = 0
    try:
        for line in sys.stdin:
            line = line.rstrip("\n")
            if line:
                await producer.send_and_wait(topic, line.encode(), key=key.encode() if key else None)
                n += 1
    finally:
        await producer.stop()
    return n


def run(coro: asyncio.Future[int] | object) -> int:
    return int(asyncio.run(coro))  # type: ignore[arg-type]
