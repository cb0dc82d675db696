//! Writes what is generated from the wire types: the JSON Schemas under
//! `spec/schemas/` and `spec/asyncapi.yaml`. `nap-core`'s schema-drift test
//! fails until the committed files match.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../spec/schemas");
    std::fs::create_dir_all(&dir)?;
    for (name, schema) in nap_core::schema::all() {
        let mut text = serde_json::to_string_pretty(&schema).map_err(std::io::Error::other)?;
        text.push('\n');
        std::fs::write(dir.join(&name), text)?;
        eprintln!("wrote spec/schemas/{name}");
    }
    let asyncapi = dir.join("../asyncapi.yaml");
    std::fs::write(&asyncapi, nap_core::schema::asyncapi())?;
    eprintln!("wrote spec/asyncapi.yaml");
    Ok(())
}
