//! What the frame ciphers cost on this machine, alone: one thread seals
//! 64 KiB frames from one buffer into another (as a link seals a packet
//! into its frame buffer) and opens them in place, and reports the CPU
//! time per GiB for each (`getrusage`; the bench has one thread). This is the floor
//! of an encrypted pipe: a link pays one seal on the sender and one open
//! on the receiver per byte, on top of the plaintext pipe's own cost.
//!
//! `cargo bench -p oscloud-core --bench cipher` (`OSCLOUD_BENCH_GIB=N`
//! changes the 2 GiB moved per cipher and direction).
#![allow(clippy::print_stdout, clippy::expect_used, missing_docs, unsafe_code)]

mod common;

use std::time::Duration;

use aegis::aegis256::Aegis256;
use common::cpu_time as thread_cpu;
use ring::aead::{AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

const FRAME: usize = 64 * 1024;
const TAG: usize = 16;

fn nonce12(n: u64) -> Nonce {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&n.to_be_bytes());
    Nonce::assume_unique_for_key(nonce)
}

fn nonce32(n: u64) -> [u8; 32] {
    let mut nonce = [0u8; 32];
    nonce[24..].copy_from_slice(&n.to_be_bytes());
    nonce
}

/// Seal `frames` frames and open each again; CPU ms per GiB for each.
fn run(
    name: &str,
    frames: u64,
    seal: impl Fn(u64, &[u8], &mut [u8]),
    open: impl Fn(u64, &mut [u8]),
) {
    let plain = vec![0x5au8; FRAME];
    let mut sealed: Vec<Vec<u8>> = (0..64).map(|_| vec![0u8; FRAME + TAG]).collect();
    let mut seal_cpu = Duration::ZERO;
    let mut open_cpu = Duration::ZERO;
    let mut n = 0u64;
    while n < frames {
        let batch = sealed.len().min((frames - n) as usize);
        let t = thread_cpu();
        for (i, out) in sealed.iter_mut().take(batch).enumerate() {
            seal(n + i as u64, &plain, out);
        }
        seal_cpu += thread_cpu() - t;
        let t = thread_cpu();
        for (i, buf) in sealed.iter_mut().take(batch).enumerate() {
            open(n + i as u64, buf);
        }
        open_cpu += thread_cpu() - t;
        n += batch as u64;
    }
    let gib = (frames * FRAME as u64) as f64 / (1u64 << 30) as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0 / gib;
    println!(
        "| {name} | {:.0} ms | {:.0} ms | {:.0} ms | {:.1} GiB/s |",
        ms(seal_cpu),
        ms(open_cpu),
        ms(seal_cpu + open_cpu),
        gib / seal_cpu.as_secs_f64()
    );
}

fn ring_cipher(name: &str, frames: u64, alg: &'static ring::aead::Algorithm) {
    let key = LessSafeKey::new(UnboundKey::new(alg, &[7u8; 32]).expect("32-byte key"));
    run(
        name,
        frames,
        |n, plain, out| {
            let (body, tag) = out.split_at_mut(FRAME);
            body.copy_from_slice(plain);
            let t = key
                .seal_in_place_separate_tag(nonce12(n), Aad::empty(), body)
                .expect("seal");
            tag.copy_from_slice(t.as_ref());
        },
        |n, buf| {
            key.open_in_place(nonce12(n), Aad::empty(), buf)
                .expect("authentic");
        },
    );
}

fn main() {
    let gib: u64 = std::env::var("OSCLOUD_BENCH_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let frames = gib * (1 << 30) / FRAME as u64;
    println!("{gib} GiB in 64 KiB frames per cipher, one thread, CPU time per GiB moved");
    println!();
    println!("| cipher | seal | open | both | seal rate on a core |");
    println!("|---|---|---|---|---|");
    let key = [7u8; 32];
    run(
        "AEGIS-256 (`aegis`)",
        frames,
        |n, plain, out| {
            let (body, tag) = out.split_at_mut(FRAME);
            let mut enc = Aegis256::<TAG>::new(&key, &nonce32(n)).encryptor(&[]);
            enc.update(plain, body);
            tag.copy_from_slice(&enc.finalize());
        },
        |n, buf| {
            let (body, tag) = buf.split_at_mut(FRAME);
            let mut t = [0u8; TAG];
            t.copy_from_slice(tag);
            Aegis256::<TAG>::new(&key, &nonce32(n))
                .decrypt_in_place(body, &t, &[])
                .expect("authentic");
        },
    );
    ring_cipher("AES-256-GCM (`ring`)", frames, &AES_256_GCM);
    ring_cipher("ChaCha20-Poly1305 (`ring`)", frames, &CHACHA20_POLY1305);
}
