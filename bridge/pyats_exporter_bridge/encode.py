"""Event dict -> one JSON line for the exporter's NDJSON ingest.

Datetimes become ISO 8601 with a UTC offset (naive ones are the job machine's local time, so the local offset
is attached here, where it is known); result objects become {"value", "reason"}; anything else JSON cannot
hold becomes its string.
"""

import datetime
import json
import math

MAX_DEPTH = 16
MAX_STRING = 64 * 1024


def encode_event(event):
    """One event dict as a compact JSON line, without the newline."""
    return json.dumps(to_json(event), ensure_ascii=False, separators=(',', ':'), allow_nan=False)


def control_line(kind, **fields):
    """A control line of the ingest protocol: hello (names the job's stream), ping, end."""
    record = {'control': kind}
    record.update(fields)
    return json.dumps(record, ensure_ascii=False, separators=(',', ':'))


def to_json(value, depth=0):
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _clip(value)
    if depth >= MAX_DEPTH:
        return _clip(_string(value))
    if isinstance(value, datetime.datetime):
        # astimezone() on a naive datetime takes it as local time and attaches the local offset.
        aware = value if value.tzinfo is not None and value.utcoffset() is not None else value.astimezone()
        return aware.isoformat()
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {_key(k): to_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(v, depth + 1) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return _clip(bytes(value).decode('utf-8', 'replace'))
    result = _result(value)
    if result is not None:
        return result
    return _clip(_string(value))


def _result(value):
    """A pyATS result object (pyats.results.Passed, a clone with a reason, ...) as {value, reason}."""
    inner = getattr(value, 'value', None)
    if not isinstance(inner, str):
        return None
    result = {'value': inner}
    reason = getattr(value, 'reason', None)
    if isinstance(reason, str) and reason:
        result['reason'] = _clip(reason)
    return result


def _key(key):
    return key if isinstance(key, str) else _string(key)


def _string(value):
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a broken __str__ must not stop the event
        return '<%s>' % type(value).__name__


def _clip(text):
    return text if len(text) <= MAX_STRING else text[:MAX_STRING]
