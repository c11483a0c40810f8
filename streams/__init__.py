"""kaizen topology: settings, the faust app, records, topics, tables, CLI and the embedded stack."""

from streams.runtime import track_every_produced_topic

# Every process of kaizen imports this package before it makes a Kafka client: each of them then keeps the
# metadata of every topic it writes to (streams/runtime.py says what goes wrong otherwise).
track_every_produced_topic()
