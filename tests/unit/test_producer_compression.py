"""KAIZEN_PRODUCER_COMPRESSION: the codec every worker and connector batch is written with (zstd by default)."""

from __future__ import annotations

import orjson
import pytest
from aiokafka.producer.producer import AIOKafkaProducer
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from pydantic import ValidationError

from benchmarks.common import BASE_TS, metric_points
from streams.codec import encode_lean
from streams.contract import Limits
from streams.metric_columns import decode_metric_columns
from streams.settings import Settings


def test_the_setting_names_the_codec_and_none_turns_it_off() -> None:
    assert Settings().compression_type == "zstd"
    assert Settings(kaizen_producer_compression="lz4").compression_type == "lz4"
    assert Settings(kaizen_producer_compression="none").compression_type is None
    with pytest.raises(ValidationError, match="kaizen_producer_compression"):
        Settings(kaizen_producer_compression="brotli")


def test_the_worker_app_writes_with_it() -> None:
    from streams import app as A

    assert A.app.conf.producer_compression_type == A.settings.compression_type


def test_a_clean_envelope_round_trips_through_a_zstd_batch_much_smaller() -> None:
    """What the producer and every reader do with a clean-topic message: the codec is installed (aiokafka
    refuses a codec whose library is missing), the batch reads back byte for byte, and JSON's repeated keys
    make it several times smaller."""
    has_codec, _ = AIOKafkaProducer._COMPRESSORS["zstd"]
    assert has_codec(), "aiokafka finds no zstd library (cramjam, the aiokafka[zstd] extra)"
    raw = orjson.dumps({"records": metric_points(1_000, 250)})
    now = BASE_TS + 86_400.0  # a day after the points: within the ingest limits
    points = decode_metric_columns(raw, topic="t", now=now, limits=Limits()).records
    assert len(points) == 1_000
    value = encode_lean(points)
    builder = DefaultRecordBatchBuilder(2, DefaultRecordBatch.CODEC_ZSTD, is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=len(value) * 2)
    builder.append(0, timestamp=None, key=b"0", value=value, headers=[])
    data = bytes(builder.build())
    batch = DefaultRecordBatch(data)
    assert batch.compression_type == DefaultRecordBatch.CODEC_ZSTD
    assert batch.validate_crc()
    assert [r.value for r in batch] == [value]
    assert len(data) * 5 < len(value), (len(data), len(value))
