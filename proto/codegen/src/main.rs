//! Rewrites `proto/src/generated/` from `proto/schema/`: `cargo run -p tikv-proto-codegen`.

fn main() {
    let out = tikv_proto_codegen::generated_dir();
    let _ = std::fs::remove_dir_all(&out);
    tikv_proto_codegen::generate(&out);
    println!("wrote {}", out.display());
}
