//! Generates Rust types from `proto/*.proto` with Debian's `protoc` (installed by
//! `scripts/install-deps.sh`; set `PROTOC` to use another one).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // Messages only: the intercept library links these without tonic.
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(false)
        .compile_protos(&["proto/intercept.proto"], &["proto"])?;
    // Serde on the coordinator's messages lets the CLI print them as JSON (`-o json`).
    tonic_prost_build::configure()
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        // Reading JSON, a field left out is its default, as on the wire.
        .message_attribute(".", "#[serde(default)]")
        // Enums print as their names in JSON, not as numbers.
        .field_attribute(
            "rdmaq.v1.Limits.wr_policy",
            "#[serde(with = \"crate::serde_enum::wr_policy\")]",
        )
        .compile_protos(&["proto/coordinator.proto", "proto/raft.proto"], &["proto"])?;
    Ok(())
}
