//! Generate (or inspect) a node key: the library side of the future
//! `oscloud keygen` (the CLI is issue 8).
//!
//! ```text
//! cargo run -p oscloud-examples --example keygen -- node.key          # new key, mode 0600
//! cargo run -p oscloud-examples --example keygen -- --show node.key   # print its public key
//! ```
//!
//! Prints the public key (what peers put on their allow-list) and the node
//! id derived from it. Refuses to overwrite an existing file.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use oscloud_core::identity::NodeKey;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (show, path) = match args.as_slice() {
        [flag, path] if flag == "--show" => (true, PathBuf::from(path)),
        [path] if !path.starts_with('-') => (false, PathBuf::from(path)),
        _ => {
            eprintln!("usage: keygen <key file> | keygen --show <key file>");
            return ExitCode::from(2);
        }
    };
    let key = if show {
        NodeKey::load(&path)
    } else if path.exists() {
        eprintln!("{} exists; not overwriting it", path.display());
        return ExitCode::FAILURE;
    } else {
        let key = NodeKey::generate();
        key.save(&path).map(|()| key)
    };
    match key {
        Ok(key) => {
            println!("public {}", key.public());
            println!("node   {}", key.node_id());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}
