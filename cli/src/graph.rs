//! The topology as a Graphviz graph.

use std::fmt::Write as _;

use crate::topology::Topology;

fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The topology in the DOT language: one cluster per node (with its
/// addresses), a box per server (name and kind), an arrow per pipe from
/// source to destination labelled with the ports; merges and splits meet
/// at a small junction point.
pub fn dot(topo: &Topology) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "digraph oscloud {{");
    let _ = writeln!(o, "  rankdir=LR;");
    let _ = writeln!(
        o,
        "  node [shape=box, style=rounded, fontname=\"Helvetica\"];"
    );
    let _ = writeln!(o, "  edge [fontname=\"Helvetica\", fontsize=10];");
    for (i, n) in topo.nodes.iter().enumerate() {
        let mut label = format!("node {}", n.name);
        for a in &n.listen {
            let _ = write!(label, "\\nlisten {a}");
        }
        for a in &n.connect {
            let _ = write!(label, "\\nconnect {a}");
        }
        let _ = writeln!(o, "  subgraph cluster_{i} {{");
        let _ = writeln!(o, "    label=\"{}\";", label.replace('"', "\\\""));
        let _ = writeln!(o, "    style=dashed;");
        for s in topo.servers.iter().filter(|s| s.node == n.name) {
            let _ = writeln!(
                o,
                "    {} [label={}];",
                q(&s.name),
                q(&format!("{}\n({})", s.name, s.kind.name))
            );
        }
        let _ = writeln!(o, "  }}");
    }
    for (i, p) in topo.pipes.iter().enumerate() {
        if p.from.len() == 1 && p.to.len() == 1 {
            let _ = writeln!(
                o,
                "  {} -> {} [label={}];",
                q(&p.from[0].server),
                q(&p.to[0].server),
                q(&format!("{} → {}", p.from[0].port, p.to[0].port))
            );
        } else {
            let j = format!("pipe_{i}");
            let _ = writeln!(o, "  {j} [shape=point, width=0.08, xlabel={}];", q(&p.name));
            for f in &p.from {
                let _ = writeln!(o, "  {} -> {j} [label={}];", q(&f.server), q(&f.port));
            }
            for t in &p.to {
                let _ = writeln!(o, "  {j} -> {} [label={}];", q(&t.server), q(&t.port));
            }
        }
    }
    let _ = writeln!(o, "}}");
    o
}
