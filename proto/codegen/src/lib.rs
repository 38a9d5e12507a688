//! Generates tikv-proto's Rust code from the project's protobuf schema (`proto/schema`).
//!
//! Generation is pure Rust (protox parses the schema, prost-build writes the code), so neither
//! users nor CI need `protoc`. Besides the messages, the generator writes the typed method
//! table of every service (see `tikv_proto::method`).
//!
//! The generated code is checked in under `proto/src/generated/`. After changing the schema,
//! rewrite it with `cargo run -p tikv-proto-codegen`; the `up_to_date` test fails when the
//! checked-in code drifted from the schema. This crate does not depend on `tikv-proto`, so it
//! works even when the checked-in code does not compile.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use heck::{ToSnakeCase, ToUpperCamelCase};
use prost_types::FileDescriptorSet;

/// The schema folder, `proto/schema`.
pub fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema")
}

/// Where the checked-in generated code lives, `proto/src/generated`.
pub fn generated_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../src/generated")
}

/// Parses every `.proto` file of the schema into one descriptor set.
pub fn descriptors() -> FileDescriptorSet {
    let mut files: Vec<String> = std::fs::read_dir(schema_dir())
        .expect("read proto/schema")
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".proto"))
        .collect();
    files.sort();
    protox::compile(&files, [schema_dir()]).expect("the schema parses")
}

/// BatchCommands oneof variants, by the fully qualified request type they carry.
struct BatchVariant {
    tag: i32,
    variant: String,
}

fn batch_variants(fds: &FileDescriptorSet) -> BTreeMap<String, BatchVariant> {
    let tikvpb = fds
        .file
        .iter()
        .find(|f| f.package() == "tikvpb")
        .expect("tikvpb in schema");
    let find = |outer: &str| {
        tikvpb
            .message_type
            .iter()
            .find(|m| m.name() == outer)
            .and_then(|m| {
                m.nested_type
                    .iter()
                    .find(|n| n.name() == outer.trim_start_matches("BatchCommands"))
            })
            .unwrap_or_else(|| panic!("{outer} has its nested message"))
    };
    let request = find("BatchCommandsRequest");
    let response = find("BatchCommandsResponse");
    let mut out = BTreeMap::new();
    for field in &request.field {
        // Every request variant has the response variant of the same number and name.
        let answer = response
            .field
            .iter()
            .find(|r| r.number() == field.number())
            .unwrap_or_else(|| {
                panic!(
                    "no response variant for BatchCommands tag {}",
                    field.number()
                )
            });
        assert_eq!(
            answer.name(),
            field.name(),
            "BatchCommands variant names differ"
        );
        out.insert(
            field.type_name().to_string(),
            BatchVariant {
                tag: field.number(),
                variant: field.name().to_upper_camel_case(),
            },
        );
    }
    out
}

/// Writes a module per service with one type per method implementing `Method` (and
/// `BatchMethod` for TiKV methods that have a BatchCommands variant), plus `METHODS`.
struct MethodTable {
    batch: BTreeMap<String, BatchVariant>,
}

impl prost_build::ServiceGenerator for MethodTable {
    fn generate(&mut self, service: prost_build::Service, buf: &mut String) {
        let full = format!("{}.{}", service.package, service.proto_name);
        let module = format!("{}_service", service.name.to_snake_case());
        let is_tikv = full == "tikvpb.Tikv";
        writeln!(buf, "/// Method table of `{full}`: one type per method.").unwrap();
        writeln!(buf, "pub mod {module} {{").unwrap();
        let mut infos = String::new();
        for m in &service.methods {
            let path = format!("/{full}/{}", m.proto_name);
            let kind = match (m.client_streaming, m.server_streaming) {
                (false, false) => "Unary",
                (false, true) => "ServerStreaming",
                (true, false) => "ClientStreaming",
                (true, true) => "BidiStreaming",
            };
            let ty = m.proto_name.to_upper_camel_case();
            let batch = if is_tikv && kind == "Unary" {
                self.batch.get(&m.input_proto_type)
            } else {
                None
            };
            let (req, resp) = (&m.input_proto_type, &m.output_proto_type);
            writeln!(
                buf,
                "    /// `{path}`: {kind}, `{}` → `{}`.",
                req.trim_start_matches('.'),
                resp.trim_start_matches('.')
            )
            .unwrap();
            writeln!(buf, "    #[derive(Clone, Copy, Debug, Default)]").unwrap();
            writeln!(buf, "    pub struct {ty};").unwrap();
            writeln!(buf, "    impl crate::method::Method for {ty} {{").unwrap();
            writeln!(buf, "        const PATH: &'static str = {path:?};").unwrap();
            writeln!(
                buf,
                "        const KIND: crate::method::MethodKind = crate::method::MethodKind::{kind};"
            )
            .unwrap();
            writeln!(buf, "        type Request = super::{};", m.input_type).unwrap();
            writeln!(buf, "        type Response = super::{};", m.output_type).unwrap();
            writeln!(buf, "    }}").unwrap();
            if let Some(b) = batch {
                let (tag, v) = (b.tag, &b.variant);
                writeln!(buf, "    impl crate::method::BatchMethod for {ty} {{").unwrap();
                writeln!(buf, "        const BATCH_TAG: u32 = {tag};").unwrap();
                writeln!(buf, "        fn into_batch(request: Self::Request) -> super::batch_commands_request::request::Cmd {{").unwrap();
                writeln!(
                    buf,
                    "            super::batch_commands_request::request::Cmd::{v}(request)"
                )
                .unwrap();
                writeln!(buf, "        }}").unwrap();
                writeln!(buf, "        fn from_batch(response: super::batch_commands_response::response::Cmd) -> Option<Self::Response> {{").unwrap();
                writeln!(buf, "            match response {{").unwrap();
                writeln!(buf, "                super::batch_commands_response::response::Cmd::{v}(r) => Some(r),").unwrap();
                writeln!(buf, "                _ => None,").unwrap();
                writeln!(buf, "            }}").unwrap();
                writeln!(buf, "        }}").unwrap();
                writeln!(buf, "    }}").unwrap();
            }
            let batch_tag = batch.map_or("None".to_string(), |b| format!("Some({})", b.tag));
            writeln!(
                infos,
                "        crate::method::MethodInfo {{ path: {path:?}, service: {full:?}, name: {:?}, kind: crate::method::MethodKind::{kind}, batch_tag: {batch_tag} }},",
                m.proto_name
            )
            .unwrap();
        }
        writeln!(
            buf,
            "    /// Every method of `{full}`, for routing by path."
        )
        .unwrap();
        writeln!(
            buf,
            "    pub const METHODS: &[crate::method::MethodInfo] = &["
        )
        .unwrap();
        buf.push_str(&infos);
        writeln!(buf, "    ];").unwrap();
        writeln!(buf, "}}").unwrap();
    }
}

/// Message types that are large (hundreds of bytes inline) and usually absent: a field of one
/// of these types is boxed wherever it appears, so that requests and responses stay small.
/// Every response carries an optional region error, key error and execution details; inline
/// they made a `GetResponse` 2.3 KB, copied several times on the way from the socket to the
/// caller. Boxed, an absent one costs a null pointer and a present one one allocation.
const BOXED_TYPES: &[&str] = &[
    ".errorpb.Error",
    ".kvrpcpb.KeyError",
    ".kvrpcpb.ExecDetails",
    ".kvrpcpb.ExecDetailsV2",
    ".kvrpcpb.ResourceControlContext",
    ".kvrpcpb.SourceStmt",
    ".tracepb.TraceContext",
];

/// The prost paths (`.package.Message.field`) of every singular field whose type is in
/// [`BOXED_TYPES`], nested messages included.
fn boxed_fields(fds: &FileDescriptorSet) -> Vec<String> {
    fn walk(prefix: &str, message: &prost_types::DescriptorProto, out: &mut Vec<String>) {
        let path = format!("{prefix}.{}", message.name());
        for field in &message.field {
            let repeated = field.label() == prost_types::field_descriptor_proto::Label::Repeated;
            if !repeated && BOXED_TYPES.contains(&field.type_name()) {
                out.push(format!("{path}.{}", field.name()));
            }
        }
        for nested in &message.nested_type {
            walk(&path, nested, out);
        }
    }
    let mut out = Vec::new();
    for file in &fds.file {
        let prefix = format!(".{}", file.package());
        for message in &file.message_type {
            walk(&prefix, message, &mut out);
        }
    }
    out
}

/// Writes the generated Rust files (one per protobuf package) into `out`.
pub fn generate(out: &Path) {
    let fds = descriptors();
    let batch = batch_variants(&fds);
    std::fs::create_dir_all(out).expect("create output dir");
    let mut config = prost_build::Config::new();
    for path in boxed_fields(&fds) {
        config.boxed(path);
    }
    config
        .bytes(["."])
        // Ordered maps: encoding order must not depend on a hasher (reproducible simulation runs).
        .btree_map(["."])
        .out_dir(out)
        .service_generator(Box::new(MethodTable { batch }))
        .compile_fds(fds)
        .expect("prost-build generates");
}

/// Reads every file of a folder, by file name.
pub fn listing(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .expect("read generated dir")
        .map(|entry| {
            let path = entry.expect("dir entry").path();
            let name = path
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            (
                name,
                std::fs::read_to_string(&path).expect("read generated file"),
            )
        })
        .collect()
}
