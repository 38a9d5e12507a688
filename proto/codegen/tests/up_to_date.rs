//! Fails when the checked-in code in `proto/src/generated/` drifted from `proto/schema/`.

use std::path::Path;

use tikv_proto_codegen::{generate, generated_dir, listing};

#[test]
fn checked_in_code_matches_schema() {
    let fresh = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tikv-proto-codegen");
    let _ = std::fs::remove_dir_all(&fresh);
    generate(&fresh);
    let fresh_files = listing(&fresh);
    let checked_in = listing(&generated_dir());
    let hint = "run `cargo run -p tikv-proto-codegen` and commit the result";
    assert_eq!(
        checked_in.keys().collect::<Vec<_>>(),
        fresh_files.keys().collect::<Vec<_>>(),
        "the set of generated files drifted; {hint}"
    );
    for (name, text) in &fresh_files {
        assert!(
            &checked_in[name] == text,
            "src/generated/{name} drifted from proto/schema; {hint}"
        );
    }
}
