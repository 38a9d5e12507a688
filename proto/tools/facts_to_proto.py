#!/usr/bin/env python3
"""Render the project's wire schema (proto/schema/*.proto) from kvproto's schema facts.

kvproto's facts (every message, field, enum and service method of pingcap/kvproto, as data)
are published in the shared research folder as `kvproto-schema-facts.json`. This tool picks the
part of that schema the client and the mock use (ROOTS below), closes it over field references,
and writes:

  * one `.proto` file per package under `proto/schema/`, fields in field-number order, oneofs
    and maps restored, services trimmed to the methods we keep;
  * `proto/tests/data/kvproto-facts.json`, the facts of exactly what was rendered, which the
    `schema_facts` test compares against the descriptors protox builds from our files.

Run it when kvproto moves (then regenerate the Rust code, see proto/README.md):

    python3 proto/tools/facts_to_proto.py ../shared/vectors/kvproto-schema-facts.json

`grpc.health.v1` is not part of kvproto and is written by hand (`schema/grpc_health_v1.proto`).
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Whole packages the client and the mock speak.
WHOLE_PACKAGES = ["kvrpcpb", "metapb", "errorpb", "apipb", "deadlock"]

# Services, and the methods of each we keep (None = all of them).
SERVICES = {
    # Everything a KV client or a mock TiKV answers; Raft, MPP, disaggregated and TiFlash
    # batch-coprocessor methods are store-to-store or TiFlash-only and stay out.
    "tikvpb.Tikv": lambda name, m: (
        (m["input"].split(".")[0] in ("kvrpcpb", "tikvpb") and m["input"] != "tikvpb.BatchRaftMessage")
        or m["input"] == "coprocessor.Request"
    ),
    "pdpb.PD": lambda name, m: name in {
        "GetMembers", "GetClusterInfo", "Tso", "GetMinTS", "AllocID", "IsBootstrapped",
        "QueryRegion", "GetRegion", "GetPrevRegion", "GetRegionByID", "ScanRegions",
        "BatchScanRegions", "GetStore", "GetAllStores",
        "ScatterRegion", "GetOperator", "SplitRegions", "SplitAndScatterRegions",
        "GetGCState", "GetAllKeyspacesGCStates", "AdvanceTxnSafePoint", "AdvanceGCSafePoint",
        "SetGCBarrier", "DeleteGCBarrier", "SetGlobalGCBarrier", "DeleteGlobalGCBarrier",
        "UpdateGCSafePoint", "UpdateServiceGCSafePoint", "GetGCSafePoint",
        "GetExternalTimestamp", "SetExternalTimestamp",
    },
    "keyspacepb.Keyspace": lambda name, m: name in {
        "LoadKeyspace", "LoadKeyspaceByID", "UpdateKeyspaceState", "GetAllKeyspaces",
    },
    "resource_manager.ResourceManager": lambda name, m: True,
    "deadlock.Deadlock": lambda name, m: True,
}

# Extra messages kept although no kept field or method references them.
EXTRA_MESSAGES = [
    "tikvpb.BatchCommandsEmptyRequest",
    "tikvpb.BatchCommandsEmptyResponse",
]

SCALARS = {
    "TYPE_UINT64": "uint64", "TYPE_UINT32": "uint32", "TYPE_INT64": "int64",
    "TYPE_INT32": "int32", "TYPE_BOOL": "bool", "TYPE_STRING": "string",
    "TYPE_BYTES": "bytes", "TYPE_DOUBLE": "double", "TYPE_FLOAT": "float",
    "TYPE_SINT64": "sint64", "TYPE_SINT32": "sint32", "TYPE_FIXED64": "fixed64",
    "TYPE_FIXED32": "fixed32", "TYPE_SFIXED64": "sfixed64", "TYPE_SFIXED32": "sfixed32",
}


def package_of(name):
    return name.split(".")[0]


def parent_of(name):
    parts = name.split(".")
    return ".".join(parts[:-1]) if len(parts) > 2 else None


def camel(field_name):
    return "".join(p[:1].upper() + p[1:] for p in field_name.split("_"))


def main(facts_path):
    facts = json.load(open(facts_path))
    messages, enums, services = facts["messages"], facts["enums"], facts["services"]

    kept_services = {}
    for svc, keep in SERVICES.items():
        methods = {n: m for n, m in services[svc].items() if keep(n, m)}
        kept_services[svc] = methods

    want_msgs, want_enums = set(), set()
    todo = [n for n in messages if package_of(n) in WHOLE_PACKAGES]
    todo += [n for n in enums if package_of(n) in WHOLE_PACKAGES]
    todo += EXTRA_MESSAGES
    for methods in kept_services.values():
        for m in methods.values():
            todo += [m["input"], m["output"]]
    while todo:
        name = todo.pop()
        if name in enums:
            if name not in want_enums:
                want_enums.add(name)
                if parent_of(name):
                    todo.append(parent_of(name))
            continue
        if name in want_msgs:
            continue
        if name not in messages:
            sys.exit(f"unknown type {name}")
        want_msgs.add(name)
        if parent_of(name):
            todo.append(parent_of(name))
        for f in messages[name].values():
            if f["type_name"]:
                todo.append(f["type_name"])

    for name in want_msgs:
        for fname, f in messages[name].items():
            if f["label"] == "LABEL_REQUIRED":
                sys.exit(f"{name}.{fname} is required: proto2, cannot render as proto3")

    packages = sorted({package_of(n) for n in want_msgs | want_enums} | {s.split(".")[0] for s in kept_services})
    os.makedirs(os.path.join(ROOT, "schema"), exist_ok=True)
    for pkg in packages:
        render_package(pkg, want_msgs, want_enums, messages, enums, kept_services)

    subset = {
        "source": "subset of pingcap/kvproto schema facts (HEAD b6cdca19) rendered into proto/schema",
        "messages": {n: messages[n] for n in sorted(want_msgs)},
        "enums": {n: enums[n] for n in sorted(want_enums)},
        "services": {s: dict(sorted(m.items())) for s, m in sorted(kept_services.items())},
    }
    os.makedirs(os.path.join(ROOT, "tests", "data"), exist_ok=True)
    with open(os.path.join(ROOT, "tests", "data", "kvproto-facts.json"), "w") as out:
        json.dump(subset, out, indent=1, sort_keys=False)
        out.write("\n")
    print(f"{len(packages)} packages, {len(want_msgs)} messages, {len(want_enums)} enums, "
          f"{sum(len(m) for m in kept_services.values())} methods")


def render_package(pkg, want_msgs, want_enums, messages, enums, kept_services):
    imports = set()

    def type_ref(type_name):
        other = package_of(type_name)
        if other != pkg:
            imports.add(other)
            return type_name
        return type_name[len(pkg) + 1:]

    def is_map_entry(msg_name, field_name, f):
        if f["label"] != "LABEL_REPEATED" or f["type"] != "TYPE_MESSAGE":
            return False
        entry = f["type_name"]
        return (parent_of(entry) == msg_name and entry.endswith(camel(field_name) + "Entry")
                and entry.split(".")[-1] == camel(field_name) + "Entry"
                and set(messages[entry]) == {"key", "value"})

    def field_type(f):
        if f["type"] in ("TYPE_MESSAGE", "TYPE_ENUM"):
            return type_ref(f["type_name"])
        return SCALARS[f["type"]]

    map_entries = set()
    for name in want_msgs:
        for fname, f in messages[name].items():
            if is_map_entry(name, fname, f):
                map_entries.add(f["type_name"])

    def children(parent):
        # Top-level types have no parent; match them by package instead.
        def under(n):
            return parent_of(n) == parent or (parent == pkg and parent_of(n) is None and package_of(n) == pkg)
        kids_m = sorted(n for n in want_msgs if under(n) and n not in map_entries)
        kids_e = sorted(n for n in want_enums if under(n))
        return kids_e, kids_m

    def render_enum(name, indent):
        values = sorted(enums[name].items(), key=lambda kv: (kv[1], kv[0]))
        lines = [f"{indent}enum {name.split('.')[-1]} {{"]
        numbers = [v for _, v in values]
        if len(set(numbers)) != len(numbers):
            lines.append(f"{indent}  option allow_alias = true;")
        for vname, num in values:
            lines.append(f"{indent}  {vname} = {num};")
        lines.append(f"{indent}}}")
        return lines

    def render_field(name, fname, f, indent):
        if is_map_entry(name, fname, f):
            entry = messages[f["type_name"]]
            return f"{indent}map<{field_type(entry['key'])}, {field_type(entry['value'])}> {fname} = {f['number']};"
        label = "repeated " if f["label"] == "LABEL_REPEATED" else ""
        return f"{indent}{label}{field_type(f)} {fname} = {f['number']};"

    def render_message(name, indent):
        lines = [f"{indent}message {name.split('.')[-1]} {{"]
        kids_e, kids_m = children(name)
        for e in kids_e:
            lines += render_enum(e, indent + "  ")
        for m in kids_m:
            lines += render_message(m, indent + "  ")
        fields = sorted(messages[name].items(), key=lambda kv: kv[1]["number"])
        done_oneofs = set()
        for fname, f in fields:
            oneof = f["oneof"]
            if oneof is None:
                lines.append(render_field(name, fname, f, indent + "  "))
            elif oneof not in done_oneofs:
                done_oneofs.add(oneof)
                lines.append(f"{indent}  oneof {oneof} {{")
                for gname, g in fields:
                    if g["oneof"] == oneof:
                        lines.append(render_field(name, gname, g, indent + "    "))
                lines.append(f"{indent}  }}")
        lines.append(f"{indent}}}")
        return lines

    body = []
    top_e, top_m = children(pkg)
    for e in top_e:
        body += render_enum(e, "")
        body.append("")
    for m in top_m:
        body += render_message(m, "")
        body.append("")
    for svc, methods in sorted(kept_services.items()):
        if package_of(svc) != pkg:
            continue
        body.append(f"service {svc.split('.')[-1]} {{")
        for mname, m in sorted(methods.items()):
            cs = "stream " if m["client_streaming"] else ""
            ss = "stream " if m["server_streaming"] else ""
            body.append(f"  rpc {mname}({cs}{type_ref(m['input'])}) returns ({ss}{type_ref(m['output'])});")
        body.append("}")
        body.append("")

    head = [
        f"// Package `{pkg}` of the TiKV/PD wire schema, as this project uses it.",
        "//",
        "// Written from the facts of pingcap/kvproto (message and field names, field numbers,",
        "// types, enum values); only the parts the client and the mock use are kept, and kept",
        "// messages have all of kvproto's fields. Rendered by proto/tools/facts_to_proto.py;",
        "// checked field by field against kvproto's facts by proto/tests/schema_facts.rs.",
        "",
        'syntax = "proto3";',
        "",
        f"package {pkg};",
        "",
    ]
    for imp in sorted(imports):
        head.append(f'import "{imp}.proto";')
    if imports:
        head.append("")
    with open(os.path.join(ROOT, "schema", f"{pkg}.proto"), "w") as out:
        out.write("\n".join(head + body).rstrip() + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "..", "shared", "vectors", "kvproto-schema-facts.json"))
