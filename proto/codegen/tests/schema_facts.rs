//! The schema's ground truth: every message, field, enum and method of `proto/schema` matches
//! kvproto's own schema, as recorded in `proto/tests/data/kvproto-facts.json` (the facts of
//! exactly the parts we keep, extracted from kvproto's facts by `proto/tools/facts_to_proto.py`).
//!
//! A wrong field number or type here is a silent data-corruption bug on the wire, so the
//! comparison is exact both ways: nothing missing, nothing extra, nothing different.
//!
//! When the complete facts of kvproto are at hand (the shared research folder, or a path in
//! `TIKV_KVPROTO_FACTS`), the schema is also compared with them directly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};
use serde_json::{Map, Value, json};

/// Packages of the schema that are not kvproto's.
const NOT_KVPROTO: &[&str] = &["grpc.health.v1", "tipb"];

#[derive(Default)]
struct Facts {
    messages: BTreeMap<String, Value>,
    enums: BTreeMap<String, Value>,
    services: BTreeMap<String, Value>,
}

fn our_facts(fds: &FileDescriptorSet) -> Facts {
    let mut facts = Facts::default();
    for file in &fds.file {
        if NOT_KVPROTO.contains(&file.package()) {
            continue;
        }
        for message in &file.message_type {
            collect_message(&mut facts, file.package(), message);
        }
        for e in &file.enum_type {
            collect_enum(&mut facts, file.package(), e);
        }
        for service in &file.service {
            let mut methods = Map::new();
            for m in &service.method {
                methods.insert(
                    m.name().to_string(),
                    json!({
                        "client_streaming": m.client_streaming(),
                        "input": m.input_type().trim_start_matches('.'),
                        "output": m.output_type().trim_start_matches('.'),
                        "server_streaming": m.server_streaming(),
                    }),
                );
            }
            facts.services.insert(
                format!("{}.{}", file.package(), service.name()),
                Value::Object(methods),
            );
        }
    }
    facts
}

fn collect_message(facts: &mut Facts, scope: &str, message: &DescriptorProto) {
    let name = format!("{scope}.{}", message.name());
    let mut fields = Map::new();
    for f in &message.field {
        let oneof = f
            .oneof_index
            .map(|i| Value::String(message.oneof_decl[i as usize].name().to_string()))
            .unwrap_or(Value::Null);
        fields.insert(
            f.name().to_string(),
            json!({
                "label": f.label().as_str_name(),
                "number": f.number(),
                "oneof": oneof,
                "type": f.r#type().as_str_name(),
                "type_name": f.type_name().trim_start_matches('.'),
            }),
        );
    }
    facts.messages.insert(name.clone(), Value::Object(fields));
    for nested in &message.nested_type {
        collect_message(facts, &name, nested);
    }
    for e in &message.enum_type {
        collect_enum(facts, &name, e);
    }
}

fn collect_enum(facts: &mut Facts, scope: &str, e: &EnumDescriptorProto) {
    let values: Map<String, Value> = e
        .value
        .iter()
        .map(|v| (v.name().to_string(), json!(v.number())))
        .collect();
    facts
        .enums
        .insert(format!("{scope}.{}", e.name()), Value::Object(values));
}

fn load(path: &Path) -> Facts {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let all: Value = serde_json::from_str(&text).expect("facts are JSON");
    let section = |key: &str| -> BTreeMap<String, Value> {
        all[key]
            .as_object()
            .expect("facts section")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    Facts {
        messages: section("messages"),
        enums: section("enums"),
        services: section("services"),
    }
}

/// Compares each of ours with theirs; `exact` also requires that they have nothing we lack.
fn compare(
    kind: &str,
    ours: &BTreeMap<String, Value>,
    theirs: &BTreeMap<String, Value>,
    exact: bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, value) in ours {
        match theirs.get(name) {
            None => problems.push(format!("{kind} {name} is not in kvproto")),
            Some(expected) if expected != value => {
                problems.extend(member_diffs(kind, name, value, expected))
            }
            Some(_) => {}
        }
    }
    if exact {
        for name in theirs.keys().filter(|n| !ours.contains_key(*n)) {
            problems.push(format!(
                "{kind} {name} is in the facts but not in our schema"
            ));
        }
    }
    problems
}

/// Names each field (or enum value, or method) that differs, rather than whole messages.
fn member_diffs(kind: &str, name: &str, ours: &Value, theirs: &Value) -> Vec<String> {
    let (Some(ours), Some(theirs)) = (ours.as_object(), theirs.as_object()) else {
        return vec![format!(
            "{kind} {name} differs: ours {ours}, kvproto {theirs}"
        )];
    };
    let mut out = Vec::new();
    for (member, value) in ours {
        match theirs.get(member) {
            Some(expected) if expected == value => {}
            Some(expected) => out.push(format!(
                "{kind} {name}.{member}: ours {value}, kvproto {expected}"
            )),
            None => out.push(format!("{kind} {name}.{member}: not in kvproto")),
        }
    }
    for member in theirs.keys().filter(|m| !ours.contains_key(*m)) {
        out.push(format!(
            "{kind} {name}.{member}: in kvproto, missing from ours"
        ));
    }
    out
}

fn check(ours: &Facts, theirs: &Facts, exact: bool) {
    let mut problems = compare("message", &ours.messages, &theirs.messages, exact);
    problems.extend(compare("enum", &ours.enums, &theirs.enums, exact));
    if exact {
        problems.extend(compare("service", &ours.services, &theirs.services, true));
    } else {
        // Our services keep a subset of kvproto's methods; each kept one must match.
        for (svc, methods) in &ours.services {
            let Some(all) = theirs.services.get(svc) else {
                problems.push(format!("service {svc} is not in kvproto"));
                continue;
            };
            for (m, v) in methods.as_object().expect("methods") {
                if all.get(m) != Some(v) {
                    problems.push(format!("method {svc}/{m} differs from kvproto: {v}"));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} schema problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

fn schema() -> Facts {
    our_facts(&tikv_proto_codegen::descriptors())
}

#[test]
fn schema_matches_recorded_kvproto_facts() {
    let recorded = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/kvproto-facts.json");
    let ours = schema();
    assert!(
        ours.messages.len() > 300,
        "schema parsed only {} messages",
        ours.messages.len()
    );
    check(&ours, &load(&recorded), true);
}

#[test]
fn schema_matches_full_kvproto_facts_when_available() {
    let candidates: Vec<PathBuf> = std::env::var_os("TIKV_KVPROTO_FACTS")
        .map(PathBuf::from)
        .into_iter()
        .chain([Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/vectors/kvproto-schema-facts.json")])
        .collect();
    let Some(path) = candidates.into_iter().find(|p| p.exists()) else {
        eprintln!("full kvproto facts not found; the recorded subset is still checked");
        return;
    };
    check(&schema(), &load(&path), false);
}
