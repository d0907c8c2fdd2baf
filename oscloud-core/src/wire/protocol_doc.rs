//! `docs/PROTOCOL.md` checked against the code: every golden vector the
//! tests build must appear in the document byte for byte (see
//! [`assert_in_doc`]), and the numbers the document states (timer
//! defaults, per-packet overhead) are the ones the code uses. So the
//! document, which a second implementation is written from, cannot drift
//! from the code unnoticed.

use std::time::Duration;

use bytes::Bytes;

use super::packet::{DATA_OVERHEAD, Msg, PIPE_DATA_OVERHEAD, Packet};
use super::{Config, FramingKind, SECURE_OVERHEAD};
use crate::NodeConfig;

/// The text of `docs/PROTOCOL.md`.
fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The byte strings the document writes in hex: runs of two-digit hex
/// tokens separated by white space (a vector may wrap over lines). A
/// backtick or any other token ends a run, so inline vectors (`92 34 04`)
/// and the lines of a golden block stay apart from the text around them.
fn hex_runs(text: &str) -> Vec<Vec<u8>> {
    fn byte(t: &str) -> Option<u8> {
        let ok = t.len() == 2 && t.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| u8::from_str_radix(t, 16).ok()).flatten()
    }
    let mut runs = Vec::new();
    let mut run = Vec::new();
    let mut flush = |run: &mut Vec<u8>| {
        let r = std::mem::take(run);
        if r.len() >= 2 {
            runs.push(r);
        }
    };
    for token in text.split_whitespace() {
        let trimmed = token.trim_end_matches(['.', ',', ';', ':', ')']);
        if token.starts_with('`') {
            flush(&mut run);
        }
        match byte(trimmed.trim_matches(['`', '('])) {
            Some(b) => run.push(b),
            None => flush(&mut run),
        }
        if trimmed.ends_with('`') {
            flush(&mut run);
        }
    }
    flush(&mut run);
    runs
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Assert that `docs/PROTOCOL.md` writes exactly these bytes somewhere, as
/// one run of hex (a golden block line, or an inline vector).
pub(crate) fn assert_in_doc(bytes: &[u8]) {
    let runs = hex_runs(&doc());
    assert!(
        runs.iter().any(|r| r == bytes),
        "docs/PROTOCOL.md does not contain the vector `{}`",
        hex(bytes)
    );
}

/// How the document writes a duration in its timer table: `10 ms`, `2 s`.
fn written(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// The row of the §6 timer table for `timer`.
fn timer_row(doc: &str, timer: &str) -> String {
    doc.lines()
        .find(|l| l.starts_with(&format!("| {timer} ")))
        .unwrap_or_else(|| panic!("no row for {timer} in the §6 timer table"))
        .to_owned()
}

#[test]
fn hex_runs_split_on_backticks_and_words() {
    let runs = hex_runs("sent as `00 01`. then `02 03` and\n  94 03\n  01 be there ab");
    assert_eq!(runs, [vec![0, 1], vec![2, 3], vec![0x94, 3, 1, 0xbe]]);
}

/// §6: the timer table gives the node's defaults and the setting that
/// changes each; the session's own defaults are the same ones.
#[test]
fn timer_table_is_what_the_node_uses() {
    let doc = doc();
    let node = NodeConfig::default();
    let session = Config::new(FramingKind::LossyStream);
    assert_eq!(
        (session.keepalive, session.idle_timeout),
        (node.keepalive, node.idle_timeout)
    );
    let rows = [
        ("keepalive", node.keepalive, "`keepalive`"),
        ("idle", node.idle_timeout, "`idle_timeout`"),
        (
            "retransmission",
            node.lossy_initial_rto,
            "`lossy_initial_rto`",
        ),
        ("delayed ack", session.ack_delay, "fixed"),
        ("reassembly", session.reassembly_timeout, "fixed"),
    ];
    for (timer, value, also) in rows {
        let row = timer_row(&doc, timer);
        let value = format!("[{}", written(value));
        assert!(row.contains(&value), "{timer}: want {value}: {row}");
        assert!(row.contains(also), "{timer}: want {also}: {row}");
    }
    // The rule between the two, as the doc states it, is enforced.
    assert!(doc.contains("The keepalive must be shorter than the idle timeout"));
    let equal = NodeConfig {
        keepalive: node.idle_timeout,
        ..NodeConfig::default()
    };
    assert!(equal.validate().is_err());
    let rto = timer_row(&doc, "retransmission");
    let max = written(session.max_rto.max(node.lossy_initial_rto));
    assert!(rto.contains(&format!("up to {max}")), "{rto}");
}

/// §8: the most a Data packet adds around the bytes of a PipeData piece,
/// and what sealing adds (§11.3).
#[test]
fn pipe_data_overhead_is_as_documented() {
    let data = Bytes::from(vec![7u8; 70_000]);
    let worst = Packet::Data {
        seq: u64::MAX,
        ack: u64::MAX,
        msg: Msg::PipeData {
            pipe: u64::MAX,
            last: false,
            data: data.clone(),
        },
    };
    let overhead = worst.encode().unwrap().len() - data.len();
    assert_eq!(overhead, DATA_OVERHEAD + PIPE_DATA_OVERHEAD);
    // Prose wraps: compare with runs of white space as one space.
    let doc = doc().split_whitespace().collect::<Vec<_>>().join(" ");
    let stated = format!("at most {overhead} bytes");
    assert!(doc.contains(&stated), "§8 should say {stated:?}");
    let sealed = format!("{} + {SECURE_OVERHEAD} =", overhead);
    assert!(doc.contains(&sealed), "§8 should say {sealed:?}");
}

#[test]
fn close_code_names_are_the_table_of_section_5_4() {
    use crate::wire::CloseCode;
    let doc = doc();
    let table = doc
        .split_once("### 5.4 close codes")
        .expect("§5.4 in docs/PROTOCOL.md")
        .1;
    let mut rows = 0;
    for line in table.lines().skip_while(|l| !l.starts_with('|')) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Ok(code) = cells[1].parse::<u8>() else {
            continue;
        };
        let c = CloseCode::from_code(code);
        assert_eq!(c.name(), cells[2], "code {code}");
        assert_eq!(c.index(), usize::from(code));
        rows += 1;
    }
    assert_eq!(rows, usize::from(CloseCode::KNOWN));
    assert_eq!(CloseCode::from_code(200).name(), "Other");
    assert_eq!(
        CloseCode::from_code(200).index(),
        usize::from(CloseCode::KNOWN)
    );
}
