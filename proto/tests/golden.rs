//! The wire schema's ground truth: messages encoded by the reference protobuf implementation
//! from kvproto's own schema (`tests/data/kvproto-golden.json`, see its `source`).
//!
//! For every vector, in both directions:
//! 1. the generated type decodes the reference bytes and re-encodes them byte for byte;
//! 2. the same bytes, read through our schema's descriptors, give the vector's proto3 JSON
//!    field by field (names, numbers, enum values);
//! 3. the vector's JSON, encoded through our descriptors, decodes with the generated type to
//!    the same value as the reference bytes.

use std::path::Path;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::Value;
use tikv_proto::{errorpb, kvrpcpb, pdpb, tikvpb};

fn pool() -> DescriptorPool {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
    let files = [
        "kvrpcpb.proto",
        "tikvpb.proto",
        "pdpb.proto",
        "errorpb.proto",
    ];
    let fds = protox::compile(files, [schema]).expect("schema parses");
    DescriptorPool::from_file_descriptor_set(fds).expect("descriptor pool")
}

fn unhex(hex: &str) -> Vec<u8> {
    assert!(hex.len() % 2 == 0, "odd hex length");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Decodes with the generated type, re-encodes, and returns the re-encoding and a
/// re-encoding of the value decoded from `other` (the JSON-derived bytes).
fn through_generated<T: Message + Default + PartialEq + std::fmt::Debug>(
    name: &str,
    reference: &[u8],
    from_json: &[u8],
) -> Vec<u8> {
    let value = T::decode(reference).unwrap_or_else(|e| panic!("{name}: decode failed: {e}"));
    let from_json =
        T::decode(from_json).unwrap_or_else(|e| panic!("{name}: decode of JSON form failed: {e}"));
    assert_eq!(
        value, from_json,
        "{name}: JSON form and reference bytes decode to different values"
    );
    value.encode_to_vec()
}

fn reencode(type_name: &str, name: &str, reference: &[u8], from_json: &[u8]) -> Vec<u8> {
    match type_name {
        "kvrpcpb.Context" => through_generated::<kvrpcpb::Context>(name, reference, from_json),
        "kvrpcpb.RawGetRequest" => {
            through_generated::<kvrpcpb::RawGetRequest>(name, reference, from_json)
        }
        "kvrpcpb.RawBatchPutRequest" => {
            through_generated::<kvrpcpb::RawBatchPutRequest>(name, reference, from_json)
        }
        "kvrpcpb.RawCASRequest" => {
            through_generated::<kvrpcpb::RawCasRequest>(name, reference, from_json)
        }
        "kvrpcpb.PrewriteRequest" => {
            through_generated::<kvrpcpb::PrewriteRequest>(name, reference, from_json)
        }
        "kvrpcpb.CommitRequest" => {
            through_generated::<kvrpcpb::CommitRequest>(name, reference, from_json)
        }
        "kvrpcpb.CheckTxnStatusRequest" => {
            through_generated::<kvrpcpb::CheckTxnStatusRequest>(name, reference, from_json)
        }
        "kvrpcpb.PessimisticLockRequest" => {
            through_generated::<kvrpcpb::PessimisticLockRequest>(name, reference, from_json)
        }
        "kvrpcpb.KeyError" => through_generated::<kvrpcpb::KeyError>(name, reference, from_json),
        "errorpb.Error" => through_generated::<errorpb::Error>(name, reference, from_json),
        "tikvpb.BatchCommandsRequest" => {
            through_generated::<tikvpb::BatchCommandsRequest>(name, reference, from_json)
        }
        "tikvpb.BatchCommandsResponse" => {
            through_generated::<tikvpb::BatchCommandsResponse>(name, reference, from_json)
        }
        "pdpb.TsoRequest" => through_generated::<pdpb::TsoRequest>(name, reference, from_json),
        "pdpb.TsoResponse" => through_generated::<pdpb::TsoResponse>(name, reference, from_json),
        "pdpb.GetRegionResponse" => {
            through_generated::<pdpb::GetRegionResponse>(name, reference, from_json)
        }
        "pdpb.GetMembersResponse" => {
            through_generated::<pdpb::GetMembersResponse>(name, reference, from_json)
        }
        other => panic!("{name}: add {other} to the golden test's type table"),
    }
}

#[test]
fn golden_vectors_match_both_ways() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kvproto-golden.json");
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let vectors = golden["vectors"].as_array().expect("vectors");
    assert!(
        vectors.len() >= 20,
        "expected the full vector set, got {}",
        vectors.len()
    );
    let pool = pool();
    let json_options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(true);

    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let type_name = v["type"].as_str().unwrap();
        let reference = unhex(v["hex"].as_str().unwrap());
        let desc = pool
            .get_message_by_name(type_name)
            .unwrap_or_else(|| panic!("{name}: {type_name} not in schema"));

        // 2. Reference bytes → our descriptors → JSON, compared with the vector's JSON.
        let dynamic =
            DynamicMessage::decode(desc.clone(), reference.as_slice()).expect("dynamic decode");
        let mut ser = serde_json::Serializer::new(Vec::new());
        dynamic
            .serialize_with_options(&mut ser, &json_options)
            .expect("to JSON");
        let ours: Value = serde_json::from_slice(&ser.into_inner()).unwrap();
        assert_eq!(
            ours, v["json"],
            "{name}: fields differ from the reference JSON"
        );

        // 3. Vector JSON → our descriptors → bytes.
        let from_json = DynamicMessage::deserialize(desc, v["json"].clone())
            .expect("from JSON")
            .encode_to_vec();

        // 1. Generated type: decode, compare with the JSON form, re-encode byte for byte.
        let again = reencode(type_name, name, &reference, &from_json);
        assert_eq!(
            again, reference,
            "{name}: re-encoding differs from the reference bytes"
        );
    }
}
