#!/usr/bin/env python3
"""Writes the log-capturer config of perf/steady.sh: a file source tailing
INPUT into a Kafka sink (raw, lz4), everything else at its built-in default,
then each OVERRIDE merged in.

steady_config.py OUT.toml DATA_DIR INPUT BOOTSTRAP TOPIC [OVERRIDE...]

An OVERRIDE is TOML text merged over the config, key by key; a dotted key
on one line is the usual form:

    'dispatcher.batch_timeout_ms = 5'
    'sinks.kafka.librdkafka."linger.ms" = 1'
    'sources.steady.poll_interval_ms = 10'
"""
import json
import sys
import tomllib

def merge(base: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value

def key(name: str) -> str:
    bare = name and all(c.isalnum() or c in "-_" for c in name)
    return name if bare else json.dumps(name)

def value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + " }"
    raise SystemExit(f"cannot write {v!r} as TOML")

def emit(table: dict, path: list, out: list) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict) or len(path) >= 2}
    tables = {k: v for k, v in table.items() if k not in scalars}
    if path and scalars:
        out.append("[" + ".".join(key(p) for p in path) + "]")
    for k, v in scalars.items():
        out.append(f"{key(k)} = {value(v)}")
    if scalars:
        out.append("")
    for k, v in tables.items():
        emit(v, path + [k], out)

def main() -> None:
    out_path, data_dir, input_path, bootstrap, topic = sys.argv[1:6]
    config = {
        "daemon": {"data_dir": data_dir, "metrics_addr": "127.0.0.1:0"},
        "sources": {"steady": {"type": "file", "paths": [input_path]}},
        "sinks": {"kafka": {
            "type": "kafka",
            "brokers": bootstrap,
            "topic": topic,
            "encoding": "raw",
            "librdkafka": {"compression.type": "lz4"},
        }},
    }
    for override in sys.argv[6:]:
        try:
            merge(config, tomllib.loads(override))
        except tomllib.TOMLDecodeError as error:
            raise SystemExit(f"bad override {override!r}: {error}")
    lines: list = []
    emit(config, [], lines)
    with open(out_path, "w") as out:
        out.write("\n".join(lines))

if __name__ == "__main__":
    main()
