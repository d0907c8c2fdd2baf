//! The committed header `include/oscloud.h` must be what cbindgen makes of
//! the current sources. Run with `OSCLOUD_BLESS=1` (or
//! `scripts/gen-c-header.sh`) to rewrite it.

use std::path::PathBuf;

#[test]
fn committed_header_is_up_to_date() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .expect("cbindgen runs")
        .write(&mut generated);
    let path = dir.join("include/oscloud.h");
    if std::env::var_os("OSCLOUD_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write header");
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "bindings-c/include/oscloud.h is stale: run scripts/gen-c-header.sh and commit it"
    );
}
