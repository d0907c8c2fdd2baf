//! YAML topology files: the same schema as TOML.
//!
//! A `.yaml`/`.yml` file is read with a YAML parser that keeps where every
//! key and value is, turned into the equivalent TOML document, and checked
//! by the TOML path; every position in that document is mapped back to
//! the YAML line and column, so problems are reported against the YAML
//! file exactly as for TOML.
//!
//! Plain scalars are typed as YAML 1.2 core: `true`/`false`, integers,
//! floats; anything else (and every quoted scalar) is a string. `null`
//! values, non-scalar keys and duplicate keys are refused with their line.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::topology::Problem;

/// A YAML document turned into TOML, with where each piece came from.
#[derive(Debug, Clone, Default)]
pub struct Translated {
    /// The TOML text.
    pub toml: String,
    /// `(offset in toml, YAML line, YAML column)`, both 1-based, in
    /// offset order.
    pub marks: Vec<(usize, usize, usize)>,
}

impl Translated {
    /// The YAML line and column of byte `offset` of the TOML text.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let i = self.marks.partition_point(|m| m.0 <= offset);
        match i.checked_sub(1).and_then(|i| self.marks.get(i)) {
            Some(&(_, line, col)) => (line, col),
            None => (1, 1),
        }
    }
}

#[derive(Debug, Clone)]
enum Y {
    Scalar(String, TScalarStyle),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone)]
struct Node {
    y: Y,
    line: usize,
    col: usize,
}

#[derive(Default)]
struct Builder {
    stack: Vec<(Node, usize)>,
    done: Option<Node>,
    anchors: HashMap<usize, Node>,
    error: Option<Problem>,
}

impl Builder {
    fn push_value(&mut self, node: Node) {
        match self.stack.last_mut() {
            Some((
                Node {
                    y: Y::Seq(items), ..
                },
                _,
            )) => items.push(node),
            Some((
                Node {
                    y: Y::Map(pairs), ..
                },
                _,
            )) => {
                // Keys and values arrive in turn: a pair with a placeholder
                // value is waiting for its value.
                match pairs.last_mut() {
                    Some((_, v)) if matches!(&v.y, Y::Scalar(s, _) if s == PENDING) => *v = node,
                    _ => pairs.push((
                        node,
                        Node {
                            y: Y::Scalar(PENDING.into(), TScalarStyle::Plain),
                            line: 0,
                            col: 0,
                        },
                    )),
                }
            }
            Some((
                Node {
                    y: Y::Scalar(..), ..
                },
                _,
            )) => {}
            None => self.done = Some(node),
        }
    }
}

/// A value no YAML scalar event carries (it contains a NUL).
const PENDING: &str = "\0pending";

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let (line, col) = (mark.line(), mark.col() + 1);
        match ev {
            Event::Scalar(s, style, anchor, _) => {
                let node = Node {
                    y: Y::Scalar(s, style),
                    line,
                    col,
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push_value(node);
            }
            Event::SequenceStart(anchor, _) => self.stack.push((
                Node {
                    y: Y::Seq(Vec::new()),
                    line,
                    col,
                },
                anchor,
            )),
            Event::MappingStart(anchor, _) => self.stack.push((
                Node {
                    y: Y::Map(Vec::new()),
                    line,
                    col,
                },
                anchor,
            )),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((node, anchor)) = self.stack.pop() {
                    if anchor > 0 {
                        self.anchors.insert(anchor, node.clone());
                    }
                    self.push_value(node);
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(node) => self.push_value(node),
                None => {
                    self.error.get_or_insert(Problem {
                        line,
                        column: col,
                        message: "unknown alias".into(),
                    });
                }
            },
            _ => {}
        }
    }
}

fn problem(node: &Node, message: impl Into<String>) -> Problem {
    Problem {
        line: node.line,
        column: node.col,
        message: message.into(),
    }
}

struct Emitter {
    out: Translated,
}

impl Emitter {
    fn mark(&mut self, node: &Node) {
        let at = self.out.toml.len();
        self.out.marks.push((at, node.line, node.col));
    }

    fn key(&mut self, key: &Node, seen: &mut Vec<String>) -> Result<(), Problem> {
        let Y::Scalar(k, _) = &key.y else {
            return Err(problem(key, "keys must be plain names"));
        };
        if seen.contains(k) {
            return Err(problem(
                key,
                format!("duplicate key {k:?} (each name is defined once)"),
            ));
        }
        seen.push(k.clone());
        self.mark(key);
        self.out
            .toml
            .push_str(&toml::Value::String(k.clone()).to_string());
        Ok(())
    }

    fn value(&mut self, node: &Node) -> Result<(), Problem> {
        self.mark(node);
        match &node.y {
            Y::Scalar(s, style) => {
                let text = if *style != TScalarStyle::Plain {
                    toml::Value::String(s.clone()).to_string()
                } else if matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL") {
                    return Err(problem(node, "null values are not allowed here"));
                } else if matches!(s.as_str(), "true" | "false") {
                    s.clone()
                } else if let Ok(i) = s.parse::<i64>() {
                    i.to_string()
                } else if let Some(f) = s
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && s.contains(['.', 'e', 'E']))
                {
                    toml::Value::Float(f).to_string()
                } else {
                    toml::Value::String(s.clone()).to_string()
                };
                self.out.toml.push_str(&text);
            }
            Y::Seq(items) => {
                self.out.toml.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.toml.push_str(", ");
                    }
                    self.value(item)?;
                }
                self.out.toml.push(']');
            }
            Y::Map(pairs) => {
                self.out.toml.push('{');
                let mut seen = Vec::new();
                for (i, (k, v)) in pairs.iter().enumerate() {
                    self.out.toml.push_str(if i > 0 { ", " } else { " " });
                    self.key(k, &mut seen)?;
                    self.out.toml.push_str(" = ");
                    self.value(v)?;
                }
                self.out.toml.push_str(" }");
            }
        }
        Ok(())
    }
}

/// Turn the YAML topology `text` into TOML (see the [module docs](self)).
pub fn to_toml(text: &str) -> Result<Translated, Problem> {
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut b, false) {
        return Err(Problem {
            line: e.marker().line(),
            column: e.marker().col() + 1,
            message: e.info().to_owned(),
        });
    }
    if let Some(p) = b.error {
        return Err(p);
    }
    let mut em = Emitter {
        out: Translated::default(),
    };
    match b.done {
        None => {}
        Some(Node {
            y: Y::Map(pairs), ..
        }) => {
            let mut seen = Vec::new();
            for (k, v) in &pairs {
                em.key(k, &mut seen)?;
                em.out.toml.push_str(" = ");
                em.value(v)?;
                em.out.toml.push('\n');
            }
        }
        Some(other) => {
            return Err(problem(
                &other,
                "a topology is a mapping with nodes, servers and pipes",
            ));
        }
    }
    Ok(em.out)
}
