#![allow(missing_docs, clippy::print_stdout, clippy::unwrap_used)]
use ring::aead::*;
fn run(alg: &'static Algorithm, name: &str) {
    let k = LessSafeKey::new(UnboundKey::new(alg, &[1u8; 32]).unwrap());
    let mut buf = vec![0u8; 65536];
    let n = 16384;
    let t = std::time::Instant::now();
    for i in 0..n {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&(i as u64).to_le_bytes());
        let _ = k
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .unwrap();
    }
    let d = t.elapsed();
    println!(
        "{name} {:.0} MiB/s",
        (n as f64 * 65536.0) / 1048576.0 / d.as_secs_f64()
    );
}
fn main() {
    run(&CHACHA20_POLY1305, "ring chacha");
    run(&AES_256_GCM, "ring aes-gcm");
}
